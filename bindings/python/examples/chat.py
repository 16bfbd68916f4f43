#!/usr/bin/env python3
"""A terminal chat over Starling: lines typed are published on a room; other people's
lines and their presence (joined / left) are printed.

    python chat.py --name alice --bind 127.0.0.1:7000
    python chat.py --name bob --join <alice's contact, printed at start>

Interoperates with the other Starling chats on the same room and network id (payloads are
UTF-8 text; the presence metadata is the nickname).
"""

from __future__ import annotations

import argparse
import sys

import starling


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="your nickname")
    parser.add_argument("--room", default="chat", help="topic name (default: chat)")
    parser.add_argument("--bind", default="0.0.0.0:0", help="UDP address (default: any port)")
    parser.add_argument("--join", action="append", default=[], help="a peer's contact or host:port")
    parser.add_argument("--network", default="starling", help="network id")
    args = parser.parse_args()

    try:
        node = starling.Node(bind=args.bind, bootstrap=args.join, network_id=args.network)
    except starling.StarlingError as e:
        print(f"cannot start: {e} ({e.kind.name})", file=sys.stderr)
        return 1
    names: dict[str, str] = {}

    def who(peer: str) -> str:
        return names.get(peer, peer[:8])

    def on_message(m: starling.Message) -> None:
        print(f"\r<{who(m.author)}> {m.payload.decode('utf-8', 'replace')}")

    def on_presence(e: starling.PresenceEvent) -> None:
        if e.peer == node.id:
            return
        if e.change.is_offline():
            print(f"\r* {who(e.peer)} left")
            names.pop(e.peer, None)
        else:
            joined = e.peer not in names
            names[e.peer] = e.metadata.decode("utf-8", "replace") or e.peer[:8]
            if joined:
                print(f"\r* {who(e.peer)} is here")

    with node:
        print(f"contact: {node.contact}")
        node.on_message(args.room, on_message)
        node.on_presence(args.room, on_presence)
        node.set_presence(args.room, args.name)
        print(f"room {args.room!r} as {args.name}; type lines, Ctrl-D to quit")
        try:
            for line in sys.stdin:
                line = line.rstrip("\n")
                if line:
                    node.publish(args.room, line)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
