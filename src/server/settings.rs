//! Everything a server needs besides its listener, with the defaults that
//! `usersvc serve` shows in its `--help`: each default is written here once.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::layers::request_memory::MemoryCaps;
use super::tls::ServerTls;
use crate::auth::{Cidr, DEFAULT_PUBLIC_METHODS, Expect, RateLimit, RoleClaim, Secret, jwks};
use crate::pb::Method;
use crate::service::Limits;
use crate::store::UserStore;

/// The connections' settings: HTTP/2 protections that tonic leaves off by
/// default, keepalive, connection caps and timeouts, connection age, and
/// the deadlines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportSettings {
    /// Streams one connection may have open at once; more are refused
    /// with REFUSED_STREAM (tonic's default: unlimited).
    pub max_concurrent_streams: u32,
    /// Streams the server may reset for a connection's protocol errors
    /// before it sends GOAWAY (tonic's default since 0.14.3: unlimited,
    /// the RUSTSEC-2024-0003 class of attack).
    pub max_local_error_reset_streams: usize,
    /// Streams a client may open and reset before they are accepted, before
    /// GOAWAY: the rapid-reset attack (CVE-2023-44487).
    pub max_pending_accept_reset_streams: usize,
    /// Largest request header list, in bytes.
    pub max_header_list_size: u32,
    /// HTTP/2 PING interval on idle connections, and how long to wait for
    /// the answer before closing.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Connections are closed (gracefully) after this long, so that clients
    /// rebalance across replicas.
    pub max_connection_age: Duration,
    /// How long a connection told to go away by `max_connection_age` may
    /// keep its streams, before it is closed: a watch stream otherwise holds
    /// an old connection open for ever.
    pub max_connection_age_grace: Duration,
    /// Deadline of a call that brings none of its own, until its response
    /// starts (streams then run on); DEADLINE_EXCEEDED when it passes.
    pub default_timeout: Duration,
    /// The longest deadline a call may ask for; a larger one is clamped.
    pub max_timeout: Duration,
    /// How long a new connection may take to send its first request head
    /// (or HTTP/2's preface and SETTINGS), counted after a TLS handshake.
    pub header_read_timeout: Duration,
    /// How long a connection may have no call open before it is shut down.
    pub idle_connection_timeout: Duration,
    /// Connections open at once, from every client.
    pub max_connections: usize,
    /// Connections open at once from one client address (an IPv6 client
    /// by its /64).
    pub max_connections_per_client: usize,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 200,
            max_local_error_reset_streams: 1024,
            max_pending_accept_reset_streams: 20,
            max_header_list_size: 16 * 1024,
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            max_connection_age: Duration::from_secs(3600),
            max_connection_age_grace: Duration::from_secs(30),
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(300),
            header_read_timeout: Duration::from_secs(10),
            // Past a browser's own idle close (Chromium's is 5 minutes) and
            // a client's pause between bursts, so a live client keeps its
            // connection and its TLS session; far short of the hour of
            // --max-connection-age an abandoned one held before.
            idle_connection_timeout: Duration::from_secs(300),
            // Well under a usual descriptor limit (tens of thousands), and
            // far over what one client needs: HTTP/2 multiplexes its calls.
            max_connections: 10_000,
            max_connections_per_client: 1_000,
        }
    }
}

/// Everything a server needs besides its listener.
#[derive(Clone)]
pub struct Settings {
    pub store: Arc<dyn UserStore>,
    pub secret: Secret,
    /// Issuer and audience that tokens must carry, when set.
    pub expect: Expect,
    /// Tokens from an identity provider's published keys, when set; HS256
    /// with `secret` is then taken only if the configuration says so.
    pub jwks: Option<jwks::Config>,
    /// Where a token's role is read from.
    pub roles: RoleClaim,
    /// OpenTelemetry traces, when on.
    pub traces: Option<crate::server::traces::Traces>,
    /// Methods that need no token.
    pub public_methods: Vec<Method>,
    /// The service's own limits, message size included.
    pub limits: Limits,
    /// How long shutdown waits for calls in flight before dropping them.
    pub shutdown_grace: Duration,
    /// How often health checks the store.
    pub health_interval: Duration,
    /// Whether to serve gRPC server reflection.
    pub reflection: bool,
    /// Where to serve Prometheus metrics; none when `None`.
    pub metrics_listener: Option<Arc<TcpListener>>,
    /// TLS, and mTLS when it names a client CA; plaintext when `None`.
    pub tls: Option<ServerTls>,
    pub transport: TransportSettings,
    /// Calls per caller; unlimited when `None`.
    pub rate_limit: Option<RateLimit>,
    /// Proxies whose `x-forwarded-for` names the client, for the limits of
    /// callers without a token or certificate.
    pub trusted_proxies: Vec<Cidr>,
    /// Origins whose pages may call the server from a browser (CORS), as
    /// `https://app.example.com`; none by default.
    pub cors_origins: Vec<http::HeaderValue>,
    /// Serve the console page at `GET /`.
    pub console: bool,
    /// Names besides the loopback ones that browsers may reach a server on
    /// a loopback address under (`--allowed-host`).
    pub allowed_hosts: Vec<String>,
    /// The caps on request bytes held before their handler has them.
    pub request_memory: MemoryCaps,
}

impl Settings {
    /// The defaults, around a store and a secret: what `usersvc serve`
    /// runs with when given no flags.
    pub fn new(store: Arc<dyn UserStore>, secret: Secret) -> Self {
        Self {
            store,
            secret,
            expect: Expect::default(),
            jwks: None,
            roles: RoleClaim::default(),
            traces: None,
            public_methods: DEFAULT_PUBLIC_METHODS.to_vec(),
            limits: Limits::default(),
            shutdown_grace: Duration::from_secs(10),
            health_interval: Duration::from_secs(1),
            reflection: true,
            metrics_listener: None,
            tls: None,
            transport: TransportSettings::default(),
            rate_limit: Some(RateLimit::default()),
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            console: true,
            allowed_hosts: Vec::new(),
            request_memory: MemoryCaps::default(),
        }
    }
}
