//! The unary RPCs against a real server: GetUser, CreateUser, UpdateUser,
//! DeleteUser, their happy paths and every error status they document.

use crate::support::{bad_request_fields, create_request, spawn_app};
use tonic::Code;
use usersvc::pb::{self, UserRole};

#[tokio::test]
async fn create_then_get_returns_the_stored_user() {
    let app = spawn_app().await;
    let client = app.admin();

    let mut request = create_request("  Ada Lovelace ", "ada@example.com", UserRole::Editor);
    request.bio = Some("First programmer ☺".into());
    let created = client.create_user(request, None).await.unwrap();

    assert!(!created.id.is_empty());
    assert_eq!(created.name, "Ada Lovelace", "name is trimmed");
    assert_eq!(created.email, "ada@example.com");
    assert_eq!(created.role, UserRole::Editor as i32);
    assert_eq!(created.bio.as_deref(), Some("First programmer ☺"));
    assert!(created.created_at > 1_700_000_000);

    // GetUser is public: no token needed.
    let fetched = app.client(None).get_user(&created.id).await.unwrap();
    assert_eq!(fetched, created);
}

#[tokio::test]
async fn created_at_is_fixed_at_creation_not_read_time() {
    let app = spawn_app().await;
    let user = app.create("Bo", "bo@example.com", UserRole::Viewer).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = app.admin().get_user(&user.id).await.unwrap();
    assert_eq!(again.created_at, user.created_at);
}

#[tokio::test]
async fn ids_are_unique_and_never_reused_after_delete() {
    let app = spawn_app().await;
    let first = app.create("A", "a@example.com", UserRole::Viewer).await;
    app.admin().delete_user(&first.id).await.unwrap();
    let second = app.create("A", "a@example.com", UserRole::Viewer).await;
    let third = app.create("B", "b@example.com", UserRole::Viewer).await;
    assert_ne!(first.id, second.id);
    assert_ne!(second.id, third.id);
}

#[tokio::test]
async fn unspecified_role_defaults_to_viewer() {
    let app = spawn_app().await;
    let user = app
        .create("Cy", "cy@example.com", UserRole::Unspecified)
        .await;
    assert_eq!(user.role, UserRole::Viewer as i32);
}

#[tokio::test]
async fn get_user_with_empty_id_is_invalid_argument() {
    let app = spawn_app().await;
    let status = app.admin().get_user("").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("user_id"), "{}", status.message());
    assert_eq!(bad_request_fields(&status), ["user_id"]);
}

#[tokio::test]
async fn get_unknown_user_is_not_found_with_the_documented_message() {
    let app = spawn_app().await;
    let status = app.admin().get_user("no-such-id").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "user no-such-id not found");
}

#[tokio::test]
async fn invalid_create_names_every_field_in_message_and_details() {
    let app = spawn_app().await;
    let request = pb::CreateUserRequest {
        name: "   ".into(),
        email: "not-an-email".into(),
        role: 99,
        bio: Some("x".repeat(2001)),
        ..Default::default()
    };
    let status = app.admin().create_user(request, None).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    for field in ["name", "email", "role", "bio"] {
        assert!(
            status.message().contains(&format!("invalid {field}")),
            "{}",
            status.message()
        );
    }
    assert_eq!(
        bad_request_fields(&status),
        ["name", "email", "role", "bio"]
    );
    assert!(app.list_all().await.is_empty(), "nothing stored");
}

#[tokio::test]
async fn length_limits_are_inclusive() {
    let app = spawn_app().await;
    let mut request = create_request(&"n".repeat(200), "ok@example.com", UserRole::Viewer);
    request.bio = Some("b".repeat(2000));
    let user = app.admin().create_user(request, None).await.unwrap();
    assert_eq!(user.name.chars().count(), 200);

    let long_name = create_request(&"n".repeat(201), "ok2@example.com", UserRole::Viewer);
    let status = app.admin().create_user(long_name, None).await.unwrap_err();
    assert_eq!(bad_request_fields(&status), ["name"]);

    let long_email = format!("{}@example.com", "e".repeat(243));
    assert_eq!(long_email.len(), 255);
    let status = app
        .admin()
        .create_user(create_request("E", &long_email, UserRole::Viewer), None)
        .await
        .unwrap_err();
    assert_eq!(bad_request_fields(&status), ["email"]);
}

#[tokio::test]
async fn duplicate_email_in_any_case_is_already_exists() {
    let app = spawn_app().await;
    app.create("Dee", "dee@example.com", UserRole::Viewer).await;
    let status = app
        .admin()
        .create_user(
            create_request("Dee 2", "DEE@Example.COM", UserRole::Viewer),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().contains("DEE@Example.COM"),
        "{}",
        status.message()
    );
    assert_eq!(app.list_all().await.len(), 1);
}

#[tokio::test]
async fn update_changes_only_the_fields_present() {
    let app = spawn_app().await;
    let client = app.admin();
    let mut request = create_request("Eve", "eve@example.com", UserRole::Viewer);
    request.bio = Some("old".into());
    let user = client.create_user(request, None).await.unwrap();

    let updated = client
        .update_user(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            role: Some(UserRole::Admin as i32),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(updated.role, UserRole::Admin as i32);
    assert_eq!(
        (
            updated.name.as_str(),
            updated.email.as_str(),
            updated.bio.as_deref()
        ),
        ("Eve", "eve@example.com", Some("old"))
    );
    assert_eq!(updated.created_at, user.created_at);

    let cleared = client
        .update_user(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            name: Some("Eve Two".into()),
            bio: Some(String::new()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(cleared.name, "Eve Two");
    assert_eq!(cleared.bio, None, "an empty bio removes it");
    assert_eq!(client.get_user(&user.id).await.unwrap(), cleared);
}

#[tokio::test]
async fn update_validates_like_create() {
    let app = spawn_app().await;
    let client = app.admin();
    let user = app.create("Fay", "fay@example.com", UserRole::Viewer).await;
    app.create("Gus", "gus@example.com", UserRole::Viewer).await;

    let status = client
        .update_user(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            name: Some(String::new()),
            email: Some("bad".into()),
            role: Some(UserRole::Unspecified as i32),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status), ["name", "email", "role"]);

    let status = client
        .update_user(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            email: Some("GUS@example.com".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    // Changing the case of one's own address is not a conflict.
    let recased = client
        .update_user(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            email: Some("FAY@example.com".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recased.email, "FAY@example.com");
    // The old address is free again once a user moves off it.
    client
        .update_user(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            email: Some("fay2@example.com".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    app.create("New Fay", "fay@example.com", UserRole::Viewer)
        .await;
}

#[tokio::test]
async fn update_and_delete_of_unknown_user_are_not_found() {
    let app = spawn_app().await;
    let client = app.admin();
    let status = client
        .update_user(pb::UpdateUserRequest {
            user_id: "ghost".into(),
            name: Some("Boo".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "user ghost not found")
    );

    let status = client.delete_user("ghost").await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "user ghost not found")
    );

    let status = client.delete_user("").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn delete_returns_the_user_and_frees_its_email() {
    let app = spawn_app().await;
    let user = app.create("Hal", "hal@example.com", UserRole::Viewer).await;
    let deleted = app.admin().delete_user(&user.id).await.unwrap();
    assert_eq!(deleted, user);
    let status = app.admin().get_user(&user.id).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    app.create("Hal again", "HAL@example.com", UserRole::Viewer)
        .await;
}

#[tokio::test]
async fn unknown_method_is_unimplemented() {
    let app = spawn_app().await;
    let channel = tonic::transport::Channel::from_shared(app.url())
        .unwrap()
        .connect_lazy();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/techoral.users.v1.UserService/Frobnicate");
    let status = grpc
        .unary::<_, pb::GetUserResponse, _>(
            tonic::Request::new(pb::GetUserRequest::default()),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn request_id_is_echoed_in_response_headers() {
    let app = spawn_app().await;
    let user = app.create("Ida", "ida@example.com", UserRole::Viewer).await;
    let mut request = tonic::Request::new(pb::GetUserRequest { user_id: user.id });
    request
        .metadata_mut()
        .insert("x-request-id", "req-42".parse().unwrap());
    let response = app.raw().get_user(request).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "req-42");
}
