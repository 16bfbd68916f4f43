//! The `starling` binary end to end: every command's happy path and errors, a short demo,
//! and two `starling node` processes with `pub`/`sub`/`presence` over loopback.
//!
//! Ports are always 0 (or a port just freed); every wait is bounded; child processes are
//! killed by a guard when a test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_starling");

/// A child process killed on drop, with its stdout and stderr collected by threads.
struct Proc {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        Self::spawn_with_stdin(args, false)
    }

    fn spawn_with_stdin(args: &[&str], stdin: bool) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn starling");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().expect("stderr");
        let e = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                e.lock().unwrap().push(line);
            }
        });
        Proc {
            child,
            stdout: rx,
            stderr,
        }
    }

    /// The next stdout line, or a failure naming `what` (with stderr) after `limit`.
    fn line(&self, limit: Duration, what: &str) -> String {
        match self.stdout.recv_timeout(limit) {
            Ok(l) => l,
            Err(_) => panic!(
                "no stdout line ({what}) within {limit:?}; stderr: {:?}",
                self.stderr_text()
            ),
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until a stderr line contains `needle`; returns that line.
    fn stderr_line(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "stderr never said {needle:?} within {limit:?}: {}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` ("TERM", "INT") and waits for the exit code.
    fn signal_and_wait(&mut self, signal: &str, limit: Duration) -> i32 {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success());
        self.wait(limit)
    }

    fn wait(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                panic!(
                    "process did not exit within {limit:?}; stderr: {}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs to completion (killed after `limit`), with optional stdin.
fn run(args: &[&str], stdin: Option<&str>, limit: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn starling");
    if let Some(text) = stdin {
        let mut i = child.stdin.take().expect("stdin");
        i.write_all(text.as_bytes()).expect("write stdin");
    }
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let o = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("starling {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: o.join().unwrap_or_default(),
        stderr: e.join().unwrap_or_default(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts a failure with `code` whose stderr contains `needle`.
fn assert_fails(out: &Output, code: i32, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code; stdout {:?} stderr {err:?}",
        text(&out.stdout)
    );
    assert!(
        err.contains(needle),
        "stderr should contain {needle:?}: {err:?}"
    );
}

const SHORT: Duration = Duration::from_secs(20);

/// A loopback UDP port with nobody listening (bound, then freed).
fn dead_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().unwrap().port()
}

#[test]
fn help_on_every_command() {
    let out = run(&["--help"], None, SHORT);
    assert!(out.status.success());
    let top = text(&out.stdout);
    for cmd in ["keygen", "id", "node", "pub", "sub", "presence", "demo"] {
        assert!(top.contains(cmd), "{cmd} missing from --help: {top}");
        let out = run(&[cmd, "--help"], None, SHORT);
        assert!(out.status.success(), "{cmd} --help failed");
        let help = text(&out.stdout);
        assert!(help.contains("Usage: starling"), "{cmd}: {help}");
        assert!(
            help.contains("Example"),
            "{cmd} help has no example: {help}"
        );
    }
    // No command at all: the help, and a usage error.
    let out = run(&[], None, SHORT);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unknown_flag_is_a_usage_error() {
    for cmd in ["keygen", "id", "node", "pub", "sub", "presence", "demo"] {
        let out = run(&[cmd, "--no-such-flag"], None, SHORT);
        assert_fails(&out, 2, "unexpected argument '--no-such-flag'");
    }
    let out = run(&["frobnicate"], None, SHORT);
    assert_fails(&out, 2, "unrecognized subcommand 'frobnicate'");
}

#[test]
fn keygen_then_id_and_no_silent_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    let k = key.to_str().unwrap();
    let out = run(&["keygen", "--out", k], None, SHORT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    assert_eq!(id.len(), 64, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = run(&["id", "--identity", k], None, SHORT);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), id);

    let out = run(&["keygen", "--out", k], None, SHORT);
    assert_fails(&out, 4, "already exists");
    let out = run(&["keygen", "--out", k, "--force"], None, SHORT);
    assert!(out.status.success());
    assert_ne!(text(&out.stdout).trim(), id, "--force writes a new key");
}

#[test]
fn unreadable_key_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.key");
    let out = run(
        &["id", "--identity", missing.to_str().unwrap()],
        None,
        SHORT,
    );
    assert_fails(&out, 4, "No such file");
    assert!(text(&out.stderr).contains("missing.key"));

    let corrupt = dir.path().join("corrupt.key");
    std::fs::write(&corrupt, "not a key\n").unwrap();
    let c = corrupt.to_str().unwrap();
    let out = run(&["id", "--identity", c], None, SHORT);
    assert_fails(&out, 4, "corrupt");
    // A node refuses it too, and does not replace it.
    let out = run(
        &["node", "--bind", "127.0.0.1:0", "--identity", c],
        None,
        SHORT,
    );
    assert_fails(&out, 4, "corrupt");
    assert_eq!(std::fs::read_to_string(&corrupt).unwrap(), "not a key\n");
    // So does a client.
    let out = run(
        &["sub", "-b", "127.0.0.1:9", "-t", "x", "--identity", c],
        None,
        SHORT,
    );
    assert_fails(&out, 4, "corrupt");
}

#[test]
fn bad_addresses_are_usage_errors() {
    let out = run(&["node", "--bind", "nonsense"], None, SHORT);
    assert_fails(&out, 2, "invalid bind address \"nonsense\"");
    let out = run(
        &["node", "--bind", "127.0.0.1:0", "--bootstrap", "1.2.3"],
        None,
        SHORT,
    );
    assert_fails(&out, 2, "invalid bootstrap peer \"1.2.3\"");
    let out = run(
        &["node", "--bind", "127.0.0.1:0", "--metrics", "localhost"],
        None,
        SHORT,
    );
    assert_fails(&out, 2, "invalid --metrics address");
    let out = run(
        &["pub", "-b", "zz@127.0.0.1:4000", "-t", "x", "m"],
        None,
        SHORT,
    );
    assert_fails(&out, 2, "peer id must be 64 hex digits");
    let out = run(&["sub", "-b", "127.0.0.1:0", "-t", "x"], None, SHORT);
    assert_fails(&out, 2, "invalid bootstrap peer");
    let out = run(&["presence", "-b", "127.0.0.1", "-t", "x"], None, SHORT);
    assert_fails(&out, 2, "no port");
    let out = run(&["demo", "--kill", "2"], None, SHORT);
    assert_fails(&out, 2, "--kill must be a fraction");
    let out = run(&["demo", "--nodes", "1"], None, SHORT);
    assert_fails(&out, 2, "--nodes must be 2 to 500");
}

#[test]
fn unreachable_bootstrap_times_out_with_exit_3() {
    let peer = format!("127.0.0.1:{}", dead_port());
    for cmd in ["sub", "presence"] {
        let t = Instant::now();
        let out = run(
            &[cmd, "-b", &peer, "-t", "x", "--timeout", "2"],
            None,
            SHORT,
        );
        assert_fails(&out, 3, &format!("cannot reach bootstrap peer {peer}"));
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }
    let out = run(
        &["pub", "-b", &peer, "-t", "x", "--timeout", "2", "hello"],
        None,
        SHORT,
    );
    assert_fails(&out, 3, "cannot reach bootstrap peer");
    let out = run(
        &[
            "node",
            "--bind",
            "127.0.0.1:0",
            "--bootstrap",
            &peer,
            "--join-timeout",
            "2",
        ],
        None,
        SHORT,
    );
    assert_fails(&out, 3, "cannot reach bootstrap peer");
    // It printed its bootstrap string first all the same.
    assert!(text(&out.stdout).contains("@127.0.0.1:"));
}

/// Starts `starling node` and returns it with its bootstrap string.
fn node(extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["node", "--bind", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let p = Proc::spawn(&args);
    let contact = p.line(SHORT, "bootstrap string");
    let (id, addr) = contact.split_once('@').expect("peerid@addr");
    assert_eq!(id.len(), 64, "{contact}");
    assert!(addr.starts_with("127.0.0.1:"), "{contact}");
    (p, contact)
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

#[test]
fn two_nodes_with_pub_sub_presence_and_metrics_over_loopback() {
    let (mut a, a_contact) = node(&[
        "--topic",
        "chat",
        "--meta",
        "alpha",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let (mut b, b_contact) = node(&["--bootstrap", &a_contact, "--topic", "chat"]);
    b.stderr_line("joined the network", SHORT);

    // A subscriber through A, two messages published through B.
    let sub = Proc::spawn(&[
        "sub", "-b", &a_contact, "-t", "chat", "--json", "--count", "2",
    ]);
    sub.stderr_line("subscribed to \"chat\"", SHORT);
    let out = run(
        &["pub", "-b", &b_contact, "-t", "chat", "first"],
        None,
        SHORT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let receipt = text(&out.stdout);
    assert!(receipt.starts_with("published "), "{receipt}");
    let peers: usize = receipt
        .split_whitespace()
        .rev()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("peer count");
    assert!(peers >= 1, "{receipt}");
    // From stdin, via a bootstrap address without peer id.
    let b_addr = b_contact.split_once('@').unwrap().1;
    let out = run(
        &["pub", "-b", b_addr, "-t", "chat"],
        Some("second\n"),
        SHORT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 1);

    let mut got = Vec::new();
    for _ in 0..2 {
        let line = sub.line(SHORT, "a message on sub");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
        assert_eq!(v["topic"], "chat");
        assert_eq!(v["author"].as_str().map(str::len), Some(64));
        got.push(v["payload"].as_str().unwrap_or_default().to_owned());
    }
    got.sort();
    assert_eq!(got, ["first", "second"]);
    let mut sub = sub;
    assert_eq!(sub.wait(SHORT), 0, "sub exits after --count");

    // Presence through B: A announced itself as "alpha".
    let out = run(
        &["presence", "-b", &b_contact, "-t", "chat", "--json"],
        None,
        SHORT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let a_id = a_contact.split_once('@').unwrap().0;
    let listing = text(&out.stdout);
    let entry = listing
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["peer"] == a_id)
        .unwrap_or_else(|| panic!("A not online: {listing:?}"));
    assert_eq!(entry["metadata"], "alpha");

    // Metrics of A in Prometheus text.
    let line = a.stderr_line("metrics at http://", SHORT);
    let url = line.split("http://").nth(1).unwrap().trim();
    let addr = url.trim_end_matches("/metrics");
    let body = http_get(addr, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("text/plain; version=0.0.4"), "{body}");
    assert!(body.contains("# TYPE starling_peers gauge"), "{body}");
    let delivered: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("starling_delivered_total "))
        .and_then(|v| v.parse().ok())
        .expect("delivered counter");
    assert!(delivered >= 2, "A saw both messages: {body}");
    assert!(body.contains("starling_online{topic=\"chat\"}"), "{body}");
    assert!(http_get(addr, "/nope").starts_with("HTTP/1.1 404"));

    // Both stop cleanly on a signal.
    assert_eq!(b.signal_and_wait("INT", SHORT), 0, "{}", b.stderr_text());
    assert_eq!(a.signal_and_wait("TERM", SHORT), 0, "{}", a.stderr_text());
    assert!(a.stderr_text().contains("stopped"));
}

#[test]
fn presence_watch_sees_a_node_leave() {
    let (mut a, a_contact) = node(&["--topic", "room", "--meta", "alpha"]);
    let watch = Proc::spawn(&[
        "presence", "-b", &a_contact, "-t", "room", "--meta", "beta", "--watch",
    ]);
    let a_id = a_contact.split_once('@').unwrap().0.to_owned();
    let first = watch.line(SHORT, "the online list");
    assert_eq!(first, format!("{a_id} alpha"));
    assert_eq!(a.signal_and_wait("TERM", SHORT), 0);
    let change = watch.line(SHORT, "A going offline");
    assert_eq!(change, format!("{a_id} offline Left alpha"));
    let mut watch = watch;
    assert_eq!(watch.signal_and_wait("INT", SHORT), 0);
}

#[test]
fn pub_without_anyone_on_the_topic_says_so() {
    let (_a, a_contact) = node(&[]);
    let out = run(
        &[
            "pub",
            "-b",
            &a_contact,
            "-t",
            "empty",
            "--timeout",
            "2",
            "x",
        ],
        None,
        SHORT,
    );
    assert_fails(&out, 3, "found no peer on topic \"empty\"");
}

#[test]
fn node_keeps_its_identity_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("n.key");
    let k = key.to_str().unwrap();
    let (mut n, contact) = node(&["--identity", k]);
    assert_eq!(n.signal_and_wait("TERM", SHORT), 0);
    let out = run(&["id", "-i", k], None, SHORT);
    assert_eq!(
        text(&out.stdout).trim(),
        contact.split_once('@').unwrap().0,
        "the key file the node created is its identity"
    );
    assert!(Path::new(k).exists());
}

#[test]
fn demo_json_summary() {
    let out = run(
        &[
            "demo",
            "--nodes",
            "6",
            "--topics",
            "2",
            "--duration",
            "3",
            "--kill",
            "0.34",
            "--json",
            "--seed",
            "7",
        ],
        None,
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "only the summary on stdout");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("summary is JSON");
    for key in [
        "nodes",
        "published",
        "expected_deliveries",
        "delivered",
        "duplicates",
        "latency_p50_ms",
        "latency_p99_ms",
        "killed",
        "offline_detected_p99_ms",
        "presence_correct",
        "wall_s",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    assert_eq!(v["nodes"], 6);
    assert_eq!(v["killed"], 2);
    assert!(v["published"].as_u64().unwrap() >= 20, "{v}");
    assert!(v["expected_deliveries"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["delivered"], v["expected_deliveries"], "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert_eq!(v["presence_correct"], true, "{v}");
    assert!(v["offline_detected_p99_ms"].as_f64().unwrap() <= 10_000.0);
    // Progress went to stderr as plain lines (not a terminal here).
    let err = text(&out.stderr);
    assert!(err.contains("killed 2 nodes"), "{err}");
    assert!(!err.contains('\x1b'), "no terminal escapes on a pipe");
}

/// The body of `GET path` from a `--web` server (headers stripped).
fn http_body(addr: &str, path: &str) -> String {
    let resp = http_get(addr, path);
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The `host:port` of the "web view at http://…/" line a command prints on stderr.
fn web_addr(p: &Proc) -> String {
    let line = p.stderr_line("web view at http://", SHORT);
    let url = line
        .split("web view at http://")
        .nth(1)
        .expect("url")
        .trim();
    url.trim_end_matches('/').to_owned()
}

#[test]
fn demo_web_serves_page_state_and_event_stream() {
    let demo = Proc::spawn(&[
        "demo",
        "--nodes",
        "5",
        "--duration",
        "15",
        "--kill",
        "0",
        "--json",
        "--web",
        "127.0.0.1:0",
    ]);
    let addr = web_addr(&demo);

    // The page is the embedded, self-contained one.
    let page = http_get(&addr, "/");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("text/html") && page.contains("new EventSource(\"/events\")"));
    assert!(!page.contains("<script src"), "no external scripts");

    // /state.json: every node of the demo, alive, once started.
    let deadline = Instant::now() + SHORT;
    let state = loop {
        let v: serde_json::Value =
            serde_json::from_str(&http_body(&addr, "/state.json")).expect("state is JSON");
        let nodes = v["nodes"].as_array().expect("nodes").len();
        let linked = v["links"].as_array().is_some_and(|l| !l.is_empty());
        let eager = v["topics"][0]["eager"]
            .as_array()
            .is_some_and(|l| !l.is_empty());
        if nodes == 5 && linked && eager {
            break v;
        }
        assert!(Instant::now() < deadline, "state never showed 5 nodes: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(state["mode"], "demo");
    assert_eq!(state["eager_tree_exposed"], true);
    let nodes = state["nodes"].as_array().unwrap();
    assert!(nodes
        .iter()
        .all(|n| n["local"] == true && n["alive"] == true));
    let topics = state["topics"].as_array().expect("topics");
    assert_eq!(topics.len(), 3, "{state}");
    assert_eq!(topics[0]["name"], "demo-0");
    // Plumtree's eager links are drawn, and each is one of the topic's links.
    for t in topics {
        let links = t["links"].as_array().expect("topic links");
        for e in t["eager"].as_array().expect("eager links") {
            assert!(links.contains(e), "eager {e} not a link of {t}");
        }
    }

    // /events: a text/event-stream of JSON snapshots, a new one at least every ~500 ms.
    let mut s = std::net::TcpStream::connect(&addr).expect("connect web");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let started = Instant::now();
    let mut head = String::new();
    let mut snapshots: Vec<serde_json::Value> = Vec::new();
    let mut line = String::new();
    while snapshots.len() < 2 {
        line.clear();
        let n = reader.read_line(&mut line).expect("read event stream");
        assert!(n > 0, "event stream closed early");
        if let Some(data) = line.strip_prefix("data: ") {
            snapshots.push(serde_json::from_str(data.trim()).expect("event is JSON"));
        } else if snapshots.is_empty() {
            head.push_str(&line);
        }
    }
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Type: text/event-stream"), "{head}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(snapshots[1]["version"].as_u64() > snapshots[0]["version"].as_u64());
    assert_eq!(snapshots[1]["nodes"].as_array().unwrap().len(), 5);

    assert!(http_get(&addr, "/nope").starts_with("HTTP/1.1 404"));
}

#[test]
fn node_web_shows_this_node_and_its_peer() {
    let (mut a, a_contact) = node(&["--topic", "chat", "--meta", "alpha", "--web", "127.0.0.1:0"]);
    let addr = web_addr(&a);
    let (mut b, _) = node(&[
        "--bootstrap",
        &a_contact,
        "--topic",
        "chat",
        "--meta",
        "beta",
    ]);
    let deadline = Instant::now() + SHORT;
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&http_body(&addr, "/state.json")).expect("state is JSON");
        assert_eq!(v["mode"], "node");
        let nodes = v["nodes"].as_array().expect("nodes");
        // This node, and the other process's node: linked, and online on "chat".
        if nodes.len() == 2
            && v["links"].as_array().is_some_and(|l| l.len() == 1)
            && v["topics"][0]["online"].to_string().contains("beta")
        {
            assert_eq!(nodes[0]["label"], "this node");
            assert_eq!(nodes[0]["local"], true);
            assert_eq!(nodes[1]["local"], false);
            assert_eq!(nodes[1]["label"], "beta");
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(b.signal_and_wait("TERM", SHORT), 0);
    assert_eq!(a.signal_and_wait("TERM", SHORT), 0);
}

#[test]
fn bad_web_addresses_are_usage_errors() {
    let out = run(&["demo", "--web", "localhost"], None, SHORT);
    assert_fails(&out, 2, "invalid --web address \"localhost\"");
    let out = run(
        &["node", "--bind", "127.0.0.1:0", "--web", "1.2.3.4"],
        None,
        SHORT,
    );
    assert_fails(&out, 2, "invalid --web address");
    // A port already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().to_string();
    let out = run(
        &["demo", "--nodes", "2", "--duration", "1", "--web", &port],
        None,
        SHORT,
    );
    assert_fails(&out, 2, "cannot listen on --web address");
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn authority_issues_credentials_and_a_private_network_admits_only_members() {
    let out = run(&["authority", "--help"], None, SHORT);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("Example"));
    for sub in ["new", "issue"] {
        let out = run(&["authority", sub, "--help"], None, SHORT);
        assert!(out.status.success(), "{sub}");
        assert!(text(&out.stdout).contains("Example"), "{sub}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let auth = path("authority.key");
    let out = run(&["authority", "new", "--out", &auth], None, SHORT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let authority = text(&out.stdout).trim().to_owned();
    assert_eq!(authority.len(), 64, "{authority}");
    let out = run(&["authority", "new", "--out", &auth], None, SHORT);
    assert_fails(&out, 4, "already exists");

    let mut ids = Vec::new();
    for n in ["a", "b", "c"] {
        let out = run(
            &["keygen", "--out", &path(&format!("{n}.key"))],
            None,
            SHORT,
        );
        assert!(out.status.success());
        ids.push(text(&out.stdout).trim().to_owned());
    }
    let issue = |peer: &str, expires: &str| {
        run(
            &[
                "authority",
                "issue",
                "--key",
                &auth,
                "--peer",
                peer,
                "--network",
                "pn",
                "--expires",
                expires,
            ],
            None,
            SHORT,
        )
    };
    // To a file, and to stdout.
    let out = run(
        &[
            "authority",
            "issue",
            "--key",
            &auth,
            "--peer",
            &ids[0],
            "--network",
            "pn",
            "--expires",
            "1h",
            "--out",
            &path("a.cred"),
        ],
        None,
        SHORT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = issue(&ids[1], "2099-12-31");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cred = text(&out.stdout);
    assert!(cred.starts_with("starling-credential-v1 "), "{cred}");
    std::fs::write(path("b.cred"), &cred).unwrap();

    // Bad input: clear usage errors.
    assert_fails(&issue("xyz", "1h"), 2, "invalid --peer");
    assert_fails(&issue(&ids[1], "5y"), 2, "invalid --expires");
    assert_fails(&issue(&ids[1], "2001-01-01"), 2, "not in the future");
    let out = run(
        &[
            "authority",
            "issue",
            "--key",
            &path("missing.key"),
            "--peer",
            &ids[1],
            "--expires",
            "1h",
        ],
        None,
        SHORT,
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let private = |key: &str, cred: &str| {
        vec![
            "--identity".to_owned(),
            path(key),
            "--network".to_owned(),
            "pn".to_owned(),
            "--authority".to_owned(),
            authority.clone(),
            "--credential".to_owned(),
            path(cred),
        ]
    };
    let out = run(
        &["node", "--bind", "127.0.0.1:0", "--authority", &authority],
        None,
        SHORT,
    );
    assert_fails(&out, 2, "--authority needs --credential");
    // C shows A's credential: refused before starting.
    let mut c = vec!["node".to_owned(), "--bind".into(), "127.0.0.1:0".into()];
    c.extend(private("c.key", "a.cred"));
    assert_fails(&run(&args(&c), None, SHORT), 2, "credential is for peer");
    std::fs::write(path("junk.cred"), "not a credential").unwrap();
    let mut c = vec!["node".to_owned(), "--bind".into(), "127.0.0.1:0".into()];
    c.extend(private("c.key", "junk.cred"));
    assert_fails(&run(&args(&c), None, SHORT), 4, "malformed credential");

    // A member node, and a member client publishing through it.
    let mut a_args = vec!["--topic".to_owned(), "chat".into()];
    a_args.extend(private("a.key", "a.cred"));
    let (mut a, a_contact) = node(&args(&a_args));
    let mut p = vec![
        "pub".to_owned(),
        "-b".into(),
        a_contact.clone(),
        "-t".into(),
        "chat".into(),
    ];
    p.extend(private("b.key", "b.cred"));
    p.push("members only".into());
    let out = run(&args(&p), None, SHORT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    a.stderr_line("members only", SHORT);

    // An outsider (no credential) never joins: the member refuses it once the wait for
    // its credential (the 5 s handshake timeout) is over.
    let out = run(
        &[
            "node",
            "--bind",
            "127.0.0.1:0",
            "--bootstrap",
            &a_contact,
            "--network",
            "pn",
            "--join-timeout",
            "7",
        ],
        None,
        SHORT,
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    a.stderr_line("peer not admitted", SHORT);
    assert_eq!(a.signal_and_wait("TERM", SHORT), 0);
}
