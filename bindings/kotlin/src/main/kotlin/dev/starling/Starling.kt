// The idiomatic Kotlin layer over the uniffi-generated API (package dev.starling.ffi, in
// ffi/starling.kt beside this file): Node and Subscription are AutoCloseable (`use {}`), messages and
// presence are Flows, blocking waits are suspend functions, and every failure is one
// StarlingException with a stable kind.
package dev.starling

import dev.starling.ffi.AdmissionPolicy
import dev.starling.ffi.LagListener
import dev.starling.ffi.ListenerHandle
import dev.starling.ffi.LogListener
import dev.starling.ffi.MessageListener
import dev.starling.ffi.PresenceListener
import dev.starling.ffi.StarlingException as FfiException
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.ClosedSendChannelException
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.selects.select
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.withContext
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.atomic.AtomicBoolean
import kotlin.time.Duration
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds

/** Everything a node needs; every field has a default (see [dev.starling.ffi.Config]). */
typealias Config = dev.starling.ffi.Config

/** A message delivered on a topic; `author` is who signed it, never the forwarder. */
typealias Message = dev.starling.ffi.Message

/** A presence change on a topic. */
typealias PresenceEvent = dev.starling.ffi.PresenceEvent

/** What changed in a presence event: Online, Updated or Offline(reason). */
typealias PresenceChange = dev.starling.ffi.PresenceChange

/** Why a peer went offline. */
typealias OfflineReason = dev.starling.ffi.OfflineReason

/** One peer online on a topic. */
typealias PresenceEntry = dev.starling.ffi.PresenceEntry

/** The outcome of a publish. */
typealias Receipt = dev.starling.ffi.Receipt

/** A snapshot of a node's counters. */
typealias Stats = dev.starling.ffi.Stats

/** What a pull subscription yields: a message, a presence change or a lag notice. */
typealias SubscriptionItem = dev.starling.ffi.SubscriptionItem

/** The stable kind of a [StarlingException]; handle unknown future kinds like INTERNAL. */
typealias ErrorKind = dev.starling.ffi.ErrorKind

/** Severity of a library log record. */
typealias LogLevel = dev.starling.ffi.LogLevel

/** One library log record. */
typealias LogRecord = dev.starling.ffi.LogRecord

/** Every failure of the library: [kind] is stable (match on it), [message] is for people. */
class StarlingException(
    /** What kind of failure. */
    val kind: ErrorKind,
    message: String,
    cause: Throwable? = null,
) : RuntimeException(message, cause) {
    override fun toString(): String = "StarlingException($kind): $message"
}

/** Runs [block], turning the generated error into a [StarlingException]. */
internal inline fun <T> ffi(block: () -> T): T =
    try {
        block()
    } catch (e: FfiException.Failed) {
        throw StarlingException(e.kind, e.detail, e)
    }

/** The payload as UTF-8 text. */
val Message.text: String get() = payload.decodeToString()

/** The metadata as UTF-8 text. */
val PresenceEvent.metadataText: String get() = metadata.decodeToString()

/** The metadata as UTF-8 text. */
val PresenceEntry.metadataText: String get() = metadata.decodeToString()

/** Items a message/presence Flow buffers before the library's delivery thread waits. */
private const val FLOW_BUFFER = 4096

/** Library-wide functions. */
object Starling {
    /** The version of the Kotlin bindings; [libraryVersion] must match it. */
    const val BINDINGS_VERSION: String = "0.1.0"

    /** The version of the loaded libstarling (loading it checks the uniffi contract). */
    val libraryVersion: String get() = dev.starling.ffi.version()

    /** The topic id (64 hex digits) of a topic name, as every binding computes it. */
    fun topicId(name: String): String = ffi { dev.starling.ffi.topicId(name) }

    /**
     * The public key (peer id, 64 hex digits) of a 32-byte secret [seed]: the id of a node
     * started with `Config(identitySeed = seed)`, or a network authority's public key.
     */
    fun publicKey(seed: ByteArray): String = ffi { dev.starling.ffi.publicKey(seed) }

    /**
     * As the authority of a private network (secret [authoritySeed], 32 bytes; keep it off
     * the nodes): a credential admitting [peerId] to [networkId] until [expiresUnix] (Unix
     * seconds), in text form (`"starling-credential-v1 <hex>"`), for `Config.credential`.
     */
    fun issueCredential(authoritySeed: ByteArray, peerId: String, networkId: String, expiresUnix: Long): String =
        ffi { dev.starling.ffi.issueCredential(authoritySeed, peerId, networkId, expiresUnix.toULong()) }

    /**
     * Sends the library's log records at [level] and more severe to [onLog] (on a logging
     * thread of the library) until the returned handle is closed. Replaces an earlier one.
     */
    fun setLogListener(level: LogLevel, onLog: (LogRecord) -> Unit): AutoCloseable {
        val handle = ffi {
            dev.starling.ffi.setLogListener(level, object : LogListener {
                override fun onLog(record: LogRecord) = onLog(record)
            })
        }
        return Registration(handle)
    }
}

/** A listener registration: closing it stops delivery (once `close` returns, usually). */
class Registration internal constructor(private val handle: ListenerHandle) : AutoCloseable {
    /** Whether it was closed. */
    val isClosed: Boolean get() = handle.isCancelled()

    override fun close() {
        // Not destroyed here: isClosed stays callable; the cleaner frees it.
        handle.cancel()
    }
}

/**
 * A running Starling node. Start one with [Node.start] and close it (graceful shutdown,
 * at most about 3 s) with [close] or `use {}`; Flows and subscriptions of a closed node
 * complete.
 *
 * ```
 * Node.start(Config(bind = "127.0.0.1:0")).use { node -> node.publish("chat", "hi") }
 * ```
 */
class Node private constructor(private val raw: dev.starling.ffi.Node) : AutoCloseable {
    /** Closers of the Flows running on this node, so that [close] completes them. */
    private val active = ConcurrentHashMap.newKeySet<() -> Unit>()
    private val closed = AtomicBoolean(false)

    companion object {
        /**
         * Starts a node: binds its UDP socket, starts its runtime and joins the bootstrap
         * peers in the background. Throws [StarlingException] on a bad configuration or
         * when the socket or identity file cannot be set up.
         */
        @JvmStatic
        fun start(config: Config = Config()): Node = Node(ffi { dev.starling.ffi.Node(config) })

        /**
         * As [start], with [admission] deciding which peers may connect: `admission(peerId)`
         * (64 hex digits) returns true to admit. It is asked for every inbound connection and
         * for every outbound one (before the dial and after its handshake), on the node's
         * network threads, which handle no traffic meanwhile: keep it quick (an in-memory
         * lookup) and do not call the node from it. If it throws, the peer is refused.
         * Refusals are counted in `stats().refused["admission_hook"]`. For a fixed list,
         * `Config.allowlist` needs no callback; for private networks see
         * `Config.authority` / `Config.credential`.
         */
        @JvmStatic
        fun start(config: Config, admission: (String) -> Boolean): Node {
            val policy = object : AdmissionPolicy {
                override fun allow(peerId: String): Boolean =
                    try {
                        admission(peerId)
                    } catch (e: Throwable) {
                        // Escaping into the library would be an unexpected error on a
                        // network thread; refusing is the safe answer.
                        false
                    }
            }
            return Node(ffi { dev.starling.ffi.Node.withAdmission(config, policy) })
        }
    }

    /** This node's identity: its Ed25519 public key as 64 hex digits. */
    val id: String get() = raw.id()

    /** `"<peer id>@<address>"`: what other nodes pass to [join] or bootstrap with. */
    val contact: String get() = raw.contact()

    /** The bound UDP address (`"ip:port"`, the real port when 0 was asked for). */
    val boundAddr: String get() = raw.boundAddr()

    /** The addresses this node advertises. */
    val localAddrs: List<String> get() = raw.localAddrs()

    /** Whether [close] was called. */
    val isClosed: Boolean get() = closed.get()

    /** Joins the network through [peers] (`"host:port"` or `"<peer id>@host:port"`). */
    fun join(vararg peers: String) = ffi { raw.join(peers.toList()) }

    /** Publishes [payload] on [topic] (this node does not receive its own messages). */
    fun publish(topic: String, payload: ByteArray): Receipt = ffi { raw.publish(topic, payload) }

    /** Publishes [text] as UTF-8. */
    fun publish(topic: String, text: String): Receipt = publish(topic, text.encodeToByteArray())

    /** Announces this node online on [topic] with [metadata] (at most 1 KiB). */
    fun setPresence(topic: String, metadata: ByteArray = ByteArray(0)) =
        ffi { raw.setPresence(topic, metadata) }

    /** Announces this node online on [topic] with [metadata] as UTF-8. */
    fun setPresence(topic: String, metadata: String) = setPresence(topic, metadata.encodeToByteArray())

    /** Announces that this node is no longer online on [topic]. */
    fun clearPresence(topic: String) = ffi { raw.clearPresence(topic) }

    /** The other peers online on [topic] as this node sees it (this node itself is not listed). */
    fun online(topic: String): List<PresenceEntry> = ffi { raw.online(topic) }

    /** A snapshot of the node's counters. */
    fun stats(): Stats = ffi { raw.stats() }

    /**
     * A pull subscription to [topic]: read it with [Subscription.receive],
     * [Subscription.next] or [Subscription.items]; close it to leave.
     */
    fun subscribe(topic: String): Subscription = Subscription(ffi { raw.subscribe(topic) })

    /**
     * The messages of [topic] as a cold Flow: collecting subscribes, cancelling the
     * collection unsubscribes, and closing the node completes it. Messages arrive from a
     * delivery thread of the library; when the collector is slower than the network, the
     * library's queue for the topic overflows and drops the oldest (see [lagged]).
     */
    fun messages(topic: String): Flow<Message> = listen { send ->
        raw.addMessageListener(topic, object : MessageListener {
            override fun onMessages(messages: List<Message>) {
                for (m in messages) if (!send(m)) return
            }
        })
    }

    /**
     * The presence changes of [topic] as a Flow (same rules as [messages]), starting with an
     * Online event for each peer already online on the topic.
     */
    fun presence(topic: String): Flow<PresenceEvent> = listen { send ->
        raw.addPresenceListener(topic, object : PresenceListener {
            override fun onPresence(event: PresenceEvent) {
                send(event)
            }
        })
    }

    /** How many items of [topic] were dropped because its listeners were too slow. */
    fun lagged(topic: String): Flow<Long> = listen { send ->
        raw.addLagListener(topic, object : LagListener {
            override fun onLagged(topic: String, dropped: ULong) {
                send(dropped.toLong())
            }
        })
    }

    /**
     * Calls [onMessages] with batches of [topic]'s messages on a delivery thread of the
     * library until the registration is closed: the lowest-overhead way to receive.
     */
    fun onMessages(topic: String, onMessages: (List<Message>) -> Unit): Registration =
        Registration(ffi {
            raw.addMessageListener(topic, object : MessageListener {
                override fun onMessages(messages: List<Message>) = onMessages(messages)
            })
        })

    /**
     * Calls [onPresence] with [topic]'s presence changes, first an Online event for each
     * peer already online, until the registration is closed.
     */
    fun onPresence(topic: String, onPresence: (PresenceEvent) -> Unit): Registration =
        Registration(ffi {
            raw.addPresenceListener(topic, object : PresenceListener {
                override fun onPresence(event: PresenceEvent) = onPresence(event)
            })
        })

    /** A Flow fed by a listener registered with [register]; `send` is false once closed. */
    private fun <T> listen(register: ((T) -> Boolean) -> ListenerHandle): Flow<T> = callbackFlow {
        // Completed before the handle is cancelled: cancelling waits for a callback under
        // way, so a callback blocked on a full buffer must be released first.
        val stop = CompletableDeferred<Unit>()
        val handle = ffi {
            register { item ->
                val offered = trySend(item)
                when {
                    offered.isSuccess -> true
                    offered.isClosed || stop.isCompleted -> false
                    // Full: block this delivery thread (backpressure into the library's
                    // per-topic queue) until there is room or the Flow ends.
                    else -> runBlocking {
                        try {
                            select<Boolean> {
                                onSend(item) { true }
                                stop.onAwait { false }
                            }
                        } catch (e: CancellationException) {
                            false
                        } catch (e: ClosedSendChannelException) {
                            false
                        }
                    }
                }
            }
        }
        val closer = { stop.complete(Unit); channel.close(); Unit }
        active.add(closer)
        if (closed.get()) closer()
        awaitClose {
            stop.complete(Unit)
            active.remove(closer)
            handle.cancel()
        }
    }.buffer(FLOW_BUFFER) // a collector's own .buffer() replaces this (operator fusion)

    /** Shuts the node down off the caller's thread (it may wait up to about 3 s). */
    suspend fun shutdown() = withContext(Dispatchers.IO) { close() }

    /**
     * Shuts down gracefully (presence goodbyes; at most about 3 s) and frees the node.
     * Idempotent. Afterwards calls throw [StarlingException] with kind CLOSED, and Flows of
     * this node complete.
     */
    override fun close() {
        if (!closed.compareAndSet(false, true)) return
        raw.shutdown()
        for (closer in active.toList()) closer()
        // The handle itself is freed by the collector's cleaner, so that later calls get
        // CLOSED from the library instead of a use-after-destroy error.
    }
}

/**
 * A pull subscription to one topic (from [Node.subscribe]). Closing it leaves the topic
 * unless something else of this node holds it.
 */
class Subscription internal constructor(private val raw: dev.starling.ffi.Subscription) : AutoCloseable {
    /** The topic name. */
    val topic: String get() = raw.topic()

    /** Items waiting to be read. */
    val pending: Long get() = raw.pending().toLong()

    /**
     * The next item, waiting at most [timeout] (zero: only what is waiting); null if none
     * arrived in time. Throws [StarlingException] (CLOSED) once the subscription ended.
     */
    fun next(timeout: Duration = Duration.ZERO): SubscriptionItem? =
        ffi { raw.next(timeout.inWholeMilliseconds.coerceAtLeast(0).toULong()) }

    /** Up to [max] items, waiting at most [timeout] for the first. */
    fun nextBatch(max: Int, timeout: Duration = Duration.ZERO): List<SubscriptionItem> =
        ffi { raw.nextBatch(max.coerceAtLeast(0).toUInt(), timeout.inWholeMilliseconds.coerceAtLeast(0).toULong()) }

    /** The next item, suspending until one arrives; throws CLOSED once the subscription ended. */
    suspend fun receive(): SubscriptionItem = try {
        raw.recv()
    } catch (e: FfiException.Failed) {
        throw StarlingException(e.kind, e.detail, e)
    }

    /** The next message, skipping presence and lag items, waiting at most [timeout]. */
    fun nextMessage(timeout: Duration = 5.seconds): Message? {
        val deadline = System.nanoTime() + timeout.inWholeNanoseconds
        while (true) {
            val left = (deadline - System.nanoTime()) / 1_000_000
            if (left <= 0) return null
            when (val item = next(left.milliseconds)) {
                null -> return null
                is dev.starling.ffi.SubscriptionItem.Message -> return item.message
                else -> continue
            }
        }
    }

    /** Every item until the subscription ends (the Flow then completes). */
    fun items(): Flow<SubscriptionItem> = kotlinx.coroutines.flow.flow {
        while (true) {
            val item = try {
                receive()
            } catch (e: StarlingException) {
                if (e.kind == ErrorKind.CLOSED) return@flow else throw e
            }
            emit(item)
        }
    }

    /** Leaves the topic (idempotent); a suspended [receive] throws CLOSED. */
    override fun close() {
        raw.unsubscribe()
    }
}
