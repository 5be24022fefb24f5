//! The wall clock, as the ledger counts time: milliseconds since the Unix epoch, in `i64` like
//! every timestamp, expiration and time lock.
//!
//! Read by hosts only — the node's threads, the pipeline's sealing, the API, the wallet, the
//! benchmarks. The engine's own rules never read it: a state transition is handed the time it
//! judges against (a ledger's timestamp), so replaying a block gives the same result on any
//! machine at any time. This is its one definition.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in unix milliseconds (0 if the clock is before 1970, `i64::MAX` past year 292 million).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_after_the_engine_was_written_and_does_not_go_back() {
        let a = super::now_ms();
        let b = super::now_ms();
        assert!(a > 1_767_225_600_000, "{a} is before 2026");
        assert!(b >= a);
    }
}
