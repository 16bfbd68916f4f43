"""Publish/subscribe across several nodes, author identity, iteration (sync and async)."""

from __future__ import annotations

import asyncio
import threading

import starling
from conftest import converge, wait_for


def received(sub, count, what, timeout=15.0):
    """The next ``count`` non-probe messages of ``sub``."""
    got = []

    def more():
        while len(got) < count:
            item = sub.get(timeout=0.05)
            if item is None:
                return False
            if isinstance(item, starling.Message) and item.payload != b"probe":
                got.append(item)
        return True

    wait_for(more, f"{count} messages on {what} (got {len(got)})", timeout)
    return got


def test_messages_reach_every_subscriber_in_order_with_the_author(cluster):
    a, b, c = cluster(3)
    subs = [b.subscribe("news"), c.subscribe("news")]
    converge(a, "news", subs)
    receipts = [a.publish("news", f"item {i}".encode()) for i in range(20)]
    assert [r.seq for r in receipts] == sorted(r.seq for r in receipts)
    assert len({r.id for r in receipts}) == 20
    for name, sub in zip("bc", subs):
        msgs = received(sub, 20, f"node {name}")
        assert [m.payload for m in msgs] == [f"item {i}".encode() for i in range(20)]
        assert {m.author for m in msgs} == {a.id}
        assert [m.id for m in msgs] == [r.id for r in receipts]
        assert [m.seq for m in msgs] == [r.seq for r in receipts]
        assert all(m.topic == "news" and m.hops >= 1 for m in msgs)


def test_author_is_the_signer_not_the_forwarding_neighbour(network_id):
    # A line a - b - c: c only knows b, so a's messages reach c through b.
    with starling.Node(bind="127.0.0.1:0", network_id=network_id) as a:
        with starling.Node(bind="127.0.0.1:0", network_id=network_id, bootstrap=[a.contact]) as b:
            wait_for(lambda: b.stats().neighbors > 0, "b connected to a")
            with starling.Node(
                bind="127.0.0.1:0", network_id=network_id, bootstrap=[b.contact]
            ) as c:
                sub_c = c.subscribe("relay")
                sub_b = b.subscribe("relay")
                converge(a, "relay", [sub_b, sub_c])
                a.publish("relay", b"signed by a")
                (msg,) = received(sub_c, 1, "node c")
                assert msg.author == a.id != b.id
                assert bytes.fromhex(msg.author) == a.id_bytes
                assert len(a.id_bytes) == 32


def test_identity_file_keeps_the_identity_across_restarts(tmp_path, network_id):
    key = tmp_path / "node.key"
    with starling.Node(bind="127.0.0.1:0", network_id=network_id, identity_file=str(key)) as n:
        first = n.id
    assert key.exists()
    with starling.Node(bind="127.0.0.1:0", network_id=network_id, identity_file=str(key)) as n:
        assert n.id == first
    with starling.Node(bind="127.0.0.1:0", network_id=network_id) as n:
        assert n.id != first


def test_contact_and_addresses(network_id):
    with starling.Node(bind="127.0.0.1:0", network_id=network_id) as n:
        host, port = n.bound_addr.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        assert n.contact == f"{n.id}@{n.local_addrs[0]}"
        assert len(n.id) == 64 and int(n.id, 16) >= 0
        assert starling.topic_id("chat") != starling.topic_id("chat2")
        assert len(starling.topic_id("chat")) == 64


def test_iteration_sync_and_async(cluster):
    a, b = cluster(2)
    sub = b.subscribe("iter")
    converge(a, "iter", [sub])
    for i in range(5):
        a.publish("iter", f"m{i}")
    got = []
    for item in sub.messages():
        if item.payload != b"probe":
            got.append(item.payload)
        if len(got) == 5:
            break
    assert got == [b"m0", b"m1", b"m2", b"m3", b"m4"]

    async def read_async():
        out = []
        async for item in sub:
            if isinstance(item, starling.Message) and item.payload != b"probe":
                out.append(item.payload)
                if len(out) == 3:
                    return out

    for i in range(3):
        a.publish("iter", f"async {i}")
    assert asyncio.run(asyncio.wait_for(read_async(), 15)) == [b"async 0", b"async 1", b"async 2"]


def test_async_iteration_ends_on_close(cluster):
    (a,) = cluster(1)
    sub = a.subscribe("end")

    async def drain():
        async for _ in sub:
            pass
        return "ended"

    async def main():
        task = asyncio.ensure_future(drain())
        await asyncio.sleep(0)  # let the task start waiting in recv
        sub.close()
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(main()) == "ended"


def test_several_subscriptions_of_one_topic_each_get_everything(cluster):
    a, b = cluster(2)
    s1, s2 = b.subscribe("dup"), b.subscribe("dup")
    converge(a, "dup", [s1, s2])
    a.publish("dup", b"x")
    assert received(s1, 1, "first")[0].payload == b"x"
    assert received(s2, 1, "second")[0].payload == b"x"
    s1.close()
    a.publish("dup", b"y")
    assert received(s2, 1, "second after closing the first")[0].payload == b"y"


def test_sync_iteration_in_a_thread_ends_when_the_node_closes(cluster):
    a, b = cluster(2)
    sub = b.subscribe("live")
    listener_calls = []
    b.on_message("live", listener_calls.append)
    converge(a, "live", [sub])
    ended = threading.Event()

    def reader():
        for _ in sub:
            pass
        ended.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    b.close()
    assert ended.wait(10), "iteration did not end after the node closed"
    assert b.closed
    try:
        b.publish("live", b"x")
    except starling.StarlingError as e:
        assert e.kind == starling.ErrorKind.CLOSED
    else:
        raise AssertionError("publish on a closed node did not raise")
