//! Builds and runs the server: the service, its layers and its limits,
//! served on a listener the caller has already bound, until a shutdown
//! future resolves.
//!
//! [`Application::build`] does everything that can fail before the first
//! connection (TLS files, the store's first health report), and
//! [`Application::run_until_stopped`] serves. Taking a bound listener lets
//! tests bind port 0 and learn the port before the server starts; taking a
//! future lets `main` wire in signals and tests wire in a oneshot.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_stream::StreamExt;
use tonic::codec::CompressionEncoding;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::auth::{Policy, RateLimiter, Verifier};
use crate::pb::server::UserServiceServer;
use crate::service::Directory;

mod connection_age;
pub mod console;
pub mod health;
pub mod layers;
pub mod logging;
pub mod metrics;
pub mod reflection;
mod settings;
pub mod shutdown;
pub mod tls;
pub mod web;

use layers::auth::Authorizer;
use layers::deadline::DefaultDeadlineLayer;
use layers::oversize::OversizeLayer;

use layers::stream_end::StreamEndLayer;
use layers::telemetry::TelemetryLayer;
use metrics::{MeteredStore, Metrics};
pub use settings::{Settings, TransportSettings};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// A server that is built and bound, and not yet serving.
pub struct Application {
    local_addr: SocketAddr,
    /// Tells the server, once it runs, to begin shutting down.
    stop: oneshot::Sender<()>,
    server: Pin<Box<dyn Future<Output = Result<(), ServeError>> + Send>>,
}

impl Application {
    /// Assembles the server on `listener`: TLS, the layers, the service, its
    /// health and its metrics.
    pub async fn build(listener: TcpListener, settings: Settings) -> Result<Self, ServeError> {
        let local_addr = listener
            .local_addr()
            .map_err(|e| ServeError::Config(format!("the listener has no local address: {e}")))?;
        let transport = &settings.transport;
        let builder = Server::builder()
            .max_concurrent_streams(transport.max_concurrent_streams)
            .http2_max_local_error_reset_streams(Some(transport.max_local_error_reset_streams))
            .http2_max_pending_accept_reset_streams(Some(
                transport.max_pending_accept_reset_streams,
            ))
            .http2_max_header_list_size(transport.max_header_list_size)
            .http2_keepalive_interval(Some(transport.keepalive_interval))
            .http2_keepalive_timeout(Some(transport.keepalive_timeout))
            .max_connection_age(transport.max_connection_age)
            // Connect and gRPC-Web over HTTP/1.1, beside gRPC's HTTP/2.
            .accept_http1(true);
        let tls = match &settings.tls {
            Some(tls) => Some(tls.config().map_err(ServeError::Config)?),
            None => None,
        };
        let auth = Authorizer::new(
            Verifier::new(&settings.secret, &settings.expect),
            Policy::new(settings.public_methods.clone()),
        )
        .trusting(settings.trusted_proxies.clone())
        .layer();
        let (stopping_tx, stopping) = watch::channel(false);
        let mut store = settings.store;
        let metrics = settings.metrics_listener.map(|listener| {
            let metrics = Metrics::new();
            store = Arc::new(MeteredStore::new(store.clone(), Arc::clone(&metrics)));
            let events = store.events().clone();
            tokio::spawn(metrics::serve(
                listener,
                Arc::clone(&metrics),
                events,
                stopping.clone(),
            ));
            metrics
        });
        let (reporter, health) = tonic_health::server::health_reporter();
        let monitor = health::start(
            reporter,
            Arc::clone(&store),
            settings.health_interval,
            stopping.clone(),
        )
        .await;
        let max_message_bytes = settings.limits.max_message_bytes;
        // One table of buckets: calls take from it in the layer, and watch
        // stream messages in the service.
        let rate = RateLimiter::new(settings.rate_limit);
        let directory = Directory::new(store, settings.limits, rate.clone(), stopping.clone());
        let users = UserServiceServer::new(directory)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let lifetime = transport.max_connection_age + transport.max_connection_age_grace;
        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .map(move |accepted| {
                accepted.map(|stream| connection_age::AgedConnection::new(stream, lifetime))
            });

        let (stop, stop_requested) = oneshot::channel::<()>();
        let signal = async move {
            // A dropped sender stops the server too.
            let _ = stop_requested.await;
            tracing::info!("shutting down: NOT_SERVING, ending streams, finishing calls in flight");
            let _ = stopping_tx.send(true);
            // Health says NOT_SERVING before the listener closes.
            let _ = monitor.await;
        };
        let (reflection_v1, reflection_v1alpha) = match settings.reflection {
            true => {
                let (v1, v1alpha) = reflection::services();
                (Some(v1), Some(v1alpha))
            }
            false => (None, None),
        };
        let cors = (!settings.cors_origins.is_empty())
            .then(|| web::cors::Layer::new(settings.cors_origins.clone()));
        let router = builder
            .layer(tower::util::option_layer(cors))
            .layer(console::ConsoleLayer::new(settings.console))
            .layer(web::WebLayer::new(max_message_bytes))
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(TelemetryLayer::new(metrics))
            .layer(auth)
            .layer(layers::rate_limit::layer(rate))
            .layer(StreamEndLayer)
            .layer(OversizeLayer)
            .layer(DefaultDeadlineLayer::new(
                settings.transport.default_timeout,
                settings.transport.max_timeout,
            ))
            .add_service(health)
            .add_optional_service(reflection_v1)
            .add_optional_service(reflection_v1alpha)
            .add_service(users);
        let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
            match tls {
                Some(config) => Box::pin(
                    router.serve_with_incoming_shutdown(tls::accept(incoming, config), signal),
                ),
                None => Box::pin(router.serve_with_incoming_shutdown(incoming, signal)),
            };
        let grace = settings.shutdown_grace;
        let server = async move {
            tokio::select! {
                result = server => result?,
                () = grace_after(stopping, grace) => tracing::warn!(
                    ?grace,
                    "shutdown grace period expired; dropping the remaining calls"
                ),
            }
            Ok(())
        };
        Ok(Self {
            local_addr,
            stop,
            server: Box::pin(server),
        })
    }

    /// The address the server listens on: the port, when it was bound as 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then shuts down: watch and list
    /// streams end with UNAVAILABLE at once, calls in flight get the grace
    /// period to finish, and whatever is left after that is dropped with a
    /// warning. (tonic's own graceful shutdown would wait forever for a
    /// stream that never ends.)
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let Self {
            stop, mut server, ..
        } = self;
        tokio::select! {
            result = &mut server => return result,
            () = shutdown => {
                let _ = stop.send(());
            }
        }
        server.await
    }
}

/// Resolves `grace` after `stopping` turns true; never, if it does not.
async fn grace_after(mut stopping: watch::Receiver<bool>, grace: Duration) {
    if stopping.wait_for(|stopping| *stopping).await.is_ok() {
        tokio::time::sleep(grace).await;
    } else {
        std::future::pending::<()>().await;
    }
}
