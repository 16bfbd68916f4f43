"""Shared helpers: nodes on loopback (port 0) and bounded waits that fail saying what was
missing."""

from __future__ import annotations

import itertools
import time
from typing import Callable, List

import pytest

import starling

_networks = itertools.count()


def wait_for(check: Callable[[], object], what: str, timeout: float = 15.0) -> object:
    """Polls ``check`` until it returns something truthy; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def network_id() -> str:
    """A network id of its own per test, so nodes of different tests never meet."""
    return f"pytest-{time.monotonic_ns()}-{next(_networks)}"


@pytest.fixture
def cluster(network_id):
    """``cluster(n)``: n nodes on 127.0.0.1, each bootstrapped from the first, all
    connected (each has a neighbour). Closed at the end of the test."""
    started: List[starling.Node] = []

    def make(n: int, **kwargs) -> List[starling.Node]:
        first = starling.Node(bind="127.0.0.1:0", network_id=network_id, **kwargs)
        started.append(first)
        nodes = [first]
        for _ in range(n - 1):
            node = starling.Node(
                bind="127.0.0.1:0", bootstrap=[first.contact], network_id=network_id, **kwargs
            )
            started.append(node)
            nodes.append(node)
        for i, node in enumerate(nodes if n > 1 else []):
            wait_for(lambda: node.stats().neighbors > 0, f"node {i} to have a neighbour")
        return nodes

    yield make
    for node in started:
        node.close()


def converge(publisher: starling.Node, topic: str, subscriptions) -> None:
    """Publishes probes on ``topic`` until every subscription got one (the topic overlay
    is formed), then drains the probes."""
    got = [False] * len(subscriptions)
    deadline = time.monotonic() + 20
    while not all(got):
        if time.monotonic() > deadline:
            raise AssertionError(f"subscriptions {[i for i, g in enumerate(got) if not g]} got no probe")
        publisher.publish(topic, b"probe")
        for i, sub in enumerate(subscriptions):
            while True:
                item = sub.get(timeout=0.05 if not got[i] else 0)
                if item is None:
                    break
                if isinstance(item, starling.Message) and item.payload == b"probe":
                    got[i] = True
    for sub in subscriptions:
        while True:
            item = sub.get(timeout=0.2)
            if item is None:
                break
            assert not isinstance(item, starling.Message) or item.payload == b"probe"
