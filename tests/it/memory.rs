//! ListUsers streams from the database a page at a time: the server's
//! memory stays flat while a slow client reads a 1,000,000-user table.

use std::time::Duration;

use crate::support::admin_client;
use crate::support::process::ServerProcess;
use sqlx::Connection;
use usersvc::pb;
use usersvc::store::{self, StoreOptions};

const USERS: i64 = 1_000_000;

/// The server's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_stays_flat_while_a_million_users_stream_to_a_slow_client() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/users.db", dir.path().display());
    drop(store::open(&url, &StoreOptions::default()).await.unwrap()); // the schema
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < $1) \
         INSERT INTO users (id, name, email, email_key, role, created_at, bio) \
         SELECT printf('id-%07d', x), printf('User number %d', x), printf('u%d@example.com', x), \
                printf('u%d@example.com', x), 1 + x % 3, 1700000000 + x, 'a bio of some length, to weigh' FROM n",
    )
    .bind(USERS)
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();

    let server = ServerProcess::start(&["--store", &url], dir.path());
    let pid = server.child.id();
    let mut stream = admin_client(&server.url)
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().id, "id-0000001");
    let baseline = rss_bytes(pid);

    // A slow client: it pauses every 20,000 users, long enough for the
    // server to fill the HTTP/2 windows and wait.
    let mut peak = baseline;
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
        "RSS at the first user {} MiB, peak {} MiB",
        baseline >> 20,
        peak >> 20
    );
    // The whole table as Rust values would take hundreds of MiB.
    assert!(
        growth < 48 << 20,
        "RSS grew by {} MiB while streaming",
        growth >> 20
    );
}
