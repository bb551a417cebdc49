//! `usersvc serve`: every server setting as a flag with a `USERSVC_*`
//! environment variable, then `server::serve` until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::Failure;
use super::token::SecretArgs;
use crate::limits::RateLimit;
use crate::server::{self, Settings, TransportLimits};
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
    /// HTTP/2 streams one connection may have open; more are refused.
    #[arg(long, env = "USERSVC_MAX_CONCURRENT_STREAMS", default_value_t = 200)]
    max_concurrent_streams: u32,
    /// Streams reset for protocol errors on one connection before GOAWAY.
    #[arg(
        long,
        env = "USERSVC_MAX_LOCAL_ERROR_RESET_STREAMS",
        default_value_t = 1024
    )]
    max_local_error_reset_streams: usize,
    /// Streams a client may open and reset before they are accepted (rapid reset) before GOAWAY.
    #[arg(long, env = "USERSVC_MAX_PENDING_RESET_STREAMS", default_value_t = 20)]
    max_pending_reset_streams: usize,
    /// Largest request header list, in bytes.
    #[arg(long, env = "USERSVC_MAX_HEADER_LIST_SIZE", default_value_t = 16384)]
    max_header_list_size: u32,
    /// Largest request or response message, in bytes.
    #[arg(long, env = "USERSVC_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    max_message_bytes: usize,
    /// HTTP/2 keepalive PING interval on idle connections.
    #[arg(long, env = "USERSVC_KEEPALIVE_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    keepalive_interval: std::time::Duration,
    /// How long to wait for a keepalive PING's answer before closing.
    #[arg(long, env = "USERSVC_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    keepalive_timeout: std::time::Duration,
    /// Close connections gracefully after this long, so clients rebalance.
    #[arg(long, env = "USERSVC_MAX_CONNECTION_AGE", default_value = "1h", value_parser = humantime::parse_duration)]
    max_connection_age: std::time::Duration,
    /// Deadline of a call that sets none (until its response starts).
    #[arg(long, env = "USERSVC_DEFAULT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    default_timeout: std::time::Duration,
    /// Calls per second one caller (token subject, certificate or address)
    /// may make to UserService; 0 turns the limit off.
    #[arg(long, env = "USERSVC_RATE_LIMIT", default_value_t = 1000.0)]
    rate_limit: f64,
    /// Calls one caller may make at once before the rate applies.
    #[arg(long, env = "USERSVC_RATE_BURST", default_value_t = 2000.0)]
    rate_burst: f64,
    /// Log JSON lines instead of text. The level comes from RUST_LOG (default info).
    #[arg(long, env = "USERSVC_LOG_JSON")]
    log_json: bool,
    /// How calls are spread over threads: `multi-thread` (a worker per CPU
    /// the process may use), `current-thread` (all on one thread), or `auto`:
    /// current-thread when the process may use one CPU, else multi-thread.
    #[arg(long, env = "USERSVC_RUNTIME", value_enum, default_value_t = RuntimeLayout::Auto)]
    pub runtime: RuntimeLayout,
}

/// The tokio runtime the server runs on. On one CPU a multi-thread runtime
/// still has two threads taking turns (the worker, and the main thread
/// accepting connections), and a woken task is handed between them; one
/// thread doing everything served GetUser 37% faster there, with 42% less
/// p99 latency, and ListUsers and BulkCreateUsers a little faster
/// (BENCHMARKS.md has the measurements).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeLayout {
    Auto,
    MultiThread,
    CurrentThread,
}

impl RuntimeLayout {
    pub fn build(self) -> std::io::Result<tokio::runtime::Runtime> {
        let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
        match self {
            RuntimeLayout::Auto if one_cpu => tokio::runtime::Builder::new_current_thread(),
            RuntimeLayout::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            RuntimeLayout::Auto | RuntimeLayout::MultiThread => {
                tokio::runtime::Builder::new_multi_thread()
            }
        }
        .enable_all()
        .build()
    }
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
    let _log = crate::telemetry::init(args.log_json);
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
        max_message_bytes: args.max_message_bytes,
        rate_limit: (args.rate_limit > 0.0).then_some(RateLimit {
            per_second: args.rate_limit,
            burst: args.rate_burst.max(1.0),
        }),
        transport: TransportLimits {
            max_concurrent_streams: args.max_concurrent_streams,
            max_local_error_reset_streams: args.max_local_error_reset_streams,
            max_pending_accept_reset_streams: args.max_pending_reset_streams,
            max_header_list_size: args.max_header_list_size,
            keepalive_interval: args.keepalive_interval,
            keepalive_timeout: args.keepalive_timeout,
            max_connection_age: args.max_connection_age,
            default_timeout: args.default_timeout,
        },
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
