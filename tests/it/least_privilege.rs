//! An editor may create and change only viewers and editors: making,
//! promoting to, or changing an admin needs an admin token. Once an
//! identity provider mints tokens from the directory's roles, anything
//! else is privilege escalation. Shown on a real `usersvc serve`.

use tonic::Code;
use usersvc::domain::Role;
use usersvc::pb::{self, UserRole};

use crate::support::process::ServerProcess;
use crate::support::{admin_client, client_as, create_request};

fn assert_denied(status: &tonic::Status, act: &str) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "role editor may not {act}: an editor may create and change only viewers and editors"
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_editor_cannot_make_promote_or_change_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&["--store", "memory"], dir.path());
    let (admin, editor) = (
        admin_client(&server.url),
        client_as(&server.url, Role::Editor),
    );

    let status = editor
        .create_user(
            create_request("Mal", "mal@example.com", UserRole::Admin),
            None,
        )
        .await
        .unwrap_err();
    assert_denied(&status, "create an admin");
    let status = editor
        .bulk_create_users(tokio_stream::iter(vec![
            create_request("Ok", "ok@example.com", UserRole::Viewer),
            create_request("Mal", "mal@example.com", UserRole::Admin),
        ]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("item 1: role editor may not create an admin"),
        "{status:?}"
    );

    let viewer = editor
        .create_user(
            create_request("Vi", "vi@example.com", UserRole::Viewer),
            None,
        )
        .await
        .unwrap();
    let status = editor
        .update_user(pb::UpdateUserRequest {
            user_id: viewer.id.clone(),
            role: Some(UserRole::Admin as i32),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_denied(&status, "make a user an admin");

    let boss = admin
        .create_user(
            create_request("Boss", "boss@example.com", UserRole::Admin),
            None,
        )
        .await
        .unwrap();
    let status = editor
        .update_user(pb::UpdateUserRequest {
            user_id: boss.id.clone(),
            email: Some("mine@example.com".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_denied(&status, "change an admin");
    let status = editor.delete_user(&boss.id).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Nothing changed: the admin is as created, and no other admin exists.
    assert_eq!(admin.get_user(&boss.id).await.unwrap(), boss);
    let admins: Vec<_> = crate::support::list_all(&admin)
        .await
        .into_iter()
        .filter(|u| u.role == UserRole::Admin as i32)
        .collect();
    assert_eq!(admins, std::slice::from_ref(&boss));

    // Within the rule an editor works as before, and an admin may do it all.
    let promoted = editor
        .update_user(pb::UpdateUserRequest {
            user_id: viewer.id.clone(),
            role: Some(UserRole::Editor as i32),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(promoted.role, UserRole::Editor as i32);
    let promoted = admin
        .update_user(pb::UpdateUserRequest {
            user_id: viewer.id.clone(),
            role: Some(UserRole::Admin as i32),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(promoted.role, UserRole::Admin as i32);
    admin.delete_user(&boss.id).await.unwrap();
}

/// Where an operator opens CreateUser and UpdateUser to anyone, an admin
/// is still made or changed only with an admin token.
#[tokio::test(flavor = "multi_thread")]
async fn opening_writes_to_anyone_opens_no_way_to_admin() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        &[
            "--store",
            "memory",
            "--public-methods",
            "GetUser,CreateUser,UpdateUser",
        ],
        dir.path(),
    );
    let mut config = usersvc::client::ClientConfig::new(server.url.clone());
    config.retry.max_attempts = 1;
    let anyone = usersvc::client::Client::new(config).unwrap();
    let viewer = anyone
        .create_user(
            create_request("Vi", "vi@example.com", UserRole::Viewer),
            None,
        )
        .await
        .unwrap();
    let status = anyone
        .create_user(
            create_request("Mal", "mal@example.com", UserRole::Admin),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = anyone
        .update_user(pb::UpdateUserRequest {
            user_id: viewer.id.clone(),
            role: Some(UserRole::Admin as i32),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let boss = admin_client(&server.url)
        .create_user(
            create_request("Boss", "boss@example.com", UserRole::Admin),
            None,
        )
        .await
        .unwrap();
    let status = anyone
        .update_user(pb::UpdateUserRequest {
            user_id: boss.id,
            name: Some("Mine".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}
