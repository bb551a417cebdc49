//! Limits past the transport's: a per-caller rate limit, a default deadline
//! answered DEADLINE_EXCEEDED, and a request message over the size limit
//! answered RESOURCE_EXHAUSTED, as the gRPC spec says, where tonic answers
//! OUT_OF_RANGE.
//!
//! tonic reports an oversized unary request before any handler runs, as a
//! trailers-only response; this layer rewrites that response's status. An
//! oversized message inside a request stream reaches the handler as an
//! error, which [`oversized_is_exhausted`] rewrites. Responses cannot exceed
//! the limit: users are bounded in size, and BulkCreateUsers refuses a batch
//! whose answer would not fit before storing it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::HeaderValue;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::auth::Claims;
use crate::error::Error;
use crate::guard::{Gate, GateLayer};
use crate::tls::ClientIdentity;

/// What tonic's codec says when a message is over the limit.
const TOO_LARGE: &str = "message length too large";

/// The status to answer for an error reading a request stream.
pub fn oversized_is_exhausted(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().contains(TOO_LARGE) {
        Status::resource_exhausted(status.message())
    } else {
        status
    }
}

/// Rewrites OUT_OF_RANGE for an oversized request to RESOURCE_EXHAUSTED.
#[derive(Clone, Copy, Debug, Default)]
pub struct OversizeLayer;

impl<S> Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Oversize { inner }
    }
}

/// [`OversizeLayer`] applied to a service.
#[derive(Clone, Debug)]
pub struct Oversize<S> {
    inner: S,
}

impl<S, B, ResBody> Service<http::Request<B>> for Oversize<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut result = ready!(self.project().inner.poll(cx));
        if let Ok(response) = &mut result {
            let headers = response.headers_mut();
            let oversized = headers.get("grpc-status").is_some_and(|s| s == "11")
                && headers
                    .get("grpc-message")
                    .and_then(|m| m.to_str().ok())
                    .is_some_and(|m| {
                        m.contains("message%20length%20too%20large") || m.contains(TOO_LARGE)
                    });
            if oversized {
                headers.insert("grpc-status", HeaderValue::from_static("8"));
            }
        }
        Poll::Ready(result)
    }
}

/// How many calls one caller may make: `per_second` on average, in bursts
/// of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
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

/// Who is calling, for the rate limit.
fn caller<B>(request: &http::Request<B>) -> String {
    let extensions = request.extensions();
    if let Some(claims) = extensions.get::<Arc<Claims>>() {
        return format!("sub:{}", claims.sub);
    }
    if let Some(identity) = extensions.get::<ClientIdentity>() {
        return format!("cert:{}", identity.subject);
    }
    let tcp = extensions.get::<TcpConnectInfo>().or_else(|| {
        extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .map(|tls| tls.get_ref())
    });
    match tcp.and_then(TcpConnectInfo::remote_addr) {
        Some(addr) => format!("ip:{}", addr.ip()),
        None => "unknown".to_owned(),
    }
}

impl Gate for RateLimiter {
    fn admit<B>(&self, request: &mut http::Request<B>) -> Result<(), Status> {
        let limit = self.limit.filter(|_| {
            request
                .uri()
                .path()
                .starts_with("/techoral.users.v1.UserService/")
        });
        match limit {
            Some(limit) => self
                .take(limit, caller(request))
                .map_err(|wait| Status::from(Error::RateLimited { retry_after: wait })),
            None => Ok(()),
        }
    }
}

/// Gives a call that brings no deadline (`grpc-timeout`) the server's
/// default, answered DEADLINE_EXCEEDED when it passes before the response
/// starts. (tonic's own server timeout answers CANCELLED, which tells a
/// client the wrong thing.)
#[derive(Clone, Copy, Debug)]
pub struct DefaultDeadlineLayer {
    deadline: Duration,
}

impl DefaultDeadlineLayer {
    pub fn new(deadline: Duration) -> Self {
        Self { deadline }
    }
}

impl<S> Layer<S> for DefaultDeadlineLayer {
    type Service = DefaultDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DefaultDeadline {
            inner,
            deadline: self.deadline,
        }
    }
}

/// [`DefaultDeadlineLayer`] applied to a service.
#[derive(Clone, Debug)]
pub struct DefaultDeadline<S> {
    inner: S,
    deadline: Duration,
}

impl<S, B, ResBody> Service<http::Request<B>> for DefaultDeadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let deadline = (!request.headers().contains_key("grpc-timeout")).then_some(self.deadline);
        DeadlineFuture {
            inner: self.inner.call(request),
            sleep: deadline.map(|deadline| Box::pin(tokio::time::sleep(deadline))),
            deadline: deadline.unwrap_or_default(),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        // Boxed so that this future stays Unpin-agnostic and small when no
        // default applies.
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        deadline: Duration,
    }
}

impl<F, ResBody, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        if let Some(sleep) = this.sleep {
            ready!(sleep.as_mut().poll(cx));
            let message = format!(
                "deadline exceeded: no response within the server's default of {:?}",
                this.deadline
            );
            return Poll::Ready(Ok(Status::deadline_exceeded(message).into_http()));
        }
        Poll::Pending
    }
}
