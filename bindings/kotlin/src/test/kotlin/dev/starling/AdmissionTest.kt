package dev.starling

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import java.util.concurrent.ConcurrentHashMap

@Timeout(120)
class AdmissionTest {
    private fun seed(n: Int) = ByteArray(32) { n.toByte() }
    private fun refused(node: Node, reason: String): ULong = node.stats().refused[reason] ?: 0uL
    private val authoritySeed = seed(7)

    @Test
    fun `a denied peer is refused and an allowed one connects`() {
        val net = "kt-adm-${System.nanoTime()}"
        val deniedId = Starling.publicKey(seed(2))
        val asked = ConcurrentHashMap.newKeySet<String>()
        Node.start(loopback(network = net)) { peer -> asked.add(peer); peer != deniedId }.use { a ->
            Node.start(loopback(a.contact, network = net).copy(identitySeed = seed(2))).use { b ->
                assertEquals(deniedId, b.id)
                waitUntil("a to refuse the denied peer") { refused(a, "admission_hook") >= 1uL }
                assertTrue(deniedId in asked)
                assertEquals(0uL, a.stats().neighbors)
                assertEquals(0uL, b.stats().neighbors)
            }
            Node.start(loopback(a.contact, network = net)).use { c ->
                waitUntil("the allowed peer to connect") { c.stats().neighbors > 0uL && a.stats().neighbors > 0uL }
                assertTrue(c.id in asked)
            }
        }
    }

    @Test
    fun `a throwing policy refuses without crashing`() {
        val net = "kt-adm-${System.nanoTime()}"
        Node.start(loopback(network = net)) { _ -> throw IllegalStateException("policy bug") }.use { a ->
            Node.start(loopback(a.contact, network = net)).use { b ->
                waitUntil("a to refuse the peer its policy threw on") { refused(a, "admission_hook") >= 1uL }
                assertEquals(0uL, b.stats().neighbors)
                a.publish("still-up", "x")
            }
        }
    }

    private fun member(n: Int, net: String, vararg bootstrap: String): Node {
        val cred = Starling.issueCredential(
            authoritySeed, Starling.publicKey(seed(n)), net, System.currentTimeMillis() / 1000 + 3600,
        )
        return Node.start(
            loopback(*bootstrap, network = net).copy(
                identitySeed = seed(n),
                authority = Starling.publicKey(authoritySeed),
                credential = cred,
            ),
        )
    }

    @Test
    fun `a private network admits members and refuses outsiders`() {
        val net = "kt-priv-${System.nanoTime()}"
        member(10, net).use { m1 ->
            member(11, net, m1.contact).use { m2 ->
                waitUntil("the members to connect") { m1.stats().neighbors > 0uL && m2.stats().neighbors > 0uL }
            }
            Node.start(loopback(m1.contact, network = net)).use { outsider ->
                waitUntil("m1 to refuse the outsider without a credential") {
                    m1.stats().refused.keys.any { it.startsWith("credential_") }
                }
                assertEquals(0uL, outsider.stats().neighbors)
            }
        }
    }

    @Test
    fun `bad private network settings fail with the right kind`() {
        val net = "kt-priv-bad"
        val auth = Starling.publicKey(authoritySeed)
        val good = Starling.issueCredential(authoritySeed, Starling.publicKey(seed(20)), net, System.currentTimeMillis() / 1000 + 3600)
        fun kind(config: Config) = assertThrows(StarlingException::class.java) { Node.start(config).close() }.kind
        val base = loopback(network = net).copy(identitySeed = seed(20))
        assertEquals(ErrorKind.INVALID_CREDENTIAL, kind(base.copy(authority = auth, credential = "garbage")))
        assertEquals(ErrorKind.INVALID_CREDENTIAL, kind(base.copy(authority = auth, credential = good, identitySeed = seed(21))))
        assertEquals(ErrorKind.INVALID_CONFIG, kind(base.copy(authority = "zz", credential = good)))
        assertEquals(ErrorKind.INVALID_CONFIG, kind(base.copy(authority = auth)))
        assertEquals(ErrorKind.INVALID_CONFIG, kind(base.copy(allowlist = listOf("not hex"))))
        Node.start(base.copy(authority = auth, credential = good)).close()
    }
}
