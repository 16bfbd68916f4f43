package dev.starling

import dev.starling.ffi.SubscriptionItem
import dev.starling.ffi.PresenceChange
import dev.starling.ffi.OfflineReason
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import org.junit.jupiter.api.io.TempDir
import java.nio.file.Path
import java.util.Collections
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds

@Timeout(120)
class NodeTest {
    @Test
    fun `library version and uniffi contract match the bindings`() {
        // Loading the library runs the generated contract-version and checksum checks;
        // a stale libstarling.so fails here.
        assertEquals(Starling.BINDINGS_VERSION, Starling.libraryVersion)
        val id = Starling.topicId("chat")
        assertEquals(64, id.length)
        assertEquals(id, Starling.topicId("chat"))
        assertNotEquals(id, Starling.topicId("chat2"))
    }

    @Test
    fun `messages reach every other node with the author's identity`() {
        val nodes = cluster(3)
        try {
            val topic = "kt-pubsub"
            val subs = nodes.map { it.subscribe(topic) }
            // Presence tells when every node knows the topic's members.
            nodes.forEachIndexed { i, n -> n.setPresence(topic, "node$i") }
            waitUntil("all three nodes online everywhere") { allSeeEachOther(nodes, topic) }
            val ids = nodes.map { it.id }.toSet()
            assertEquals(3, ids.size)
            val got = nodes.map { Collections.synchronizedList(mutableListOf<Message>()) }
            nodes.forEachIndexed { i, n -> n.publish(topic, "from $i") }
            waitUntil("each node to receive the two other nodes' messages") {
                subs.forEachIndexed { i, s -> s.nextBatch(64, 10.milliseconds).forEach { item ->
                    if (item is SubscriptionItem.Message) got[i].add(item.message)
                } }
                got.all { it.size >= 2 }
            }
            nodes.forEachIndexed { i, n ->
                val fromOthers = got[i].associate { it.author to it.text }
                val expected = nodes.indices.filter { it != i }.associate { nodes[it].id to "from $it" }
                assertEquals(expected, fromOthers, "node $i received")
                assertFalse(fromOthers.containsKey(n.id), "a node does not receive its own messages")
                got[i].forEach { m ->
                    assertEquals(topic, m.topic)
                    assertEquals(64, m.id.length)
                    assertTrue(m.hops >= 1u)
                }
            }
            subs.forEach { it.close() }
        } finally {
            nodes.closeAll()
        }
    }

    @Test
    fun `a relayed message names its author, not the forwarder`() {
        // a - b - c in a line: c only knows b, so a's message reaches c through b.
        val a = Node.start(loopback())
        val b = Node.start(loopback(a.contact))
        val c = Node.start(loopback(b.contact))
        try {
            val topic = "kt-relay"
            val sub = c.subscribe(topic)
            listOf(a, b, c).forEach { it.setPresence(topic) }
            waitUntil("a and b online at c") { c.online(topic).map { it.peer }.containsAll(listOf(a.id, b.id)) }
            a.publish(topic, "signed by a")
            val m = sub.nextMessage(20.seconds) ?: error("c received nothing from a")
            assertEquals(a.id, m.author)
            assertEquals("signed by a", m.text)
            sub.close()
        } finally {
            listOf(c, b, a).forEach { it.close() }
        }
    }

    @Test
    fun `messages and presence as Flows`() = runBlocking {
        val nodes = cluster(3)
        try {
            val topic = "kt-flow"
            val (a, b, c) = nodes
            // c watches presence and messages before anyone announces.
            val online = async(Dispatchers.Default) {
                c.presence(topic).first { it.change is PresenceChange.Online && it.peer == b.id }
            }
            val got = Collections.synchronizedList(mutableListOf<Message>())
            val collecting = launch(Dispatchers.Default) { c.messages(topic).collect { got.add(it) } }
            a.subscribe(topic).use { _ ->
                b.subscribe(topic).use { _ ->
                    nodes.forEach { it.setPresence(topic, "meta-" + it.id.take(4)) }
                    val event = withTimeout(20.seconds) { online.await() }
                    assertEquals("meta-" + b.id.take(4), event.metadataText)
                    assertEquals(topic, event.topic)
                    waitUntil("a and b see c online") {
                        listOf(a, b).all { n -> n.online(topic).any { it.peer == c.id } }
                    }
                    // Probes until c's Flow has one from each author (the topic tree is formed:
                    // per-author order is not kept for messages sent while it forms).
                    waitUntil("probes from a and b in c's Flow") {
                        a.publish(topic, "probe"); b.publish(topic, "probe")
                        Thread.sleep(50)
                        synchronized(got) { got.filter { it.text == "probe" }.map { it.author }.toSet() == setOf(a.id, b.id) }
                    }
                    for (i in 0 until 5) { a.publish(topic, "a$i"); b.publish(topic, "b$i") }
                    fun real() = synchronized(got) { got.filter { it.text != "probe" } }
                    waitUntil("the 10 messages in c's Flow") { real().size >= 10 }
                    // Per author, delivery follows the author's sequence.
                    assertEquals((0 until 5).map { "a$it" }, real().filter { it.author == a.id }.map { it.text })
                    assertEquals((0 until 5).map { "b$it" }, real().filter { it.author == b.id }.map { it.text })
                    collecting.cancel()
                }
            }
        } finally {
            nodes.closeAll()
        }
    }

    @Test
    fun `presence goes offline when a peer clears it or shuts down`() = runBlocking {
        val nodes = cluster(3)
        val (a, b, c) = nodes
        try {
            val topic = "kt-presence"
            val events = Collections.synchronizedList(mutableListOf<PresenceEvent>())
            val watching = launch(Dispatchers.Default) { a.presence(topic).collect { events.add(it) } }
            nodes.forEach { it.setPresence(topic, "hello") }
            // Through the Flow: once it has shown b and c online it is registered (a late
            // registration starts with the peers already online), so no later change is missed.
            waitUntil("b and c online in a's presence Flow") {
                synchronized(events) {
                    events.filter { it.change is PresenceChange.Online }.map { it.peer }.containsAll(listOf(b.id, c.id))
                }
            }
            waitUntil("b and c online at a") {
                a.online(topic).map { it.peer }.containsAll(listOf(b.id, c.id))
            }
            val entry = a.online(topic).first { it.peer == b.id }
            assertEquals("hello", entry.metadataText)
            assertTrue(entry.lastSeenMs >= entry.sinceMs)

            b.setPresence(topic, "away")
            waitUntil("b's update at a") {
                synchronized(events) { events.any { it.peer == b.id && it.change is PresenceChange.Updated && it.metadataText == "away" } }
            }
            b.clearPresence(topic)
            waitUntil("b offline (left) at a") {
                synchronized(events) { events.any { it.peer == b.id && (it.change as? PresenceChange.Offline)?.reason is OfflineReason.Left } }
            }
            c.close()
            waitUntil("c offline at a after its shutdown") {
                synchronized(events) { events.any { it.peer == c.id && it.change is PresenceChange.Offline } } &&
                    a.online(topic).none { it.peer == c.id }
            }
            watching.cancel()
        } finally {
            nodes.closeAll()
        }
    }

    @Test
    fun `errors are exceptions with the right kind`(@TempDir dir: Path) {
        fun kindOf(block: () -> Unit): ErrorKind = assertThrows(StarlingException::class.java) { block() }.kind

        assertEquals(ErrorKind.INVALID_BIND, kindOf { Node.start(Config(bind = "not an address")) })
        assertEquals(ErrorKind.INVALID_BOOTSTRAP, kindOf { Node.start(loopback("nowhere:::1")) })
        assertEquals(ErrorKind.INVALID_CONFIG, kindOf { Node.start(Config(bind = "127.0.0.1:0", maxPayload = 0u)) })
        assertEquals(ErrorKind.INVALID_CONFIG, kindOf { Node.start(Config(bind = "127.0.0.1:0", advertise = listOf("x"))) })
        assertEquals(ErrorKind.IDENTITY, kindOf {
            Node.start(Config(bind = "127.0.0.1:0", identityFile = dir.resolve("missing/dir/key").toString()))
        })
        assertEquals(ErrorKind.INVALID_ARGUMENT, kindOf { Starling.topicId("") })

        Node.start(Config(bind = "127.0.0.1:0", maxPayload = 100u)).use { node ->
            // The same UDP port twice.
            assertEquals(ErrorKind.TRANSPORT, kindOf { Node.start(Config(bind = node.boundAddr)) })
            val e = assertThrows(StarlingException::class.java) { node.publish("t", ByteArray(101)) }
            assertEquals(ErrorKind.PAYLOAD_TOO_LARGE, e.kind)
            assertTrue(e.message!!.isNotEmpty(), "the exception carries the library's message")
            node.publish("t", ByteArray(100))
            assertEquals(ErrorKind.METADATA_TOO_LARGE, kindOf { node.setPresence("t", ByteArray(2048)) })
            assertEquals(ErrorKind.INVALID_ARGUMENT, kindOf { node.subscribe("") })
            assertEquals(ErrorKind.INVALID_ARGUMENT, kindOf { node.publish("", "x") })
            assertEquals(ErrorKind.INVALID_BOOTSTRAP, kindOf { node.join("garbage") })
            node.close()
            assertEquals(ErrorKind.CLOSED, kindOf { node.publish("t", "late") })
            assertEquals(ErrorKind.CLOSED, kindOf { node.subscribe("t") })
            assertEquals(ErrorKind.CLOSED, kindOf { node.onMessages("t") {} })
        }
    }

    @Test
    fun `identity file gives a stable id`(@TempDir dir: Path) {
        val key = dir.resolve("node.key").toString()
        val first = Node.start(Config(bind = "127.0.0.1:0", identityFile = key)).use { it.id }
        val second = Node.start(Config(bind = "127.0.0.1:0", identityFile = key)).use { it.id }
        assertEquals(first, second)
    }

    @Test
    fun `callbacks run on library threads and a failing callback does not stop delivery`() {
        val nodes = cluster(2)
        val (a, b) = nodes
        try {
            val topic = "kt-threads"
            val threads = ConcurrentHashMap.newKeySet<String>()
            val received = Collections.synchronizedList(mutableListOf<String>())
            val testThread = nativeThreadName()
            val reg = b.onMessages(topic) { batch ->
                threads.add(nativeThreadName())
                batch.forEach { received.add(it.text) }
                if (batch.any { it.text == "boom" }) throw IllegalStateException("callback failure")
            }
            listOf(a, b).forEach { it.setPresence(topic) }
            waitUntil("a and b online at each other") { allSeeEachOther(listOf(a, b), topic) }
            a.publish(topic, "boom")
            waitUntil("the failing batch") { received.contains("boom") }
            a.publish(topic, "after")
            waitUntil("delivery after a failing callback") { received.contains("after") }
            assertFalse(threads.contains(testThread))
            // The library's delivery threads (kernel names), not JVM threads.
            assertTrue(threads.isNotEmpty() && threads.all { it.startsWith("starling") }, "callback threads: $threads")
            reg.close()
            assertTrue(reg.isClosed)
            val before = received.size
            a.publish(topic, "not after close")
            // The message still arrives at b (a pull subscription proves it), not at the closed listener.
            b.subscribe(topic).use { sub ->
                // b rejoins the topic: publish until a probe gets through.
                var m: Message? = null
                waitUntil("a probe to reach b's pull subscription") {
                    a.publish(topic, "probe")
                    m = sub.nextMessage(200.milliseconds)
                    m != null
                }
                assertEquals(a.id, m!!.author)
            }
            assertEquals(before, received.size, "a closed registration received something")
        } finally {
            nodes.closeAll()
        }
    }

    @Test
    fun `closing a node with live subscriptions and flows ends them`() = runBlocking {
        val nodes = cluster(2)
        val (a, b) = nodes
        try {
            val topic = "kt-close"
            val sub = b.subscribe(topic)
            val flowDone = CountDownLatch(1)
            val flow = launch(Dispatchers.Default) {
                b.messages(topic).collect { }
                flowDone.countDown()
            }
            val pending = async(Dispatchers.Default) {
                try { sub.receive(); null } catch (e: StarlingException) { e.kind }
            }
            // A blocking reader on another thread too.
            val blockingKind = async(Dispatchers.IO) {
                try { while (true) sub.next(200.milliseconds) } catch (e: StarlingException) { e.kind }
            }
            waitUntil("b's delivery thread and subscription to exist") { b.stats().topics >= 1u }
            b.close()
            assertTrue(flowDone.await(10, TimeUnit.SECONDS), "the Flow did not complete when the node closed")
            flow.join()
            assertEquals(ErrorKind.CLOSED, withTimeout(10.seconds) { pending.await() })
            assertEquals(ErrorKind.CLOSED, withTimeout(10.seconds) { blockingKind.await() })
            sub.close() // after the node: harmless
            b.close() // idempotent
            assertTrue(b.isClosed)
            // The other node is unaffected.
            a.publish(topic, "still alive")
        } finally {
            nodes.closeAll()
        }
    }

    @Test
    fun `closing a subscription wakes a suspended receive`() = runBlocking {
        Node.start(loopback()).use { node ->
            val sub = node.subscribe("kt-unsub")
            val pending = async(Dispatchers.Default) {
                try { sub.receive(); null } catch (e: StarlingException) { e.kind }
            }
            assertNull(sub.next(50.milliseconds))
            sub.close()
            assertEquals(ErrorKind.CLOSED, withTimeout(10.seconds) { pending.await() })
        }
    }

    @Test
    fun `cancelling a slow Flow collector releases the delivery thread`() = runBlocking {
        val nodes = cluster(2)
        val (a, b) = nodes
        try {
            val topic = "kt-slow"
            val seen = AtomicInteger()
            val slow = launch(Dispatchers.Default) {
                // The Flow buffers 4,096: past that the library's delivery thread blocks.
                b.messages(topic).collect { seen.incrementAndGet(); kotlinx.coroutines.delay(1_000) }
            }
            listOf(a, b).forEach { it.setPresence(topic) }
            waitUntil("a and b online at each other") { allSeeEachOther(listOf(a, b), topic) }
            repeat(6_000) { a.publish(topic, "m$it") }
            waitUntil("the collector to get its first message") { seen.get() >= 1 }
            withTimeout(10.seconds) { slow.cancelAndJoinCompat() }
            // Delivery on the topic still works for a new collector.
            val next = async(Dispatchers.Default) { b.messages(topic).first { it.text == "fresh" } }
            val received = withTimeout(20.seconds) {
                while (!next.isCompleted) { a.publish(topic, "fresh"); kotlinx.coroutines.delay(100) }
                next.await()
            }
            assertEquals(a.id, received.author)
        } finally {
            nodes.closeAll()
        }
    }
}

/** cancel() then join(), bounded by the caller's timeout. */
suspend fun kotlinx.coroutines.Job.cancelAndJoinCompat() { cancel(); join() }
