//! Physical references measured in the same run as the peer comparison: what one core
//! of this machine can sign, verify and hash, and what raw quinn moves over loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey, Verifier};
use serde_json::{json, Value};

/// CPU time of the calling thread: rates per core stay right on a machine shared with
/// other jobs (wall time would count the time this thread waited for a core).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Calls `f` in batches for about `time` of this thread's CPU and returns calls per
/// CPU second (= per core).
fn rate(time: Duration, mut f: impl FnMut()) -> f64 {
    let t = thread_cpu();
    let mut n = 0u64;
    while thread_cpu() - t < time {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    n as f64 / (thread_cpu() - t).as_secs_f64()
}

/// Verifications per CPU second of a 256-byte broadcast with the checker a starling
/// node runs (`net::verify::FastVerify`): one at a time (the verify-bound limit of one
/// node, as the issue defines it) and 64 at a time from one author (`verify_ahead`, what
/// the actor does with the broadcasts of one drain under load).
pub fn starling_verify(time: Duration) -> Value {
    use starling_core::identity::Keypair;
    use starling_core::net::verify::FastVerify;
    use starling_core::proto::Verify;
    use starling_core::wire::{Broadcast, SignedMessage, TopicId};
    let k = Keypair::from_seed([11u8; 32]);
    let msgs: Vec<_> = (1..=64u64)
        .map(|seq| {
            let m = SignedMessage::new(&k, TopicId::from_name("v"), seq, 1, vec![0u8; 256].into());
            (m.id(), Broadcast::Message(m))
        })
        .collect();
    let (id, b) = &msgs[0];
    let mut fast = FastVerify::default();
    let mut ok = true;
    let r = rate(time, || ok &= fast.verify(id, b));
    // Each call checks one batch of 64.
    let batch = 64.0
        * rate(time, || {
            let refs: Vec<_> = msgs.iter().map(|(id, b)| (*id, b)).collect();
            fast.verify_ahead(&refs);
            ok &= msgs.iter().all(|(id, b)| fast.verify(id, b));
        });
    json!({"suite": "peers", "workload": "physical", "reference": "starling_verify",
           "verify_limit_msgs_per_s": r, "batch_verify_msgs_per_s": batch, "verified_ok": ok,
           "note": "per CPU second of one thread: a 256-byte broadcast through the node's checker, alone and in batches of 64"})
}

/// Ed25519 sign and verify per second on one core (ed25519-dalek, 256-byte message).
pub fn ed25519(time: Duration) -> Value {
    let key = SigningKey::from_bytes(&[9u8; 32]);
    let msg = [1u8; 256];
    let sig = key.sign(&msg);
    let vk = key.verifying_key();
    let sign = rate(time, || {
        std::hint::black_box(key.sign(std::hint::black_box(&msg)));
    });
    let mut ok = true;
    let verify = rate(time, || {
        ok &= vk.verify(std::hint::black_box(&msg), &sig).is_ok();
    });
    json!({"suite": "peers", "workload": "physical", "reference": "ed25519",
           "sign_per_s": sign, "verify_per_s": verify, "verified_ok": ok})
}

/// BLAKE3 hashes per second and MB/s at 256 B and 16 KiB on one core.
pub fn blake3_rates(time: Duration) -> Value {
    let mut out = serde_json::Map::new();
    for (name, len) in [("256", 256usize), ("16384", 16 * 1024)] {
        let data = vec![7u8; len];
        let r = rate(time, || {
            std::hint::black_box(blake3::hash(std::hint::black_box(&data)));
        });
        out.insert(format!("hashes_per_s_{name}"), json!(r));
        out.insert(format!("mb_per_s_{name}"), json!(r * len as f64 / 1e6));
    }
    let mut v = json!({"suite": "peers", "workload": "physical", "reference": "blake3"});
    if let Value::Object(m) = &mut v {
        m.extend(out);
    }
    v
}

/// Raw quinn over loopback: one connection, one unidirectional stream, 64 KiB writes
/// for `time`; bytes received per second (TLS 1.3 with ring, quinn defaults).
pub fn quinn_loopback(time: Duration) -> Value {
    let res = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(quinn_inner(time)));
    match res {
        Ok(bps) => json!({"suite": "peers", "workload": "physical", "reference": "quinn_loopback",
                           "mb_per_s": bps / 1e6, "msgs_256_per_s_equiv": bps / 256.0}),
        Err(e) => json!({"suite": "peers", "workload": "physical", "reference": "quinn_loopback",
                          "error": e}),
    }
}

async fn quinn_inner(time: Duration) -> Result<f64, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .map_err(|e| format!("cert: {e}"))?;
    let cert_der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()),
    );
    let server_tls = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).map_err(|e| e.to_string())?;
    let client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_cfg = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).map_err(|e| e.to_string())?,
    ));
    let client_cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls).map_err(|e| e.to_string())?,
    ));
    let server = quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse().map_err(|_| "addr")?)
        .map_err(|e| e.to_string())?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    let recv = tokio::spawn(async move {
        let conn = server
            .accept()
            .await
            .ok_or("no incoming")?
            .await
            .map_err(|e| e.to_string())?;
        let mut s = conn.accept_uni().await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        let mut start = None;
        while let Some(n) = s.read(&mut buf).await.map_err(|e| e.to_string())? {
            start.get_or_insert_with(Instant::now);
            total += n as u64;
        }
        let secs = start.map_or(1.0, |t: Instant| t.elapsed().as_secs_f64());
        Ok::<f64, String>(total as f64 / secs.max(1e-6))
    });
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().map_err(|_| "addr")?)
        .map_err(|e| e.to_string())?;
    client.set_default_client_config(client_cfg);
    let conn = client
        .connect(addr, "localhost")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
    let chunk = vec![3u8; 64 * 1024];
    let end = Instant::now() + time;
    while Instant::now() < end {
        s.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    s.finish().map_err(|e| e.to_string())?;
    let bps = recv.await.map_err(|e| e.to_string())??;
    conn.close(0u32.into(), b"done");
    Ok(bps)
}
