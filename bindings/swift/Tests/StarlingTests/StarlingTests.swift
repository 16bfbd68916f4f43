// The Swift suite: the same coverage as the Python and Kotlin suites. Runs with
// `swift test` on macOS after scripts/build-xcframework.sh; NOT run on the Linux machines
// (no Swift compiler there).
import Foundation
import XCTest
@testable import Starling

/// Polls `check` until it holds, failing with `what` after `seconds`.
func waitUntil(_ what: String, seconds: TimeInterval = 20, _ check: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while try !check() {
        if Date() > deadline { XCTFail("timed out after \(seconds) s waiting for: \(what)"); throw CancellationError() }
        Thread.sleep(forTimeInterval: 0.02)
    }
}

func loopback(_ bootstrap: [String] = []) -> Config {
    Config(bind: "127.0.0.1:0", bootstrap: bootstrap, networkId: "swift-test", presenceTtlMs: 3000)
}

func cluster(_ n: Int) throws -> [Node] {
    let first = try Node(config: loopback())
    return try [first] + (1..<n).map { _ in try Node(config: loopback([first.contact()])) }
}

/// Whether every node sees every other one online on `topic` (a node's own entry aside).
func allSeeEachOther(_ nodes: [Node], _ topic: String) throws -> Bool {
    try nodes.allSatisfy { n in
        let seen = Set(try n.online(topic: topic).map(\.peer))
        return nodes.allSatisfy { $0 === n || seen.contains($0.id()) }
    }
}

func kind(_ body: () throws -> Void) -> ErrorKind? {
    do { try body(); return nil } catch let error as StarlingError { return error.kind } catch { return nil }
}

final class StarlingTests: XCTestCase {
    func testVersionAndContract() throws {
        // Loading the library runs the generated contract-version and checksum checks.
        XCTAssertEqual(StarlingInfo.libraryVersion, StarlingInfo.bindingsVersion)
        let id = try topicId(name: "chat")
        XCTAssertEqual(id.count, 64)
        XCTAssertNotEqual(id, try topicId(name: "chat2"))
    }

    func testReadmeHelloWorld() throws {
        let a = try Node(config: Config(bind: "127.0.0.1:0"))
        let b = try Node(config: Config(bind: "127.0.0.1:0", bootstrap: [a.contact()]))
        let sub = try b.subscribe(topic: "chat")
        try a.publish(topic: "chat", text: "hello") // cached by a, handed over when b arrives
        XCTAssertEqual(try sub.nextMessage()?.text, "hello")
        b.closeBlocking(); a.closeBlocking()
    }

    func testPubSubAcrossThreeNodesWithAuthors() throws {
        let nodes = try cluster(3)
        defer { nodes.forEach { $0.closeBlocking() } }
        let topic = "swift-pubsub"
        let subs = try nodes.map { try $0.subscribe(topic: topic) }
        for (i, n) in nodes.enumerated() { try n.setPresence(topic: topic, text: "node\(i)") }
        try waitUntil("all three online everywhere") { try allSeeEachOther(nodes, topic) }
        for (i, n) in nodes.enumerated() { try n.publish(topic: topic, text: "from \(i)") }
        var got: [[String: String]] = Array(repeating: [:], count: 3)
        try waitUntil("each node to get the two others' messages") {
            for (i, s) in subs.enumerated() {
                for item in try s.nextBatch(max: 64, timeoutMs: 10) {
                    if case let .message(m) = item { got[i][m.author] = m.text }
                }
            }
            return got.allSatisfy { $0.count >= 2 }
        }
        for (i, n) in nodes.enumerated() {
            var expected: [String: String] = [:]
            for (j, other) in nodes.enumerated() where j != i { expected[other.id()] = "from \(j)" }
            XCTAssertEqual(got[i], expected)
            XCTAssertNil(got[i][n.id()], "a node does not receive its own messages")
        }
    }

    func testRelayedMessageNamesItsAuthor() throws {
        let a = try Node(config: loopback())
        let b = try Node(config: loopback([a.contact()]))
        let c = try Node(config: loopback([b.contact()]))
        defer { [c, b, a].forEach { $0.closeBlocking() } }
        let sub = try c.subscribe(topic: "swift-relay")
        for n in [a, b, c] { try n.setPresence(topic: "swift-relay", text: "") }
        try waitUntil("a and b online at c") { Set(try c.online(topic: "swift-relay").map(\.peer)).isSuperset(of: [a.id(), b.id()]) }
        try a.publish(topic: "swift-relay", text: "signed by a")
        let m = try XCTUnwrap(try sub.nextMessage(timeout: 20))
        XCTAssertEqual(m.author, a.id())
    }

    func testStreamsForMessagesAndPresence() async throws {
        let nodes = try cluster(2)
        let (a, b) = (nodes[0], nodes[1])
        let topic = "swift-stream"
        let presence = try b.presence(topic)
        let messages = try b.messages(topic)
        try a.setPresence(topic: topic, text: "meta-a")
        try b.setPresence(topic: topic, text: "meta-b")
        var online: PresenceEvent?
        for await event in presence where event.peer == a.id() && event.change == .online {
            online = event
            break
        }
        XCTAssertEqual(online?.metadataText, "meta-a")
        try await a.waitOnline(topic) { $0.contains { $0.peer == b.id() } }
        for i in 0..<5 { try a.publish(topic: topic, text: "m\(i)") }
        var texts: [String] = []
        for await m in messages {
            XCTAssertEqual(m.author, a.id())
            texts.append(m.text ?? "")
            if texts.count == 5 { break }
        }
        XCTAssertEqual(texts, (0..<5).map { "m\($0)" })
        await b.close()
        await a.close()
    }

    func testPresenceOfflineOnClearAndShutdown() async throws {
        let nodes = try cluster(3)
        let (a, b, c) = (nodes[0], nodes[1], nodes[2])
        let topic = "swift-presence"
        let events = try a.presence(topic)
        for n in nodes { try n.setPresence(topic: topic, text: "hi") }
        try await a.waitOnline(topic) { Set($0.map(\.peer)).isSuperset(of: [b.id(), c.id()]) }
        try b.clearPresence(topic: topic)
        await c.close()
        var left = Set<String>()
        for await e in events {
            if case .offline = e.change { left.insert(e.peer) }
            if left == [b.id(), c.id()] { break }
        }
        XCTAssertEqual(left, [b.id(), c.id()])
        await b.close()
        await a.close()
    }

    func testErrorsCarryTheirKind() throws {
        XCTAssertEqual(kind { _ = try Node(config: Config(bind: "not an address")) }, .invalidBind)
        XCTAssertEqual(kind { _ = try Node(config: loopback(["nowhere:::1"])) }, .invalidBootstrap)
        XCTAssertEqual(kind { _ = try Node(config: Config(bind: "127.0.0.1:0", maxPayload: 0)) }, .invalidConfig)
        XCTAssertEqual(kind { _ = try topicId(name: "") }, .invalidArgument)
        let node = try Node(config: Config(bind: "127.0.0.1:0", maxPayload: 100))
        XCTAssertEqual(kind { _ = try Node(config: Config(bind: node.boundAddr())) }, .transport)
        XCTAssertEqual(kind { try node.publish(topic: "t", payload: Data(count: 101)) }, .payloadTooLarge)
        XCTAssertEqual(kind { try node.setPresence(topic: "t", metadata: Data(count: 2048)) }, .metadataTooLarge)
        node.closeBlocking()
        XCTAssertEqual(kind { try node.publish(topic: "t", text: "late") }, .closed)
    }

    func testCallbacksRunOnLibraryThreads() throws {
        final class Recorder: MessageListener, @unchecked Sendable {
            let lock = NSLock()
            var onMain = false
            var texts: [String] = []
            func onMessages(messages: [Message]) {
                lock.lock(); defer { lock.unlock() }
                if Thread.isMainThread { onMain = true }
                texts += messages.compactMap(\.text)
            }
        }
        let nodes = try cluster(2)
        defer { nodes.forEach { $0.closeBlocking() } }
        let recorder = Recorder()
        let handle = try nodes[1].addMessageListener(topic: "swift-threads", listener: recorder)
        for n in nodes { try n.setPresence(topic: "swift-threads", text: "") }
        try waitUntil("both online") { try allSeeEachOther(nodes, "swift-threads") }
        try nodes[0].publish(topic: "swift-threads", text: "x")
        try waitUntil("the message at the listener") {
            recorder.lock.lock(); defer { recorder.lock.unlock() }
            return recorder.texts == ["x"]
        }
        XCTAssertFalse(recorder.onMain)
        handle.cancel()
        XCTAssertTrue(handle.isCancelled())
    }

    func testClosingANodeEndsItsStreamsAndSubscriptions() async throws {
        let node = try Node(config: loopback())
        let sub = try node.subscribe(topic: "swift-close")
        let stream = try node.messages("swift-close")
        let iterating = Task { () -> Int in
            var n = 0
            for try await _ in sub { n += 1 }
            return n
        }
        let streaming = Task { () -> Int in
            var n = 0
            for await _ in stream { n += 1 }
            return n
        }
        await node.close()
        let pulled = try await iterating.value
        let pushed = await streaming.value
        XCTAssertEqual(pulled, 0)
        XCTAssertEqual(pushed, 0)
        XCTAssertEqual(kind { _ = try node.subscribe(topic: "again") }, .closed)
    }

    func testReleasedObjectsAreFreed() throws {
        // Objects released without shutdown: the node's deinit frees it (and its port).
        var addr = ""
        do {
            let node = try Node(config: loopback())
            addr = node.boundAddr()
            _ = try node.subscribe(topic: "gc")
            _ = try node.addPresenceListener(topic: "gc", listener: { () -> PresenceListener in
                final class Nop: PresenceListener, @unchecked Sendable { func onPresence(event _: PresenceEvent) {} }
                return Nop()
            }())
        }
        var again: Node?
        try waitUntil("the port to be free after the node was released") {
            again = try? Node(config: Config(bind: addr, networkId: "swift-test"))
            return again != nil
        }
        again?.closeBlocking()
    }
}
