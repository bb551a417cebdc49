//! Test support: a real server on 127.0.0.1:0, and clients and tokens for it.
//!
//! Logs are silent unless `TEST_LOG` is set.

pub mod metrics;
pub mod process;
pub mod proxy;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use usersvc::auth::{self, Expect, Secret};
use usersvc::client::{Client, ClientConfig, RetryPolicy};
use usersvc::domain::Role;
use usersvc::pb;
use usersvc::pb::client::UserServiceClient;
use usersvc::server::{Application, Settings};
use usersvc::store::MemoryStore;

pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

/// A client of the server at `url`, holding a token for `role`.
pub fn client_as(url: &str, role: Role) -> Client {
    let mut config = ClientConfig::new(url.to_owned());
    config.token = Some(token(role));
    Client::new(config).unwrap()
}

/// A client of the server at `url`, holding an admin token.
pub fn admin_client(url: &str) -> Client {
    let mut config = ClientConfig::new(url.to_owned());
    config.token = Some(token(Role::Admin));
    config.timeout = Some(Duration::from_secs(30));
    Client::new(config).unwrap()
}

pub fn secret() -> Secret {
    Secret::from_bytes(SECRET.to_vec())
}

/// A running server, stopped when dropped.
pub struct TestApp {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

/// Starts a server with default settings over a fresh memory store.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The settings `usersvc serve` runs with, over a fresh memory store, with
/// one deliberate difference: no rate limit, since one test makes thousands
/// of calls as one caller. The tests of the limit turn it back on.
pub fn settings() -> Settings {
    Settings {
        rate_limit: None,
        ..Settings::new(Arc::new(MemoryStore::new()), secret())
    }
}

/// Starts a server after `configure` has adjusted its settings.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = settings();
    configure(&mut settings);
    spawn_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        settings,
    )
    .await
}

/// Starts a server on a listener the caller bound.
pub async fn spawn_on(listener: tokio::net::TcpListener, settings: Settings) -> TestApp {
    init_test_log();
    let app = Application::build(listener, settings)
        .await
        .expect("server built");
    let addr = app.local_addr();
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = rx.await;
        })
        .await
        .expect("server failed");
    });
    TestApp {
        addr,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,h2=info,hyper=info,tower=info")
            .with_test_writer()
            .try_init();
    }
}

impl TestApp {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The hand-written client with no token.
    pub fn raw(&self) -> UserServiceClient<Channel> {
        let channel = Channel::from_shared(self.url()).unwrap().connect_lazy();
        UserServiceClient::new(channel)
    }

    /// The library client, holding a token for `role` (or none).
    pub fn client(&self, role: Option<Role>) -> Client {
        let mut config = ClientConfig::new(self.url());
        config.token = role.map(token);
        config.timeout = Some(Duration::from_secs(10));
        config.retry = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        Client::new(config).unwrap()
    }

    pub fn admin(&self) -> Client {
        self.client(Some(Role::Admin))
    }

    /// Creates a user through the API and returns it.
    pub async fn create(&self, name: &str, email: &str, role: pb::UserRole) -> pb::User {
        self.admin()
            .create_user(create_request(name, email, role), None)
            .await
            .expect("create user")
    }

    /// Every user, through ListUsers.
    pub async fn list_all(&self) -> Vec<pb::User> {
        list_all(&self.admin()).await
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// Every user the store at `url` holds, read straight from it with the
/// library: what was stored, whatever a server said or did.
/// The SQLite file a `sqlite://` store address names, opened with the
/// library, as another tool on the machine would open it.
pub fn sqlite_file(url: &str) -> rusqlite::Connection {
    let address = usersvc::store::sqlite::SqliteAddress::parse(url).unwrap();
    rusqlite::Connection::open(address.path).unwrap()
}

pub async fn stored_users(url: &str) -> Vec<usersvc::domain::User> {
    let store = usersvc::store::open(url, &usersvc::store::StoreOptions::default())
        .await
        .unwrap();
    store
        .list_page(usersvc::store::PageQuery {
            limit: usize::MAX >> 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .users
        .iter()
        .map(|user| usersvc::domain::User::clone(user))
        .collect()
}

/// Every user, through `client`'s ListUsers.
pub async fn list_all(client: &Client) -> Vec<pb::User> {
    let mut stream = client
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap();
    let mut users = Vec::new();
    while let Some(user) = stream.message().await.unwrap() {
        users.push(user);
    }
    users
}

/// A valid token for `role`, good for an hour.
pub fn token(role: Role) -> String {
    auth::mint(
        &secret(),
        &format!("{role}-user"),
        role,
        Duration::from_secs(3600),
        &Expect::default(),
    )
    .unwrap()
}

pub fn create_request(name: &str, email: &str, role: pb::UserRole) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        name: name.into(),
        email: email.into(),
        role: role as i32,
        bio: None,
        ..Default::default()
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The field names of the `google.rpc.BadRequest` in `status`.
pub fn bad_request_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// A PostgreSQL address for a test that needs nothing else. Such tests have
/// `postgres` in their names: `tests/with-postgres.sh` skips them by name,
/// and says so, on a machine without PostgreSQL (never in CI), so that they
/// show as filtered out rather than passed.
pub async fn required_postgres_url() -> String {
    postgres_url().await.expect(
        "a test named for PostgreSQL runs only with it: tests/with-postgres.sh skips it by name",
    )
}

/// A PostgreSQL address with a schema of its own for one test, in the
/// database `USERSVC_TEST_PG` names (make test creates one per run). `None`
/// only when `USERSVC_SKIP_PG=1`, which `make test` sets, and announces, on
/// a machine without PostgreSQL; anywhere else a missing server fails.
pub async fn postgres_url() -> Option<String> {
    if std::env::var("USERSVC_SKIP_PG").as_deref() == Ok("1") {
        return None;
    }
    let base = std::env::var("USERSVC_TEST_PG")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned());
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let schema = format!(
        "t_{}_{}_{}",
        std::process::id(),
        usersvc::clock::unix_millis(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {base} is required (USERSVC_SKIP_PG=1 skips): {e}")
        });
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{separator}options=-c%20search_path%3D{schema}"
    ))
}

/// A server on each store: memory, a fresh SQLite file, and PostgreSQL
/// when `make test` has it (a schema of its own for each test).
pub async fn every_store() -> Vec<(&'static str, TestApp, Option<tempfile::TempDir>)> {
    let options = usersvc::store::StoreOptions::default();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = usersvc::store::open(
        &format!("sqlite://{}/users.db", dir.path().display()),
        &options,
    )
    .await
    .unwrap();
    let mut apps = vec![
        ("memory", spawn_app().await, None),
        (
            "sqlite",
            spawn_app_with(|s| s.store = sqlite).await,
            Some(dir),
        ),
    ];
    if let Some(url) = crate::support::postgres_url().await {
        let postgres = usersvc::store::open(&url, &options).await.unwrap();
        apps.push((
            "postgres",
            spawn_app_with(|s| s.store = postgres).await,
            None,
        ));
    }
    apps
}
