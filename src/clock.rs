//! Wall-clock time as the contract carries it: Unix seconds for `created_at`,
//! Unix milliseconds for event timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_seconds() -> i64 {
    unix_millis() / 1000
}

pub fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Microseconds since the Unix epoch; 0 if the clock is before it.
pub fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        })
}
