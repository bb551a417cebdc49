//! Assembles the server: the service, its layers and its limits, served on a
//! listener the caller has already bound until a shutdown future resolves.
//!
//! Taking a bound listener lets tests bind port 0 and learn the port before
//! the server starts; taking a future lets `main` wire in signals and tests
//! wire in a oneshot.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::auth::{Authorizer, Expect, Policy, Secret, Verifier};
use crate::inbound::StreamEndLayer;
use crate::limits::{DefaultDeadlineLayer, OversizeLayer, RateLimit, RateLimiter};
use crate::metrics::{MeteredStore, Metrics};
use crate::pb::server::UserServiceServer;
use crate::service::{Directory, Limits};
use crate::store::UserStore;
use crate::telemetry::TelemetryLayer;
use crate::tls::ServerTls;

/// Largest request or response message, as gRPC's usual 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// HTTP/2 protections that tonic leaves off by default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportLimits {
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
    /// Deadline of a call that brings none of its own, until its response
    /// starts (streams then run on); DEADLINE_EXCEEDED when it passes.
    pub default_timeout: Duration,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 200,
            max_local_error_reset_streams: 1024,
            max_pending_accept_reset_streams: 20,
            max_header_list_size: 16 * 1024,
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            max_connection_age: Duration::from_secs(3600),
            default_timeout: Duration::from_secs(30),
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
    /// Method names that need no token.
    pub public_methods: Vec<String>,
    pub limits: Limits,
    pub max_message_bytes: usize,
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
    pub transport: TransportLimits,
    /// Calls per caller; unlimited when `None`.
    pub rate_limit: Option<RateLimit>,
}

impl Settings {
    /// Defaults around a store and a secret.
    pub fn new(store: Arc<dyn UserStore>, secret: Secret) -> Self {
        Self {
            store,
            secret,
            expect: Expect::default(),
            public_methods: crate::auth::DEFAULT_PUBLIC_METHODS
                .iter()
                .map(|m| (*m).to_owned())
                .collect(),
            limits: Limits::default(),
            max_message_bytes: MAX_MESSAGE_BYTES,
            shutdown_grace: Duration::from_secs(10),
            health_interval: Duration::from_secs(1),
            reflection: true,
            metrics_listener: None,
            tls: None,
            transport: TransportLimits::default(),
            rate_limit: None,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `UserService` on `listener` until `shutdown` resolves, then shuts
/// down: watch and list streams end with UNAVAILABLE at once, calls in
/// flight get `shutdown_grace` to finish, and whatever is left after that is
/// dropped with a warning. (tonic's own graceful shutdown would wait forever
/// for a stream that never ends.)
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let policy = Policy::new(&settings.public_methods).map_err(ServeError::Config)?;
    let transport = &settings.transport;
    let mut builder = Server::builder()
        .max_concurrent_streams(transport.max_concurrent_streams)
        .http2_max_local_error_reset_streams(Some(transport.max_local_error_reset_streams))
        .http2_max_pending_accept_reset_streams(Some(transport.max_pending_accept_reset_streams))
        .http2_max_header_list_size(transport.max_header_list_size)
        .http2_keepalive_interval(Some(transport.keepalive_interval))
        .http2_keepalive_timeout(Some(transport.keepalive_timeout))
        .max_connection_age(transport.max_connection_age);
    if let Some(tls) = &settings.tls {
        builder = builder.tls_config(tls.config().map_err(ServeError::Config)?)?;
    }
    let auth = Authorizer::new(Verifier::new(&settings.secret, &settings.expect), policy).layer();
    let limits = Limits {
        max_response_bytes: settings.max_message_bytes,
        ..settings.limits
    };
    let (stopping_tx, stopping) = watch::channel(false);
    let mut store = settings.store;
    let metrics = settings.metrics_listener.map(|listener| {
        let metrics = Metrics::new();
        store = Arc::new(MeteredStore::new(store.clone(), Arc::clone(&metrics)));
        let events = store.events().clone();
        tokio::spawn(crate::metrics::serve(
            listener,
            Arc::clone(&metrics),
            events,
            stopping.clone(),
        ));
        metrics
    });
    let (reporter, health) = tonic_health::server::health_reporter();
    let monitor = crate::health::start(
        reporter,
        Arc::clone(&store),
        settings.health_interval,
        stopping.clone(),
    )
    .await;
    let directory = Directory::new(store, limits, stopping.clone());
    let users = UserServiceServer::new(directory)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(settings.max_message_bytes)
        .max_encoding_message_size(settings.max_message_bytes);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));

    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: NOT_SERVING, ending streams, finishing calls in flight");
        let _ = stopping_tx.send(true);
        // Health says NOT_SERVING before the listener closes.
        let _ = monitor.await;
    };
    let (reflection_v1, reflection_v1alpha) = match settings.reflection {
        true => {
            let (v1, v1alpha) = crate::reflection::services();
            (Some(v1), Some(v1alpha))
        }
        false => (None, None),
    };
    let server = builder
        .layer(TelemetryLayer::new(metrics))
        .layer(auth)
        .layer(RateLimiter::new(settings.rate_limit).layer())
        .layer(StreamEndLayer)
        .layer(OversizeLayer)
        .layer(DefaultDeadlineLayer::new(
            settings.transport.default_timeout,
        ))
        .add_service(health)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(users)
        .serve_with_incoming_shutdown(incoming, signal);
    let grace_expired = grace_after(stopping, settings.shutdown_grace);
    tokio::select! {
        result = server => result?,
        () = grace_expired => tracing::warn!(
            grace = ?settings.shutdown_grace,
            "shutdown grace period expired; dropping the remaining calls"
        ),
    }
    Ok(())
}

/// Resolves `grace` after `stopping` turns true; never, if it does not.
async fn grace_after(mut stopping: watch::Receiver<bool>, grace: Duration) {
    if stopping.wait_for(|stopping| *stopping).await.is_ok() {
        tokio::time::sleep(grace).await;
    } else {
        std::future::pending::<()>().await;
    }
}
