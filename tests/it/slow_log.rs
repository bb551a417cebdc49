//! A log sink slower than the calls (here a pipe nobody reads) never stalls
//! the calls: access lines are dropped and counted, and a warning says so.
//! Audit lines wait for room, holding their calls, and every one is written
//! once the sink moves. Shown on a real `usersvc serve` whose stderr fills.

use std::time::Duration;

use usersvc::domain::Role;
use usersvc::pb::{self, UserRole, client::UserServiceClient};

use crate::support::metrics::{scrape, value};
use crate::support::process::ServerProcess;
use crate::support::{create_request, token, with_token};

/// Calls for a missing user, each an access line of about 300 bytes: far more than
/// the 64 KiB pipe and the server's queue of 8,192 lines hold.
const CALLS: usize = 24_000;
const TASKS: usize = 8;

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_log_drops_access_lines_never_audit_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start_with_stalled_log(
        &[
            "--store",
            "memory",
            "--rate-limit",
            "0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        dir.path(),
    );
    let metrics = server.metrics.unwrap();
    let channel = tonic::transport::Channel::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();

    let calls = (0..TASKS).map(|_| {
        let mut client = UserServiceClient::new(channel.clone());
        tokio::spawn(async move {
            for _ in 0..CALLS / TASKS {
                let status = client
                    .get_user(pb::GetUserRequest {
                        user_id: "nobody".into(),
                    })
                    .await
                    .unwrap_err();
                assert_eq!(status.code(), tonic::Code::NotFound);
            }
        })
    });
    let all = futures_util::future::join_all(calls);
    for call in tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("calls are not held up by a stalled log")
    {
        call.unwrap();
    }
    let dropped = value(&scrape(metrics).await, "usersvc_log_lines_dropped_total");
    assert!(dropped > 0.0, "no access line dropped under a stalled log");

    // Changes made while the log is stalled: their audit lines wait.
    let admin = token(Role::Admin);
    let creates: Vec<_> = (0..20)
        .map(|i| {
            let mut client = UserServiceClient::new(channel.clone());
            let request = create_request(
                &format!("Audited {i}"),
                &format!("audited{i}@example.com"),
                UserRole::Viewer,
            );
            let request = with_token(request, &admin);
            tokio::spawn(async move { client.create_user(request).await })
        })
        .collect();
    // They are held at the server, before the log moves: the metrics,
    // served on a thread of their own, show their audit lines waiting.
    crate::support::metrics::wait_for(metrics, "usersvc_log_lines_waiting", 1.0).await;
    assert!(
        creates.iter().all(|create| !create.is_finished()),
        "a create completed while its audit line could not be written"
    );
    server.resume_log();
    let mut created = Vec::new();
    for create in creates {
        let user = tokio::time::timeout(Duration::from_secs(60), create)
            .await
            .expect("a create completes once the log moves")
            .unwrap()
            .unwrap()
            .into_inner();
        created.push(user.id);
    }
    let dropped = value(&scrape(metrics).await, "usersvc_log_lines_dropped_total");

    server.terminate();
    let (status, log) = tokio::task::spawn_blocking(move || server.wait_with_log())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    for id in &created {
        let lines = log
            .iter()
            .filter(|line| line.contains("user created") && line.contains(id.as_str()))
            .count();
        assert_eq!(lines, 1, "audit line of {id}");
    }
    assert!(
        log.iter()
            .any(|line| line.contains("access log lines dropped")),
        "no warning of the drops"
    );
    // Every access line was either written or counted as dropped.
    let access = log
        .iter()
        .filter(|line| line.contains("rpc finished"))
        .count();
    assert_eq!(access as f64 + dropped, (CALLS + created.len()) as f64);
}
