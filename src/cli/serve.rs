//! `usersvc serve`: every server setting as a flag with a `USERSVC_*`
//! environment variable, then the server until SIGINT or SIGTERM.
//!
//! The flags' defaults are read from the library's `Default` impls
//! (`Settings::new`, `TransportSettings`, `Limits`, `StoreOptions`,
//! `RateLimit`), so that `usersvc serve` with no flags and a server built
//! in a test from `Settings::new` run the same configuration.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use clap::{Args, ValueEnum};
use humantime::Duration;

use super::{Failure, SecretArgs};
use crate::auth::{Cidr, DEFAULT_PUBLIC_METHODS, RateLimit, RoleClaim, jwks};
use crate::pb::Method;
use crate::server::tls::ServerTls;
use crate::server::traces::{Export, Traces};
use crate::server::{Application, Settings, TransportSettings};
use crate::service::Limits;
use crate::store::{self, StoreOptions, Synchronous};

/// The library's defaults, for the flags' `default_value_t`.
struct Defaults {
    settings: Settings,
    store: StoreOptions,
    rate: RateLimit,
}

static DEFAULTS: LazyLock<Defaults> = LazyLock::new(|| Defaults {
    settings: Settings::new(
        Arc::new(store::MemoryStore::new()),
        crate::auth::Secret::from_bytes(Vec::new()),
    ),
    store: StoreOptions::default(),
    rate: RateLimit::default(),
});

fn transport() -> &'static TransportSettings {
    &DEFAULTS.settings.transport
}

fn limits() -> &'static Limits {
    &DEFAULTS.settings.limits
}

/// The default store: one SQLite file in the data directory, the one
/// `--data-dir` names.
fn default_store(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}/users.db", data_dir.display())
}

fn default_public_methods() -> Vec<String> {
    DEFAULT_PUBLIC_METHODS
        .iter()
        .map(|m| m.name().to_owned())
        .collect()
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "USERSVC_ADDR", default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// Where users are kept: `sqlite://PATH` (embedded, one file),
    /// `postgres://USER@HOST/DB` (several replicas), or `memory` (lost on exit).
    /// [default: sqlite://<data-dir>/users.db]
    #[arg(long, env = "USERSVC_STORE", value_parser = parse_store)]
    store: Option<String>,
    /// SQLite durability: `full` syncs every commit to disk before answering;
    /// `normal` survives a crash of usersvc but may lose the last commits to a
    /// power loss.
    #[arg(long, env = "USERSVC_SQLITE_SYNCHRONOUS", value_enum, default_value_t = DEFAULTS.store.sqlite_synchronous)]
    sqlite_synchronous: Synchronous,
    /// Longest wait for a database connection or statement, as 5s.
    #[arg(long, env = "USERSVC_DB_TIMEOUT", default_value_t = DEFAULTS.store.db_timeout.into())]
    db_timeout: Duration,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Methods that need no token, comma-separated (e.g. GetUser,ListUsers).
    /// Empty makes every method need one.
    #[arg(long, env = "USERSVC_PUBLIC_METHODS", value_delimiter = ',', default_values_t = default_public_methods())]
    public_methods: Vec<String>,
    /// Events kept for a slow watcher before it is dropped with RESOURCE_EXHAUSTED.
    #[arg(long, env = "USERSVC_WATCH_BUFFER", default_value_t = DEFAULTS.store.watch_buffer, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    watch_buffer: usize,
    /// How long changes are kept for watches that resume: a count of
    /// changes, a duration (90s, 30m, 1h, 7d), or both (100000,1h). A
    /// resume point older than what is kept is OUT_OF_RANGE.
    #[arg(long, env = "USERSVC_EVENT_RETENTION", default_value = "100000,1h")]
    event_retention: store::Retention,
    /// Most items in one BulkCreateUsers call.
    #[arg(long, env = "USERSVC_MAX_BULK_ITEMS", default_value_t = limits().max_bulk_items, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=u64::from(u32::MAX)))]
    max_bulk_items: usize,
    /// How long shutdown waits for calls in flight, as 10s or 1m.
    #[arg(long, env = "USERSVC_SHUTDOWN_GRACE", default_value_t = DEFAULTS.settings.shutdown_grace.into())]
    shutdown_grace: Duration,
    /// Serve gRPC server reflection (for grpcurl and Postman): true or false.
    #[arg(long, env = "USERSVC_REFLECTION", default_value_t = DEFAULTS.settings.reflection, action = clap::ArgAction::Set)]
    reflection: bool,
    /// Serve the console, a page for people, at GET /: true or false.
    #[arg(long, env = "USERSVC_CONSOLE", default_value_t = DEFAULTS.settings.console, action = clap::ArgAction::Set)]
    console: bool,
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
    #[arg(long, env = "USERSVC_MAX_CONCURRENT_STREAMS", default_value_t = transport().max_concurrent_streams)]
    max_concurrent_streams: u32,
    /// Streams reset for protocol errors on one connection before GOAWAY.
    #[arg(long, env = "USERSVC_MAX_LOCAL_ERROR_RESET_STREAMS", default_value_t = transport().max_local_error_reset_streams)]
    max_local_error_reset_streams: usize,
    /// Streams a client may open and reset before they are accepted (rapid reset) before GOAWAY.
    #[arg(long, env = "USERSVC_MAX_PENDING_RESET_STREAMS", default_value_t = transport().max_pending_accept_reset_streams)]
    max_pending_reset_streams: usize,
    /// Largest request header list, in bytes.
    #[arg(long, env = "USERSVC_MAX_HEADER_LIST_SIZE", default_value_t = transport().max_header_list_size)]
    max_header_list_size: u32,
    /// Largest request or response message, in bytes.
    #[arg(long, env = "USERSVC_MAX_MESSAGE_BYTES", default_value_t = limits().max_message_bytes)]
    max_message_bytes: usize,
    /// HTTP/2 keepalive PING interval on idle connections.
    #[arg(long, env = "USERSVC_KEEPALIVE_INTERVAL", default_value_t = transport().keepalive_interval.into())]
    keepalive_interval: Duration,
    /// How long to wait for a keepalive PING's answer before closing.
    #[arg(long, env = "USERSVC_KEEPALIVE_TIMEOUT", default_value_t = transport().keepalive_timeout.into())]
    keepalive_timeout: Duration,
    /// Close connections gracefully after this long, so clients rebalance.
    #[arg(long, env = "USERSVC_MAX_CONNECTION_AGE", default_value_t = transport().max_connection_age.into())]
    max_connection_age: Duration,
    /// How long a connection told to go away (--max-connection-age) may keep
    /// its streams before it is closed.
    #[arg(long, env = "USERSVC_MAX_CONNECTION_AGE_GRACE", default_value_t = transport().max_connection_age_grace.into())]
    max_connection_age_grace: Duration,
    /// Deadline of a call that sets none, or one that does not parse (until
    /// its response starts).
    #[arg(long, env = "USERSVC_DEFAULT_TIMEOUT", default_value_t = transport().default_timeout.into())]
    default_timeout: Duration,
    /// The longest deadline a call may set; a longer one is cut to this.
    #[arg(long, env = "USERSVC_MAX_TIMEOUT", default_value_t = transport().max_timeout.into())]
    max_timeout: Duration,
    /// How long a new connection may take to send its first request head
    /// (or HTTP/2 preface and SETTINGS) before it is closed; a TLS one counts
    /// from the end of its handshake.
    #[arg(long, env = "USERSVC_HEADER_READ_TIMEOUT", default_value_t = transport().header_read_timeout.into())]
    header_read_timeout: Duration,
    /// How long a connection may have no call open before it is shut down
    /// (GOAWAY over HTTP/2).
    #[arg(long, env = "USERSVC_IDLE_CONNECTION_TIMEOUT", default_value_t = transport().idle_connection_timeout.into())]
    idle_connection_timeout: Duration,
    /// Connections open at once, in all; more are closed as they arrive.
    #[arg(long, env = "USERSVC_MAX_CONNECTIONS", default_value_t = transport().max_connections, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,
    /// Connections open at once from one client address (an IPv6 client by
    /// its /64); more are closed as they arrive.
    #[arg(long, env = "USERSVC_MAX_CONNECTIONS_PER_CLIENT", default_value_t = transport().max_connections_per_client, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections_per_client: usize,
    /// Request bytes held for calls before their handler has them, from
    /// every caller; past it calls end RESOURCE_EXHAUSTED.
    #[arg(long, env = "USERSVC_MAX_REQUEST_MEMORY", default_value_t = DEFAULTS.settings.request_memory.total)]
    max_request_memory: usize,
    /// The same, for one caller with a token or client certificate.
    #[arg(long, env = "USERSVC_MAX_REQUEST_MEMORY_PER_CALLER", default_value_t = DEFAULTS.settings.request_memory.per_caller)]
    max_request_memory_per_caller: usize,
    /// The same, for one caller with neither (by address).
    #[arg(long, env = "USERSVC_MAX_REQUEST_MEMORY_ANONYMOUS", default_value_t = DEFAULTS.settings.request_memory.anonymous)]
    max_request_memory_anonymous: usize,
    /// A host name, besides the loopback ones, under which browsers may
    /// reach a server listening on a loopback address; repeatable.
    #[arg(
        long = "allowed-host",
        env = "USERSVC_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// How long a BulkCreateUsers stream may send nothing before it is ended
    /// with DEADLINE_EXCEEDED.
    #[arg(long, env = "USERSVC_STREAM_IDLE_TIMEOUT", default_value_t = limits().stream_idle_timeout.into())]
    stream_idle_timeout: Duration,
    /// BulkCreateUsers streams one caller may have open at once.
    #[arg(long, env = "USERSVC_MAX_BULK_STREAMS_PER_CALLER", default_value_t = limits().max_bulk_streams_per_caller, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_bulk_streams_per_caller: usize,
    /// Subscriptions one WatchUserEvents stream may hold.
    #[arg(long, env = "USERSVC_MAX_SUBSCRIPTIONS", default_value_t = limits().max_subscriptions, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_subscriptions: usize,
    /// WatchUserEvents streams one caller may have open at once.
    #[arg(long, env = "USERSVC_MAX_WATCH_STREAMS_PER_CALLER", default_value_t = limits().max_watch_streams_per_caller, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_watch_streams_per_caller: usize,
    /// WatchUserEvents streams open at once, from every caller.
    #[arg(long, env = "USERSVC_MAX_WATCH_STREAMS", default_value_t = limits().max_watch_streams, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_watch_streams: usize,
    /// Calls per second one caller (token subject, certificate or address)
    /// may make to UserService; 0 turns the limit off.
    #[arg(long, env = "USERSVC_RATE_LIMIT", default_value_t = DEFAULTS.rate.per_second)]
    rate_limit: f64,
    /// A proxy (address or block, as 10.0.0.0/8) whose x-forwarded-for names
    /// the client, for the rate limit of callers without a token; repeatable.
    /// From any other peer the header is ignored.
    #[arg(
        long = "trusted-proxy",
        env = "USERSVC_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<Cidr>,
    /// An origin whose pages may call the server from a browser (CORS), as
    /// https://app.example.com; repeatable. None by default.
    #[arg(
        long = "cors-origin",
        env = "USERSVC_CORS_ORIGINS",
        value_delimiter = ',',
        value_parser = parse_origin
    )]
    cors_origins: Vec<http::HeaderValue>,
    /// Calls one caller may make at once before the rate applies.
    #[arg(long, env = "USERSVC_RATE_BURST", default_value_t = DEFAULTS.rate.burst)]
    rate_burst: f64,
    /// Export OpenTelemetry traces over OTLP to this collector, as
    /// http://HOST:4318 (http/protobuf, the default) or http://HOST:4317
    /// with OTEL_EXPORTER_OTLP_PROTOCOL=grpc. The other OTEL_* variables
    /// apply (OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, OTEL_SDK_DISABLED, …);
    /// off when no endpoint is set.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Log JSON lines instead of text. The level comes from RUST_LOG (default info).
    #[arg(long, env = "USERSVC_LOG_JSON")]
    log_json: bool,
    /// How calls are spread over threads: `multi-thread` (a worker per CPU
    /// the process may use), `current-thread` (all on one thread), or `auto`:
    /// current-thread when the process may use one CPU, else multi-thread.
    #[arg(long, env = "USERSVC_RUNTIME", value_enum, default_value_t = RuntimeLayout::Auto)]
    pub runtime: RuntimeLayout,
}

/// Tokens from an identity provider: where its keys are, and where its
/// tokens carry their roles.
#[derive(Debug, Args)]
struct IdentityArgs {
    /// A JWKS file with the identity provider's public keys, re-read when it
    /// changes. Needs --jwt-issuer and --jwt-audience.
    #[arg(long, env = "USERSVC_JWKS_FILE", conflicts_with = "jwks_url")]
    jwks_file: Option<std::path::PathBuf>,
    /// The identity provider's JWKS URL (https; plain http only to a
    /// loopback address), fetched at start and kept as its Cache-Control
    /// says. Needs --jwt-issuer and --jwt-audience.
    #[arg(long, env = "USERSVC_JWKS_URL")]
    jwks_url: Option<String>,
    /// The CA certificate (PEM) --jwks-url's certificate must chain to; the
    /// system's CAs without it.
    #[arg(long, env = "USERSVC_JWKS_CA", requires = "jwks_url")]
    jwks_ca: Option<std::path::PathBuf>,
    /// The least time between two fetches of --jwks-url. A token naming an
    /// unknown key (kid) makes at most one fetch per interval.
    #[arg(long, env = "USERSVC_JWKS_REFETCH_INTERVAL", default_value_t = crate::auth::jwks::source::DEFAULT_REFETCH_INTERVAL.into(), value_parser = parse_refetch_interval)]
    jwks_refetch_interval: Duration,
    /// The claim a token's role is read from, dotted for nested objects
    /// (Keycloak: realm_access.roles); a string or an array of strings.
    #[arg(long, env = "USERSVC_ROLE_CLAIM", default_value = crate::auth::roles::DEFAULT_CLAIM)]
    role_claim: String,
    /// IDP_ROLE=ROLE: a role name of the identity provider, and the role
    /// (admin, editor or viewer) it means here; repeatable. Without any,
    /// the names admin, editor and viewer are taken as they are.
    #[arg(long = "role-map", env = "USERSVC_ROLE_MAP", value_delimiter = ',')]
    role_map: Vec<String>,
}

impl IdentityArgs {
    /// Where the keys are, when tokens come from an identity provider.
    fn jwks(&self, secret: &SecretArgs) -> Result<Option<jwks::Config>, Failure> {
        let source = match (&self.jwks_file, &self.jwks_url) {
            (Some(file), _) => jwks::Source::File(file.clone()),
            (None, Some(url)) => {
                jwks::Source::url(url, self.jwks_ca.clone()).map_err(Failure::Usage)?
            }
            (None, None) => return Ok(None),
        };
        // Without both, a token minted by the provider for any of its other
        // applications would be taken here.
        if secret.jwt_issuer.is_none() || secret.jwt_audience.is_none() {
            return Err(Failure::Usage(
                "--jwks-file and --jwks-url need --jwt-issuer and --jwt-audience: the \
                 provider's issuer URL and the audience its tokens carry for usersvc"
                    .into(),
            ));
        }
        if secret.jwt_secret.is_some() && secret.jwt_secret_file.is_none() {
            return Err(Failure::Usage(
                "USERSVC_JWT_SECRET is not used with a JWKS: HS256 tokens are taken beside \
                 the provider's only with --jwt-secret-file"
                    .into(),
            ));
        }
        Ok(Some(jwks::Config {
            source,
            refetch_interval: self.jwks_refetch_interval.into(),
            with_secret: secret.jwt_secret_file.is_some(),
        }))
    }

    fn roles(&self) -> Result<RoleClaim, Failure> {
        RoleClaim::parse(&self.role_claim, &self.role_map).map_err(Failure::Usage)
    }
}

/// A refetch interval of a second at least (`MIN_REFETCH_INTERVAL`).
fn parse_refetch_interval(text: &str) -> Result<Duration, String> {
    let interval: Duration = text.parse().map_err(|e| format!("{e}"))?;
    let least = crate::auth::jwks::source::MIN_REFETCH_INTERVAL;
    if std::time::Duration::from(interval) < least {
        return Err(format!(
            "at least {}: a shorter one lets made-up key ids make usersvc fetch in a loop",
            humantime::format_duration(least)
        ));
    }
    Ok(interval)
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

/// Builds the server the flags describe, bound and ready to run.
pub async fn build(args: ServeArgs) -> Result<Application, Failure> {
    let jwks = args.identity.jwks(&args.secret)?;
    // With a JWKS, HS256 is refused unless a secret file is given: no
    // secret is generated that tokens could be minted with.
    let secret = match &jwks {
        Some(config) if !config.with_secret => {
            tracing::info!(jwks = %config.source.describe(), "tokens from the identity provider's keys only; HS256 refused");
            crate::auth::Secret::from_bytes(Vec::new())
        }
        _ => {
            let (secret, source) = args.secret.resolve()?;
            tracing::info!(?source, "JWT secret loaded");
            secret
        }
    };
    let options = StoreOptions {
        watch_buffer: args.watch_buffer,
        sqlite_synchronous: args.sqlite_synchronous,
        db_timeout: args.db_timeout.into(),
        event_retention: args.event_retention,
    };
    let address = args
        .store
        .clone()
        .unwrap_or_else(|| default_store(&args.secret.data_dir));
    let store = store::open(&address, &options)
        .await
        .map_err(|e| Failure::Other(format!("cannot open the store: {e}")))?;
    let mut settings = settings(&args, Settings::new(store, secret))?;
    settings.jwks = jwks;
    if let Some(export) = Export::from_env(args.otlp_endpoint.as_deref()).map_err(Failure::Usage)? {
        let traces = Traces::start(&export).map_err(Failure::Usage)?;
        tracing::info!(endpoint = %export.endpoint, protocol = ?export.protocol, "exporting traces");
        settings.traces = Some(traces);
    }
    if let Some(tls) = &settings.tls {
        tls.config().map_err(Failure::Usage)?;
    }
    if let Some(addr) = args.metrics_addr {
        let listener = bind(addr).await?;
        let local = listener
            .local_addr()
            .map_err(|e| Failure::Other(e.to_string()))?;
        tracing::info!(metrics_addr = %local, "serving Prometheus metrics");
        settings.metrics_listener = Some(Arc::new(listener));
    }
    let listener = bind(args.addr).await?;
    let app = Application::build(listener, settings)
        .await
        .map_err(|e| Failure::Other(e.to_string()))?;
    tracing::info!(addr = %app.local_addr(), store = %store::described(&address), "usersvc listening");
    Ok(app)
}

/// The settings the flags describe, over `defaults` (a store and a secret
/// with every other setting at its default).
fn settings(args: &ServeArgs, defaults: Settings) -> Result<Settings, Failure> {
    let public_methods = args
        .public_methods
        .iter()
        .filter(|m| !m.is_empty())
        .map(|name| {
            Method::from_name(name)
                .ok_or_else(|| Failure::Usage(format!("unknown method {name:?} in public methods")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.client_ca.clone(),
        }),
        _ => None,
    };
    Ok(Settings {
        expect: args.secret.expect(),
        roles: args.identity.roles()?,
        public_methods,
        shutdown_grace: args.shutdown_grace.into(),
        rate_limit: (args.rate_limit > 0.0).then_some(RateLimit {
            per_second: args.rate_limit,
            burst: args.rate_burst.max(1.0),
        }),
        transport: TransportSettings {
            max_concurrent_streams: args.max_concurrent_streams,
            max_local_error_reset_streams: args.max_local_error_reset_streams,
            max_pending_accept_reset_streams: args.max_pending_reset_streams,
            max_header_list_size: args.max_header_list_size,
            keepalive_interval: args.keepalive_interval.into(),
            keepalive_timeout: args.keepalive_timeout.into(),
            max_connection_age: args.max_connection_age.into(),
            max_connection_age_grace: args.max_connection_age_grace.into(),
            default_timeout: args.default_timeout.into(),
            max_timeout: args.max_timeout.into(),
            header_read_timeout: args.header_read_timeout.into(),
            idle_connection_timeout: args.idle_connection_timeout.into(),
            max_connections: args.max_connections,
            max_connections_per_client: args.max_connections_per_client,
        },
        request_memory: crate::server::layers::request_memory::MemoryCaps {
            total: args.max_request_memory,
            per_caller: args.max_request_memory_per_caller,
            anonymous: args.max_request_memory_anonymous,
        },
        allowed_hosts: args.allowed_hosts.clone(),
        reflection: args.reflection,
        console: args.console,
        trusted_proxies: args.trusted_proxies.clone(),
        cors_origins: args.cors_origins.clone(),
        limits: Limits {
            max_bulk_items: args.max_bulk_items,
            max_message_bytes: args.max_message_bytes,
            max_bulk_streams_per_caller: args.max_bulk_streams_per_caller,
            stream_idle_timeout: args.stream_idle_timeout.into(),
            max_subscriptions: args.max_subscriptions,
            max_watch_streams_per_caller: args.max_watch_streams_per_caller,
            max_watch_streams: args.max_watch_streams,
            ..defaults.limits.clone()
        },
        tls,
        ..defaults
    })
}

/// An origin as a browser sends it: a scheme, a host and maybe a port, with
/// no path, as `https://app.example.com:8443`.
fn parse_origin(text: &str) -> Result<http::HeaderValue, String> {
    let invalid = || format!("{text:?} is not an origin such as https://app.example.com");
    let uri: http::Uri = text.parse().map_err(|_| invalid())?;
    let bare = uri.scheme().is_some()
        && uri.host().is_some()
        && matches!(uri.path_and_query().map(|p| p.as_str()), None | Some("/"))
        && !text.ends_with('/');
    if !bare {
        return Err(invalid());
    }
    http::HeaderValue::from_str(text).map_err(|_| invalid())
}

/// `usersvc serve`: builds the server, and runs it until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> Result<(), Failure> {
    let _log = crate::server::logging::init(args.log_json);
    let app = build(args).await?;
    let traces = app.traces();
    let served = app
        .run_until_stopped(crate::server::shutdown::signal())
        .await
        .map_err(|e| Failure::Other(e.to_string()));
    // The last calls' spans go out before the process does, off the
    // runtime's threads: the export is run on them.
    if let Some(traces) = traces {
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    }
    served?;
    tracing::info!("usersvc stopped");
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Failure> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Other(format!("cannot listen on {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn serve_args(flags: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(["usersvc", "serve"].iter().chain(flags)).unwrap();
        match cli.command {
            super::super::Command::Serve(args) => *args,
            _ => unreachable!("parsed as serve"),
        }
    }

    fn library_defaults() -> Settings {
        Settings::new(
            Arc::new(store::MemoryStore::new()),
            crate::auth::Secret::from_bytes(Vec::new()),
        )
    }

    /// `usersvc serve` with no flags runs what `Settings::new` describes, so
    /// a test server built from `Settings::new` runs production's defaults.
    #[test]
    fn serve_without_flags_runs_the_library_defaults() {
        let args = serve_args(&[]);
        let ours = settings(&args, library_defaults()).unwrap();
        let theirs = library_defaults();
        assert_eq!(ours.transport, theirs.transport);
        assert_eq!(ours.rate_limit, theirs.rate_limit);
        assert_eq!(ours.public_methods, theirs.public_methods);
        assert_eq!(ours.shutdown_grace, theirs.shutdown_grace);
        assert_eq!(ours.reflection, theirs.reflection);
        assert_eq!(ours.expect, theirs.expect);
        assert_eq!(
            (ours.limits.max_bulk_items, ours.limits.max_message_bytes),
            (
                theirs.limits.max_bulk_items,
                theirs.limits.max_message_bytes
            )
        );
        assert!(ours.tls.is_none() && ours.metrics_listener.is_none());
        let store = StoreOptions::default();
        assert_eq!(args.watch_buffer, store.watch_buffer);
        assert_eq!(args.sqlite_synchronous, store.sqlite_synchronous);
        assert_eq!(std::time::Duration::from(args.db_timeout), store.db_timeout);
        assert_eq!(args.event_retention, store.event_retention);
    }

    #[test]
    fn flags_override_the_defaults() {
        let args = serve_args(&[
            "--rate-limit",
            "0",
            "--public-methods",
            "GetUser,ListUsers",
            "--default-timeout",
            "2s",
            "--max-message-bytes",
            "1000",
        ]);
        let ours = settings(&args, library_defaults()).unwrap();
        assert_eq!(ours.rate_limit, None);
        assert_eq!(ours.public_methods, [Method::GetUser, Method::ListUsers]);
        assert_eq!(
            ours.transport.default_timeout,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(ours.limits.max_message_bytes, 1000);
        let args = serve_args(&["--public-methods", "GetUsers"]);
        assert!(matches!(
            settings(&args, library_defaults()),
            Err(Failure::Usage(message)) if message.contains("GetUsers")
        ));
    }
}
