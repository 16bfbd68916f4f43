//! The wire format: every protocol message, the signed broadcast envelopes, ids, and the
//! frame codec.
//!
//! A frame is one version byte ([`PROTOCOL_VERSION`]) followed by one CBOR-encoded
//! [`Message`]. The transport adds a length prefix; [`decode_frame`] refuses a frame longer
//! than [`Limits::max_frame_bytes`] before looking inside it, and checks every list and
//! byte string against [`Limits`] after decoding. Decoding never panics: any input gives a
//! [`Message`] or a typed [`WireError`].
//!
//! Broadcast contents ([`SignedMessage`], [`PresenceRecord`], [`GoneNotice`]) are signed by
//! their author. Their id is BLAKE3 (in derive-key mode, one context string per kind, so
//! kinds never collide) over every field but the signature; the signature is Ed25519 over
//! [`SIGNATURE_DOMAIN`] followed by that id, so it covers a domain tag and every field.
//! Receivers always recompute the id: it is never taken from the wire.
//!
//! The frames that every broadcast sends many times — a topic's eager push and IHAVE, and
//! the [`SignedMessage`] inside — use one-letter CBOR keys and variant names (`serde`
//! renames below; PROTOCOL.md §2.4 lists them): the names were about 90 bytes of a push and
//! 37 of an IHAVE. Everything else keeps its Rust names.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::identity::{Keypair, PeerId, Signature};

/// The version byte that starts every frame.
pub const PROTOCOL_VERSION: u8 = 2;

/// Prefix of every signed byte string; a signature made for anything else never verifies.
pub const SIGNATURE_DOMAIN: &[u8] = b"starling/v1/signature";

const ID_CONTEXT_MESSAGE: &str = "starling v1 published message id";
const ID_CONTEXT_PRESENCE: &str = "starling v1 presence record id";
const ID_CONTEXT_GONE: &str = "starling v1 gone notice id";

macro_rules! id32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(#[serde(with = "serde_bytes")] pub [u8; 32]);

        impl $name {
            /// The raw 32 bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// The first 8 hex digits, for logs.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.short())
            }
        }
    };
}

id32!(
    /// A topic: 32 bytes, by default BLAKE3 of the topic's name ([`TopicId::from_name`]).
    TopicId
);
id32!(
    /// The id of a broadcast: BLAKE3 over its signed fields, recomputed by every receiver.
    MessageId
);

impl TopicId {
    /// The topic id for a human-readable name: BLAKE3 of its UTF-8 bytes.
    pub fn from_name(name: &str) -> Self {
        TopicId(*blake3::hash(name.as_bytes()).as_bytes())
    }
}

/// Where a peer can be reached, as the transport encodes it (opaque to the protocol).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's identity.
    pub id: PeerId,
    /// Transport address data, at most [`Limits::max_addr_bytes`].
    pub addr: Bytes,
}

impl fmt::Debug for PeerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PeerInfo({}, {} addr bytes)",
            self.id.short(),
            self.addr.len()
        )
    }
}

impl PeerInfo {
    /// A peer with no known address (the simulator, or a peer known only by id).
    pub fn bare(id: PeerId) -> Self {
        PeerInfo {
            id,
            addr: Bytes::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Signed broadcast contents

/// A published message: `{topic, author, seq, issued_ms, payload, sig}`.
///
/// Identical payloads from one author are distinct messages: `seq` differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMessage {
    /// The topic it was published on.
    #[serde(rename = "t")]
    pub topic: TopicId,
    /// The author (the signer), never the forwarding neighbour.
    #[serde(rename = "a")]
    pub author: PeerId,
    /// Per (author, topic) sequence number, increasing by one per publish.
    #[serde(rename = "s")]
    pub seq: u64,
    /// The author's wall clock at publish time, milliseconds since the Unix epoch.
    #[serde(rename = "i")]
    pub issued_ms: u64,
    /// The application's bytes.
    #[serde(rename = "p")]
    pub payload: Bytes,
    /// Ed25519 signature over [`SIGNATURE_DOMAIN`] ‖ id.
    #[serde(rename = "g")]
    pub sig: Signature,
}

/// Whether a presence record announces the author as online or as leaving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PresenceStatus {
    /// Online on the topic until `issued + ttl` unless refreshed.
    Online,
    /// Gracefully left the topic.
    Leaving,
}

/// A signed presence record: the author says it is online (or leaving) on a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceRecord {
    /// The topic.
    pub topic: TopicId,
    /// Whose presence this is (the signer).
    pub author: PeerId,
    /// Per (author, topic) presence sequence number; the highest wins.
    pub seq: u64,
    /// The author's wall clock when it made the record (ms since the Unix epoch).
    pub issued_ms: u64,
    /// How long receivers keep the record without a refresh, in milliseconds.
    pub ttl_ms: u32,
    /// Online or leaving.
    pub status: PresenceStatus,
    /// Application metadata, at most [`Limits::max_metadata_bytes`].
    pub metadata: Bytes,
    /// Ed25519 signature over [`SIGNATURE_DOMAIN`] ‖ id.
    pub sig: Signature,
}

/// A signed notice that `reporter`'s failure detector declared `subject` dead.
///
/// Receivers mark the subject offline if their newest record of it has a seq no higher
/// than `subject_seq`. A live subject that sees the notice refutes it with a newer record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoneNotice {
    /// The topic.
    pub topic: TopicId,
    /// Who detected the failure (the signer).
    pub reporter: PeerId,
    /// Who failed.
    pub subject: PeerId,
    /// The newest presence seq of `subject` the reporter had.
    pub subject_seq: u64,
    /// The reporter's wall clock (ms since the Unix epoch).
    pub issued_ms: u64,
    /// Ed25519 signature by `reporter` over [`SIGNATURE_DOMAIN`] ‖ id.
    pub sig: Signature,
}

/// Anything a topic's broadcast tree carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Broadcast {
    /// Application data.
    #[serde(rename = "M")]
    Message(SignedMessage),
    /// A presence record.
    Presence(PresenceRecord),
    /// A failure notice about a present peer.
    Gone(GoneNotice),
}

fn id_hasher(context: &str, topic: &TopicId, signer: &PeerId) -> blake3::Hasher {
    let mut h = blake3::Hasher::new_derive_key(context);
    h.update(topic.as_bytes());
    h.update(signer.as_bytes());
    h
}

fn hash_bytes(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn finish(h: blake3::Hasher) -> MessageId {
    MessageId(*h.finalize().as_bytes())
}

/// The bytes an author signs for a broadcast with this id: [`SIGNATURE_DOMAIN`] ‖ id.
pub fn signing_input(id: &MessageId) -> Vec<u8> {
    let mut v = Vec::with_capacity(SIGNATURE_DOMAIN.len() + 32);
    v.extend_from_slice(SIGNATURE_DOMAIN);
    v.extend_from_slice(id.as_bytes());
    v
}

impl SignedMessage {
    /// Builds and signs a message.
    pub fn new(key: &Keypair, topic: TopicId, seq: u64, issued_ms: u64, payload: Bytes) -> Self {
        let mut m = SignedMessage {
            topic,
            author: key.peer_id(),
            seq,
            issued_ms,
            payload,
            sig: Signature([0; 64]),
        };
        m.sig = key.sign(&signing_input(&m.id()));
        m
    }

    /// BLAKE3 over every field but the signature.
    pub fn id(&self) -> MessageId {
        let mut h = id_hasher(ID_CONTEXT_MESSAGE, &self.topic, &self.author);
        h.update(&self.seq.to_be_bytes());
        h.update(&self.issued_ms.to_be_bytes());
        hash_bytes(&mut h, &self.payload);
        finish(h)
    }
}

impl PresenceRecord {
    /// Builds and signs a presence record.
    pub fn new(
        key: &Keypair,
        topic: TopicId,
        seq: u64,
        issued_ms: u64,
        ttl_ms: u32,
        status: PresenceStatus,
        metadata: Bytes,
    ) -> Self {
        let mut r = PresenceRecord {
            topic,
            author: key.peer_id(),
            seq,
            issued_ms,
            ttl_ms,
            status,
            metadata,
            sig: Signature([0; 64]),
        };
        r.sig = key.sign(&signing_input(&r.id()));
        r
    }

    /// BLAKE3 over every field but the signature.
    pub fn id(&self) -> MessageId {
        let mut h = id_hasher(ID_CONTEXT_PRESENCE, &self.topic, &self.author);
        h.update(&self.seq.to_be_bytes());
        h.update(&self.issued_ms.to_be_bytes());
        h.update(&self.ttl_ms.to_be_bytes());
        h.update(&[match self.status {
            PresenceStatus::Online => 1,
            PresenceStatus::Leaving => 2,
        }]);
        hash_bytes(&mut h, &self.metadata);
        finish(h)
    }
}

impl GoneNotice {
    /// Builds and signs a failure notice.
    pub fn new(
        key: &Keypair,
        topic: TopicId,
        subject: PeerId,
        subject_seq: u64,
        issued_ms: u64,
    ) -> Self {
        let mut g = GoneNotice {
            topic,
            reporter: key.peer_id(),
            subject,
            subject_seq,
            issued_ms,
            sig: Signature([0; 64]),
        };
        g.sig = key.sign(&signing_input(&g.id()));
        g
    }

    /// BLAKE3 over every field but the signature.
    pub fn id(&self) -> MessageId {
        let mut h = id_hasher(ID_CONTEXT_GONE, &self.topic, &self.reporter);
        h.update(self.subject.as_bytes());
        h.update(&self.subject_seq.to_be_bytes());
        h.update(&self.issued_ms.to_be_bytes());
        finish(h)
    }
}

impl Broadcast {
    /// The recomputed id.
    pub fn id(&self) -> MessageId {
        match self {
            Broadcast::Message(m) => m.id(),
            Broadcast::Presence(r) => r.id(),
            Broadcast::Gone(g) => g.id(),
        }
    }

    /// The topic it belongs to.
    pub fn topic(&self) -> TopicId {
        match self {
            Broadcast::Message(m) => m.topic,
            Broadcast::Presence(r) => r.topic,
            Broadcast::Gone(g) => g.topic,
        }
    }

    /// Who signed it.
    pub fn signer(&self) -> PeerId {
        match self {
            Broadcast::Message(m) => m.author,
            Broadcast::Presence(r) => r.author,
            Broadcast::Gone(g) => g.reporter,
        }
    }

    /// The signer's wall clock at creation (ms since the Unix epoch).
    pub fn issued_ms(&self) -> u64 {
        match self {
            Broadcast::Message(m) => m.issued_ms,
            Broadcast::Presence(r) => r.issued_ms,
            Broadcast::Gone(g) => g.issued_ms,
        }
    }

    /// The signature.
    pub fn sig(&self) -> &Signature {
        match self {
            Broadcast::Message(m) => &m.sig,
            Broadcast::Presence(r) => &r.sig,
            Broadcast::Gone(g) => &g.sig,
        }
    }

    /// Checks the signature against `id`, which the caller recomputed with [`Broadcast::id`].
    pub fn verify(&self, id: &MessageId) -> Result<(), WireError> {
        if self.signer().verify(&signing_input(id), self.sig()) {
            Ok(())
        } else {
            Err(WireError::BadSignature)
        }
    }

    /// Approximate size in bytes, for cache accounting.
    pub fn approx_size(&self) -> usize {
        const FIXED: usize = 32 + 32 + 64 + 8 + 8 + 16;
        FIXED
            + match self {
                Broadcast::Message(m) => m.payload.len(),
                Broadcast::Presence(r) => r.metadata.len() + 8,
                Broadcast::Gone(_) => 40,
            }
    }
}

// ---------------------------------------------------------------------------------------
// Protocol messages

/// HyParView membership messages (the network-wide overlay and each topic's overlay).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipMsg {
    /// A new node asks the receiver (its contact) to let it in.
    Join(PeerInfo),
    /// A join travelling on a random walk; ends in a neighbour request to `peer`.
    ForwardJoin {
        /// The joining node.
        peer: PeerInfo,
        /// Remaining hops.
        ttl: u16,
    },
    /// Asks the receiver to add the sender to its active view.
    Neighbor {
        /// The sender, with its address.
        peer: PeerInfo,
        /// High priority: the sender has no active neighbour and must be accepted.
        high_priority: bool,
    },
    /// Answer to [`MembershipMsg::Neighbor`] (and to [`MembershipMsg::Join`]).
    NeighborReply {
        /// Accepted: both sides now have each other in their active views.
        accepted: bool,
    },
    /// The sender removed the receiver from its active view.
    Disconnect {
        /// The sender stays in the network (keep it in the passive view); false: it leaves.
        alive: bool,
    },
    /// A shuffle request travelling on a random walk.
    Shuffle {
        /// Who started the shuffle (the reply goes there).
        origin: PeerInfo,
        /// Remaining hops.
        ttl: u16,
        /// A sample of the origin's views.
        peers: Vec<PeerInfo>,
    },
    /// The answer to a shuffle: a sample of the replier's passive view.
    ShuffleReply {
        /// The sample.
        peers: Vec<PeerInfo>,
    },
}

/// Failure-detector (SWIM) messages between neighbours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwimMsg {
    /// Are you alive?
    Ping {
        /// Echoed in the answer.
        nonce: u64,
    },
    /// Yes.
    Ack {
        /// The ping's nonce.
        nonce: u64,
    },
    /// Please ping `target` for me and tell me the outcome.
    PingReq {
        /// Echoed in the answer.
        nonce: u64,
        /// The peer to probe.
        target: PeerInfo,
    },
    /// `target` answered your indirect probe.
    IndirectAck {
        /// The request's nonce.
        nonce: u64,
    },
    /// `target` did not answer me in time (Lifeguard: tells the requester that the helper,
    /// at least, is alive, so a missing answer means the requester itself is slow).
    Nack {
        /// The request's nonce.
        nonce: u64,
    },
    /// You are suspected dead by the sender; answer with [`SwimMsg::Alive`] to refute.
    Suspect,
    /// Refutation of a suspicion.
    Alive,
}

/// Plumtree messages within one topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipMsg {
    /// The full content, pushed eagerly (or sent in answer to a graft).
    #[serde(rename = "G")]
    Gossip {
        /// Hops travelled from the author (the author sends 0).
        #[serde(rename = "h")]
        hops: u16,
        /// The signed content.
        #[serde(rename = "c")]
        content: Broadcast,
    },
    /// Lazy announcements: "I have these".
    #[serde(rename = "I")]
    IHave(Vec<IHave>),
    /// "Send me these, and make our link eager." An empty list only grafts the link.
    Graft(Vec<MessageId>),
    /// "Make our link lazy": the sender received a duplicate over it.
    Prune,
}

/// One lazy announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IHave {
    /// The announced broadcast.
    #[serde(rename = "i")]
    pub id: MessageId,
    /// Hops it had travelled when the announcer received it.
    #[serde(rename = "h")]
    pub hops: u16,
}

/// Messages of one topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicMsg {
    /// The topic's membership overlay.
    Membership(MembershipMsg),
    /// The topic's broadcast tree.
    #[serde(rename = "G")]
    Gossip(GossipMsg),
    /// The current presence table, sent to a new neighbour (possibly in several parts).
    PresenceSnapshot(Vec<PresenceRecord>),
}

/// Topic discovery over the network-wide overlay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiscoveryMsg {
    /// The sender's subscribed topics (the full list; replaces any earlier one).
    Topics(Vec<TopicId>),
    /// A random walk looking for members of `topic`.
    FindTopic {
        /// The topic sought.
        topic: TopicId,
        /// Who is looking (answers go there directly).
        origin: PeerInfo,
        /// Remaining hops.
        ttl: u16,
    },
    /// Members of `topic` known to the sender.
    TopicPeers {
        /// The topic.
        topic: TopicId,
        /// Members (with addresses).
        peers: Vec<PeerInfo>,
        /// Ids of broadcasts the sender saw on the topic recently, so the seeker can tell
        /// whether the sender is in its own part of the topic's overlay.
        recent: Vec<MessageId>,
    },
}

/// One protocol message, as carried in a frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// The network-wide membership overlay.
    Membership(MembershipMsg),
    /// Failure detection between neighbours.
    Swim(SwimMsg),
    /// Topic discovery.
    Discovery(DiscoveryMsg),
    /// A message of one topic.
    #[serde(rename = "T")]
    Topic {
        /// The topic.
        #[serde(rename = "t")]
        topic: TopicId,
        /// The message.
        #[serde(rename = "m")]
        msg: TopicMsg,
    },
}

// ---------------------------------------------------------------------------------------
// Limits and the codec

/// Size limits enforced on every decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest application payload (default 64 KiB).
    pub max_payload_bytes: usize,
    /// Largest presence metadata (default 1 KiB).
    pub max_metadata_bytes: usize,
    /// Largest transport address in a [`PeerInfo`] (default 256 bytes).
    pub max_addr_bytes: usize,
    /// Most peers in one list (shuffles, discovery answers; default 64).
    pub max_peers_per_msg: usize,
    /// Most ids in one IHAVE, GRAFT or discovery answer (default 1,024).
    pub max_ids_per_msg: usize,
    /// Most topics in one topic list (default 1,024).
    pub max_topics_per_msg: usize,
    /// Most records in one presence snapshot part (default 32).
    pub max_records_per_msg: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 64 * 1024,
            max_metadata_bytes: 1024,
            max_addr_bytes: 256,
            max_peers_per_msg: 64,
            max_ids_per_msg: 1024,
            max_topics_per_msg: 1024,
            max_records_per_msg: 32,
        }
    }
}

impl Limits {
    /// The largest frame: enough for the largest message these limits allow, so a payload
    /// within `max_payload_bytes` always fits (framing overhead included).
    pub fn max_frame_bytes(&self) -> usize {
        const ENVELOPE: usize = 512;
        let record = ENVELOPE + self.max_metadata_bytes;
        let peer = 48 + self.max_addr_bytes;
        [
            ENVELOPE + self.max_payload_bytes,
            ENVELOPE + self.max_records_per_msg * record,
            ENVELOPE + self.max_peers_per_msg * peer,
            ENVELOPE + self.max_ids_per_msg * 48,
            ENVELOPE + self.max_topics_per_msg * 40,
        ]
        .into_iter()
        .max()
        .unwrap_or(ENVELOPE)
    }
}

/// Why bytes are not a valid frame, or a broadcast is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame is longer than the limit (checked before decoding).
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An empty frame.
    #[error("empty frame")]
    Empty,
    /// The version byte is not one this node speaks.
    #[error("unsupported protocol version {0} (this node speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// Not valid CBOR for a [`Message`].
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A field is larger than [`Limits`] allow.
    #[error("{what} is {len}, over the limit of {max}")]
    LimitExceeded {
        /// Which field.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

/// Encodes a message as a frame (version byte + CBOR), without the transport's length
/// prefix.
pub fn encode_frame(msg: &Message) -> Vec<u8> {
    let mut out = vec![PROTOCOL_VERSION];
    // Writing to a Vec cannot fail and every type here is serializable.
    ciborium::into_writer(msg, &mut out).expect("CBOR encoding into a Vec is infallible");
    out
}

/// Decodes a frame, enforcing `limits` (length first, then every field).
pub fn decode_frame(frame: &[u8], limits: &Limits) -> Result<Message, WireError> {
    let max = limits.max_frame_bytes();
    if frame.len() > max {
        return Err(WireError::FrameTooLarge {
            len: frame.len(),
            max,
        });
    }
    let (&version, mut body) = frame.split_first().ok_or(WireError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    let msg: Message = ciborium::de::from_reader_with_recursion_limit(&mut body, 32)
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if !body.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} trailing bytes after the message",
            body.len()
        )));
    }
    check_limits(&msg, limits)?;
    Ok(msg)
}

fn limit(what: &'static str, len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        Err(WireError::LimitExceeded { what, len, max })
    } else {
        Ok(())
    }
}

fn check_peers(peers: &[PeerInfo], limits: &Limits) -> Result<(), WireError> {
    limit("peer list length", peers.len(), limits.max_peers_per_msg)?;
    peers.iter().try_for_each(|p| check_peer(p, limits))
}

fn check_peer(peer: &PeerInfo, limits: &Limits) -> Result<(), WireError> {
    limit(
        "peer address length",
        peer.addr.len(),
        limits.max_addr_bytes,
    )
}

/// Checks a broadcast's sizes against `limits`.
pub fn check_broadcast(content: &Broadcast, limits: &Limits) -> Result<(), WireError> {
    match content {
        Broadcast::Message(m) => limit("payload length", m.payload.len(), limits.max_payload_bytes),
        Broadcast::Presence(r) => check_record(r, limits),
        Broadcast::Gone(_) => Ok(()),
    }
}

fn check_record(r: &PresenceRecord, limits: &Limits) -> Result<(), WireError> {
    limit(
        "presence metadata length",
        r.metadata.len(),
        limits.max_metadata_bytes,
    )
}

fn check_membership(msg: &MembershipMsg, limits: &Limits) -> Result<(), WireError> {
    match msg {
        MembershipMsg::Join(p)
        | MembershipMsg::ForwardJoin { peer: p, .. }
        | MembershipMsg::Neighbor { peer: p, .. } => check_peer(p, limits),
        MembershipMsg::Shuffle { origin, peers, .. } => {
            check_peer(origin, limits)?;
            check_peers(peers, limits)
        }
        MembershipMsg::ShuffleReply { peers } => check_peers(peers, limits),
        MembershipMsg::NeighborReply { .. } | MembershipMsg::Disconnect { .. } => Ok(()),
    }
}

/// Checks every list and byte string of a decoded message against `limits`.
pub fn check_limits(msg: &Message, limits: &Limits) -> Result<(), WireError> {
    match msg {
        Message::Membership(m) => check_membership(m, limits),
        Message::Swim(SwimMsg::PingReq { target, .. }) => check_peer(target, limits),
        Message::Swim(_) => Ok(()),
        Message::Discovery(DiscoveryMsg::Topics(t)) => {
            limit("topic list length", t.len(), limits.max_topics_per_msg)
        }
        Message::Discovery(DiscoveryMsg::FindTopic { origin, .. }) => check_peer(origin, limits),
        Message::Discovery(DiscoveryMsg::TopicPeers { peers, recent, .. }) => {
            check_peers(peers, limits)?;
            limit("id list length", recent.len(), limits.max_ids_per_msg)
        }
        Message::Topic { msg, .. } => match msg {
            TopicMsg::Membership(m) => check_membership(m, limits),
            TopicMsg::Gossip(GossipMsg::Gossip { content, .. }) => check_broadcast(content, limits),
            TopicMsg::Gossip(GossipMsg::IHave(v)) => {
                limit("id list length", v.len(), limits.max_ids_per_msg)
            }
            TopicMsg::Gossip(GossipMsg::Graft(v)) => {
                limit("id list length", v.len(), limits.max_ids_per_msg)
            }
            TopicMsg::Gossip(GossipMsg::Prune) => Ok(()),
            TopicMsg::PresenceSnapshot(records) => {
                limit(
                    "presence snapshot length",
                    records.len(),
                    limits.max_records_per_msg,
                )?;
                records.iter().try_for_each(|r| check_record(r, limits))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Keypair {
        Keypair::from_seed([n; 32])
    }

    fn topic() -> TopicId {
        TopicId::from_name("chat")
    }

    fn msg(seq: u64, payload: &'static [u8]) -> SignedMessage {
        SignedMessage::new(
            &key(1),
            topic(),
            seq,
            1_700_000_000_000,
            Bytes::from(payload),
        )
    }

    /// The map keys of a CBOR value, recursively, in order.
    fn cbor_keys(v: &ciborium::Value, keys: &mut Vec<String>) {
        match v {
            ciborium::Value::Map(entries) => {
                for (k, v) in entries {
                    if let ciborium::Value::Text(t) = k {
                        keys.push(t.clone());
                    }
                    cbor_keys(v, keys);
                }
            }
            ciborium::Value::Array(items) => items.iter().for_each(|v| cbor_keys(v, keys)),
            _ => {}
        }
    }

    fn frame_keys(msg: &Message) -> Vec<String> {
        let frame = encode_frame(msg);
        assert_eq!(frame[0], PROTOCOL_VERSION);
        let value: ciborium::Value = ciborium::from_reader(&frame[1..]).expect("CBOR");
        let mut keys = Vec::new();
        cbor_keys(&value, &mut keys);
        keys
    }

    /// The wire names of PROTOCOL.md §2.4: the hot path's frames use one-letter names,
    /// and they still decode to the same messages.
    #[test]
    fn hot_path_frames_use_the_documented_short_names() {
        let content = Broadcast::Message(msg(1, b"hi"));
        let id = content.id();
        let push = Message::Topic {
            topic: topic(),
            msg: TopicMsg::Gossip(GossipMsg::Gossip { hops: 2, content }),
        };
        assert_eq!(
            frame_keys(&push),
            ["T", "t", "m", "G", "G", "h", "c", "M", "t", "a", "s", "i", "p", "g"]
        );
        let ihave = Message::Topic {
            topic: topic(),
            msg: TopicMsg::Gossip(GossipMsg::IHave(vec![IHave { id, hops: 2 }])),
        };
        assert_eq!(frame_keys(&ihave), ["T", "t", "m", "G", "I", "i", "h"]);
        // Other messages keep their Rust names.
        let ping = Message::Swim(SwimMsg::Ping { nonce: 1 });
        assert_eq!(frame_keys(&ping), ["Swim", "Ping", "nonce"]);
        for m in [push, ihave, ping] {
            assert_eq!(decode_frame(&encode_frame(&m), &Limits::default()), Ok(m));
        }
    }

    #[test]
    fn topic_id_is_blake3_of_name() {
        assert_eq!(
            TopicId::from_name("chat").0,
            *blake3::hash(b"chat").as_bytes()
        );
        assert_ne!(TopicId::from_name("chat"), TopicId::from_name("Chat"));
    }

    #[test]
    fn signed_message_round_trips_and_verifies() {
        let m = msg(1, b"hi");
        let b = Broadcast::Message(m.clone());
        assert_eq!(b.verify(&b.id()), Ok(()));
        let frame = encode_frame(&Message::Topic {
            topic: topic(),
            msg: TopicMsg::Gossip(GossipMsg::Gossip {
                hops: 3,
                content: b.clone(),
            }),
        });
        let decoded = decode_frame(&frame, &Limits::default()).unwrap();
        let Message::Topic {
            msg: TopicMsg::Gossip(GossipMsg::Gossip { content, hops }),
            ..
        } = decoded
        else {
            panic!("wrong message {decoded:?}")
        };
        assert_eq!(hops, 3);
        assert_eq!(content, b);
        assert_eq!(content.id(), m.id());
    }

    #[test]
    fn identical_payloads_are_distinct_messages() {
        assert_ne!(msg(1, b"same").id(), msg(2, b"same").id());
    }

    #[test]
    fn every_field_is_covered_by_the_signature() {
        let good = msg(5, b"payload");
        let mut tampered: Vec<SignedMessage> = Vec::new();
        let mut t = good.clone();
        t.topic = TopicId::from_name("other");
        tampered.push(t);
        let mut t = good.clone();
        t.seq += 1;
        tampered.push(t);
        let mut t = good.clone();
        t.issued_ms += 1;
        tampered.push(t);
        let mut t = good.clone();
        t.payload = Bytes::from_static(b"payloaD");
        tampered.push(t);
        let mut t = good.clone();
        t.author = key(2).peer_id(); // spoofed author
        tampered.push(t);
        let mut t = good.clone();
        t.sig.0[10] ^= 0x40;
        tampered.push(t);
        for t in tampered {
            let b = Broadcast::Message(t);
            assert_eq!(b.verify(&b.id()), Err(WireError::BadSignature), "{b:?}");
        }
    }

    #[test]
    fn kinds_and_records_are_signed_and_distinct() {
        let r = PresenceRecord::new(
            &key(3),
            topic(),
            1,
            5,
            60_000,
            PresenceStatus::Online,
            Bytes::from_static(b"meta"),
        );
        let b = Broadcast::Presence(r.clone());
        assert_eq!(b.verify(&b.id()), Ok(()));
        let mut leaving = r.clone();
        leaving.status = PresenceStatus::Leaving;
        let lb = Broadcast::Presence(leaving);
        assert_eq!(lb.verify(&lb.id()), Err(WireError::BadSignature));

        let g = GoneNotice::new(&key(4), topic(), key(3).peer_id(), 1, 9);
        let gb = Broadcast::Gone(g.clone());
        assert_eq!(gb.verify(&gb.id()), Ok(()));
        let mut forged = g;
        forged.reporter = key(5).peer_id();
        let fb = Broadcast::Gone(forged);
        assert_eq!(fb.verify(&fb.id()), Err(WireError::BadSignature));
        // A signature from one kind never serves for another id.
        assert_ne!(b.id(), gb.id());
    }

    #[test]
    fn decoding_rejects_bad_input_with_typed_errors() {
        let limits = Limits::default();
        assert_eq!(decode_frame(&[], &limits), Err(WireError::Empty));
        assert_eq!(
            decode_frame(&[9, 0xa0], &limits),
            Err(WireError::UnsupportedVersion(9))
        );
        assert!(matches!(
            decode_frame(&[PROTOCOL_VERSION, 0xff, 0x00], &limits),
            Err(WireError::Malformed(_))
        ));
        let big = vec![PROTOCOL_VERSION; limits.max_frame_bytes() + 1];
        assert!(matches!(
            decode_frame(&big, &limits),
            Err(WireError::FrameTooLarge { .. })
        ));
        let mut frame = encode_frame(&Message::Swim(SwimMsg::Ping { nonce: 1 }));
        frame.push(0);
        assert!(matches!(
            decode_frame(&frame, &limits),
            Err(WireError::Malformed(_))
        ));
        // A byte string header claiming 4 GiB inside a tiny frame: an error, no allocation.
        let mut lie = vec![PROTOCOL_VERSION];
        lie.extend_from_slice(&[0x5b, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert!(matches!(
            decode_frame(&lie, &limits),
            Err(WireError::Malformed(_))
        ));
        // Deep nesting: refused by the recursion limit, no stack overflow.
        let mut deep = vec![PROTOCOL_VERSION];
        deep.extend(std::iter::repeat_n(0x81, 10_000));
        assert!(decode_frame(&deep, &limits).is_err());
    }

    #[test]
    fn oversized_fields_are_refused() {
        let limits = Limits {
            max_payload_bytes: 10,
            ..Limits::default()
        };
        let m = SignedMessage::new(&key(1), topic(), 1, 1, Bytes::from(vec![0u8; 11]));
        let frame = encode_frame(&Message::Topic {
            topic: topic(),
            msg: TopicMsg::Gossip(GossipMsg::Gossip {
                hops: 0,
                content: Broadcast::Message(m),
            }),
        });
        assert_eq!(
            decode_frame(&frame, &limits),
            Err(WireError::LimitExceeded {
                what: "payload length",
                len: 11,
                max: 10
            })
        );
        let peers = vec![PeerInfo::bare(key(1).peer_id()); 65];
        let frame = encode_frame(&Message::Membership(MembershipMsg::ShuffleReply { peers }));
        assert!(matches!(
            decode_frame(&frame, &Limits::default()),
            Err(WireError::LimitExceeded {
                what: "peer list length",
                ..
            })
        ));
    }

    #[test]
    fn a_maximal_payload_fits_in_a_frame() {
        let limits = Limits::default();
        let m = SignedMessage::new(
            &key(1),
            topic(),
            u64::MAX,
            u64::MAX,
            Bytes::from(vec![0xffu8; limits.max_payload_bytes]),
        );
        let frame = encode_frame(&Message::Topic {
            topic: topic(),
            msg: TopicMsg::Gossip(GossipMsg::Gossip {
                hops: u16::MAX,
                content: Broadcast::Message(m),
            }),
        });
        assert!(frame.len() <= limits.max_frame_bytes());
        assert!(decode_frame(&frame, &limits).is_ok());
    }
}
