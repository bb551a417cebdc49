//! A write whose client cancels it at any moment keeps its promise: if it
//! committed, its event reached the watchers and its audit line the log;
//! if not, neither did. Shown on a real process for every store, by
//! cancelling creates, updates and deletes at random points and then
//! reconciling what is stored against the events a watcher saw and the
//! audit lines.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::Rng;

use crate::support::process::ServerProcess;
use crate::support::{admin_client, create_request};
use usersvc::pb::{self, UserRole};

const CREATES: usize = 150;

/// Runs `call` and cancels it (drops its future, as hyper then resets the
/// stream) after 0 to 4 ms.
async fn cancelled_at_random<T: Send + 'static>(
    call: impl std::future::Future<Output = T> + Send + 'static,
) {
    let task = tokio::spawn(call);
    let delay = rand::rng().random_range(0..4_000);
    tokio::time::sleep(Duration::from_micros(delay)).await;
    task.abort();
    let _ = task.await;
}

/// The ids of the `message` audit lines in `log`.
fn audited(log: &[String], message: &str) -> BTreeSet<String> {
    log.iter()
        .filter(|line| line.contains("usersvc::audit") && line.contains(message))
        .filter_map(|line| {
            let id = line.split("user_id=").nth(1)?.split_whitespace().next()?;
            Some(id.trim_matches('"').to_owned())
        })
        .collect()
}

async fn reconcile(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        &["--store", store, "--metrics-addr", "127.0.0.1:0"],
        dir.path(),
    );
    let client = admin_client(&server.url);
    let subscriptions = tokio_stream::StreamExt::chain(
        tokio_stream::iter(vec![pb::EventStreamRequest {
            user_id: "*".into(),
            ..Default::default()
        }]),
        tokio_stream::pending(),
    );
    let mut watch = client.watch_user_events(subscriptions).await.unwrap();
    assert_eq!(
        watch.message().await.unwrap().unwrap().event_type,
        "subscribed"
    );

    for i in 0..CREATES {
        let client = client.clone();
        let request = create_request("Racer", &format!("racer{i}@example.com"), UserRole::Viewer);
        cancelled_at_random(async move { client.create_user(request, None).await }).await;
    }
    let created = crate::support::list_all(&client).await;
    let (to_update, to_delete) = created.split_at(created.len() / 2);
    for user in to_update {
        let client = client.clone();
        let request = pb::UpdateUserRequest {
            user_id: user.id.clone(),
            name: Some(format!("Updated {}", user.id)),
            ..Default::default()
        };
        cancelled_at_random(async move { client.update_user(request).await }).await;
    }
    for user in to_delete {
        let client = client.clone();
        let id = user.id.clone();
        cancelled_at_random(async move { client.delete_user(&id).await }).await;
    }

    // Changes that are not cancelled, after all the others: once the
    // watcher has one, every change committed before it was announced. A
    // cancelled call's server task can still commit after a marker, so
    // markers go on until the store stays the same across one.
    let mut seen: [BTreeSet<String>; 3] = Default::default();
    let mut markers = BTreeSet::new();
    let mut stored: Vec<pb::User> = Vec::new();
    for round in 0.. {
        assert!(round < 20, "{store}: the store never settled");
        let marker = client
            .create_user(
                create_request(
                    "Marker",
                    &format!("marker{round}@example.com"),
                    UserRole::Viewer,
                ),
                None,
            )
            .await
            .unwrap();
        markers.insert(marker.id.clone());
        loop {
            let event = tokio::time::timeout(Duration::from_secs(30), watch.message())
                .await
                .expect("the marker's event arrives")
                .unwrap()
                .unwrap();
            if event.user_id == marker.id {
                break;
            }
            let kind = ["user_created", "user_updated", "user_deleted"]
                .iter()
                .position(|k| *k == event.event_type)
                .unwrap_or_else(|| panic!("unexpected event {event:?}"));
            assert!(seen[kind].insert(event.user_id.clone()), "{event:?} twice");
        }
        let now: Vec<pb::User> = crate::support::list_all(&client)
            .await
            .into_iter()
            .filter(|u| !markers.contains(&u.id))
            .collect();
        if round > 0 && now == stored {
            break;
        }
        stored = now;
    }

    let stored_ids: BTreeSet<String> = stored.iter().map(|u| u.id.clone()).collect();
    let deleted: BTreeSet<String> = to_delete
        .iter()
        .map(|u| u.id.clone())
        .filter(|id| !stored_ids.contains(id))
        .collect();
    let committed = [
        stored_ids.union(&deleted).cloned().collect::<BTreeSet<_>>(),
        stored
            .iter()
            .filter(|u| u.name.starts_with("Updated "))
            .map(|u| u.id.clone())
            .collect(),
        deleted,
    ];
    // Calls the server was handling when their client went away: the
    // cancellations that could split a change from its announcement.
    let metrics = crate::support::metrics::scrape(server.metrics.unwrap()).await;
    let cut = |method: &str| {
        crate::support::metrics::value_or_zero(
            &metrics,
            &crate::support::metrics::handled(method, "unary", "Cancelled"),
        )
    };
    let cut = [cut("CreateUser"), cut("UpdateUser"), cut("DeleteUser")];
    server.terminate();
    let (status, log) = tokio::task::spawn_blocking(move || server.wait_with_log())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut audit = [
        audited(&log, "user created"),
        audited(&log, "user updated"),
        audited(&log, "user deleted"),
    ];
    audit[0].retain(|id| !markers.contains(id));

    for (kind, name) in ["created", "updated", "deleted"].iter().enumerate() {
        assert_eq!(
            seen[kind], committed[kind],
            "{store}: {name}: events against what was committed"
        );
        assert_eq!(
            audit[kind], committed[kind],
            "{store}: {name}: audit lines against what was committed"
        );
    }
    // The run must have cut calls the server was handling, or it showed
    // nothing.
    assert!(cut[0] > 0.0, "{store}: no create was cut mid-call: {cut:?}");
    eprintln!(
        "{store}: calls cut mid-call {cut:?}; {} of {CREATES} creates, {} of {} updates, {} of {} deletes committed",
        committed[0].len(),
        committed[1].len(),
        to_update.len(),
        committed[2].len(),
        to_delete.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_writes_keep_their_events_and_audit_lines_in_memory() {
    reconcile("memory").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_writes_keep_their_events_and_audit_lines_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    reconcile(&format!("sqlite://{}/users.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_writes_keep_their_events_and_audit_lines_on_postgres() {
    reconcile(&crate::support::required_postgres_url().await).await;
}
