//! The cost of libstarling's C boundary: the same work through the Rust API and through
//! the exported `starling_*` functions, interleaved in one process, medians printed as a
//! Markdown table (and JSON with `--json`).
//!
//! ```text
//! cargo run --release -p starling-bench --bin c_abi -- [--messages N]
//! ```
//!
//! Two pairs of nodes on loopback, one driven through `starling_core::node` and one
//! through the C ABI (the `extern "C"` functions called directly, as a C program calls
//! them: same code path, validation, panic boundary and copies). Each round publishes one
//! message on each pair, 1 ms apart:
//! - publish: wall time of one `Node::publish` vs one `starling_node_publish` call.
//! - delivery: from just before publish to the subscriber seeing the message, via
//!   `Subscription::recv_timeout` on a thread vs the C `on_message` callback on the
//!   subscription's delivery thread. The extra cost of the C path is the median of the
//!   per-round differences (C minus Rust; negative: C was faster).
//! - CPU: the calling thread's CPU time per publish call, and the receiving thread's CPU
//!   time per message (mean over the run), which the load of a shared machine disturbs
//!   far less than wall times.

use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;
use starling::c_api::*;
use starling_core::node::{Item, Node};
use starling_core::wire::TopicId;

const TOPIC: &str = "c-abi-bench";
const PAYLOAD: usize = 64;

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64
}

/// CPU time of the calling thread in ns (wall time on a machine shared with other work
/// mostly measures the scheduler; CPU time measures the work itself).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn payload(round: u64) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD];
    p[..8].copy_from_slice(&round.to_le_bytes());
    p
}

/// Per round: when it was published (ns since `base`) and when it was delivered; and the
/// receiving thread's CPU time at the first and the last measured round.
#[derive(Default)]
struct Rounds {
    at: Vec<(u64, u64)>,
    cpu_first: u64,
    cpu_last: u64,
    first: usize,
}
type Stamps = Arc<Mutex<Rounds>>;

fn stamps(rounds: usize, first: usize) -> Stamps {
    Arc::new(Mutex::new(Rounds {
        at: vec![(0, 0); rounds],
        first,
        ..Rounds::default()
    }))
}

fn record(stamps: &Stamps, payload: &[u8]) {
    let at = now_ns();
    if payload.len() == PAYLOAD {
        let mut round = [0u8; 8];
        round.copy_from_slice(&payload[..8]);
        let round = u64::from_le_bytes(round) as usize;
        let mut s = stamps.lock().unwrap_or_else(|e| e.into_inner());
        let last = s.at.len().saturating_sub(1);
        if round == s.first {
            s.cpu_first = thread_cpu_ns();
        } else if round == last {
            s.cpu_last = thread_cpu_ns();
        }
        if let Some(slot) = s.at.get_mut(round) {
            if slot.1 == 0 {
                slot.1 = at;
            }
        }
    }
}

unsafe extern "C" fn on_message(userdata: *mut c_void, m: *const starling_message) {
    // SAFETY: userdata is the `Stamps` leaked for the run; m is valid during the call.
    let (stamps, m) = unsafe { (&*(userdata as *const Stamps), &*m) };
    // SAFETY: payload/payload_len describe the payload during the call.
    let payload = unsafe { std::slice::from_raw_parts(m.payload, m.payload_len) };
    record(stamps, payload);
}

fn check(r: starling_result, what: &str) {
    if r != starling_result::Ok {
        let mut buf = [0 as std::ffi::c_char; 512];
        let _ = starling_last_error_message(buf.as_mut_ptr(), buf.len(), std::ptr::null_mut());
        // SAFETY: NUL-terminated by the call (or still zeroed).
        let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
        panic!("{what}: {r:?}: {}", msg.to_string_lossy());
    }
}

fn c_node(bootstrap: Option<&str>) -> *mut starling_node {
    let mut cfg = std::ptr::null_mut();
    check(starling_config_new(&mut cfg), "config");
    let bind = CString::new("127.0.0.1:0").expect("no NUL");
    check(starling_config_set_bind(cfg, bind.as_ptr()), "bind");
    let net = CString::new("c-abi-bench").expect("no NUL");
    check(starling_config_set_network_id(cfg, net.as_ptr()), "net");
    check(starling_config_set_worker_threads(cfg, 1), "threads");
    if let Some(b) = bootstrap {
        let b = CString::new(b).expect("no NUL");
        check(starling_config_add_bootstrap(cfg, b.as_ptr()), "bootstrap");
    }
    let mut node = std::ptr::null_mut();
    check(starling_node_start(cfg, &mut node), "start");
    starling_config_free(cfg);
    node
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut messages = 3000usize;
    let mut json_out = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => {
                messages = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| {
                        eprintln!("--messages needs a positive number");
                        std::process::exit(2)
                    })
            }
            "--json" => json_out = true,
            _ => {
                eprintln!("usage: c_abi [--messages N] [--json]");
                std::process::exit(2);
            }
        }
    }
    let _ = base();
    let topic = TopicId::from_name(TOPIC);
    let warmup = 200usize;
    let rounds = warmup + messages;

    // The Rust pair.
    let r_pub = Node::builder()
        .bind("127.0.0.1:0")
        .network_id("c-abi-bench")
        .worker_threads(1)
        .start()
        .expect("start");
    let r_sub = Node::builder()
        .bind("127.0.0.1:0")
        .network_id("c-abi-bench")
        .worker_threads(1)
        .bootstrap(r_pub.contact())
        .start()
        .expect("start");
    let r_stamps: Stamps = stamps(rounds, warmup);
    let sub = r_sub.subscribe(topic).expect("subscribe");
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (stamps, stop) = (Arc::clone(&r_stamps), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Item::Message(m)) = sub.recv_timeout(Duration::from_millis(50)) {
                    record(&stamps, &m.payload);
                }
            }
        })
    };

    // The C pair.
    let c_pub = c_node(None);
    let mut contact = vec![0 as std::ffi::c_char; STARLING_CONTACT_SIZE];
    check(
        starling_node_contact(
            c_pub,
            contact.as_mut_ptr(),
            contact.len(),
            std::ptr::null_mut(),
        ),
        "contact",
    );
    // SAFETY: NUL-terminated by the call.
    let contact = unsafe { std::ffi::CStr::from_ptr(contact.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let c_sub = c_node(Some(&contact));
    let c_stamps: &'static Stamps = Box::leak(Box::new(stamps(rounds, warmup)));
    let callbacks = starling_callbacks {
        userdata: c_stamps as *const Stamps as *mut c_void,
        on_message: Some(on_message),
        on_presence: None,
        on_lagged: None,
        release: None,
    };
    let mut c_subscription = std::ptr::null_mut();
    check(
        starling_node_subscribe(
            c_sub,
            TOPIC.as_ptr(),
            TOPIC.len(),
            &callbacks,
            &mut c_subscription,
        ),
        "subscribe",
    );

    // Wait until both subscribers receive (the topic trees are up).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let probe = payload(u64::MAX);
        let _ = r_pub.publish(topic, probe.clone());
        check(
            starling_node_publish(
                c_pub,
                TOPIC.as_ptr(),
                TOPIC.len(),
                probe.as_ptr(),
                probe.len(),
                std::ptr::null_mut(),
            ),
            "probe",
        );
        std::thread::sleep(Duration::from_millis(100));
        let stats_r = r_sub.stats().map(|s| s.delivered).unwrap_or(0);
        let mut stats_c = starling_stats::default();
        check(starling_node_stats(c_sub, &mut stats_c), "stats");
        if stats_r > 0 && stats_c.delivered > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "subscribers did not receive within 20 s (rust {stats_r}, c {})",
            stats_c.delivered
        );
    }

    let mut pub_rust = Vec::with_capacity(messages);
    let mut pub_c = Vec::with_capacity(messages);
    let mut cpu_rust = Vec::with_capacity(messages);
    let mut cpu_c = Vec::with_capacity(messages);
    for round in 0..rounds {
        let p = payload(round as u64);
        // Alternate which side goes first so neither always runs on a warmer cache.
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let cpu0 = thread_cpu_ns();
                let t0 = now_ns();
                r_stamps.lock().unwrap_or_else(|e| e.into_inner()).at[round].0 = t0;
                r_pub.publish(topic, p.clone()).expect("publish");
                if round >= warmup {
                    pub_rust.push((now_ns() - t0) as f64 / 1000.0);
                    cpu_rust.push((thread_cpu_ns() - cpu0) as f64 / 1000.0);
                }
            } else {
                let cpu0 = thread_cpu_ns();
                let t0 = now_ns();
                c_stamps.lock().unwrap_or_else(|e| e.into_inner()).at[round].0 = t0;
                check(
                    starling_node_publish(
                        c_pub,
                        TOPIC.as_ptr(),
                        TOPIC.len(),
                        p.as_ptr(),
                        p.len(),
                        std::ptr::null_mut(),
                    ),
                    "publish",
                );
                if round >= warmup {
                    pub_c.push((now_ns() - t0) as f64 / 1000.0);
                    cpu_c.push((thread_cpu_ns() - cpu0) as f64 / 1000.0);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(500));

    // Per round: the delivery latency (None if the message was not delivered).
    let latencies = |stamps: &Stamps| -> Vec<Option<f64>> {
        let s = stamps.lock().unwrap_or_else(|e| e.into_inner());
        s.at[warmup..]
            .iter()
            .map(|(t0, t1)| (*t1 > *t0 && *t0 > 0).then(|| (t1 - t0) as f64 / 1000.0))
            .collect()
    };
    let (lat_rust, lat_c) = (latencies(&r_stamps), latencies(c_stamps));
    let got_rust = lat_rust.iter().flatten().count();
    let got_c = lat_c.iter().flatten().count();
    // Paired per round (both sides ran within the same millisecond), so the machine's
    // load, which changes over the run, cancels out better than in a difference of medians.
    let pub_diff: Vec<f64> = pub_c.iter().zip(&pub_rust).map(|(c, r)| c - r).collect();
    let lat_diff: Vec<f64> = lat_c
        .iter()
        .zip(&lat_rust)
        .filter_map(|(c, r)| Some((*c)? - (*r)?))
        .collect();
    let cpu_per_message = |stamps: &Stamps| -> f64 {
        let s = stamps.lock().unwrap_or_else(|e| e.into_inner());
        let n = s.at.len().saturating_sub(1 + s.first).max(1);
        s.cpu_last.saturating_sub(s.cpu_first) as f64 / n as f64 / 1000.0
    };
    let (recv_cpu_rust, recv_cpu_c) = (cpu_per_message(&r_stamps), cpu_per_message(c_stamps));
    let cpu_diff: Vec<f64> = cpu_c.iter().zip(&cpu_rust).map(|(c, r)| c - r).collect();
    let lat_rust: Vec<f64> = lat_rust.into_iter().flatten().collect();
    let lat_c: Vec<f64> = lat_c.into_iter().flatten().collect();

    stop.store(true, Ordering::Relaxed);
    let _ = consumer.join();
    starling_subscription_free(c_subscription);
    starling_node_free(c_sub);
    starling_node_free(c_pub);
    r_sub.shutdown();
    r_pub.shutdown();

    let (pr, pc, pd) = (median(pub_rust), median(pub_c), median(pub_diff));
    let (lr, lc, ld) = (median(lat_rust), median(lat_c), median(lat_diff));
    let (cr, cc, cd) = (median(cpu_rust), median(cpu_c), median(cpu_diff));
    if json_out {
        println!(
            "{}",
            json!({
                "suite": "c_abi", "messages": messages, "payload": PAYLOAD,
                "publish_rust_us": pr, "publish_c_us": pc, "publish_overhead_us": pd,
                "delivery_rust_us": lr, "delivery_c_us": lc, "dispatch_overhead_us": ld,
                "publish_cpu_rust_us": cr, "publish_cpu_c_us": cc, "publish_cpu_overhead_us": cd,
                "receive_cpu_rust_us": recv_cpu_rust, "receive_cpu_c_us": recv_cpu_c,
                "receive_cpu_overhead_us": recv_cpu_c - recv_cpu_rust,
                "delivered_rust": got_rust, "delivered_c": got_c,
            })
        );
    } else {
        println!(
            "C boundary, {messages} messages of {PAYLOAD} B per side, medians in µs (one run)\n"
        );
        println!("| measurement | Rust API | C ABI | C − Rust (median of per-round differences) |");
        println!("|---|---|---|---|");
        println!("| publish call | {pr:.1} | {pc:.1} | {pd:+.1} |");
        println!(
            "| publish → subscriber sees it (recv vs callback) | {lr:.1} | {lc:.1} | {ld:+.1} |"
        );
        println!("| publish call, CPU time of the calling thread | {cr:.1} | {cc:.1} | {cd:+.1} |");
        println!(
            "| receiving thread CPU per message (recv loop vs delivery thread + callback; mean) | {recv_cpu_rust:.1} | {recv_cpu_c:.1} | {:+.1} |",
            recv_cpu_c - recv_cpu_rust
        );
        println!("\ndelivered: Rust {got_rust}/{messages}, C {got_c}/{messages}");
    }
}
