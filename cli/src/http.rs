//! A tiny HTTP/1.1 server on std (one thread per connection, `Connection: close`): enough
//! for a Prometheus scrape and the `--web` live view (a page, JSON, server-sent events),
//! with no web framework.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::common::CliError;

/// The longest request head read (a scrape's is a few hundred bytes).
const MAX_HEAD: usize = 8 * 1024;
/// Slow clients are dropped after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a handler answers.
pub enum Reply {
    /// A whole response.
    Full {
        /// HTTP status line's code and reason, e.g. "200 OK".
        status: &'static str,
        /// Content type.
        content_type: &'static str,
        /// The body.
        body: Vec<u8>,
    },
    /// A response whose body is written by `writer` until it returns (e.g. a
    /// `text/event-stream`); no Content-Length, the connection closes at the end.
    Stream {
        /// Content type.
        content_type: &'static str,
        /// Writes the body; an error (the client went away) ends the response.
        writer: StreamWriter,
    },
}

/// Writes a streamed body.
pub type StreamWriter = Box<dyn FnOnce(&mut dyn Write) -> std::io::Result<()> + Send>;

impl Reply {
    /// 200 with `body`.
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply::Full {
            status: "200 OK",
            content_type,
            body: body.into(),
        }
    }
    /// 404.
    pub fn not_found() -> Reply {
        Reply::Full {
            status: "404 Not Found",
            content_type: "text/plain; charset=utf-8",
            body: b"not found\n".to_vec(),
        }
    }
}

/// Handles `GET path` (query string included).
pub type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// Parses `addr` ("127.0.0.1:9100", "[::]:0"), naming the flag in the error.
pub fn parse_addr(addr: &str, flag: &str) -> Result<SocketAddr, CliError> {
    addr.parse().map_err(|_| {
        CliError::usage(format!(
            "invalid {flag} address {addr:?}: expected ip:port, e.g. 127.0.0.1:9100"
        ))
    })
}

/// Binds `addr` and serves `handler` on a background thread; returns the bound address.
pub fn serve(addr: SocketAddr, flag: &str, handler: Handler) -> Result<SocketAddr, CliError> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| CliError::usage(format!("cannot listen on {flag} address {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::other(format!("{flag}: {e}")))?;
    std::thread::Builder::new()
        .name("starling-http".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                let h = Arc::clone(&handler);
                let _ = std::thread::Builder::new()
                    .name("starling-http-conn".into())
                    .spawn(move || {
                        let _ = handle(stream, &h);
                    });
            }
        })
        .map_err(|e| CliError::other(format!("cannot start {flag} server: {e}")))?;
    Ok(bound)
}

fn handle(mut stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "", b"");
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    if method != "GET" && method != "HEAD" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n",
        );
    }
    match handler(path) {
        Reply::Full {
            status,
            content_type,
            body,
        } => {
            let body = if method == "HEAD" { &[][..] } else { &body[..] };
            respond(&mut stream, status, content_type, body)
        }
        Reply::Stream {
            content_type,
            writer,
        } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes())?;
            stream.flush()?;
            if method == "HEAD" {
                return Ok(());
            }
            writer(&mut stream)
        }
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// Prometheus text exposition (format 0.0.4) of a node's counters; `online` adds a
/// gauge per topic name.
pub fn prometheus(
    stats: &starling_core::node::Stats,
    online: &[(String, usize)],
    uptime: Duration,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP starling_{name} {help}\n# TYPE starling_{name} {kind}\nstarling_{name} {value}"
        );
    };
    metric(
        "peers",
        "gauge",
        "Open connections.",
        stats.peers.to_string(),
    );
    metric(
        "neighbors",
        "gauge",
        "Network-wide neighbours (active view).",
        stats.neighbors.to_string(),
    );
    metric(
        "topics",
        "gauge",
        "Topics this node is a member of.",
        stats.topics.to_string(),
    );
    metric(
        "msgs_in_total",
        "counter",
        "Frames received.",
        stats.msgs_in.to_string(),
    );
    metric(
        "msgs_out_total",
        "counter",
        "Frames sent.",
        stats.msgs_out.to_string(),
    );
    metric(
        "bytes_in_total",
        "counter",
        "Frame bytes received.",
        stats.bytes_in.to_string(),
    );
    metric(
        "bytes_out_total",
        "counter",
        "Frame bytes sent.",
        stats.bytes_out.to_string(),
    );
    metric(
        "published_total",
        "counter",
        "Messages published here.",
        stats.published.to_string(),
    );
    metric(
        "delivered_total",
        "counter",
        "Messages delivered to subscriptions here.",
        stats.delivered.to_string(),
    );
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since the node started.",
        format!("{:.3}", uptime.as_secs_f64()),
    );
    out.push_str("# HELP starling_drops_total Things dropped, by reason.\n");
    out.push_str("# TYPE starling_drops_total counter\n");
    for (reason, n) in &stats.drops {
        let _ = writeln!(
            out,
            "starling_drops_total{{reason=\"{}\"}} {n}",
            label(reason)
        );
    }
    for (name, help, map) in [
        (
            "refused_total",
            "Connections refused, by reason.",
            &stats.refused,
        ),
        (
            "cut_off_total",
            "Peers disconnected and kept out for breaking the protocol, by reason.",
            &stats.cut_off,
        ),
    ] {
        let _ = writeln!(out, "# HELP starling_{name} {help}");
        let _ = writeln!(out, "# TYPE starling_{name} counter");
        for (reason, n) in map {
            let _ = writeln!(out, "starling_{name}{{reason=\"{}\"}} {n}", label(reason));
        }
    }
    let _ = writeln!(
        out,
        "# HELP starling_banned Peers currently kept out (ban back-off running).\n\
         # TYPE starling_banned gauge\nstarling_banned {}",
        stats.banned
    );
    if !online.is_empty() {
        out.push_str("# HELP starling_online Peers online on a topic, as seen here.\n");
        out.push_str("# TYPE starling_online gauge\n");
        for (topic, n) in online {
            let _ = writeln!(out, "starling_online{{topic=\"{}\"}} {n}", label(topic));
        }
    }
    out
}

/// Escapes a Prometheus label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
