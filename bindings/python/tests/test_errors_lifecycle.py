"""Errors map to StarlingError with the right kind; closing, garbage collection, version."""

from __future__ import annotations

import gc
import os
import pathlib
import re
import subprocess
import sys

import pytest

import starling
from conftest import wait_for

K = starling.ErrorKind


def kind_of(fn):
    with pytest.raises(starling.StarlingError) as info:
        fn()
    assert str(info.value), "the error carries no message"
    return info.value.kind


def test_start_errors(network_id, tmp_path):
    assert kind_of(lambda: starling.Node(bind="not an address", network_id=network_id)) == K.INVALID_BIND
    assert (
        kind_of(lambda: starling.Node(bind="127.0.0.1:0", bootstrap=["nowhere"], network_id=network_id))
        == K.INVALID_BOOTSTRAP
    )
    assert (
        kind_of(lambda: starling.Node(bind="127.0.0.1:0", bootstrap=["zz@127.0.0.1:1"], network_id=network_id))
        == K.INVALID_BOOTSTRAP
    )
    assert kind_of(lambda: starling.Node(bind="127.0.0.1:0", worker_threads=0)) == K.INVALID_CONFIG
    assert kind_of(lambda: starling.Node(bind="127.0.0.1:0", network_id="")) == K.INVALID_CONFIG
    assert kind_of(lambda: starling.Node(bind="127.0.0.1:0", presence_ttl=0.1)) == K.INVALID_CONFIG
    assert kind_of(lambda: starling.Node(bind="127.0.0.1:0", advertise=["nope"])) == K.INVALID_CONFIG
    # A directory is not a key file.
    assert kind_of(lambda: starling.Node(bind="127.0.0.1:0", identity_file=str(tmp_path))) == K.IDENTITY
    with starling.Node(bind="127.0.0.1:0", network_id=network_id) as n:
        # The same UDP port twice.
        assert kind_of(lambda: starling.Node(bind=n.bound_addr, network_id=network_id)) == K.TRANSPORT


def test_call_errors(network_id):
    with starling.Node(bind="127.0.0.1:0", network_id=network_id, max_payload=1000) as n:
        assert kind_of(lambda: n.publish("t", b"x" * 1001)) == K.PAYLOAD_TOO_LARGE
        n.publish("t", b"x" * 1000)  # the limit itself is fine
        assert kind_of(lambda: n.publish("", b"x")) == K.INVALID_ARGUMENT
        assert kind_of(lambda: n.subscribe("")) == K.INVALID_ARGUMENT
        assert kind_of(lambda: n.on_message("", print)) == K.INVALID_ARGUMENT
        assert kind_of(lambda: n.set_presence("t", b"m" * 5000)) == K.METADATA_TOO_LARGE
        assert kind_of(lambda: n.join("no-port")) == K.INVALID_BOOTSTRAP
        assert kind_of(lambda: starling.topic_id("")) == K.INVALID_ARGUMENT
        with pytest.raises(TypeError):
            n.publish("t", 42)
        sub = n.subscribe("t")
        sub.close()
        assert kind_of(lambda: sub.get(timeout=0)) == K.CLOSED
        assert list(sub) == []
    # After close every call fails with CLOSED.
    assert n.closed
    for call in (
        lambda: n.publish("t", b"x"),
        lambda: n.subscribe("t"),
        lambda: n.set_presence("t", b""),
        lambda: n.online("t"),
        lambda: n.stats(),
        lambda: n.join("127.0.0.1:9"),
    ):
        assert kind_of(call) == K.CLOSED
    n.close()  # idempotent


def test_error_text_is_informative(network_id):
    with starling.Node(bind="127.0.0.1:0", network_id=network_id, max_payload=10) as n:
        with pytest.raises(starling.StarlingError) as info:
            n.publish("t", b"x" * 11)
    assert "11 bytes" in str(info.value) and "10 bytes" in str(info.value)
    assert info.value.detail == str(info.value)


def test_closing_a_node_with_live_subscriptions_ends_them(network_id):
    n = starling.Node(bind="127.0.0.1:0", network_id=network_id)
    subs = [n.subscribe(f"t{i}") for i in range(5)]
    n.on_message("t0", print)
    n.on_presence("t1", print)
    n.close()
    for sub in subs:
        assert list(sub) == []  # iteration ends at once
        with pytest.raises(starling.StarlingError) as info:
            sub.get()
        assert info.value.kind == K.CLOSED


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_garbage_collection_releases_nodes_threads_and_listeners(network_id):
    baseline = os_threads()

    def churn():
        for _ in range(3):
            # Never closed explicitly: dropping the last reference must shut it down.
            node = starling.Node(bind="127.0.0.1:0", network_id=network_id, worker_threads=1)
            sub = node.subscribe("gc")
            node.on_message("gc", lambda m: None)
            node.on_presence("gc", lambda e: None)
            node.set_presence("gc", b"x")
            del sub, node

    churn()
    gc.collect()
    wait_for(lambda: os_threads() <= baseline, f"threads back to {baseline} (now {os_threads()})", 20)
    # And again: the count stays flat over repetitions (no per-node leak of threads).
    churn()
    gc.collect()
    wait_for(lambda: os_threads() <= baseline, f"threads back to {baseline} again (now {os_threads()})", 20)


def test_dropping_subscriptions_and_listeners_without_closing(network_id):
    with starling.Node(bind="127.0.0.1:0", network_id=network_id) as n:
        baseline = os_threads()
        for i in range(20):
            n.subscribe(f"drop{i}")  # dropped at once: unsubscribes
            n.on_message(f"drop{i}", lambda m: None).cancel()
        gc.collect()
        wait_for(lambda: n.stats().topics == 0, f"every topic left (now {n.stats().topics})")
        wait_for(lambda: os_threads() <= baseline, "delivery threads to end")


def test_version_of_the_loaded_library_matches_the_package():
    root = pathlib.Path(__file__).resolve().parents[3]
    cargo = (root / "Cargo.toml").read_text()
    workspace_version = re.search(r'\[workspace\.package\][^\[]*?version\s*=\s*"([^"]+)"', cargo).group(1)
    assert starling.library_version() == starling.__version__ == workspace_version
    with pytest.raises(ImportError, match="does not match"):
        starling._check_library("0.0.0-other", starling.library_version())


README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_hello_world_runs_and_is_at_most_ten_lines():
    text = README.read_text()
    match = re.search(r"<!-- hello:begin -->\s*```python\n(.*?)```\s*<!-- hello:end -->", text, re.S)
    assert match, "README.md has no hello-world block between the markers"
    code = match.group(1)
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 10, f"hello world has {len(lines)} lines"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "hello" in out.stdout, out.stdout
