//! How often one caller may call: a token bucket per [`Caller`](super::Caller).

use std::collections::{BTreeMap, HashMap};
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

/// One caller's token bucket, and when it was last used.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    /// Its place in the order of use, a key of `Buckets::by_use`.
    used: u64,
}

/// Callers tracked at most. Past it the one unheard from longest is
/// forgotten (it starts afresh, full, if it calls again): many distinct
/// callers can neither grow the table nor make a new caller scan it.
const MAX_TRACKED: usize = 10_000;

/// The buckets, and the order they were last used in.
#[derive(Debug, Default)]
struct Buckets {
    by_caller: HashMap<String, Bucket>,
    by_use: BTreeMap<u64, String>,
    next_use: u64,
}

/// A token bucket per caller: the token's subject, else the client
/// certificate's, else the peer address. Every call to UserService takes a
/// token (`server::layers::rate_limit`), and so does every message on a
/// watch stream, so that one open stream is no way around the limit.
#[derive(Clone)]
pub struct RateLimiter {
    /// `None` lets every call through.
    limit: Option<RateLimit>,
    buckets: Arc<Mutex<Buckets>>,
}

impl RateLimiter {
    pub fn new(limit: Option<RateLimit>) -> Self {
        Self {
            limit,
            buckets: Arc::default(),
        }
    }

    /// Whether there is a limit at all.
    pub fn is_on(&self) -> bool {
        self.limit.is_some()
    }

    /// Takes a token for `caller` (a [`Caller::key`](super::Caller::key)),
    /// or says how long until one is there. Always `Ok` when there is no
    /// limit.
    pub fn take(&self, caller: String) -> Result<(), Duration> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Buckets {
            by_caller,
            by_use,
            next_use,
        } = &mut *buckets;
        *next_use += 1;
        let used = *next_use;
        let bucket = match by_caller.get_mut(&caller) {
            Some(bucket) => {
                by_use.remove(&bucket.used);
                bucket
            }
            None => {
                if by_caller.len() >= MAX_TRACKED
                    && let Some((_, oldest)) = by_use.pop_first()
                {
                    by_caller.remove(&oldest);
                }
                by_caller.entry(caller.clone()).or_insert(Bucket {
                    tokens: limit.burst,
                    updated: now,
                    used,
                })
            }
        };
        bucket.used = used;
        by_use.insert(used, caller);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_capped_and_forgets_the_caller_unheard_from_longest() {
        let limiter = RateLimiter::new(Some(RateLimit {
            per_second: 0.001,
            burst: 1.0,
        }));
        limiter.take("first".into()).unwrap();
        assert!(limiter.take("first".into()).is_err(), "drained");
        for n in 0..MAX_TRACKED + 500 {
            let _ = limiter.take(format!("caller-{n}"));
            if n == MAX_TRACKED - 10 {
                // First seen before every other caller, but heard from
                // again just now: an LRU table keeps it while callers seen
                // later, and not since, go; first-in, first-out would not.
                let _ = limiter.take("first".into());
            }
        }
        let buckets = limiter.buckets.lock().unwrap();
        assert_eq!(buckets.by_caller.len(), MAX_TRACKED);
        assert_eq!(buckets.by_use.len(), MAX_TRACKED);
        assert!(
            buckets.by_caller.contains_key("first"),
            "the caller heard from recently stays"
        );
        assert!(
            !buckets.by_caller.contains_key("caller-0"),
            "the one unheard from longest went"
        );
        assert!(
            buckets
                .by_caller
                .contains_key(&format!("caller-{}", MAX_TRACKED + 499))
        );
        drop(buckets);
        assert!(
            limiter.take("first".into()).is_err(),
            "kept with its bucket, still drained"
        );
    }
}
