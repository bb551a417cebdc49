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
use http::{HeaderValue, Request, Response, header};
use tonic::Status;
use tower::Service;

use crate::BoxError;

pub mod connect;
pub mod cors;
mod envelope;
pub mod json;

use connect::Codec;
use envelope::{Reframe, TRAILERS};

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

    fn call(&mut self, mut request: Request<tonic::body::Body>) -> Self::Future {
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
        let protocol = match kind {
            Kind::GrpcWeb | Kind::GrpcWebJson => Protocol::GrpcWeb,
            _ => Protocol::Connect,
        };
        request.extensions_mut().insert(protocol);
        let read_first = request.version() < http::Version::HTTP_2
            && matches!(
                kind,
                Kind::GrpcWeb | Kind::GrpcWebJson | Kind::ConnectStreaming(_)
            );
        if !read_first {
            return Either::Left(dispatch(inner, request, kind, max));
        }
        Either::Left(Box::pin(async move {
            match read_whole(request, max).await {
                Ok(request) => dispatch(inner, request, kind, max).await,
                Err(status) => Ok(refusal(kind, &status)),
            }
        }))
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
    let schema = json::method(request.uri().path());
    match (kind, schema) {
        (Kind::ConnectUnary(codec), Some(schema)) => {
            if request.method() == http::Method::GET && !schema.no_side_effects {
                let status = Status::unimplemented(
                    "only a method with no side effects may be called with GET",
                );
                return Box::pin(
                    async move { Ok(connect::unary_error(&status, Default::default())) },
                );
            }
            Box::pin(connect::unary(inner, request, codec, schema, max))
        }
        (Kind::ConnectStreaming(codec), Some(schema)) => {
            Box::pin(connect::streaming(inner, request, codec, schema, max))
        }
        (Kind::GrpcWebJson, Some(schema)) => Box::pin(grpc_web_json(inner, request, schema, max)),
        // A Connect call to a path outside the contract: unknown, in the
        // protocol's own terms.
        (Kind::ConnectUnary(_) | Kind::ConnectStreaming(_), None) => {
            let status = Status::unimplemented(format!("unknown method {}", request.uri().path()));
            let answer = refusal(kind, &status);
            Box::pin(async move { Ok(answer) })
        }
        _ => {
            let call = inner.call(request);
            Box::pin(async move { Ok(call.await?.map(tonic::body::Body::new)) })
        }
    }
}

/// Reads a request's body whole, up to twice the message limit (room for
/// gRPC-Web's base64). Over HTTP/1.1 an answer sent before the body is read
/// makes the server close the connection while the client still writes,
/// and a refusal (a missing token, say) would reach the client as a broken
/// pipe; a body read first cannot be cut off.
async fn read_whole(
    request: Request<tonic::body::Body>,
    max: usize,
) -> Result<Request<tonic::body::Body>, Status> {
    use http_body_util::BodyExt;
    let limit = max.saturating_mul(2);
    let (parts, body) = request.into_parts();
    let body = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| match e.downcast::<http_body_util::LengthLimitError>() {
            Ok(_) => Status::resource_exhausted(format!(
                "over HTTP/1.1 a request body is read whole, up to {limit} bytes; send a larger upload over HTTP/2"
            )),
            Err(e) => Status::from_error(e),
        })?
        .to_bytes();
    Ok(Request::from_parts(
        parts,
        tonic::body::Body::new(http_body_util::Full::new(body)),
    ))
}

/// An error answered before the call, as the client's protocol says.
fn refusal(kind: Kind, status: &Status) -> Response<tonic::body::Body> {
    match kind {
        Kind::ConnectUnary(_) => connect::unary_error(status, Default::default()),
        Kind::ConnectStreaming(codec) => connect::streaming_error(status, codec),
        Kind::Grpc | Kind::GrpcWeb | Kind::GrpcWebJson => {
            let content_type = match kind {
                Kind::GrpcWebJson => "application/grpc-web+json",
                Kind::GrpcWeb => "application/grpc-web+proto",
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
    let gzipped = match parts.headers.remove("grpc-encoding") {
        None => false,
        Some(encoding) if encoding == "gzip" => true,
        Some(encoding) if encoding == "identity" => false,
        Some(other) => {
            let status = Status::unimplemented(format!(
                "unsupported grpc-encoding {other:?}; this server reads gzip"
            ));
            return Ok(status.into_http());
        }
    };
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
