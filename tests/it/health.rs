//! `grpc.health.v1.Health` from tonic-health's client: SERVING without a
//! token, Watch, and NOT_SERVING as soon as shutdown begins.

use std::time::Duration;

use crate::support::spawn_app_with;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn health(app: &crate::support::TestApp) -> HealthClient<tonic::transport::Channel> {
    HealthClient::new(
        tonic::transport::Channel::from_shared(app.url())
            .unwrap()
            .connect_lazy(),
    )
}

fn service(name: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: name.into(),
    }
}

#[tokio::test]
async fn the_server_and_user_service_are_serving_without_a_token() {
    let app = crate::support::spawn_app().await;
    let mut client = health(&app);
    for name in ["", "techoral.users.v1.UserService"] {
        let status = client
            .check(service(name))
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{name:?}");
    }
    let unknown = client.check(service("no.such.Service")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn watch_sees_serving_then_not_serving_when_shutdown_begins() {
    let app = spawn_app_with(|s| s.shutdown_grace = Duration::from_millis(500)).await;
    let mut watch = health(&app)
        .watch(service("techoral.users.v1.UserService"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    let stopped = tokio::spawn(app.stop());
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .unwrap();
    assert_eq!(
        next.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    stopped.await.unwrap();
}
