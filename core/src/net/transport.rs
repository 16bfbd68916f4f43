//! QUIC transport: endpoints and connections bound to the node's Ed25519 identity.
//!
//! # Identity and TLS
//! Each node presents a self-signed X.509 certificate whose key is its Ed25519 identity
//! key ([`Keypair`]); TLS 1.3 only, mutual authentication (the server requires a client
//! certificate). Custom rustls verifiers accept exactly one certificate carrying an
//! Ed25519 key and check the TLS 1.3 `CertificateVerify` signature against that very key
//! with rustls' own helper, so the peer proves possession of the key; that key *is* the
//! peer's [`PeerId`], exposed by [`Connection::peer_id`]. There is deliberately no CA, no
//! chain, no hostname check and no validity-period check: the only thing a certificate
//! vouches for is the key, and the handshake proves the key. The certificate's own
//! self-signature is not checked either (it adds nothing to the handshake proof).
//! Session resumption is off, so every connection re-proves the key.
//!
//! ALPN is `starling/<protocol version>/<network id>`, so nodes of different networks
//! (or protocol versions) never complete a handshake: both sides get
//! [`TransportError::NetworkMismatch`].
//!
//! The crypto provider (ring) is passed explicitly to every config; no process-global
//! provider is installed or consulted.
//!
//! # Framing and stream classes
//! Each side opens one long-lived unidirectional stream per [`StreamClass`] on its first
//! send to that class. A stream starts with one class byte (0 control, 1 data), followed
//! by frames: a `u32` big-endian length and that many bytes. A receiver refuses a length
//! above [`Limits::max_frame_bytes`] before allocating anything, and closes the connection
//! with [`CODE_FRAME_TOO_LARGE`]. Control streams have a higher QUIC send priority, and
//! [`Connection::recv`] always drains control frames before data frames, so membership
//! and failure-detection traffic is never stuck behind a busy topic.
//!
//! # Private networks
//! An endpoint bound with [`Endpoint::bind_private`] shows its [`Credential`] right after
//! the handshake, on a stream of its own (class byte 2, a `u16` length, the credential),
//! and waits (up to the dial timeout) for the peer's, which must come on the peer's first
//! stream (a first stream of another class counts as no credential). A connection is
//! handed to the caller only once the peer's credential checked out
//! ([`Credential::check`]: authority, peer = the key proven in the handshake, network id,
//! expiry, signature); otherwise it is closed with [`CODE_NOT_ADMITTED`] and the reason,
//! and the caller gets [`TransportError::NotAdmitted`]. Frames the peer sent meanwhile are
//! never handled.
//!
//! # Timeouts
//! See [`TransportOptions`]: dial/handshake timeout 5 s, keep-alive 5 s, idle timeout
//! 30 s. The failure detector above does fast detection; the idle timeout only reclaims
//! connections to peers that vanished without a word.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use quinn::{ConnectionError, RecvStream, SendStream, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

use crate::admission::{
    unix_now, Credential, CredentialError, PrivateNetwork, MAX_CREDENTIAL_BYTES,
};
use crate::identity::{Keypair, PeerId};
use crate::wire::{Limits, PROTOCOL_VERSION};

/// Application close code: a normal close ([`Connection::close`], or the last handle
/// dropped).
pub const CODE_NORMAL: u32 = 0;
/// Application close code: the peer announced a frame longer than the limit.
pub const CODE_FRAME_TOO_LARGE: u32 = 1;
/// Application close code: the peer broke the stream framing (unknown class byte, stream
/// finished in the middle of a frame).
pub const CODE_PROTOCOL_VIOLATION: u32 = 2;
/// Application close code: the dialer expected another [`PeerId`].
pub const CODE_WRONG_PEER: u32 = 3;
/// Application close code: private network, the peer's credential was missing or invalid
/// (the reason text says which check failed).
pub const CODE_NOT_ADMITTED: u32 = 4;
/// Application close code: the peer broke the protocol and is kept out for a while.
pub const CODE_BANNED: u32 = 5;
/// Application close code: the application's admission hook refused the peer.
pub const CODE_REFUSED: u32 = 6;

/// Class byte of the stream that carries a private network's credential (one per side,
/// right after the handshake; see [`Endpoint::bind_private`]).
const ADMISSION_TAG: u8 = 2;

/// Stream reset code used when a send was cancelled in the middle of a frame.
const RESET_CANCELLED: u32 = 1;

/// The server name given to TLS. It is never checked (identity is the key), and SNI is
/// not sent.
const SERVER_NAME: &str = "starling";

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Unidirectional streams a peer may have open at once: one per class, plus slack for
/// streams re-opened after a cancelled send.
const MAX_UNI_STREAMS: u32 = 8;
/// Smallest flow-control window of one stream, whatever the frame limit.
const MIN_STREAM_WINDOW: u64 = 256 * 1024;

/// What one connection may make a node hold, from the largest frame `max_frame`:
/// `(stream window, connection receive window, send window)` in bytes.
///
/// quinn's defaults are sized for bulk transfer over one connection: 1.25 MB per stream,
/// no limit per connection (so 8 streams × 1.25 MB received and not yet read), 10 MB of
/// data written and not yet acknowledged, and 1.25 MB of datagrams. A node with hundreds
/// of connections, some to peers that stop reading or acknowledging, could be made to
/// hold gigabytes. Here a stream's window is four frames (at least 256 KiB), and all of a
/// connection's streams together get two streams' worth each way, about 0.5 MB each way
/// with the default limits: still several round trips of the largest frame in flight,
/// and about 5 MB/s per connection over a 100 ms path. Datagrams are not accepted at all:
/// Starling sends none, and unread ones would be kept.
fn flow_windows(max_frame: usize) -> (u64, u64, u64) {
    let stream = (max_frame as u64).saturating_mul(4).max(MIN_STREAM_WINDOW);
    let connection = stream.saturating_mul(2);
    (stream, connection, connection)
}

/// The two stream classes of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamClass {
    /// Membership and failure detection: small, latency sensitive, always served first.
    Control,
    /// Broadcast payloads and everything else.
    Data,
}

impl StreamClass {
    fn index(self) -> usize {
        match self {
            StreamClass::Control => 0,
            StreamClass::Data => 1,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(StreamClass::Control),
            1 => Some(StreamClass::Data),
            _ => None,
        }
    }

    fn priority(self) -> i32 {
        match self {
            StreamClass::Control => 1,
            StreamClass::Data => 0,
        }
    }
}

impl fmt::Display for StreamClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamClass::Control => "control",
            StreamClass::Data => "data",
        })
    }
}

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The UDP socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The TLS or QUIC configuration could not be built, or no tokio runtime is running.
    #[error("transport configuration: {0}")]
    Config(String),
    /// The dial was refused before any packet was sent (e.g. an IPv6 address from an
    /// IPv4-only endpoint, or the endpoint is closed).
    #[error("cannot dial {addr}: {reason}")]
    Connect {
        /// The address dialed.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The handshake did not finish within the dial timeout.
    #[error("handshake with {addr} timed out after {after:?}")]
    Timeout {
        /// The remote address.
        addr: SocketAddr,
        /// The timeout that expired.
        after: Duration,
    },
    /// The peer belongs to another Starling network or protocol version (ALPN mismatch).
    #[error("{addr} is not on this Starling network (network id or protocol version differ)")]
    NetworkMismatch {
        /// The remote address.
        addr: SocketAddr,
    },
    /// The TLS handshake failed for another reason (bad certificate, bad signature, …).
    #[error("handshake with {addr} failed: {reason}")]
    Handshake {
        /// The remote address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The peer proved a different key than the one the dialer expected: impersonation
    /// (or a stale address) refused; the connection is closed with [`CODE_WRONG_PEER`].
    #[error("expected peer {expected} but {actual} answered")]
    WrongPeer {
        /// The identity the dialer asked for.
        expected: PeerId,
        /// The identity the remote side proved.
        actual: PeerId,
    },
    /// A frame longer than the limit: refused before allocation. When the peer sent it,
    /// the connection is closed with [`CODE_FRAME_TOO_LARGE`].
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced (or attempted) length.
        len: u64,
        /// The limit ([`Limits::max_frame_bytes`]).
        max: usize,
    },
    /// The peer broke the framing; the connection is closed with
    /// [`CODE_PROTOCOL_VIOLATION`].
    #[error("protocol violation by peer: {0}")]
    Protocol(String),
    /// The peer stopped reading one of our streams.
    #[error("peer stopped our {0} stream")]
    StreamStopped(StreamClass),
    /// The peer closed the connection.
    #[error("closed by peer (code {code}): {reason}")]
    ClosedByPeer {
        /// The application close code (see the `CODE_*` constants).
        code: u64,
        /// The peer's reason text (lossy UTF-8).
        reason: String,
    },
    /// This side closed the connection (or the endpoint).
    #[error("connection closed locally")]
    ClosedLocally,
    /// Nothing was heard from the peer for the idle timeout.
    #[error("connection idle timeout: peer unreachable")]
    IdleTimeout,
    /// The connection broke for another reason (reset, transport error).
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The endpoint is closed: no more connections to accept.
    #[error("endpoint closed")]
    EndpointClosed,
    /// Private network: the peer's credential was missing or invalid; the connection was
    /// closed with [`CODE_NOT_ADMITTED`].
    #[error("peer {peer} not admitted: {error}")]
    NotAdmitted {
        /// The peer (its key was proven in the handshake).
        peer: PeerId,
        /// What was wrong with its credential.
        error: CredentialError,
    },
}

/// Timeouts of an [`Endpoint`]; [`Default`] gives the documented values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportOptions {
    /// Longest time for a QUIC + TLS handshake, dialing or accepting (default 5 s: a few
    /// round trips even on a bad WAN link, short enough for bootstrap retries).
    pub dial_timeout: Duration,
    /// Interval of QUIC keep-alive pings when a connection is otherwise silent (default
    /// 5 s: well inside the idle timeout and common NAT binding lifetimes of ≥ 30 s).
    pub keep_alive: Duration,
    /// A connection with nothing heard for this long is dropped (default 30 s; must be
    /// several keep-alive intervals). Failure detection proper is SWIM's job.
    pub idle_timeout: Duration,
    /// Fault injection (loss, latency, partitions) for tests and benchmarks; `None` (the
    /// default) binds quinn's own socket and costs nothing. See [`super::fault`].
    pub faults: Option<super::fault::FaultInjector>,
    /// Inbound connections held before [`Endpoint::accept`] takes them: handshakes in
    /// progress plus finished ones waiting (default 128). Beyond it a new one is refused
    /// at once, before any TLS work, and counted ([`Endpoint::handshakes_refused`]); from
    /// half of it on, a peer must first prove its address with a QUIC retry, so a flood
    /// from forged source addresses holds at most half the places.
    pub max_inbound_pending: usize,
    /// Of those places, how many peers from one source may hold once their address is
    /// proven (by a retry; default 16): an IPv4 address or an IPv6 /64. A flood from one
    /// host then holds at most half the places (unproven, before retries start) plus this
    /// many. Only proven addresses count, so nobody can use up another host's share by
    /// forging its address. Many honest peers behind one NAT share the share, but each
    /// holds its place only for its handshake.
    pub max_inbound_pending_per_source: usize,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            dial_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            faults: None,
            max_inbound_pending: 128,
            max_inbound_pending_per_source: 16,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Certificates and verifiers

/// One DER element, as split by [`der_tlv`].
struct Tlv<'a> {
    tag: u8,
    /// The whole element, header included.
    whole: &'a [u8],
    contents: &'a [u8],
    /// What follows the element.
    rest: &'a [u8],
}

/// Splits off one DER element. Single-byte tags and definite lengths only (DER); `None`
/// on anything malformed.
fn der_tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tag: never used in the fields we walk
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    let (contents, after) = rest.split_at(len);
    Some(Tlv {
        tag,
        whole: &input[..header + len],
        contents,
        rest: after,
    })
}

/// The SubjectPublicKeyInfo element of an X.509 certificate (RFC 5280 §4.1).
fn cert_spki(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    let outer = der_tlv(cert)?;
    if outer.tag != SEQUENCE || !outer.rest.is_empty() {
        return None;
    }
    let tbs = der_tlv(outer.contents)?;
    if tbs.tag != SEQUENCE {
        return None;
    }
    let mut fields = tbs.contents;
    // version [0] EXPLICIT, optional
    if fields.first() == Some(&0xa0) {
        fields = der_tlv(fields)?.rest;
    }
    // serialNumber INTEGER, then signature, issuer, validity, subject: SEQUENCEs.
    for expected in [0x02, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE] {
        let field = der_tlv(fields)?;
        if field.tag != expected {
            return None;
        }
        fields = field.rest;
    }
    let spki = der_tlv(fields)?;
    (spki.tag == SEQUENCE).then_some(spki.whole)
}

/// The Ed25519 key of a SubjectPublicKeyInfo, if it is one that signatures are checked
/// against (canonical, not a small-order key that anyone could "prove" possession of).
fn ed25519_key(spki: &[u8]) -> Option<[u8; 32]> {
    let key: [u8; 32] = spki.strip_prefix(&ED25519_SPKI_PREFIX)?.try_into().ok()?;
    crate::ed25519::VerifyKey::decode(&key).map(|_| key)
}

/// The identity carried by a certificate: its Ed25519 key. This says nothing about
/// possession; that is what the handshake signature proves.
fn peer_id_from_cert(cert: &[u8]) -> Option<PeerId> {
    cert_spki(cert)
        .and_then(ed25519_key)
        .map(PeerId::from_bytes)
}

/// Checks certificates and handshake signatures for both sides (see the module docs).
#[derive(Debug)]
struct PeerVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn check_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<PeerId, rustls::Error> {
        if !intermediates.is_empty() {
            // Exactly one self-signed certificate, never a chain.
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        peer_id_from_cert(end_entity).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))
    }

    fn check_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ));
        }
        let spki = cert_spki(cert)
            .filter(|spki| ed25519_key(spki).is_some())
            .ok_or(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            ))?;
        // Verify against exactly the key we take as the identity (not a re-parse of the
        // certificate by someone else), so the two can never disagree.
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(spki),
            dss,
            &self.algorithms,
        )
    }

    fn tls12_refused() -> rustls::Error {
        rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic)
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check_cert(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(Self::tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check_cert(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(Self::tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The ALPN protocol id for a network: nodes only talk within one network and version.
fn alpn(network_id: &str) -> Vec<u8> {
    format!("starling/{PROTOCOL_VERSION}/{network_id}").into_bytes()
}

/// A self-signed certificate for `key` and the matching PKCS#8 private key.
fn self_signed(
    key: &Keypair,
) -> Result<(CertificateDer<'static>, PrivatePkcs8KeyDer<'static>), TransportError> {
    let config = |e: rcgen::Error| TransportError::Config(format!("certificate: {e}"));
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(&key.seed());
    let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8);
    let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
        .map_err(config)?;
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()]).map_err(config)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, key.peer_id().to_string());
    let cert = params.self_signed(&signer).map_err(config)?;
    Ok((cert.der().clone(), pkcs8))
}

/// Client and server QUIC configs for this identity and network.
fn quic_configs(
    key: &Keypair,
    network_id: &str,
    options: &TransportOptions,
    max_frame: usize,
) -> Result<(quinn::ClientConfig, quinn::ServerConfig), TransportError> {
    let config = |what: &str, e: &dyn fmt::Display| TransportError::Config(format!("{what}: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PeerVerifier {
        algorithms: provider.signature_verification_algorithms,
    });
    let (cert, pkcs8) = self_signed(key)?;
    let tls13 = &[&rustls::version::TLS13];
    let alpn = alpn(network_id);

    let mut client = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(tls13)
        .map_err(|e| config("TLS client", &e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_auth_cert(vec![cert.clone()], PrivateKeyDer::Pkcs8(pkcs8.clone_key()))
        .map_err(|e| config("TLS client key", &e))?;
    client.alpn_protocols = vec![alpn.clone()];
    client.enable_sni = false;
    client.resumption = rustls::client::Resumption::disabled();

    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(tls13)
        .map_err(|e| config("TLS server", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], PrivateKeyDer::Pkcs8(pkcs8))
        .map_err(|e| config("TLS server key", &e))?;
    server.alpn_protocols = vec![alpn];
    server.send_tls13_tickets = 0;
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});

    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(options.idle_timeout)
        .map_err(|e| config("idle timeout", &e))?;
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(options.keep_alive))
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS));
    let (stream_window, receive_window, send_window) = flow_windows(max_frame);
    let varint = |n: u64| VarInt::from_u64(n).map_err(|e| config("flow-control window", &e));
    transport
        .stream_receive_window(varint(stream_window)?)
        .receive_window(varint(receive_window)?)
        .send_window(send_window)
        .datagram_receive_buffer_size(None);
    let transport = Arc::new(transport);

    let client = quinn::crypto::rustls::QuicClientConfig::try_from(client)
        .map_err(|e| config("QUIC client", &e))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(Arc::clone(&transport));
    let server = quinn::crypto::rustls::QuicServerConfig::try_from(server)
        .map_err(|e| config("QUIC server", &e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(transport);
    Ok((client, server))
}

// ---------------------------------------------------------------------------------------
// Error mapping

fn close_reason_text(reason: &[u8]) -> String {
    String::from_utf8_lossy(&reason[..reason.len().min(256)]).into_owned()
}

/// Maps the end of an established connection.
fn from_connection_error(e: ConnectionError) -> TransportError {
    match e {
        ConnectionError::ApplicationClosed(close) => TransportError::ClosedByPeer {
            code: close.error_code.into_inner(),
            reason: close_reason_text(&close.reason),
        },
        ConnectionError::LocallyClosed => TransportError::ClosedLocally,
        ConnectionError::TimedOut => TransportError::IdleTimeout,
        other => TransportError::ConnectionLost(other.to_string()),
    }
}

/// Maps a failed handshake: an ALPN refusal (TLS alert 120, `no_application_protocol`)
/// means another network.
fn handshake_error(addr: SocketAddr, e: ConnectionError) -> TransportError {
    let no_alpn = quinn::TransportErrorCode::crypto(120);
    match e {
        ConnectionError::ConnectionClosed(close) if close.error_code == no_alpn => {
            TransportError::NetworkMismatch { addr }
        }
        ConnectionError::TransportError(err) if err.code == no_alpn => {
            TransportError::NetworkMismatch { addr }
        }
        ConnectionError::ConnectionClosed(_) | ConnectionError::TransportError(_) => {
            TransportError::Handshake {
                addr,
                reason: e.to_string(),
            }
        }
        other => from_connection_error(other),
    }
}

/// A framing fault found while reading the peer's streams, reported by
/// [`Connection::recv`] and [`Connection::closed`] in place of the bare "closed locally".
#[derive(Clone, Debug)]
enum Fault {
    FrameTooLarge { len: u64, max: usize },
    Protocol(String),
}

impl From<Fault> for TransportError {
    fn from(f: Fault) -> Self {
        match f {
            Fault::FrameTooLarge { len, max } => TransportError::FrameTooLarge { len, max },
            Fault::Protocol(reason) => TransportError::Protocol(reason),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Endpoint

/// A QUIC endpoint: one UDP socket that dials and accepts [`Connection`]s.
///
/// Must be created and used inside a tokio runtime. Dropping it stops accepting; existing
/// connections live on until closed or dropped. [`Endpoint::close`] closes everything.
pub struct Endpoint {
    quic: quinn::Endpoint,
    peer_id: PeerId,
    max_frame: usize,
    options: TransportOptions,
    private: Option<Arc<PrivateCtx>>,
    incoming: Mutex<mpsc::Receiver<Inbound>>,
    accept_task: JoinHandle<()>,
    gate: Arc<InboundGate>,
}

/// A finished inbound handshake, holding its place until [`Endpoint::accept`] takes it.
type Inbound = (Result<Connection, TransportError>, Place);

/// Bounds the inbound connections an endpoint holds (see
/// [`TransportOptions::max_inbound_pending`] and `max_inbound_pending_per_source`).
struct InboundGate {
    places: Arc<tokio::sync::Semaphore>,
    max: usize,
    max_per_source: usize,
    /// Places held by peers with a proven address, by source.
    per_source: StdMutex<HashMap<IpAddr, usize>>,
    refused: std::sync::atomic::AtomicU64,
    retried: std::sync::atomic::AtomicU64,
}

/// One held place of an [`InboundGate`]; dropping it frees the place.
struct Place {
    _permit: tokio::sync::OwnedSemaphorePermit,
    /// The source it counts against (peers with a proven address only).
    source: Option<IpAddr>,
    gate: Arc<InboundGate>,
}

impl InboundGate {
    /// `max` places in all, at most `max_per_source` of them per proven source (each at
    /// least 1).
    fn new(max: usize, max_per_source: usize) -> Arc<InboundGate> {
        Arc::new(InboundGate {
            places: Arc::new(tokio::sync::Semaphore::new(max.max(1))),
            max: max.max(1),
            max_per_source: max_per_source.max(1),
            per_source: Default::default(),
            refused: Default::default(),
            retried: Default::default(),
        })
    }

    /// A place for a peer from `source` (`None`: address not proven), or why not.
    fn take(self: &Arc<Self>, source: Option<IpAddr>) -> Result<Place, &'static str> {
        let mut held = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = source {
            if held.get(&s).is_some_and(|&n| n >= self.max_per_source) {
                return Err("too many pending from one source");
            }
        }
        let permit = Arc::clone(&self.places)
            .try_acquire_owned()
            .map_err(|_| "too many pending")?;
        if let Some(s) = source {
            *held.entry(s).or_default() += 1;
        }
        Ok(Place {
            _permit: permit,
            source,
            gate: Arc::clone(self),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(s) = self.source {
            let mut held = self
                .gate
                .per_source
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = held.get_mut(&s) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&s);
                }
            }
        }
    }
}

/// The source a peer's handshakes count against: its IPv4 address, or its IPv6 /64 (a
/// host's usual allocation, so it cannot dodge the limit by changing addresses).
fn source_of(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("peer_id", &self.peer_id)
            .field("local_addr", &self.quic.local_addr().ok())
            .finish()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl Endpoint {
    /// Binds a UDP socket at `addr` (IPv4 or IPv6; port 0 picks a free port) with the
    /// default [`TransportOptions`]. Frames are limited to `limits.max_frame_bytes()`.
    pub fn bind(
        addr: SocketAddr,
        key: &Keypair,
        network_id: &str,
        limits: Limits,
    ) -> Result<Endpoint, TransportError> {
        Self::bind_with(addr, key, network_id, limits, TransportOptions::default())
    }

    /// [`Endpoint::bind`] with explicit timeouts.
    pub fn bind_with(
        addr: SocketAddr,
        key: &Keypair,
        network_id: &str,
        limits: Limits,
        options: TransportOptions,
    ) -> Result<Endpoint, TransportError> {
        Self::bind_private(addr, key, network_id, limits, options, None)
    }

    /// [`Endpoint::bind_with`] for a private network (`Some`): every connection, dialed or
    /// accepted, is handed out only after the peer showed a valid credential (see the
    /// module docs). `None`: an open network, same as [`Endpoint::bind_with`].
    pub fn bind_private(
        addr: SocketAddr,
        key: &Keypair,
        network_id: &str,
        limits: Limits,
        options: TransportOptions,
        private: Option<PrivateNetwork>,
    ) -> Result<Endpoint, TransportError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TransportError::Config(
                "an endpoint must be created inside a tokio runtime".into(),
            ));
        }
        let max_frame = limits.max_frame_bytes();
        let (client, server) = quic_configs(key, network_id, &options, max_frame)?;
        let mut quic = match &options.faults {
            None => lean_endpoint(server, addr),
            Some(faults) => super::fault::server_endpoint(server, addr, faults),
        }
        .map_err(|source| TransportError::Bind { addr, source })?;
        quic.set_default_client_config(client);
        let private = private.map(|net| {
            Arc::new(PrivateCtx {
                net,
                network_id: network_id.to_owned(),
            })
        });
        let gate = InboundGate::new(
            options.max_inbound_pending,
            options.max_inbound_pending_per_source,
        );
        // Each queued connection holds a place, so the queue never fills.
        let (tx, rx) = mpsc::channel(gate.max);
        let accept_task = tokio::spawn(accept_loop(
            quic.clone(),
            tx,
            max_frame,
            options.dial_timeout,
            private.clone(),
            Arc::clone(&gate),
        ));
        let endpoint = Endpoint {
            quic,
            peer_id: key.peer_id(),
            max_frame,
            options,
            private,
            incoming: Mutex::new(rx),
            accept_task,
            gate,
        };
        tracing::debug!(peer = %endpoint.peer_id.short(), addr = ?endpoint.local_addr().ok(), "endpoint bound");
        Ok(endpoint)
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.quic
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })
    }

    /// This node's identity.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Dials `addr`. With `expected`, a peer that proves another key is refused with
    /// [`TransportError::WrongPeer`] (and the connection closed with [`CODE_WRONG_PEER`]).
    /// Fails with [`TransportError::Timeout`] after the dial timeout.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<Connection, TransportError> {
        let connecting =
            self.quic
                .connect(addr, SERVER_NAME)
                .map_err(|e| TransportError::Connect {
                    addr,
                    reason: e.to_string(),
                })?;
        let after = self.options.dial_timeout;
        let conn = tokio::time::timeout(after, connecting)
            .await
            .map_err(|_| TransportError::Timeout { addr, after })?
            .map_err(|e| handshake_error(addr, e))?;
        let conn = Connection::establish(conn, self.max_frame)?;
        if let Some(expected) = expected {
            let actual = conn.peer_id();
            if actual != expected {
                conn.shared
                    .conn
                    .close(VarInt::from_u32(CODE_WRONG_PEER), b"wrong peer");
                tracing::warn!(%addr, expected = %expected.short(), actual = %actual.short(), "dialed peer proved another identity");
                return Err(TransportError::WrongPeer { expected, actual });
            }
        }
        if let Some(ctx) = &self.private {
            conn.admit(ctx, after).await?;
        }
        Ok(conn)
    }

    /// The next inbound connection, handshake done. `Some(Err(..))` reports a failed
    /// inbound handshake (wrong network, bad certificate, timeout): log it and call again.
    /// `None` once the endpoint is closed. Handshakes run concurrently, so one slow peer
    /// never holds up the others.
    pub async fn accept(&self) -> Option<Result<Connection, TransportError>> {
        // Taken: its place is free for the next peer.
        let (result, _place) = self.incoming.lock().await.recv().await?;
        Some(result)
    }

    /// Inbound connections refused because [`TransportOptions::max_inbound_pending`] were
    /// already held, or `max_inbound_pending_per_source` by peers from the same source.
    pub fn handshakes_refused(&self) -> u64 {
        self.gate.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Inbound connections asked to prove their address first (a QUIC retry), because
    /// half the places or more were held.
    pub fn handshakes_retried(&self) -> u64 {
        self.gate.retried.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until every connection has finished closing (its close was sent and
    /// acknowledged or timed out), so a close is not cut short by dropping the endpoint.
    pub async fn wait_idle(&self) {
        self.quic.wait_idle().await;
    }

    /// Closes every connection (code [`CODE_NORMAL`]) and stops accepting.
    pub fn close(&self) {
        self.accept_task.abort();
        self.quic
            .close(VarInt::from_u32(CODE_NORMAL), b"endpoint closed");
    }
}

/// Binds the endpoint's UDP socket behind [`LeanSocket`] (what `quinn::Endpoint::server`
/// does, with the wrapper in between).
fn lean_endpoint(
    server: quinn::ServerConfig,
    addr: SocketAddr,
) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
    let socket = LeanSocket::wrap(socket, runtime.as_ref())?;
    quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        runtime,
    )
}

/// quinn's UDP socket, one datagram per system-call slot: no receive offload (GRO) and no
/// send offload (GSO).
///
/// Why: quinn sizes its buffers by the offload batch, and keeps them. The endpoint's
/// receive buffer is max UDP payload (1,472) × GRO segments (64) × `recvmmsg` batch (32)
/// = 3 MiB per node, of which bursts leave about 0.3 MiB resident; each connection keeps a
/// send buffer of GSO segments (10) × MTU ≈ 14 KiB. With one GRO segment the receive buffer
/// is 47 KiB, and with one GSO segment the send buffer is one MTU. A node has a few dozen
/// mostly idle connections, and the payload limit is 64 KiB, so offload buys little here:
/// `recvmmsg` still takes up to 32 datagrams per call.
///
/// Receive offload is only switched off where we know how (Linux); elsewhere (e.g.
/// Windows' URO) the socket keeps what quinn-udp set up and reports its real batch size,
/// since claiming one segment while the OS coalesces would truncate datagrams.
#[derive(Debug)]
struct LeanSocket {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    recv_segments: usize,
}

impl LeanSocket {
    fn wrap(
        socket: std::net::UdpSocket,
        runtime: &dyn quinn::Runtime,
    ) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        #[cfg(target_os = "linux")]
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        // quinn-udp switches GRO on when it takes the socket, so it is switched off after.
        let inner = runtime.wrap_udp_socket(socket)?;
        #[cfg(target_os = "linux")]
        let recv_segments = match disable_gro(fd) {
            Ok(()) => 1,
            Err(e) => {
                tracing::debug!(error = %e, "cannot switch UDP GRO off; keeping it");
                inner.max_receive_segments()
            }
        };
        #[cfg(not(target_os = "linux"))]
        let recv_segments = inner.max_receive_segments();
        Ok(Arc::new(LeanSocket {
            inner,
            recv_segments,
        }))
    }
}

/// Switches UDP generic receive offload off, so the kernel never hands over a batch of
/// datagrams bigger than one receive slot.
#[cfg(target_os = "linux")]
fn disable_gro(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    /// `UDP_GRO` from linux/udp.h (not in the libc crate).
    const UDP_GRO: libc::c_int = 104;
    let off: libc::c_int = 0;
    // SAFETY: `fd` is the open socket owned by quinn's wrapper (alive: we hold it), and the
    // option value is a c_int of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            UDP_GRO,
            (&off as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    // ENOPROTOOPT: a kernel without UDP GRO (before 5.0), which never coalesces anyway.
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOPROTOOPT) {
            return Err(e);
        }
    }
    Ok(())
}

impl quinn::AsyncUdpSocket for LeanSocket {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        Arc::clone(&self.inner).create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.recv_segments
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// A private network's credential check, shared by the endpoint's tasks.
#[derive(Debug)]
struct PrivateCtx {
    net: PrivateNetwork,
    network_id: String,
}

async fn accept_loop(
    quic: quinn::Endpoint,
    tx: mpsc::Sender<Inbound>,
    max_frame: usize,
    after: Duration,
    private: Option<Arc<PrivateCtx>>,
    gate: Arc<InboundGate>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Some(mut incoming) = quic.accept().await {
        let busy = gate.places.available_permits() * 2 <= gate.max;
        if busy && !incoming.remote_address_validated() {
            match incoming.retry() {
                Ok(()) => {
                    gate.retried.fetch_add(1, Relaxed);
                    continue;
                }
                // Not possible for this peer (e.g. it already answered a retry): go on.
                Err(e) => incoming = e.into_incoming(),
            }
        }
        let addr = incoming.remote_address();
        let source = incoming.remote_address_validated().then(|| source_of(addr));
        let place = match gate.take(source) {
            Ok(place) => place,
            Err(why) => {
                gate.refused.fetch_add(1, Relaxed);
                tracing::debug!(%addr, "inbound handshake refused: {why}");
                incoming.refuse();
                continue;
            }
        };
        let tx = tx.clone();
        let private = private.clone();
        tokio::spawn(async move {
            let mut result = match tokio::time::timeout(after, incoming).await {
                Err(_) => Err(TransportError::Timeout { addr, after }),
                Ok(Err(e)) => Err(handshake_error(addr, e)),
                Ok(Ok(conn)) => Connection::establish(conn, max_frame),
            };
            if let (Ok(conn), Some(ctx)) = (&result, &private) {
                if let Err(e) = conn.admit(ctx, after).await {
                    result = Err(e);
                }
            }
            if let Err(e) = &result {
                tracing::debug!(%addr, error = %e, "inbound handshake failed");
            }
            // A closed receiver means the endpoint is gone: dropping the result closes it.
            let _ = tx.send((result, place)).await;
        });
    }
}

// ---------------------------------------------------------------------------------------
// Connection

struct Shared {
    conn: quinn::Connection,
    peer: PeerId,
    max_frame: usize,
    senders: [Mutex<Option<SendStream>>; 2],
    /// The peer's streams, read by whoever calls [`Connection::recv`].
    incoming: Mutex<Incoming>,
    /// The first framing fault the reading found (see [`fail`]).
    fault: StdMutex<Option<Fault>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The peer's stream handles hold quinn handles of their own, so close explicitly.
        self.conn
            .close(VarInt::from_u32(CODE_NORMAL), b"connection dropped");
    }
}

/// An authenticated connection to one peer. Cheap to clone (all clones share it); closed
/// when [`Connection::close`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.shared.peer)
            .field("remote_addr", &self.remote_addr())
            .finish()
    }
}

/// Resets a send stream if a send is cancelled half-way, so the receiver drops the partial
/// frame instead of misreading the stream.
struct ResetOnDrop(Option<SendStream>);

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if let Some(stream) = self.0.as_mut() {
            let _ = stream.reset(VarInt::from_u32(RESET_CANCELLED));
        }
    }
}

impl Connection {
    /// Wraps a finished handshake: reads the proven identity. Nothing is read from the
    /// peer until [`Connection::admit`] or [`Connection::recv`] asks.
    fn establish(conn: quinn::Connection, max_frame: usize) -> Result<Connection, TransportError> {
        let peer = conn
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|certs| certs.first().and_then(|c| peer_id_from_cert(c)));
        let Some(peer) = peer else {
            conn.close(VarInt::from_u32(CODE_PROTOCOL_VIOLATION), b"no identity");
            return Err(TransportError::Handshake {
                addr: conn.remote_address(),
                reason: "peer presented no usable identity".into(),
            });
        };
        tracing::debug!(peer = %peer.short(), addr = %conn.remote_address(), "connection established");
        Ok(Connection {
            shared: Arc::new(Shared {
                conn,
                peer,
                max_frame,
                senders: [Mutex::new(None), Mutex::new(None)],
                incoming: Mutex::new(Incoming::default()),
                fault: StdMutex::new(None),
            }),
        })
    }

    /// Private networks: shows our credential and checks the peer's (waiting at most
    /// `patience` for it). On failure the connection is closed with [`CODE_NOT_ADMITTED`].
    async fn admit(&self, ctx: &PrivateCtx, patience: Duration) -> Result<(), TransportError> {
        let ours = ctx.net.credential.to_bytes();
        let mut buf = Vec::with_capacity(3 + ours.len());
        buf.push(ADMISSION_TAG);
        // A credential is at most MAX_CREDENTIAL_BYTES (< u16::MAX) long.
        buf.extend_from_slice(&(ours.len() as u16).to_be_bytes());
        buf.extend_from_slice(&ours);
        let mut stream = self
            .shared
            .conn
            .open_uni()
            .await
            .map_err(|e| self.end_error(e))?;
        stream.write_all(&buf).await.map_err(|e| match e {
            quinn::WriteError::ConnectionLost(e) => self.end_error(e),
            other => TransportError::ConnectionLost(other.to_string()),
        })?;
        let _ = stream.finish();
        let theirs = tokio::time::timeout(patience, self.read_credential())
            .await
            .map_err(|_| ());
        let peer = self.peer_id();
        let verdict = match theirs {
            Err(()) | Ok(Ok(None)) => Err(CredentialError::Missing),
            // The connection ended while we waited (e.g. the peer refused *us*).
            Ok(Err(())) => return Err(self.close_error()),
            Ok(Ok(Some(bytes))) => Credential::from_bytes(&bytes)
                .and_then(|c| c.check(&ctx.net.authority, &peer, &ctx.network_id, unix_now())),
        };
        match verdict {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::warn!(peer = %peer.short(), addr = %self.remote_addr(), %error, "peer not admitted");
                self.close_with(CODE_NOT_ADMITTED, &error.to_string());
                Err(TransportError::NotAdmitted { peer, error })
            }
        }
    }

    /// Reads the peer's credential: its first stream must be a credential stream (class
    /// byte 2, a `u16` length of at most [`MAX_CREDENTIAL_BYTES`], the credential). The
    /// peer opens it before anything else, and streams are accepted in the order they were
    /// opened. `Ok(None)`: the first stream is something else or was cut short; a length
    /// over the bound gives empty bytes (reported as malformed); `Err`: the connection
    /// ended.
    async fn read_credential(&self) -> Result<Option<Vec<u8>>, ()> {
        let mut stream = self.shared.conn.accept_uni().await.map_err(|_| ())?;
        let mut head = [0u8; 3];
        if stream.read_exact(&mut head).await.is_err() || head[0] != ADMISSION_TAG {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([head[1], head[2]]));
        if len > MAX_CREDENTIAL_BYTES {
            return Ok(Some(Vec::new()));
        }
        let mut buf = vec![0u8; len];
        Ok(stream.read_exact(&mut buf).await.ok().map(|()| buf))
    }

    /// The peer's identity, proven in the handshake.
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer
    }

    /// The peer's current address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.shared.conn.remote_address()
    }

    /// Current round-trip time estimate.
    pub fn rtt(&self) -> Duration {
        self.shared.conn.rtt()
    }

    /// Sends one frame on `class`'s stream; frames of one class arrive in order. Waits
    /// while QUIC flow control pushes back. A frame over the limit is refused here with
    /// [`TransportError::FrameTooLarge`]. Cancelling a send never corrupts the stream (it
    /// is reset and the next send opens a fresh one).
    pub async fn send(&self, class: StreamClass, frame: &[u8]) -> Result<(), TransportError> {
        self.send_many(class, &[frame]).await
    }

    /// Sends several frames on `class`'s stream in order, as one write: one lock and one
    /// wake-up of the connection for the lot, instead of two writes per frame. If any
    /// frame is over the limit nothing is sent ([`TransportError::FrameTooLarge`]).
    /// Cancellation is as safe as for [`Connection::send`].
    pub async fn send_many<F: AsRef<[u8]>>(
        &self,
        class: StreamClass,
        frames: &[F],
    ) -> Result<(), TransportError> {
        let max = self.shared.max_frame;
        let mut total = 1;
        for frame in frames {
            let len = frame.as_ref().len();
            if len > max || u32::try_from(len).is_err() {
                return Err(TransportError::FrameTooLarge {
                    len: len as u64,
                    max,
                });
            }
            total += 4 + len;
        }
        let mut slot = self.shared.senders[class.index()].lock().await;
        let mut buf = Vec::with_capacity(total);
        let mut guard = match slot.take() {
            Some(stream) => ResetOnDrop(Some(stream)),
            None => {
                let stream = self
                    .shared
                    .conn
                    .open_uni()
                    .await
                    .map_err(|e| self.end_error(e))?;
                let _ = stream.set_priority(class.priority());
                buf.push(class.index() as u8);
                ResetOnDrop(Some(stream))
            }
        };
        for frame in frames {
            let frame = frame.as_ref();
            // Checked above: every length fits in u32.
            buf.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            buf.extend_from_slice(frame);
        }
        if let Some(stream) = guard.0.as_mut() {
            stream.write_all(&buf).await.map_err(|e| match e {
                quinn::WriteError::ConnectionLost(e) => self.end_error(e),
                quinn::WriteError::Stopped(_) => TransportError::StreamStopped(class),
                other => TransportError::ConnectionLost(other.to_string()),
            })?;
        }
        *slot = guard.0.take();
        Ok(())
    }

    /// The next frame from the peer, control frames first. After the connection ends,
    /// frames already received are still delivered, then the reason is returned.
    ///
    /// The peer's streams are read right here, in the caller's task (no reader tasks and
    /// no queues of their own): while nobody calls, QUIC flow control pushes back on the
    /// peer. Cancel-safe: a frame read in part is kept for the next call.
    pub async fn recv(&self) -> Result<(StreamClass, Bytes), TransportError> {
        let mut incoming = self.shared.incoming.lock().await;
        let next = std::future::poll_fn(|cx| incoming.poll_next(cx, &self.shared)).await;
        next.ok_or_else(|| self.close_error())
    }

    /// Waits until the connection is closed or lost, and says why (at once if it already
    /// is). The driver reports PeerDisconnected when this returns.
    pub async fn closed(&self) -> TransportError {
        let e = self.shared.conn.closed().await;
        self.end_error(e)
    }

    /// Why the connection ended, if it has.
    pub fn close_reason(&self) -> Option<TransportError> {
        self.shared.conn.close_reason().map(|e| self.end_error(e))
    }

    /// Closes the connection with [`CODE_NORMAL`] and `reason` (truncated to 256 bytes).
    /// Frames still in flight may be lost.
    pub fn close(&self, reason: &str) {
        let reason = &reason.as_bytes()[..reason.len().min(256)];
        self.shared
            .conn
            .close(VarInt::from_u32(CODE_NORMAL), reason);
    }

    /// Closes the connection with an application `code` (one of the `CODE_*` constants)
    /// and `reason` (truncated to 256 bytes).
    pub fn close_with(&self, code: u32, reason: &str) {
        let reason = &reason.as_bytes()[..reason.len().min(256)];
        self.shared.conn.close(VarInt::from_u32(code), reason);
    }

    /// Finishes this side's streams and waits until the peer has received every frame
    /// sent so far (a flush before [`Connection::close`], which discards data in flight).
    /// Sends after this open fresh streams.
    pub async fn finish(&self) {
        for slot in &self.shared.senders {
            let stream = slot.lock().await.take();
            if let Some(mut stream) = stream {
                if stream.finish().is_ok() {
                    let _ = stream.stopped().await;
                }
            }
        }
    }

    fn fault(&self) -> Option<Fault> {
        self.shared.fault.lock().ok().and_then(|f| f.clone())
    }

    fn end_error(&self, e: ConnectionError) -> TransportError {
        match self.fault() {
            Some(fault) => fault.into(),
            None => from_connection_error(e),
        }
    }

    fn close_error(&self) -> TransportError {
        match (self.fault(), self.shared.conn.close_reason()) {
            (Some(fault), _) => fault.into(),
            (None, Some(e)) => from_connection_error(e),
            (None, None) => TransportError::ConnectionLost("receive side ended".into()),
        }
    }
}

/// Records the first framing fault and closes the connection with `code`.
fn fail(conn: &quinn::Connection, fault_slot: &StdMutex<Option<Fault>>, code: u32, fault: Fault) {
    tracing::warn!(addr = %conn.remote_address(), ?fault, "closing connection: peer broke the framing");
    if let Ok(mut slot) = fault_slot.lock() {
        slot.get_or_insert(fault);
    }
    let reason: &[u8] = match code {
        CODE_FRAME_TOO_LARGE => b"frame too large",
        _ => b"protocol violation",
    };
    conn.close(VarInt::from_u32(code), reason);
}

/// A pending `accept_uni`, kept across polls: a fresh one per poll could miss the
/// wake-up for a stream that arrives in between.
type AcceptUni = Pin<Box<dyn Future<Output = Result<RecvStream, ConnectionError>> + Send>>;

/// Where accepting the peer's next stream stands.
#[derive(Default)]
enum Accept {
    /// No accept in progress; the next poll starts one.
    #[default]
    Idle,
    /// Waiting for the peer's next stream.
    Waiting(AcceptUni),
    /// No stream will come any more (the connection ended).
    Ended,
}

/// The receive side of a connection: the peer's unidirectional streams, each read frame
/// by frame by [`Connection::recv`].
#[derive(Default)]
struct Incoming {
    accept: Accept,
    streams: Vec<FrameReader>,
}

impl Incoming {
    /// The next frame, control streams first; `None` once the connection has ended and
    /// every frame that arrived before has been read.
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Shared,
    ) -> Poll<Option<(StreamClass, Bytes)>> {
        loop {
            let accept = match &mut self.accept {
                Accept::Ended => break,
                Accept::Waiting(accept) => accept,
                Accept::Idle => {
                    let conn = shared.conn.clone();
                    self.accept = Accept::Waiting(Box::pin(async move { conn.accept_uni().await }));
                    continue;
                }
            };
            match accept.as_mut().poll(cx) {
                Poll::Ready(Ok(stream)) => {
                    self.accept = Accept::Idle;
                    self.streams.push(FrameReader::new(stream));
                }
                Poll::Ready(Err(_)) => self.accept = Accept::Ended,
                Poll::Pending => break,
            }
        }
        // Class bytes first, so a new control stream is known as one before any data
        // frame is taken.
        for pass in [None, Some(StreamClass::Control), Some(StreamClass::Data)] {
            let mut i = 0;
            while i < self.streams.len() {
                let stream = &mut self.streams[i];
                if stream.class != pass {
                    i += 1;
                    continue;
                }
                let read = match pass {
                    None => stream.poll_class(cx),
                    Some(class) => stream.poll_frame(cx, class, shared.max_frame),
                };
                match read {
                    Poll::Pending | Poll::Ready(Read::Next) => i += 1,
                    Poll::Ready(Read::Frame(class, frame)) => {
                        return Poll::Ready(Some((class, frame)))
                    }
                    Poll::Ready(Read::End) => {
                        self.streams.swap_remove(i);
                    }
                    Poll::Ready(Read::Fault(code, fault)) => {
                        fail(&shared.conn, &shared.fault, code, fault);
                        self.streams.swap_remove(i);
                    }
                }
            }
        }
        if matches!(self.accept, Accept::Ended) && self.streams.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

/// What reading a stream gave.
enum Read {
    Frame(StreamClass, Bytes),
    /// The class byte was read: the stream's frames come in its class's pass.
    Next,
    /// The stream ended between frames, was reset (a cancelled send) or the connection
    /// is gone; nothing more comes from it.
    End,
    /// The peer broke the framing: close the connection with this code.
    Fault(u32, Fault),
}

fn protocol(msg: &str) -> Read {
    Read::Fault(CODE_PROTOCOL_VIOLATION, Fault::Protocol(msg.into()))
}

/// One peer stream: a class byte, then length-prefixed frames until it ends. Keeps a
/// frame read in part between polls.
struct FrameReader {
    stream: RecvStream,
    /// None until the class byte has been read.
    class: Option<StreamClass>,
    /// The length prefix, and how much of it has been read.
    head: [u8; 4],
    head_read: usize,
    /// The frame being read (allocated once its length passed the limit) and how much of
    /// it has been read.
    body: Option<(Vec<u8>, usize)>,
}

impl FrameReader {
    fn new(stream: RecvStream) -> Self {
        FrameReader {
            stream,
            class: None,
            head: [0; 4],
            head_read: 0,
            body: None,
        }
    }

    /// Reads the class byte ([`Read::Next`] once it is known).
    fn poll_class(&mut self, cx: &mut Context<'_>) -> Poll<Read> {
        let mut tag = [0u8; 1];
        match ready!(self.stream.poll_read(cx, &mut tag)) {
            // Ended or reset before saying anything: nothing to deliver.
            Ok(0) | Err(_) => return Poll::Ready(Read::End),
            Ok(_) => {}
        }
        Poll::Ready(match StreamClass::from_tag(tag[0]) {
            Some(class) => {
                self.class = Some(class);
                Read::Next
            }
            // A credential on an open network (or shown twice): not for us.
            None if tag[0] == ADMISSION_TAG => Read::End,
            None => protocol(&format!("unknown stream class {}", tag[0])),
        })
    }

    /// Reads the next frame (the class byte has been read).
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
        class: StreamClass,
        max_frame: usize,
    ) -> Poll<Read> {
        loop {
            if let Some((buf, filled)) = &mut self.body {
                if *filled == buf.len() {
                    let frame = Bytes::from(std::mem::take(buf));
                    self.body = None;
                    self.head_read = 0;
                    return Poll::Ready(Read::Frame(class, frame));
                }
                match ready!(self.stream.poll_read(cx, &mut buf[*filled..])) {
                    Ok(0) => return Poll::Ready(protocol("stream finished inside a frame")),
                    Ok(n) => *filled += n,
                    Err(_) => return Poll::Ready(Read::End),
                }
                continue;
            }
            match ready!(self.stream.poll_read(cx, &mut self.head[self.head_read..])) {
                Ok(0) if self.head_read == 0 => return Poll::Ready(Read::End), // clean end
                Ok(0) => return Poll::Ready(protocol("stream finished inside a frame header")),
                Ok(n) => self.head_read += n,
                Err(_) => return Poll::Ready(Read::End),
            }
            if self.head_read < self.head.len() {
                continue;
            }
            let len = u32::from_be_bytes(self.head);
            // The limit is checked before anything is allocated for the frame.
            match usize::try_from(len).ok().filter(|&l| l <= max_frame) {
                Some(len) => self.body = Some((vec![0u8; len], 0)),
                None => {
                    let fault = Fault::FrameTooLarge {
                        len: u64::from(len),
                        max: max_frame,
                    };
                    return Poll::Ready(Read::Fault(CODE_FRAME_TOO_LARGE, fault));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Keypair {
        Keypair::from_seed([n; 32])
    }

    #[test]
    fn certificate_carries_the_identity_key() {
        let k = key(9);
        let (cert, _) = self_signed(&k).expect("certificate");
        assert_eq!(peer_id_from_cert(&cert), Some(k.peer_id()));
        let spki = cert_spki(&cert).expect("spki");
        assert_eq!(spki.len(), 44);
        assert!(spki.starts_with(&ED25519_SPKI_PREFIX));
    }

    #[test]
    fn der_walker_never_panics_on_garbage_or_truncation() {
        let (cert, _) = self_signed(&key(3)).expect("certificate");
        for cut in 0..cert.len() {
            assert_eq!(peer_id_from_cert(&cert[..cut]), None, "truncated at {cut}");
        }
        let mut trailing = cert.to_vec();
        trailing.push(0);
        assert_eq!(peer_id_from_cert(&trailing), None);
        // Flip every byte in turn: either rejected or still some key, never a panic.
        for i in 0..cert.len() {
            let mut bad = cert.to_vec();
            bad[i] ^= 0xff;
            let _ = peer_id_from_cert(&bad);
        }
        for junk in [
            &[][..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x80],
        ] {
            assert_eq!(peer_id_from_cert(junk), None);
        }
    }

    #[test]
    fn weak_and_foreign_keys_are_refused() {
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&[0u8; 32]); // not a valid point
        assert_eq!(ed25519_key(&spki), None);
        let mut identity = ED25519_SPKI_PREFIX.to_vec();
        let mut point = [0u8; 32];
        point[0] = 1; // the identity point: small order
        identity.extend_from_slice(&point);
        assert_eq!(ed25519_key(&identity), None);
        let mut other_alg = spki.clone();
        other_alg[8] = 0x71; // Ed448 OID
        assert_eq!(ed25519_key(&other_alg), None);
    }

    /// The endpoint's socket takes one datagram per receive slot and sends one per
    /// transmit, so quinn keeps small buffers (see [`LeanSocket`]); GRO must really be off
    /// on the socket, or the kernel would hand over batches bigger than a slot.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_lean_socket_has_offload_off() {
        use std::os::fd::AsRawFd;
        const UDP_GRO: libc::c_int = 104;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let fd = socket.as_raw_fd();
        let lean = LeanSocket::wrap(socket, &quinn::TokioRuntime).expect("wrap");
        assert_eq!(lean.max_receive_segments(), 1);
        assert_eq!(lean.max_transmit_segments(), 1);
        let mut gro: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `fd` is alive (owned by `lean`); value and length describe a c_int.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_UDP,
                UDP_GRO,
                (&mut gro as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        // A kernel without UDP GRO (ENOPROTOOPT) never coalesces: nothing to check.
        if rc == 0 {
            assert_eq!(gro, 0, "UDP GRO is still on");
        }
        drop(lean);
    }

    #[test]
    fn alpn_names_version_and_network() {
        assert_eq!(alpn("prod"), b"starling/2/prod".to_vec());
    }

    /// Two endpoints and a connection between them (dialer's side, acceptor's side),
    /// failing the test if that takes more than 10 s.
    async fn pair() -> (Endpoint, Endpoint, Connection, Connection) {
        tokio::time::timeout(Duration::from_secs(10), connected_pair())
            .await
            .expect("pair in time")
    }

    async fn connected_pair() -> (Endpoint, Endpoint, Connection, Connection) {
        let a = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            &key(1),
            "t",
            Limits::default(),
        )
        .expect("bind a");
        let b = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            &key(2),
            "t",
            Limits::default(),
        )
        .expect("bind b");
        let addr = b.local_addr().expect("addr");
        let (ca, cb) = tokio::join!(a.connect(addr, None), b.accept());
        let ca = ca.expect("connect");
        let cb = cb.expect("accept open").expect("accept");
        (a, b, ca, cb)
    }

    /// A raw peer announces a 4 GiB frame: refused on the length alone, connection closed
    /// with CODE_FRAME_TOO_LARGE.
    #[tokio::test]
    async fn oversized_length_prefix_is_refused_before_allocation() {
        let limit = Duration::from_secs(10);
        let (_a, _b, ca, cb) = pair().await;
        let mut raw = ca.shared.conn.open_uni().await.expect("open raw stream");
        raw.write_all(&[1]).await.expect("class byte");
        raw.write_all(&u32::MAX.to_be_bytes())
            .await
            .expect("length");
        let err = tokio::time::timeout(limit, cb.recv())
            .await
            .expect("receiver must give up in time")
            .expect_err("oversized frame must not be delivered");
        assert!(
            matches!(err, TransportError::FrameTooLarge { len, max } if len == u64::from(u32::MAX) && max == Limits::default().max_frame_bytes()),
            "{err:?}"
        );
        let seen = tokio::time::timeout(limit, ca.closed())
            .await
            .expect("sender must see the close in time");
        assert!(
            matches!(seen, TransportError::ClosedByPeer { code, .. } if code == u64::from(CODE_FRAME_TOO_LARGE)),
            "{seen:?}"
        );
    }

    /// Presents a victim's certificate but signs the handshake with its own key.
    #[derive(Debug)]
    struct Impostor(Arc<rustls::sign::CertifiedKey>);

    impl rustls::server::ResolvesServerCert for Impostor {
        fn resolve(
            &self,
            _hello: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(Arc::clone(&self.0))
        }
    }

    /// A server that shows someone else's certificate cannot prove the key: the dialer's
    /// handshake fails (it never even gets to compare identities).
    #[tokio::test]
    async fn a_stolen_certificate_without_the_key_is_refused() {
        let victim = key(5);
        let (victim_cert, _) = self_signed(&victim).expect("victim cert");
        let (_, own_pkcs8) = self_signed(&key(6)).expect("impostor key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let signer = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(own_pkcs8))
            .expect("signing key");
        let certified = rustls::sign::CertifiedKey::new(vec![victim_cert], signer);
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Impostor(Arc::new(certified))));
        tls.alpn_protocols = vec![alpn("t")];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic");
        let server = quinn::Endpoint::server(
            quinn::ServerConfig::with_crypto(Arc::new(quic)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .expect("impostor endpoint");
        let addr = server.local_addr().expect("addr");
        let serve = tokio::spawn(async move {
            if let Some(incoming) = server.accept().await {
                let _ = incoming.await;
            }
        });
        let dialer = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            &key(1),
            "t",
            Limits::default(),
        )
        .expect("bind");
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            dialer.connect(addr, Some(victim.peer_id())),
        )
        .await
        .expect("dial must end in time");
        match res {
            Err(TransportError::Handshake { reason, .. }) => {
                assert!(reason.to_lowercase().contains("signature"), "{reason}")
            }
            other => panic!("impostor must fail the handshake, got {other:?}"),
        }
        serve.abort();
    }

    #[tokio::test]
    async fn unknown_stream_class_is_a_protocol_violation() {
        let limit = Duration::from_secs(10);
        let (_a, _b, ca, cb) = pair().await;
        let mut raw = ca.shared.conn.open_uni().await.expect("open raw stream");
        raw.write_all(&[7, 0, 0, 0, 1, 42]).await.expect("write");
        let err = tokio::time::timeout(limit, cb.recv())
            .await
            .expect("in time")
            .expect_err("must fail");
        assert!(matches!(err, TransportError::Protocol(_)), "{err:?}");
    }

    /// The gate's share per source: a proven source is refused beyond its share while
    /// places are left, gets it back when one of its places is dropped, and unproven peers
    /// and IPv6 addresses of another /64 are not counted against it.
    #[test]
    fn a_source_holds_at_most_its_share_of_the_places() {
        let gate = InboundGate::new(4, 2);
        let host = source_of("[2001:db8:1:2:3:4:5:6]:9".parse().unwrap());
        let same_64 = source_of("[2001:db8:1:2:ffff::1]:9".parse().unwrap());
        let other_64 = source_of("[2001:db8:1:3::1]:9".parse().unwrap());
        assert_eq!(host, same_64);
        let first = gate.take(Some(host)).expect("first place");
        let _second = gate.take(Some(same_64)).expect("second place");
        assert!(gate.take(Some(host)).is_err(), "a third place for one /64");
        let _other = gate
            .take(Some(other_64))
            .expect("another /64 has its own share");
        drop(first);
        let _again = gate
            .take(Some(host))
            .expect("a dropped place frees the share");
        let _unproven = gate
            .take(None)
            .expect("an unproven peer takes the last place");
        assert!(gate.take(None).is_err(), "every place is held");
        assert_eq!(
            source_of("[::ffff:192.0.2.7]:1".parse().unwrap()),
            source_of("192.0.2.7:2".parse().unwrap()),
            "an IPv4-mapped address counts as the IPv4 address"
        );
    }

    /// Starling sends no datagrams, so it accepts none: a peer cannot park unread
    /// datagrams in a node's memory (quinn would keep up to 1.25 MB per connection).
    #[tokio::test]
    async fn a_peer_cannot_send_datagrams() {
        let (_a, _b, ca, cb) = pair().await;
        for c in [&ca, &cb] {
            let quic = &c.shared.conn;
            // None: the other side advertised no datagram size (so a compliant peer sends
            // none, and quinn closes the connection of one that does).
            assert_eq!(quic.max_datagram_size(), None, "the peer accepts datagrams");
            let sent = quic.send_datagram(Bytes::from_static(b"parked"));
            assert!(
                matches!(sent, Err(quinn::SendDatagramError::Disabled)),
                "{sent:?}"
            );
        }
    }

    /// A receiver that stops reading holds at most one stream window of a sender's data:
    /// the sender's writes block there (with quinn's defaults, 1.25 MB would pass).
    /// Once the receiver reads again, every frame that was accepted arrives.
    #[tokio::test]
    async fn a_peer_that_stops_reading_blocks_the_sender_within_one_window() {
        let limit = Duration::from_secs(20);
        let (_a, _b, ca, cb) = pair().await;
        let (window, _, _) = flow_windows(Limits::default().max_frame_bytes());
        let frame = vec![7u8; 64 * 1024];
        let most = (window as usize).div_ceil(frame.len());
        let mut accepted = 0usize;
        // A send still pending after this long is blocked by flow control (nothing reads).
        let blocked_after = Duration::from_millis(500);
        let started = std::time::Instant::now();
        loop {
            assert!(
                accepted <= most,
                "{accepted} frames of 64 KiB accepted with nobody reading; the window is {window} bytes"
            );
            assert!(started.elapsed() < limit, "the sender never blocked");
            match tokio::time::timeout(blocked_after, ca.send(StreamClass::Data, &frame)).await {
                Ok(sent) => {
                    sent.expect("send");
                    accepted += 1;
                }
                Err(_) => break,
            }
        }
        assert!(accepted > 0, "not one frame was accepted");
        for i in 0..accepted {
            let (class, got) = tokio::time::timeout(limit, cb.recv())
                .await
                .unwrap_or_else(|_| panic!("frame {i} of {accepted} never arrived"))
                .expect("recv");
            assert_eq!((class, got.len()), (StreamClass::Data, frame.len()));
        }
    }

    #[tokio::test]
    async fn sending_over_the_limit_is_refused_locally() {
        let (_a, _b, ca, _cb) = pair().await;
        let big = vec![0u8; Limits::default().max_frame_bytes() + 1];
        let err = ca.send(StreamClass::Data, &big).await.expect_err("refused");
        assert!(
            matches!(err, TransportError::FrameTooLarge { .. }),
            "{err:?}"
        );
        // The connection is still usable.
        ca.send(StreamClass::Data, b"ok")
            .await
            .expect("small frame");
        // A batch with one oversized frame sends nothing.
        let err = ca
            .send_many(StreamClass::Data, &[&b"no"[..], &big[..]])
            .await
            .expect_err("refused");
        assert!(
            matches!(err, TransportError::FrameTooLarge { .. }),
            "{err:?}"
        );
    }

    /// A batch arrives as separate frames, in order, after earlier single frames.
    #[tokio::test]
    async fn send_many_delivers_each_frame_in_order() {
        let limit = Duration::from_secs(10);
        let (_a, _b, ca, cb) = pair().await;
        ca.send(StreamClass::Data, b"first").await.expect("send");
        let batch: Vec<Bytes> = (0..50u8)
            .map(|i| Bytes::from(vec![i; i as usize]))
            .collect();
        ca.send_many(StreamClass::Data, &batch)
            .await
            .expect("batch");
        let (class, f) = tokio::time::timeout(limit, cb.recv())
            .await
            .expect("in time")
            .expect("frame");
        assert_eq!((class, &f[..]), (StreamClass::Data, &b"first"[..]));
        for i in 0..50u8 {
            let (_, f) = tokio::time::timeout(limit, cb.recv())
                .await
                .expect("in time")
                .expect("frame");
            assert_eq!(f, vec![i; i as usize], "frame {i}");
        }
    }

    /// Frames the peer acknowledged but has not read yet survive the sender's close: the
    /// receiver still reads all of them after the CONNECTION_CLOSE arrived (a graceful
    /// shutdown relies on this: finish, wait for the acknowledgements, close).
    #[tokio::test]
    async fn acknowledged_frames_are_still_read_after_the_close() {
        let limit = Duration::from_secs(10);
        let (_a, _b, ca, cb) = pair().await;
        // Nothing reads until the close has arrived: every frame waits in QUIC's buffers.
        let n = 320u32;
        for i in 0..n {
            ca.send(StreamClass::Data, &i.to_be_bytes())
                .await
                .expect("data");
        }
        ca.send(StreamClass::Control, b"bye")
            .await
            .expect("control");
        tokio::time::timeout(limit, ca.finish())
            .await
            .expect("acknowledged in time");
        ca.close("shutdown");
        let seen = tokio::time::timeout(limit, cb.closed())
            .await
            .expect("close seen in time");
        assert!(
            matches!(seen, TransportError::ClosedByPeer { code, .. } if code == u64::from(CODE_NORMAL)),
            "{seen:?}"
        );
        let mut data = Vec::new();
        let mut control = Vec::new();
        loop {
            match tokio::time::timeout(limit, cb.recv())
                .await
                .expect("in time")
            {
                Ok((StreamClass::Data, f)) => data.push(f),
                Ok((StreamClass::Control, f)) => control.push(f),
                Err(e) => {
                    assert!(matches!(e, TransportError::ClosedByPeer { .. }), "{e:?}");
                    break;
                }
            }
        }
        assert_eq!(control, vec![Bytes::from_static(b"bye")]);
        let want: Vec<Bytes> = (0..n)
            .map(|i| Bytes::copy_from_slice(&i.to_be_bytes()))
            .collect();
        assert_eq!(data, want);
    }
}
