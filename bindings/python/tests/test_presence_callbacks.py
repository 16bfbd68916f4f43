"""Presence across nodes, callbacks from the library's threads, cancelling, lag, logs."""

from __future__ import annotations

import threading

import starling
from conftest import converge, wait_for


class Recorder:
    """Collects callback arguments with the thread each call ran on."""

    def __init__(self):
        self.items = []
        self.threads = set()
        self.lock = threading.Lock()

    def __call__(self, *args):
        with self.lock:
            self.items.append(args[0] if len(args) == 1 else args)
            self.threads.add(threading.current_thread().name)

    def payloads(self):
        with self.lock:
            return [m.payload for m in self.items if m.payload != b"probe"]


def test_presence_online_updated_offline_across_nodes(cluster):
    a, b, c = cluster(3)
    seen_b, seen_c = Recorder(), Recorder()
    b.on_presence("room", seen_b)
    c.on_presence("room", seen_c)
    a.set_presence("room", b"alice")
    for name, seen in (("b", seen_b), ("c", seen_c)):
        wait_for(
            lambda: any(e.peer == a.id and e.change.is_online() for e in seen.items),
            f"{name} to see a online",
        )
        ev = next(e for e in seen.items if e.peer == a.id and e.change.is_online())
        assert ev.metadata == b"alice" and ev.topic == "room"
    wait_for(lambda: any(e.peer == a.id for e in b.online("room")), "a in b.online")
    (entry,) = [e for e in b.online("room") if e.peer == a.id]
    assert entry.metadata == b"alice" and entry.last_seen_ms >= entry.since_ms > 0

    a.set_presence("room", "alice (away)")
    wait_for(
        lambda: any(e.change.is_updated() and e.metadata == b"alice (away)" for e in seen_b.items),
        "b to see a's metadata update",
    )
    a.clear_presence("room")
    wait_for(
        lambda: any(
            e.peer == a.id and e.change.is_offline() and e.change.reason.is_left() for e in seen_c.items
        ),
        "c to see a leave",
    )
    wait_for(lambda: not any(e.peer == a.id for e in c.online("room")), "a gone from c.online")


def test_a_presence_callback_added_later_first_hears_who_is_online(cluster):
    a, b, c = cluster(3)
    # A message callback opens b's delivery for the topic; a and c come online while
    # nobody at b listens to presence.
    b.on_message("late", Recorder())
    a.set_presence("late", b"alice")
    c.set_presence("late", b"carol")
    wait_for(lambda: {e.peer for e in b.online("late")} == {a.id, c.id}, "a and c in b.online")
    late = Recorder()
    b.on_presence("late", late)
    wait_for(lambda: len(late.items) >= 2, "an Online event for each peer already online")
    assert sorted((e.peer, e.metadata) for e in late.items) == sorted([(a.id, b"alice"), (c.id, b"carol")])
    assert all(e.change.is_online() and e.topic == "late" for e in late.items)
    # Then it gets the changes like any other presence callback.
    c.clear_presence("late")
    wait_for(lambda: any(e.peer == c.id and e.change.is_offline() for e in late.items), "c's leave")
    assert len(late.items) == 3


def test_callbacks_run_on_library_threads_and_may_call_back(cluster):
    a, b = cluster(2)
    seen = Recorder()
    replies = []

    def on_message(m):
        seen(m)
        if m.payload == b"ping":
            # Calling into the library from a callback is allowed.
            replies.append(b.publish("pong", b"from callback"))

    b.on_message("ping", on_message)
    sub = b.subscribe("ping")
    converge(a, "ping", [sub])
    a.publish("ping", b"ping")
    wait_for(lambda: b"ping" in seen.payloads(), "the ping callback")
    wait_for(lambda: replies, "the publish made inside the callback")
    main = threading.main_thread().name
    assert seen.threads and main not in seen.threads
    assert threading.get_ident() not in seen.threads


def test_a_raising_callback_does_not_stop_delivery(cluster, caplog):
    a, b = cluster(2)
    good = Recorder()

    def bad(m):
        raise RuntimeError("callback bug")

    b.on_message("err", bad)
    b.on_message("err", good)
    sub = b.subscribe("err")
    converge(a, "err", [sub])
    for i in range(3):
        a.publish("err", f"{i}")
    wait_for(lambda: good.payloads() == [b"0", b"1", b"2"], "all three to the good callback")
    wait_for(
        lambda: any("callback raised" in r.getMessage() for r in caplog.records),
        "the failing callback to be logged",
    )


def test_cancel_stops_delivery(cluster):
    a, b = cluster(2)
    stays, goes = Recorder(), Recorder()
    b.on_message("c", stays)
    listener = b.on_message("c", goes)
    sub = b.subscribe("c")
    converge(a, "c", [sub])
    a.publish("c", b"before")
    wait_for(lambda: b"before" in goes.payloads() and b"before" in stays.payloads(), "both get 'before'")
    listener.cancel()
    assert listener.cancelled
    for i in range(5):
        a.publish("c", f"after {i}")
    # Once the listener that stayed has everything, the cancelled one must have nothing new.
    wait_for(lambda: len(stays.payloads()) == 6, "the remaining listener to get all five")
    assert goes.payloads() == [b"before"]


def test_listener_as_context_manager_and_closing_the_node_stops_callbacks(cluster):
    a, b = cluster(2)
    seen = Recorder()
    with b.on_message("cm", seen) as listener:
        assert not listener.cancelled
    assert listener.cancelled
    live = Recorder()
    b.on_message("cm", live)
    sub = b.subscribe("cm")
    converge(a, "cm", [sub])
    b.close()
    try:
        b.on_message("cm", live)
    except starling.StarlingError as e:
        assert e.kind == starling.ErrorKind.CLOSED
    else:
        raise AssertionError("registering on a closed node did not raise")
    assert seen.items == []


def test_lag_is_reported_to_lag_listeners(cluster):
    a, b = cluster(2, subscription_queue=4)
    release = threading.Event()
    lags = Recorder()
    first = threading.Event()

    def slow(m):
        first.set()
        release.wait(20)

    b.on_message("lag", slow)
    b.on_lag("lag", lags)
    sub = b.subscribe("lag")
    converge(a, "lag", [sub])
    wait_for(first.is_set, "the slow callback to be called once")
    # The callback is blocked: these overflow the 4-item queue of the listeners' topic.
    for i in range(50):
        a.publish("lag", f"{i}")
    release.set()
    wait_for(lambda: lags.items, "a lag report")
    topic, dropped = lags.items[0]
    assert topic == "lag" and dropped > 0


def test_logs_are_forwarded_to_a_callback(network_id):
    records = Recorder()
    handle = starling.forward_logs(starling.LogLevel.INFO, records)
    try:
        with starling.Node(bind="127.0.0.1:0", network_id=network_id) as n:
            short = n.id[:8]
            wait_for(
                lambda: any("node started" in r.message and short in r.message for r in records.items),
                "the 'node started' log record",
            )
        assert all(r.level in (starling.LogLevel.ERROR, starling.LogLevel.WARN, starling.LogLevel.INFO) for r in records.items)
    finally:
        handle.cancel()
    count = len(records.items)
    with starling.Node(bind="127.0.0.1:0", network_id=network_id):
        pass
    assert len(records.items) == count, "records arrived after cancel"
