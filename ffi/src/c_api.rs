//! The C ABI (`starling_*`): a thin adapter over [`starling_core::node::Node`] with the
//! conventions of docs/C-API.md (modelled on rustls-ffi). The header `include/starling.h`
//! is generated from this module by cbindgen (`ffi/cbindgen.toml`); the doc comments here
//! become the header's comments, so they are written for C programmers.
//!
//! Every `extern "C"` function runs its body inside [`boundary`] (a panic becomes
//! `STARLING_RESULT_PANIC`), checks every pointer, writes out-parameters only on success
//! and records a message for `starling_last_error_message` on failure.
#![allow(non_camel_case_types)]
// The C ABI takes raw pointers by design; every one is checked before use and the
// contract (valid for the call, NUL-terminated, ...) is written in the header comments.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use starling_core::node::Error as NodeError;
use starling_core::wire::TopicId;

mod admission;
mod config;
mod logger;
mod node;
mod subscription;

pub use admission::*;
pub use config::*;
pub use logger::*;
pub use node::*;
pub use subscription::*;

/// Major version of libstarling (the `MAJOR` of `MAJOR.MINOR.PATCH`).
pub const STARLING_VERSION_MAJOR: u32 = 0;
/// Minor version of libstarling.
pub const STARLING_VERSION_MINOR: u32 = 1;
/// Patch version of libstarling.
pub const STARLING_VERSION_PATCH: u32 = 0;
/// Longest topic name in bytes.
pub const STARLING_TOPIC_MAX_LEN: usize = 255;
/// Buffer size that always holds a peer id in hex with its terminating NUL (64 + 1).
pub const STARLING_PEER_ID_HEX_SIZE: usize = 65;
/// Buffer size that always holds a socket address (`"[v6%scope]:port"`) with its NUL.
pub const STARLING_ADDRESS_SIZE: usize = 96;
/// Buffer size that always holds a contact string (`"<peer id hex>@<address>"`) with its
/// NUL.
pub const STARLING_CONTACT_SIZE: usize = 160;

/// The result of every fallible call. The numbers are stable and never reused; new codes
/// may be added, so treat unknown values as failures. `starling_result_name` gives a
/// code's name and `starling_last_error_message` the details of the last failure on the
/// calling thread.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum starling_result {
    /// Success.
    Ok = 0,
    /// A required pointer was NULL (or a buffer pointer was NULL with a non-zero length).
    NullParameter = 1,
    /// A value is out of range or malformed (e.g. a string that is not UTF-8, an index
    /// past the end of a list, an unknown log level).
    InvalidArgument = 2,
    /// The topic name is empty, longer than `STARLING_TOPIC_MAX_LEN` bytes, or not UTF-8.
    InvalidTopic = 3,
    /// A bind, advertise, bootstrap or join address cannot be parsed or resolved.
    InvalidAddress = 4,
    /// The configuration was rejected when the node started.
    InvalidConfig = 5,
    /// The identity key file cannot be read or created.
    Identity = 6,
    /// The network endpoint cannot be set up (e.g. the address is in use).
    Transport = 7,
    /// The node's threads cannot be started.
    Runtime = 8,
    /// The payload is larger than the node's `max_payload`.
    PayloadTooLarge = 9,
    /// The presence metadata is larger than 1 KiB.
    MetadataTooLarge = 10,
    /// The node is a member of too many topics.
    TooManyTopics = 11,
    /// The node is shut down: only `starling_node_free` and the getters of fixed values
    /// (id, addresses) still work.
    Closed = 12,
    /// The node did not answer within 10 s (overloaded or stuck).
    Timeout = 13,
    /// The output buffer is too small; nothing was written. The message of
    /// `starling_last_error_message` says how many bytes are needed, and the `*_SIZE`
    /// constants give sizes that always suffice.
    BufferTooSmall = 14,
    /// An error this version of the C API has no code for (details in the message).
    Internal = 15,
    /// The call would wait for the thread it is made on, so it was refused: a node call
    /// from inside an admission hook (see `starling_admission`).
    WouldDeadlock = 16,
    /// A panic inside the library was caught at the API boundary. The call had no effect
    /// that can be relied on; the process is not aborted.
    Panic = 100,
}

/// A failed call: its code and the message for `starling_last_error_message`.
#[derive(Debug)]
pub(crate) struct Fail {
    code: starling_result,
    message: String,
}

impl Fail {
    pub(crate) fn new(code: starling_result, message: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.into(),
        }
    }
}

impl From<NodeError> for Fail {
    fn from(e: NodeError) -> Fail {
        let code = match &e {
            NodeError::InvalidBootstrap { .. } | NodeError::InvalidBind { .. } => {
                starling_result::InvalidAddress
            }
            NodeError::InvalidConfig(_) => starling_result::InvalidConfig,
            NodeError::Identity(_) => starling_result::Identity,
            NodeError::Transport(_) => starling_result::Transport,
            NodeError::Runtime(_) => starling_result::Runtime,
            NodeError::PayloadTooLarge { .. } => starling_result::PayloadTooLarge,
            NodeError::MetadataTooLarge { .. } => starling_result::MetadataTooLarge,
            NodeError::TooManyTopics { .. } => starling_result::TooManyTopics,
            NodeError::Closed => starling_result::Closed,
            NodeError::Timeout(_) => starling_result::Timeout,
            _ => starling_result::Internal,
        };
        Fail::new(code, e.to_string())
    }
}

thread_local! {
    /// The message of the last failed call on this thread.
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(message: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// Runs an API body: catches panics, records the failure message, returns the code.
pub(crate) fn boundary(body: impl FnOnce() -> Result<(), Fail>) -> starling_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => starling_result::Ok,
        Ok(Err(fail)) => {
            set_last_error(fail.message);
            fail.code
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            set_last_error(format!("panic inside libstarling: {what}"));
            starling_result::Panic
        }
    }
}

/// Runs the body of a function that cannot report failure (`_free`, accessors): a panic
/// is caught and `fallback` returned.
pub(crate) fn boundary_or<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// `Err(NullParameter)` if `ptr` is NULL.
pub(crate) fn need<T>(ptr: *const T, what: &str) -> Result<(), Fail> {
    if ptr.is_null() {
        Err(Fail::new(
            starling_result::NullParameter,
            format!("{what} is NULL"),
        ))
    } else {
        Ok(())
    }
}

/// The bytes at `(ptr, len)`; NULL is allowed only with `len == 0`.
///
/// # Safety
/// `ptr` must point to `len` readable bytes that stay valid for `'a`.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], Fail> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Fail::new(
            starling_result::NullParameter,
            format!("{what} is NULL but its length is {len}"),
        ));
    }
    if len > isize::MAX as usize {
        return Err(Fail::new(
            starling_result::InvalidArgument,
            format!("{what}: length {len} is impossible"),
        ));
    }
    // SAFETY: non-NULL, length checked, validity is the caller's documented contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A NUL-terminated UTF-8 string.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn cstr<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Fail> {
    need(ptr, what)?;
    // SAFETY: non-NULL; NUL termination is the caller's documented contract.
    unsafe { CStr::from_ptr(ptr) }.to_str().map_err(|_| {
        Fail::new(
            starling_result::InvalidArgument,
            format!("{what} is not valid UTF-8"),
        )
    })
}

/// The topic id of the UTF-8 topic name at `(ptr, len)`.
///
/// # Safety
/// As for [`bytes`].
pub(crate) unsafe fn topic(ptr: *const u8, len: usize) -> Result<TopicId, Fail> {
    // SAFETY: forwarded contract.
    let raw = unsafe { bytes(ptr, len, "topic") }?;
    let bad = |why: &str| Err(Fail::new(starling_result::InvalidTopic, why.to_owned()));
    if raw.is_empty() {
        return bad("the topic name is empty");
    }
    if raw.len() > STARLING_TOPIC_MAX_LEN {
        return bad("the topic name is longer than 255 bytes");
    }
    match std::str::from_utf8(raw) {
        Ok(name) => Ok(TopicId::from_name(name)),
        Err(_) => bad("the topic name is not valid UTF-8"),
    }
}

/// Copies `s` and a NUL into `(buf, len)`; `*written` (if not NULL) gets `s.len()`.
/// Writes nothing on failure.
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes; `written` NULL or writable.
pub(crate) unsafe fn write_str(
    s: &str,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> Result<(), Fail> {
    need(buf, "buf")?;
    let needed = s.len() + 1;
    if len < needed {
        return Err(Fail::new(
            starling_result::BufferTooSmall,
            format!("the buffer has {len} bytes but {needed} are needed"),
        ));
    }
    // SAFETY: buf has at least `needed` writable bytes (caller's contract, checked len).
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), s.len());
        *buf.add(s.len()) = 0;
        if !written.is_null() {
            *written = s.len();
        }
    }
    Ok(())
}

/// The library's version as a static NUL-terminated string, e.g. `"0.1.0"` (the same as
/// the `STARLING_VERSION_*` macros of the header it was built with). Never NULL; do not
/// free it.
#[no_mangle]
pub extern "C" fn starling_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The name of a result code as a static NUL-terminated string (e.g.
/// `"STARLING_RESULT_CLOSED"`), or `"STARLING_RESULT_UNKNOWN"` for a number this version
/// does not know. Never NULL; do not free it.
#[no_mangle]
pub extern "C" fn starling_result_name(code: u32) -> *const c_char {
    let name: &'static str = match code {
        0 => "STARLING_RESULT_OK\0",
        1 => "STARLING_RESULT_NULL_PARAMETER\0",
        2 => "STARLING_RESULT_INVALID_ARGUMENT\0",
        3 => "STARLING_RESULT_INVALID_TOPIC\0",
        4 => "STARLING_RESULT_INVALID_ADDRESS\0",
        5 => "STARLING_RESULT_INVALID_CONFIG\0",
        6 => "STARLING_RESULT_IDENTITY\0",
        7 => "STARLING_RESULT_TRANSPORT\0",
        8 => "STARLING_RESULT_RUNTIME\0",
        9 => "STARLING_RESULT_PAYLOAD_TOO_LARGE\0",
        10 => "STARLING_RESULT_METADATA_TOO_LARGE\0",
        11 => "STARLING_RESULT_TOO_MANY_TOPICS\0",
        12 => "STARLING_RESULT_CLOSED\0",
        13 => "STARLING_RESULT_TIMEOUT\0",
        14 => "STARLING_RESULT_BUFFER_TOO_SMALL\0",
        15 => "STARLING_RESULT_INTERNAL\0",
        16 => "STARLING_RESULT_WOULD_DEADLOCK\0",
        100 => "STARLING_RESULT_PANIC\0",
        _ => "STARLING_RESULT_UNKNOWN\0",
    };
    name.as_ptr().cast()
}

/// Copies the message of the last failed call on the calling thread (an empty string if
/// none failed yet) into `buf` as a NUL-terminated string; `*written` (if `written` is not
/// NULL) gets its length without the NUL. Successful calls do not clear the message.
///
/// Returns `STARLING_RESULT_NULL_PARAMETER` if `buf` is NULL and
/// `STARLING_RESULT_BUFFER_TOO_SMALL` if the message and its NUL do not fit in `len`
/// bytes (nothing is written; the stored message is kept, so retry with
/// `starling_last_error_length() + 1` bytes).
#[no_mangle]
pub extern "C" fn starling_last_error_message(
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> starling_result {
    // This call must not replace the message it reports, so it does not go through
    // `boundary` on failure.
    let message = LAST_ERROR.with(|e| e.borrow().clone());
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: documented contract of buf/len/written.
        unsafe { write_str(&message, buf, len, written) }
    }));
    match outcome {
        Ok(Ok(())) => starling_result::Ok,
        Ok(Err(fail)) => fail.code,
        Err(_) => starling_result::Panic,
    }
}

/// The length in bytes (without the terminating NUL) of the message that
/// `starling_last_error_message` would copy; 0 if no call failed on this thread.
#[no_mangle]
pub extern "C" fn starling_last_error_length() -> usize {
    boundary_or(0, || LAST_ERROR.with(|e| e.borrow().len()))
}

/// Writes the 32-byte topic id of the UTF-8 topic name `(name, name_len)` to `out` (which
/// must have room for 32 bytes): the id that `starling_message.topic` and
/// `starling_presence_event.topic` carry.
///
/// Errors: `NULL_PARAMETER` (`out` NULL, or `name` NULL with a non-zero length),
/// `INVALID_TOPIC`.
#[no_mangle]
pub extern "C" fn starling_topic_id(
    name: *const u8,
    name_len: usize,
    out: *mut u8,
) -> starling_result {
    boundary(|| {
        need(out, "out")?;
        // SAFETY: documented contract of name/name_len.
        let id = unsafe { topic(name, name_len) }?;
        // SAFETY: out has room for 32 bytes (documented contract).
        unsafe { std::ptr::copy_nonoverlapping(id.as_bytes().as_ptr(), out, 32) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_constants_match_the_crate_version() {
        let v = env!("CARGO_PKG_VERSION");
        assert_eq!(
            format!("{STARLING_VERSION_MAJOR}.{STARLING_VERSION_MINOR}.{STARLING_VERSION_PATCH}"),
            v
        );
        // SAFETY: static NUL-terminated string.
        let s = unsafe { CStr::from_ptr(starling_version()) };
        assert_eq!(s.to_str().ok(), Some(v));
    }

    #[test]
    fn result_names_cover_every_code() {
        for code in [
            starling_result::Ok,
            starling_result::NullParameter,
            starling_result::InvalidArgument,
            starling_result::InvalidTopic,
            starling_result::InvalidAddress,
            starling_result::InvalidConfig,
            starling_result::Identity,
            starling_result::Transport,
            starling_result::Runtime,
            starling_result::PayloadTooLarge,
            starling_result::MetadataTooLarge,
            starling_result::TooManyTopics,
            starling_result::Closed,
            starling_result::Timeout,
            starling_result::BufferTooSmall,
            starling_result::Internal,
            starling_result::WouldDeadlock,
            starling_result::Panic,
        ] {
            // SAFETY: static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(starling_result_name(code as u32)) };
            assert_ne!(
                name.to_str().ok(),
                Some("STARLING_RESULT_UNKNOWN"),
                "{code:?}"
            );
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(starling_result_name(7777)) };
        assert_eq!(unknown.to_str().ok(), Some("STARLING_RESULT_UNKNOWN"));
    }

    #[test]
    fn a_panic_becomes_a_result_and_a_message() {
        let code = boundary(|| panic!("boom"));
        assert_eq!(code, starling_result::Panic);
        let mut buf = [0 as c_char; 64];
        let mut written = 0usize;
        assert_eq!(
            starling_last_error_message(buf.as_mut_ptr(), buf.len(), &mut written),
            starling_result::Ok
        );
        // SAFETY: NUL-terminated by the call.
        let msg = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
        assert!(msg.contains("boom"), "{msg}");
        assert_eq!(written, msg.len());
    }
}
