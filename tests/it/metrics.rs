//! Prometheus metrics: a scrape after some calls shows go-grpc-prometheus's
//! series with the right numbers.

use std::sync::Arc;

use crate::support::metrics::{scrape, series, value};
use crate::support::{create_request, spawn_app_with};
use tokio_stream::StreamExt;
use usersvc::pb::{self, UserRole};

#[tokio::test]
async fn a_scrape_counts_calls_codes_messages_and_open_watches() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    let app = spawn_app_with(|s| s.metrics_listener = Some(Arc::new(listener))).await;
    let client = app.admin();

    let user = app.create("Ann", "ann@example.com", UserRole::Viewer).await;
    client.get_user(&user.id).await.unwrap();
    client.get_user("missing").await.unwrap_err();
    let items: Vec<_> = (0..3)
        .map(|i| create_request("B", &format!("b{i}@example.com"), UserRole::Viewer))
        .collect();
    client
        .bulk_create_users(tokio_stream::iter(items))
        .await
        .unwrap();
    let listed: Vec<_> = client
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(listed.len(), 4);
    let subscriptions = tokio_stream::iter(vec![pb::EventStreamRequest {
        user_id: "*".into(),
        ..Default::default()
    }])
    .chain(tokio_stream::pending());
    let mut watch = client.watch_user_events(subscriptions).await.unwrap();
    watch.message().await.unwrap().unwrap();

    let text = scrape(metrics_addr).await;
    let handled = |method: &str, kind: &str, code: &str| {
        value(&text, &crate::support::metrics::handled(method, kind, code))
    };
    assert_eq!(handled("GetUser", "unary", "OK"), 1.0);
    assert_eq!(handled("GetUser", "unary", "NotFound"), 1.0);
    assert_eq!(handled("CreateUser", "unary", "OK"), 1.0);
    assert_eq!(handled("BulkCreateUsers", "client_stream", "OK"), 1.0);
    assert_eq!(
        value(
            &text,
            &series("grpc_server_started_total", "unary", "GetUser")
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            &series(
                "grpc_server_started_total",
                "bidi_stream",
                "WatchUserEvents"
            )
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            &series(
                "grpc_server_msg_received_total",
                "client_stream",
                "BulkCreateUsers"
            )
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            &series("grpc_server_msg_sent_total", "server_stream", "ListUsers")
        ),
        4.0
    );
    assert_eq!(
        value(
            &text,
            &series("grpc_server_handling_seconds_count", "unary", "GetUser")
        ),
        2.0
    );
    assert_eq!(value(&text, "usersvc_watch_streams_open"), 1.0);

    drop(watch);
    drop(app);
}

#[tokio::test]
async fn store_errors_are_counted_by_kind() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    let app = spawn_app_with(|s| {
        let store = crate::support::store::ScriptedStore::default();
        store
            .broken_reads
            .store(true, std::sync::atomic::Ordering::SeqCst);
        s.store = Arc::new(store);
        s.metrics_listener = Some(Arc::new(listener));
    })
    .await;
    let client = app.admin();
    for _ in 0..2 {
        assert_eq!(
            client.get_user("any").await.unwrap_err().code(),
            tonic::Code::Unavailable
        );
    }
    let mut listing = client
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap();
    assert_eq!(
        listing.message().await.unwrap_err().code(),
        tonic::Code::Internal
    );

    let text = scrape(metrics_addr).await;
    assert_eq!(
        value(&text, "usersvc_store_errors_total{kind=\"unavailable\"}"),
        2.0
    );
    assert_eq!(
        value(&text, "usersvc_store_errors_total{kind=\"internal\"}"),
        1.0
    );
}

/// Reads until the peer closes; `None` if it has not within `wait`.
async fn closed_within(
    stream: &mut tokio::net::TcpStream,
    wait: std::time::Duration,
) -> Option<()> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(wait, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// The metrics endpoint is reachable by whoever reaches its address, so it
/// is bounded: a request whose headers trickle in is cut off, and past a
/// cap a new connection is closed at once, while a scrape still works
/// once the idle ones are gone. Shown on a real `usersvc serve`.
#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_endpoint_cuts_off_slow_and_surplus_connections() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::process::ServerProcess::start(
        &["--store", "memory", "--metrics-addr", "127.0.0.1:0"],
        dir.path(),
    );
    let addr = server.metrics.unwrap();

    // Slowloris: a request line, and headers that never end.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Idle connections up to the cap.
    let mut idle = Vec::new();
    for _ in 0..31 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut surplus = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut surplus, std::time::Duration::from_secs(3))
            .await
            .is_some(),
        "a connection past the cap was kept"
    );
    assert!(
        closed_within(&mut slow, std::time::Duration::from_secs(15))
            .await
            .is_some(),
        "the trickled headers held their connection open"
    );
    for connection in &mut idle {
        assert!(
            closed_within(connection, std::time::Duration::from_secs(15))
                .await
                .is_some()
        );
    }
    assert!(scrape(addr).await.contains("usersvc_watch_streams_open"));
}
