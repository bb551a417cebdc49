//! What one hostile or careless client can hold, each shown on a real
//! `usersvc serve`: subscriptions and watch streams are capped, watch ids
//! are checked, stream messages take from the rate limit, no header lifts
//! the deadline, an idle upload is ended, uploads per caller are capped, a
//! stream ends when its token does, and an old connection really closes.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use usersvc::auth::Claims;
use usersvc::client::Client;
use usersvc::domain::Role;
use usersvc::pb::{self, UserRole};

use crate::support::process::ServerProcess;
use crate::support::{admin_client, client_as, create_request};

fn start(flags: &[&str]) -> (ServerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--store", "memory"];
    args.extend_from_slice(flags);
    (ServerProcess::start(&args, dir.path()), dir)
}

/// An open watch: its subscriptions' sender, and its events.
struct Watch {
    subscribe: mpsc::Sender<pb::EventStreamRequest>,
    events: tonic::Streaming<pb::UserEvent>,
}

async fn watch(client: &Client) -> Result<Watch, tonic::Status> {
    let (subscribe, rx) = mpsc::channel(16);
    let events = client.watch_user_events(ReceiverStream::new(rx)).await?;
    Ok(Watch { subscribe, events })
}

impl Watch {
    /// Subscribes to `id` and returns what the server answers.
    async fn subscribe(&mut self, id: &str) -> Result<pb::UserEvent, tonic::Status> {
        self.subscribe
            .send(pb::EventStreamRequest {
                user_id: id.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap();
        Ok(self.events.message().await?.expect("an answer"))
    }
}

fn uuid(n: u32) -> String {
    format!("0190c0de-0000-7000-8000-{n:012}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_holds_at_most_max_subscriptions_of_well_formed_ids() {
    let (server, _dir) = start(&["--max-subscriptions", "5"]);
    let viewer = client_as(&server.url, Role::Viewer);
    let mut stream = watch(&viewer).await.unwrap();
    for n in 0..5 {
        assert_eq!(
            stream.subscribe(&uuid(n)).await.unwrap().event_type,
            "subscribed"
        );
    }
    // The same id again is no new subscription.
    assert_eq!(
        stream.subscribe(&uuid(0)).await.unwrap().event_type,
        "subscribed"
    );
    let status = stream.subscribe(&uuid(5)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "a watch stream may hold at most 5 subscriptions; open another stream"
    );
    assert!(
        stream.events.message().await.unwrap().is_none(),
        "the stream ended"
    );

    for bad in [
        "not-a-uuid",
        &"x".repeat(128),
        "0190C0DE-0000-7000-8000-000000000001",
    ] {
        let mut stream = watch(&viewer).await.unwrap();
        let status = stream.subscribe(bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}: {status:?}");
        assert_eq!(crate::support::bad_request_fields(&status), ["user_id"]);
        assert!(
            stream.events.message().await.unwrap().is_none(),
            "the stream ended"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_streams_are_capped_per_caller_and_in_all() {
    let (server, _dir) = start(&[
        "--max-watch-streams-per-caller",
        "2",
        "--max-watch-streams",
        "3",
    ]);
    let viewer = client_as(&server.url, Role::Viewer);
    let first = watch(&viewer).await.unwrap();
    let _second = watch(&viewer).await.unwrap();
    let status = watch(&viewer).await.err().expect("a third is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "at most 2 watch streams may be open at once per caller"
    );

    let editor = client_as(&server.url, Role::Editor);
    let _third = watch(&editor).await.unwrap();
    let status = watch(&editor)
        .await
        .err()
        .expect("a fourth in all is refused");
    assert_eq!(
        status.message(),
        "at most 3 watch streams may be open at once in all"
    );

    // A stream that ends gives its place back.
    drop(first);
    let mut again = None;
    for _ in 0..100 {
        match watch(&viewer).await {
            Ok(stream) => {
                again = Some(stream);
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(
        again.is_some(),
        "the closed stream's place was not given back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_on_a_watch_take_from_the_callers_rate_limit() {
    let (server, _dir) = start(&["--rate-limit", "0.01", "--rate-burst", "4"]);
    let viewer = client_as(&server.url, Role::Viewer);
    let mut stream = watch(&viewer).await.unwrap(); // the call: one token
    for n in 0..3 {
        assert_eq!(
            stream.subscribe(&uuid(n)).await.unwrap().event_type,
            "subscribed"
        );
    }
    let status = stream.subscribe(&uuid(3)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("rate limit exceeded; retry in"),
        "{status:?}"
    );
}

/// Opens `path` over raw HTTP/2 with `headers`, sends `body` and keeps the
/// request stream open; returns the gRPC status the server ends it with.
async fn raw_call(url: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> (i32, String) {
    let addr = url.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::post(format!("{url}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let (response, mut send) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    if !body.is_empty() {
        send.send_data(Bytes::copy_from_slice(body), false).unwrap();
    }
    let response = tokio::time::timeout(Duration::from_secs(20), response)
        .await
        .expect("the server ends the call; it does not hang")
        .unwrap();
    let status_of = |headers: &http::HeaderMap| {
        let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
        let message = headers
            .get("grpc-message")
            .map(|m| m.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Some((code, message))
    };
    if let Some(status) = status_of(response.headers()) {
        drop(send);
        return status;
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    drop(send);
    status_of(&trailers).expect("a grpc-status")
}

fn bearer(role: Role) -> (&'static str, String) {
    (
        "authorization",
        format!("Bearer {}", crate::support::token(role)),
    )
}

const BULK: &str = "/techoral.users.v1.UserService/BulkCreateUsers";

#[tokio::test(flavor = "multi_thread")]
async fn no_grpc_timeout_header_lifts_the_deadline() {
    let (server, _dir) = start(&["--default-timeout", "1s", "--stream-idle-timeout", "1h"]);
    for timeout in ["x", "-5S", "5", "123456789S"] {
        let headers = [bearer(Role::Admin), ("grpc-timeout", timeout.to_owned())];
        let (code, message) = raw_call(&server.url, BULK, &headers, &[]).await;
        assert_eq!(
            code,
            Code::DeadlineExceeded as i32,
            "grpc-timeout {timeout}: {message}"
        );
        assert!(message.contains("default"), "{timeout}: {message}");
    }
    // A public GetUser that sends its headers and never a body.
    let (code, message) = raw_call(
        &server.url,
        "/techoral.users.v1.UserService/GetUser",
        &[],
        &[],
    )
    .await;
    assert_eq!(code, Code::DeadlineExceeded as i32, "{message}");
    drop(server);

    // A deadline over the server's most is cut to it.
    let (server, _dir) = start(&[
        "--default-timeout",
        "1h",
        "--max-timeout",
        "1s",
        "--stream-idle-timeout",
        "1h",
    ]);
    let headers = [bearer(Role::Admin), ("grpc-timeout", "2H".to_owned())];
    let (code, message) = raw_call(&server.url, BULK, &headers, &[]).await;
    assert_eq!(code, Code::DeadlineExceeded as i32, "{message}");
    assert!(message.contains("most"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_goes_quiet_is_ended_and_stores_nothing() {
    let (server, _dir) = start(&["--default-timeout", "1h", "--stream-idle-timeout", "1s"]);
    let (items, rx) = mpsc::channel(1);
    items
        .send(create_request(
            "Quiet",
            "quiet@example.com",
            UserRole::Viewer,
        ))
        .await
        .unwrap();
    let status = admin_client(&server.url)
        .bulk_create_users(ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        "the request stream sent nothing for 1s; nothing was created"
    );
    drop(items);
    assert!(
        crate::support::list_all(&admin_client(&server.url))
            .await
            .is_empty(),
        "nothing stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_held_open_are_capped_per_caller() {
    let (server, _dir) = start(&[
        "--max-bulk-streams-per-caller",
        "2",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let editor = client_as(&server.url, Role::Editor);
    let mut held = Vec::new();
    for n in 0..2 {
        let (items, rx) = mpsc::channel(1);
        items
            .send(create_request(
                "Held",
                &format!("held{n}@example.com"),
                UserRole::Viewer,
            ))
            .await
            .unwrap();
        let editor = editor.clone();
        held.push((
            items,
            tokio::spawn(async move { editor.bulk_create_users(ReceiverStream::new(rx)).await }),
        ));
    }
    // Both are open on the server.
    crate::support::metrics::wait_for_bulk_items(server.metrics.unwrap(), 2).await;
    let status = editor
        .bulk_create_users(tokio_stream::iter(vec![create_request(
            "Third",
            "third@example.com",
            UserRole::Viewer,
        )]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "at most 2 bulk creation streams may be open at once per caller"
    );
    // Another caller is not held back by this one.
    admin_client(&server.url)
        .bulk_create_users(tokio_stream::iter(vec![create_request(
            "Other",
            "other@example.com",
            UserRole::Viewer,
        )]))
        .await
        .unwrap();
    for (items, call) in held {
        drop(items);
        assert_eq!(call.await.unwrap().unwrap().total_count, 1);
    }
}

/// A client for `server` holding a viewer's token whose `exp` is `exp`.
fn expiring_viewer(server: &ServerProcess, exp: u64) -> Client {
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &Claims {
            sub: "short-lived".into(),
            role: Some(Role::Viewer),
            exp,
            iat: Some(exp - 34),
            nbf: None,
            iss: None,
            aud: None,
        },
        &jsonwebtoken::EncodingKey::from_secret(crate::support::SECRET),
    )
    .unwrap();
    let mut config = usersvc::client::ClientConfig::new(server.url.clone());
    config.token = Some(token);
    Client::new(config).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_ends_when_its_token_does_and_delivers_nothing_after() {
    let (server, _dir) = start(&[]);
    // A viewer token that expired 26 s ago: accepted for four more
    // seconds, within the 30 s leeway.
    let now = usersvc::clock::unix_seconds() as u64;
    let mut stream = watch(&expiring_viewer(&server, now - 26)).await.unwrap();
    assert_eq!(
        stream.subscribe("*").await.unwrap().event_type,
        "subscribed"
    );

    // Past exp + leeway, a change is made; the watcher must not see it.
    let expired = std::time::UNIX_EPOCH + Duration::from_secs(now - 26 + 30);
    let left = expired
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(500)).await;
    admin_client(&server.url)
        .create_user(
            create_request("Late", "late@example.com", UserRole::Viewer),
            None,
        )
        .await
        .unwrap();
    let next = stream.events.message().await;
    let status = next.expect_err("no event after the token expired");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        status.message(),
        "token expired: reconnect with a fresh token and re-read"
    );
}

/// With no change at all after the token's end, the watch still ends then:
/// its timer ends it, not the next event's check. (Without the timer the
/// stream would stay open for ever, and this test would fail at its guard.)
#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_watch_ends_when_its_token_does() {
    let (server, _dir) = start(&[]);
    // Expired 27 s ago: three more seconds within the 30 s leeway.
    let now = usersvc::clock::unix_seconds() as u64;
    let mut stream = watch(&expiring_viewer(&server, now - 27)).await.unwrap();
    assert_eq!(
        stream.subscribe("*").await.unwrap().event_type,
        "subscribed"
    );
    let next = tokio::time::timeout(Duration::from_secs(30), stream.events.message())
        .await
        .expect("the watch ends with its token, though nothing changed");
    let status = next.expect_err("no event: nothing changed");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        status.message(),
        "token expired: reconnect with a fresh token and re-read"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_past_its_age_is_closed_after_the_grace_even_with_a_watch_open() {
    let (server, _dir) = start(&[
        "--max-connection-age",
        "1s",
        "--max-connection-age-grace",
        "1s",
    ]);
    let viewer = client_as(&server.url, Role::Viewer);
    let mut stream = watch(&viewer).await.unwrap();
    assert_eq!(
        stream.subscribe("*").await.unwrap().event_type,
        "subscribed"
    );
    let end = tokio::time::timeout(Duration::from_secs(20), stream.events.message())
        .await
        .expect("the old connection was closed, ending the watch");
    assert!(end.is_err() || end.unwrap().is_none());
}
