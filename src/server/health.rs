//! `grpc.health.v1.Health`, as load balancers and Kubernetes probes ask it.
//!
//! The overall server ("") and `techoral.users.v1.UserService` report
//! SERVING while the store answers, NOT_SERVING while it does not (a
//! PostgreSQL restart, say), and NOT_SERVING from the moment shutdown
//! begins, so that traffic drains away before connections close. The
//! endpoint needs no token.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::store::UserStore;

/// The service names whose status this server reports.
const SERVICES: [&str; 2] = ["", crate::pb::SERVICE_NAME];

async fn report(reporter: &HealthReporter, status: ServingStatus) {
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// Reports the store's state now, before the server takes connections (so
/// that no watcher sees a status twice), then spawns `monitor`.
pub async fn start(
    reporter: HealthReporter,
    store: Arc<dyn UserStore>,
    interval: Duration,
    stopping: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let status = check(&*store).await;
    report(&reporter, status).await;
    tokio::spawn(monitor(reporter, store, interval, stopping, status))
}

async fn check(store: &dyn UserStore) -> ServingStatus {
    match store.check().await {
        Ok(()) => ServingStatus::Serving,
        Err(error) => {
            tracing::warn!(%error, "store unreachable: reporting NOT_SERVING");
            ServingStatus::NotServing
        }
    }
}

/// Checks the store every `interval` and reports changes from `last`,
/// until `stopping` turns true; then reports NOT_SERVING for good.
async fn monitor(
    reporter: HealthReporter,
    store: Arc<dyn UserStore>,
    interval: Duration,
    mut stopping: watch::Receiver<bool>,
    mut last: ServingStatus,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopping.wait_for(|stopping| *stopping) => break,
        }
        let status = match store.check().await {
            Ok(()) => ServingStatus::Serving,
            Err(error) => {
                if last == ServingStatus::Serving {
                    tracing::warn!(%error, "store unreachable: reporting NOT_SERVING");
                }
                ServingStatus::NotServing
            }
        };
        if status != last {
            if status == ServingStatus::Serving {
                tracing::info!("store reachable again: reporting SERVING");
            }
            report(&reporter, status).await;
            last = status;
        }
    }
    report(&reporter, ServingStatus::NotServing).await;
}
