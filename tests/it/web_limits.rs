//! The web protocols get every limit gRPC has, against the real binary:
//! a deadline that covers reading the request, refusals decided from the
//! headers before the body is read, request memory capped per caller,
//! content types that must fit the method, every refusal logged and
//! counted, the HTTP/1.1 head limit, connections that are capped and that
//! end when silent or idle, and browsers kept to loopback names.
//!
//! Requests are written by hand over TCP (HTTP/1.1) or with the h2 crate
//! (HTTP/2), so that a body can stop halfway, as an attacker's does.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usersvc::domain::Role;

use crate::support::metrics::{scrape, value_or_zero};
use crate::support::process::{ServerProcess, rss_bytes};
use crate::support::token;

const SERVICE: &str = "/techoral.users.v1.UserService";

/// Longest a test waits for an answer before it calls the server hung. No
/// answer here is meant to take more than a few seconds.
const HUNG: Duration = Duration::from_secs(30);

fn start(args: &[&str]) -> (tempfile::TempDir, ServerProcess, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec!["--store", "memory", "--metrics-addr", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let server = ServerProcess::start(&all, dir.path());
    let addr = server.url.trim_start_matches("http://").parse().unwrap();
    (dir, server, addr)
}

/// An HTTP/1.1 answer: status, headers (names in lower case) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn code(&self) -> String {
        let json: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)));
        json["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// Writes an HTTP/1.1 request head and the first `sent` bytes of its body
/// (whose length the head may claim to be larger), and leaves the
/// connection open.
async fn http1(addr: SocketAddr, head: &str, sent: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(sent).await.unwrap();
    tcp
}

fn post_head(path: &str, content_type: &str, length: usize, extra: &[&str]) -> String {
    let mut head = format!(
        "POST {SERVICE}/{path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: {content_type}\r\ncontent-length: {length}\r\n"
    );
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// One HTTP/1.1 request, as `http1` sends it, and its answer.
async fn exchange(addr: SocketAddr, head: &str, sent: &[u8]) -> Answer {
    let mut tcp = http1(addr, head, sent).await;
    read_answer(&mut tcp).await
}

/// Reads one HTTP/1.1 answer (a content-length or chunked body).
async fn read_answer(tcp: &mut TcpStream) -> Answer {
    tokio::time::timeout(HUNG, read_answer_now(tcp))
        .await
        .expect("the server answers")
}

async fn read_answer_now(tcp: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0; 4096];
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed before an answer: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut rest = buf[head_end..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let length: Option<usize> = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().unwrap());
    let complete = |rest: &[u8]| match (chunked, length) {
        (true, _) => rest.windows(5).any(|w| w == b"0\r\n\r\n"),
        (false, Some(length)) => rest.len() >= length,
        (false, None) => false,
    };
    while !complete(&rest) {
        let mut chunk = [0; 4096];
        let n = tcp.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&chunk[..n]);
    }
    let body = if chunked { dechunk(&rest) } else { rest };
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&bytes[..line]).unwrap(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&bytes[line + 2..line + 2 + size]);
        bytes = &bytes[line + 4 + size..];
    }
}

/// An HTTP/2 connection with the h2 crate.
async fn http2(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Sends a POST's head and `sent` of its body over HTTP/2, and leaves the
/// stream open; the answer's status and headers, and its body.
async fn h2_post(
    client: &mut h2::client::SendRequest<Bytes>,
    path: &str,
    headers: &[(&str, &str)],
    sent: Bytes,
) -> (h2::SendStream<Bytes>, h2::client::ResponseFuture) {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{SERVICE}/{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut client = client.clone().ready().await.unwrap();
    let (response, mut stream) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    if !sent.is_empty() {
        stream.send_data(sent, false).unwrap();
    }
    (stream, response)
}

async fn h2_answer(response: h2::client::ResponseFuture) -> (u16, http::HeaderMap, Vec<u8>) {
    tokio::time::timeout(HUNG, async {
        let response = response.await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        (status, headers, bytes)
    })
    .await
    .expect("the server answers")
}

fn bearer(role: Role) -> String {
    format!("authorization: Bearer {}", token(role))
}

fn envelope(flags: u8, message: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// A body that stops halfway is ended by the call's deadline, whatever the
/// protocol or HTTP version: the default, or the one `connect-timeout-ms`
/// asks for. (Before, the web layer read the whole body before the deadline
/// began, and such a call was still open long after it.)
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_ends_at_the_deadline_on_every_protocol() {
    let (_dir, _server, addr) = start(&["--default-timeout", "2s", "--rate-limit", "0"]);
    let editor = bearer(Role::Editor);
    let partial = br#"{"name":"half"#;

    // Connect unary over HTTP/1.1 and HTTP/2.
    let head = post_head("CreateUser", "application/json", 1000, &[&editor]);
    let answer = exchange(addr, &head, partial).await;
    assert_eq!(
        (answer.status, answer.code()),
        (504, "deadline_exceeded".into())
    );

    let mut h2 = http2(addr).await;
    let token = token(Role::Editor);
    let auth = format!("Bearer {token}");
    let (_open, response) = h2_post(
        &mut h2,
        "CreateUser",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        Bytes::from_static(partial),
    )
    .await;
    let (status, _, body) = h2_answer(response).await;
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));

    // gRPC-Web over HTTP/1.1: a message cut off inside its envelope.
    let mut message = envelope(0, &[0x0a; 100]);
    message.truncate(40);
    let head = post_head("CreateUser", "application/grpc-web+proto", 105, &[&editor]);
    let answer = exchange(addr, &head, &message).await;
    let text = String::from_utf8_lossy(&answer.body).into_owned()
        + answer.header("grpc-status").unwrap_or_default();
    assert!(text.contains("grpc-status:4") || text == "4", "{answer:?}");

    // A Connect stream over HTTP/1.1 (BulkCreateUsers) that stops sending.
    let first = envelope(0, br#"{"name":"A","email":"a@example.com"}"#);
    let head = post_head(
        "BulkCreateUsers",
        "application/connect+json",
        100_000,
        &[&editor],
    );
    let answer = exchange(addr, &head, &first).await;
    let end = String::from_utf8_lossy(&answer.body).into_owned();
    assert!(end.contains("deadline_exceeded"), "{end}");

    // connect-timeout-ms ends a stalled call too, on a server whose own
    // default would wait a minute; and an upload that stops sending for
    // --stream-idle-timeout is ended as over gRPC.
    let (_dir, _server, addr) = start(&[
        "--default-timeout",
        "60s",
        "--rate-limit",
        "0",
        "--stream-idle-timeout",
        "1s",
    ]);
    let head = post_head(
        "BulkCreateUsers",
        "application/connect+json",
        100_000,
        &[&editor],
    );
    let answer = exchange(addr, &head, &first).await;
    let end = String::from_utf8_lossy(&answer.body).into_owned();
    assert!(
        end.contains("deadline_exceeded") && end.contains("sent nothing"),
        "{end}"
    );
    let head = post_head(
        "CreateUser",
        "application/json",
        1000,
        &[&editor, "connect-timeout-ms: 1500"],
    );
    let answer = exchange(addr, &head, partial).await;
    assert_eq!(
        (answer.status, answer.code()),
        (504, "deadline_exceeded".into())
    );
}

/// A call with no token, a viewer's write, and a call over its rate are
/// answered from their headers, while their bodies are still arriving,
/// with the code gRPC gives. (Before, each waited for its whole body; a
/// caller over its rate that sent bad JSON got 400.)
#[tokio::test(flavor = "multi_thread")]
async fn calls_refused_by_their_headers_are_answered_before_their_body() {
    let (_dir, _server, addr) = start(&["--default-timeout", "60s", "--rate-limit", "0"]);
    let big = 8 * 1024 * 1024 - 1;
    let sent = vec![b' '; 1024];
    for (who, status, code) in [
        (None, 401, "unauthenticated"),
        (Some(bearer(Role::Viewer)), 403, "permission_denied"),
    ] {
        let extra: Vec<&str> = who.iter().map(String::as_str).collect();
        let head = post_head("CreateUser", "application/json", big, &extra);
        let answer = exchange(addr, &head, &sent).await;
        assert_eq!((answer.status, answer.code()), (status, code.into()));
    }
    // Over HTTP/2, with gRPC-Web too.
    let mut h2 = http2(addr).await;
    for content_type in ["application/json", "application/grpc-web+proto"] {
        let (_open, response) = h2_post(
            &mut h2,
            "CreateUser",
            &[("content-type", content_type)],
            Bytes::from(sent.clone()),
        )
        .await;
        let (status, headers, _) = h2_answer(response).await;
        let refused = status == 401 || headers.get("grpc-status").is_some_and(|s| s == "16");
        assert!(refused, "{content_type}: {status} {headers:?}");
    }

    let (_dir, _server, addr) = start(&["--rate-limit", "0.001", "--rate-burst", "1"]);
    let editor = bearer(Role::Editor);
    let head = post_head("GetUser", "application/json", 14, &[&editor]);
    let first = exchange(addr, &head, br#"{"userId":"x"}"#).await;
    assert_eq!(first.code(), "not_found", "within the burst");
    let head = post_head("GetUser", "application/json", 5, &[&editor]);
    let answer = exchange(addr, &head, b"{bad}").await;
    assert_eq!(
        (answer.status, answer.code()),
        (429, "resource_exhausted".into())
    );
}

/// Finding 1 scaled up: 8 HTTP/2 connections of 200 Connect uploads each,
/// and 64 HTTP/1.1 gRPC-Web uploads of 8 MiB, all with no token and all
/// stopping halfway, take less than 32 MiB, and every call is answered.
/// (Before, 24 such streams on one connection held +99 MiB.)
#[tokio::test(flavor = "multi_thread")]
async fn anonymous_uploads_that_stall_hold_no_memory() {
    let (_dir, server, addr) = start(&["--default-timeout", "5s"]);
    let pid = server.child.id();
    let before = rss_bytes(pid);

    let chunk = Bytes::from(vec![b' '; 256 * 1024]);
    let mut h2_calls = Vec::new();
    let mut h2_streams = Vec::new();
    for _ in 0..8 {
        let mut h2 = http2(addr).await;
        for _ in 0..200 {
            let (stream, response) = h2_post(
                &mut h2,
                "CreateUser",
                &[("content-type", "application/json")],
                chunk.clone(),
            )
            .await;
            h2_streams.push(stream);
            h2_calls.push(tokio::spawn(h2_answer(response)));
        }
    }
    let mut h1_calls = Vec::new();
    for _ in 0..64 {
        let head = post_head(
            "BulkCreateUsers",
            "application/grpc-web+proto",
            8 * 1024 * 1024 - 1,
            &[],
        );
        let mut tcp = http1(addr, &head, &[0; 1024 * 1024]).await;
        h1_calls.push(tokio::spawn(async move { read_answer(&mut tcp).await }));
    }
    for call in h2_calls {
        let (status, headers, _) = call.await.unwrap();
        assert_eq!(status, 401, "{headers:?}");
    }
    for call in h1_calls {
        let answer = call.await.unwrap();
        let status = answer.header("grpc-status").map(str::to_owned);
        assert_eq!(status.as_deref(), Some("16"), "{answer:?}");
    }
    let after = rss_bytes(pid);
    let grown = after.saturating_sub(before);
    assert!(
        grown < 32 * 1024 * 1024,
        "RSS grew by {} MiB ({} → {} MiB)",
        grown >> 20,
        before >> 20,
        after >> 20
    );
    drop(h2_streams);
}

/// A caller's unfinished request bytes are capped: a second upload that
/// would pass `--max-request-memory-per-caller` is refused
/// RESOURCE_EXHAUSTED, and once the first call ends its bytes are free.
#[tokio::test(flavor = "multi_thread")]
async fn a_caller_cannot_hold_more_request_memory_than_its_cap() {
    let (_dir, server, addr) = start(&[
        "--default-timeout",
        "3s",
        "--rate-limit",
        "0",
        "--max-request-memory-per-caller",
        "100000",
    ]);
    let metrics = server.metrics.unwrap();
    let editor = bearer(Role::Editor);
    let half = format!(r#"{{"name":"{}"#, "a".repeat(60_000));
    let head = post_head("CreateUser", "application/json", 200_000, &[&editor]);
    let mut first = http1(addr, &head, half.as_bytes()).await;
    // The first's bytes are held before the second arrives.
    crate::support::metrics::wait_for(metrics, "usersvc_request_bytes_held", 60_000.0).await;
    let mut second = http1(addr, &head, half.as_bytes()).await;
    let answer = read_answer(&mut second).await;
    assert_eq!(
        (answer.status, answer.code()),
        (429, "resource_exhausted".into())
    );
    assert!(String::from_utf8_lossy(&answer.body).contains("100000 bytes"));
    let answer = read_answer(&mut first).await;
    assert_eq!(answer.code(), "deadline_exceeded");
    let text = scrape(metrics).await;
    assert_eq!(
        value_or_zero(&text, "usersvc_request_bytes_held"),
        0.0,
        "{text}"
    );

    // Freed: a whole call of the same size goes through.
    let body = format!(
        r#"{{"name":"{}","email":"x@example.com"}}"#,
        "a".repeat(60_000)
    );
    let head = post_head("CreateUser", "application/json", body.len(), &[&editor]);
    let answer = exchange(addr, &head, body.as_bytes()).await;
    assert_ne!(answer.code(), "resource_exhausted", "{answer:?}");
}

/// Every call refused by the web layer from its headers or its body gets
/// an access line, the metrics with `protocol="connect"`, and its request
/// id back; a content type of the wrong kind for the method gets 415 as
/// from connect-go, and a GET with side effects 405. (Before, none of them
/// reached the access log or the metrics.)
#[tokio::test(flavor = "multi_thread")]
async fn every_web_refusal_is_logged_counted_and_echoes_its_id() {
    let (_dir, mut server, addr) = start(&["--rate-limit", "0", "--max-message-bytes", "65536"]);
    let metrics = server.metrics.unwrap();
    let editor = bearer(Role::Editor);
    let bomb = {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b' '; 1024 * 1024]).unwrap();
        gz.finish().unwrap()
    };
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        (
            "bad-json",
            post_head(
                "GetUser",
                "application/json",
                5,
                &[&editor, "x-request-id: bad-json"],
            ),
            b"{bad}".to_vec(),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "bad-timeout",
            post_head(
                "GetUser",
                "application/json",
                2,
                &[
                    &editor,
                    "x-request-id: bad-timeout",
                    "connect-timeout-ms: soon",
                ],
            ),
            b"{}".to_vec(),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "gzip-bomb",
            post_head(
                "CreateUser",
                "application/json",
                bomb.len(),
                &[&editor, "x-request-id: gzip-bomb", "content-encoding: gzip"],
            ),
            bomb.clone(),
            429,
            "RESOURCE_EXHAUSTED",
        ),
        (
            "unary-to-stream",
            post_head(
                "ListUsers",
                "application/json",
                2,
                &[&editor, "x-request-id: unary-to-stream"],
            ),
            b"{}".to_vec(),
            415,
            "UNKNOWN",
        ),
        (
            "stream-to-unary",
            post_head(
                "GetUser",
                "application/connect+json",
                7,
                &[&editor, "x-request-id: stream-to-unary"],
            ),
            envelope(0, b"{}"),
            415,
            "UNKNOWN",
        ),
        (
            "get-with-effects",
            format!(
                "GET {SERVICE}/DeleteUser?connect=v1&encoding=json&message=%7B%7D HTTP/1.1\r\nhost: localhost\r\n{editor}\r\nx-request-id: get-with-effects\r\n\r\n"
            ),
            Vec::new(),
            405,
            "UNKNOWN",
        ),
    ];
    for (id, head, body, status, _) in &cases {
        let answer = exchange(addr, head, body).await;
        assert_eq!(answer.status, *status, "{id}: {answer:?}");
        assert_eq!(answer.header("x-request-id"), Some(*id), "{id}: {answer:?}");
        if *status == 415 {
            assert!(answer.header("accept-post").is_some(), "{id}: {answer:?}");
        }
        if *status == 405 {
            assert_eq!(answer.header("allow"), Some("POST"), "{id}");
        }
    }
    let text = scrape(metrics).await;
    for (method, kind, code, count) in [
        ("GetUser", "unary", "InvalidArgument", 2.0),
        ("CreateUser", "unary", "ResourceExhausted", 1.0),
        ("ListUsers", "server_stream", "Unknown", 1.0),
        ("GetUser", "unary", "Unknown", 1.0),
        ("DeleteUser", "unary", "Unknown", 1.0),
    ] {
        let series = format!(
            "grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"{method}\",grpc_service=\"techoral.users.v1.UserService\",grpc_type=\"{kind}\",protocol=\"connect\"}}"
        );
        assert_eq!(value_or_zero(&text, &series), count, "{series}\n{text}");
    }
    server.terminate();
    let (_, log) = server.wait_with_log();
    for (id, _, _, _, code) in &cases {
        let line = log
            .iter()
            .find(|l| l.contains("rpc finished") && l.contains(&format!("request_id=\"{id}\"")))
            .unwrap_or_else(|| panic!("no access line for {id} in:\n{}", log.join("\n")));
        assert!(line.contains(&format!("code=\"{code}\"")), "{line}");
        assert!(line.contains("protocol=\"connect\""), "{line}");
    }
}

/// `--max-header-list-size` bounds an HTTP/1.1 head as it does HTTP/2's:
/// past it, 431. (Before, a 64 KiB header over HTTP/1.1 got 200.)
#[tokio::test(flavor = "multi_thread")]
async fn http1_heads_past_the_header_limit_get_431() {
    let (_dir, _server, addr) = start(&["--max-header-list-size", "32768"]);
    let get = |size: usize| {
        format!(
            "GET / HTTP/1.1\r\nhost: localhost\r\nx-padding: {}\r\n\r\n",
            "a".repeat(size)
        )
    };
    let mut tcp = http1(addr, &get(20 * 1024), b"").await;
    assert_eq!(read_answer(&mut tcp).await.status, 200, "under the limit");
    let mut tcp = http1(addr, &get(64 * 1024), b"").await;
    assert_eq!(read_answer(&mut tcp).await.status, 431);
}

/// Reads until the server closes the connection; what it sent before.
async fn until_closed(tcp: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut seen = Vec::new();
    tokio::time::timeout(HUNG, async {
        let mut chunk = [0; 4096];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    seen
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// A connection that sends no request head, half an HTTP/2 preface, or
/// nothing after its TLS handshake is closed at `--header-read-timeout`;
/// an HTTP/2 connection with no call open is told GOAWAY (NO_ERROR) at
/// `--idle-connection-timeout`, and closed. (Before, each was still open
/// after 45 s.)
#[tokio::test(flavor = "multi_thread")]
async fn silent_and_idle_connections_are_closed() {
    let (_dir, _server, addr) = start(&[
        "--header-read-timeout",
        "1s",
        "--idle-connection-timeout",
        "2s",
        "--keepalive-timeout",
        "1s",
    ]);
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(until_closed(&mut silent).await.is_empty());

    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(until_closed(&mut half).await.is_empty());

    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(PREFACE).await.unwrap();
    idle.write_all(EMPTY_SETTINGS).await.unwrap();
    let frames = until_closed(&mut idle).await;
    let goaway = frame_types(&frames)
        .into_iter()
        .find(|(kind, _)| *kind == 7)
        .expect("a GOAWAY before the close");
    assert_eq!(&goaway.1[4..8], &[0, 0, 0, 0], "NO_ERROR");

    // TLS: the handshake, then silence.
    let pki = crate::tls::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let server = ServerProcess::start(
        &[
            "--store",
            "memory",
            "--header-read-timeout",
            "1s",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        dir.path(),
    );
    let addr: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let ca = std::fs::read(pki.path("good-ca.pem")).unwrap();
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    for cert in tokio_rustls::rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("the handshake");
    assert!(until_closed(&mut tls).await.is_empty());
}

/// The HTTP/2 frames in `bytes`: type and payload.
fn frame_types(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        if bytes.len() < 9 + len {
            break;
        }
        frames.push((bytes[3], bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    frames
}

/// Past `--max-connections-per-client`, a new connection is closed at once,
/// counted, and warned of; one that closes gives its place back.
#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_cap_are_closed_at_once_and_counted() {
    let (_dir, mut server, addr) = start(&["--max-connections-per-client", "3"]);
    let metrics = server.metrics.unwrap();
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(PREFACE).await.unwrap();
        tcp.write_all(EMPTY_SETTINGS).await.unwrap();
        open.push(tcp);
    }
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    // The cap, not a timeout: the header timeout is 10 s, the guard 30 s,
    // and the server has not been sent a byte to answer.
    assert!(until_closed(&mut fourth).await.is_empty());
    let text = scrape(metrics).await;
    assert_eq!(
        value_or_zero(
            &text,
            "usersvc_connections_refused_total{cap=\"per_client\"}"
        ),
        1.0,
        "{text}"
    );
    drop(open.pop());
    // Its place is given back once the server sees it closed.
    let mut served = false;
    for _ in 0..50 {
        let client = crate::support::admin_client(&server.url);
        if client
            .get_user("0190c0de-0000-7000-8000-000000000000")
            .await
            .is_err_and(|s| s.code() == tonic::Code::NotFound)
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "a connection is served once another has closed");
    server.terminate();
    let (_, log) = server.wait_with_log();
    assert!(
        log.iter()
            .any(|l| l.contains("WARN") && l.contains("connections refused")),
        "{}",
        log.join("\n")
    );
}

/// On a loopback address, a browser protocol under another host name (a
/// DNS-rebinding page's) is refused 403, unless `--allowed-host` names it;
/// gRPC is not affected.
#[tokio::test(flavor = "multi_thread")]
async fn browsers_reach_a_loopback_server_only_under_loopback_names() {
    let ask = |addr: SocketAddr, host: &'static str| async move {
        let head = format!(
            "POST {SERVICE}/GetUser HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n"
        );
        let mut tcp = http1(addr, &head, br#"{"userId":"x"}"#).await;
        read_answer(&mut tcp).await.status
    };
    let console = |addr: SocketAddr, host: &'static str| async move {
        let mut tcp = http1(
            addr,
            &format!("GET / HTTP/1.1\r\nhost: {host}\r\n\r\n"),
            b"",
        )
        .await;
        read_answer(&mut tcp).await.status
    };
    let (_dir, _server, addr) = start(&[]);
    assert_eq!(ask(addr, "evil.example:50051").await, 403);
    assert_eq!(console(addr, "evil.example").await, 403);
    assert_eq!(
        ask(addr, "localhost:50051").await,
        404,
        "served: no such user"
    );
    assert_eq!(ask(addr, "127.0.0.1").await, 404);
    assert_eq!(console(addr, "[::1]:50051").await, 200);
    // gRPC under the same name is served.
    let h2 = http2(addr).await;
    let mut client = h2.clone().ready().await.unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri("http://evil.example/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    stream
        .send_data(Bytes::from(envelope(0, b"")), true)
        .unwrap();
    let response = tokio::time::timeout(HUNG, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    while body.data().await.is_some() {}
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    drop(h2.clone());

    let (_dir, _server, addr) = start(&["--allowed-host", "Dev.Example"]);
    assert_eq!(
        ask(addr, "dev.example:8080").await,
        404,
        "an allowed host is served"
    );
    assert_eq!(ask(addr, "evil.example").await, 403);
}

/// The body limits of the web protocols: an HTTP/1.1 body over the message
/// limit gets RESOURCE_EXHAUSTED, read by the client rather than cut off;
/// a gzipped message that inflates past the limit in a Connect stream or
/// in gRPC-Web is RESOURCE_EXHAUSTED too.
#[tokio::test(flavor = "multi_thread")]
async fn web_bodies_are_bounded_as_messages() {
    let (_dir, _server, addr) = start(&["--rate-limit", "0", "--max-message-bytes", "65536"]);
    let editor = bearer(Role::Editor);
    let body = format!(r#"{{"name":"{}"}}"#, "a".repeat(100 * 1024));
    let head = post_head("CreateUser", "application/json", body.len(), &[&editor]);
    let answer = exchange(addr, &head, body.as_bytes()).await;
    assert_eq!(
        (answer.status, answer.code()),
        (429, "resource_exhausted".into())
    );

    let bomb = {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b' '; 1024 * 1024]).unwrap();
        gz.finish().unwrap()
    };
    let message = envelope(1, &bomb);
    let head = post_head(
        "BulkCreateUsers",
        "application/connect+json",
        message.len(),
        &[&editor, "connect-content-encoding: gzip"],
    );
    let answer = exchange(addr, &head, &message).await;
    let end = String::from_utf8_lossy(&answer.body).into_owned();
    assert!(end.contains("resource_exhausted"), "{end}");

    let head = post_head(
        "CreateUser",
        "application/grpc-web+proto",
        message.len(),
        &[&editor, "grpc-encoding: gzip"],
    );
    let answer = exchange(addr, &head, &message).await;
    let text = String::from_utf8_lossy(&answer.body).into_owned()
        + answer.header("grpc-status").unwrap_or_default();
    assert!(text.contains("grpc-status:8") || text == "8", "{answer:?}");
}

/// CORS is off unless origins are listed: no CORS header on an answer, and
/// a preflight refused 403.
#[tokio::test(flavor = "multi_thread")]
async fn cors_is_off_by_default() {
    let (_dir, _server, addr) = start(&[]);
    let head = format!(
        "POST {SERVICE}/GetUser HTTP/1.1\r\nhost: localhost\r\norigin: https://app.example\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"
    );
    let answer = exchange(addr, &head, b"{}").await;
    assert!(
        answer
            .headers
            .iter()
            .all(|(n, _)| !n.starts_with("access-control-")),
        "{answer:?}"
    );
    assert!(answer.header("vary").is_none(), "{answer:?}");
    let preflight = format!(
        "OPTIONS {SERVICE}/GetUser HTTP/1.1\r\nhost: localhost\r\norigin: https://app.example\r\naccess-control-request-method: POST\r\n\r\n"
    );
    let answer = exchange(addr, &preflight, b"").await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.header("access-control-allow-origin").is_none());
}
