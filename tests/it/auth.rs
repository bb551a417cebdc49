//! Authentication and permissions on every RPC kind: the full matrix of
//! RPC × {no token, bad signature, expired, too low a role, good token}.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{create_request, spawn_app, spawn_app_with, token};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tonic::{Code, Request, Status};
use usersvc::auth::Claims;
use usersvc::domain::Role;
use usersvc::pb::{self, Method, UserRole};

/// Every method of the contract, from the one `METHODS` table: a method
/// added there is in the matrix, and `call` and `too_low` do not compile
/// until they say how to call it and who may.
fn rpcs() -> impl Iterator<Item = Method> {
    pb::METHODS.iter().map(|m| m.method)
}

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

fn unique_email() -> String {
    format!("user{}@example.com", UNIQUE.fetch_add(1, Ordering::Relaxed))
}

/// `message` with `authorization` set to `header`, if any.
fn request<T>(message: T, header: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(header) = header {
        request
            .metadata_mut()
            .insert("authorization", header.parse().unwrap());
    }
    request
}

/// Makes one valid call of `rpc` with `header`; returns its code, after the
/// first response message for streams.
async fn call(app: &crate::support::TestApp, rpc: Method, header: Option<&str>) -> tonic::Status {
    let target = app
        .create("Target", &unique_email(), UserRole::Viewer)
        .await;
    let mut client = app.raw();
    let result = match rpc {
        Method::GetUser => client
            .get_user(request(pb::GetUserRequest { user_id: target.id }, header))
            .await
            .map(drop),
        Method::CreateUser => client
            .create_user(request(
                create_request("New", &unique_email(), UserRole::Viewer),
                header,
            ))
            .await
            .map(drop),
        Method::ListUsers => match client
            .list_users(request(pb::ListUsersRequest::default(), header))
            .await
        {
            Ok(response) => response.into_inner().message().await.map(drop),
            Err(status) => Err(status),
        },
        Method::BulkCreateUsers => {
            let items = vec![create_request("Bulk", &unique_email(), UserRole::Viewer)];
            client
                .bulk_create_users(request(tokio_stream::iter(items), header))
                .await
                .map(drop)
        }
        Method::WatchUserEvents => {
            let subscriptions = tokio_stream::iter(vec![pb::EventStreamRequest {
                user_id: "*".into(),
                ..Default::default()
            }])
            .chain(tokio_stream::pending());
            match client
                .watch_user_events(request(subscriptions, header))
                .await
            {
                Ok(response) => response.into_inner().message().await.map(drop),
                Err(status) => Err(status),
            }
        }
        Method::UpdateUser => client
            .update_user(request(
                pb::UpdateUserRequest {
                    user_id: target.id,
                    name: Some("Renamed".into()),
                    ..Default::default()
                },
                header,
            ))
            .await
            .map(drop),
        Method::DeleteUser => client
            .delete_user(request(
                pb::DeleteUserRequest {
                    user_id: target.id,
                    ..Default::default()
                },
                header,
            ))
            .await
            .map(drop),
        Method::SubscribeUserEvents => match client
            .subscribe_user_events(request(
                pb::SubscribeUserEventsRequest {
                    user_ids: vec!["*".into()],
                    ..Default::default()
                },
                header,
            ))
            .await
        {
            Ok(response) => response.into_inner().message().await.map(drop),
            Err(status) => Err(status),
        },
        Method::SearchUsers => client
            .search_users(request(
                pb::SearchUsersRequest {
                    filter: "role = viewer".into(),
                    ..Default::default()
                },
                header,
            ))
            .await
            .map(drop),
    };
    result.err().unwrap_or_else(|| tonic::Status::ok(""))
}

use tokio_stream::StreamExt as _;

fn sign(claims: &Claims, secret: &[u8], algorithm: Algorithm) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn claims(role: Role, exp_from_now: i64) -> Claims {
    let now = usersvc::clock::unix_seconds();
    Claims {
        sub: "tester".into(),
        role: Some(role),
        exp: (now + exp_from_now) as u64,
        iat: Some(now as u64),
        nbf: None,
        iss: None,
        aud: None,
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The role that is too low for `rpc`, if any role is.
fn too_low(rpc: Method) -> Option<Role> {
    match rpc {
        Method::CreateUser | Method::BulkCreateUsers | Method::UpdateUser => Some(Role::Viewer),
        Method::DeleteUser => Some(Role::Editor),
        Method::GetUser
        | Method::ListUsers
        | Method::WatchUserEvents
        | Method::SubscribeUserEvents
        | Method::SearchUsers => None,
    }
}

#[tokio::test]
async fn permission_matrix_covers_every_rpc_kind() {
    let app = spawn_app().await;
    let no_token = None;
    let bad_signature = bearer(&sign(
        &claims(Role::Admin, 3600),
        b"another-secret-another-secret-!!",
        Algorithm::HS256,
    ));
    let expired = bearer(&sign(
        &claims(Role::Admin, -3600),
        crate::support::SECRET,
        Algorithm::HS256,
    ));
    let good = bearer(&token(Role::Admin));

    for rpc in rpcs() {
        let public = rpc == Method::GetUser;
        let unauthenticated = if public {
            Code::Ok
        } else {
            Code::Unauthenticated
        };

        let status = call(&app, rpc, no_token).await;
        assert_eq!(
            status.code(),
            unauthenticated,
            "{rpc:?} without a token: {status:?}"
        );
        if !public {
            assert!(
                status.message().contains("missing authorization"),
                "{rpc:?}: {}",
                status.message()
            );
        }

        let status = call(&app, rpc, Some(&bad_signature)).await;
        assert_eq!(
            status.code(),
            unauthenticated,
            "{rpc:?} with a bad signature: {status:?}"
        );
        if !public {
            assert!(
                status.message().contains("bad signature"),
                "{rpc:?}: {}",
                status.message()
            );
        }

        let status = call(&app, rpc, Some(&expired)).await;
        assert_eq!(
            status.code(),
            unauthenticated,
            "{rpc:?} with an expired token: {status:?}"
        );
        if !public {
            assert!(
                status.message().contains("expired"),
                "{rpc:?}: {}",
                status.message()
            );
        }

        match too_low(rpc) {
            Some(role) => {
                let status = call(&app, rpc, Some(&bearer(&token(role)))).await;
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{rpc:?} as {role}: {status:?}"
                );
                assert!(
                    status
                        .message()
                        .contains(&format!("role {role} may not call")),
                    "{}",
                    status.message()
                );
            }
            None => {
                let status = call(&app, rpc, Some(&bearer(&token(Role::Viewer)))).await;
                assert_eq!(status.code(), Code::Ok, "{rpc:?} as viewer: {status:?}");
            }
        }

        let status = call(&app, rpc, Some(&good)).await;
        assert_eq!(status.code(), Code::Ok, "{rpc:?} as admin: {status:?}");
    }
}

#[tokio::test]
async fn refused_streams_reach_no_handler() {
    let app = spawn_app().await;
    let viewer = bearer(&token(Role::Viewer));
    let before = app.list_all().await.len();
    assert_eq!(
        call(&app, Method::BulkCreateUsers, Some(&viewer))
            .await
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        call(&app, Method::BulkCreateUsers, None).await.code(),
        Code::Unauthenticated
    );
    // `call` creates one target user per call, and nothing else was stored.
    assert_eq!(app.list_all().await.len(), before + 2);
}

#[tokio::test]
async fn editor_may_create_and_update_but_not_delete() {
    let app = spawn_app().await;
    let editor = bearer(&token(Role::Editor));
    for rpc in [
        Method::CreateUser,
        Method::BulkCreateUsers,
        Method::UpdateUser,
    ] {
        assert_eq!(
            call(&app, rpc, Some(&editor)).await.code(),
            Code::Ok,
            "{rpc:?}"
        );
    }
    let status = call(&app, Method::DeleteUser, Some(&editor)).await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "role editor may not call DeleteUser; it needs admin"
    );
}

#[tokio::test]
async fn malformed_and_odd_tokens_are_unauthenticated_with_a_reason() {
    let app = spawn_app().await;
    let cases = [
        ("Token abc".to_owned(), "malformed"),
        ("Bearer".to_owned(), "malformed"),
        ("Bearer not.a.jwt".to_owned(), "invalid token"),
        (
            bearer(&sign(
                &claims(Role::Admin, 3600),
                crate::support::SECRET,
                Algorithm::HS512,
            )),
            "HS256",
        ),
        (
            bearer(&sign(
                &Claims {
                    nbf: Some(usersvc::clock::unix_seconds() as u64 + 3600),
                    ..claims(Role::Admin, 7200)
                },
                crate::support::SECRET,
                Algorithm::HS256,
            )),
            "not valid yet",
        ),
    ];
    for (header, reason) in cases {
        let status = call(&app, Method::ListUsers, Some(&header)).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{header}");
        assert!(
            status.message().contains(reason),
            "{header}: {}",
            status.message()
        );
    }
}

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let app = spawn_app().await;
    let no_exp = serde_json::json!({ "sub": "x", "role": "admin" });
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &no_exp,
        &EncodingKey::from_secret(crate::support::SECRET),
    )
    .unwrap();
    let status = call(&app, Method::ListUsers, Some(&bearer(&token))).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("exp"), "{}", status.message());
}

#[tokio::test]
async fn scheme_is_case_insensitive_and_leeway_covers_small_clock_skew() {
    let app = spawn_app().await;
    let lower = format!("bearer {}", token(Role::Admin));
    assert_eq!(
        call(&app, Method::DeleteUser, Some(&lower)).await.code(),
        Code::Ok
    );
    let just_expired = bearer(&sign(
        &claims(Role::Admin, -10),
        crate::support::SECRET,
        Algorithm::HS256,
    ));
    assert_eq!(
        call(&app, Method::DeleteUser, Some(&just_expired))
            .await
            .code(),
        Code::Ok
    );
}

#[tokio::test]
async fn public_methods_are_configurable() {
    let app = spawn_app_with(|s| s.public_methods = vec![]).await;
    let status = call(&app, Method::GetUser, None).await;
    assert_eq!(status.code(), Code::Unauthenticated);

    let app = spawn_app_with(|s| s.public_methods = vec![Method::ListUsers]).await;
    assert_eq!(call(&app, Method::ListUsers, None).await.code(), Code::Ok);
    assert_eq!(
        call(&app, Method::GetUser, None).await.code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let expect = usersvc::auth::Expect {
        issuer: Some("usersvc-test".into()),
        audience: Some("directory".into()),
    };
    let app = spawn_app_with(|s| s.expect = expect.clone()).await;
    let list = |header: String| {
        let mut client = app.raw();
        async move {
            client
                .list_users(request(pb::ListUsersRequest::default(), Some(&header)))
                .await
        }
    };
    let status = list(bearer(&token(Role::Admin))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("missing claim"),
        "{}",
        status.message()
    );

    let scoped = usersvc::auth::mint(
        &crate::support::secret(),
        "a",
        Role::Admin,
        Duration::from_secs(60),
        &expect,
    )
    .unwrap();
    assert!(list(bearer(&scoped)).await.is_ok());
}

/// Calls `path`, a method the server does not have, as a unary call with
/// `authorization` set to `header` when given; returns its status.
async fn call_unknown(
    app: &crate::support::TestApp,
    path: &'static str,
    header: Option<String>,
) -> Status {
    let channel = tonic::transport::Channel::from_shared(app.url())
        .unwrap()
        .connect_lazy();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(pb::GetUserRequest::default());
    if let Some(header) = header {
        request
            .metadata_mut()
            .insert("authorization", header.parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<pb::GetUserRequest, pb::GetUserResponse>::default();
    grpc.unary(request, http::uri::PathAndQuery::from_static(path), codec)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn an_unknown_method_is_refused_the_same_way_whatever_the_token() {
    let app = spawn_app().await;
    let path = "/techoral.users.v1.UserService/PurgeUsers";
    let headers = [
        None,
        Some("Basic abc".to_owned()),
        Some("Bearer not-a-jwt".to_owned()),
        Some(format!("Bearer {}", token(Role::Viewer))),
        Some(format!("Bearer {}", token(Role::Admin))),
    ];
    for header in headers {
        let status = call_unknown(&app, path, header.clone()).await;
        assert_eq!(status.code(), Code::Unimplemented, "{header:?}: {status:?}");
        assert_eq!(
            status.message(),
            format!("unknown method {path}"),
            "{header:?}"
        );
    }
}
