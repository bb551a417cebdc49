//! WatchUserEvents against a real server: subscriptions, real events,
//! fan-out, and a watcher too slow to keep up.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{create_request, spawn_app, spawn_app_with};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};
use usersvc::events::EventBus;
use usersvc::pb::{self, UserRole};
use usersvc::store::MemoryStore;

/// An open watch: the sender for more subscriptions, and the event stream.
struct Watch {
    subscriptions: mpsc::Sender<pb::EventStreamRequest>,
    events: Streaming<pb::UserEvent>,
}

impl Watch {
    async fn open(app: &crate::support::TestApp) -> Watch {
        let (tx, rx) = mpsc::channel(16);
        let events = app
            .client(Some(usersvc::domain::Role::Viewer))
            .watch_user_events(ReceiverStream::new(rx))
            .await
            .unwrap();
        Watch {
            subscriptions: tx,
            events,
        }
    }

    /// Subscribes and waits for the confirmation.
    async fn subscribe(&mut self, user_id: &str) {
        self.subscriptions
            .send(pb::EventStreamRequest {
                user_id: user_id.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let ack = self.next().await;
        assert_eq!(
            (ack.event_type.as_str(), ack.user_id.as_str()),
            ("subscribed", user_id)
        );
        assert!(ack.payload.is_empty());
    }

    async fn next(&mut self) -> pb::UserEvent {
        tokio::time::timeout(Duration::from_secs(10), self.events.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream is open")
    }

    /// Asserts that nothing arrives for a short while.
    async fn assert_quiet(&mut self) {
        let next = tokio::time::timeout(Duration::from_millis(200), self.events.message()).await;
        assert!(next.is_err(), "unexpected event: {next:?}");
    }
}

fn payload(event: &pb::UserEvent) -> pb::User {
    pb::User::decode(event.payload.clone()).expect("payload is an encoded User")
}

#[tokio::test]
async fn star_subscription_sees_create_update_and_delete_with_payloads() {
    let app = spawn_app().await;
    let mut watch = Watch::open(&app).await;
    watch.subscribe("*").await;
    let before = usersvc::clock::unix_millis();

    let user = app.create("Ann", "ann@example.com", UserRole::Viewer).await;
    let updated = app
        .admin()
        .update_user(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            name: Some("Ann B".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    app.admin().delete_user(&user.id).await.unwrap();

    let created = watch.next().await;
    assert_eq!(
        (created.event_type.as_str(), created.user_id.as_str()),
        ("user_created", user.id.as_str())
    );
    assert_eq!(payload(&created), user);
    assert!(created.timestamp >= before && created.timestamp <= usersvc::clock::unix_millis());

    let changed = watch.next().await;
    assert_eq!(changed.event_type, "user_updated");
    assert_eq!(payload(&changed), updated);

    let deleted = watch.next().await;
    assert_eq!(deleted.event_type, "user_deleted");
    assert_eq!(
        payload(&deleted),
        updated,
        "the user as it was before deletion"
    );
}

#[tokio::test]
async fn a_user_subscription_sees_only_that_user_and_only_later_changes() {
    let app = spawn_app().await;
    let ann = app.create("Ann", "ann@example.com", UserRole::Viewer).await;
    let bob = app.create("Bob", "bob@example.com", UserRole::Viewer).await;

    let mut watch = Watch::open(&app).await;
    watch.subscribe(&ann.id).await;
    for (user, name) in [(&bob, "Bob 2"), (&ann, "Ann 2")] {
        app.admin()
            .update_user(pb::UpdateUserRequest {
                user_id: user.id.clone(),
                name: Some(name.into()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let event = watch.next().await;
    assert_eq!(
        (event.event_type.as_str(), event.user_id.as_str()),
        ("user_updated", ann.id.as_str())
    );
    assert_eq!(payload(&event).name, "Ann 2");
    watch.assert_quiet().await;

    // Ping-pong: a second subscription on the same stream adds to the first.
    watch.subscribe(&bob.id).await;
    app.admin().delete_user(&bob.id).await.unwrap();
    let event = watch.next().await;
    assert_eq!(
        (event.event_type.as_str(), event.user_id.as_str()),
        ("user_deleted", bob.id.as_str())
    );
}

#[tokio::test]
async fn every_watcher_receives_every_event() {
    let app = spawn_app().await;
    let mut watchers = Vec::new();
    for _ in 0..5 {
        let mut watch = Watch::open(&app).await;
        watch.subscribe("*").await;
        watchers.push(watch);
    }
    let requests: Vec<_> = (0..10)
        .map(|i| {
            create_request(
                &format!("u{i}"),
                &format!("u{i}@example.com"),
                UserRole::Viewer,
            )
        })
        .collect();
    let created = app
        .admin()
        .bulk_create_users(tokio_stream::iter(requests))
        .await
        .unwrap();
    for watch in &mut watchers {
        for user in &created.users {
            let event = watch.next().await;
            assert_eq!(
                (event.event_type.as_str(), &payload(&event)),
                ("user_created", user)
            );
        }
    }
}

#[tokio::test]
async fn empty_subscription_is_invalid_argument() {
    let app = spawn_app().await;
    let mut watch = Watch::open(&app).await;
    watch
        .subscriptions
        .send(pb::EventStreamRequest::default())
        .await
        .unwrap();
    let status = watch.events.message().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("user_id"), "{}", status.message());
}

#[tokio::test]
async fn closing_the_request_side_without_subscribing_ends_the_stream_ok() {
    let app = spawn_app().await;
    let mut events = app
        .client(Some(usersvc::domain::Role::Viewer))
        .watch_user_events(tokio_stream::iter(Vec::<pb::EventStreamRequest>::new()))
        .await
        .unwrap();
    assert!(events.message().await.unwrap().is_none());
}

#[tokio::test]
async fn a_slow_watcher_is_dropped_without_holding_back_writers_or_other_watchers() {
    const BATCHES: usize = 100;
    const BATCH: usize = 100;
    let app =
        spawn_app_with(|s| s.store = Arc::new(MemoryStore::with_events(EventBus::new(1024)))).await;

    // The slow watcher never reads. Small HTTP/2 windows keep the transport
    // from absorbing the backlog on its behalf.
    let (slow_tx, slow_rx) = mpsc::channel(1);
    let channel = tonic::transport::Endpoint::from_shared(app.url())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect_lazy();
    let request = crate::support::with_token(
        ReceiverStream::new(slow_rx),
        &crate::support::token(usersvc::domain::Role::Viewer),
    );
    let mut slow_events = usersvc::pb::client::UserServiceClient::new(channel)
        .watch_user_events(request)
        .await
        .unwrap()
        .into_inner();
    slow_tx
        .send(pb::EventStreamRequest {
            user_id: "*".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        slow_events.message().await.unwrap().unwrap().event_type,
        "subscribed"
    );

    let mut fast = Watch::open(&app).await;
    fast.subscribe("*").await;
    let reader = tokio::spawn(async move {
        let mut count = 0;
        while count < BATCHES * BATCH {
            let event = fast.next().await;
            assert_eq!(payload(&event).name, format!("u{count}"), "in order");
            count += 1;
        }
        count
    });

    // Writers go on while the slow watcher reads nothing.
    let client = app.admin();
    for batch in 0..BATCHES {
        let requests: Vec<_> = (batch * BATCH..(batch + 1) * BATCH)
            .map(|i| {
                create_request(
                    &format!("u{i}"),
                    &format!("u{i}@example.com"),
                    UserRole::Viewer,
                )
            })
            .collect();
        client
            .bulk_create_users(tokio_stream::iter(requests))
            .await
            .unwrap();
    }
    assert_eq!(
        reader.await.unwrap(),
        BATCHES * BATCH,
        "the fast watcher saw every event"
    );

    // The slow watcher gets what was buffered for it, then a clear end.
    let mut received = 0;
    let status = loop {
        let next = tokio::time::timeout(Duration::from_secs(10), slow_events.message())
            .await
            .expect("the slow watcher's stream ends");
        match next {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("the slow watcher's stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert!(received < BATCHES * BATCH, "received {received}");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("fell") && status.message().contains("behind"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn shutdown_ends_open_watches_and_listings_with_unavailable() {
    let app = spawn_app().await;
    // A listing too long to fit in the connection's windows, read one user
    // at a time, so that it is still running when shutdown begins.
    const USERS: usize = 20_000;
    let batch: Vec<_> = (0..USERS)
        .map(|i| {
            create_request(
                &format!("User {i}"),
                &format!("u{i}@example.com"),
                pb::UserRole::Viewer,
            )
        })
        .collect();
    let admin = app.admin();
    admin
        .bulk_create_users(tokio_stream::iter(batch))
        .await
        .unwrap();
    // HTTP/2's smallest windows, so that the server cannot send the whole
    // listing ahead of the reader (hyper's client would allow 2 MiB).
    let channel = tonic::transport::Endpoint::from_shared(app.url())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let admin_token = crate::support::token(usersvc::domain::Role::Admin);
    let mut listing = pb::client::UserServiceClient::new(channel)
        .list_users(crate::support::with_token(
            pb::ListUsersRequest::default(),
            &admin_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listing.message().await.unwrap().is_some());
    let mut watch = Watch::open(&app).await;
    watch.subscribe("*").await;

    let stopped = tokio::spawn(app.stop());
    let status = watch.events.message().await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, "server shutting down")
    );
    let mut listed = 1;
    let status = loop {
        match listing.message().await {
            Ok(Some(_)) => listed += 1,
            Ok(None) => panic!("the listing ended OK after {listed} users, during shutdown"),
            Err(status) => break status,
        }
    };
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, "server shutting down"),
        "after {listed} users"
    );
    assert!(listed < USERS, "the whole listing arrived before shutdown");
    stopped.await.unwrap();
}

/// SubscribeUserEvents: the subscriptions in one request, answered as
/// WatchUserEvents answers them, then the changes, for any valid token.
#[tokio::test]
async fn subscribe_user_events_confirms_each_id_then_streams_changes() {
    let app = spawn_app().await;
    let ann = app.create("Ann", "ann@example.com", UserRole::Viewer).await;
    let viewer = app.client(Some(usersvc::domain::Role::Viewer));
    let mut events = viewer
        .subscribe_user_events(vec![ann.id.clone(), "*".into()], 0)
        .await
        .unwrap();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream is open")
    };
    for expected in [ann.id.as_str(), "*"] {
        let ack = next().await;
        assert_eq!(
            (ack.event_type.as_str(), ack.user_id.as_str()),
            ("subscribed", expected)
        );
    }
    let bob = app.create("Bob", "bob@example.com", UserRole::Editor).await;
    let created = next().await;
    assert_eq!(created.event_type, "user_created");
    assert_eq!(pb::User::decode(created.payload).unwrap(), bob);
}

#[tokio::test]
async fn subscribe_user_events_refuses_bad_lists_before_subscribing() {
    let app = spawn_app_with(|s| s.limits.max_subscriptions = 2).await;
    let viewer = app.client(Some(usersvc::domain::Role::Viewer));
    for (ids, field) in [
        (vec![], "user_ids"),
        (vec!["*", "nobody"], "user_ids[1]"),
        (vec!["*", "*", "*"], "user_ids"),
    ] {
        let ids = ids.into_iter().map(String::from).collect();
        let status = viewer.subscribe_user_events(ids, 0).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(crate::support::bad_request_fields(&status), [field]);
    }
    let anonymous = app.client(None);
    let status = anonymous
        .subscribe_user_events(vec!["*".into()], 0)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}
