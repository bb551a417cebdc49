//! PostgreSQL going away and coming back: calls answer UNAVAILABLE while it
//! is gone, and recover on their own. The database is reached through a
//! proxy in the test that can cut every connection, so that the shared
//! server itself is never stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{create_request, spawn_app_with};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use usersvc::pb::UserRole;
use usersvc::store::{self, StoreOptions};

/// Forwards TCP connections to `upstream` while up; cut, it drops every
/// connection and refuses new ones.
struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (up2, connections2) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let upstream = upstream.clone();
                connections2.lock().await.push(tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        Proxy {
            addr,
            up,
            connections,
        }
    }

    async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().await.drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_outage_is_unavailable_and_recovers_by_itself() {
    let Some(url) = crate::support::postgres_url().await else {
        return;
    };
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
