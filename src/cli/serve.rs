//! `usersvc serve`: every server setting as a flag with a `USERSVC_*`
//! environment variable, then `server::serve` until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::Failure;
use super::token::SecretArgs;
use crate::server::{self, Settings};
use crate::service::Limits;
use crate::store::{self, StoreOptions, Synchronous};
use crate::tls::ServerTls;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "USERSVC_ADDR", default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// Where users are kept: `sqlite://PATH` (embedded, one file),
    /// `postgres://USER@HOST/DB` (several replicas), or `memory` (lost on exit).
    #[arg(long, env = "USERSVC_STORE", default_value = "sqlite://data/users.db", value_parser = parse_store)]
    store: String,
    /// SQLite durability: `full` syncs every commit to disk before answering;
    /// `normal` survives a crash of usersvc but may lose the last commits to a
    /// power loss.
    #[arg(long, env = "USERSVC_SQLITE_SYNCHRONOUS", value_enum, default_value_t = Synchronous::Full)]
    sqlite_synchronous: Synchronous,
    /// Longest wait for a database connection or statement, as 5s.
    #[arg(long, env = "USERSVC_DB_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    db_timeout: std::time::Duration,
    #[command(flatten)]
    secret: SecretArgs,
    /// Methods that need no token, comma-separated (e.g. GetUser,ListUsers).
    /// Empty makes every method need one.
    #[arg(
        long,
        env = "USERSVC_PUBLIC_METHODS",
        value_delimiter = ',',
        default_value = "GetUser"
    )]
    public_methods: Vec<String>,
    /// Events kept for a slow watcher before it is dropped with RESOURCE_EXHAUSTED.
    #[arg(long, env = "USERSVC_WATCH_BUFFER", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    watch_buffer: u32,
    /// Most items in one BulkCreateUsers call.
    #[arg(long, env = "USERSVC_MAX_BULK_ITEMS", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_bulk_items: u32,
    /// How long shutdown waits for calls in flight, as 10s or 1m.
    #[arg(long, env = "USERSVC_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_grace: std::time::Duration,
    /// Serve gRPC server reflection (for grpcurl and Postman): true or false.
    #[arg(long, env = "USERSVC_REFLECTION", default_value_t = true, action = clap::ArgAction::Set)]
    reflection: bool,
    /// Serve Prometheus metrics over HTTP on this address (off unless given).
    #[arg(long, env = "USERSVC_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "USERSVC_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "USERSVC_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by this CA (PEM): mTLS. Needs --tls-cert.
    #[arg(long, env = "USERSVC_CLIENT_CA", requires = "tls_cert")]
    client_ca: Option<std::path::PathBuf>,
    /// Log JSON lines instead of text. The level comes from RUST_LOG (default info).
    #[arg(long, env = "USERSVC_LOG_JSON")]
    log_json: bool,
}

/// Checks a `--store` value's form, so that a typo exits before anything binds.
fn parse_store(value: &str) -> Result<String, String> {
    let known = value == "memory"
        || ["sqlite:", "postgres:", "postgresql:"]
            .iter()
            .any(|s| value.starts_with(s));
    if known {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "unknown store {value:?}: expected sqlite://PATH, postgres://… or memory"
        ))
    }
}

pub async fn run(args: ServeArgs) -> Result<(), Failure> {
    crate::telemetry::init(args.log_json);
    let public_methods: Vec<String> = args
        .public_methods
        .into_iter()
        .filter(|m| !m.is_empty())
        .collect();
    crate::auth::Policy::new(&public_methods).map_err(Failure::Usage)?;
    let (secret, source) = args.secret.resolve()?;
    tracing::info!(?source, "JWT secret loaded");
    let options = StoreOptions {
        watch_buffer: args.watch_buffer as usize,
        sqlite_synchronous: args.sqlite_synchronous,
        db_timeout: args.db_timeout,
    };
    let store = store::open(&args.store, &options)
        .await
        .map_err(|e| Failure::Other(format!("cannot open the store: {e}")))?;
    let settings = Settings {
        expect: args.secret.expect(),
        public_methods,
        shutdown_grace: args.shutdown_grace,
        reflection: args.reflection,
        limits: Limits {
            max_bulk_items: args.max_bulk_items as usize,
            ..Limits::default()
        },
        ..Settings::new(store, secret)
    };
    let metrics_listener = match args.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Failure::Other(format!("cannot listen on {addr}: {e}")))?;
            let local = listener
                .local_addr()
                .map_err(|e| Failure::Other(e.to_string()))?;
            tracing::info!(metrics_addr = %local, "serving Prometheus metrics");
            Some(std::sync::Arc::new(listener))
        }
        None => None,
    };
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = ServerTls {
                cert,
                key,
                client_ca: args.client_ca,
            };
            tls.config().map_err(Failure::Usage)?;
            Some(tls)
        }
        _ => None,
    };
    let settings = Settings {
        metrics_listener,
        tls,
        ..settings
    };
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| Failure::Other(format!("cannot listen on {}: {e}", args.addr)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::Other(e.to_string()))?;
    tracing::info!(addr = %local, store = %redacted(&args.store), "usersvc listening");
    server::serve(listener, settings, crate::shutdown::signal())
        .await
        .map_err(|e| Failure::Other(e.to_string()))?;
    tracing::info!("usersvc stopped");
    Ok(())
}

/// The data directory's default, relative to where the server runs.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// The store address without a password, for the log.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
