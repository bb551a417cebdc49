//! Browsers and curl on the gRPC port: Connect and gRPC-Web, from the one
//! contract, with no code generator.
//!
//! The outermost layer. It tells the protocols apart by content type, and
//! turns a Connect call, or a gRPC-Web call in JSON, into the gRPC call it
//! means, so that every layer behind it (telemetry, auth, rate limit,
//! limits, deadlines) and the service see gRPC, whatever the client spoke.
//! Binary gRPC-Web (and its base64 `-text` form) is tonic-web's, the next
//! layer in. JSON comes from the committed descriptor set ([`json`]).
//!
//! It reads no byte of a request body itself. The body it passes on is
//! turned into gRPC messages as the service reads it, so every decision
//! made from the headers (the token, the permission table, the rate limit)
//! is made before the body is read, and the call's deadline covers reading
//! it. Its unfinished messages are paid for by the caller
//! ([`request_memory`](crate::server::layers::request_memory)). A call that
//! is wrong from its headers alone (a streaming content type for a unary
//! method, a GET with side effects, a bad `connect-timeout-ms`) is still
//! passed on, marked [`Refused`], so the telemetry layer logs and counts
//! it like any other, and [`RefusedCalls`] answers it there.
//!
//! | content type | protocol |
//! |---|---|
//! | `application/grpc`, `application/grpc+proto` | gRPC, as it is |
//! | `application/grpc-web`, `+proto`, `-text`, `-text+proto` | gRPC-Web, by tonic-web |
//! | `application/grpc-web+json` | gRPC-Web, messages turned to binary here |
//! | `application/json`, `application/proto`, a GET with `connect=v1` | Connect unary |
//! | `application/connect+json`, `application/connect+proto` | Connect streaming |

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::TryFutureExt;
use futures_util::future::{Either, MapOk};
use http::{HeaderValue, Request, Response, StatusCode, header};
use tonic::Status;
use tower::Service;

use crate::BoxError;

pub mod connect;
pub mod cors;
mod drain;
mod envelope;
pub mod hosts;
pub mod json;

use connect::Codec;
use envelope::{Reframe, TRAILERS};

use crate::server::layers::gate::{self, Gate};
use crate::server::layers::request_memory::{self, Framing};
use crate::server::layers::telemetry::REQUEST_ID;

/// The protocol a call came in, for the access log and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    GrpcWeb,
    Connect,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::Connect => "connect",
        }
    }
}

/// What a request is, from its method and content type.
#[derive(Clone, Copy)]
enum Kind {
    Grpc,
    GrpcWeb,
    /// gRPC-Web in base64 (`application/grpc-web-text`), a browser's.
    GrpcWebText,
    GrpcWebJson,
    ConnectUnary(Codec),
    ConnectStreaming(Codec),
}

impl Kind {
    fn of<B>(request: &Request<B>) -> Kind {
        if request.method() == http::Method::GET {
            let connect = request
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|pair| pair == "connect=v1"));
            let proto = request
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|pair| pair == "encoding=proto"));
            return match (connect, proto) {
                (true, true) => Kind::ConnectUnary(Codec::Proto),
                (true, false) => Kind::ConnectUnary(Codec::Json),
                (false, _) => Kind::Grpc,
            };
        }
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // Parameters such as `; charset=utf-8` do not change the protocol.
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        match essence {
            "application/json" => Kind::ConnectUnary(Codec::Json),
            "application/proto" => Kind::ConnectUnary(Codec::Proto),
            "application/connect+json" => Kind::ConnectStreaming(Codec::Json),
            "application/connect+proto" => Kind::ConnectStreaming(Codec::Proto),
            "application/grpc-web+json" => Kind::GrpcWebJson,
            text if text.starts_with("application/grpc-web-text") => Kind::GrpcWebText,
            web if web.starts_with("application/grpc-web") => Kind::GrpcWeb,
            _ => Kind::Grpc,
        }
    }
}

/// Adds [`Web`] in front of a service.
#[derive(Clone, Debug)]
pub struct WebLayer {
    max_message_bytes: usize,
}

impl WebLayer {
    pub fn new(max_message_bytes: usize) -> Self {
        Self { max_message_bytes }
    }
}

impl<S> tower::Layer<S> for WebLayer {
    type Service = Web<S>;

    fn layer(&self, inner: S) -> Web<S> {
        Web {
            inner,
            max_message_bytes: self.max_message_bytes,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Web<S> {
    inner: S,
    max_message_bytes: usize,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<Request<tonic::body::Body>> for Web<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Either<
        BoxFuture<Self::Response, Self::Error>,
        MapOk<S::Future, fn(Response<B>) -> Response<tonic::body::Body>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let kind = Kind::of(&request);
        // gRPC, most calls, goes straight through: the telemetry layer
        // takes a call with no protocol for gRPC.
        if let Kind::Grpc = kind {
            return Either::Right(self.inner.call(request).map_ok(box_body));
        }
        // The service that was made ready serves this call; a clone waits
        // for the next one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let max = self.max_message_bytes;
        let (mut parts, body) = request.into_parts();
        let protocol = match kind {
            Kind::GrpcWeb | Kind::GrpcWebText | Kind::GrpcWebJson => Protocol::GrpcWeb,
            _ => Protocol::Connect,
        };
        parts.extensions.insert(protocol);
        // Over HTTP/1.1 a body the call leaves unread is read after its
        // answer, so that the client gets the answer.
        let body = match parts.version < http::Version::HTTP_2 {
            true => tonic::body::Body::new(drain::Drained::new(body, max.saturating_mul(2))),
            false => body,
        };
        let (body, payer) = request_memory::meter(body, kind.framing());
        parts.extensions.insert(payer);
        let request = Request::from_parts(parts, tonic::body::Body::new(body));
        Either::Left(dispatch(inner, request, kind, max))
    }
}

impl Kind {
    /// How the bytes of a request body of this kind make messages.
    fn framing(self) -> Framing {
        match self {
            // base64 hides the prefixes; a browser's gRPC-Web request is one
            // message anyway.
            Kind::ConnectUnary(_) | Kind::GrpcWebText => Framing::Whole,
            Kind::Grpc | Kind::GrpcWeb | Kind::GrpcWebJson | Kind::ConnectStreaming(_) => {
                Framing::Enveloped
            }
        }
    }
}

fn box_body<B>(response: Response<B>) -> Response<tonic::body::Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    response.map(tonic::body::Body::new)
}

/// The call `kind` makes through `inner`.
fn dispatch<S, B>(
    mut inner: S,
    request: Request<tonic::body::Body>,
    kind: Kind,
    max: usize,
) -> BoxFuture<Response<tonic::body::Body>, S::Error>
where
    S: Service<Request<tonic::body::Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let schema = match refusal_of(&request, kind) {
        Ok(schema) => schema,
        Err(refusal) => return Box::pin(refuse(inner, request, kind, refusal)),
    };
    match (kind, schema) {
        (Kind::ConnectUnary(codec), Some(schema)) => {
            Box::pin(connect::unary(inner, request, codec, schema, max))
        }
        (Kind::ConnectStreaming(codec), Some(schema)) => {
            Box::pin(connect::streaming(inner, request, codec, schema, max))
        }
        (Kind::GrpcWebJson, Some(schema)) => Box::pin(grpc_web_json(inner, request, schema, max)),
        _ => {
            let call = inner.call(request);
            Box::pin(async move { Ok(call.await?.map(tonic::body::Body::new)) })
        }
    }
}

/// A call refused from its headers, and how its answer looks.
struct Refusal {
    status: Status,
    /// A bare HTTP answer, as connect-go gives for a content type or an
    /// HTTP method the method does not take; else the protocol's own error.
    bare: Option<(StatusCode, header::HeaderName, &'static str)>,
}

impl Refusal {
    /// A content type of the wrong kind for the method at `path`, which is
    /// `what`: 415 and the types it takes, as connect-go answers.
    fn wrong_kind(path: &str, what: &str, accepted: &'static str) -> Self {
        Self {
            status: Status::unknown(format!("{path} is {what}")),
            bare: Some((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                header::HeaderName::from_static("accept-post"),
                accepted,
            )),
        }
    }
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Self {
        Self { status, bare: None }
    }
}

/// The method's schema, if it has one; or why the call is refused from its
/// headers alone.
fn refusal_of<B>(
    request: &Request<B>,
    kind: Kind,
) -> Result<Option<&'static json::MethodSchema>, Refusal> {
    let path = request.uri().path();
    let schema = json::method(path);
    let streaming_method = schema.map(|s| s.client_streaming || s.server_streaming);
    match (kind, streaming_method) {
        (Kind::ConnectUnary(_) | Kind::ConnectStreaming(_), None) => {
            Err(Status::unimplemented(format!("unknown method {path}")).into())
        }
        (Kind::ConnectUnary(_), Some(_))
            if request.method() == http::Method::GET
                && !schema.is_some_and(|s| s.no_side_effects) =>
        {
            Err(Refusal {
                status: Status::unknown(format!(
                    "{path} has side effects: call it with POST, not GET"
                )),
                bare: Some((StatusCode::METHOD_NOT_ALLOWED, header::ALLOW, "POST")),
            })
        }
        (Kind::ConnectUnary(_), Some(true)) => Err(Refusal::wrong_kind(
            path,
            "a streaming method: send application/connect+json or application/connect+proto",
            "application/connect+json, application/connect+proto, application/grpc, application/grpc-web",
        )),
        (Kind::ConnectStreaming(_), Some(false)) => Err(Refusal::wrong_kind(
            path,
            "a unary method: send application/json or application/proto",
            "application/json, application/proto, application/grpc, application/grpc-web",
        )),
        (Kind::ConnectUnary(_) | Kind::ConnectStreaming(_), Some(_)) => {
            connect::check(request, schema.expect("a method"))
                .map_err(Refusal::from)
                .map(|()| schema)
        }
        (Kind::GrpcWebJson, _) => match request.headers().get("grpc-encoding") {
            Some(encoding) if encoding != "gzip" && encoding != "identity" => {
                Err(Status::unimplemented(format!(
                    "unsupported grpc-encoding {encoding:?}; this server reads gzip"
                ))
                .into())
            }
            _ => Ok(schema),
        },
        _ => Ok(schema),
    }
}

/// A call refused from its headers: passed on with its body left unread,
/// marked [`Refused`], so that it is logged and counted like any other and
/// its request id echoed; then answered as its protocol (or connect-go) has it.
async fn refuse<S, B>(
    mut inner: S,
    request: Request<tonic::body::Body>,
    kind: Kind,
    refusal: Refusal,
) -> Result<Response<tonic::body::Body>, S::Error>
where
    S: Service<Request<tonic::body::Body>, Response = Response<B>>,
{
    let (mut parts, _unread) = request.into_parts();
    parts.extensions.insert(Refused(refusal.status.clone()));
    // A gRPC call's shape, so that tonic-web lets it by.
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    parts.method = http::Method::POST;
    parts.version = http::Version::HTTP_2;
    let answered = inner
        .call(Request::from_parts(parts, tonic::body::Body::empty()))
        .await?;
    let mut answer = match refusal.bare {
        Some((status, name, value)) => {
            let mut answer = Response::new(tonic::body::Body::empty());
            *answer.status_mut() = status;
            answer
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
            answer
        }
        None => self::refusal(kind, &refusal.status),
    };
    if let Some(id) = answered.headers().get(&REQUEST_ID) {
        answer.headers_mut().insert(REQUEST_ID.clone(), id.clone());
    }
    Ok(answer)
}

/// Marks a call the web layer refused from its headers.
#[derive(Clone, Debug)]
pub struct Refused(pub Status);

/// Answers the calls marked [`Refused`], behind the telemetry layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct RefusedCalls;

impl Gate for RefusedCalls {
    fn admit<B>(&self, request: &mut Request<B>) -> Result<(), gate::Refusal> {
        match request.extensions().get::<Refused>() {
            Some(Refused(status)) => Err(status.clone().into()),
            None => Ok(()),
        }
    }
}
/// An error answered before the call, as the client's protocol says.
fn refusal(kind: Kind, status: &Status) -> Response<tonic::body::Body> {
    match kind {
        Kind::ConnectUnary(_) => connect::unary_error(status, Default::default()),
        Kind::ConnectStreaming(codec) => connect::streaming_error(status, codec),
        Kind::Grpc | Kind::GrpcWeb | Kind::GrpcWebText | Kind::GrpcWebJson => {
            let content_type = match kind {
                Kind::GrpcWebJson => "application/grpc-web+json",
                Kind::GrpcWeb => "application/grpc-web+proto",
                Kind::GrpcWebText => "application/grpc-web-text+proto",
                _ => "application/grpc",
            };
            let mut answer = status.clone().into_http();
            answer
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            answer
        }
    }
}

/// gRPC-Web with JSON messages: the messages become binary, and the call
/// goes on as binary gRPC-Web (tonic-web's); the answer's messages become
/// JSON again, and its trailers frame passes as it is.
async fn grpc_web_json<S, B>(
    mut inner: S,
    request: Request<tonic::body::Body>,
    schema: &'static json::MethodSchema,
    max: usize,
) -> Result<Response<tonic::body::Body>, S::Error>
where
    S: Service<Request<tonic::body::Body>, Response = Response<B>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = request.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc-web+proto"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::ACCEPT);
    // The answer's messages are read here, so they come uncompressed.
    parts.headers.remove("grpc-accept-encoding");
    // Any other encoding was refused from the headers.
    let gzipped = parts
        .headers
        .remove("grpc-encoding")
        .is_some_and(|encoding| encoding == "gzip");
    let rewrite = Box::new(move |flags: u8, message: Bytes| {
        let message = envelope::inflated(flags, message, gzipped, max, "grpc-encoding")?;
        let binary = json::to_binary(&schema.input, &message)?;
        Ok(envelope::envelope(0, &binary))
    });
    let body = tonic::body::Body::new(Reframe::new(body, max, rewrite, None));
    let response = inner.call(Request::from_parts(parts, body)).await?;
    let (mut head, body) = response.into_parts();
    head.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc-web+json"),
    );
    head.headers.remove(header::CONTENT_LENGTH);
    let rewrite = Box::new(move |flags: u8, message: Bytes| {
        if flags & TRAILERS != 0 {
            return Ok(envelope::envelope(flags, &message));
        }
        let json = json::to_json(&schema.output, &message)?;
        Ok(envelope::envelope(flags, &json))
    });
    let body = Reframe::new(tonic::body::Body::new(body), usize::MAX, rewrite, None);
    Ok(Response::from_parts(head, tonic::body::Body::new(body)))
}
