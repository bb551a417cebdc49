//! PostgreSQL going away and coming back: calls answer UNAVAILABLE while it
//! is gone, and recover on their own. The database is reached through a
//! proxy in the test that can cut every connection (`support::proxy`), so
//! that the shared server itself is never stopped.

use std::time::Duration;

use crate::support::proxy::Proxy;
use crate::support::{create_request, spawn_app_with};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use usersvc::pb::UserRole;
use usersvc::store::{self, StoreOptions};

#[tokio::test(flavor = "multi_thread")]
async fn postgres_outage_is_unavailable_and_recovers_by_itself() {
    let url = crate::support::required_postgres_url().await;
    let proxy = Proxy::start("127.0.0.1:5432".into()).await;
    assert!(url.contains("127.0.0.1:5432"), "{url}");
    let via_proxy = url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    let options = StoreOptions {
        db_timeout: Duration::from_secs(1),
        ..StoreOptions::default()
    };
    let store = store::open(&via_proxy, &options).await.unwrap();
    let app = spawn_app_with(|s| {
        s.store = store;
        s.health_interval = Duration::from_millis(100);
    })
    .await;
    let client = app.admin();
    let mut health = HealthClient::new(
        tonic::transport::Channel::from_shared(app.url())
            .unwrap()
            .connect_lazy(),
    );
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    let user = client
        .create_user(
            create_request("Before", "before@example.com", UserRole::Viewer),
            None,
        )
        .await
        .unwrap();

    proxy.cut().await;
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .unwrap();
    assert_eq!(
        next.unwrap().unwrap().status,
        ServingStatus::NotServing as i32,
        "health follows the store"
    );
    let status = client.get_user(&user.id).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, "store unavailable")
    );
    let status = client
        .create_user(
            create_request("During", "during@example.com", UserRole::Viewer),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);

    proxy.restore();
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .unwrap();
    assert_eq!(
        next.unwrap().unwrap().status,
        ServingStatus::Serving as i32,
        "and recovers with it"
    );
    let mut recovered = None;
    for _ in 0..100 {
        match client.get_user(&user.id).await {
            Ok(fetched) => {
                recovered = Some(fetched);
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        recovered,
        Some(user),
        "reads recover once the database is back"
    );
    client
        .create_user(
            create_request("After", "after@example.com", UserRole::Viewer),
            None,
        )
        .await
        .unwrap();
}

/// Every `user_created` id a watcher receives until it has seen all of
/// `markers`; panics on a duplicate.
async fn created_ids_until(
    events: &mut tonic::Streaming<usersvc::pb::UserEvent>,
    markers: &[String],
) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    while !markers.iter().all(|m| seen.contains(m)) {
        let event = tokio::time::timeout(Duration::from_secs(30), events.message())
            .await
            .expect("every marker arrives")
            .unwrap()
            .unwrap();
        if event.event_type == "user_created" {
            assert!(
                seen.insert(event.user_id.clone()),
                "{} twice",
                event.user_id
            );
        }
    }
    seen
}

/// Two replicas over one PostgreSQL, with writers on both and every
/// database connection cut mid-run: each watcher, on either replica, sees
/// every committed id exactly once, also those committed after its relay
/// reconnected, and none that was not committed.
#[tokio::test(flavor = "multi_thread")]
async fn two_postgres_replicas_deliver_every_committed_id_once_across_a_database_cut() {
    let url = crate::support::required_postgres_url().await;
    let proxy = Proxy::start("127.0.0.1:5432".into()).await;
    let via_proxy = url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    let options = StoreOptions {
        db_timeout: Duration::from_secs(1),
        ..StoreOptions::default()
    };
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = store::open(&via_proxy, &options).await.unwrap();
        replicas.push(spawn_app_with(|s| s.store = store).await);
    }
    let mut watchers = Vec::new();
    for app in &replicas {
        let subscriptions = tokio_stream::StreamExt::chain(
            tokio_stream::iter(vec![usersvc::pb::EventStreamRequest {
                user_id: "*".into(),
                ..Default::default()
            }]),
            tokio_stream::pending(),
        );
        let mut events = app.admin().watch_user_events(subscriptions).await.unwrap();
        assert_eq!(
            events.message().await.unwrap().unwrap().event_type,
            "subscribed"
        );
        watchers.push(events);
    }

    // Writers on both replicas, before, during and after the cut.
    let write = |round: &'static str| {
        let clients: Vec<_> = replicas.iter().map(|app| app.admin()).collect();
        async move {
            let mut handles = Vec::new();
            for (r, client) in clients.into_iter().enumerate() {
                handles.push(tokio::spawn(async move {
                    for i in 0..20 {
                        let email = format!("{round}-{r}-{i}@example.com");
                        let _ = client
                            .create_user(create_request("W", &email, UserRole::Viewer), None)
                            .await;
                    }
                }));
            }
            for handle in handles {
                handle.await.unwrap();
            }
        }
    };
    write("before").await;
    let during = tokio::spawn(write("during"));
    proxy.cut().await;
    during.await.unwrap();
    proxy.restore();
    write("after").await;

    // A marker written on each replica once the database is back; writes
    // may fail UNAVAILABLE until its pool reconnects.
    let mut markers = Vec::new();
    for (r, app) in replicas.iter().enumerate() {
        let client = app.admin();
        let mut attempt = 0;
        let marker = loop {
            attempt += 1;
            // A new address each try: a try that timed out may have committed.
            let email = format!("marker-{r}-{attempt}@example.com");
            match client
                .create_user(create_request("M", &email, UserRole::Viewer), None)
                .await
            {
                Ok(user) => break user.id,
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        markers.push(marker);
    }

    // What was committed, read straight from the database.
    let committed: std::collections::BTreeSet<String> = crate::support::stored_users(&url)
        .await
        .into_iter()
        .map(|u| u.id.to_string())
        .collect();
    assert!(committed.len() > markers.len(), "some writes committed");
    for (r, events) in watchers.iter_mut().enumerate() {
        let seen = created_ids_until(events, &markers).await;
        assert_eq!(seen, committed, "the watcher on replica {r}");
    }
}
