//! Watches that resume, through a real server and client, on every store:
//! numbered changes, listings that say where they stand, replays with no
//! gap and no repeat, and a client that reconnects by itself.

use std::collections::HashMap;
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};
use usersvc::client::{Client, ResumingWatch, WatchItem};
use usersvc::pb::{self, UserRole};

use crate::support::{TestApp, bad_request_fields, create_request, every_store, spawn_on};

/// The directory's sequence now, as a listing reports it.
async fn sequence(client: &Client) -> i64 {
    client
        .search_users(pb::SearchUsersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .sequence
}

async fn next(events: &mut Streaming<pb::UserEvent>) -> pb::UserEvent {
    tokio::time::timeout(Duration::from_secs(20), events.message())
        .await
        .expect("an event within 20 s")
        .unwrap()
        .expect("the stream is open")
}

/// The next `n` events after the subscription's confirmation.
async fn subscribed_then(events: &mut Streaming<pb::UserEvent>, n: usize) -> Vec<pb::UserEvent> {
    let ack = next(events).await;
    assert_eq!((ack.event_type.as_str(), ack.sequence), ("subscribed", 0));
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(next(events).await);
    }
    got
}

async fn assert_quiet(events: &mut Streaming<pb::UserEvent>, store: &str) {
    let extra = tokio::time::timeout(Duration::from_millis(300), events.message()).await;
    assert!(extra.is_err(), "{store}: unexpected {extra:?}");
}

fn name(event: &pb::UserEvent) -> String {
    pb::User::decode(event.payload.clone()).unwrap().name
}

fn summary(events: &[pb::UserEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.event_type.clone(), name(e)))
        .collect()
}

fn sequences(events: &[pb::UserEvent]) -> Vec<i64> {
    events.iter().map(|e| e.sequence).collect()
}

#[tokio::test]
async fn a_watch_resumes_from_the_start_the_middle_and_the_newest_on_every_store() {
    for (store, app, _dir) in every_store().await {
        let admin = app.admin();
        let start = sequence(&admin).await;
        let ann = app.create("Ann", "ann@example.com", UserRole::Viewer).await;
        let bob = app.create("Bob", "bob@example.com", UserRole::Viewer).await;
        admin
            .update_user(pb::UpdateUserRequest {
                user_id: ann.id.clone(),
                name: Some("Ann 2".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        admin.delete_user(&bob.id).await.unwrap();
        let end = sequence(&admin).await;

        let mut from_start = admin
            .subscribe_user_events(vec!["*".into()], start)
            .await
            .unwrap();
        let replayed = subscribed_then(&mut from_start, 4).await;
        assert_eq!(
            summary(&replayed),
            [
                ("user_created".into(), "Ann".into()),
                ("user_created".into(), "Bob".into()),
                ("user_updated".into(), "Ann 2".into()),
                ("user_deleted".into(), "Bob".into()),
            ],
            "{store}"
        );
        let numbers = sequences(&replayed);
        assert!(
            numbers[0] > start && numbers.windows(2).all(|w| w[0] < w[1]),
            "{store}: {numbers:?}"
        );
        assert_eq!(
            numbers[3], end,
            "{store}: the listing's sequence is the last change's"
        );

        let mut from_middle = admin
            .subscribe_user_events(vec!["*".into()], numbers[1])
            .await
            .unwrap();
        let rest = subscribed_then(&mut from_middle, 2).await;
        assert_eq!(sequences(&rest), numbers[2..], "{store}");

        let mut from_newest = admin
            .subscribe_user_events(vec!["*".into()], end)
            .await
            .unwrap();
        assert_eq!(next(&mut from_newest).await.event_type, "subscribed");
        assert_quiet(&mut from_newest, store).await;
        let mut live_only = admin
            .subscribe_user_events(vec!["*".into()], 0)
            .await
            .unwrap();
        assert_eq!(next(&mut live_only).await.event_type, "subscribed");
        assert_quiet(&mut live_only, store).await;

        let mut anns = admin
            .subscribe_user_events(vec![ann.id.clone()], start)
            .await
            .unwrap();
        let ann_only = subscribed_then(&mut anns, 2).await;
        assert_eq!(sequences(&ann_only), [numbers[0], numbers[2]], "{store}");

        // Every stream goes on live, past what it replayed, once each.
        let carl = app
            .create("Carl", "carl@example.com", UserRole::Viewer)
            .await;
        for events in [
            &mut from_start,
            &mut from_middle,
            &mut from_newest,
            &mut live_only,
        ] {
            let live = next(events).await;
            assert_eq!(
                (live.event_type.as_str(), live.user_id.as_str()),
                ("user_created", carl.id.as_str()),
                "{store}"
            );
            assert!(live.sequence > end, "{store}");
            assert_quiet(events, store).await;
        }
        assert_quiet(&mut anns, store).await;

        let ahead = admin
            .subscribe_user_events(vec!["*".into()], end + 100)
            .await;
        let status = match ahead {
            Ok(mut events) => events.message().await.unwrap_err(),
            Err(status) => status,
        };
        assert_eq!(status.code(), Code::InvalidArgument, "{store}: {status:?}");
        assert_eq!(
            status.message(),
            format!(
                "resume point {} is ahead of the newest change {}",
                end + 100,
                end + 1
            ),
            "{store}"
        );
        let negative = admin
            .subscribe_user_events(vec!["*".into()], -1)
            .await
            .unwrap_err();
        assert_eq!(negative.code(), Code::InvalidArgument, "{store}");
        assert_eq!(bad_request_fields(&negative), ["resume_after"], "{store}");
    }
}

/// A resume point before what is kept is OUT_OF_RANGE, naming the oldest
/// change kept; the memory store prunes as it writes, SQLite when it opens.
#[tokio::test]
async fn a_resume_point_older_than_what_is_kept_is_out_of_range() {
    let keep_two = usersvc::store::StoreOptions {
        event_retention: "2".parse().unwrap(),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/users.db", dir.path().display());
    let sqlite_start = {
        let store = usersvc::store::open(&sqlite, &Default::default())
            .await
            .unwrap();
        let start = store.sequence().await.unwrap();
        for n in 0..5 {
            let user = usersvc::domain::NewUser::parse(create_request(
                &format!("U{n}"),
                &format!("u{n}@example.com"),
                UserRole::Viewer,
            ))
            .unwrap();
            store.create(user, None).await.unwrap();
        }
        start
    };
    for url in ["memory", sqlite.as_str()] {
        let store = usersvc::store::open(url, &keep_two).await.unwrap();
        let app = crate::support::spawn_app_with(|s| s.store = store).await;
        let start = if url == "memory" {
            let start = sequence(&app.admin()).await;
            for n in 0..5 {
                app.create(
                    &format!("U{n}"),
                    &format!("u{n}@example.com"),
                    UserRole::Viewer,
                )
                .await;
            }
            start
        } else {
            i64::try_from(sqlite_start).unwrap()
        };
        let status = match app
            .admin()
            .subscribe_user_events(vec!["*".into()], start)
            .await
        {
            Ok(mut events) => events.message().await.unwrap_err(),
            Err(status) => status,
        };
        assert_eq!(status.code(), Code::OutOfRange, "{url}: {status:?}");
        assert_eq!(
            status.message(),
            format!(
                "resume point {start} is older than the oldest kept change {}; list again",
                start + 4
            ),
            "{url}"
        );
        let mut kept = app
            .admin()
            .subscribe_user_events(vec!["*".into()], start + 3)
            .await
            .unwrap();
        let replayed = subscribed_then(&mut kept, 2).await;
        assert_eq!(sequences(&replayed), [start + 4, start + 5], "{url}");
    }
}

/// What a cache does: list, note the sequence, watch from it. The changes
/// after the listing arrive; none it already reflects does.
#[tokio::test]
async fn a_listing_says_which_change_it_reflects_on_every_store() {
    for (store, app, _dir) in every_store().await {
        let admin = app.admin();
        app.create("Ann", "ann@example.com", UserRole::Viewer).await;
        let (listed_at, mut listing) = admin.list_users_at(Default::default()).await.unwrap();
        let mut listed = Vec::new();
        while let Some(user) = listing.message().await.unwrap() {
            listed.push(user.name);
        }
        assert_eq!(listed, ["Ann"], "{store}");
        let searched_at = sequence(&admin).await;
        assert_eq!(listed_at, searched_at, "{store}");

        let bob = app.create("Bob", "bob@example.com", UserRole::Viewer).await;
        let mut events = admin
            .subscribe_user_events(vec!["*".into()], listed_at)
            .await
            .unwrap();
        let after = subscribed_then(&mut events, 1).await;
        assert_eq!(after[0].user_id, bob.id, "{store}");
        assert_eq!(after[0].sequence, sequence(&admin).await, "{store}");
        assert_quiet(&mut events, store).await;
    }
}

/// A resume that starts while writes pour in hands over from the replay to
/// the live stream with no gap and no repeat, however the pages fall.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resume_during_a_burst_of_writes_misses_nothing_and_repeats_nothing() {
    const WRITERS: usize = 8;
    const EACH: usize = 150;
    for (store, app, _dir) in every_store().await {
        let admin = app.admin();
        let start = sequence(&admin).await;
        let (created_tx, mut created_rx) = mpsc::unbounded_channel();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (admin, created) = (admin.clone(), created_tx.clone());
                tokio::spawn(async move {
                    for n in 0..EACH {
                        let user = admin
                            .create_user(
                                create_request(
                                    &format!("W{w}-{n}"),
                                    &format!("w{w}-{n}@example.com"),
                                    UserRole::Viewer,
                                ),
                                None,
                            )
                            .await
                            .unwrap();
                        created.send(user.id).unwrap();
                    }
                })
            })
            .collect();
        drop(created_tx);
        // Resume once a third of the writes are in, while the rest go on.
        while sequence(&admin).await < start + (WRITERS * EACH / 3) as i64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut events = admin
            .subscribe_user_events(vec!["*".into()], start)
            .await
            .unwrap();
        assert_eq!(next(&mut events).await.event_type, "subscribed");
        for writer in writers {
            writer.await.unwrap();
        }
        let mut created = Vec::new();
        while let Some(id) = created_rx.recv().await {
            created.push(id);
        }
        let mut seen: HashMap<String, i64> = HashMap::new();
        let mut last = start;
        while seen.len() < created.len() {
            let event = next(&mut events).await;
            assert!(
                event.sequence > last,
                "{store}: {} after {last}",
                event.sequence
            );
            last = event.sequence;
            let again = seen.insert(event.user_id.clone(), event.sequence);
            assert!(again.is_none(), "{store}: {} twice", event.user_id);
        }
        for id in &created {
            assert!(
                seen.contains_key(id),
                "{store}: the creation of {id} was missed"
            );
        }
        assert_quiet(&mut events, store).await;
    }
}

/// Resuming is a stream's first request: a replay sent while other
/// subscriptions' live events wait would come out of order with them. After
/// it, live subscriptions may be added, and the stream goes on in order.
#[tokio::test]
async fn a_resume_is_a_streams_first_request() {
    for (store, app, _dir) in every_store().await {
        let admin = app.admin();
        let start = sequence(&admin).await;
        let ann = app.create("Ann", "ann@example.com", UserRole::Viewer).await;
        let subscribe = |user_id: &str, resume_after| pb::EventStreamRequest {
            user_id: user_id.into(),
            resume_after,
        };

        let (tx, rx) = mpsc::channel(4);
        let mut late = admin
            .watch_user_events(ReceiverStream::new(rx))
            .await
            .unwrap();
        tx.send(subscribe(&ann.id, 0)).await.unwrap();
        assert_eq!(next(&mut late).await.event_type, "subscribed");
        tx.send(subscribe("*", start)).await.unwrap();
        let status = late.message().await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{store}");
        assert_eq!(bad_request_fields(&status), ["resume_after"], "{store}");

        let (tx, rx) = mpsc::channel(4);
        let mut events = admin
            .watch_user_events(ReceiverStream::new(rx))
            .await
            .unwrap();
        tx.send(subscribe("*", start)).await.unwrap();
        let replayed = subscribed_then(&mut events, 1).await;
        assert_eq!(
            summary(&replayed),
            [("user_created".into(), "Ann".into())],
            "{store}"
        );
        tx.send(subscribe(&ann.id, 0)).await.unwrap();
        assert_eq!(next(&mut events).await.event_type, "subscribed");
        admin
            .update_user(pb::UpdateUserRequest {
                user_id: ann.id.clone(),
                name: Some("Ann 2".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let live = next(&mut events).await;
        assert_eq!(name(&live), "Ann 2", "{store}");
        assert!(live.sequence > replayed[0].sequence, "{store}");
        assert_quiet(&mut events, store).await;
    }
}

/// The client's watch reconnects by itself when its server goes away, and
/// resumes where it left off: the changes made while it was down arrive
/// once each, in order.
#[tokio::test]
async fn the_client_watch_reconnects_and_resumes_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/users.db", dir.path().display());
    let start = |listener| {
        let url = url.clone();
        async move {
            let store = usersvc::store::open(&url, &Default::default())
                .await
                .unwrap();
            let mut settings = crate::support::settings();
            settings.store = store;
            spawn_on(listener, settings).await
        }
    };
    let app: TestApp = start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    let addr = app.addr;
    let ann = app.create("Ann", "ann@example.com", UserRole::Viewer).await;
    let mut watch = ResumingWatch::start(app.admin(), vec!["*".into()], 0)
        .await
        .unwrap();
    let item = |item| match item {
        WatchItem::Event(event) => event,
        other => panic!("{other:?}"),
    };
    assert_eq!(item(watch.next().await.unwrap()).event_type, "subscribed");
    let bob = app.create("Bob", "bob@example.com", UserRole::Viewer).await;
    let live = item(watch.next().await.unwrap());
    assert_eq!(live.user_id, bob.id);
    assert_eq!(watch.last_sequence(), live.sequence);

    app.stop().await;
    // Changes while no server runs, written with the library.
    let store = usersvc::store::open(&url, &Default::default())
        .await
        .unwrap();
    let patch = usersvc::domain::UserPatch {
        name: Some(usersvc::domain::UserName::parse("Ann 2").unwrap()),
        ..Default::default()
    };
    let ann_id = usersvc::domain::UserId::from_stored(ann.id.clone());
    store.update(&ann_id, patch, false).await.unwrap();
    store.delete(&ann_id, None).await.unwrap();
    drop(store);
    let app = start(tokio::net::TcpListener::bind(addr).await.unwrap()).await;

    let reconnected = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("within 30 s")
        .unwrap();
    match reconnected {
        WatchItem::Reconnected { resumed_after, .. } => assert_eq!(resumed_after, live.sequence),
        other => panic!("{other:?}"),
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        match tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .unwrap()
            .unwrap()
        {
            WatchItem::Event(event) => got.push(event),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got[0].event_type, "subscribed");
    assert_eq!(
        summary(&got[1..]),
        [
            ("user_updated".into(), "Ann 2".into()),
            ("user_deleted".into(), "Ann 2".into()),
        ]
    );
    assert_eq!(got[1].sequence, live.sequence + 1);
    assert_eq!(got[2].sequence, live.sequence + 2);
    app.stop().await;
}
