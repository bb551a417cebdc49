//! Tokens from an identity provider's keys in a JWKS file: the file is
//! re-read when it changes, HS256 is taken beside it only when the
//! configuration says so, and `serve` refuses a JWKS without an issuer and
//! an audience, or one fetched over plain http from another host.
//! (Tokens minted by PyJWT and jose, over a JWKS URL, are in
//! `tests/python/test_identity.py` and `tests/node/identity.test.mjs`.)

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ED25519};
use tonic::Code;
use usersvc::auth::jwks::{Config, Source};
use usersvc::auth::{self, Expect};
use usersvc::client::{Client, ClientConfig, RetryPolicy};
use usersvc::domain::Role;
use usersvc::pb;

use crate::support::{self, secret, spawn_app_with};

const ISSUER: &str = "https://idp.test/realms/usersvc";
const AUDIENCE: &str = "usersvc";

/// An Ed25519 key pair, and its public half as a JWK.
fn key(kid: &str) -> (EncodingKey, serde_json::Value) {
    let pair = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key_raw());
    let private = EncodingKey::from_ed_der(pair.serialized_der());
    let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x});
    (private, jwk)
}

fn publish(path: &Path, keys: &[&serde_json::Value]) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, serde_json::json!({"keys": keys}).to_string()).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

fn token(private: &EncodingKey, kid: &str, role: &str) -> String {
    let now = usersvc::clock::unix_seconds();
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "provider-user", "role": role,
        "iat": now, "exp": now + 300,
    });
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, private).unwrap()
}

fn client(url: &str, token: &str) -> Client {
    let mut config = ClientConfig::new(url.to_owned());
    config.token = Some(token.to_owned());
    config.timeout = Some(Duration::from_secs(10));
    config.retry = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    Client::new(config).unwrap()
}

async fn list(url: &str, token: &str) -> Result<usize, tonic::Status> {
    let mut stream = client(url, token)
        .list_users(pb::ListUsersRequest::default())
        .await?;
    let mut count = 0;
    while let Some(user) = stream.message().await? {
        let _ = user;
        count += 1;
    }
    Ok(count)
}

/// The provider's issuer and the audience of its tokens for usersvc.
fn expected() -> Expect {
    Expect {
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
    }
}

/// The configured issuer and audience, and a JWKS file beside the secret
/// when `with_secret`.
fn jwks_settings(settings: &mut usersvc::server::Settings, file: &Path, with_secret: bool) {
    settings.expect = expected();
    settings.jwks = Some(Config {
        source: Source::File(file.to_owned()),
        refetch_interval: Duration::from_secs(30),
        with_secret,
    });
}

#[tokio::test]
async fn a_jwks_file_is_read_again_when_it_changes_and_hs256_is_refused_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    let (first_key, first_jwk) = key("first");
    let (second_key, second_jwk) = key("second");
    publish(&file, &[&first_jwk]);
    let app = spawn_app_with(|s| jwks_settings(s, &file, false)).await;
    let url = app.url();
    let first = token(&first_key, "first", "viewer");
    assert_eq!(list(&url, &first).await.unwrap(), 0);

    // A token usersvc itself minted, with the right issuer and audience:
    // without --jwt-secret-file, HS256 is not taken.
    let expect = expected();
    let own = auth::mint(
        &secret(),
        "local",
        Role::Admin,
        Duration::from_secs(60),
        &expect,
    )
    .unwrap();
    let refused = list(&url, &own).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused
            .message()
            .contains("algorithm HS256 is not accepted"),
        "{}",
        refused.message()
    );

    // The operator replaces the file: the second key is taken, and the
    // first one's tokens, though verified before, no longer are.
    publish(&file, &[&second_jwk]);
    let second = token(&second_key, "second", "viewer");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while list(&url, &second).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new file was never read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let withdrawn = list(&url, &first).await.unwrap_err();
    assert_eq!(withdrawn.code(), Code::Unauthenticated);
    assert!(
        withdrawn.message().contains("unknown key id \"first\""),
        "{}",
        withdrawn.message()
    );

    // The second key's token just made the file be read, and the refetch
    // interval (30 s here) lets no token do so again: the third key is
    // taken because the file is looked at on its own, every second.
    let (third_key, third_jwk) = key("third");
    publish(&file, &[&second_jwk, &third_jwk]);
    let third = token(&third_key, "third", "viewer");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while list(&url, &third).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the changed file was never read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(list(&url, &second).await.unwrap(), 0);
    app.stop().await;
}

#[tokio::test]
async fn hs256_is_taken_beside_a_jwks_with_the_secret_file_and_a_bad_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    let (provider_key, jwk) = key("k");
    publish(&file, &[&jwk]);
    let app = spawn_app_with(|s| jwks_settings(s, &file, true)).await;
    let url = app.url();
    let expect = expected();
    let own = auth::mint(
        &secret(),
        "local",
        Role::Admin,
        Duration::from_secs(60),
        &expect,
    )
    .unwrap();
    let created = client(&url, &own)
        .create_user(
            support::create_request("Local", "local@example.com", pb::UserRole::Viewer),
            None,
        )
        .await
        .unwrap();
    assert_eq!(created.email, "local@example.com");
    assert_eq!(
        list(&url, &token(&provider_key, "k", "viewer"))
            .await
            .unwrap(),
        1
    );
    app.stop().await;

    // A file that is not a JWKS is the operator's to fix before serving.
    std::fs::write(&file, "<html>").unwrap();
    let mut settings = support::settings();
    jwks_settings(&mut settings, &file, false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = usersvc::server::Application::build(listener, settings)
        .await
        .err()
        .expect("a bad JWKS file stops the start");
    assert!(error.to_string().contains("not a JWKS"), "{error}");

    // Built from the library, a JWKS without an audience is refused too.
    let mut settings = support::settings();
    jwks_settings(&mut settings, &file, false);
    settings.expect.audience = None;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = usersvc::server::Application::build(listener, settings)
        .await
        .err()
        .expect("no audience, no start");
    assert!(
        error
            .to_string()
            .contains("needs an issuer and an audience"),
        "{error}"
    );
}

#[test]
fn serve_refuses_a_jwks_without_issuer_and_audience_or_over_plain_http_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let run = |flags: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_usersvc"))
            .args(["serve", "--addr", "127.0.0.1:0", "--store", "memory"])
            .args(flags)
            .env_remove("USERSVC_JWT_SECRET")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let without = run(&["--jwks-url", "https://idp.example.com/certs"]);
    assert_eq!(without.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(
        stderr.contains("need --jwt-issuer and --jwt-audience"),
        "{stderr}"
    );
    let half = run(&[
        "--jwks-url",
        "https://idp.example.com/certs",
        "--jwt-issuer",
        ISSUER,
    ]);
    assert_eq!(half.status.code(), Some(2), "an issuer without an audience");
    let hurried = run(&[
        "--jwks-url",
        "https://idp.example.com/certs",
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
        "--jwks-refetch-interval",
        "0s",
    ]);
    assert_eq!(hurried.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&hurried.stderr);
    assert!(stderr.contains("at least 1s"), "{stderr}");
    // A secret from the environment beside a JWKS is refused rather than
    // quietly taken or quietly ignored.
    let secret = std::process::Command::new(env!("CARGO_BIN_EXE_usersvc"))
        .args(["serve", "--addr", "127.0.0.1:0", "--store", "memory"])
        .args(["--jwks-url", "https://idp.example.com/certs"])
        .args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE])
        .env("USERSVC_JWT_SECRET", "s".repeat(40))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(secret.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&secret.stderr);
    assert!(
        stderr.contains("USERSVC_JWT_SECRET is not used with a JWKS"),
        "{stderr}"
    );
    let clear = run(&[
        "--jwks-url",
        "http://idp.example.com/certs",
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ]);
    assert_eq!(clear.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&clear.stderr);
    assert!(
        stderr.contains("plain http is taken only for a loopback address"),
        "{stderr}"
    );
}
