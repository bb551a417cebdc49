//! Connect and gRPC-Web on the gRPC port, called with curl as a person
//! would call them, against a real `usersvc serve`: unary POST and GET, a
//! server stream, errors with their HTTP status and details, gzip, the
//! deadline header, HTTP/1.1 and HTTP/2, and CORS.

use std::process::Command;

use base64::Engine;
use prost::Message;
use usersvc::domain::Role;

use crate::support::process::ServerProcess;
use crate::support::token;

const SERVICE: &str = "techoral.users.v1.UserService";
const PAGE: &str = "http://localhost:8000";

/// `google.rpc.BadRequest`, to read the detail a Connect error carries.
#[derive(Clone, PartialEq, prost::Message)]
struct BadRequest {
    #[prost(message, repeated, tag = "1")]
    field_violations: Vec<FieldViolation>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FieldViolation {
    #[prost(string, tag = "1")]
    field: String,
    #[prost(string, tag = "2")]
    description: String,
}

/// One HTTP exchange as curl saw it.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Runs curl with `args`, its answer's head and body.
fn curl(args: &[&str]) -> Answer {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let body = dir.path().join("body");
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(args)
        .output()
        .expect("curl is installed");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let head = std::fs::read_to_string(head).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: std::fs::read(body).unwrap(),
    }
}

fn start() -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        &[
            "--store",
            "memory",
            "--rate-limit",
            "0",
            "--cors-origin",
            PAGE,
        ],
        dir.path(),
    );
    (dir, server)
}

fn url(server: &ServerProcess, method: &str) -> String {
    format!("{}/{SERVICE}/{method}", server.url)
}

/// A Connect JSON POST of `body` to `url`, with `headers`.
fn post_json(url: &str, headers: &[&str], body: &str) -> Answer {
    let mut args = vec!["-X", "POST", url, "-H", "content-type: application/json"];
    for header in headers {
        args.extend(["-H", header]);
    }
    args.extend(["-d", body]);
    curl(&args)
}

fn bearer(role: Role) -> String {
    format!("authorization: Bearer {}", token(role))
}

/// Connect unary POST with JSON: create, read back by POST and by GET,
/// with int64 as a string and the enum by name, over HTTP/1.1 and HTTP/2.
#[test]
fn connect_json_creates_and_reads_over_http1_and_http2() {
    let (_dir, server) = start();
    let admin = bearer(Role::Admin);
    let created = post_json(
        &url(&server, "CreateUser"),
        &[&admin, "x-request-id: connect-create-1"],
        r#"{"name":"Zoë Ångström","email":"zoe@example.com","role":"USER_ROLE_EDITOR","bio":""}"#,
    );
    assert_eq!(
        created.status,
        200,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(created.header("content-type"), Some("application/json"));
    assert_eq!(created.header("x-request-id"), Some("connect-create-1"));
    let user = created.json();
    assert_eq!(user["name"], "Zoë Ångström");
    assert_eq!(user["role"], "USER_ROLE_EDITOR");
    assert_eq!(user["bio"], "", "a present optional is written, even empty");
    assert!(user["createdAt"].is_string(), "int64 as a string: {user}");
    let id = user["id"].as_str().unwrap().to_owned();

    for version in ["--http1.1", "--http2-prior-knowledge"] {
        // The .proto's own field name is accepted on input.
        let got = curl(&[
            version,
            "-X",
            "POST",
            &url(&server, "GetUser"),
            "-H",
            "content-type: application/json",
            "-d",
            &format!(r#"{{"user_id":"{id}"}}"#),
        ]);
        assert_eq!(got.status, 200, "{version}");
        assert_eq!(got.json()["user"], user, "{version}");
    }

    let message = format!(r#"{{"userId":"{id}"}}"#);
    let get = curl(&[
        "-G",
        &url(&server, "GetUser"),
        "--data-urlencode",
        "connect=v1",
        "--data-urlencode",
        "encoding=json",
        "--data-urlencode",
        &format!("message={message}"),
    ]);
    assert_eq!(get.status, 200);
    assert_eq!(get.json()["user"], user);

    // GET with a binary message, base64url.
    let binary = usersvc::pb::GetUserRequest {
        user_id: id.clone(),
    }
    .encode_to_vec();
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(binary);
    let get = curl(&[&format!(
        "{}?connect=v1&encoding=proto&base64=1&message={encoded}",
        url(&server, "GetUser")
    )]);
    assert_eq!(get.status, 200);
    assert_eq!(get.header("content-type"), Some("application/proto"));
    let answer = usersvc::pb::GetUserResponse::decode(&get.body[..]).unwrap();
    assert_eq!(answer.user.unwrap().id, id);

    // A method with side effects is not for GET: 405 and `Allow: POST`,
    // as connect-go answers.
    let get = curl(&[&format!(
        "{}?connect=v1&encoding=json&message=%7B%7D",
        url(&server, "DeleteUser")
    )]);
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow"), Some("POST"));
}

/// Errors: the code, the message, the HTTP status the Connect spec gives
/// it, and the field violations as a google.rpc.BadRequest detail.
#[test]
fn connect_errors_carry_code_status_and_violations() {
    let (_dir, server) = start();
    let post = |method: &str, headers: &[&str], body: &str| {
        post_json(&url(&server, method), headers, body)
    };
    let editor = bearer(Role::Editor);
    let viewer = bearer(Role::Viewer);

    let invalid = post("CreateUser", &[&editor], r#"{"name":"","email":"nope"}"#);
    assert_eq!(invalid.status, 400);
    let error = invalid.json();
    assert_eq!(error["code"], "invalid_argument");
    assert!(
        error["message"].as_str().unwrap().contains("email"),
        "{error}"
    );
    let detail = &error["details"][0];
    assert_eq!(detail["type"], "google.rpc.BadRequest");
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(detail["value"].as_str().unwrap())
        .unwrap();
    let fields: Vec<_> = BadRequest::decode(&bytes[..])
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["name", "email"]);

    let unknown = post("GetUser", &[], r#"{"userId":"x","colour":"red"}"#);
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json()["code"], "invalid_argument");
    assert!(
        unknown.json()["message"]
            .as_str()
            .unwrap()
            .contains("colour")
    );

    let missing = post(
        "GetUser",
        &[],
        r#"{"userId":"0190c0de-0000-7000-8000-000000000000"}"#,
    );
    assert_eq!(
        (missing.status, missing.json()["code"].as_str()),
        (404, Some("not_found"))
    );

    let anonymous = post("CreateUser", &[], "{}");
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["code"], "unauthenticated");

    let refused = post("DeleteUser", &[&viewer], r#"{"userId":"x"}"#);
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["code"], "permission_denied");

    let bad_timeout = post(
        "GetUser",
        &["connect-timeout-ms: soon"],
        r#"{"userId":"x"}"#,
    );
    assert_eq!(bad_timeout.status, 400);
    assert!(
        bad_timeout.json()["message"]
            .as_str()
            .unwrap()
            .contains("connect-timeout-ms")
    );
}

/// gzip both ways: a gzipped request body is read, and a large answer is
/// gzipped for a client that accepts it.
#[test]
fn connect_reads_and_writes_gzip() {
    let (dir, server) = start();
    let body = dir.path().join("request.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(
        &mut encoder,
        format!(
            r#"{{"name":"Gz","email":"gz@example.com","bio":"{}"}}"#,
            "b".repeat(1500)
        )
        .as_bytes(),
    )
    .unwrap();
    std::fs::write(&body, encoder.finish().unwrap()).unwrap();
    let created = curl(&[
        "-X",
        "POST",
        &url(&server, "CreateUser"),
        "-H",
        "content-type: application/json",
        "-H",
        "content-encoding: gzip",
        "-H",
        "accept-encoding: gzip",
        "-H",
        &bearer(Role::Admin),
        "--data-binary",
        &format!("@{}", body.display()),
    ]);
    assert_eq!(
        created.status,
        200,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(created.header("content-encoding"), Some("gzip"));
    let mut json = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&created.body[..]),
        &mut json,
    )
    .unwrap();
    let user: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(user["bio"].as_str().unwrap().len(), 1500);
}

/// A Connect server stream over HTTP/1.1: the users as enveloped JSON, then
/// the end-of-stream message; a bidi stream over HTTP/1.1 is refused
/// clearly, not left to hang.
#[test]
fn connect_streams_list_users_and_refuse_bidi_over_http1() {
    let (dir, server) = start();
    let admin = bearer(Role::Admin);
    for i in 0..3 {
        let created = post_json(
            &url(&server, "CreateUser"),
            &[&admin],
            &format!(r#"{{"name":"U{i}","email":"u{i}@example.com"}}"#),
        );
        assert_eq!(created.status, 200);
    }
    let request = dir.path().join("list");
    std::fs::write(&request, envelope(0, b"{}")).unwrap();
    let listed = curl(&[
        "--http1.1",
        "-X",
        "POST",
        &url(&server, "ListUsers"),
        "-H",
        "content-type: application/connect+json",
        "-H",
        &admin,
        "--data-binary",
        &format!("@{}", request.display()),
    ]);
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.header("content-type"),
        Some("application/connect+json")
    );
    let messages = envelopes(&listed.body);
    let names: Vec<_> = messages[..3]
        .iter()
        .map(|(flags, m)| {
            assert_eq!(*flags, 0);
            serde_json::from_slice::<serde_json::Value>(m).unwrap()["name"].clone()
        })
        .collect();
    assert_eq!(names, ["U0", "U1", "U2"]);
    let (flags, end) = &messages[3];
    assert_eq!(*flags, 2, "the end of the stream");
    let end: serde_json::Value = serde_json::from_slice(end).unwrap();
    assert!(end.get("error").is_none(), "{end}");

    std::fs::write(&request, envelope(0, br#"{"userId":"*"}"#)).unwrap();
    let watched = curl(&[
        "--http1.1",
        "-X",
        "POST",
        &url(&server, "WatchUserEvents"),
        "-H",
        "content-type: application/connect+json",
        "-H",
        &admin,
        "--data-binary",
        &format!("@{}", request.display()),
    ]);
    let messages = envelopes(&watched.body);
    let (flags, end) = messages.last().unwrap();
    assert_eq!(*flags, 2);
    let end: serde_json::Value = serde_json::from_slice(end).unwrap();
    assert_eq!(end["error"]["code"], "unimplemented", "{end}");
    assert!(end["error"]["message"].as_str().unwrap().contains("HTTP/2"));
}

/// CORS: a listed origin's preflight is allowed with the headers a Connect
/// or gRPC-Web client sends, and its answers expose the gRPC status and the
/// request id; any other origin gets no CORS header at all.
#[test]
fn cors_allows_the_listed_origin_only() {
    let (_dir, server) = start();
    let preflight = |origin: &str| {
        curl(&[
            "-X",
            "OPTIONS",
            &url(&server, "CreateUser"),
            "-H",
            &format!("origin: {origin}"),
            "-H",
            "access-control-request-method: POST",
            "-H",
            "access-control-request-headers: content-type,authorization,connect-protocol-version,x-grpc-web,idempotency-key,x-request-id",
        ])
    };
    let allowed = preflight(PAGE);
    assert!(allowed.status < 300, "{}", allowed.status);
    assert_eq!(allowed.header("access-control-allow-origin"), Some(PAGE));
    let headers = allowed.header("access-control-allow-headers").unwrap();
    for header in [
        "authorization",
        "connect-protocol-version",
        "x-grpc-web",
        "idempotency-key",
        "x-request-id",
    ] {
        assert!(headers.contains(header), "{header} in {headers}");
    }

    let refused = preflight("http://evil.example");
    assert_eq!(refused.status, 403);
    assert!(
        refused
            .headers
            .iter()
            .all(|(n, _)| !n.to_ascii_lowercase().starts_with("access-control")),
        "{:?}",
        refused.headers
    );

    let call = |origin: &str| {
        post_json(
            &url(&server, "GetUser"),
            &[&format!("origin: {origin}")],
            r#"{"userId":"missing"}"#,
        )
    };
    let answer = call(PAGE);
    assert_eq!(answer.header("access-control-allow-origin"), Some(PAGE));
    let exposed = answer.header("access-control-expose-headers").unwrap();
    for header in [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "x-request-id",
    ] {
        assert!(exposed.contains(header), "{header} in {exposed}");
    }
    let answer = call("http://evil.example");
    assert!(answer.header("access-control-allow-origin").is_none());
}

/// The access log and the metrics say which protocol each call came in.
#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_and_metrics_name_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        &["--store", "memory", "--metrics-addr", "127.0.0.1:0"],
        dir.path(),
    );
    let get = url(&server, "GetUser");
    tokio::task::spawn_blocking(move || post_json(&get, &[], r#"{"userId":"x"}"#))
        .await
        .unwrap();
    let text = crate::support::metrics::scrape(server.metrics.unwrap()).await;
    let series = "grpc_server_handled_total{grpc_code=\"NotFound\",grpc_method=\"GetUser\",grpc_service=\"techoral.users.v1.UserService\",grpc_type=\"unary\",protocol=\"connect\"}";
    assert_eq!(crate::support::metrics::value(&text, series), 1.0);
    server.terminate();
    let (_, log) = tokio::task::spawn_blocking(move || server.wait_with_log())
        .await
        .unwrap();
    assert!(
        log.iter()
            .any(|line| line.contains("rpc finished") && line.contains("protocol=\"connect\"")),
        "{log:#?}"
    );
}

fn envelope(flags: u8, message: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn envelopes(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        out.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    out
}

/// gRPC-Web as a browser's grpc-web client sends it, in base64
/// (`application/grpc-web-text`) and in binary: the message, then the
/// trailers frame with the status, over HTTP/1.1.
#[test]
fn grpc_web_text_and_binary_answer_with_a_trailers_frame() {
    let (dir, server) = start();
    let created = post_json(
        &url(&server, "CreateUser"),
        &[&bearer(Role::Admin)],
        r#"{"name":"Web","email":"web@example.com"}"#,
    );
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let request = envelope(
        0,
        &usersvc::pb::GetUserRequest {
            user_id: id.clone(),
        }
        .encode_to_vec(),
    );
    for (content_type, text) in [
        ("application/grpc-web-text", true),
        ("application/grpc-web+proto", false),
    ] {
        let body = dir.path().join("request");
        let sent = if text {
            base64::engine::general_purpose::STANDARD
                .encode(&request)
                .into_bytes()
        } else {
            request.clone()
        };
        std::fs::write(&body, sent).unwrap();
        let answer = curl(&[
            "--http1.1",
            "-X",
            "POST",
            &url(&server, "GetUser"),
            "-H",
            &format!("content-type: {content_type}"),
            "-H",
            // As grpc-web's JavaScript client asks for the answer.
            &format!("accept: {content_type}"),
            "-H",
            "x-grpc-web: 1",
            "--data-binary",
            &format!("@{}", body.display()),
        ]);
        assert_eq!(answer.status, 200, "{content_type}");
        assert!(
            answer
                .header("content-type")
                .unwrap()
                .starts_with(content_type),
            "{content_type}: {:?}",
            answer.header("content-type")
        );
        let bytes = if text {
            base64::engine::general_purpose::STANDARD
                .decode(&answer.body)
                .unwrap()
        } else {
            answer.body.clone()
        };
        let frames = envelopes(&bytes);
        assert_eq!(
            frames.len(),
            2,
            "{content_type}: a message and the trailers"
        );
        let user = usersvc::pb::GetUserResponse::decode(&frames[0].1[..])
            .unwrap()
            .user
            .unwrap();
        assert_eq!(user.id, id, "{content_type}");
        assert_eq!(frames[1].0, 0x80, "{content_type}: the trailers frame");
        let trailers = String::from_utf8(frames[1].1.clone()).unwrap();
        assert!(
            trailers.contains("grpc-status:0"),
            "{content_type}: {trailers}"
        );
    }
}
