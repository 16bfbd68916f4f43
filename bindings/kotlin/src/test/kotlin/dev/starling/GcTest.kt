package dev.starling

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import java.io.File
import java.lang.ref.WeakReference

/** Native threads of the library in this process (named starling-node/-deliver/-log). */
fun libraryThreads(): Int =
    File("/proc/self/task").listFiles().orEmpty().count { task ->
        runCatching { File(task, "comm").readText().startsWith("starling") }.getOrDefault(false)
    }

@Timeout(120)
class GcTest {
    /** Starts a node on [bind] and forgets it (no close), keeping only a weak reference. */
    private fun startAndForget(bind: String): WeakReference<Node> {
        val node = Node.start(Config(bind = bind, networkId = "kt-gc"))
        node.subscribe("gc-topic") // dropped too, never closed
        node.onMessages("gc-topic") { } // registration dropped without close
        node.publish("gc-topic", "x")
        return WeakReference(node)
    }

    @Test
    fun `forgotten nodes are freed by the garbage collector and release their port`() {
        val baseline = libraryThreads()
        // Find a free port by binding a node there and closing it.
        val addr = Node.start(Config(bind = "127.0.0.1:0", networkId = "kt-gc")).use { it.boundAddr }
        repeat(3) { round ->
            val ref = startAndForget(addr)
            // The port is taken while the forgotten node lives; once the collector has run
            // its cleaner (which shuts the node down) the port can be bound again.
            var again: Node? = null
            waitUntil("round $round: the forgotten node to be collected and its port freed", seconds = 60) {
                System.gc()
                again = try {
                    Node.start(Config(bind = addr, networkId = "kt-gc"))
                } catch (e: StarlingException) {
                    assertEquals(ErrorKind.TRANSPORT, e.kind, "unexpected failure: $e")
                    null
                }
                again != null
            }
            again!!.close()
            System.gc()
            assertEquals(null, ref.get(), "the wrapper is unreachable")
        }
        // Every runtime and delivery thread of the forgotten nodes has ended.
        waitUntil("library threads back to $baseline (now ${libraryThreads()})") {
            System.gc()
            libraryThreads() <= baseline
        }
    }

    @Test
    fun `many short-lived objects survive collection without crashes`() {
        Node.start(Config(bind = "127.0.0.1:0", networkId = "kt-gc")).use { node ->
            repeat(200) { i ->
                val sub = node.subscribe("churn-${i % 7}")
                if (i % 2 == 0) sub.close() // the others are left to the collector
                val reg = node.onPresence("churn-${i % 5}") { }
                if (i % 3 == 0) reg.close()
                node.publish("churn-${i % 7}", ByteArray(256))
                if (i % 50 == 0) System.gc()
            }
            // What was not closed is released by the collector: every topic is left and
            // every delivery thread ends.
            waitUntil("every topic left (now ${node.stats().topics})") {
                System.gc()
                node.stats().topics == 0uL
            }
            // Still fully usable.
            node.subscribe("after").use { assertEquals("after", it.topic) }
            assertEquals(Starling.BINDINGS_VERSION, Starling.libraryVersion)
        }
    }
}
