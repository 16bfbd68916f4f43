// A terminal chat: every line typed is published on the topic; messages and who comes and
// goes are printed. Talks with examples-c's chat (plain UTF-8 lines, the nickname as
// presence metadata, the same topic and network id).
package dev.starling.examples

import dev.starling.Config
import dev.starling.Node
import dev.starling.ffi.OfflineReason
import dev.starling.ffi.PresenceChange
import dev.starling.StarlingException
import dev.starling.metadataText
import dev.starling.text
import java.util.concurrent.ConcurrentHashMap
import kotlin.system.exitProcess

private const val USAGE = """usage: chat [--name NICK] [--bind ADDR] [--bootstrap PEER]... [--topic NAME] [--network ID]
  --name NICK       shown to others (presence metadata); default: the first 8 digits of the id
  --bind ADDR       UDP address to bind; default 127.0.0.1:0
  --bootstrap PEER  a node to join through: PEERID@HOST:PORT or HOST:PORT (repeatable;
                    --join is the same, as in examples-c)
  --topic NAME      chat room; default "chat"
  --network ID      network id; default "starling"
Lines from stdin are sent; /who lists who is online; /quit or end of input leaves."""

private class Args(
    val name: String?,
    val bind: String,
    val bootstrap: List<String>,
    val topic: String,
    val network: String,
)

private fun parse(argv: Array<String>): Args {
    var name: String? = null
    var bind = "127.0.0.1:0"
    val bootstrap = mutableListOf<String>()
    var topic = "chat"
    var network = "starling"
    var i = 0
    fun value(flag: String): String {
        if (i + 1 >= argv.size) usage("$flag needs a value")
        return argv[++i]
    }
    while (i < argv.size) {
        when (val a = argv[i]) {
            "--name" -> name = value(a)
            "--bind" -> bind = value(a)
            "--bootstrap", "--join" -> bootstrap += value(a)
            "--topic" -> topic = value(a)
            "--network" -> network = value(a)
            "-h", "--help" -> { println(USAGE); exitProcess(0) }
            else -> usage("unknown argument: $a")
        }
        i++
    }
    return Args(name, bind, bootstrap, topic, network)
}

private fun usage(problem: String): Nothing {
    System.err.println("chat: $problem\n$USAGE")
    exitProcess(2)
}

fun main(argv: Array<String>) {
    val args = parse(argv)
    val node = try {
        Node.start(Config(bind = args.bind, bootstrap = args.bootstrap, networkId = args.network))
    } catch (e: StarlingException) {
        System.err.println("chat: cannot start the node (${e.kind}): ${e.message}")
        exitProcess(1)
    }
    node.use {
        val me = args.name ?: node.id.take(8)
        val names = ConcurrentHashMap<String, String>()
        fun nameOf(peer: String) = names[peer] ?: peer.take(8)
        println("chat: $me on topic \"${args.topic}\"; others join with --bootstrap ${node.contact}")
        System.out.flush()
        // Registered before announcing, presence first, on this thread (a Flow registers
        // only when its collecting coroutine runs, and would miss what came before).
        // Both callbacks run on the topic's delivery thread.
        val presence = node.onPresence(args.topic) { e ->
            when (val change = e.change) {
                is PresenceChange.Online -> if (names.put(e.peer, e.metadataText) == null) say("* ${nameOf(e.peer)} is online")
                is PresenceChange.Updated -> { names[e.peer] = e.metadataText; say("* ${e.peer.take(8)} is now ${e.metadataText}") }
                is PresenceChange.Offline -> {
                    val why = when (change.reason) {
                        is OfflineReason.Left -> "left"
                        is OfflineReason.Expired -> "timed out"
                        is OfflineReason.Failed -> "is unreachable"
                    }
                    say("* ${nameOf(e.peer)} $why")
                    names.remove(e.peer)
                }
            }
        }
        val messages = node.onMessages(args.topic) { batch ->
            for (m in batch) say("[${nameOf(m.author)}] ${m.text}")
        }
        node.setPresence(args.topic, me)
        // The listener already got an Online event for each peer online when it was added;
        // reading online() as well is harmless (`names` avoids doubles).
        for (p in node.online(args.topic)) {
            if (names.putIfAbsent(p.peer, p.metadataText) == null) say("* ${nameOf(p.peer)} is online")
        }
        while (true) {
            val line = readlnOrNull()?.trimEnd() ?: break
            when {
                line == "/quit" -> break
                line == "/who" -> node.online(args.topic).forEach {
                    say("  ${it.metadataText.ifEmpty { it.peer.take(8) }} (${it.peer.take(8)})")
                }
                line.isNotEmpty() -> try {
                    node.publish(args.topic, line)
                } catch (e: StarlingException) {
                    say("! not sent (${e.kind}): ${e.message}")
                }
            }
        }
        // Leaving: the node's close (end of use {}) sends the presence goodbye.
        messages.close()
        presence.close()
    }
}

@Synchronized
private fun say(line: String) {
    println(line)
    System.out.flush()
}
