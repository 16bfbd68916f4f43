package dev.starling

import org.junit.jupiter.api.Assertions.fail

/** Polls [check] until it holds, failing with [what] after [seconds]. */
fun waitUntil(what: String, seconds: Long = 20, check: () -> Boolean) {
    val deadline = System.nanoTime() + seconds * 1_000_000_000
    while (!check()) {
        if (System.nanoTime() > deadline) fail<Unit>("timed out after ${seconds}s waiting for: $what")
        Thread.sleep(20)
    }
}

/** A loopback-only config on an OS-chosen port (short presence TTL for fast tests). */
fun loopback(vararg bootstrap: String, network: String = "kt-test"): Config =
    Config(bind = "127.0.0.1:0", bootstrap = bootstrap.toList(), networkId = network, presenceTtlMs = 3000u)

/** Starts [n] nodes: the first alone, the rest bootstrapping through it. */
fun cluster(n: Int, network: String = "kt-test"): List<Node> {
    val first = Node.start(loopback(network = network))
    return listOf(first) + (1 until n).map { Node.start(loopback(first.contact, network = network)) }
}

/** Whether every node sees every other node online on [topic]. */
fun allSeeEachOther(nodes: List<Node>, topic: String): Boolean = nodes.all { n ->
    val seen = n.online(topic).map { it.peer }.toSet()
    nodes.all { it === n || it.id in seen }
}

/** The kernel name of the calling thread (what the library named it, for its threads). */
fun nativeThreadName(): String {
    val tid = LibC.INSTANCE.gettid()
    return java.io.File("/proc/self/task/$tid/comm").readText().trim()
}

interface LibC : com.sun.jna.Library {
    fun gettid(): Int

    companion object {
        val INSTANCE: LibC = com.sun.jna.Native.load("c", LibC::class.java)
    }
}

/**
 * Publishes probes from [publisher] on [topic] until every reader got one (the topic
 * overlay is formed), then drains them. [readers] return the texts that arrived.
 */
fun converge(publisher: Node, topic: String, readers: List<() -> List<String>>) {
    val got = BooleanArray(readers.size)
    waitUntil("every reader of $topic to get a probe") {
        publisher.publish(topic, "probe")
        Thread.sleep(50)
        readers.forEachIndexed { i, r -> if ("probe" in r()) got[i] = true }
        got.all { it }
    }
}

/** Closes every node (also when a test failed). */
fun List<Node>.closeAll() = forEach { it.close() }
