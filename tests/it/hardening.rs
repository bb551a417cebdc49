//! HTTP/2 hardening, driven below gRPC against a real `usersvc serve`
//! started with each flag at a value other than its default, so that only
//! a flag wired through to the server passes: raw frames for what a
//! well-behaved client library would never send (too many streams, rapid
//! resets, floods of malformed requests, PINGs left unanswered), and the h2
//! crate for malformed gRPC bodies. After each, the server is still healthy.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::process::ServerProcess;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PING: u8 = 0x6;
const NO_ERROR: u32 = 0x0;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;
const PING_PAYLOAD: &[u8] = b"usersvc!";

/// A real `usersvc serve` with `flags`, on the memory store.
struct Served {
    _dir: tempfile::TempDir,
    server: ServerProcess,
    addr: SocketAddr,
}

impl Served {
    fn start(flags: &[&str]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["--store", "memory"];
        args.extend_from_slice(flags);
        let server = ServerProcess::start(&args, dir.path());
        let addr = server.url.trim_start_matches("http://").parse().unwrap();
        Served {
            _dir: dir,
            server,
            addr,
        }
    }

    fn url(&self) -> String {
        self.server.url.clone()
    }
}

/// An HTTP/2 connection spoken frame by frame.
struct RawH2 {
    tcp: TcpStream,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK "literal header field without indexing, new name", no Huffman.
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    for s in [name, value] {
        assert!(s.len() < 127);
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
}

/// A gRPC request's header block for `path`.
fn request_headers(path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        literal(&mut block, name, value);
    }
    block
}

const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";

impl RawH2 {
    async fn connect(addr: SocketAddr) -> RawH2 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        let mut raw = RawH2 { tcp };
        // Acknowledge the server's settings, so that its limits apply.
        loop {
            let (kind, flags, _, _) = raw.read().await.expect("server settings");
            if kind == SETTINGS && flags & 0x1 == 0 {
                raw.tcp
                    .write_all(&frame(SETTINGS, 0x1, 0, &[]))
                    .await
                    .unwrap();
                break;
            }
        }
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        // The server may already have closed; what it sent is still read.
        let _ = self.tcp.write_all(bytes).await;
    }

    /// Opens a Health/Watch stream that stays open.
    async fn open_watch(&mut self, stream: u32) {
        let mut bytes = frame(HEADERS, END_HEADERS, stream, &request_headers(HEALTH_WATCH));
        bytes.extend(frame(DATA, 0, stream, &[0, 0, 0, 0, 0]));
        self.send(&bytes).await;
    }

    /// The next frame, or `None` when the connection ends or is quiet for 5 s.
    async fn read(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        let mut head = [0u8; 9];
        match tokio::time::timeout(Duration::from_secs(5), self.tcp.read_exact(&mut head)).await {
            Ok(Ok(_)) => {}
            _ => return None,
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0; len];
        self.tcp.read_exact(&mut payload).await.ok()?;
        Some((head[3], head[4], stream, payload))
    }

    /// Reads until a frame matches, or the connection ends.
    async fn read_until(
        &mut self,
        mut wanted: impl FnMut(u8, u32, &[u8]) -> bool,
    ) -> Option<(u8, u32, Vec<u8>)> {
        while let Some((kind, _, stream, payload)) = self.read().await {
            if wanted(kind, stream, &payload) {
                return Some((kind, stream, payload));
            }
        }
        None
    }
}

fn error_code(payload: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(payload[at..at + 4].try_into().unwrap())
}

async fn assert_healthy(app: &Served) {
    let channel = tonic::transport::Channel::from_shared(app.url())
        .unwrap()
        .connect_lazy();
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("the server still answers");
    assert_eq!(response.into_inner().status, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn streams_past_the_limit_are_refused() {
    let app = Served::start(&["--max-concurrent-streams", "2"]);
    let mut h2 = RawH2::connect(app.addr).await;
    for stream in [1, 3, 5] {
        h2.open_watch(stream).await;
    }
    let refused = h2
        .read_until(|kind, _, payload| {
            kind == RST_STREAM && error_code(payload, 0) == REFUSED_STREAM
        })
        .await;
    assert_eq!(
        refused.map(|(_, stream, _)| stream),
        Some(5),
        "the third stream is refused"
    );
    assert_healthy(&app).await;
}

/// Opens `count` streams and resets each at once, in one write, then sends
/// a PING; returns the GOAWAY's error code if one came before the PING's
/// answer, `None` if the connection was still in use after the burst.
async fn rapid_resets(app: &Served, count: u32) -> Option<u32> {
    let mut h2 = RawH2::connect(app.addr).await;
    let mut burst = Vec::new();
    for i in 0..count {
        let stream = 1 + 2 * i;
        burst.extend(frame(
            HEADERS,
            END_HEADERS,
            stream,
            &request_headers(HEALTH_WATCH),
        ));
        burst.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
    }
    burst.extend(frame(PING, 0, 0, PING_PAYLOAD));
    h2.send(&burst).await;
    let (kind, _, payload) = h2
        .read_until(|kind, _, payload| kind == GOAWAY || (kind == PING && payload == PING_PAYLOAD))
        .await
        .expect("a GOAWAY or the PING's answer");
    (kind == GOAWAY).then(|| error_code(&payload, 4))
}

#[tokio::test]
async fn a_rapid_reset_burst_past_the_configured_limit_gets_goaway() {
    // Not h2's default of 20, so that only a wired-through flag passes.
    let strict = Served::start(&["--max-pending-reset-streams", "3"]);
    assert_eq!(
        rapid_resets(&strict, 10).await,
        Some(ENHANCE_YOUR_CALM),
        "10 rapid resets against a limit of 3"
    );
    assert_healthy(&strict).await;

    let lenient = Served::start(&["--max-pending-reset-streams", "1000"]);
    assert_eq!(
        rapid_resets(&lenient, 500).await,
        None,
        "500 rapid resets against a limit of 1000"
    );
    assert_healthy(&lenient).await;

    // The same burst against the default limit (20) is refused.
    let default = Served::start(&[]);
    assert_eq!(
        rapid_resets(&default, 500).await,
        Some(ENHANCE_YOUR_CALM),
        "500 rapid resets against the default limit"
    );
    assert_healthy(&default).await;
}

#[tokio::test]
async fn a_flood_of_malformed_requests_gets_goaway() {
    let app = Served::start(&["--max-local-error-reset-streams", "10"]);
    let mut h2 = RawH2::connect(app.addr).await;
    let mut flood = Vec::new();
    for i in 0..100u32 {
        // No :path, no :method: a malformed request (RFC 9113 §8.3.1).
        let mut block = Vec::new();
        literal(&mut block, ":scheme", "http");
        literal(&mut block, "content-type", "application/grpc");
        flood.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, &block));
    }
    h2.send(&flood).await;
    let goaway = h2.read_until(|kind, _, _| kind == GOAWAY).await;
    let (_, _, payload) = goaway.expect("no GOAWAY after 100 malformed requests");
    assert_eq!(error_code(&payload, 4), ENHANCE_YOUR_CALM);
    assert_healthy(&app).await;
}

/// Sends one GetUser with `body` as its raw DATA, extra `headers` added,
/// and returns the gRPC status code and message.
async fn get_user_with_body(app: &Served, body: &[u8], headers: &[(&str, &str)]) -> (i32, String) {
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::post(format!(
        "{}/techoral.users.v1.UserService/GetUser",
        app.url()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut send) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    send.send_data(Bytes::copy_from_slice(body), true).unwrap();
    let response = response.await.unwrap();
    let status_of = |headers: &http::HeaderMap| {
        let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
        let message = headers
            .get("grpc-message")
            .map(|m| m.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Some((code, message))
    };
    if let Some(status) = status_of(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    status_of(&trailers).expect("a grpc-status")
}

#[tokio::test]
async fn malformed_grpc_bodies_get_clean_error_statuses() {
    let app = Served::start(&[]);

    // A prefix announcing 100 bytes, then 3 and the end of the stream.
    let (code, message) = get_user_with_body(&app, &[0, 0, 0, 0, 100, 0x0a, 0x01, 0x78], &[]).await;
    assert_eq!(code, tonic::Code::Internal as i32, "truncated: {message}");

    // The compressed flag, with no grpc-encoding to say how.
    let (code, message) = get_user_with_body(&app, &[1, 0, 0, 0, 3, 0x0a, 0x01, 0x78], &[]).await;
    assert_eq!(
        code,
        tonic::Code::Internal as i32,
        "compressed flag: {message}"
    );

    // user_id = 0xFF: not UTF-8.
    let (code, message) = get_user_with_body(&app, &[0, 0, 0, 0, 3, 0x0a, 0x01, 0xff], &[]).await;
    assert_eq!(
        code,
        tonic::Code::Internal as i32,
        "invalid UTF-8: {message}"
    );
    assert!(message.to_lowercase().contains("utf"), "{message}");

    // An encoding we do not support.
    let (code, _) = get_user_with_body(
        &app,
        &[1, 0, 0, 0, 3, 0x0a, 0x01, 0x78],
        &[("grpc-encoding", "snappy")],
    )
    .await;
    assert_eq!(code, tonic::Code::Unimplemented as i32);

    assert_healthy(&app).await;
}

#[tokio::test]
async fn idle_connections_are_pinged_and_old_ones_are_told_to_go() {
    let app = Served::start(&[
        "--keepalive-interval",
        "200ms",
        "--max-connection-age",
        "500ms",
    ]);
    let mut h2 = RawH2::connect(app.addr).await;
    let ping = h2.read_until(|kind, _, _| kind == PING).await;
    assert!(ping.is_some(), "no keepalive PING on an idle connection");
    let goaway = h2.read_until(|kind, _, _| kind == GOAWAY).await;
    let (_, _, payload) = goaway.expect("no GOAWAY once the connection was past its age");
    assert_eq!(error_code(&payload, 4), NO_ERROR, "a graceful GOAWAY");
    assert_healthy(&app).await;
}

/// A client that never answers the keepalive PING has its connection
/// closed once `--keepalive-timeout` passes; one that answers keeps it.
#[tokio::test]
async fn a_client_that_does_not_answer_pings_is_disconnected() {
    let app = Served::start(&[
        "--keepalive-interval",
        "300ms",
        "--keepalive-timeout",
        "700ms",
    ]);
    // An open stream, so that only the keepalive can close the connection
    // (not the idle timeout); its PINGs are read and never answered.
    let mut silent = RawH2::connect(app.addr).await;
    silent.open_watch(1).await;
    let mut pings = 0;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut head = [0u8; 9];
        loop {
            if silent.tcp.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0; len];
            if silent.tcp.read_exact(&mut payload).await.is_err() {
                return;
            }
            if head[3] == PING && head[4] & 0x1 == 0 {
                pings += 1;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was not closed");
    assert!(pings >= 1, "closed without a PING");

    // One that answers, with a stream open, is still served after several
    // intervals: it answers a health check on the same connection.
    let mut answering = RawH2::connect(app.addr).await;
    answering.open_watch(1).await;
    let mut answered = 0;
    while answered < 4 {
        let (kind, flags, _, payload) = answering.read().await.expect("the connection lives");
        if kind == PING && flags & 0x1 == 0 {
            answering.send(&frame(PING, 0x1, 0, &payload)).await;
            answered += 1;
        }
    }
    answering.send(&frame(PING, 0, 0, PING_PAYLOAD)).await;
    let pong = answering
        .read_until(|kind, _, payload| kind == PING && payload == PING_PAYLOAD)
        .await;
    assert!(pong.is_some(), "the answering client was disconnected");
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_header_list_over_the_limit_is_refused() {
    let app = Served::start(&["--max-header-list-size", "4096"]);
    let raw = || {
        usersvc::pb::client::UserServiceClient::new(
            tonic::transport::Channel::from_shared(app.url())
                .unwrap()
                .connect_lazy(),
        )
    };
    let mut request = tonic::Request::new(usersvc::pb::GetUserRequest {
        user_id: "x".into(),
    });
    request
        .metadata_mut()
        .insert("x-padding", "p".repeat(8192).parse().unwrap());
    let status = raw().get_user(request).await.unwrap_err();
    // The server refuses the header list before any handler runs, with
    // HTTP 431; a gRPC client maps an HTTP status it has no code for to
    // UNKNOWN (gRPC's "HTTP to gRPC status code mapping").
    assert_eq!(status.code(), tonic::Code::Unknown, "{status:?}");
    assert!(
        status.message().contains("431"),
        "not refused as Request Header Fields Too Large: {status:?}"
    );
    // A header list under the limit reaches the handler.
    let mut request = tonic::Request::new(usersvc::pb::GetUserRequest {
        user_id: "x".into(),
    });
    request
        .metadata_mut()
        .insert("x-padding", "p".repeat(1024).parse().unwrap());
    let status = raw().get_user(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert_healthy(&app).await;
}
