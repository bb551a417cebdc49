//! `usersvc serve`: every server setting as a flag with a `USERSVC_*`
//! environment variable, then `server::serve` until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::Failure;
use super::token::SecretArgs;
use crate::server::{self, Settings};
use crate::service::Limits;
use crate::store::{MemoryStore, UserStore};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "USERSVC_ADDR", default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// Where users are kept: `memory` (lost on exit).
    #[arg(long, env = "USERSVC_STORE", default_value = "memory", value_parser = parse_store)]
    store: StoreKind,
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
    /// Log JSON lines instead of text. The level comes from RUST_LOG (default info).
    #[arg(long, env = "USERSVC_LOG_JSON")]
    log_json: bool,
}

/// A `--store` value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum StoreKind {
    Memory,
}

fn parse_store(value: &str) -> Result<StoreKind, String> {
    match value {
        "memory" => Ok(StoreKind::Memory),
        other => Err(format!("unknown store {other:?}: expected memory")),
    }
}

pub async fn run(args: ServeArgs) -> Result<(), Failure> {
    crate::telemetry::init(args.log_json);
    let (secret, source) = args.secret.resolve()?;
    tracing::info!(?source, "JWT secret loaded");
    let store: Arc<dyn UserStore> = match args.store {
        StoreKind::Memory => Arc::new(MemoryStore::new()),
    };
    let settings = Settings {
        expect: args.secret.expect(),
        public_methods: args
            .public_methods
            .into_iter()
            .filter(|m| !m.is_empty())
            .collect(),
        watch_buffer: args.watch_buffer as usize,
        shutdown_grace: args.shutdown_grace,
        limits: Limits {
            max_bulk_items: args.max_bulk_items as usize,
            ..Limits::default()
        },
        ..Settings::new(store, secret)
    };
    crate::auth::Policy::new(&settings.public_methods).map_err(Failure::Usage)?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| Failure::Other(format!("cannot listen on {}: {e}", args.addr)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::Other(e.to_string()))?;
    tracing::info!(addr = %local, store = ?args.store, "usersvc listening");
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
