//! `starling_set_logger`: the library's log records forwarded to a C callback (through
//! the shared sink of [`crate::logging`]).

use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::{boundary, starling_result, Fail};
use crate::logging::{self, LogLevel, LogRecord, SinkSlot};

/// Severity of a log record, most severe first; as a logger's level, the most verbose
/// records it gets.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum starling_log_level {
    /// No records (as a logger level: remove the logger).
    Off = 0,
    /// Failures the host should look at.
    Error = 1,
    /// Something unexpected that the node handled.
    Warn = 2,
    /// Lifecycle: start, join, shutdown.
    Info = 3,
    /// Protocol decisions.
    Debug = 4,
    /// Every message and timer.
    Trace = 5,
}

/// One log record, valid only during the callback.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct starling_log_record {
    /// Its severity.
    pub level: starling_log_level,
    /// The module that logged (e.g. `"starling_core::net::driver"`), NUL-terminated.
    pub target: *const c_char,
    /// Length of `target` without the NUL.
    pub target_len: usize,
    /// The message and its fields (`key=value`), NUL-terminated UTF-8.
    pub message: *const c_char,
    /// Length of `message` without the NUL.
    pub message_len: usize,
}

/// A log callback: `userdata` as given to `starling_set_logger`, and the record.
pub type starling_log_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, record: *const starling_log_record)>;

/// The installed C logger; `alive` is write-locked to retire it, which waits for calls
/// in flight.
struct CLogger {
    callback: unsafe extern "C" fn(*mut c_void, *const starling_log_record),
    userdata: *mut c_void,
    alive: RwLock<bool>,
}
// SAFETY: the header documents that the callback is called from any thread.
unsafe impl Send for CLogger {}
// SAFETY: as above.
unsafe impl Sync for CLogger {}

static CURRENT: Mutex<Option<Arc<CLogger>>> = Mutex::new(None);

thread_local! {
    /// Set while this thread runs the C log callback.
    static IN_LOGGER: Cell<bool> = const { Cell::new(false) };
}

fn to_c(level: LogLevel) -> starling_log_level {
    match level {
        LogLevel::Off => starling_log_level::Off,
        LogLevel::Error => starling_log_level::Error,
        LogLevel::Warn => starling_log_level::Warn,
        LogLevel::Info => starling_log_level::Info,
        LogLevel::Debug => starling_log_level::Debug,
        LogLevel::Trace => starling_log_level::Trace,
    }
}

fn forward(logger: &CLogger, record: &LogRecord<'_>) {
    let alive = logger.alive.read();
    if !*alive {
        return;
    }
    // NUL-terminated copies (C expects them; a record's strings are Rust slices). An
    // interior NUL would cut the string short, so it is replaced.
    let target = format!("{}\0", record.target.replace('\0', " "));
    let message = format!("{}\0", record.message.replace('\0', " "));
    let c = starling_log_record {
        level: to_c(record.level),
        target: target.as_ptr().cast(),
        target_len: target.len() - 1,
        message: message.as_ptr().cast(),
        message_len: message.len() - 1,
    };
    IN_LOGGER.with(|f| f.set(true));
    // SAFETY: the host's callback, called as documented; the strings outlive the call.
    unsafe { (logger.callback)(logger.userdata, &c) };
    IN_LOGGER.with(|f| f.set(false));
}

/// Installs `callback` to receive the library's log records at `level` and more severe
/// (`level` is a `starling_log_level`), replacing any earlier logger. `callback` NULL or
/// `level` `STARLING_LOG_LEVEL_OFF` removes the logger. Nothing is logged anywhere until
/// a logger is installed.
///
/// The callback runs on whichever thread logged (often a network thread), possibly on
/// several threads at once: it must be thread-safe and quick, and it must not block on
/// the node. Log calls made by the library from inside the callback are dropped (no
/// recursion). After this function returns (outside the callback), the previous callback
/// is not running and will not be called again, so its `userdata` may be freed.
///
/// Errors: `INVALID_ARGUMENT` (unknown level), `INTERNAL` (the process already has a
/// global Rust `tracing` subscriber, so records cannot be captured).
#[no_mangle]
pub extern "C" fn starling_set_logger(
    level: u32,
    callback: starling_log_callback,
    userdata: *mut c_void,
) -> starling_result {
    boundary(|| {
        let level = u8::try_from(level)
            .ok()
            .and_then(LogLevel::from_u8)
            .ok_or_else(|| {
                Fail::new(
                    starling_result::InvalidArgument,
                    format!("unknown log level {level} (0 = off to 5 = trace)"),
                )
            })?;
        let new = match callback {
            Some(callback) if level != LogLevel::Off => Some(Arc::new(CLogger {
                callback,
                userdata,
                alive: RwLock::new(true),
            })),
            _ => None,
        };
        let sink = new.as_ref().map(|logger| {
            let logger = Arc::clone(logger);
            let f: logging::SinkFn = Arc::new(move |r: &LogRecord<'_>| forward(&logger, r));
            (level, f)
        });
        let old = std::mem::replace(&mut *CURRENT.lock(), new);
        let installed = logging::set_sink(SinkSlot::C, sink);
        if let Some(old) = old {
            // Waiting from inside the callback would wait for ourselves.
            if !IN_LOGGER.with(Cell::get) {
                *old.alive.write() = false;
            } else if let Some(mut alive) = old.alive.try_write() {
                *alive = false;
            }
        }
        if !installed {
            return Err(Fail::new(
                starling_result::Internal,
                "another tracing subscriber is already installed in this process",
            ));
        }
        Ok(())
    })
}
