//! TLS and mTLS with certificates made at test time (rcgen): a round trip,
//! a wrong CA refused, mTLS refusing a client without a certificate and
//! accepting one with, whose subject reaches the handler.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use crate::support::{create_request, spawn_app_with};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use usersvc::auth::{Caller, Expect, Policy, Verifier};
use usersvc::client::ClientTls;
use usersvc::client::{Client, ClientConfig, RetryPolicy};
use usersvc::pb::server::{UserService, UserServiceServer};
use usersvc::pb::{self, UserRole};
use usersvc::server::layers::auth::Authorizer;
use usersvc::server::tls::ServerTls;

/// A CA, a server certificate for 127.0.0.1 and a client certificate for
/// "alice" that it signed, and an unrelated CA; as PEM files in a directory.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
}

fn write(dir: &Path, name: &str, pem: String) {
    std::fs::write(dir.join(name), pem).unwrap();
}

fn ca(dir: &Path, name: &str) -> Issuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    let key = KeyPair::generate().unwrap();
    write(
        dir,
        &format!("{name}-ca.pem"),
        params.self_signed(&key).unwrap().pem(),
    );
    Issuer::new(params, key)
}

fn leaf(dir: &Path, name: &str, sans: &[&str], cn: &str, issuer: &Issuer<'static, KeyPair>) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "usersvc tests");
    let key = KeyPair::generate().unwrap();
    write(
        dir,
        &format!("{name}.pem"),
        params.signed_by(&key, issuer).unwrap().pem(),
    );
    write(dir, &format!("{name}.key"), key.serialize_pem());
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let issuer = ca(dir.path(), "good");
        leaf(
            dir.path(),
            "server",
            &["127.0.0.1", "localhost"],
            "usersvc",
            &issuer,
        );
        leaf(dir.path(), "client", &[], "alice", &issuer);
        ca(dir.path(), "other");
        Pki { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server(&self, mtls: bool) -> ServerTls {
        ServerTls {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: mtls.then(|| self.path("good-ca.pem")),
        }
    }

    fn client(&self, addr: std::net::SocketAddr, ca: &str, with_cert: bool) -> Client {
        let mut config = ClientConfig::new(format!("https://{addr}"));
        config.token = Some(crate::support::token(usersvc::domain::Role::Admin));
        config.retry = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        config.tls = ClientTls {
            ca: Some(self.path(ca)),
            cert: with_cert.then(|| self.path("client.pem")),
            key: with_cert.then(|| self.path("client.key")),
        };
        Client::new(config).unwrap()
    }
}

#[tokio::test]
async fn a_tls_round_trip_works_and_a_wrong_ca_is_refused() {
    let pki = Pki::new();
    let app = spawn_app_with(|s| s.tls = Some(pki.server(false))).await;
    let client = pki.client(app.addr, "good-ca.pem", false);
    let user = client
        .create_user(
            create_request("Tls", "tls@example.com", UserRole::Viewer),
            None,
        )
        .await
        .unwrap();
    assert_eq!(client.get_user(&user.id).await.unwrap(), user);

    let untrusting = pki.client(app.addr, "other-ca.pem", false);
    let status = untrusting.get_user(&user.id).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // Plaintext to a TLS port gets nowhere either.
    let plain = crate::support::admin_client(&app.url());
    assert!(plain.get_user(&user.id).await.is_err());
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate_and_accepts_one_with() {
    let pki = Pki::new();
    let app = spawn_app_with(|s| s.tls = Some(pki.server(true))).await;

    // Under TLS 1.3 the server's refusal arrives as an alert after the
    // client's half of the handshake, so it surfaces on the first call.
    let anonymous = pki.client(app.addr, "good-ca.pem", false);
    let status = anonymous.get_user("any").await.unwrap_err();
    assert!(
        format!("{status:?}").contains("CertificateRequired"),
        "{status:?}"
    );

    let alice = pki.client(app.addr, "good-ca.pem", true);
    let created = alice
        .create_user(
            create_request("Mtls", "mtls@example.com", UserRole::Viewer),
            None,
        )
        .await
        .unwrap();
    assert_eq!(alice.get_user(&created.id).await.unwrap(), created);
}

/// A UserService whose GetUser answers with the caller's certificate subject.
struct WhoAmI;

type Never<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl UserService for WhoAmI {
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let subject = request
            .extensions()
            .get::<Caller>()
            .and_then(|caller| caller.certificate.clone());
        let user = pb::User {
            name: subject.unwrap_or_default(),
            ..Default::default()
        };
        Ok(Response::new(pb::GetUserResponse { user: Some(user) }))
    }
    async fn create_user(
        &self,
        _: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        Err(Status::unimplemented("test"))
    }
    type ListUsersStream = Never<pb::Outgoing<pb::User>>;
    async fn list_users(
        &self,
        _: Request<pb::ListUsersRequest>,
    ) -> Result<Response<Self::ListUsersStream>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn bulk_create_users(
        &self,
        _: Request<Streaming<pb::CreateUserRequest>>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    type WatchUserEventsStream = Never<pb::Outgoing<pb::UserEvent>>;
    async fn watch_user_events(
        &self,
        _: Request<Streaming<pb::EventStreamRequest>>,
    ) -> Result<Response<Self::WatchUserEventsStream>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn update_user(
        &self,
        _: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        Err(Status::unimplemented("test"))
    }
    type SubscribeUserEventsStream = Never<pb::Outgoing<pb::UserEvent>>;
    async fn subscribe_user_events(
        &self,
        _: Request<pb::SubscribeUserEventsRequest>,
    ) -> Result<Response<Self::SubscribeUserEventsStream>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn delete_user(
        &self,
        _: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn search_users(
        &self,
        _: Request<pb::SearchUsersRequest>,
    ) -> Result<Response<pb::SearchUsersResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
}

#[tokio::test]
async fn the_client_certificate_subject_reaches_the_handler() {
    let pki = Pki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let auth = Authorizer::new(
        Verifier::new(&crate::support::secret(), &Expect::default()),
        Policy::default(),
    )
    .layer();
    let incoming = usersvc::server::tls::accept(
        tonic::transport::server::TcpIncoming::from(listener),
        pki.server(true).config().unwrap(),
    );
    let server = tonic::transport::Server::builder()
        .layer(auth)
        .add_service(UserServiceServer::new(WhoAmI))
        .serve_with_incoming(incoming);
    tokio::spawn(server);

    let user = pki
        .client(addr, "good-ca.pem", true)
        .get_user("me")
        .await
        .unwrap();
    assert!(user.name.contains("CN=alice"), "{}", user.name);
    assert!(user.name.contains("O=usersvc tests"), "{}", user.name);
}

/// Over TLS, ALPN offers HTTP/2 and HTTP/1.1, so Connect and gRPC-Web
/// clients that ask for either are served: curl over both, with the CA.
#[tokio::test(flavor = "multi_thread")]
async fn connect_over_tls_is_served_with_http1_and_http2_by_alpn() {
    let pki = Pki::new();
    let app = spawn_app_with(|s| s.tls = Some(pki.server(false))).await;
    let url = format!(
        "https://localhost:{}/techoral.users.v1.UserService/GetUser",
        app.addr.port()
    );
    let ca = pki.path("good-ca.pem");
    for (version, expected) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (url, ca) = (url.clone(), ca.clone());
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-sS", "--max-time", "20", version, "--cacert"])
                .arg(&ca)
                .args([
                    "--resolve",
                    &format!(
                        "localhost:{}:127.0.0.1",
                        url.split(':').nth(2).unwrap().split('/').next().unwrap()
                    ),
                ])
                .args(["-w", "\n%{http_version} %{http_code}", "-X", "POST", &url])
                .args([
                    "-H",
                    "content-type: application/json",
                    "-d",
                    r#"{"userId":"missing"}"#,
                ])
                .output()
                .expect("curl is installed")
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let (body, last) = text.rsplit_once('\n').unwrap();
        assert_eq!(last, format!("{expected} 404"), "{version}: {text}");
        let error: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(error["code"], "not_found", "{version}");
    }
}
