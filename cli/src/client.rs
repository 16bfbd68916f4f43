//! `starling pub`, `starling sub` and `starling presence`: short-lived nodes that join a
//! network, do one thing and leave gracefully.

use std::io::{BufRead, Write};
use std::time::Duration;

use clap::Args;
use serde_json::json;
use starling_core::node::{Item, Message, PresenceChange, PresenceEntry, RecvError};

use crate::common::{self, CliError, CliResult, Client};
use crate::ClientArgs;

/// `starling pub`.
#[derive(Args, Debug)]
#[command(
    after_help = "Waits until it has a neighbour on the topic (up to --timeout), then \
publishes and prints, per message, its id and how many peers it reached directly.\n\n\
Examples:\n  starling pub -b <peer id>@203.0.113.7:4000 -t chat 'hello'\n  \
tail -f app.log | starling pub -b 203.0.113.7:4000 -t logs"
)]
pub struct PubArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The message; without it, each line of standard input is one message.
    #[arg(value_name = "MESSAGE")]
    pub message: Option<String>,
}

/// `starling sub`.
#[derive(Args, Debug)]
#[command(
    after_help = "Prints one line per message: '<author>: <text>', or with --json one \
object per line. A line 'subscribed' on stderr says it has a neighbour on the topic.\n\n\
Example:\n  starling sub -b <peer id>@203.0.113.7:4000 -t chat --json --count 10"
)]
pub struct SubArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// One JSON object per message (topic, author, seq, id, issued_ms, hops, payload).
    #[arg(long)]
    pub json: bool,
    /// Exit after this many messages.
    #[arg(long, short = 'n', value_name = "N")]
    pub count: Option<u64>,
}

/// `starling presence`.
#[derive(Args, Debug)]
#[command(
    after_help = "Prints who is online on the topic ('<peer id> <metadata>' per line). \
With --meta it announces itself online too; with --watch it then prints changes until \
Ctrl-C (and leaves gracefully).\n\n\
Example:\n  starling presence -b <peer id>@203.0.113.7:4000 -t chat --meta alice --watch"
)]
pub struct PresenceArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Announce this process online on the topic with this metadata.
    #[arg(long, value_name = "TEXT")]
    pub meta: Option<String>,
    /// Keep running and print every presence change.
    #[arg(long)]
    pub watch: bool,
    /// Seconds to let presence records arrive before printing the list.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub settle: f64,
    /// JSON output (one object per line).
    #[arg(long)]
    pub json: bool,
}

/// Publishes one message or every stdin line.
pub fn publish(args: PubArgs) -> CliResult {
    common::init_logging("warn");
    let name = args.client.topic.clone();
    let topic = common::topic_id(&name)?;
    let client = Client::start(&args.client)?;
    // Subscribing joins the topic's overlay, so a topic neighbour can show up.
    let sub = client.node.subscribe(topic)?;
    client.join(Some((topic, &name)))?;
    let mut out = std::io::stdout().lock();
    let mut send = |text: &str| -> CliResult {
        let r = client.node.publish(topic, text.as_bytes().to_vec())?;
        let _ = writeln!(out, "published {} seq {} to {} peers", r.id, r.seq, r.peers);
        let _ = out.flush();
        Ok(())
    };
    match &args.message {
        Some(m) => send(m)?,
        None => {
            for line in std::io::stdin().lock().lines() {
                let line =
                    line.map_err(|e| CliError::other(format!("reading standard input: {e}")))?;
                send(&line)?;
            }
        }
    }
    // Graceful: flushes what is queued, tells neighbours we leave. The subscription is
    // dropped after: dropping it first would leave the topic without a presence leave.
    // A moment first, so the last message is read before the connections close (see
    // `common::leave`).
    std::thread::sleep(Duration::from_millis(300));
    client.node.shutdown();
    drop(sub);
    Ok(())
}

fn message_json(name: &str, m: &Message) -> serde_json::Value {
    json!({
        "topic": name,
        "author": m.author.to_string(),
        "seq": m.seq,
        "id": m.id.to_string(),
        "issued_ms": m.issued_ms,
        "hops": m.hops,
        "payload": String::from_utf8_lossy(&m.payload),
    })
}

/// Prints messages until --count or a signal.
pub fn subscribe(args: SubArgs) -> CliResult {
    common::init_logging("warn");
    let stop = common::stop_flag()?;
    let name = args.client.topic.clone();
    let topic = common::topic_id(&name)?;
    let client = Client::start(&args.client)?;
    let sub = client.node.subscribe(topic)?;
    client.join(Some((topic, &name)))?;
    eprintln!("subscribed to {name:?} as {}", client.node.id());
    let mut got = 0u64;
    let mut out = std::io::stdout().lock();
    while !common::stopped(&stop) && args.count.is_none_or(|c| got < c) {
        match sub.recv_timeout(Duration::from_millis(100)) {
            Ok(Item::Message(m)) => {
                got += 1;
                let line = if args.json {
                    message_json(&name, &m).to_string()
                } else {
                    format!(
                        "{}: {}",
                        m.author.short(),
                        String::from_utf8_lossy(&m.payload)
                    )
                };
                if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                    break; // stdout closed (e.g. `| head`)
                }
            }
            Ok(Item::Lagged(n)) => eprintln!("warning: {n} messages dropped (reading too slowly)"),
            Ok(Item::Presence(_)) | Err(RecvError::Empty) => {}
            Err(RecvError::Closed) => break,
        }
    }
    client.node.shutdown();
    drop(sub);
    Ok(())
}

fn entry_line(e: &PresenceEntry, json: bool) -> String {
    let meta = String::from_utf8_lossy(&e.metadata);
    if json {
        json!({"peer": e.peer.to_string(), "online": true, "metadata": meta}).to_string()
    } else {
        format!("{} {meta}", e.peer)
    }
}

/// Lists (and with --watch follows) who is online.
pub fn presence(args: PresenceArgs) -> CliResult {
    common::init_logging("warn");
    let stop = common::stop_flag()?;
    let settle = common::secs(args.settle, "--settle")?;
    let name = args.client.topic.clone();
    let topic = common::topic_id(&name)?;
    let client = Client::start(&args.client)?;
    let sub = client.node.subscribe(topic)?;
    client.join(Some((topic, &name)))?;
    if let Some(meta) = &args.meta {
        client.node.set_presence(topic, meta.clone().into_bytes())?;
    }
    // Presence records arrive as a snapshot from topic neighbours and as broadcasts.
    let end = std::time::Instant::now() + settle;
    while std::time::Instant::now() < end && !common::stopped(&stop) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = std::io::stdout().lock();
    let me = client.node.id();
    // Changes so far are in the list below; only later ones are printed with --watch.
    while sub.try_recv().is_ok() {}
    let mut entries = client.node.online(topic)?;
    entries.sort_by_key(|e| e.peer);
    if !args.json && entries.is_empty() {
        let _ = writeln!(out, "# nobody else online on {name:?}");
    }
    for e in entries.iter().filter(|e| e.peer != me) {
        let _ = writeln!(out, "{}", entry_line(e, args.json));
    }
    let _ = out.flush();
    if args.watch {
        while !common::stopped(&stop) {
            match sub.recv_timeout(Duration::from_millis(100)) {
                Ok(Item::Presence(p)) => {
                    let change = match p.change {
                        PresenceChange::Online => "online".to_owned(),
                        PresenceChange::Updated => "updated".to_owned(),
                        PresenceChange::Offline(r) => format!("offline {r:?}"),
                    };
                    let meta = String::from_utf8_lossy(&p.metadata);
                    let line = if args.json {
                        json!({"peer": p.peer.to_string(), "change": change, "metadata": meta})
                            .to_string()
                    } else {
                        format!("{} {change} {meta}", p.peer)
                    };
                    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                        break;
                    }
                }
                Ok(_) | Err(RecvError::Empty) => {}
                Err(RecvError::Closed) => break,
            }
        }
    }
    let present: Vec<_> = args.meta.iter().map(|_| topic).collect();
    common::leave(&client.node, &present);
    drop(sub);
    Ok(())
}
