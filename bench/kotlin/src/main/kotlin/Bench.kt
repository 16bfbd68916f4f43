// Messages per second delivered to Kotlin code on one subscription (256-byte payloads).
//
// Two kinds of rows:
// - end-to-end: node A publishes and node B (another node in this process, over loopback
//   QUIC) receives, live. Bounded by B's Ed25519 signature check of every message (about
//   10k/s on one core here; see docs/BENCHMARKS.md), not by the binding.
// - dispatch: the binding's own path, measured without the signature checks in the timed
//   window. B's receiver is held (its first callback blocks) while A publishes N messages;
//   B verifies them and queues them in the subscription (queue large enough: no drops, as
//   checked). Then the receiver is released and the time to drain the N queued messages
//   into Kotlin is measured: library delivery thread -> uniffi lowering -> JNA upcall on a
//   Rust thread -> Kotlin lifting -> the callback / Flow collector / pull loop.
// Prints a Markdown table and one JSON line per row.
package dev.starling.bench

import dev.starling.Config
import dev.starling.Node
import dev.starling.Starling
import dev.starling.ffi.SubscriptionItem
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import java.util.concurrent.CountDownLatch
import java.util.concurrent.atomic.AtomicLong
import kotlin.system.exitProcess
import kotlin.time.Duration.Companion.milliseconds

private class Row(val path: String, val sent: Long, val delivered: Long, val dropped: Long, val seconds: Double) {
    val rate get() = delivered / seconds
}

/** Waits until [value] stops growing for 1 s (at most 60 s); returns it. */
private fun settle(what: String, value: () -> Long): Long {
    val deadline = System.nanoTime() + 60_000_000_000
    var last = value()
    var since = System.nanoTime()
    while (System.nanoTime() - since < 1_000_000_000) {
        if (System.nanoTime() > deadline) error("$what never settled")
        Thread.sleep(10)
        val v = value()
        if (v != last) { last = v; since = System.nanoTime() }
    }
    return last
}

private fun waitFor(what: String, seconds: Long = 60, check: () -> Boolean) {
    val deadline = System.nanoTime() + seconds * 1_000_000_000
    while (!check()) {
        if (System.nanoTime() > deadline) error("timed out after ${seconds}s waiting for $what")
        Thread.sleep(2)
    }
}

/** A receiver under test: counts into [count]/[dropped]; calls [hold] before each delivery. */
private fun interface Receiver {
    fun start(node: Node, topic: String, count: AtomicLong, dropped: AtomicLong, hold: () -> Unit): AutoCloseable
}

private val scope = CoroutineScope(Dispatchers.Default)

private val callback = Receiver { node, topic, count, dropped, hold ->
    val lag = scope.launch { node.lagged(topic).collect { dropped.addAndGet(it) } }
    val reg = node.onMessages(topic) { batch ->
        hold()
        count.addAndGet(batch.size.toLong())
    }
    AutoCloseable { reg.close(); runBlocking { lag.cancelAndJoin() } }
}

private val flow = Receiver { node, topic, count, dropped, hold ->
    val lag = scope.launch { node.lagged(topic).collect { dropped.addAndGet(it) } }
    val job = scope.launch {
        node.messages(topic).collect {
            hold()
            count.incrementAndGet()
        }
    }
    AutoCloseable { runBlocking { job.cancelAndJoin(); lag.cancelAndJoin() } }
}

private val pull = Receiver { node, topic, count, dropped, hold ->
    val sub = node.subscribe(topic)
    val job = scope.launch(Dispatchers.IO) {
        while (true) {
            hold()
            val items = try { sub.nextBatch(256, 100.milliseconds) } catch (e: Exception) { break }
            for (item in items) when (item) {
                is SubscriptionItem.Message -> count.incrementAndGet()
                is SubscriptionItem.Lagged -> dropped.addAndGet(item.dropped.toLong())
                else -> {}
            }
        }
    }
    AutoCloseable { sub.close(); runBlocking { job.join() } }
}

private fun pair(queue: UInt): Pair<Node, Node> {
    val a = Node.start(Config(bind = "127.0.0.1:0", networkId = "kt-bench", subscriptionQueue = queue))
    val b = Node.start(Config(bind = "127.0.0.1:0", networkId = "kt-bench", bootstrap = listOf(a.contact), subscriptionQueue = queue))
    return a to b
}

private fun connect(a: Node, b: Node, topic: String, count: AtomicLong, dropped: AtomicLong, size: Int) {
    a.setPresence(topic); b.setPresence(topic)
    waitFor("a and b to see each other on the topic") {
        a.online(topic).any { it.peer == b.id } && b.online(topic).any { it.peer == a.id }
    }
    // Warm-up: the JIT, the connection and the topic tree.
    val warm = 2_000L
    repeat(warm.toInt()) { a.publish(topic, ByteArray(size)) }
    settle("the warm-up messages") { count.get() + dropped.get() }
    count.set(0); dropped.set(0)
}

private fun endToEnd(name: String, receiver: Receiver, n: Int, size: Int): Row {
    val (a, b) = pair(65_536u)
    try {
        val topic = "e2e-$name"
        val count = AtomicLong()
        val dropped = AtomicLong()
        receiver.start(b, topic, count, dropped) {}.use {
            connect(a, b, topic, count, dropped, size)
            val payload = ByteArray(size) { it.toByte() }
            val t0 = System.nanoTime()
            repeat(n) { a.publish(topic, payload) }
            // Until all arrived (or were reported dropped), or no progress for 5 s.
            var last = -1L
            var end = System.nanoTime()
            var lastChange = end
            while (count.get() + dropped.get() < n) {
                val now = System.nanoTime()
                if (count.get() != last) { last = count.get(); lastChange = now; end = now }
                if (now - lastChange > 5_000_000_000) break
                Thread.sleep(1)
            }
            if (count.get() + dropped.get() >= n) end = System.nanoTime()
            return Row("end-to-end, $name", n.toLong(), count.get(), dropped.get(), (end - t0) / 1e9)
        }
    } finally {
        b.close(); a.close()
    }
}

private fun dispatch(name: String, receiver: Receiver, n: Int, size: Int): Row {
    val (a, b) = pair((n + 10_000).toUInt())
    try {
        val topic = "dispatch-$name"
        val count = AtomicLong()
        val dropped = AtomicLong()
        val gate = CountDownLatch(1)
        // Open during the warm-up; the receiver then waits on `gate` until the backlog is queued.
        val holding = java.util.concurrent.atomic.AtomicBoolean(false)
        receiver.start(b, topic, count, dropped) { if (holding.get()) gate.await() }.use {
            connect(a, b, topic, count, dropped, size)
            holding.set(true)
            val base = b.stats().delivered
            val payload = ByteArray(size) { it.toByte() }
            repeat(n) { a.publish(topic, payload) }
            // Everything that arrives is queued (none dropped: the queue holds n + 10,000).
            val queued = (settle("B's queue") { (b.stats().delivered - base).toLong() }).toInt()
            check(queued > 0) { "nothing arrived" }
            // A pull reader may have taken one batch before it reached the hold: not timed.
            val before = count.get()
            val t0 = System.nanoTime()
            gate.countDown()
            waitFor("the $queued queued messages to drain into Kotlin") { count.get() + dropped.get() >= queued }
            val seconds = (System.nanoTime() - t0) / 1e9
            return Row("dispatch, $name", queued.toLong() - before, count.get() - before, dropped.get(), seconds)
        }
    } finally {
        b.close(); a.close()
    }
}

/**
 * The library's `benchmark_dispatch`: synthetic messages (no network, no signatures) handed
 * to a Kotlin listener in batches of 256 from a library thread, as a delivery thread does.
 */
private fun synthetic(n: Int, size: Int): Row {
    val count = AtomicLong()
    val listener = object : dev.starling.ffi.MessageListener {
        override fun onMessages(messages: List<dev.starling.Message>) {
            count.addAndGet(messages.size.toLong())
        }
    }
    dev.starling.ffi.benchmarkDispatch(listener, 20_000uL, size.toUInt()) // warm-up (JIT)
    count.set(0)
    val t0 = System.nanoTime()
    dev.starling.ffi.benchmarkDispatch(listener, n.toULong(), size.toUInt())
    val seconds = (System.nanoTime() - t0) / 1e9
    check(count.get() == n.toLong()) { "delivered ${count.get()} of $n" }
    return Row("synthetic, callback (benchmark_dispatch)", n.toLong(), count.get(), 0, seconds)
}

fun main(argv: Array<String>) {
    var messages = 50_000
    var size = 256
    var i = 0
    while (i < argv.size) {
        when (argv[i]) {
            "--messages" -> messages = argv.getOrNull(++i)?.toIntOrNull()?.takeIf { it > 0 } ?: usage()
            "--size" -> size = argv.getOrNull(++i)?.toIntOrNull()?.takeIf { it > 0 } ?: usage()
            else -> usage()
        }
        i++
    }
    println("libstarling ${Starling.libraryVersion}, ${Runtime.getRuntime().availableProcessors()} cores, " +
        "JVM ${System.getProperty("java.version")}, $messages messages of $size B per row")
    val rows = listOf(
        synthetic(maxOf(messages, 100_000), size),
        endToEnd("callback", callback, messages, size),
        dispatch("callback (onMessages batches)", callback, messages, size),
        dispatch("Flow collector (messages(topic))", flow, messages, size),
        dispatch("pull (nextBatch 256)", pull, messages, size),
    )
    println()
    println("| path | sent | delivered | dropped | seconds | delivered msgs/s |")
    println("|---|---:|---:|---:|---:|---:|")
    for (r in rows) println("| ${r.path} | ${r.sent} | ${r.delivered} | ${r.dropped} | ${"%.3f".format(r.seconds)} | ${"%,.0f".format(r.rate)} |")
    println()
    for (r in rows) println("""{"path":"${r.path}","sent":${r.sent},"delivered":${r.delivered},"dropped":${r.dropped},"seconds":${"%.4f".format(r.seconds)},"msgs_per_s":${"%.0f".format(r.rate)}}""")
    exitProcess(0)
}

private fun usage(): Nothing {
    System.err.println("usage: bench [--messages N] [--size BYTES]")
    exitProcess(2)
}
