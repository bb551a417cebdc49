//! The logging layer: one line per RPC of every kind, written when the call
//! is over, with its method, peer, gRPC code, duration and message counts.
//!
//! The layer wraps the request and response bodies and counts gRPC messages
//! by their 5-byte length prefixes as they pass, so it needs no knowledge of
//! the message types and costs no decoding. Both bodies share one `Call`;
//! when the last of them is dropped the call is over, which for a stream is
//! its end and not its first response, and the line is written then. A call
//! that ends without a status (the client went away) is logged as CANCELLED.
//!
//! The same numbers feed the Prometheus metrics, when they are on: the
//! message counters as each message passes, the rest when the call ends.
//!
//! The layer also echoes `x-request-id` into the response headers, so a
//! client can match its logs with ours; an id that is too long or has
//! characters outside `[A-Za-z0-9._:-]` is replaced by one made here.
//!
//! When traces are on, the call is an OpenTelemetry server span too, child
//! of the `traceparent` the client sent: started here, ended with the access
//! line, and made current while the handler and the response body run, so
//! that the store's spans are its children.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower::{Layer, Service};

use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context as TraceContext, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;

use crate::auth::Caller;
use crate::server::metrics::{Metrics, Series};
use crate::server::traces;
use crate::server::web::Protocol;

/// The request header a client may set to correlate its logs with ours.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id to echo and log for a client's `x-request-id`: its own when it is
/// at most 128 characters of `[A-Za-z0-9._:-]`, else one made here. A
/// client's id reaches every log line of its call and the response, so a
/// 10,000-character one, or one with quotes and newlines, must not.
fn request_id(sent: &HeaderValue) -> HeaderValue {
    let bytes = sent.as_bytes();
    let fine = !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if fine {
        sent.clone()
    } else {
        HeaderValue::try_from(format!("usersvc-{}", uuid::Uuid::now_v7()))
            .expect("a UUID is a valid header value")
    }
}

/// Adds per-call logging, and metrics and traces when given, in front of a
/// service.
#[derive(Clone, Default)]
pub struct TelemetryLayer {
    metrics: Option<Arc<Metrics>>,
    tracer: Option<SdkTracer>,
}

impl TelemetryLayer {
    pub fn new(metrics: Option<Arc<Metrics>>, tracer: Option<SdkTracer>) -> Self {
        Self { metrics, tracer }
    }
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Telemetry {
            inner,
            metrics: self.metrics.clone(),
            tracer: self.tracer.clone(),
        }
    }
}

/// [`TelemetryLayer`] applied to a service.
#[derive(Clone)]
pub struct Telemetry<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
    tracer: Option<SdkTracer>,
}

/// What is known of one call while it runs. Logged when dropped.
struct Call {
    /// The metrics, and the method they count this call under.
    metrics: Option<(Arc<Metrics>, Series)>,
    path: http::uri::PathAndQuery,
    /// The protocol the client spoke, before the web layer made it gRPC.
    protocol: Protocol,
    peer: Option<SocketAddr>,
    request_id: Option<HeaderValue>,
    start: Instant,
    received: AtomicU64,
    sent: AtomicU64,
    /// The gRPC status code, once the response has carried one; -1 before.
    code: AtomicI32,
    /// The call's server span, when traces are on.
    trace: Option<TraceContext>,
}

impl Call {
    fn record_status(&self, headers: &HeaderMap) {
        let code = headers
            .get("grpc-status")
            .and_then(|value| value.to_str().ok()?.parse::<i32>().ok());
        if let Some(code) = code {
            self.code.store(code, Ordering::Relaxed);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let code = match self.code.load(Ordering::Relaxed) {
            -1 => Code::Cancelled,
            code => Code::from_i32(code),
        };
        let request_id = self.request_id.as_ref().and_then(|id| id.to_str().ok());
        let elapsed = self.start.elapsed();
        let (received, sent) = (
            self.received.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
        );
        if let Some((metrics, method)) = &self.metrics {
            metrics.call_finished(*method, code, elapsed);
        }
        let trace_id = self.trace.as_ref().and_then(|cx| {
            end_span(cx, self.protocol, code);
            traces::trace_id(cx)
        });
        crate::server::logging::AccessLine {
            method: self.path.path(),
            protocol: self.protocol.label(),
            peer: self.peer,
            code: crate::error::code_name(code),
            duration_us: elapsed.as_micros() as u64,
            messages_in: received,
            messages_out: sent,
            request_id,
            trace_id: trace_id.as_deref(),
        }
        .log();
    }
}

/// The server span of a call to `path`, child of the trace the client's
/// headers name, as OpenTelemetry's RPC conventions describe it.
fn server_span(
    tracer: &SdkTracer,
    headers: &HeaderMap,
    path: &str,
    protocol: Protocol,
    peer: Option<SocketAddr>,
) -> TraceContext {
    let parent = traces::parent(headers);
    // A path this server does not serve is not a name: anyone can send
    // one, and every one would be a span name of its own.
    let name = match crate::server::metrics::grpc_type(path) {
        Some(_) => path.trim_start_matches('/'),
        None => "_OTHER",
    };
    let (service, method) = name.split_once('/').unwrap_or(("_OTHER", "_OTHER"));
    let system = match protocol {
        Protocol::Connect => "connect_rpc",
        Protocol::Grpc | Protocol::GrpcWeb => "grpc",
    };
    let mut attributes = vec![
        KeyValue::new("rpc.system", system),
        KeyValue::new("rpc.service", service.to_owned()),
        KeyValue::new("rpc.method", method.to_owned()),
    ];
    if let Some(peer) = peer {
        attributes.push(KeyValue::new("network.peer.address", peer.ip().to_string()));
        attributes.push(KeyValue::new("network.peer.port", i64::from(peer.port())));
    }
    let span = tracer
        .span_builder(name.to_owned())
        .with_kind(SpanKind::Server)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    parent.with_span(span)
}

/// Ends a call's span with its status: the gRPC code (Connect's error code
/// over Connect), and an error status for the codes that say the server
/// failed, not the caller, as the conventions for server spans say.
fn end_span(cx: &TraceContext, protocol: Protocol, code: Code) {
    let span = cx.span();
    match protocol {
        Protocol::Connect if code != Code::Ok => span.set_attribute(KeyValue::new(
            "rpc.connect_rpc.error_code",
            crate::error::code_name(code).to_ascii_lowercase(),
        )),
        Protocol::Connect => {}
        Protocol::Grpc | Protocol::GrpcWeb => {
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64))
        }
    }
    let server_failed = matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    );
    if server_failed {
        span.set_status(Status::error(crate::error::code_name(code)));
    }
    span.end();
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Telemetry<S>
where
    S: Service<http::Request<CountedBody<ReqBody>>, Response = http::Response<ResBody>>,
    ReqBody: Body<Data = Bytes>,
    ResBody: Body<Data = Bytes>,
{
    type Response = http::Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let protocol = request
            .extensions()
            .get::<Protocol>()
            .copied()
            .unwrap_or(Protocol::Grpc);
        let metrics = self.metrics.as_ref().and_then(|metrics| {
            let method = Metrics::series(path.path(), protocol)?;
            metrics.call_started(method);
            Some((Arc::clone(metrics), method))
        });
        let peer = Caller::of(&mut request).peer;
        let trace = self
            .tracer
            .as_ref()
            .map(|tracer| server_span(tracer, request.headers(), path.path(), protocol, peer));
        let call = Arc::new(Call {
            metrics,
            path,
            protocol,
            peer,
            request_id: request.headers().get(&REQUEST_ID).map(request_id),
            start: Instant::now(),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            code: AtomicI32::new(-1),
            trace,
        });
        let request = request.map(|body| CountedBody::new(body, Arc::clone(&call), false));
        let _current = call.trace.clone().map(TraceContext::attach);
        ResponseFuture {
            inner: self.inner.call(request),
            call: Some(call),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner response, with its body counted and its request id echoed.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<Arc<Call>>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<CountedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let trace = this.call.as_ref().and_then(|call| call.trace.clone());
        let _current = trace.map(TraceContext::attach);
        let result = ready!(this.inner.poll(cx));
        let call = this.call.take().expect("polled after completion");
        Poll::Ready(result.map(|mut response| {
            // A trailers-only response (an error before any message) carries
            // its status in the headers.
            call.record_status(response.headers());
            if let Some(id) = &call.request_id {
                response
                    .headers_mut()
                    .insert(REQUEST_ID.clone(), id.clone());
            }
            response.map(|body| CountedBody::new(body, call, true))
        }))
    }
}

pin_project_lite::pin_project! {
    /// A body that counts the gRPC messages passing through it.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        call: Arc<Call>,
        prefix: MessagePrefixes,
        // True for the response body, whose trailers carry the status.
        outbound: bool,
    }
}

impl<B> CountedBody<B> {
    fn new(inner: B, call: Arc<Call>, outbound: bool) -> Self {
        Self {
            inner,
            call,
            prefix: MessagePrefixes::default(),
            outbound,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        // A stream's messages are made as its body is read: its store calls
        // belong to the call's span too.
        let _current = this.call.trace.clone().map(TraceContext::attach);
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                let messages = this.prefix.feed(data);
                let counter = if *this.outbound {
                    &this.call.sent
                } else {
                    &this.call.received
                };
                counter.fetch_add(messages, Ordering::Relaxed);
                if let Some((metrics, method)) = this.call.metrics.as_ref().filter(|_| messages > 0)
                {
                    metrics.messages(*method, !*this.outbound, messages);
                }
            } else if let Some(trailers) = frame.trailers_ref().filter(|_| *this.outbound) {
                this.call.record_status(trailers);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Finds gRPC message boundaries in a byte stream split at arbitrary points:
/// each message is a flag byte, a 4-byte big-endian length, then the message.
#[derive(Clone, Copy, Debug, Default)]
struct MessagePrefixes {
    /// Bytes of the current prefix seen so far (0 to 4).
    prefix_seen: u8,
    /// The length, as far as its bytes have been seen.
    length: u32,
    /// Bytes of the current message still to skip.
    remaining: u64,
}

impl MessagePrefixes {
    /// Consumes `data` and returns how many messages began in it.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut started = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.remaining -= skip as u64;
                data = &data[skip..];
                continue;
            }
            if self.prefix_seen > 0 {
                self.length = (self.length << 8) | u32::from(data[0]);
            }
            data = &data[1..];
            self.prefix_seen += 1;
            if self.prefix_seen == 5 {
                started += 1;
                self.remaining = u64::from(self.length);
                self.prefix_seen = 0;
                self.length = 0;
            }
        }
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for message in messages {
            out.push(0);
            out.extend_from_slice(&(message.len() as u32).to_be_bytes());
            out.extend_from_slice(message);
        }
        out
    }

    #[test]
    fn counts_messages_whole_and_split_at_every_byte() {
        let bytes = framed(&[b"abc", b"", &[7u8; 300], b"z"]);
        assert_eq!(MessagePrefixes::default().feed(&bytes), 4);
        for split in 0..bytes.len() {
            let mut prefixes = MessagePrefixes::default();
            let (a, b) = bytes.split_at(split);
            assert_eq!(prefixes.feed(a) + prefixes.feed(b), 4, "split at {split}");
        }
    }
}
