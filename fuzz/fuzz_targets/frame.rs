//! Frame decoder: arbitrary bytes as one frame, and the same bytes cut into
//! length-prefixed frames the way a stream carries them.
//!
//! Invariants: decoding never panics; whatever decodes re-encodes to a frame that decodes
//! to the same message and passes the limits again (no value the decoder accepts is one
//! the encoder cannot reproduce).
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_core::wire::{decode_frame, encode_frame, Limits};

fn one(frame: &[u8], limits: &Limits) {
    if let Ok(msg) = decode_frame(frame, limits) {
        let again = encode_frame(&msg);
        match decode_frame(&again, limits) {
            Ok(back) => assert_eq!(back, msg, "round trip changed the message"),
            Err(e) => panic!("re-encoded frame refused: {e}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    one(data, &limits);
    // Stream framing: a u32 big-endian length, then that many bytes; a length over the
    // frame limit ends the stream (the transport closes the connection there).
    let max = limits.max_frame_bytes();
    let mut rest = data;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if len > max || len > rest.len() {
            break;
        }
        let (frame, tail) = rest.split_at(len);
        one(frame, &limits);
        rest = tail;
    }
    // Tighter limits: every limit check path, not only the defaults.
    let small = Limits {
        max_payload_bytes: 16,
        max_metadata_bytes: 8,
        max_addr_bytes: 8,
        max_peers_per_msg: 2,
        max_ids_per_msg: 2,
        max_topics_per_msg: 2,
        max_records_per_msg: 1,
    };
    one(data, &small);
});
