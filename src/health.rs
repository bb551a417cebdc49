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

/// Checks the store every `interval` and reports what it finds, until
/// `stopping` turns true; then reports NOT_SERVING for good.
pub async fn monitor(
    reporter: HealthReporter,
    store: Arc<dyn UserStore>,
    interval: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let status = match store.check().await {
            Ok(()) => ServingStatus::Serving,
            Err(error) => {
                if last != Some(ServingStatus::NotServing) {
                    tracing::warn!(%error, "store unreachable: reporting NOT_SERVING");
                }
                ServingStatus::NotServing
            }
        };
        if last != Some(status) {
            if last.is_some() && status == ServingStatus::Serving {
                tracing::info!("store reachable again: reporting SERVING");
            }
            report(&reporter, status).await;
            last = Some(status);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopping.wait_for(|stopping| *stopping) => break,
        }
    }
    report(&reporter, ServingStatus::NotServing).await;
}
