//! GetUser over each protocol the server speaks (`usersvc bench get
//! --protocol`): gRPC, gRPC-Web, Connect with binary messages and Connect
//! with JSON, each from the same plain HTTP/2 client, so that the protocols
//! differ in nothing but their bytes. Each connection counts the bytes it
//! moves both ways, for the bytes on the wire per call.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use prost::Message;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::{Code, Status};

use crate::pb;

/// The protocol a bench speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// gRPC, through the usersvc client (tonic), as every scenario.
    #[default]
    Grpc,
    /// gRPC, from the plain HTTP/2 client the other protocols use.
    GrpcRaw,
    /// gRPC-Web, binary.
    GrpcWeb,
    /// Connect unary with binary messages.
    ConnectProto,
    /// Connect unary with JSON messages.
    ConnectJson,
}

/// A TCP stream that counts the bytes it reads and writes.
struct Counted {
    inner: tokio::net::TcpStream,
    bytes: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.bytes.fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            self.bytes.fetch_add(written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One HTTP/2 connection, cleartext with prior knowledge.
#[derive(Clone)]
pub struct Connection {
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    base: String,
    token: Option<String>,
}

impl Connection {
    /// Connects to `addr` (`host:port` or `http://host:port`), adding what it moves to
    /// `bytes`.
    pub async fn open(
        addr: &str,
        token: Option<String>,
        bytes: Arc<AtomicU64>,
    ) -> Result<Connection, String> {
        if addr.starts_with("https://") {
            return Err(format!("--protocol speaks cleartext HTTP/2; {addr} is TLS"));
        }
        let authority = addr.strip_prefix("http://").unwrap_or(addr);
        let tcp = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot reach {authority}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let io = hyper_util::rt::TokioIo::new(Counted { inner: tcp, bytes });
        let (send, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("HTTP/2 handshake with {authority}: {e}"))?;
        tokio::spawn(connection);
        Ok(Connection {
            send,
            base: format!("http://{authority}/{}", pb::SERVICE_NAME),
            token,
        })
    }

    /// GetUser of `id` over `protocol`; the answer is decoded, as a client
    /// would decode it.
    pub async fn get_user(&self, protocol: Protocol, id: &str) -> Result<(), Status> {
        let request = pb::GetUserRequest { user_id: id.into() };
        let (content_type, body) = match protocol {
            Protocol::Grpc | Protocol::GrpcRaw => ("application/grpc", framed(&request)),
            Protocol::GrpcWeb => ("application/grpc-web+proto", framed(&request)),
            Protocol::ConnectProto => ("application/proto", Bytes::from(request.encode_to_vec())),
            Protocol::ConnectJson => (
                "application/json",
                Bytes::from(serde_json::json!({ "userId": id }).to_string()),
            ),
        };
        let mut builder = http::Request::post(format!("{}/GetUser", self.base))
            .header("content-type", content_type);
        if matches!(protocol, Protocol::Grpc | Protocol::GrpcRaw) {
            builder = builder.header("te", "trailers");
        }
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| Status::internal(e.to_string()))?;
        let response = self
            .send
            .clone()
            .send_request(request)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (head, body) = response.into_parts();
        let collected = body
            .collect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes();
        match protocol {
            Protocol::Grpc | Protocol::GrpcRaw => {
                let status = trailers
                    .as_ref()
                    .and_then(Status::from_header_map)
                    .or_else(|| Status::from_header_map(&head.headers))
                    .unwrap_or_else(|| Status::internal("no grpc-status"));
                ok_or(status)?;
                decode(body.get(5..).unwrap_or_default())
            }
            Protocol::GrpcWeb => {
                if let Some(status) = Status::from_header_map(&head.headers) {
                    ok_or(status)?;
                }
                let len = body
                    .get(1..5)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .ok_or_else(|| Status::internal("no message"))?;
                let trailer = body.get(5 + len + 5..).unwrap_or_default();
                if !trailer.starts_with(b"grpc-status:0") {
                    return Err(Status::internal(
                        String::from_utf8_lossy(trailer).into_owned(),
                    ));
                }
                decode(&body[5..5 + len])
            }
            Protocol::ConnectProto | Protocol::ConnectJson if head.status != 200 => {
                let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                Err(Status::new(
                    Code::Unknown,
                    error["code"].as_str().unwrap_or("unknown").to_owned(),
                ))
            }
            Protocol::ConnectProto => decode(&body),
            Protocol::ConnectJson => serde_json::from_slice::<serde_json::Value>(&body)
                .map(drop)
                .map_err(|e| Status::internal(e.to_string())),
        }
    }
}

fn framed(message: &impl Message) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.encoded_len());
    out.put_u8(0);
    out.put_u32(message.encoded_len() as u32);
    message.encode(&mut out).expect("room reserved");
    out.freeze()
}

fn ok_or(status: Status) -> Result<(), Status> {
    match status.code() {
        Code::Ok => Ok(()),
        _ => Err(status),
    }
}

fn decode(bytes: &[u8]) -> Result<(), Status> {
    pb::GetUserResponse::decode(bytes)
        .map(drop)
        .map_err(|e| Status::internal(e.to_string()))
}
