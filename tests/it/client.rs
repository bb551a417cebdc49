//! The library client's promises: idempotent creates, and retries on
//! UNAVAILABLE for calls that are safe to repeat.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::proxy::Proxy;
use crate::support::{create_request, spawn_app, spawn_app_with};
use tonic::Code;
use usersvc::client::{Client, ClientConfig, RetryPolicy};
use usersvc::domain::Role;
use usersvc::pb::UserRole;

#[tokio::test]
async fn same_key_and_request_returns_the_same_user_once() {
    let app = spawn_app().await;
    let client = app.admin();
    let request = create_request("Ivy", "ivy@example.com", UserRole::Editor);
    let first = client
        .create_user(request.clone(), Some("key-1"))
        .await
        .unwrap();
    let again = client.create_user(request, Some("key-1")).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(app.list_all().await, vec![first]);
}

#[tokio::test]
async fn a_replay_announces_nothing_new() {
    let app = spawn_app().await;
    let client = app.admin();
    let request = create_request("Jo", "jo@example.com", UserRole::Viewer);
    client
        .create_user(request.clone(), Some("key-2"))
        .await
        .unwrap();

    let subscriptions = tokio_stream::StreamExt::chain(
        tokio_stream::iter(vec![usersvc::pb::EventStreamRequest {
            user_id: "*".into(),
            ..Default::default()
        }]),
        tokio_stream::pending(),
    );
    let mut events = client.watch_user_events(subscriptions).await.unwrap();
    assert_eq!(
        events.message().await.unwrap().unwrap().event_type,
        "subscribed"
    );
    client.create_user(request, Some("key-2")).await.unwrap();
    let marker = app
        .create("Marker", "marker@example.com", UserRole::Viewer)
        .await;
    let next = events.message().await.unwrap().unwrap();
    assert_eq!(next.user_id, marker.id, "the replay published no event");
}

#[tokio::test]
async fn same_key_with_a_different_request_is_already_exists() {
    let app = spawn_app().await;
    let client = app.admin();
    client
        .create_user(
            create_request("Kay", "kay@example.com", UserRole::Viewer),
            Some("key-3"),
        )
        .await
        .unwrap();
    let status = client
        .create_user(
            create_request("Kay", "other@example.com", UserRole::Viewer),
            Some("key-3"),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().contains("idempotency key"),
        "{}",
        status.message()
    );
    assert_eq!(app.list_all().await.len(), 1);
}

#[tokio::test]
async fn an_invalid_idempotency_key_is_invalid_argument() {
    let app = spawn_app().await;
    let status = app
        .admin()
        .create_user(
            create_request("Lu", "lu@example.com", UserRole::Viewer),
            Some(&"k".repeat(129)),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        crate::support::bad_request_fields(&status),
        ["idempotency-key"]
    );
}

/// A client for `addr` that retries `attempts` times.
fn retrying_client(addr: std::net::SocketAddr, attempts: u32) -> Client {
    let mut config = ClientConfig::new(format!("http://{addr}"));
    config.token = Some(crate::support::token(Role::Admin));
    config.retry = RetryPolicy {
        max_attempts: attempts,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    };
    Client::new(config).unwrap()
}

#[tokio::test]
async fn reads_and_keyed_creates_ride_out_a_briefly_unavailable_server() {
    let app = spawn_app().await;
    let existing = app.create("Em", "em@example.com", UserRole::Viewer).await;
    // The server's front door, shut: each connection is dropped at once, as
    // by a server that is restarting.
    let door = Proxy::start(app.addr.to_string()).await;
    door.cut().await;
    let client = retrying_client(door.addr, 20);

    // Both calls start while the server is down.
    let create = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .create_user(
                    create_request("Mo", "mo@example.com", UserRole::Viewer),
                    Some("key-4"),
                )
                .await
        }
    });
    let read = tokio::spawn({
        let client = client.clone();
        let id = existing.id.clone();
        async move { client.get_user(&id).await }
    });
    // The client has been turned away, and has tried again.
    for _ in 0..1000 {
        if door.dropped.load(Ordering::SeqCst) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        door.dropped.load(Ordering::SeqCst) >= 3,
        "no retries reached the door"
    );
    door.restore();

    let created = create.await.unwrap().unwrap();
    assert_eq!(read.await.unwrap().unwrap(), existing);
    assert_eq!(app.list_all().await, vec![existing, created]);
}

#[tokio::test]
async fn a_connection_dropped_by_the_server_is_unavailable_not_cancelled() {
    let app = spawn_app().await;
    let door = Proxy::start(app.addr.to_string()).await;
    door.cut().await;
    let status = retrying_client(door.addr, 1)
        .create_user(
            create_request("No", "no@example.com", UserRole::Viewer),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        format!("cannot reach http://{}: connection closed", door.addr)
    );
    assert_eq!(
        door.dropped.load(Ordering::SeqCst),
        1,
        "tried once: no key, no retry"
    );
    assert!(app.list_all().await.is_empty());
}

#[tokio::test]
async fn keyed_creates_are_retried_on_unavailable_and_unkeyed_ones_are_not() {
    let store = Arc::new(crate::support::store::ScriptedStore::default());
    let app = spawn_app_with(|s| s.store = store.clone()).await;
    let client = retrying_client(app.addr, 5);

    store.failing_creates.store(2, Ordering::SeqCst);
    let created = client
        .create_user(
            create_request("Ned", "ned@example.com", UserRole::Viewer),
            Some("key-5"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.creates.load(Ordering::SeqCst),
        3,
        "two failures, then success"
    );
    assert_eq!(app.list_all().await, vec![created]);

    store.failing_creates.store(2, Ordering::SeqCst);
    let status = client
        .create_user(
            create_request("Oz", "oz@example.com", UserRole::Viewer),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.message(),
        "store unavailable",
        "the cause stays in the server log"
    );
    assert_eq!(store.creates.load(Ordering::SeqCst), 4, "tried once");
}

#[tokio::test]
async fn non_unavailable_errors_are_returned_at_once() {
    let store = Arc::new(crate::support::store::ScriptedStore::default());
    let app = spawn_app_with(|s| s.store = store.clone()).await;
    let client = retrying_client(app.addr, 20);
    let status = client.get_user("missing").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        store.gets.load(Ordering::SeqCst),
        1,
        "asked once, not retried"
    );
}

#[tokio::test]
async fn a_read_rides_out_a_store_outage_and_is_tried_once_per_attempt() {
    let store = Arc::new(crate::support::store::ScriptedStore::default());
    let app = spawn_app_with(|s| s.store = store.clone()).await;
    let created = app.create("Rae", "rae@example.com", UserRole::Viewer).await;

    // Three reads fail UNAVAILABLE; the fourth attempt gets the user.
    store.failing_gets.store(3, Ordering::SeqCst);
    let fetched = retrying_client(app.addr, 5)
        .get_user(&created.id)
        .await
        .unwrap();
    assert_eq!(fetched, created);
    assert_eq!(
        store.gets.load(Ordering::SeqCst),
        4,
        "three failures, then success"
    );

    // An outage longer than the attempts: UNAVAILABLE after exactly that many.
    store.failing_gets.store(10, Ordering::SeqCst);
    let status = retrying_client(app.addr, 3)
        .get_user(&created.id)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        store.gets.load(Ordering::SeqCst),
        4 + 3,
        "three attempts in all"
    );
}
