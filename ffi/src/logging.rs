//! Forwarding the core's `tracing` events to the host: one process-wide subscriber with two
//! sink slots, one for the C ABI (`starling_set_logger`) and one for the uniffi log
//! listener. Both adapters share this so that neither can replace the other's sink and the
//! global dispatcher is installed at most once, and only when a host asks for logs.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// Severity of a log record, most severe first. `Off` as a sink's level disables it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum LogLevel {
    /// No records.
    Off = 0,
    /// Failures the host should look at.
    Error = 1,
    /// Something unexpected that the node handled.
    Warn = 2,
    /// Lifecycle: start, join, shutdown.
    Info = 3,
    /// Protocol decisions, useful when debugging.
    Debug = 4,
    /// Every message and timer.
    Trace = 5,
}

impl LogLevel {
    /// The level for a raw number (as the C ABI passes it); `None` if out of range.
    pub fn from_u8(raw: u8) -> Option<LogLevel> {
        Some(match raw {
            0 => LogLevel::Off,
            1 => LogLevel::Error,
            2 => LogLevel::Warn,
            3 => LogLevel::Info,
            4 => LogLevel::Debug,
            5 => LogLevel::Trace,
            _ => return None,
        })
    }

    fn of(level: &Level) -> LogLevel {
        match *level {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            Level::DEBUG => LogLevel::Debug,
            Level::TRACE => LogLevel::Trace,
        }
    }
}

/// One log record as handed to a sink; borrowed for the duration of the call.
pub struct LogRecord<'a> {
    /// Severity.
    pub level: LogLevel,
    /// The module that logged, e.g. `starling_core::net::driver`.
    pub target: &'a str,
    /// The message followed by its fields as `key=value`.
    pub message: &'a str,
}

/// A host's log callback. It runs on whichever thread logged (often a network worker), so
/// it must be quick and thread-safe.
pub type SinkFn = Arc<dyn Fn(&LogRecord<'_>) + Send + Sync>;

/// Which adapter owns a sink slot.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SinkSlot {
    /// `starling_set_logger` (C ABI).
    C = 0,
    /// The uniffi log listener (Swift, Kotlin, Python).
    Foreign = 1,
}

static SINKS: RwLock<[Option<(LogLevel, SinkFn)>; 2]> = RwLock::new([None, None]);
/// The most verbose level any sink wants, so that disabled events cost one atomic load.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Off as u8);
static INSTALLED: once_cell::sync::OnceCell<bool> = once_cell::sync::OnceCell::new();

thread_local! {
    /// Set while a sink runs on this thread: a sink that calls into the library (which may
    /// log) must not recurse into itself.
    static IN_SINK: Cell<bool> = const { Cell::new(false) };
}

/// Installs (`Some`) or removes (`None`) the sink of `slot`, replacing any earlier one.
/// Returns false if this library's global `tracing` dispatcher could not be installed
/// because something else in the process set it first (a Rust host linking the rlib).
pub fn set_sink(slot: SinkSlot, sink: Option<(LogLevel, SinkFn)>) -> bool {
    let installed = *INSTALLED.get_or_init(|| {
        tracing::subscriber::set_global_default(HostSubscriber {
            next_span: AtomicU64::new(1),
        })
        .is_ok()
    });
    let mut sinks = SINKS.write();
    sinks[slot as usize] = sink.filter(|(level, _)| *level != LogLevel::Off);
    let max = sinks.iter().flatten().map(|(level, _)| *level).max();
    MAX_LEVEL.store(max.unwrap_or(LogLevel::Off) as u8, Ordering::Relaxed);
    drop(sinks);
    // Callsites cache their interest; make them ask again under the new level.
    tracing::callsite::rebuild_interest_cache();
    installed
}

/// The process-wide subscriber: filters by the sinks' levels and formats each event once.
/// It does not track spans (the hosts get flat records), so span ids only need to be
/// non-zero and distinct.
struct HostSubscriber {
    next_span: AtomicU64,
}

impl Subscriber for HostSubscriber {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Levels change at run time: decide per event in `enabled`.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event()
            && LogLevel::of(metadata.level()) as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed).max(1))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        if IN_SINK.with(Cell::get) {
            return;
        }
        let level = LogLevel::of(event.metadata().level());
        let sinks: Vec<SinkFn> = SINKS
            .read()
            .iter()
            .flatten()
            .filter(|(max, _)| level <= *max)
            .map(|(_, sink)| Arc::clone(sink))
            .collect();
        if sinks.is_empty() {
            return;
        }
        let mut text = MessageText::default();
        event.record(&mut text);
        let record = LogRecord {
            level,
            target: event.metadata().target(),
            message: &text.0,
        };
        IN_SINK.with(|flag| flag.set(true));
        for sink in sinks {
            sink(&record);
        }
        IN_SINK.with(|flag| flag.set(false));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Collects an event's message and then its other fields as ` key=value`.
#[derive(Default)]
struct MessageText(String);

impl Visit for MessageText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // Writing to a String cannot fail.
        let _ = if field.name() == "message" {
            if self.0.is_empty() {
                write!(self.0, "{value:?}")
            } else {
                let fields = std::mem::take(&mut self.0);
                write!(self.0, "{value:?}{fields}")
            }
        } else {
            write!(self.0, " {}={value:?}", field.name())
        };
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[test]
    fn sinks_get_records_at_their_level_and_stop_when_removed() {
        let seen: Arc<Mutex<Vec<(LogLevel, String)>>> = Arc::default();
        let sink_seen = Arc::clone(&seen);
        let sink: SinkFn = Arc::new(move |record: &LogRecord<'_>| {
            sink_seen
                .lock()
                .push((record.level, record.message.to_string()));
        });
        assert!(set_sink(SinkSlot::Foreign, Some((LogLevel::Info, sink))));
        tracing::info!(peer = "ab12", "node started");
        tracing::debug!("too verbose for this sink");
        set_sink(SinkSlot::Foreign, None);
        tracing::warn!("after removal");
        let seen = seen.lock();
        assert_eq!(
            *seen,
            vec![(LogLevel::Info, "node started peer=ab12".to_string())]
        );
    }
}
