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
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;
use tower::ServiceBuilder;

use crate::auth::{Jwks, Policy, RateLimiter, Verifier};
use crate::pb::server::UserServiceServer;
use crate::service::Directory;

pub mod connections;
pub mod console;
pub mod health;
pub mod layers;
pub mod logging;
pub mod metrics;
pub mod reflection;
mod settings;
pub mod shutdown;
pub mod tls;
pub mod traces;
pub mod web;

use layers::auth::Authorizer;
use layers::deadline::DefaultDeadlineLayer;
use layers::gate::GateLayer;
use layers::oversize::OversizeLayer;
use layers::request_memory::{RequestMemory, RequestMemoryLayer};

use layers::stream_end::StreamEndLayer;
use layers::telemetry::TelemetryLayer;
use metrics::{MeteredStore, Metrics};
pub use settings::{Settings, TransportSettings};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// A server that is built and bound, and not yet serving.
pub struct Application {
    local_addr: SocketAddr,
    traces: Option<traces::Traces>,
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
        let transport = settings.transport.clone();
        let tls = match &settings.tls {
            Some(tls) => Some(tls.config().map_err(ServeError::Config)?),
            None => None,
        };
        let (stopping_tx, stopping) = watch::channel(false);
        if settings.jwks.is_some()
            && (settings.expect.issuer.is_none() || settings.expect.audience.is_none())
        {
            // Else a token the provider issued to any of its applications
            // would be taken here.
            return Err(ServeError::Config(
                "a JWKS needs an issuer and an audience to expect (--jwt-issuer, --jwt-audience)"
                    .into(),
            ));
        }
        let jwks = match &settings.jwks {
            Some(config) => Some(
                Jwks::start(config, stopping.clone())
                    .await
                    .map_err(ServeError::Config)?,
            ),
            None => None,
        };
        let hmac = match &settings.jwks {
            Some(config) if !config.with_secret => None,
            _ => Some(&settings.secret),
        };
        let auth = Authorizer::new(
            Verifier::with_keys(hmac, jwks, &settings.expect, settings.roles.clone()),
            Policy::new(settings.public_methods.clone()),
        )
        .trusting(settings.trusted_proxies.clone())
        .layer();
        let mut store = settings.store;
        let metrics = settings.metrics_listener.map(|listener| {
            let metrics = Metrics::new();
            store = Arc::new(MeteredStore::new(store.clone(), Arc::clone(&metrics)));
            let events = store.events().clone();
            metrics::spawn(listener, Arc::clone(&metrics), events, stopping.clone());
            metrics
        });
        let tracer = settings
            .traces
            .as_ref()
            .map(|traces| traces.tracer().clone());
        if let Some(tracer) = &tracer {
            store = Arc::new(traces::TracedStore::new(store, tracer.clone()));
        }
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
        let cors = web::cors::Layer::new(settings.cors_origins.clone());
        // Browsers may reach a server on a loopback address only under
        // loopback names (and the operator's), against DNS rebinding.
        let hosts = local_addr
            .ip()
            .is_loopback()
            .then(|| web::hosts::Layer::new(settings.allowed_hosts.clone()));
        let memory = RequestMemory::new(settings.request_memory);
        let mut routes = Routes::new(health).add_service(users);
        if let Some(v1) = reflection_v1 {
            routes = routes.add_service(v1);
        }
        if let Some(v1alpha) = reflection_v1alpha {
            routes = routes.add_service(v1alpha);
        }
        // Outermost first. Every gate decides from the headers, before the
        // body is read: the web layer reads none of it itself.
        let service = ServiceBuilder::new()
            .option_layer(hosts)
            .layer(cors)
            .layer(console::ConsoleLayer::new(settings.console))
            .layer(web::WebLayer::new(max_message_bytes))
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(TelemetryLayer::new(metrics, tracer))
            .layer(GateLayer::new(web::RefusedCalls))
            .layer(auth)
            .layer(layers::rate_limit::layer(rate))
            .layer(RequestMemoryLayer::new(memory))
            .layer(StreamEndLayer)
            .layer(OversizeLayer)
            .layer(DefaultDeadlineLayer::new(
                transport.default_timeout,
                transport.max_timeout,
            ))
            .service(routes.prepare());
        let server = connections::serve(listener, tls, service, transport, signal);
        let grace = settings.shutdown_grace;
        let server = async move {
            tokio::select! {
                () = server => {}
                () = grace_after(stopping, grace) => tracing::warn!(
                    ?grace,
                    "shutdown grace period expired; dropping the remaining calls"
                ),
            }
            Ok(())
        };
        Ok(Self {
            local_addr,
            traces: settings.traces.clone(),
            stop,
            server: Box::pin(server),
        })
    }

    /// The traces it exports, to be flushed when it has stopped.
    pub fn traces(&self) -> Option<traces::Traces> {
        self.traces.clone()
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
