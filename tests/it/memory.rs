//! ListUsers streams from the database a page at a time: the server's
//! memory stays flat while a slow client reads a 1,000,000-user table, on
//! SQLite and on PostgreSQL.

use std::time::Duration;

use crate::support::admin_client;
use crate::support::process::{ServerProcess, rss_bytes};
use sqlx::Connection;
use usersvc::pb;
use usersvc::store::{self, StoreOptions};

const USERS: i64 = 1_000_000;

/// A SQLite table of `USERS` users, in a file in `dir`; its store address.
async fn sqlite_table(dir: &std::path::Path) -> String {
    let url = format!("sqlite://{}/users.db", dir.display());
    drop(store::open(&url, &StoreOptions::default()).await.unwrap()); // the schema
    crate::support::sqlite_file(&url)
        .execute(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?1) \
             INSERT INTO users (id, name, email, email_key, role, created_at, bio) \
             SELECT printf('id-%07d', x), printf('User number %d', x), printf('u%d@example.com', x), \
                    printf('u%d@example.com', x), 1 + x % 3, 1700000000 + x, 'a bio of some length, to weigh' FROM n",
            [USERS],
        )
        .unwrap();
    url
}

/// A PostgreSQL schema of its own holding `USERS` users; its store address.
async fn postgres_table() -> String {
    let url = crate::support::required_postgres_url().await;
    drop(store::open(&url, &StoreOptions::default()).await.unwrap()); // the schema
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO users (id, name, email, email_key, role, created_at, bio, updated_at, name_key, bio_key) \
         SELECT 'id-' || lpad(x::text, 7, '0'), 'User number ' || x, 'u' || x || '@example.com', \
                'u' || x || '@example.com', 1 + x % 3, 1700000000 + x, 'a bio of some length, to weigh', \
                1700000000 + x, 'user number ' || x, 'a bio of some length, to weigh' \
         FROM generate_series(1, $1) AS x",
    )
    .bind(USERS)
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
    url
}

/// Streams the whole table of a server on `url` to a slow client and
/// checks the server's memory against what it used before the call.
///
/// The baseline is taken after a warm-up call and before ListUsers starts,
/// so a server that read the whole table before sending its first user
/// would show that growth at the first user already.
async fn streams_the_table_in_flat_memory(url: &str, dir: &std::path::Path) {
    let server = ServerProcess::start(&["--store", url], dir);
    let pid = server.child.id();
    let client = admin_client(&server.url);
    // Warm up the connection and the store's pool with a one-user listing.
    let mut warm_up = client
        .list_users(pb::ListUsersRequest {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    while warm_up.message().await.unwrap().is_some() {}
    let baseline = rss_bytes(pid);

    let mut stream = client
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().id, "id-0000001");
    let mut peak = baseline.max(rss_bytes(pid));
    let at_first_user = peak;

    // A slow client: it pauses every 20,000 users, long enough for the
    // server to fill the HTTP/2 windows and wait.
    let mut read: i64 = 1;
    while let Some(user) = stream.message().await.unwrap() {
        read += 1;
        if read % 20_000 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            peak = peak.max(rss_bytes(pid));
            assert_eq!(user.id, format!("id-{read:07}"), "in creation order");
        }
    }
    assert_eq!(read, USERS);
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "{url}: RSS before the call {} MiB, at the first user {} MiB, peak {} MiB",
        baseline >> 20,
        at_first_user >> 20,
        peak >> 20
    );
    // The whole table as Rust values would take hundreds of MiB.
    assert!(
        growth < 48 << 20,
        "RSS grew by {} MiB while streaming (before the call {} MiB, at the first user {} MiB)",
        growth >> 20,
        baseline >> 20,
        at_first_user >> 20
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_stays_flat_while_a_million_sqlite_users_stream_to_a_slow_client() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_table(dir.path()).await;
    streams_the_table_in_flat_memory(&url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_stays_flat_while_a_million_postgres_users_stream_to_a_slow_client() {
    let url = postgres_table().await;
    let dir = tempfile::tempdir().unwrap();
    streams_the_table_in_flat_memory(&url, dir.path()).await;
}
