package dev.starling

import dev.starling.ffi.SubscriptionItem
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import java.util.Collections
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import kotlin.time.Duration.Companion.milliseconds
import kotlinx.coroutines.launch

@Timeout(120)
class ListenerTest {
    @Test
    fun `lag is reported when listeners are too slow`() {
        val a = Node.start(loopback())
        val b = Node.start(loopback(a.contact).copy(subscriptionQueue = 4u))
        try {
            val topic = "kt-lag"
            val first = CountDownLatch(1)
            val release = CountDownLatch(1)
            val slow = b.onMessages(topic) {
                first.countDown()
                release.await(20, TimeUnit.SECONDS)
            }
            val lags = Collections.synchronizedList(mutableListOf<Long>())
            val lagReg = b.onPresence(topic) { } // a second listener kind on the same topic
            val lagFlow = kotlinx.coroutines.CoroutineScope(kotlinx.coroutines.Dispatchers.Default).launchCollect(b.lagged(topic)) { lags.add(it) }
            listOf(a, b).forEach { it.setPresence(topic) }
            waitUntil("a and b online at each other") { allSeeEachOther(listOf(a, b), topic) }
            waitUntil("the slow callback to be called once") {
                a.publish(topic, "first")
                first.await(100, TimeUnit.MILLISECONDS)
            }
            // The callback is blocked: these overflow the 4-item queue of the topic's listeners.
            repeat(50) { a.publish(topic, "m$it") }
            waitUntil("b to queue the burst") { b.stats().drops["subscriber_lagged"]?.let { it > 0uL } == true }
            release.countDown()
            waitUntil("a lag report") { lags.isNotEmpty() }
            assertTrue(lags[0] > 0)
            slow.close(); lagReg.close(); lagFlow.cancel()
        } finally {
            b.close(); a.close()
        }
    }

    @Test
    fun `several subscriptions of one topic each get every message`() {
        val a = Node.start(loopback())
        val b = Node.start(loopback(a.contact))
        try {
            val topic = "kt-multi"
            val subs = List(3) { b.subscribe(topic) }
            val pushed = Collections.synchronizedList(mutableListOf<String>())
            val reg = b.onMessages(topic) { batch -> batch.forEach { pushed.add(it.text) } }
            val pulled = subs.map { mutableListOf<String>() }
            fun drain(i: Int): List<String> {
                subs[i].nextBatch(64, 10.milliseconds).forEach { if (it is SubscriptionItem.Message) pulled[i].add(it.message.text) }
                return pulled[i]
            }
            converge(a, topic, subs.indices.map { i -> { drain(i) } } + listOf({ pushed.toList() }))
            // Every probe is through: drop them (and anything still in flight).
            waitUntil("the probes to stop arriving") { subs.indices.all { i -> drain(i); subs[i].pending == 0L } }
            pulled.forEach { it.clear() }; pushed.clear()
            repeat(5) { a.publish(topic, "m$it") }
            val expected = List(5) { "m$it" }
            // In publish order (per author), each reader: probes still in flight are skipped.
            for (i in subs.indices) {
                waitUntil("5 messages on subscription $i") { drain(i).count { it != "probe" } >= 5 }
                assertEquals(expected, pulled[i].filter { it != "probe" })
            }
            waitUntil("5 messages at the listener") { pushed.count { it != "probe" } >= 5 }
            assertEquals(expected, pushed.filter { it != "probe" })
            reg.close(); subs.forEach { it.close() }
        } finally {
            b.close(); a.close()
        }
    }

    @Test
    fun `library logs reach a Kotlin callback until it is closed`() {
        val records = Collections.synchronizedList(mutableListOf<LogRecord>())
        val reg = Starling.setLogListener(LogLevel.INFO) { records.add(it) }
        try {
            Node.start(loopback()).use { n ->
                val short = n.id.take(8)
                waitUntil("the 'node started' log record") {
                    synchronized(records) { records.any { "node started" in it.message && short in it.message } }
                }
            }
            synchronized(records) {
                assertTrue(records.all { it.level in setOf(LogLevel.ERROR, LogLevel.WARN, LogLevel.INFO) })
            }
        } finally {
            reg.close()
        }
        val count = records.size
        Node.start(loopback()).use { }
        assertEquals(count, records.size, "records arrived after close")
    }

    @Test
    fun `contact and addresses describe the bound socket`() {
        Node.start(loopback()).use { n ->
            assertTrue(n.boundAddr.startsWith("127.0.0.1:"))
            assertTrue(n.boundAddr.substringAfter(':').toInt() > 0, "port 0 was resolved")
            assertEquals("${n.id}@${n.boundAddr}", n.contact)
            assertTrue(n.localAddrs.contains(n.boundAddr), "advertised: ${n.localAddrs}")
            assertEquals(64, n.id.length)
        }
    }
}

/** Launches a collector of [flow] calling [each]. */
fun <T> kotlinx.coroutines.CoroutineScope.launchCollect(flow: kotlinx.coroutines.flow.Flow<T>, each: (T) -> Unit) =
    launch { flow.collect { each(it) } }
