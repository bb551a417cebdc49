//! Limits: an oversized request is RESOURCE_EXHAUSTED (not tonic's
//! OUT_OF_RANGE), unary or streamed, and the server serves on afterwards.

use crate::support::{create_request, spawn_app_with};
use tokio_stream::StreamExt;
use tonic::Code;
use usersvc::pb::UserRole;

#[tokio::test]
async fn an_oversized_request_is_resource_exhausted_and_the_server_serves_on() {
    let app = spawn_app_with(|s| s.limits.max_message_bytes = 10_000).await;
    let client = app.admin();
    let mut huge = create_request("Big", "big@example.com", UserRole::Viewer);
    huge.bio = Some("x".repeat(20_000));

    let status = client.create_user(huge.clone(), None).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );

    let batch = vec![
        create_request("Ok", "ok@example.com", UserRole::Viewer),
        huge,
    ];
    let status = client
        .bulk_create_users(tokio_stream::iter(batch))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        app.list_all().await.is_empty(),
        "nothing from the batch was stored"
    );

    let user = client
        .create_user(
            create_request("Small", "small@example.com", UserRole::Viewer),
            None,
        )
        .await
        .unwrap();
    assert_eq!(client.get_user(&user.id).await.unwrap(), user);
}

#[tokio::test]
async fn each_caller_has_its_own_rate_limit() {
    let app = spawn_app_with(|s| {
        s.rate_limit = Some(usersvc::auth::RateLimit {
            per_second: 0.01,
            burst: 3.0,
        })
    })
    .await;
    let admin = app.admin();
    for _ in 0..3 {
        assert_eq!(
            admin.get_user("nobody").await.unwrap_err().code(),
            Code::NotFound
        );
    }
    let status = admin.get_user("nobody").await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status
            .message()
            .starts_with("rate limit exceeded; retry in"),
        "{}",
        status.message()
    );

    // Another subject has a bucket of its own.
    let editor = app.client(Some(usersvc::domain::Role::Editor));
    assert_eq!(
        editor.get_user("nobody").await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn a_call_without_a_deadline_gets_the_default_one() {
    let app =
        spawn_app_with(|s| s.transport.default_timeout = std::time::Duration::from_millis(300))
            .await;
    // A bulk creation whose client never finishes its stream.
    let items = tokio_stream::iter(vec![create_request(
        "Slow",
        "slow@example.com",
        UserRole::Viewer,
    )])
    .chain(tokio_stream::pending());
    let mut config = usersvc::client::ClientConfig::new(app.url());
    config.token = Some(crate::support::token(usersvc::domain::Role::Admin));
    config.timeout = None; // no grpc-timeout: the server's default applies
    let client = usersvc::client::Client::new(config).unwrap();
    let status = client.bulk_create_users(items).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("server's default"),
        "{}",
        status.message()
    );
    assert!(app.list_all().await.is_empty());
}

/// The wait a RESOURCE_EXHAUSTED from the rate limit names.
fn retry_in(status: &tonic::Status) -> std::time::Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let millis = status
        .message()
        .strip_prefix("rate limit exceeded; retry in ")
        .and_then(|rest| rest.strip_suffix(" ms"))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no wait in {:?}", status.message()));
    std::time::Duration::from_millis(millis)
}

#[tokio::test]
async fn the_limit_refills_after_the_wait_it_names_keys_by_address_and_spares_health() {
    let app = spawn_app_with(|s| {
        s.rate_limit = Some(usersvc::auth::RateLimit {
            per_second: 5.0,
            burst: 2.0,
        })
    })
    .await;
    let admin = app.admin();
    for _ in 0..2 {
        assert_eq!(
            admin.get_user("nobody").await.unwrap_err().code(),
            Code::NotFound
        );
    }
    let wait = retry_in(&admin.get_user("nobody").await.unwrap_err());
    assert!(
        wait > std::time::Duration::ZERO && wait <= std::time::Duration::from_millis(200),
        "one call at 5 per second is at most 200 ms away, not {wait:?}"
    );

    // Health is not limited, however exhausted the caller.
    let channel = tonic::transport::Channel::from_shared(app.url())
        .unwrap()
        .connect_lazy();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for _ in 0..10 {
        let response = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap();
        assert_eq!(
            response.into_inner().status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }

    // Calls with no token share one bucket per address, whatever the
    // connection: two fresh clients of the public GetUser.
    let anonymous = || app.client(None);
    for _ in 0..2 {
        assert_eq!(
            anonymous().get_user("nobody").await.unwrap_err().code(),
            Code::NotFound
        );
    }
    retry_in(&anonymous().get_user("nobody").await.unwrap_err());

    // After the wait it named, the caller may call again.
    tokio::time::sleep(wait + std::time::Duration::from_millis(20)).await;
    assert_eq!(
        admin.get_user("nobody").await.unwrap_err().code(),
        Code::NotFound
    );
}

/// Anonymous GetUser calls from this machine, each saying it forwards
/// `client`; the codes the server answered.
async fn get_as_forwarded(url: &str, clients: &[&str]) -> Vec<Code> {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = usersvc::pb::client::UserServiceClient::new(channel);
    let mut codes = Vec::new();
    for client in clients {
        let mut request = tonic::Request::new(usersvc::pb::GetUserRequest {
            user_id: "nobody".into(),
        });
        request
            .metadata_mut()
            .insert("x-forwarded-for", client.parse().unwrap());
        codes.push(raw.get_user(request).await.unwrap_err().code());
    }
    codes
}

#[tokio::test(flavor = "multi_thread")]
async fn x_forwarded_for_keys_the_limit_only_from_a_trusted_proxy() {
    use crate::support::process::ServerProcess;
    let limits = [
        "--store",
        "memory",
        "--rate-limit",
        "0.01",
        "--rate-burst",
        "2",
    ];
    let (exhausted, found) = (Code::ResourceExhausted, Code::NotFound);

    // Anyone can send the header: from an untrusted peer it changes nothing.
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&limits, dir.path());
    let codes = get_as_forwarded(&server.url, &["203.0.113.1", "203.0.113.1", "203.0.113.2"]).await;
    assert_eq!(codes, [found, found, exhausted]);
    drop(server);

    // Behind a trusted proxy, each forwarded client has a bucket of its own.
    let dir = tempfile::tempdir().unwrap();
    let mut flags = limits.to_vec();
    flags.extend(["--trusted-proxy", "127.0.0.1/32"]);
    let server = ServerProcess::start(&flags, dir.path());
    let codes = get_as_forwarded(
        &server.url,
        &["203.0.113.1", "203.0.113.1", "203.0.113.1", "203.0.113.2"],
    )
    .await;
    assert_eq!(codes, [found, found, exhausted, found]);
}
