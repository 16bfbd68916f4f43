//! `starling_node`: a running node and its calls.

use std::ffi::c_char;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use starling_core::node::{Node, PresenceEntry};

use super::admission::{in_admission_hook, not_in_admission_hook};
use super::config::{check_peer, starling_config};
use super::subscription::SubShared;
use super::{boundary, boundary_or, bytes, cstr, need, starling_result, topic, write_str, Fail};

/// A running node (opaque): from `starling_node_start`, freed with `starling_node_free`.
///
/// Thread safety: every `starling_node_*` call may be made from any thread, concurrently,
/// including from inside a subscription callback — except `starling_node_free`, which
/// must be the last call on the node.
pub struct starling_node {
    node: Node,
    closed: AtomicBool,
    /// The delivery threads of this node's subscriptions, stopped at shutdown.
    pub(crate) subs: Mutex<Vec<Arc<SubShared>>>,
}

impl starling_node {
    /// The node, or `Closed` once shut down (`WouldDeadlock` inside an admission hook,
    /// where a call to the node would wait for the thread it runs on).
    pub(crate) fn open(&self) -> Result<&Node, Fail> {
        not_in_admission_hook()?;
        if self.closed.load(Ordering::Acquire) {
            Err(Fail::new(starling_result::Closed, "the node is shut down"))
        } else {
            Ok(&self.node)
        }
    }

    fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        self.node.shutdown();
        let subs = std::mem::take(&mut *self.subs.lock());
        for sub in &subs {
            sub.stop();
        }
        for sub in &subs {
            sub.wait_finished();
        }
    }
}

/// `&starling_node` behind a checked pointer.
///
/// # Safety
/// `node` must be NULL or a live node from `starling_node_start`.
pub(crate) unsafe fn node_ref<'a>(node: *const starling_node) -> Result<&'a starling_node, Fail> {
    need(node, "node")?;
    // SAFETY: non-NULL and live (caller's contract).
    Ok(unsafe { &*node })
}

/// What `starling_node_publish` reports.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct starling_receipt {
    /// The message id (BLAKE3 over the signed fields): what receivers see as
    /// `starling_message.id`.
    pub id: [u8; 32],
    /// This node's sequence number for the message on its topic.
    pub seq: u64,
    /// Topic neighbours the message was sent or announced to directly. 0 is not an error:
    /// nobody is subscribed yet, and the message stays cached for peers that arrive soon.
    pub peers: usize,
}

/// A snapshot of a node's counters (`starling_node_stats`).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct starling_stats {
    /// Open connections.
    pub peers: u64,
    /// Network-wide neighbours.
    pub neighbors: u64,
    /// Topics this node is a member of.
    pub topics: u64,
    /// Frames received.
    pub msgs_in: u64,
    /// Frames sent.
    pub msgs_out: u64,
    /// Frame bytes received (without QUIC overhead).
    pub bytes_in: u64,
    /// Frame bytes sent (without QUIC overhead).
    pub bytes_out: u64,
    /// Times the node woke up for a timer.
    pub timer_wakeups: u64,
    /// Messages published by this node.
    pub published: u64,
    /// Messages delivered to subscriptions on this node.
    pub delivered: u64,
    /// Everything dropped, all reasons together (full queues, a lagging subscriber, bad
    /// frames, failed dials, rejected peers).
    pub dropped: u64,
    /// Connections refused, all reasons together (the admission hook, a missing or
    /// invalid private-network credential, a peer kept out after breaking the protocol,
    /// the connection limit). Each refusal is also logged with its reason.
    pub refused: u64,
    /// Connections refused by the admission hook or allowlist (part of `refused`).
    pub refused_admission_hook: u64,
    /// Connections refused for their private-network credential: missing, expired, made
    /// for another peer or network, signed by another authority, bad (part of `refused`).
    pub refused_credential: u64,
    /// Peers disconnected and kept out for breaking the protocol (malformed or oversized
    /// frames, bad signatures, exceeding a rate), all reasons together.
    pub cut_off: u64,
    /// Peers currently kept out (their back-off is running).
    pub banned: u64,
}

/// Starts a node with the settings of `config` (which is copied: free it whenever you
/// like) and writes it to `*out`. The node runs on its own threads until
/// `starling_node_shutdown` or `starling_node_free`; bootstrap peers are dialled in the
/// background (a peer that cannot be reached is logged, not an error here).
///
/// Errors: `NULL_PARAMETER`, `INVALID_ADDRESS` (bind or bootstrap), `INVALID_CONFIG`,
/// `IDENTITY` (key file), `TRANSPORT` (e.g. the address is in use), `RUNTIME`.
#[no_mangle]
pub extern "C" fn starling_node_start(
    config: *const starling_config,
    out: *mut *mut starling_node,
) -> starling_result {
    boundary(|| {
        need(config, "config")?;
        need(out, "out")?;
        // SAFETY: non-NULL, a live config (documented contract).
        let config = unsafe { &*config }.inner.clone();
        let node = Node::start(config)?;
        let handle = Box::new(starling_node {
            node,
            closed: AtomicBool::new(false),
            subs: Mutex::new(Vec::new()),
        });
        // SAFETY: out is non-NULL and writable.
        unsafe { *out = Box::into_raw(handle) };
        Ok(())
    })
}

/// Shuts the node down gracefully: announces leaving on every topic it is online on,
/// says goodbye to its neighbours (at most 3 s), and stops its threads. Every
/// subscription stops: its `release` callback runs and, unless this is called from inside
/// a callback, has returned before this returns. Afterwards every call on the node except
/// `starling_node_free`, `starling_node_id`, `starling_node_id_hex`,
/// `starling_node_local_addr` and `starling_node_contact` fails with
/// `STARLING_RESULT_CLOSED`. Calling it again is a no-op that succeeds.
///
/// Errors: `NULL_PARAMETER`, `WOULD_DEADLOCK` (called from inside an admission hook).
#[no_mangle]
pub extern "C" fn starling_node_shutdown(node: *const starling_node) -> starling_result {
    boundary(|| {
        // SAFETY: documented contract.
        let node = unsafe { node_ref(node) }?;
        not_in_admission_hook()?;
        node.shutdown();
        Ok(())
    })
}

/// Shuts the node down (as `starling_node_shutdown`) if it is still running, and frees
/// it. NULL is a no-op. No other call on this node may run concurrently or follow;
/// subscriptions of the node are stopped but must still be freed with
/// `starling_subscription_free` (before or after this). Ignored when called from inside
/// an admission hook (the node is waiting for the hook to return).
#[no_mangle]
pub extern "C" fn starling_node_free(node: *mut starling_node) {
    boundary_or((), || {
        // Inside an admission hook the node is waiting for the caller: ignored
        // (documented), rather than a deadlock.
        if node.is_null() || in_admission_hook() {
            return;
        }
        // SAFETY: from starling_node_start, freed once (documented contract).
        let node = unsafe { Box::from_raw(node) };
        node.shutdown();
        drop(node);
    })
}

/// Writes the node's 32-byte id (its Ed25519 public key) to `out` (room for 32 bytes).
/// Works after shutdown. Errors: `NULL_PARAMETER`.
#[no_mangle]
pub extern "C" fn starling_node_id(node: *const starling_node, out: *mut u8) -> starling_result {
    boundary(|| {
        // SAFETY: documented contract.
        let node = unsafe { node_ref(node) }?;
        need(out, "out")?;
        // SAFETY: out has room for 32 bytes.
        unsafe { std::ptr::copy_nonoverlapping(node.node.id().as_bytes().as_ptr(), out, 32) };
        Ok(())
    })
}

/// Writes the node's id as 64 lowercase hex digits and a NUL to `buf` (`len` bytes;
/// `STARLING_PEER_ID_HEX_SIZE` always suffices); `*written` (if not NULL) gets 64.
/// Works after shutdown. Errors: `NULL_PARAMETER`, `BUFFER_TOO_SMALL`.
#[no_mangle]
pub extern "C" fn starling_node_id_hex(
    node: *const starling_node,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> starling_result {
    boundary(|| {
        // SAFETY: documented contract.
        let node = unsafe { node_ref(node) }?;
        // SAFETY: documented contract of buf/len/written.
        unsafe { write_str(&node.node.id().to_string(), buf, len, written) }
    })
}

/// Writes the UDP address the node is bound to (e.g. `"127.0.0.1:38211"`) and a NUL to
/// `buf` (`STARLING_ADDRESS_SIZE` always suffices); `*written` (if not NULL) gets its
/// length. Works after shutdown. Errors: `NULL_PARAMETER`, `BUFFER_TOO_SMALL`.
#[no_mangle]
pub extern "C" fn starling_node_local_addr(
    node: *const starling_node,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> starling_result {
    boundary(|| {
        // SAFETY: documented contract.
        let node = unsafe { node_ref(node) }?;
        // SAFETY: documented contract of buf/len/written.
        unsafe { write_str(&node.node.bound_addr().to_string(), buf, len, written) }
    })
}

/// Writes `"<peer id hex>@<address>"` and a NUL to `buf`: what another node passes to
/// `starling_config_add_bootstrap` or `starling_node_join` to reach this one
/// (`STARLING_CONTACT_SIZE` always suffices); `*written` (if not NULL) gets its length.
/// Works after shutdown. Errors: `NULL_PARAMETER`, `BUFFER_TOO_SMALL`.
#[no_mangle]
pub extern "C" fn starling_node_contact(
    node: *const starling_node,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> starling_result {
    boundary(|| {
        // SAFETY: documented contract.
        let node = unsafe { node_ref(node) }?;
        // SAFETY: documented contract of buf/len/written.
        unsafe { write_str(&node.node.contact(), buf, len, written) }
    })
}

/// Joins the network through `peer` (NUL-terminated `"host:port"` or
/// `"<peer id hex>@host:port"`). Returns once the join is under way; whether the peer
/// answered shows in the logs and in `starling_stats.neighbors`.
/// Errors: `NULL_PARAMETER`, `INVALID_ARGUMENT` (not UTF-8), `INVALID_ADDRESS`, `CLOSED`,
/// `TIMEOUT`.
#[no_mangle]
pub extern "C" fn starling_node_join(
    node: *const starling_node,
    peer: *const c_char,
) -> starling_result {
    boundary(|| {
        // SAFETY: documented contract.
        let node = unsafe { node_ref(node) }?.open()?;
        // SAFETY: documented contract.
        let peer = unsafe { cstr(peer, "peer") }?;
        check_peer(peer)?;
        node.join([peer])?;
        Ok(())
    })
}

/// Publishes `(payload, payload_len)` on the topic named `(topic, topic_len)` (UTF-8, 1 to
/// 255 bytes); no subscription is needed. The payload is copied before this returns.
/// Writes the receipt to `*receipt` unless `receipt` is NULL. Safe to call from inside a
/// subscription callback.
///
/// Errors: `NULL_PARAMETER` (`node` NULL, or a buffer NULL with a non-zero length),
/// `INVALID_TOPIC`, `PAYLOAD_TOO_LARGE`, `TOO_MANY_TOPICS`, `CLOSED`, `TIMEOUT`.
#[no_mangle]
pub extern "C" fn starling_node_publish(
    node: *const starling_node,
    topic_name: *const u8,
    topic_len: usize,
    payload: *const u8,
    payload_len: usize,
    receipt: *mut starling_receipt,
) -> starling_result {
    boundary(|| {
        // SAFETY: documented contract.
        let node = unsafe { node_ref(node) }?.open()?;
        // SAFETY: documented contracts of the two buffers.
        let topic = unsafe { topic(topic_name, topic_len) }?;
        // SAFETY: as above.
        let payload = unsafe { bytes(payload, payload_len, "payload") }?;
        let r = node.publish(topic, payload.to_vec())?;
        if !receipt.is_null() {
            // SAFETY: non-NULL, writable (documented contract).
            unsafe {
                *receipt = starling_receipt {
                    id: *r.id.as_bytes(),
                    seq: r.seq,
                    peers: r.peers,
                }
            };
        }
        Ok(())
    })
}

/// Announces this node online on the topic with `(metadata, metadata_len)` (at most
/// 1 KiB, e.g. a user name; copied), or updates its metadata. Subscribers of the topic get
/// a presence event. Errors: `NULL_PARAMETER`, `INVALID_TOPIC`, `METADATA_TOO_LARGE`,
/// `TOO_MANY_TOPICS`, `CLOSED`, `TIMEOUT`.
#[no_mangle]
pub extern "C" fn starling_node_set_presence(
    node: *const starling_node,
    topic_name: *const u8,
    topic_len: usize,
    metadata: *const u8,
    metadata_len: usize,
) -> starling_result {
    boundary(|| {
        // SAFETY: documented contract.
        let node = unsafe { node_ref(node) }?.open()?;
        // SAFETY: documented contracts of the two buffers.
        let topic = unsafe { topic(topic_name, topic_len) }?;
        // SAFETY: as above.
        let metadata = unsafe { bytes(metadata, metadata_len, "metadata") }?;
        node.set_presence(topic, metadata.to_vec())?;
        Ok(())
    })
}

/// Announces that this node is no longer online on the topic.
/// Errors: `NULL_PARAMETER`, `INVALID_TOPIC`, `CLOSED`, `TIMEOUT`.
#[no_mangle]
pub extern "C" fn starling_node_clear_presence(
    node: *const starling_node,
    topic_name: *const u8,
    topic_len: usize,
) -> starling_result {
    boundary(|| {
        // SAFETY: documented contract.
        let node = unsafe { node_ref(node) }?.open()?;
        // SAFETY: documented contract.
        let topic = unsafe { topic(topic_name, topic_len) }?;
        node.clear_presence(topic)?;
        Ok(())
    })
}

fn sum<'a>(values: impl Iterator<Item = &'a u64>) -> u64 {
    values.fold(0u64, |a, b| a.saturating_add(*b))
}

/// Writes the counters of the node to `*out`.
/// Errors: `NULL_PARAMETER`, `CLOSED`, `TIMEOUT`.
#[no_mangle]
pub extern "C" fn starling_node_stats(
    node: *const starling_node,
    out: *mut starling_stats,
) -> starling_result {
    boundary(|| {
        // SAFETY: documented contract.
        let node = unsafe { node_ref(node) }?.open()?;
        need(out, "out")?;
        let s = node.stats()?;
        let stats = starling_stats {
            peers: s.peers as u64,
            neighbors: s.neighbors as u64,
            topics: s.topics as u64,
            msgs_in: s.msgs_in,
            msgs_out: s.msgs_out,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            timer_wakeups: s.timer_wakeups,
            published: s.published,
            delivered: s.delivered,
            dropped: sum(s.drops.values()),
            refused: sum(s.refused.values()),
            refused_admission_hook: s.refused.get("admission_hook").copied().unwrap_or(0),
            refused_credential: sum(s
                .refused
                .iter()
                .filter(|(k, _)| k.starts_with("credential_"))
                .map(|(_, v)| v)),
            cut_off: sum(s.cut_off.values()),
            banned: s.banned as u64,
        };
        // SAFETY: non-NULL, writable.
        unsafe { *out = stats };
        Ok(())
    })
}

/// The peers online on a topic (opaque, caller-owned): from `starling_node_online`, read
/// with `starling_online_list_len` and `starling_online_list_get`, freed with
/// `starling_online_list_free`. A snapshot: it does not change.
pub struct starling_online_list {
    entries: Vec<PresenceEntry>,
}

/// One online peer, borrowed from a `starling_online_list`.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct starling_online_entry {
    /// The peer's 32-byte id.
    pub peer: [u8; 32],
    /// Its presence metadata (not NUL-terminated; may be NULL when `metadata_len` is 0).
    /// Valid until the list is freed.
    pub metadata: *const u8,
    /// Length of `metadata` in bytes.
    pub metadata_len: usize,
    /// When this node learned that the peer is online, ms since the Unix epoch.
    pub online_since_ms: u64,
    /// When the peer's newest presence record arrived here, ms since the Unix epoch.
    pub last_seen_ms: u64,
}

/// Writes to `*out` the list of peers online on the topic as this node sees it (empty if
/// it is not a member of the topic; this node itself is included when it set presence).
/// Free the list with `starling_online_list_free`.
/// Errors: `NULL_PARAMETER`, `INVALID_TOPIC`, `CLOSED`, `TIMEOUT`.
#[no_mangle]
pub extern "C" fn starling_node_online(
    node: *const starling_node,
    topic_name: *const u8,
    topic_len: usize,
    out: *mut *mut starling_online_list,
) -> starling_result {
    boundary(|| {
        // SAFETY: documented contract.
        let node = unsafe { node_ref(node) }?.open()?;
        // SAFETY: documented contract.
        let topic = unsafe { topic(topic_name, topic_len) }?;
        need(out, "out")?;
        let entries = node.online(topic)?;
        let list = Box::new(starling_online_list { entries });
        // SAFETY: non-NULL, writable.
        unsafe { *out = Box::into_raw(list) };
        Ok(())
    })
}

/// Number of entries in the list (0 for NULL).
#[no_mangle]
pub extern "C" fn starling_online_list_len(list: *const starling_online_list) -> usize {
    boundary_or(0, || {
        if list.is_null() {
            0
        } else {
            // SAFETY: a live list (documented contract).
            unsafe { &*list }.entries.len()
        }
    })
}

/// Writes entry `index` (0-based) of the list to `*out`; its `metadata` pointer stays
/// valid until the list is freed.
/// Errors: `NULL_PARAMETER`, `INVALID_ARGUMENT` (`index` not below the length).
#[no_mangle]
pub extern "C" fn starling_online_list_get(
    list: *const starling_online_list,
    index: usize,
    out: *mut starling_online_entry,
) -> starling_result {
    boundary(|| {
        need(list, "list")?;
        need(out, "out")?;
        // SAFETY: a live list (documented contract).
        let entries = &unsafe { &*list }.entries;
        let e = entries.get(index).ok_or_else(|| {
            Fail::new(
                starling_result::InvalidArgument,
                format!(
                    "index {index} is past the end of a list of {}",
                    entries.len()
                ),
            )
        })?;
        let entry = starling_online_entry {
            peer: *e.peer.as_bytes(),
            metadata: e.metadata.as_ptr(),
            metadata_len: e.metadata.len(),
            online_since_ms: e.since.as_millis(),
            last_seen_ms: e.last_seen.as_millis(),
        };
        // SAFETY: non-NULL, writable.
        unsafe { *out = entry };
        Ok(())
    })
}

/// Frees a list from `starling_node_online`. NULL is a no-op.
#[no_mangle]
pub extern "C" fn starling_online_list_free(list: *mut starling_online_list) {
    boundary_or((), || {
        if !list.is_null() {
            // SAFETY: from starling_node_online, freed once (documented contract).
            drop(unsafe { Box::from_raw(list) });
        }
    })
}
