//! The Connect protocol (connectrpc.com/docs/protocol), turned into a gRPC
//! call to the service behind, and the answer turned back.
//!
//! - Unary: a POST of one bare message (`application/json` or
//!   `application/proto`), or a GET with the message in the query for a
//!   method marked NO_SIDE_EFFECTS; the answer is the bare message, or the
//!   Connect error JSON with the HTTP status the spec maps its code to.
//! - Streaming (`application/connect+json`, `+proto`): enveloped messages
//!   both ways, and an end-of-stream message carrying the error, if any, and
//!   the trailers.
//!
//! `connect-timeout-ms` becomes `grpc-timeout`, so the deadline layer
//! bounds it as it bounds gRPC's; gzip is honoured both ways.

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use prost::Message;
use tonic::{Code, Status};

use super::envelope::{self, END_STREAM, Reframe, gunzip, too_large};
use super::json::{self, MethodSchema};
use crate::BoxError;

/// How a Connect call encodes its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Json,
    Proto,
}

impl Codec {
    fn unary_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::Proto => "application/proto",
        }
    }

    fn streaming_type(self) -> &'static str {
        match self {
            Codec::Json => "application/connect+json",
            Codec::Proto => "application/connect+proto",
        }
    }

    /// A request message of `schema`, as binary.
    fn request(self, schema: &MethodSchema, message: Bytes) -> Result<Bytes, Status> {
        match self {
            Codec::Json => json::to_binary(&schema.input, &message).map(Bytes::from),
            Codec::Proto => Ok(message),
        }
    }

    /// A response message of `schema`, in this codec.
    fn answer(self, schema: &MethodSchema, message: Bytes) -> Result<Bytes, Status> {
        match self {
            Codec::Json => json::to_json(&schema.output, &message).map(Bytes::from),
            Codec::Proto => Ok(message),
        }
    }
}

/// The Connect name of a code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status of a unary error, as the Connect spec maps it.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("a valid status"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `google.rpc.Status`, as `grpc-status-details-bin` carries it.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// The Connect error JSON of `status`: its code, message and details (the
/// BadRequest field violations among them), each detail as its type name
/// and its bytes in unpadded base64, as the spec has it.
pub fn error_json(status: &Status) -> serde_json::Value {
    let details: Vec<_> = RpcStatus::decode(status.details())
        .map(|rpc| rpc.details)
        .unwrap_or_default()
        .into_iter()
        .map(|any| {
            let name = any
                .type_url
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            serde_json::json!({
                "type": name,
                "value": base64::engine::general_purpose::STANDARD_NO_PAD.encode(&any.value),
            })
        })
        .collect();
    let mut error = serde_json::json!({ "code": code_name(status.code()) });
    if !status.message().is_empty() {
        error["message"] = status.message().into();
    }
    if !details.is_empty() {
        error["details"] = details.into();
    }
    error
}

/// A unary error: the error JSON with its HTTP status.
pub fn unary_error(status: &Status, headers: HeaderMap) -> Response<tonic::body::Body> {
    let body = serde_json::to_vec(&error_json(status)).expect("JSON");
    let mut response = Response::new(tonic::body::Body::new(Full::new(Bytes::from(body))));
    *response.status_mut() = http_status(status.code());
    *response.headers_mut() = headers;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The end of a stream: the error, if the call failed, and the trailers.
fn end_stream(status: &Status, trailers: &HeaderMap) -> Bytes {
    let mut metadata = serde_json::Map::new();
    for name in trailers.keys() {
        if is_grpc_header(name) {
            continue;
        }
        let values: Vec<_> = trailers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        metadata.insert(name.as_str().to_owned(), values.into());
    }
    let mut end = serde_json::json!({});
    if status.code() != Code::Ok {
        end["error"] = error_json(status);
    }
    if !metadata.is_empty() {
        end["metadata"] = metadata.into();
    }
    envelope::envelope(END_STREAM, &serde_json::to_vec(&end).expect("JSON"))
}

fn is_grpc_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("grpc-")
}

/// The headers of a gRPC answer that a Connect client should see: its
/// metadata, without gRPC's own.
fn metadata_of(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if is_grpc_header(name) || name == header::CONTENT_TYPE || name == header::CONTENT_LENGTH {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The request's headers for the gRPC call: the caller's metadata, without
/// Connect's and HTTP's own, with gRPC's content type, and the deadline.
fn grpc_headers(headers: &HeaderMap) -> Result<HeaderMap, Status> {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let skip = name.as_str().starts_with("connect-")
            || is_grpc_header(name)
            || [
                header::CONTENT_TYPE,
                header::CONTENT_LENGTH,
                header::CONTENT_ENCODING,
                header::ACCEPT_ENCODING,
                header::TE,
                header::HOST,
                header::CONNECTION,
            ]
            .contains(name);
        if !skip {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    out.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(timeout) = headers.get("connect-timeout-ms") {
        out.insert("grpc-timeout", grpc_timeout(timeout)?);
    }
    Ok(out)
}

/// `connect-timeout-ms` as a `grpc-timeout`: at most 10 digits, as the spec
/// says; gRPC's allows 8, so a longer one is sent in seconds.
fn grpc_timeout(value: &HeaderValue) -> Result<HeaderValue, Status> {
    let invalid = || Status::invalid_argument("connect-timeout-ms must be 1 to 10 digits");
    let text = value.to_str().map_err(|_| invalid())?;
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let ms: u64 = text.parse().map_err(|_| invalid())?;
    let timeout = if ms <= 99_999_999 {
        format!("{ms}m")
    } else {
        format!("{}S", ms / 1000)
    };
    Ok(HeaderValue::from_str(&timeout).expect("digits and a unit"))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// Whether `encoding` (a `content-encoding`) is one we read: gzip, or none.
fn compressed(encoding: Option<&HeaderValue>) -> Result<bool, Status> {
    match encoding.map(HeaderValue::as_bytes) {
        None | Some(b"identity") => Ok(false),
        Some(b"gzip") => Ok(true),
        Some(other) => Err(Status::unimplemented(format!(
            "unsupported compression {}; this server reads gzip",
            String::from_utf8_lossy(other)
        ))),
    }
}

fn accepts_gzip(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == "gzip")
}

/// Checks what a Connect call's headers say before any of it is read:
/// the deadline, the compression, and, for a bidirectional stream, HTTP/2.
pub fn check<B>(request: &Request<B>, schema: &MethodSchema) -> Result<(), Status> {
    let streaming = schema.client_streaming || schema.server_streaming;
    if schema.client_streaming
        && schema.server_streaming
        && request.version() < http::Version::HTTP_2
    {
        return Err(Status::unimplemented(
            "a bidirectional stream needs HTTP/2; over HTTP/1.1 use SubscribeUserEvents",
        ));
    }
    if let Some(timeout) = request.headers().get("connect-timeout-ms") {
        grpc_timeout(timeout)?;
    }
    let encoding = match streaming {
        true => "connect-content-encoding",
        false => header::CONTENT_ENCODING.as_str(),
    };
    compressed(request.headers().get(encoding)).map(|_| ())
}

/// A unary call's request body as the gRPC message it means, made as the
/// service reads it: the POST's body read up to the limit (and gunzipped,
/// and bounded again), or the GET's query, then turned into binary.
struct UnaryBody {
    /// The POST's body, while it is being read.
    source: Option<tonic::body::Body>,
    /// A GET's message, taken from the query when the call was made.
    query: Option<Result<Bytes, Status>>,
    read: bytes::BytesMut,
    gzipped: bool,
    codec: Codec,
    schema: &'static MethodSchema,
    max: usize,
    done: bool,
}

impl UnaryBody {
    /// The message of `parts` and `body`.
    fn new(
        parts: &http::request::Parts,
        body: tonic::body::Body,
        codec: Codec,
        schema: &'static MethodSchema,
        max: usize,
    ) -> Self {
        let (source, query, gzipped) = if parts.method == http::Method::GET {
            let query = Query::parse(parts.uri.query().unwrap_or_default());
            let gzipped = query.as_ref().is_ok_and(|q| q.compression);
            (None, Some(query.map(|q| q.message)), gzipped)
        } else {
            let gzipped = compressed(parts.headers.get(header::CONTENT_ENCODING)).unwrap_or(false);
            (Some(body), None, gzipped)
        };
        Self {
            source,
            query,
            read: bytes::BytesMut::new(),
            gzipped,
            codec,
            schema,
            max,
            done: false,
        }
    }

    /// The whole message as read, as an enveloped binary message.
    fn message(&self, message: Bytes) -> Result<Bytes, Status> {
        let message = if self.gzipped {
            gunzip(&message, self.max)?
        } else if message.len() > self.max {
            return Err(too_large(self.max));
        } else {
            message
        };
        let binary = self.codec.request(self.schema, message)?;
        Ok(envelope::envelope(0, &binary))
    }
}

impl http_body::Body for UnaryBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(query) = this.query.take() {
            this.done = true;
            let message = query.and_then(|message| this.message(message));
            return Poll::Ready(Some(message.map(http_body::Frame::data)));
        }
        let Some(source) = this.source.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match std::task::ready!(std::pin::Pin::new(&mut *source).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        // A gzipped body is bounded again once inflated.
                        if this.read.len() + data.len() > this.max {
                            this.done = true;
                            this.source = None;
                            return Poll::Ready(Some(Err(too_large(this.max))));
                        }
                        this.read.extend_from_slice(data);
                    }
                }
                Some(Err(status)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
                None => {
                    this.done = true;
                    this.source = None;
                    let read = std::mem::take(&mut this.read).freeze();
                    let message = this.message(read);
                    return Poll::Ready(Some(message.map(http_body::Frame::data)));
                }
            }
        }
    }
}

/// A GET's query: `connect=v1&encoding=json&message=…`, with `base64=1`
/// for a binary message, and `compression=gzip`.
struct Query {
    message: Bytes,
    compression: bool,
}

impl Query {
    fn parse(query: &str) -> Result<Query, Status> {
        let (mut message, mut base64, mut compression) = (None, false, false);
        for (key, value) in query_pairs(query) {
            match key.as_str() {
                "message" => message = Some(value),
                "base64" => base64 = value == b"1",
                "compression" => match &value[..] {
                    b"gzip" => compression = true,
                    b"identity" => {}
                    other => {
                        return Err(Status::unimplemented(format!(
                            "unsupported compression {}; this server reads gzip",
                            String::from_utf8_lossy(other)
                        )));
                    }
                },
                _ => {}
            }
        }
        let message =
            message.ok_or_else(|| Status::invalid_argument("a GET needs a message parameter"))?;
        let message = if base64 {
            let trimmed = message
                .iter()
                .rposition(|b| *b != b'=')
                .map_or(0, |i| i + 1);
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&message[..trimmed])
                .map_err(|e| Status::invalid_argument(format!("invalid base64 message: {e}")))?
        } else {
            message
        };
        Ok(Query {
            message: message.into(),
            compression,
        })
    }
}

/// The pairs of a query, percent-decoded (and `+` as a space). Values stay
/// bytes: without `base64=1`, a binary message is percent-encoded as it is.
fn query_pairs(query: &str) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
    let decode = |part: &str| -> Vec<u8> {
        percent_encoding::percent_decode(part.replace('+', " ").as_bytes()).collect()
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(move |pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                String::from_utf8_lossy(&decode(key)).into_owned(),
                decode(value),
            )
        })
}

/// Serves a unary Connect call through `inner`, the gRPC service.
pub async fn unary<S, B>(
    mut inner: S,
    request: Request<tonic::body::Body>,
    codec: Codec,
    schema: &'static MethodSchema,
    max: usize,
) -> Result<Response<tonic::body::Body>, S::Error>
where
    S: tower::Service<Request<tonic::body::Body>, Response = Response<B>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let gzip_answer = accepts_gzip(request.headers(), "accept-encoding");
    let (mut parts, body) = request.into_parts();
    let body = tonic::body::Body::new(UnaryBody::new(&parts, body, codec, schema, max));
    // Checked before the call came here.
    parts.headers = grpc_headers(&parts.headers).unwrap_or_default();
    parts.method = http::Method::POST;
    parts.version = http::Version::HTTP_2;
    parts.uri = http::Uri::builder()
        .path_and_query(parts.uri.path())
        .build()
        .expect("a path");
    let response = inner.call(Request::from_parts(parts, body)).await?;

    let (head, body) = response.into_parts();
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(e) => {
            let status = Status::internal(format!("the call broke off: {}", e.into()));
            return Ok(unary_error(&status, metadata_of(&head.headers)));
        }
    };
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = Status::from_header_map(&trailers)
        .or_else(|| Status::from_header_map(&head.headers))
        .unwrap_or_else(|| Status::internal("the call ended with no status"));
    let mut headers = metadata_of(&head.headers);
    for (name, value) in &trailers {
        if !is_grpc_header(name) {
            let name = HeaderName::from_bytes(format!("trailer-{name}").as_bytes())
                .expect("a valid name, prefixed");
            headers.append(name, value.clone());
        }
    }
    if status.code() != Code::Ok {
        return Ok(unary_error(&status, headers));
    }
    let answer =
        envelope::split(collected.to_bytes()).and_then(|messages| {
            match <[_; 1]>::try_from(messages) {
                Ok([(0, message)]) => codec.answer(schema, message),
                _ => Err(Status::internal("a unary answer is not one plain message")),
            }
        });
    let answer = match answer {
        Ok(answer) => answer,
        Err(status) => return Ok(unary_error(&status, headers)),
    };
    let body = if gzip_answer && answer.len() > 1024 {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        Bytes::from(gzip(&answer))
    } else {
        answer
    };
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.unary_type()),
    );
    let mut response = Response::new(tonic::body::Body::new(Full::new(body)));
    *response.headers_mut() = headers;
    Ok(response)
}

/// A streaming error answered before the call: a 200 whose body is the
/// end of the stream, as the spec has it.
pub fn streaming_error(status: &Status, codec: Codec) -> Response<tonic::body::Body> {
    let body = end_stream(status, &HeaderMap::new());
    let mut response = Response::new(tonic::body::Body::new(Full::new(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.streaming_type()),
    );
    response
}

/// Serves a streaming Connect call through `inner`, message by message.
pub async fn streaming<S, B>(
    mut inner: S,
    request: Request<tonic::body::Body>,
    codec: Codec,
    schema: &'static MethodSchema,
    max: usize,
) -> Result<Response<tonic::body::Body>, S::Error>
where
    S: tower::Service<Request<tonic::body::Body>, Response = Response<B>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // The headers were checked before the call came here.
    let (mut parts, body) = request.into_parts();
    let gzipped = compressed(parts.headers.get("connect-content-encoding")).unwrap_or(false);
    parts.headers = grpc_headers(&parts.headers).unwrap_or_default();
    parts.version = http::Version::HTTP_2;
    let rewrite = Box::new(move |flags: u8, message: Bytes| {
        let message = envelope::inflated(flags, message, gzipped, max, "connect-content-encoding")?;
        Ok(envelope::envelope(0, &codec.request(schema, message)?))
    });
    let body = tonic::body::Body::new(Reframe::new(body, max, rewrite, None));
    let response = inner.call(Request::from_parts(parts, body)).await?;

    let (head, body) = response.into_parts();
    // A trailers-only answer has its status in the headers.
    let early = Status::from_header_map(&head.headers);
    let rewrite = Box::new(move |_flags: u8, message: Bytes| {
        Ok(envelope::envelope(0, &codec.answer(schema, message)?))
    });
    let finish = Box::new(move |trailers: Option<HeaderMap>| {
        let trailers = trailers.unwrap_or_default();
        let status = Status::from_header_map(&trailers)
            .or(early)
            .unwrap_or_else(|| Status::internal("the stream ended with no status"));
        end_stream(&status, &trailers)
    });
    let body = Reframe::new(
        tonic::body::Body::new(body),
        usize::MAX,
        rewrite,
        Some(finish),
    );
    let mut response = Response::new(tonic::body::Body::new(body));
    *response.headers_mut() = metadata_of(&head.headers);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.streaming_type()),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_query_is_decoded() {
        let query = Query::parse("connect=v1&encoding=json&message=%7B%22userId%22%3A%22a+b%22%7D")
            .unwrap();
        assert_eq!(&query.message[..], br#"{"userId":"a b"}"#);
        let query = Query::parse("encoding=proto&base64=1&message=CgNhYmM").unwrap();
        assert_eq!(&query.message[..], b"\x0a\x03abc");
        assert!(Query::parse("encoding=json").is_err());
        // Without base64, a binary message is percent-encoded byte for byte.
        let query = Query::parse("encoding=proto&message=%0A%03%FF%FEx").unwrap();
        assert_eq!(&query.message[..], b"\x0a\x03\xff\xfex");
    }

    #[test]
    fn timeouts_become_grpc_timeouts() {
        let timeout = |v: &str| grpc_timeout(&HeaderValue::from_str(v).unwrap());
        assert_eq!(timeout("1500").unwrap(), "1500m");
        assert_eq!(timeout("9999999999").unwrap(), "9999999S");
        assert!(timeout("12345678901").is_err());
        assert!(timeout("-1").is_err());
        assert!(timeout("").is_err());
    }
}
