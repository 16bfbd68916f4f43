//! QUIC transport on loopback: identity, network separation, framing, close reporting.
#![cfg(feature = "net")]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use starling_core::identity::Keypair;
use starling_core::net::{
    Connection, Endpoint, StreamClass, TransportError, TransportOptions, CODE_NORMAL,
};
use starling_core::wire::Limits;

const LIMIT: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test with `what` if it takes longer than [`LIMIT`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {LIMIT:?} waiting for {what}"),
    }
}

fn key(n: u8) -> Keypair {
    Keypair::from_seed([n; 32])
}

fn loopback4() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn bind(addr: SocketAddr, n: u8, network: &str) -> Endpoint {
    Endpoint::bind(addr, &key(n), network, Limits::default()).expect("bind")
}

/// Dials `b` from `a` and accepts on `b`: (dialer's connection, acceptor's connection).
async fn connect(a: &Endpoint, b: &Endpoint) -> (Connection, Connection) {
    let addr = b.local_addr().unwrap();
    let (ca, cb) = within("connect + accept", async {
        tokio::join!(a.connect(addr, Some(b.peer_id())), b.accept())
    })
    .await;
    let ca = ca.expect("connect");
    let cb = cb.expect("endpoint open").expect("accepted");
    (ca, cb)
}

#[tokio::test]
async fn frames_flow_both_ways_on_both_classes_with_real_peer_ids() {
    let a = bind(loopback4(), 1, "net");
    let b = bind(loopback4(), 2, "net");
    assert_ne!(a.local_addr().unwrap().port(), 0);
    let (ca, cb) = connect(&a, &b).await;
    assert_eq!(ca.peer_id(), key(2).peer_id());
    assert_eq!(cb.peer_id(), key(1).peer_id());
    assert_eq!(ca.remote_addr(), b.local_addr().unwrap());

    for (from, to, tag) in [(&ca, &cb, "a->b"), (&cb, &ca, "b->a")] {
        from.send(StreamClass::Control, format!("{tag} ping").as_bytes())
            .await
            .expect("send control");
        from.send(StreamClass::Data, format!("{tag} data").as_bytes())
            .await
            .expect("send data");
        from.send(StreamClass::Data, b"")
            .await
            .expect("empty frame");
        let mut got = Vec::new();
        for _ in 0..3 {
            let (class, frame) = within("a frame", to.recv()).await.expect("recv");
            got.push((class, frame.to_vec()));
        }
        got.sort();
        assert_eq!(
            got,
            vec![
                (StreamClass::Control, format!("{tag} ping").into_bytes()),
                (StreamClass::Data, vec![]),
                (StreamClass::Data, format!("{tag} data").into_bytes()),
            ]
        );
    }
}

#[tokio::test]
async fn dialing_with_the_wrong_expected_peer_fails() {
    let a = bind(loopback4(), 1, "net");
    let b = bind(loopback4(), 2, "net");
    let addr = b.local_addr().unwrap();
    let expected = key(3).peer_id();
    let (res, accepted) = within("wrong-peer dial", async {
        tokio::join!(a.connect(addr, Some(expected)), b.accept())
    })
    .await;
    match res {
        Err(TransportError::WrongPeer {
            expected: e,
            actual,
        }) => {
            assert_eq!(e, expected);
            assert_eq!(actual, key(2).peer_id());
        }
        other => panic!("expected WrongPeer, got {other:?}"),
    }
    // The server side sees the dialer hang up with CODE_WRONG_PEER.
    let cb = accepted.expect("open").expect("handshake itself succeeded");
    let why = within("wrong-peer close", cb.closed()).await;
    assert!(
        matches!(why, TransportError::ClosedByPeer { code: 3, .. }),
        "{why:?}"
    );
}

#[tokio::test]
async fn different_network_ids_never_connect() {
    let a = bind(loopback4(), 1, "alpha");
    let b = bind(loopback4(), 2, "beta");
    let addr = b.local_addr().unwrap();
    let (res, accepted) = within("cross-network dial", async {
        tokio::join!(a.connect(addr, None), b.accept())
    })
    .await;
    match res {
        Err(TransportError::NetworkMismatch { addr: got }) => assert_eq!(got, addr),
        other => panic!("expected NetworkMismatch, got {other:?}"),
    }
    let server_side = accepted.expect("endpoint open");
    assert!(
        matches!(server_side, Err(TransportError::NetworkMismatch { .. })),
        "{server_side:?}"
    );
    let msg = TransportError::NetworkMismatch { addr }.to_string();
    assert!(msg.contains("not on this Starling network"), "{msg}");
}

#[tokio::test]
async fn ipv6_loopback_works() {
    let v6: SocketAddr = "[::1]:0".parse().unwrap();
    if std::net::UdpSocket::bind(v6).is_err() {
        println!("note: skipping ipv6_loopback_works, [::1] is not available here");
        return;
    }
    let a = bind(v6, 1, "net");
    let b = bind(v6, 2, "net");
    assert!(b.local_addr().unwrap().is_ipv6());
    let (ca, cb) = connect(&a, &b).await;
    ca.send(StreamClass::Control, b"hello over v6")
        .await
        .expect("send");
    let (class, frame) = within("v6 frame", cb.recv()).await.expect("recv");
    assert_eq!(
        (class, &frame[..]),
        (StreamClass::Control, &b"hello over v6"[..])
    );
    assert_eq!(cb.peer_id(), a.peer_id());
}

#[tokio::test]
async fn a_close_on_one_side_is_reported_on_the_other() {
    let a = bind(loopback4(), 1, "net");
    let b = bind(loopback4(), 2, "net");
    let (ca, cb) = connect(&a, &b).await;
    ca.close("leaving");
    let why = within("close notification", cb.closed()).await;
    match why {
        TransportError::ClosedByPeer { code, reason } => {
            assert_eq!(code, u64::from(CODE_NORMAL));
            assert_eq!(reason, "leaving");
        }
        other => panic!("expected ClosedByPeer, got {other:?}"),
    }
    let err = within("recv after close", cb.recv())
        .await
        .expect_err("closed");
    assert!(
        matches!(err, TransportError::ClosedByPeer { .. }),
        "{err:?}"
    );
    assert!(matches!(
        ca.close_reason(),
        Some(TransportError::ClosedLocally)
    ));
    let send = ca.send(StreamClass::Control, b"late").await;
    assert!(send.is_err(), "sending on a closed connection must fail");

    // Dropping every handle closes too.
    let (ca, cb) = connect(&a, &b).await;
    drop(ca);
    let why = within("drop notification", cb.closed()).await;
    assert!(
        matches!(why, TransportError::ClosedByPeer { .. }),
        "{why:?}"
    );
}

#[tokio::test]
async fn a_thousand_64k_frames_arrive_intact_and_in_order() {
    let a = bind(loopback4(), 1, "net");
    let b = bind(loopback4(), 2, "net");
    let (ca, cb) = connect(&a, &b).await;
    const N: u32 = 1000;
    const SIZE: usize = 64 * 1024;
    let frame = |i: u32| -> Vec<u8> {
        (0..SIZE)
            .map(|j| (i as usize * 31 + j * 7) as u8)
            .collect::<Vec<u8>>()
    };
    let sender = tokio::spawn({
        let ca = ca.clone();
        async move {
            for i in 0..N {
                let mut f = frame(i);
                f[..4].copy_from_slice(&i.to_be_bytes());
                ca.send(StreamClass::Data, &f).await.expect("send");
            }
        }
    });
    for i in 0..N {
        let (class, got) = within("bulk frame", cb.recv()).await.expect("recv");
        assert_eq!(class, StreamClass::Data);
        assert_eq!(got.len(), SIZE);
        let mut want = frame(i);
        want[..4].copy_from_slice(&i.to_be_bytes());
        assert!(got[..] == want[..], "frame {i} corrupted or out of order");
    }
    within("sender task", sender).await.expect("sender ok");
}

/// `recv` is cancel-safe: a call given up (here by a timeout far shorter than a 64 KiB
/// frame takes to arrive) keeps the part it read, and the next call goes on from there.
#[tokio::test]
async fn a_recv_given_up_half_way_loses_nothing() {
    let a = bind(loopback4(), 1, "net");
    let b = bind(loopback4(), 2, "net");
    let (ca, cb) = connect(&a, &b).await;
    const N: u8 = 20;
    let frame = |i: u8| -> Vec<u8> { (0..64 * 1024).map(|j| (j % 251) as u8 ^ i).collect() };
    let sender = tokio::spawn({
        let ca = ca.clone();
        async move {
            for i in 0..N {
                ca.send(StreamClass::Data, &frame(i)).await.expect("send");
            }
        }
    });
    let mut given_up = 0u32;
    let mut got = Vec::new();
    within("every frame despite cancelled receives", async {
        while got.len() < usize::from(N) {
            match tokio::time::timeout(Duration::from_micros(20), cb.recv()).await {
                Ok(r) => got.push(r.expect("recv").1),
                Err(_) => given_up += 1,
            }
        }
    })
    .await;
    for (i, f) in got.iter().enumerate() {
        assert!(
            f[..] == frame(i as u8)[..],
            "frame {i} corrupted or out of order"
        );
    }
    assert!(
        given_up > 0,
        "no receive was cancelled: the test proved nothing"
    );
    within("sender task", sender).await.expect("sender ok");
}

#[tokio::test]
async fn control_frames_overtake_a_data_backlog() {
    let a = bind(loopback4(), 1, "net");
    let b = bind(loopback4(), 2, "net");
    let (ca, cb) = connect(&a, &b).await;
    // Far more data than the receiver buffers: the data stream is blocked by flow control.
    let bulk = tokio::spawn({
        let ca = ca.clone();
        async move {
            let f = vec![0u8; 64 * 1024];
            for _ in 0..100 {
                if ca.send(StreamClass::Data, &f).await.is_err() {
                    return;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    within(
        "control send behind a data backlog",
        ca.send(StreamClass::Control, b"ping"),
    )
    .await
    .expect("send control");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (class, frame) = within("control frame", cb.recv()).await.expect("recv");
    assert_eq!((class, &frame[..]), (StreamClass::Control, &b"ping"[..]));
    bulk.abort();
}

#[tokio::test]
async fn dialing_a_silent_address_times_out() {
    // A UDP socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let options = TransportOptions {
        dial_timeout: Duration::from_millis(300),
        ..TransportOptions::default()
    };
    let a = Endpoint::bind_with(loopback4(), &key(1), "net", Limits::default(), options).unwrap();
    let res = within("dial timeout", a.connect(addr, None)).await;
    match res {
        Err(TransportError::Timeout { addr: got, after }) => {
            assert_eq!(got, addr);
            assert_eq!(after, Duration::from_millis(300));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
}

/// An endpoint holds at most `max_inbound_pending` inbound connections that `accept` has
/// not taken. From half of them on, a new peer must first answer a QUIC retry (proving its
/// address), and still gets in; with every place held, it is refused before any TLS work
/// and counted; a connection taken by `accept` frees its place.
#[tokio::test]
async fn inbound_connections_beyond_the_limit_are_refused_and_counted() {
    let options = TransportOptions {
        max_inbound_pending: 4,
        ..TransportOptions::default()
    };
    let b = Endpoint::bind_with(loopback4(), &key(100), "net", Limits::default(), options)
        .expect("bind");
    let addr = b.local_addr().unwrap();
    let dialers: Vec<Endpoint> = (1..=6).map(|n| bind(loopback4(), n, "net")).collect();
    let mut held = Vec::new();
    for (i, d) in dialers[..4].iter().enumerate() {
        let conn = within(
            "a dial within the limit",
            d.connect(addr, Some(b.peer_id())),
        )
        .await
        .unwrap_or_else(|e| panic!("dial {i} within the limit failed: {e}"));
        held.push(conn);
    }
    // Places 3 and 4 were given after a retry (half the places were held).
    assert_eq!((b.handshakes_retried(), b.handshakes_refused()), (2, 0));
    let refused = within("a dial over the limit", dialers[4].connect(addr, None)).await;
    assert!(
        matches!(refused, Err(TransportError::Handshake { .. })),
        "a fifth pending connection was not refused: {refused:?}"
    );
    assert_eq!((b.handshakes_retried(), b.handshakes_refused()), (3, 1));
    let taken = within("accept", b.accept())
        .await
        .expect("endpoint open")
        .expect("a finished handshake");
    assert_eq!(taken.peer_id(), key(1).peer_id());
    within(
        "a dial after a place was freed",
        dialers[5].connect(addr, None),
    )
    .await
    .expect("dial after accept");
    assert_eq!(b.handshakes_refused(), 1);
}

/// Once retries start (half the places held), peers from one source with a proven
/// address hold at most `max_inbound_pending_per_source` places: one more from that
/// source is refused and counted while a peer from another source still gets in. (That
/// a freed place frees its source's share is a unit test of the gate in transport.rs.)
#[tokio::test]
async fn proven_peers_from_one_source_hold_at_most_their_share() {
    let options = TransportOptions {
        max_inbound_pending: 8,
        max_inbound_pending_per_source: 2,
        ..TransportOptions::default()
    };
    let b = Endpoint::bind_with(loopback4(), &key(100), "net", Limits::default(), options)
        .expect("bind");
    let addr = b.local_addr().unwrap();
    let other: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let dialers: Vec<Endpoint> = (1..=7).map(|n| bind(loopback4(), n, "net")).collect();
    let elsewhere = bind(other, 9, "net");
    let mut held = Vec::new();
    // Four unproven peers (not counted per source) make the endpoint ask for retries; two
    // proven ones from 127.0.0.1 then use up that source's share.
    for (i, d) in dialers[..6].iter().enumerate() {
        let conn = within("a dial within the limits", d.connect(addr, None))
            .await
            .unwrap_or_else(|e| panic!("dial {i} within the limits failed: {e}"));
        held.push(conn);
    }
    assert_eq!((b.handshakes_retried(), b.handshakes_refused()), (2, 0));
    let refused = within(
        "a third proven dial from one source",
        dialers[6].connect(addr, None),
    )
    .await;
    assert!(
        matches!(refused, Err(TransportError::Handshake { .. })),
        "a third proven peer from 127.0.0.1 was not refused: {refused:?}"
    );
    assert_eq!((b.handshakes_retried(), b.handshakes_refused()), (3, 1));
    let conn = within("a dial from another source", elsewhere.connect(addr, None))
        .await
        .expect("a peer from 127.0.0.2 has its own share");
    held.push(conn);
    assert_eq!((b.handshakes_retried(), b.handshakes_refused()), (4, 1));
}

#[tokio::test]
async fn endpoint_close_ends_accept_and_connections() {
    let a = bind(loopback4(), 1, "net");
    let b = bind(loopback4(), 2, "net");
    let (ca, _cb) = connect(&a, &b).await;
    b.close();
    assert!(within("accept after close", b.accept()).await.is_none());
    let why = within("peer sees endpoint close", ca.closed()).await;
    assert!(
        matches!(why, TransportError::ClosedByPeer { .. }),
        "{why:?}"
    );
}

#[test]
fn binding_outside_a_runtime_is_an_error_not_a_panic() {
    let err = Endpoint::bind(loopback4(), &key(1), "net", Limits::default()).unwrap_err();
    assert!(matches!(err, TransportError::Config(_)), "{err:?}");
}
