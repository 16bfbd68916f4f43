// The idiomatic Swift layer over the uniffi-generated API in Starling.swift (same module):
// AsyncStreams for messages and presence, async waits, a Swift-style error, Sendable where
// it is true. Written against the generated code; compiled and tested on macOS only (no
// Swift compiler on the Linux machines where the rest is tested).
import Foundation

/// Library-wide facts. (Not named `Starling`: a type named like its module breaks
/// module-qualified names.)
public enum StarlingInfo {
    /// The version the bindings were generated for.
    public static let bindingsVersion = "0.1.0"

    /// The version of the loaded libstarling (loading it checks the uniffi contract).
    public static var libraryVersion: String { version() }
}

public extension StarlingError {
    /// The stable kind of the failure (match on it; the detail text may change).
    var kind: ErrorKind {
        switch self {
        case let .Failed(kind, _): return kind
        }
    }

    /// What went wrong, in words.
    var detail: String {
        switch self {
        case let .Failed(_, detail): return detail
        }
    }
}

public extension Message {
    /// The payload as UTF-8 text (nil if it is not valid UTF-8).
    var text: String? { String(data: payload, encoding: .utf8) }
}

public extension PresenceEvent {
    /// The metadata as UTF-8 text (nil if it is not valid UTF-8).
    var metadataText: String? { String(data: metadata, encoding: .utf8) }
}

public extension PresenceEntry {
    /// The metadata as UTF-8 text (nil if it is not valid UTF-8).
    var metadataText: String? { String(data: metadata, encoding: .utf8) }
}

/// Finishes the streams of a node when it is closed (the library has no end-of-stream
/// callback for listeners).
private final class StreamRegistry: @unchecked Sendable {
    static let shared = StreamRegistry()
    private let lock = NSLock()
    private var finishers: [ObjectIdentifier: [UUID: @Sendable () -> Void]] = [:]

    func add(_ node: Node, _ id: UUID, _ finish: @escaping @Sendable () -> Void) {
        lock.lock(); defer { lock.unlock() }
        finishers[ObjectIdentifier(node), default: [:]][id] = finish
    }

    func remove(_ node: ObjectIdentifier, _ id: UUID) {
        lock.lock(); defer { lock.unlock() }
        finishers[node]?[id] = nil
    }

    func finishAll(_ node: Node) {
        lock.lock()
        let all = finishers.removeValue(forKey: ObjectIdentifier(node)) ?? [:]
        lock.unlock()
        all.values.forEach { $0() }
    }
}

private final class MessageRelay: MessageListener, @unchecked Sendable {
    let continuation: AsyncStream<Message>.Continuation
    init(_ continuation: AsyncStream<Message>.Continuation) { self.continuation = continuation }
    func onMessages(messages: [Message]) {
        for message in messages { continuation.yield(message) }
    }
}

private final class PresenceRelay: PresenceListener, @unchecked Sendable {
    let continuation: AsyncStream<PresenceEvent>.Continuation
    init(_ continuation: AsyncStream<PresenceEvent>.Continuation) { self.continuation = continuation }
    func onPresence(event: PresenceEvent) { continuation.yield(event) }
}

private final class LagRelay: LagListener, @unchecked Sendable {
    let continuation: AsyncStream<UInt64>.Continuation
    init(_ continuation: AsyncStream<UInt64>.Continuation) { self.continuation = continuation }
    func onLagged(topic: String, dropped: UInt64) { continuation.yield(dropped) }
}

/// An admission closure as the generated `AdmissionPolicy`.
private final class ClosurePolicy: AdmissionPolicy, @unchecked Sendable {
    let decide: @Sendable (String) -> Bool
    init(_ decide: @escaping @Sendable (String) -> Bool) { self.decide = decide }
    func allow(peerId: String) -> Bool { decide(peerId) }
}

public extension Node {
    /// Starts a node whose `admission` closure decides which peers may connect:
    /// `admission(peerId)` (64 hex digits) returns true to admit. It is asked for every
    /// inbound connection and every outbound one (before the dial and after its handshake)
    /// on the node's network threads, which handle no traffic meanwhile: keep it quick (an
    /// in-memory lookup) and do not call the node from it. Refusals are counted in
    /// `stats().refused["admission_hook"]`. For a fixed list use `Config.allowlist`; for a
    /// private network `Config.authority` and `Config.credential`.
    static func withAdmission(config: Config, admission: @escaping @Sendable (String) -> Bool) throws -> Node {
        try Node.withAdmission(config: config, policy: ClosurePolicy(admission))
    }

    /// Starts a node on `bind` (default: loopback, any port) joining through `bootstrap`.
    convenience init(bind: String = "127.0.0.1:0", bootstrap: [String] = [], networkId: String = "starling") throws {
        try self.init(config: Config(bind: bind, bootstrap: bootstrap, networkId: networkId))
    }

    /// The messages of `topic`: the stream subscribes now and unsubscribes when it is
    /// cancelled or its consumer stops; `close()` finishes it. Messages beyond
    /// `bufferingPolicy` while the consumer is slow are dropped (newest kept by default).
    func messages(_ topic: String,
                  bufferingPolicy: AsyncStream<Message>.Continuation.BufferingPolicy = .bufferingNewest(65_536))
        throws -> AsyncStream<Message>
    {
        let (stream, continuation) = AsyncStream<Message>.makeStream(bufferingPolicy: bufferingPolicy)
        let handle = try addMessageListener(topic: topic, listener: MessageRelay(continuation))
        track(handle, continuation)
        return stream
    }

    /// The presence changes of `topic` (same rules as `messages`), starting with an Online
    /// event for each peer already online on the topic.
    func presence(_ topic: String,
                  bufferingPolicy: AsyncStream<PresenceEvent>.Continuation.BufferingPolicy = .unbounded)
        throws -> AsyncStream<PresenceEvent>
    {
        let (stream, continuation) = AsyncStream<PresenceEvent>.makeStream(bufferingPolicy: bufferingPolicy)
        let handle = try addPresenceListener(topic: topic, listener: PresenceRelay(continuation))
        track(handle, continuation)
        return stream
    }

    /// How many items of `topic` the library dropped because its listeners were too slow.
    func lagged(_ topic: String) throws -> AsyncStream<UInt64> {
        let (stream, continuation) = AsyncStream<UInt64>.makeStream()
        let handle = try addLagListener(topic: topic, listener: LagRelay(continuation))
        track(handle, continuation)
        return stream
    }

    /// Cancels `handle` when the stream ends, and ends the stream when the node closes.
    private func track<T>(_ handle: ListenerHandle, _ continuation: AsyncStream<T>.Continuation) {
        let id = UUID()
        let node = ObjectIdentifier(self)
        StreamRegistry.shared.add(self, id) { continuation.finish() }
        continuation.onTermination = { _ in
            handle.cancel()
            StreamRegistry.shared.remove(node, id)
        }
    }

    /// Publishes `text` as UTF-8 on `topic`.
    @discardableResult
    func publish(topic: String, text: String) throws -> Receipt {
        try publish(topic: topic, payload: Data(text.utf8))
    }

    /// Announces this node online on `topic` with `metadata` as UTF-8.
    func setPresence(topic: String, text metadata: String) throws {
        try setPresence(topic: topic, metadata: Data(metadata.utf8))
    }

    /// Waits (off the caller's thread) until `condition` holds for `online(topic)`, at most
    /// `timeout` seconds; throws `StarlingError` kind `.timeout` otherwise.
    func waitOnline(_ topic: String, timeout: TimeInterval = 10,
                    until condition: @escaping ([PresenceEntry]) -> Bool) async throws
    {
        let deadline = Date().addingTimeInterval(timeout)
        while try !condition(online(topic: topic)) {
            if Date() > deadline {
                throw StarlingError.Failed(kind: .timeout, detail: "presence condition on \(topic) not met in \(timeout) s")
            }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
    }

    /// Shuts down gracefully (at most about 3 s, off the caller's thread) and finishes the
    /// node's streams. Idempotent.
    func close() async {
        await Task.detached { self.shutdown() }.value
        StreamRegistry.shared.finishAll(self)
    }

    /// Shuts down gracefully (blocking, at most about 3 s) and finishes the node's streams.
    func closeBlocking() {
        shutdown()
        StreamRegistry.shared.finishAll(self)
    }
}

extension Subscription: AsyncSequence {
    public typealias Element = SubscriptionItem

    /// Iterates until the subscription ends (unsubscribed or the node shut down).
    public struct AsyncIterator: AsyncIteratorProtocol {
        let subscription: Subscription

        public func next() async throws -> SubscriptionItem? {
            do {
                return try await subscription.recv()
            } catch let error as StarlingError where error.kind == .closed {
                return nil
            }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(subscription: self) }

    /// The next message, skipping presence and lag items, waiting at most `timeout` seconds.
    public func nextMessage(timeout: TimeInterval = 5) throws -> Message? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return nil }
            switch try next(timeoutMs: UInt64(left * 1000)) {
            case .none: return nil
            case let .some(.message(message)): return message
            case .some: continue
            }
        }
    }
}
