//! How often one caller may call: a token bucket per [`Caller`](super::Caller).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many calls one caller may make: `per_second` on average, in bursts
/// of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl Default for RateLimit {
    /// Far above what one client of a user directory needs, and low enough
    /// that one runaway client cannot take the whole server.
    fn default() -> Self {
        Self {
            per_second: 1000.0,
            burst: 2000.0,
        }
    }
}

/// One caller's token bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Callers tracked before idle full buckets are forgotten.
const MAX_TRACKED: usize = 10_000;

/// A token bucket per caller: the token's subject, else the client
/// certificate's, else the peer address. Every call to UserService takes a
/// token (`server::layers::rate_limit`), and so does every message on a
/// watch stream, so that one open stream is no way around the limit.
#[derive(Clone)]
pub struct RateLimiter {
    /// `None` lets every call through.
    limit: Option<RateLimit>,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl RateLimiter {
    pub fn new(limit: Option<RateLimit>) -> Self {
        Self {
            limit,
            buckets: Arc::default(),
        }
    }

    /// Takes a token for `caller` (a [`Caller::key`]), or says how long
    /// until one is there. Always `Ok` when there is no limit.
    pub fn take(&self, caller: String) -> Result<(), Duration> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&caller) {
            let (rate, burst) = (limit.per_second, limit.burst);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(caller).or_insert(Bucket {
            tokens: limit.burst,
            updated: now,
        });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * limit.per_second;
        bucket.tokens = (bucket.tokens + refill).min(limit.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / limit.per_second,
            ))
        }
    }
}
