package dev.starling

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import java.io.ByteArrayOutputStream
import java.io.PrintStream

@Timeout(60)
class ReadmeTest {
    @Test
    fun `the README hello world prints hello`() {
        val out = ByteArrayOutputStream()
        val saved = System.out
        System.setOut(PrintStream(out, true))
        try {
            // Begin: the lines of README.md's hello world, unchanged.
            Node.start(Config(bind = "127.0.0.1:0")).use { a ->
                Node.start(Config(bind = "127.0.0.1:0", bootstrap = listOf(a.contact))).use { b ->
                    val sub = b.subscribe("chat")
                    a.publish("chat", "hello") // cached by a, handed over when b arrives
                    println(sub.nextMessage()?.text) // hello (waits at most 5 s)
                }
            }
            // End.
        } finally {
            System.setOut(saved)
        }
        assertEquals("hello", out.toString().trim())
    }
}
