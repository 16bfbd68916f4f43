//! The bounded wait of the node-level tests: poll a condition, fail loudly with what was
//! missing.

use std::time::{Duration, Instant};

/// Polls `cond` until it holds, failing with `what()` after `limit`.
pub fn wait_until(limit: Duration, what: impl Fn() -> String, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {limit:?}: {}", what());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
