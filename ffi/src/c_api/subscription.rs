//! `starling_subscription`: a topic's messages and presence changes pushed to C callbacks.
//!
//! The Rust [`Subscription`] is pull-based; here each subscription gets one delivery
//! thread that waits for its next item and calls the host's callbacks. One thread per
//! subscription keeps the rules simple to state: calls for one subscription never overlap
//! and come in queue order; a slow callback delays only its own subscription; callbacks
//! never run on the network threads, so they may call back into the library (publish,
//! free) without deadlock.

use std::cell::Cell;
use std::ffi::c_void;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use starling_core::node::{block_on, Item, OfflineReason, PresenceChange, Subscription};
use tokio::sync::Notify;

use super::node::{node_ref, starling_node};
use super::{boundary, boundary_or, need, starling_result, topic, Fail};

/// A message delivered to `on_message`. Every pointer in it is valid only during the
/// call: copy what you keep.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct starling_message {
    /// The topic's 32-byte id (see `starling_topic_id`).
    pub topic: [u8; 32],
    /// The author's 32-byte id: who signed the message (never the neighbour that
    /// forwarded it).
    pub author: [u8; 32],
    /// The message id (as in the author's `starling_receipt.id`).
    pub id: [u8; 32],
    /// The author's sequence number on this topic; messages of one author arrive in
    /// increasing order.
    pub seq: u64,
    /// The author's timestamp, ms since the Unix epoch.
    pub issued_ms: u64,
    /// The payload (not NUL-terminated; may be NULL when `payload_len` is 0).
    pub payload: *const u8,
    /// Length of `payload` in bytes.
    pub payload_len: usize,
    /// Hops from the author (1: from the author directly).
    pub hops: u16,
}

/// What happened to a peer's presence.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum starling_presence_change {
    /// The peer came online.
    Online = 0,
    /// The peer's metadata changed.
    Updated = 1,
    /// The peer went offline: it announced leaving.
    OfflineLeft = 2,
    /// The peer went offline: its record expired without refresh.
    OfflineExpired = 3,
    /// The peer went offline: a failure detector declared it dead (see `reporter`).
    OfflineFailed = 4,
}

/// A presence change delivered to `on_presence`. Pointers are valid only during the call.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct starling_presence_event {
    /// The topic's 32-byte id.
    pub topic: [u8; 32],
    /// Whose presence changed.
    pub peer: [u8; 32],
    /// What changed.
    pub change: starling_presence_change,
    /// For `STARLING_PRESENCE_CHANGE_OFFLINE_FAILED`: who detected the failure; all zero
    /// otherwise.
    pub reporter: [u8; 32],
    /// The peer's metadata (its last known metadata when offline); not NUL-terminated,
    /// may be NULL when `metadata_len` is 0.
    pub metadata: *const u8,
    /// Length of `metadata` in bytes.
    pub metadata_len: usize,
}

/// The callbacks of a subscription; every function pointer may be NULL (that kind of
/// item is then skipped). `starling_node_subscribe` copies the struct.
///
/// Threading: all callbacks of one subscription are called on that subscription's own
/// delivery thread (named `starling-deliver`), never on the caller's thread and never on
/// the node's network threads. Calls for one subscription never overlap and arrive in
/// order; callbacks of different subscriptions may run at the same time on different
/// threads. A callback should return quickly: while it runs, that subscription's items
/// queue up (up to the configured queue size; beyond it the oldest are dropped and
/// `on_lagged` says how many). A callback may call any `starling_*` function, including
/// `starling_node_publish` on the same node and `starling_subscription_free` on its own
/// subscription.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct starling_callbacks {
    /// Passed unchanged as the first argument of every callback.
    pub userdata: *mut c_void,
    /// A message arrived. The message and everything it points to are valid only during
    /// the call.
    pub on_message: Option<unsafe extern "C" fn(*mut c_void, *const starling_message)>,
    /// A peer's presence on the topic changed. Valid only during the call.
    pub on_presence: Option<unsafe extern "C" fn(*mut c_void, *const starling_presence_event)>,
    /// The callbacks fell behind: this many older items were dropped before the next one.
    pub on_lagged: Option<unsafe extern "C" fn(*mut c_void, u64)>,
    /// Called exactly once, after the last call of any other callback, when no callback
    /// of this subscription will ever run again: when the subscription is freed or its
    /// node shuts down. Release `userdata` here. Not called if
    /// `starling_node_subscribe` fails.
    pub release: Option<unsafe extern "C" fn(*mut c_void)>,
}

/// The callbacks moved to the delivery thread.
struct Callbacks(starling_callbacks);
// SAFETY: the header documents that the callbacks and userdata are used from the
// delivery thread; the host agrees to that by subscribing.
unsafe impl Send for Callbacks {}

thread_local! {
    /// Set on delivery threads: waiting for a delivery thread from one would deadlock.
    static ON_DELIVERY_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// State shared by a subscription's handle, its delivery thread and its node.
pub(crate) struct SubShared {
    stop: AtomicBool,
    wake: Notify,
    finished: Mutex<bool>,
    finished_cv: Condvar,
}

impl SubShared {
    /// Asks the delivery thread to stop after the current callback.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        // A stored permit: the thread sees it even if it is not waiting yet.
        self.wake.notify_one();
    }

    fn is_finished(&self) -> bool {
        *self.finished.lock()
    }

    /// Waits until the delivery thread has called `release` — except on a delivery
    /// thread (inside a callback), where waiting could deadlock: there the thread stops
    /// on its own after its current callback.
    pub(crate) fn wait_finished(&self) {
        if ON_DELIVERY_THREAD.with(Cell::get) {
            return;
        }
        let mut done = self.finished.lock();
        while !*done {
            self.finished_cv.wait(&mut done);
        }
    }
}

/// A subscription (opaque): from `starling_node_subscribe`, freed with
/// `starling_subscription_free`.
pub struct starling_subscription {
    shared: Arc<SubShared>,
    thread: Option<JoinHandle<()>>,
}

/// The next item, or `None` when stopped or the subscription ended.
fn next_item(sub: &Subscription, shared: &SubShared) -> Option<Item> {
    if shared.stop.load(Ordering::Acquire) {
        return None;
    }
    let mut stopped = pin!(shared.wake.notified());
    let mut next = pin!(sub.next());
    // The delivery thread has no runtime; it waits without a deadline.
    block_on(
        poll_fn(|cx| {
            if stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            next.as_mut().poll(cx)
        }),
        None,
    )
    .flatten()
}

fn dispatch(cbs: &starling_callbacks, item: Item) {
    match item {
        Item::Message(m) => {
            if let Some(f) = cbs.on_message {
                let msg = starling_message {
                    topic: *m.topic.as_bytes(),
                    author: *m.author.as_bytes(),
                    id: *m.id.as_bytes(),
                    seq: m.seq,
                    issued_ms: m.issued_ms,
                    payload: m.payload.as_ptr(),
                    payload_len: m.payload.len(),
                    hops: m.hops,
                };
                // SAFETY: the host's callback, called as documented; `msg` outlives it.
                unsafe { f(cbs.userdata, &msg) };
            }
        }
        Item::Presence(p) => {
            if let Some(f) = cbs.on_presence {
                let mut reporter = [0u8; 32];
                let change = match &p.change {
                    PresenceChange::Online => starling_presence_change::Online,
                    PresenceChange::Updated => starling_presence_change::Updated,
                    PresenceChange::Offline(OfflineReason::Left) => {
                        starling_presence_change::OfflineLeft
                    }
                    PresenceChange::Offline(OfflineReason::Expired) => {
                        starling_presence_change::OfflineExpired
                    }
                    PresenceChange::Offline(OfflineReason::Failed { reporter: r }) => {
                        reporter = *r.as_bytes();
                        starling_presence_change::OfflineFailed
                    }
                };
                let event = starling_presence_event {
                    topic: *p.topic.as_bytes(),
                    peer: *p.peer.as_bytes(),
                    change,
                    reporter,
                    metadata: p.metadata.as_ptr(),
                    metadata_len: p.metadata.len(),
                };
                // SAFETY: as above.
                unsafe { f(cbs.userdata, &event) };
            }
        }
        Item::Lagged(n) => {
            if let Some(f) = cbs.on_lagged {
                // SAFETY: as above.
                unsafe { f(cbs.userdata, n) };
            }
        }
    }
}

/// The delivery thread: calls back until stopped or the subscription ends, then
/// unsubscribes, calls `release` once and marks itself finished.
fn deliver(sub: Subscription, cbs: Callbacks, shared: Arc<SubShared>) {
    ON_DELIVERY_THREAD.with(|f| f.set(true));
    let cbs = cbs.0;
    // The callbacks are C and cannot unwind; this catches a panic of our own so that
    // `release` still runs exactly once.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        while let Some(item) = next_item(&sub, &shared) {
            dispatch(&cbs, item);
        }
    }));
    drop(sub);
    if let Some(release) = cbs.release {
        // SAFETY: the host's callback, called exactly once as documented.
        unsafe { release(cbs.userdata) };
    }
    *shared.finished.lock() = true;
    shared.finished_cv.notify_all();
}

/// Subscribes to the topic named `(topic, topic_len)` (UTF-8, 1 to 255 bytes), joining
/// its overlay, and writes the subscription to `*out`. From now on the callbacks of
/// `*callbacks` (copied) receive the topic's messages, presence changes and lag reports
/// on the subscription's delivery thread (see `starling_callbacks` for the threading
/// rules). Several subscriptions to one topic each get every item.
///
/// On failure nothing is written, no callback is ever called (not even `release`), and
/// `userdata` remains the caller's.
/// Errors: `NULL_PARAMETER`, `INVALID_TOPIC`, `TOO_MANY_TOPICS`, `CLOSED`, `TIMEOUT`,
/// `RUNTIME` (no thread could be started).
#[no_mangle]
pub extern "C" fn starling_node_subscribe(
    node: *const starling_node,
    topic_name: *const u8,
    topic_len: usize,
    callbacks: *const starling_callbacks,
    out: *mut *mut starling_subscription,
) -> starling_result {
    boundary(|| {
        // SAFETY: documented contract.
        let handle = unsafe { node_ref(node) }?;
        let node = handle.open()?;
        // SAFETY: documented contract.
        let topic = unsafe { topic(topic_name, topic_len) }?;
        need(callbacks, "callbacks")?;
        need(out, "out")?;
        // SAFETY: non-NULL, readable (documented contract); the struct is Copy.
        let cbs = Callbacks(unsafe { *callbacks });
        let sub = node.subscribe(topic)?;
        let shared = Arc::new(SubShared {
            stop: AtomicBool::new(false),
            wake: Notify::new(),
            finished: Mutex::new(false),
            finished_cv: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("starling-deliver".to_owned())
            .spawn(move || deliver(sub, cbs, for_thread))
            .map_err(|e| {
                Fail::new(
                    starling_result::Runtime,
                    format!("cannot start the delivery thread: {e}"),
                )
            })?;
        {
            let mut subs = handle.subs.lock();
            subs.retain(|s| !s.is_finished());
            subs.push(Arc::clone(&shared));
        }
        // A shutdown that ran between `open` and the push above missed this one.
        if handle.open().is_err() {
            shared.stop();
        }
        let sub = Box::new(starling_subscription {
            shared,
            thread: Some(thread),
        });
        // SAFETY: non-NULL, writable.
        unsafe { *out = Box::into_raw(sub) };
        Ok(())
    })
}

/// Unsubscribes and frees the subscription. NULL is a no-op.
///
/// Outside a callback: waits until a callback that is running returns; when this returns,
/// no callback of the subscription runs or will run, and `release` has been called.
/// Inside a callback (of this or any other subscription): does not wait; the delivery
/// thread stops once its current callback returns and then calls `release`.
#[no_mangle]
pub extern "C" fn starling_subscription_free(sub: *mut starling_subscription) {
    boundary_or((), || {
        if sub.is_null() {
            return;
        }
        // SAFETY: from starling_node_subscribe, freed once (documented contract).
        let mut sub = unsafe { Box::from_raw(sub) };
        sub.shared.stop();
        if let Some(thread) = sub.thread.take() {
            if ON_DELIVERY_THREAD.with(Cell::get) {
                // Detached: it finishes on its own after the current callback.
                drop(thread);
            } else {
                let _ = thread.join();
            }
        }
    })
}

/// Writes to `*active` whether the subscription still delivers: false once its node shut
/// down (its `release` has then been called). Errors: `NULL_PARAMETER`.
#[no_mangle]
pub extern "C" fn starling_subscription_is_active(
    sub: *const starling_subscription,
    active: *mut bool,
) -> starling_result {
    boundary(|| {
        need(sub, "sub")?;
        need(active, "active")?;
        // SAFETY: a live subscription (documented contract).
        let finished = unsafe { &*sub }.shared.is_finished();
        // SAFETY: non-NULL, writable.
        unsafe { *active = !finished };
        Ok(())
    })
}
