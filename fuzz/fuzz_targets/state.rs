//! The protocol state machine fed arbitrary event sequences: messages of every kind from
//! arbitrary peers (valid, tampered, mis-dated), timeouts, peer failures, API calls and raw
//! frames. Invariants (checked after every event, see `core/tests/support/events.rs`):
//! no panic, views and tables within their configured bounds, never its own neighbour,
//! never a message to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../core/tests/support/events.rs"]
mod events;

fuzz_target!(|data: &[u8]| {
    // The first byte seeds the node's RNG; the rest is the scenario.
    let (seed, rest) = data.split_first().map_or((0, data), |(s, r)| (*s, r));
    let mut h = events::Harness::new(events::Signing::Cheap, u64::from(seed));
    h.run(rest);
});
