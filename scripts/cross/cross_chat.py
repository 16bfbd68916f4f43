#!/usr/bin/env python3
"""Cross-language test: a Python node (in this process), the C chat example and the Kotlin
chat example (subprocesses) on loopback exchange messages and see each other's presence.

    cross_chat.py --c-chat PATH --kotlin-cp CLASSPATH [--java java]

Run by scripts/test-cross.sh, which builds what it needs. Every wait is bounded and fails
with what was missing plus the tail of each chat's output; the chats are stopped on every
path (end of input is their graceful leave; a kill after that).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, List, Optional

import starling

PRESENCE_TIMEOUT_S = 30.0
MESSAGE_TIMEOUT_S = 20.0
LEAVE_TIMEOUT_S = 15.0
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"cross [{time.monotonic() - T0:5.1f}s] {msg}", flush=True)


class Failure(Exception):
    pass


class Lines:
    """Lines of a stream, collected by a thread; waited on with a condition."""

    def __init__(self) -> None:
        self.items: List[object] = []
        self.cond = threading.Condition()

    def add(self, item: object) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def wait_for(self, what: str, pred: Callable[[object], bool], deadline: float) -> object:
        with self.cond:
            while True:
                for item in self.items:
                    if pred(item):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"timed out waiting for {what}")
                self.cond.wait(left)


class Chat:
    """A chat example as a subprocess: stdin for lines to send, stdout collected."""

    def __init__(self, label: str, argv: List[str]) -> None:
        self.label = label
        self.out = Lines()
        self.err = Lines()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _pump(stream, sink: Lines) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            sink.add(line.rstrip("\n"))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect_line(self, what: str, pattern: str, deadline: float) -> "re.Match[str]":
        rx = re.compile(pattern)
        line = self.out.wait_for(f"{self.label}: {what}", lambda l: rx.fullmatch(str(l)) is not None, deadline)
        m = rx.fullmatch(str(line))
        assert m is not None
        return m

    def leave(self) -> Optional[int]:
        """End of input (the chat's graceful leave); returns the exit code or None if killed."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            return self.proc.wait(LEAVE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def dump(self) -> None:
        for name, sink in (("stdout", self.out), ("stderr", self.err)):
            with sink.cond:
                tail = [str(x) for x in sink.items[-25:]]
            print(f"--- {self.label} {name} (last {len(tail)} lines) ---", file=sys.stderr)
            for line in tail:
                print(f"    {line}", file=sys.stderr)


def contact_id(contact: str) -> str:
    peer, sep, _addr = contact.partition("@")
    if not sep or not re.fullmatch(r"[0-9a-f]{64}", peer):
        raise Failure(f"not a contact: {contact!r}")
    return peer


def run(args: argparse.Namespace, chats: List[Chat]) -> None:
    # A topic of this run only: other tests on the machine never see it.
    topic = f"cross-{os.getpid()}"
    events = Lines()
    received = Lines()
    with starling.Node(bind="127.0.0.1:0") as py:
        py_name = f"python-{py.id[:8]}"  # the id in the name: the others' output shows it
        py.on_presence(topic, events.add)
        py.on_message(topic, received.add)
        py.set_presence(topic, py_name)
        log(f"python node {py.contact} on topic {topic}")

        c = Chat("C chat", [args.c_chat, "--bind", "127.0.0.1:0", "--join", py.contact,
                            "--topic", topic, "--name", "c-node"])
        chats.append(c)
        kt = Chat("Kotlin chat", [args.java, "-cp", args.kotlin_cp, "dev.starling.examples.ChatKt",
                                  "--bind", "127.0.0.1:0", "--bootstrap", py.contact,
                                  "--topic", topic, "--name", "kotlin-node"])
        chats.append(kt)

        deadline = time.monotonic() + PRESENCE_TIMEOUT_S
        c_id = contact_id(c.expect_line("its contact", r"\* you are c-node \(others: --join (\S+)\)", deadline).group(1))
        kt_id = contact_id(kt.expect_line("its contact", r'chat: kotlin-node on topic "\S+"; others join with --bootstrap (\S+)', deadline).group(1))
        log(f"C node {c_id[:8]}, Kotlin node {kt_id[:8]} started")

        # Presence: each sees the other two online, under the right id (Python checks the
        # ids of the events; the chats key their name table by the announcing peer's id).
        for peer, name in ((c_id, b"c-node"), (kt_id, b"kotlin-node")):
            events.wait_for(
                f"python: presence online of {name.decode()} ({peer[:8]})",
                lambda e, p=peer, n=name: e.peer == p and e.change.is_online() and e.metadata == n,  # type: ignore[attr-defined]
                deadline,
            )
        for chat, others in ((c, (py_name, "kotlin-node")), (kt, (py_name, "c-node"))):
            for other in others:
                chat.expect_line(f"presence online of {other}", rf"\* {re.escape(other)} is online", deadline)
        online = {(e.peer, e.metadata) for e in py.online(topic)}
        want = {(c_id, b"c-node"), (kt_id, b"kotlin-node")}
        if online != want:
            raise Failure(f"python: online({topic!r}) is {online}, expected {want}")
        # Kotlin's /who lists online() with the peers' short ids.
        kt.send("/who")
        for name, peer in ((py_name, py.id), ("c-node", c_id)):
            kt.expect_line(f"/who lists {name} with id {peer[:8]}", rf"  {re.escape(name)} \({peer[:8]}\)", deadline)
        log("presence: each of the three sees the other two online")

        # Messages: each publishes one; each receives the other two with the right author.
        nonce = f"{os.getpid()}-{int(time.time())}"
        py.publish(topic, f"hello from python {nonce}")
        c.send(f"hello from c {nonce}")
        kt.send(f"hello from kotlin {nonce}")
        deadline = time.monotonic() + MESSAGE_TIMEOUT_S
        for peer, lang in ((c_id, "c"), (kt_id, "kotlin")):
            text = f"hello from {lang} {nonce}".encode()
            received.wait_for(
                f"python: the {lang} node's message with author {peer[:8]}",
                lambda m, p=peer, t=text: m.author == p and m.payload == t,  # type: ignore[attr-defined]
                deadline,
            )
        # The chats print "[name] text" with the name of the message's author id, taken from
        # that id's presence metadata (an unknown author would show as its short id).
        for chat, others in ((c, ((py_name, "python"), ("kotlin-node", "kotlin"))),
                             (kt, ((py_name, "python"), ("c-node", "c")))):
            for name, lang in others:
                chat.expect_line(f"the {lang} node's message with author {name}",
                                 rf"\[{re.escape(name)}\] hello from {lang} {re.escape(nonce)}", deadline)
        strays = [m for m in received.items if m.author not in (c_id, kt_id)]  # type: ignore[attr-defined]
        if strays:
            raise Failure(f"python: messages from unknown authors: {strays}")
        log("messages: each of the three received the other two's, right authors")

        # Leaving: end of input is each chat's graceful exit; Python sees both leave.
        for chat in (c, kt):
            code = chat.leave()
            if code != 0:
                raise Failure(f"{chat.label} exited with {code} after end of input (expected 0)")
        deadline = time.monotonic() + LEAVE_TIMEOUT_S
        for peer, name in ((c_id, "c-node"), (kt_id, "kotlin-node")):
            events.wait_for(f"python: {name} offline after it left",
                            lambda e, p=peer: e.peer == p and e.change.is_offline(), deadline)  # type: ignore[attr-defined]
        log("leaving: both chats exited 0 and python saw them go offline")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c-chat", required=True, help="the examples-c chat binary")
    parser.add_argument("--kotlin-cp", required=True, help="classpath with the examples-kotlin classes")
    parser.add_argument("--java", default="java")
    args = parser.parse_args()

    # SIGTERM/SIGHUP unwind like Ctrl-C so the finally below stops the chats.
    def _raise(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGHUP, _raise)

    chats: List[Chat] = []
    try:
        run(args, chats)
    except Failure as e:
        print(f"cross: FAILED: {e}", file=sys.stderr)
        for chat in chats:
            chat.dump()
        return 1
    finally:
        for chat in chats:
            chat.kill()
    log("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
