//! A token bucket per caller, in front of UserService's methods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Status;

use super::gate::{Gate, GateLayer};
use crate::auth::Caller;
use crate::error::Error;
use crate::pb::Method;

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

/// A token bucket per caller, in front of UserService's methods (health and
/// reflection are not limited). The caller is the token's subject, else the
/// client certificate's, else the peer address, so the layer sits behind
/// auth. Over the limit is RESOURCE_EXHAUSTED, with the wait in the message.
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

    /// The layer that puts this limit in front of a service.
    pub fn layer(self) -> GateLayer<RateLimiter> {
        GateLayer::new(self)
    }

    /// Takes a token for `caller`, or says how long until one is there.
    fn take(&self, limit: RateLimit, caller: String) -> Result<(), Duration> {
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

impl Gate for RateLimiter {
    fn admit<B>(&self, request: &mut http::Request<B>) -> Result<(), Status> {
        let limit = self
            .limit
            .filter(|_| Method::from_path(request.uri().path()).is_some());
        match limit {
            Some(limit) => self
                .take(limit, Caller::of(request).key())
                .map_err(|wait| Status::from(Error::RateLimited { retry_after: wait })),
            None => Ok(()),
        }
    }
}
