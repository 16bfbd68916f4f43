//! Listener traits (implemented by the host language) and their delivery threads.
//!
//! All listeners of one topic on one node share a "hub": one core subscription read by
//! one delivery thread, which calls the listeners in registration order. Host callbacks
//! therefore never run on the node's network workers, and a slow callback only lets its
//! topic's queue overflow (reported to the lag listeners). The hub keeps the topic's
//! online set as its own items say it, so a presence listener added to a running hub
//! starts, like a subscription, with the peers already online.
//!
//! Cancelling a handle guarantees that its listener is not called after `cancel` returns,
//! except when `cancel` runs inside another listener's callback (on a delivery thread):
//! there it does not wait for a call already under way on a different thread, because
//! two such threads waiting for each other would deadlock.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use parking_lot::{Mutex, ReentrantMutex};
use starling_core::node::{self as core, Item, RecvError};

use super::types::{LogLevel, LogRecord, Message, PresenceChange, PresenceEvent, StarlingError};

/// Receives the messages of a topic.
#[uniffi::export(with_foreign)]
pub trait MessageListener: Send + Sync {
    /// One or more messages, oldest first (batched when several are waiting). Runs on the
    /// topic's delivery thread; calls never overlap for one topic. It may call back into
    /// the library.
    fn on_messages(&self, messages: Vec<Message>);
}

/// Receives the presence changes of a topic.
#[uniffi::export(with_foreign)]
pub trait PresenceListener: Send + Sync {
    /// Someone came online, changed metadata or went offline. The first calls name the
    /// peers already online when the listener was added (Online events). Same thread rules
    /// as [`MessageListener::on_messages`].
    fn on_presence(&self, event: PresenceEvent);
}

/// Told when a topic's listeners were too slow and items were dropped.
#[uniffi::export(with_foreign)]
pub trait LagListener: Send + Sync {
    /// `dropped` items of `topic` (the oldest) were lost before the next delivery.
    fn on_lagged(&self, topic: String, dropped: u64);
}

/// Receives the library's log records.
#[uniffi::export(with_foreign)]
pub trait LogListener: Send + Sync {
    /// One record. Runs on a logging thread of the library, never on the thread that
    /// logged; records arriving faster than it returns are dropped beyond 4,096 waiting.
    fn on_log(&self, record: LogRecord);
}

thread_local! {
    /// Set on this library's delivery threads (see the module docs on `cancel`).
    static ON_DELIVERY_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Whether a listener may still be called, and a lock held while it is being called, so
/// that `close` can wait for a call under way.
struct Gate {
    open: AtomicBool,
    calling: ReentrantMutex<()>,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            open: AtomicBool::new(true),
            calling: ReentrantMutex::new(()),
        })
    }

    /// Runs `f` unless closed. A panic in `f` (a failing host callback) is contained so
    /// the delivery thread keeps serving the other listeners.
    fn call(&self, f: impl FnOnce()) {
        let _calling = self.calling.lock();
        if self.open.load(Ordering::SeqCst) && catch_unwind(AssertUnwindSafe(f)).is_err() {
            tracing::warn!("a listener callback failed (panicked); it stays registered");
        }
    }

    fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        if ON_DELIVERY_THREAD.with(Cell::get) {
            // Succeeds if this thread is the caller or nobody is; see the module docs.
            drop(self.calling.try_lock());
        } else {
            drop(self.calling.lock());
        }
    }
}

/// A registration with any of the `add_*_listener` calls.
pub(crate) enum Entry {
    Message(Arc<dyn MessageListener>),
    Presence(Arc<dyn PresenceListener>),
    Lag(Arc<dyn LagListener>),
}

/// The hubs of one node, by topic name.
pub(crate) type Hubs = Arc<Mutex<HashMap<String, Arc<Hub>>>>;

/// One registered listener of a hub.
struct Listener {
    id: u64,
    gate: Arc<Gate>,
    entry: Entry,
    /// A presence listener not yet told who is already online; it gets no presence
    /// change before that replay (see [`Hub::catch_up`]).
    needs_replay: bool,
}

/// One topic's listeners and the delivery thread that feeds them.
pub(crate) struct Hub {
    topic: String,
    listeners: Mutex<Vec<Listener>>,
    next_id: AtomicU64,
    /// No listeners left (or the subscription ended): the thread stops.
    stopped: AtomicBool,
}

/// Most messages handed to one `on_messages` call.
pub(crate) const BATCH: usize = 256;
/// How often the delivery thread checks whether it should stop while idle.
const IDLE_POLL: Duration = Duration::from_millis(50);

impl Hub {
    /// Adds `entry` to `topic`'s hub, creating the hub (subscribing with `subscribe`) if
    /// there is none.
    pub(crate) fn register(
        hubs: &Hubs,
        topic: &str,
        entry: Entry,
        subscribe: impl FnOnce() -> Result<core::Subscription, core::Error>,
    ) -> Result<Arc<ListenerHandle>, StarlingError> {
        let mut map = hubs.lock();
        let (hub, new_sub) = match map.get(topic) {
            Some(hub) if !hub.stopped.load(Ordering::SeqCst) => (Arc::clone(hub), None),
            _ => {
                let hub = Arc::new(Hub {
                    topic: topic.to_owned(),
                    listeners: Mutex::new(Vec::new()),
                    next_id: AtomicU64::new(1),
                    stopped: AtomicBool::new(false),
                });
                (hub, Some(subscribe()?))
            }
        };
        let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
        let gate = Gate::new();
        let needs_replay = matches!(entry, Entry::Presence(_));
        hub.listeners.lock().push(Listener {
            id,
            gate: Arc::clone(&gate),
            entry,
            needs_replay,
        });
        if let Some(sub) = new_sub {
            // Started with its first listener in place, so that listener misses nothing.
            let thread_hub = Arc::clone(&hub);
            let thread_hubs = Arc::downgrade(hubs);
            std::thread::Builder::new()
                .name("starling-deliver".to_owned())
                .spawn(move || {
                    ON_DELIVERY_THREAD.with(|f| f.set(true));
                    thread_hub.run(sub);
                    thread_hub.stopped.store(true, Ordering::SeqCst);
                    if let Some(hubs) = thread_hubs.upgrade() {
                        let mut map = hubs.lock();
                        if map
                            .get(&thread_hub.topic)
                            .is_some_and(|h| Arc::ptr_eq(h, &thread_hub))
                        {
                            map.remove(&thread_hub.topic);
                        }
                    }
                })
                .map_err(|e| {
                    StarlingError::new(
                        super::ErrorKind::Runtime,
                        format!("cannot start a delivery thread: {e}"),
                    )
                })?;
            map.insert(topic.to_owned(), Arc::clone(&hub));
        }
        drop(map);
        let hubs = Arc::clone(hubs);
        Ok(ListenerHandle::new(Box::new(move || {
            gate.close();
            let mut map = hubs.lock();
            let mut listeners = hub.listeners.lock();
            listeners.retain(|l| l.id != id);
            if listeners.is_empty() {
                // The thread drops the subscription (leaving the topic) within IDLE_POLL.
                hub.stopped.store(true, Ordering::SeqCst);
                if map.get(&hub.topic).is_some_and(|h| Arc::ptr_eq(h, &hub)) {
                    map.remove(&hub.topic);
                }
            }
        })))
    }

    fn run(&self, sub: core::Subscription) {
        let mut batch: Vec<Message> = Vec::new();
        // Who is online as of the items delivered so far: the subscription started with
        // the peers online then, and every change since has passed through here.
        let mut online = BTreeMap::new();
        while !self.stopped.load(Ordering::SeqCst) {
            self.catch_up(&online);
            let first = match sub.recv_timeout(IDLE_POLL) {
                Ok(item) => item,
                Err(RecvError::Empty) => continue,
                Err(RecvError::Closed) => return,
            };
            // Take what is waiting, handing consecutive messages over as one batch.
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Item::Message(m) => {
                        batch.push(Message::from_core(m, &self.topic));
                        if batch.len() < BATCH {
                            next = sub.try_recv().ok();
                        }
                        if !matches!(next, Some(Item::Message(_))) {
                            self.deliver_messages(std::mem::take(&mut batch));
                        }
                    }
                    Item::Presence(e) => {
                        self.deliver_presence(
                            PresenceEvent::from_core(e, &self.topic),
                            &mut online,
                        );
                        next = sub.try_recv().ok();
                    }
                    Item::Lagged(n) => {
                        self.deliver_lag(n);
                        next = sub.try_recv().ok();
                    }
                }
            }
        }
    }

    /// The listeners of one kind, cloned so that callbacks run without the list locked
    /// (they may register or cancel listeners). Presence listeners still waiting for their
    /// replay are left out.
    fn targets<T>(&self, pick: impl Fn(&Entry) -> Option<T>) -> Vec<(Arc<Gate>, T)> {
        self.listeners
            .lock()
            .iter()
            .filter(|l| !l.needs_replay)
            .filter_map(|l| pick(&l.entry).map(|t| (Arc::clone(&l.gate), t)))
            .collect()
    }

    /// Tells each presence listener registered since the last call who is `online` (one
    /// Online event per peer), as a new core subscription would: a listener joining a hub
    /// that other listeners opened earlier would otherwise miss the peers already there.
    fn catch_up(&self, online: &BTreeMap<String, Vec<u8>>) {
        let fresh: Vec<_> = self
            .listeners
            .lock()
            .iter_mut()
            .filter(|l| l.needs_replay)
            .filter_map(|l| {
                l.needs_replay = false;
                match &l.entry {
                    Entry::Presence(p) => Some((Arc::clone(&l.gate), Arc::clone(p))),
                    _ => None,
                }
            })
            .collect();
        for (gate, listener) in fresh {
            for (peer, metadata) in online {
                let event = PresenceEvent {
                    topic: self.topic.clone(),
                    peer: peer.clone(),
                    change: PresenceChange::Online,
                    metadata: metadata.clone(),
                };
                gate.call(|| listener.on_presence(event));
            }
        }
    }

    fn deliver_messages(&self, messages: Vec<Message>) {
        let targets = self.targets(|e| match e {
            Entry::Message(l) => Some(Arc::clone(l)),
            _ => None,
        });
        let n = targets.len();
        let mut messages = Some(messages);
        for (i, (gate, listener)) in targets.into_iter().enumerate() {
            // The last listener gets the batch itself, the others a copy.
            let batch = if i + 1 == n {
                messages.take().unwrap_or_default()
            } else {
                messages.clone().unwrap_or_default()
            };
            gate.call(|| listener.on_messages(batch));
        }
    }

    fn deliver_presence(&self, event: PresenceEvent, online: &mut BTreeMap<String, Vec<u8>>) {
        // New listeners first hear the state before this event; any registering after this
        // point are left out of `targets` and replayed a state that includes it.
        self.catch_up(online);
        for (gate, listener) in self.targets(|e| match e {
            Entry::Presence(l) => Some(Arc::clone(l)),
            _ => None,
        }) {
            gate.call(|| listener.on_presence(event.clone()));
        }
        match event.change {
            PresenceChange::Offline { .. } => online.remove(&event.peer),
            PresenceChange::Online | PresenceChange::Updated => {
                online.insert(event.peer, event.metadata)
            }
        };
    }

    fn deliver_lag(&self, dropped: u64) {
        for (gate, listener) in self.targets(|e| match e {
            Entry::Lag(l) => Some(Arc::clone(l)),
            _ => None,
        }) {
            gate.call(|| listener.on_lagged(self.topic.clone(), dropped));
        }
    }
}

type Cancel = Box<dyn FnOnce() + Send>;

/// A listener registration. `cancel` (or dropping the handle) stops delivery: once
/// `cancel` returns the listener is not called again (see the module docs for the one
/// exception, inside another listener's callback).
#[derive(uniffi::Object)]
pub struct ListenerHandle {
    cancel: Mutex<Option<Cancel>>,
}

impl ListenerHandle {
    fn new(cancel: Cancel) -> Arc<ListenerHandle> {
        Arc::new(ListenerHandle {
            cancel: Mutex::new(Some(cancel)),
        })
    }
}

#[uniffi::export]
impl ListenerHandle {
    /// Stops delivery to this listener (idempotent). When it was the last listener of its
    /// topic, the node leaves the topic unless a subscription holds it.
    pub fn cancel(&self) {
        let cancel = self.cancel.lock().take();
        if let Some(cancel) = cancel {
            cancel();
        }
    }

    /// Whether `cancel` was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.lock().is_none()
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.get_mut().take() {
            cancel();
        }
    }
}

/// The log listener's records waiting for its thread.
const LOG_QUEUE: usize = 4096;
/// Which `set_log_listener` call owns the foreign sink slot now.
static LOG_GENERATION: AtomicU64 = AtomicU64::new(0);
static LOG_SLOT: Mutex<()> = Mutex::new(());

/// Sends the library's log records at `level` and more severe to `listener` (replacing an
/// earlier log listener) until the handle is cancelled. Records are handed over on a
/// logging thread of the library. Fails if another `tracing` subscriber already owns the
/// process (possible only when Rust code in the same process installed one).
#[uniffi::export]
pub fn set_log_listener(
    level: LogLevel,
    listener: Arc<dyn LogListener>,
) -> Result<Arc<ListenerHandle>, StarlingError> {
    let _slot = LOG_SLOT.lock();
    let generation = LOG_GENERATION.fetch_add(1, Ordering::SeqCst) + 1;
    let (tx, rx) = mpsc::sync_channel::<LogRecord>(LOG_QUEUE);
    let gate = Gate::new();
    let thread_gate = Arc::clone(&gate);
    std::thread::Builder::new()
        .name("starling-log".to_owned())
        .spawn(move || {
            ON_DELIVERY_THREAD.with(|f| f.set(true));
            // Ends when the sink (the only sender) is replaced or removed.
            while let Ok(record) = rx.recv() {
                thread_gate.call(|| listener.on_log(record));
            }
        })
        .map_err(|e| {
            StarlingError::new(
                super::ErrorKind::Runtime,
                format!("cannot start the log thread: {e}"),
            )
        })?;
    let tx = Mutex::new(tx);
    let sink: crate::logging::SinkFn = Arc::new(move |r: &crate::logging::LogRecord<'_>| {
        // Full: the record is dropped rather than blocking the thread that logged.
        let _ = tx.lock().try_send(LogRecord {
            level: LogLevel::from_core(r.level),
            target: r.target.to_owned(),
            message: r.message.to_owned(),
        });
    });
    if !crate::logging::set_sink(
        crate::logging::SinkSlot::Foreign,
        Some((level.to_core(), sink)),
    ) {
        crate::logging::set_sink(crate::logging::SinkSlot::Foreign, None);
        return Err(StarlingError::new(
            super::ErrorKind::Internal,
            "another tracing subscriber owns this process; logs cannot be forwarded",
        ));
    }
    Ok(ListenerHandle::new(Box::new(move || {
        gate.close();
        let _slot = LOG_SLOT.lock();
        // A newer listener replaced this one: leave it alone.
        if LOG_GENERATION.load(Ordering::SeqCst) == generation {
            crate::logging::set_sink(crate::logging::SinkSlot::Foreign, None);
        }
    })))
}
