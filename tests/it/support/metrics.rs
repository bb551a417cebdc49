//! Reading the server's Prometheus metrics, for tests that wait on what the
//! server has done rather than on the clock.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET /metrics over plain HTTP/1.1.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the series whose line starts with `series`.
pub fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

pub fn series(name: &str, kind: &str, method: &str) -> String {
    format!(
        "{name}{{grpc_method=\"{method}\",grpc_service=\"techoral.users.v1.UserService\",grpc_type=\"{kind}\",protocol=\"grpc\"}}"
    )
}

/// The value of `series`, or 0 before it exists.
pub fn value_or_zero(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Scrapes until `series` reaches `at_least`; panics after 10 s, which no
/// healthy server needs.
pub async fn wait_for(addr: std::net::SocketAddr, series: &str, at_least: f64) {
    for _ in 0..1000 {
        if value_or_zero(&scrape(addr).await, series) >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{series} never reached {at_least}:\n{}", scrape(addr).await);
}

/// Waits until the server has read `items` BulkCreateUsers messages in all:
/// what the tests of cancelled, killed and held uploads wait on before they
/// act, instead of a sleep.
pub async fn wait_for_bulk_items(addr: std::net::SocketAddr, items: usize) {
    let received = series(
        "grpc_server_msg_received_total",
        "client_stream",
        "BulkCreateUsers",
    );
    wait_for(addr, &received, items as f64).await;
}

/// The `grpc_server_handled_total` series of `method` (of `kind`) ended
/// with `code`, as go-grpc-prometheus spells it (`Cancelled`).
pub fn handled(method: &str, kind: &str, code: &str) -> String {
    format!(
        "grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"{method}\",grpc_service=\"techoral.users.v1.UserService\",grpc_type=\"{kind}\",protocol=\"grpc\"}}"
    )
}
