//! Graceful shutdown of a real process on SIGTERM: health turns
//! NOT_SERVING, new connections are refused, a call in flight finishes,
//! open streams end with UNAVAILABLE, and the process exits.

use std::time::Duration;

use crate::support::process::ServerProcess;
use crate::support::{admin_client, create_request};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use usersvc::client::{Client, ClientConfig, RetryPolicy};
use usersvc::pb::{self, UserRole};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_order_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/users.db", dir.path().display());
    let mut server = ServerProcess::start(
        &[
            "--store",
            &store,
            "--shutdown-grace",
            "10s",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        dir.path(),
    );
    let client = admin_client(&server.url);

    let channel = tonic::transport::Channel::from_shared(server.url.clone())
        .unwrap()
        .connect_lazy();
    let mut health = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    let subscriptions = tokio_stream::iter(vec![pb::EventStreamRequest {
        user_id: "*".into(),
        ..Default::default()
    }])
    .chain(tokio_stream::pending());
    let mut watch = client.watch_user_events(subscriptions).await.unwrap();
    assert_eq!(
        watch.message().await.unwrap().unwrap().event_type,
        "subscribed"
    );

    // A call in flight: a bulk creation whose stream is still open.
    let (items, rx) = tokio::sync::mpsc::channel(8);
    let bulk_client = client.clone();
    let bulk =
        tokio::spawn(async move { bulk_client.bulk_create_users(ReceiverStream::new(rx)).await });
    items
        .send(create_request(
            "First",
            "first@example.com",
            UserRole::Viewer,
        ))
        .await
        .unwrap();
    // In flight: the server has read the first item.
    crate::support::metrics::wait_for_bulk_items(server.metrics.expect("metrics are on"), 1).await;

    server.terminate();

    // 1. Health says NOT_SERVING.
    let next = tokio::time::timeout(Duration::from_secs(10), health.message())
        .await
        .unwrap();
    assert_eq!(
        next.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    drop(health);

    // 2. The watch ends with UNAVAILABLE.
    let status = watch.message().await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, "server shutting down")
    );
    drop(watch);

    // 3. New connections are refused.
    let mut config = ClientConfig::new(server.url.clone());
    config.retry = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    // The listener closes once health has said NOT_SERVING; until then a
    // new connection may still be accepted. Refused means the connection
    // itself was refused, not any UNAVAILABLE.
    let mut refused = None;
    for _ in 0..50 {
        let fresh = Client::new(config.clone()).unwrap();
        match fresh.get_user("any").await {
            Err(status) if status.code() == Code::Unavailable => {
                if format!("{status:?}").contains("Connection refused") {
                    refused = Some(status);
                    break;
                }
            }
            Err(status) => assert_eq!(
                status.code(),
                Code::NotFound,
                "a connection accepted during shutdown is served: {status:?}"
            ),
            Ok(user) => panic!("no user was created, yet {user:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused.is_some(), "new connections were still accepted");

    // 4. The call in flight finishes, and its users are stored.
    items
        .send(create_request(
            "Second",
            "second@example.com",
            UserRole::Viewer,
        ))
        .await
        .unwrap();
    drop(items);
    let response = bulk.await.unwrap().unwrap();
    assert_eq!(response.total_count, 2);

    // 5. The process exits, cleanly.
    let status = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");

    let stored = crate::support::stored_users(&store).await;
    let names: Vec<&str> = stored.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["First", "Second"]);
}

/// Log lines are written by a thread of their own, so the last calls' lines,
/// audit lines included, must still be out when the process exits. The
/// server runs on the one-thread runtime a one-CPU machine gets, so that
/// layout serves and shuts down under test too.
#[tokio::test(flavor = "multi_thread")]
async fn every_call_and_change_is_logged_by_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        &["--store", "memory", "--runtime", "current-thread"],
        dir.path(),
    );
    let client = admin_client(&server.url);
    let mut ids = Vec::new();
    for i in 0..50 {
        let created = client
            .create_user(
                create_request(
                    "Logged",
                    &format!("logged{i}@example.com"),
                    UserRole::Viewer,
                ),
                None,
            )
            .await
            .unwrap();
        ids.push(created.id);
    }
    let missing = client
        .get_user("0190c0de-0000-7000-8000-000000000000")
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);

    server.terminate();
    let (status, log) = tokio::task::spawn_blocking(move || server.wait_with_log())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");

    for id in &ids {
        assert_eq!(
            log.iter()
                .filter(|l| l.contains("user created") && l.contains(id.as_str()))
                .count(),
            1,
            "the audit line of {id}"
        );
    }
    let finished = |method: &str, code: &str| {
        log.iter()
            .filter(|l| {
                l.contains("rpc finished")
                    && l.contains(&format!(
                        "method=\"/techoral.users.v1.UserService/{method}\""
                    ))
                    && l.contains(&format!("code=\"{code}\""))
            })
            .count()
    };
    assert_eq!(finished("CreateUser", "OK"), 50);
    assert_eq!(finished("GetUser", "NOT_FOUND"), 1);
    assert!(log.last().unwrap().contains("usersvc stopped"), "{log:?}");
}

/// A bulk upload that never closes cannot hold shutdown open: it is dropped
/// when the grace period ends, the process exits, and the log says why.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_never_closes_is_dropped_at_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/users.db", dir.path().display());
    let mut server = ServerProcess::start(
        &[
            "--store",
            &store,
            "--shutdown-grace",
            "1s",
            // Long enough that only the grace can end the upload.
            "--default-timeout",
            "1h",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        dir.path(),
    );
    let (items, rx) = tokio::sync::mpsc::channel(1);
    items
        .send(create_request("Held", "held@example.com", UserRole::Viewer))
        .await
        .unwrap();
    let client = admin_client(&server.url);
    let upload =
        tokio::spawn(async move { client.bulk_create_users(ReceiverStream::new(rx)).await });
    crate::support::metrics::wait_for_bulk_items(server.metrics.expect("metrics are on"), 1).await;

    server.terminate();
    // The bound is for a hang, not a measure: the grace is 1 s.
    let (status, log) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || server.wait_with_log()),
    )
    .await
    .expect("the process exits after the grace, not when the upload ends")
    .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        log.iter()
            .any(|l| l.contains("shutdown grace period expired; dropping the remaining calls")),
        "{log:#?}"
    );
    assert!(
        upload.await.unwrap().is_err(),
        "the upload was not answered OK"
    );
    drop(items);

    assert!(
        crate::support::stored_users(&store).await.is_empty(),
        "the dropped upload stored nothing"
    );
}
