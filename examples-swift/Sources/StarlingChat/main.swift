// A terminal chat: every line typed is published on the topic; messages and who comes and
// goes are printed. Talks with examples-c's and examples-kotlin's chat (plain UTF-8 lines,
// the nickname as presence metadata, the same topic and network id).
import Foundation
import Starling

let usage = """
usage: starling-chat [--name NICK] [--bind ADDR] [--bootstrap PEER]... [--topic NAME] [--network ID]
Lines from stdin are sent; /who lists who is online; /quit or end of input leaves.
"""

var name: String?
var bind = "127.0.0.1:0"
var bootstrap: [String] = []
var topic = "chat"
var network = "starling"
var args = CommandLine.arguments.dropFirst().makeIterator()
while let flag = args.next() {
    func value() -> String {
        guard let v = args.next() else { FileHandle.standardError.write(Data("\(flag) needs a value\n\(usage)\n".utf8)); exit(2) }
        return v
    }
    switch flag {
    case "--name": name = value()
    case "--bind": bind = value()
    case "--bootstrap": bootstrap.append(value())
    case "--topic": topic = value()
    case "--network": network = value()
    case "-h", "--help": print(usage); exit(0)
    default: FileHandle.standardError.write(Data("unknown argument: \(flag)\n\(usage)\n".utf8)); exit(2)
    }
}

let node: Node
do {
    node = try Node(config: Config(bind: bind, bootstrap: bootstrap, networkId: network))
} catch let error as StarlingError {
    FileHandle.standardError.write(Data("cannot start the node (\(error.kind)): \(error.detail)\n".utf8))
    exit(1)
}
let me = name ?? String(node.id().prefix(8))

/// Nicknames by peer id, from presence metadata.
actor Names {
    var byPeer: [String: String] = [:]
    func set(_ peer: String, _ name: String) { byPeer[peer] = name }
    func of(_ peer: String) -> String { byPeer[peer] ?? String(peer.prefix(8)) }
}
let names = Names()

print("chat: \(me) on topic \"\(topic)\"; others join with --bootstrap \(node.contact())")
let presence = try node.presence(topic)
let messages = try node.messages(topic)
let watchers = [
    Task {
        for await event in presence {
            switch event.change {
            case .online:
                await names.set(event.peer, event.metadataText ?? "")
                print("* \(await names.of(event.peer)) is online")
            case .updated:
                await names.set(event.peer, event.metadataText ?? "")
                print("* \(event.peer.prefix(8)) is now \(event.metadataText ?? "")")
            case let .offline(reason):
                print("* \(await names.of(event.peer)) \(reason == .left ? "left" : "went offline")")
            }
        }
    },
    Task {
        for await message in messages {
            print("<\(await names.of(message.author))> \(message.text ?? "(binary)")")
        }
    },
]
try node.setPresence(topic: topic, text: me)

while let line = readLine() {
    if line == "/quit" { break }
    if line == "/who" {
        for entry in (try? node.online(topic: topic)) ?? [] {
            print("  \(entry.metadataText ?? "") (\(entry.peer.prefix(8)))")
        }
        continue
    }
    if line.isEmpty { continue }
    do {
        try node.publish(topic: topic, text: line)
    } catch let error as StarlingError {
        print("! not sent (\(error.kind)): \(error.detail)")
    }
}
await node.close()
for watcher in watchers { await watcher.value }
