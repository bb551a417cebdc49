//! Durability and replicas, with real processes: `kill -9` after an
//! acknowledged write and in the middle of bulk creations, and two servers
//! over one PostgreSQL database.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use crate::support::process::ServerProcess;
use crate::support::{admin_client, create_request};
use rand::Rng;
use tokio_stream::StreamExt;
use usersvc::pb::{self, UserRole};

/// The stores that outlive a process: a SQLite file in `dir`, and a fresh
/// PostgreSQL schema unless PostgreSQL is announced skipped.
async fn durable_stores(dir: &Path) -> Vec<(&'static str, String)> {
    let mut stores = vec![("sqlite", format!("sqlite://{}/users.db", dir.display()))];
    if let Some(url) = crate::support::postgres_url().await {
        stores.push(("postgres", url));
    }
    stores
}

/// `--sqlite-synchronous` reaches the real binary's store, which checks
/// every connection it opens as SQLite reports it (the unit test
/// `every_connection_runs_with_the_synchronous_it_is_given` checks that
/// check). A kill -9 cannot tell `full` from `normal`: the OS page cache
/// outlives the process.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_connections_run_with_the_synchronous_they_are_given() {
    for (flag, shown) in [
        (None, "full"),
        (Some("full"), "full"),
        (Some("normal"), "normal"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/users.db", dir.path().display());
        let mut args = vec!["--store", url.as_str()];
        if let Some(flag) = flag {
            args.extend(["--sqlite-synchronous", flag]);
        }
        let mut server = ServerProcess::start(&args, dir.path());
        server.terminate();
        let (_, log) = server.wait_with_log();
        let checked = log
            .iter()
            .find(|line| line.contains("PRAGMA synchronous as configured"))
            .unwrap_or_else(|| panic!("{flag:?}: no check in the log:\n{}", log.join("\n")));
        assert!(
            checked.contains(&format!("synchronous=\"{shown}\"")),
            "{flag:?}: {checked}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledged_create_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in durable_stores(dir.path()).await {
        let server = ServerProcess::start(&["--store", &url], dir.path());
        let created = admin_client(&server.url)
            .create_user(
                create_request("Durable", "durable@example.com", UserRole::Editor),
                None,
            )
            .await
            .unwrap();
        server.kill9();

        let server = ServerProcess::start(&["--store", &url], dir.path());
        let fetched = admin_client(&server.url)
            .get_user(&created.id)
            .await
            .unwrap();
        assert_eq!(fetched, created, "{name}");
    }
}

/// Creates from many callers at once, which SQLite commits in groups, are
/// acknowledged only once on disk: after a kill -9 in the middle of them,
/// the moment one is acknowledged, every user a caller was told about is
/// there. (Answering 2 ms before the commit failed this in about half the
/// runs of three rounds here; it has five.)
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_acknowledged_before_a_kill_9_survive() {
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in durable_stores(dir.path()).await {
        for round in 0..5 {
            let server = ServerProcess::start(&["--store", &url], dir.path());
            let client = admin_client(&server.url);
            let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let one_more = std::sync::Arc::new(tokio::sync::Notify::new());
            let started = std::time::Instant::now();
            let mut callers = tokio::task::JoinSet::new();
            for caller in 0..16 {
                let client = client.clone();
                let acknowledged = std::sync::Arc::clone(&acknowledged);
                let one_more = std::sync::Arc::clone(&one_more);
                callers.spawn(async move {
                    for n in 0.. {
                        let request = create_request(
                            "Grouped",
                            &format!("grouped-{round}-{caller}-{n}@example.com"),
                            UserRole::Viewer,
                        );
                        match client.create_user(request, None).await {
                            Ok(user) => acknowledged.lock().unwrap().push(user),
                            Err(_) => return,
                        }
                        if started.elapsed() > Duration::from_millis(300) {
                            one_more.notify_one();
                        }
                    }
                });
            }
            tokio::time::timeout(Duration::from_secs(60), one_more.notified())
                .await
                .unwrap_or_else(|_| panic!("{name}: no create acknowledged after 300 ms"));
            server.kill9();
            while callers.join_next().await.is_some() {}
            let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
            assert!(
                acknowledged.len() > 16,
                "{name}: {} creates",
                acknowledged.len()
            );

            let server = ServerProcess::start(&["--store", &url], dir.path());
            let client = admin_client(&server.url);
            for user in &acknowledged {
                let stored = client.get_user(&user.id).await;
                assert_eq!(
                    stored.as_ref().ok(),
                    Some(user),
                    "{name}, round {round}: {stored:?}"
                );
            }
        }
    }
}

/// Names of the stored users that begin with `prefix`, read with the library.
async fn stored_with(url: &str, prefix: &str) -> Vec<String> {
    crate::support::stored_users(url)
        .await
        .into_iter()
        .map(|u| u.name.as_str().to_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn sqlite_integrity(url: &str) -> String {
    crate::support::sqlite_file(url)
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

/// Where a round of the kill test kills the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    /// The server holds the whole batch and the stream is still open.
    MidUpload,
    /// The stream is closed and the server holds the whole batch, so the
    /// commit is about to run or running; a few random milliseconds later.
    MidCommit,
    /// The batch was acknowledged.
    AfterAck,
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_creation_killed_at_random_points_is_all_or_nothing() {
    use crate::support::metrics::wait_for_bulk_items;
    const ROUNDS: usize = 12;
    const BATCH: usize = 2_000;
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in durable_stores(dir.path()).await {
        let mut outcomes = (0, 0);
        for round in 0..ROUNDS {
            let kill = [Kill::MidUpload, Kill::MidCommit, Kill::AfterAck][round % 3];
            let server = ServerProcess::start(
                &["--store", &url, "--metrics-addr", "127.0.0.1:0"],
                dir.path(),
            );
            let metrics = server.metrics.expect("metrics are on");
            let prefix = format!("{name}-r{round}-");
            let (tx, rx) = tokio::sync::mpsc::channel(BATCH);
            for i in 0..BATCH {
                tx.try_send(create_request(
                    &format!("{prefix}{i}"),
                    &format!("{prefix}{i}@example.com"),
                    UserRole::Viewer,
                ))
                .unwrap();
            }
            // Mid-upload, the client holds its stream open.
            let open_stream = (kill == Kill::MidUpload).then_some(tx);
            let client = admin_client(&server.url);
            let call = tokio::spawn(async move {
                client
                    .bulk_create_users(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
            });
            match kill {
                Kill::MidUpload => wait_for_bulk_items(metrics, BATCH).await,
                Kill::MidCommit => {
                    wait_for_bulk_items(metrics, BATCH).await;
                    let delay = rand::rng().random_range(0..5);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                Kill::AfterAck => {
                    let response = call.await.unwrap().unwrap();
                    assert_eq!(response.users.len(), BATCH, "{name} round {round}");
                }
            }
            server.kill9();
            drop(open_stream);

            let names = stored_with(&url, &prefix).await;
            let unique: HashSet<&String> = names.iter().collect();
            assert_eq!(
                unique.len(),
                names.len(),
                "{name} round {round}: duplicates"
            );
            assert!(
                names.is_empty() || names.len() == BATCH,
                "{name} round {round} ({kill:?}): {} of {BATCH} stored",
                names.len()
            );
            match kill {
                Kill::MidUpload => assert!(
                    names.is_empty(),
                    "{name} round {round}: an open upload was stored"
                ),
                Kill::AfterAck => assert_eq!(
                    names.len(),
                    BATCH,
                    "{name} round {round}: an acknowledged batch was lost"
                ),
                Kill::MidCommit => {}
            }
            if name == "sqlite" {
                assert_eq!(sqlite_integrity(&url), "ok", "round {round}");
            }
            if names.is_empty() {
                outcomes.0 += 1
            } else {
                outcomes.1 += 1
            }
        }
        eprintln!(
            "{name}: {} rounds left nothing, {} stored the whole batch",
            outcomes.0, outcomes.1
        );
        assert!(
            outcomes.0 > 0 && outcomes.1 > 0,
            "{name}: both outcomes must occur: {outcomes:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_over_one_postgres_share_users_and_events() {
    let url = crate::support::required_postgres_url().await;
    let dir = tempfile::tempdir().unwrap();
    let a = ServerProcess::start(&["--store", &url], dir.path());
    let b = ServerProcess::start(&["--store", &url], dir.path());
    let (client_a, client_b) = (admin_client(&a.url), admin_client(&b.url));

    let subscriptions = tokio_stream::iter(vec![pb::EventStreamRequest {
        user_id: "*".into(),
        ..Default::default()
    }])
    .chain(tokio_stream::pending());
    let mut events_b = client_b.watch_user_events(subscriptions).await.unwrap();
    assert_eq!(
        events_b.message().await.unwrap().unwrap().event_type,
        "subscribed"
    );

    let created = client_a
        .create_user(
            create_request("Replicated", "replicated@example.com", UserRole::Viewer),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        client_b.get_user(&created.id).await.unwrap(),
        created,
        "written on A, read on B"
    );

    let event = tokio::time::timeout(Duration::from_secs(10), events_b.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.event_type.as_str(), event.user_id.as_str()),
        ("user_created", created.id.as_str())
    );

    // And the other way, with a bulk creation and a delete.
    let bulk = client_b
        .bulk_create_users(tokio_stream::iter(vec![create_request(
            "Two",
            "two@example.com",
            UserRole::Viewer,
        )]))
        .await
        .unwrap();
    client_a.delete_user(&created.id).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), events_b.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        kinds.push((event.event_type, event.user_id));
    }
    assert_eq!(
        kinds,
        [
            ("user_created".into(), bulk.users[0].id.clone()),
            ("user_deleted".into(), created.id.clone())
        ]
    );
}

/// A copy of `tests/fixtures/users-by-sqlx-release.db`: a database made by
/// the last release whose SQLite store ran on sqlx (`usersvc serve`, then
/// three `usersvc create`), before this store had its own driver.
fn previous_release_file(dir: &Path) -> String {
    let path = dir.join("users.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/users-by-sqlx-release.db"
        ),
        &path,
    )
    .unwrap();
    format!("sqlite://{}", path.display())
}

/// Upgrading keeps every user, the unique email index, and the migration
/// history sqlx recorded, checksum and all.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_made_by_the_previous_release_opens_with_its_users() {
    let dir = tempfile::tempdir().unwrap();
    let url = previous_release_file(dir.path());
    let history = |url: &str| -> Vec<(i64, bool, Vec<u8>)> {
        crate::support::sqlite_file(url)
            .prepare("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let before = history(&url);
    assert_eq!(before.len(), 1, "the fixture has the first migration");

    let mut server = ServerProcess::start(&["--store", &url], dir.path());
    let client = admin_client(&server.url);
    let listed: Vec<(String, String, String, i32, Option<String>)> =
        crate::support::list_all(&client)
            .await
            .into_iter()
            .map(|u| (u.id, u.name, u.email, u.role, u.bio))
            .collect();
    assert_eq!(
        listed,
        [
            (
                "01a22c56-46ab-75bb-be6d-459ea73a6208".to_owned(),
                "Ada Lovelace".to_owned(),
                "Ada@Example.com".to_owned(),
                UserRole::Admin as i32,
                Some("First programmer".to_owned()),
            ),
            (
                "01a22c56-46b6-773e-8f32-b3f54bfee650".to_owned(),
                "Grace Hopper".to_owned(),
                "grace@example.com".to_owned(),
                UserRole::Editor as i32,
                None,
            ),
            (
                "01a22c56-46c0-7463-b5d8-6314436cfaf4".to_owned(),
                "Alan Turing".to_owned(),
                "alan@example.com".to_owned(),
                UserRole::Viewer as i32,
                None,
            ),
        ]
    );
    // The search migration: each old user is at its first version, last
    // changed when created, and searchable by its folded name and bio.
    for user in crate::support::list_all(&client).await {
        assert_eq!(user.updated_at, user.created_at, "{}", user.name);
        assert_eq!(user.etag.len(), 16, "{}", user.name);
        assert!(user.labels.is_empty());
        // Filters read the stored column itself: the migration filled it.
        let same_time = client
            .search_users(usersvc::pb::SearchUsersRequest {
                filter: format!(
                    "updated_at = {} AND email = {:?}",
                    user.created_at, user.email
                ),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(same_time.total_size, 1, "{}", user.name);
    }
    let found = client
        .search_users(usersvc::pb::SearchUsersRequest {
            filter: "name:LOVELACE OR bio = \"first*\"".into(),
            order_by: "name".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found.total_size, 1);
    assert_eq!(found.users[0].name, "Ada Lovelace");
    let taken = client
        .create_user(
            create_request("Imposter", "ada@example.COM", UserRole::Viewer),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists, "{taken:?}");
    let created = client
        .create_user(
            create_request(
                "Katherine Johnson",
                "katherine@example.com",
                UserRole::Viewer,
            ),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        client.get_user(&created.id).await.unwrap(),
        created,
        "a new user beside the old ones"
    );
    server.terminate();
    let (status, _) = server.wait_with_log();
    assert!(status.success(), "{status:?}");
    let after = history(&url);
    assert_eq!(after[..1], before[..], "the recorded history is untouched");
    assert_eq!(
        after
            .iter()
            .map(|(version, success, _)| (*version, *success))
            .collect::<Vec<_>>(),
        [(1, true), (2, true), (3, true)],
        "the search and history migrations are recorded after it"
    );
}

/// A database whose history this release does not know is refused at
/// start with the reason, rather than opened and written to: a migration
/// whose recorded checksum no longer matches its text, one that failed
/// partway, and one from a newer release.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_with_an_unknown_history_is_refused() {
    for (tampering, reason) in [
        (
            "UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 1",
            "migration 1 (create users) differs",
        ),
        (
            "UPDATE _sqlx_migrations SET success = FALSE WHERE version = 1",
            "migration 1 failed partway",
        ),
        (
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', TRUE, x'00', 0)",
            "migration 9999, which this release does not know",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let url = previous_release_file(dir.path());
        crate::support::sqlite_file(&url)
            .execute(tampering, [])
            .unwrap();
        let refused =
            match usersvc::store::open(&url, &usersvc::store::StoreOptions::default()).await {
                Ok(_) => panic!("opened after {tampering}"),
                Err(error) => error.to_string(),
            };
        assert!(refused.contains(reason), "{tampering}: {refused}");
    }
}

/// Another process holding SQLite's write lock makes a write wait
/// `--db-timeout`, then fail as UNAVAILABLE, worth a retry, not INTERNAL;
/// reads go on meanwhile (WAL), and writes succeed once the lock is let go.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_lock_held_by_another_process_makes_writes_unavailable_for_a_while() {
    use usersvc::domain::{Email, NewUser, Role, UserName};
    use usersvc::store::{Created, StoreError, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/users.db", dir.path().display());
    let options = StoreOptions {
        db_timeout: Duration::from_millis(200),
        ..StoreOptions::default()
    };
    let store = usersvc::store::open(&url, &options).await.unwrap();
    let new_user = |email: &str| NewUser {
        name: UserName::parse("Locked").unwrap(),
        email: Email::parse(email).unwrap(),
        role: Role::Viewer,
        bio: None,
        labels: Default::default(),
    };
    let Created::New(before) = store.create(new_user("a@example.com"), None).await.unwrap() else {
        panic!("no key, no replay");
    };

    let holder = crate::support::sqlite_file(&url);
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let refused = store
        .create(new_user("b@example.com"), None)
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::Unavailable(_)), "{refused:?}");
    assert_eq!(store.get(&before.id).await.unwrap(), before, "reads go on");
    holder.execute_batch("ROLLBACK").unwrap();

    let Created::New(after) = store.create(new_user("b@example.com"), None).await.unwrap() else {
        panic!("no key, no replay");
    };
    assert_eq!(store.get(&after.id).await.unwrap(), after);
}
