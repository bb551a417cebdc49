//! The streaming RPCs against a real server: ListUsers (server streaming)
//! and BulkCreateUsers (client streaming).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::support::{bad_request_fields, create_request, spawn_app, spawn_app_with};
use tonic::Code;
use usersvc::pb::{self, UserRole};

async fn collect(mut stream: tonic::Streaming<pb::User>) -> Result<Vec<pb::User>, tonic::Status> {
    let mut users = Vec::new();
    while let Some(user) = stream.message().await? {
        users.push(user);
    }
    Ok(users)
}

fn names(users: &[pb::User]) -> Vec<&str> {
    users.iter().map(|u| u.name.as_str()).collect()
}

/// Creates users named u0, u1, … with roles cycling admin, editor, viewer,
/// in batches whose responses fit in one message.
async fn seed(app: &crate::support::TestApp, count: usize) {
    let roles = [UserRole::Admin, UserRole::Editor, UserRole::Viewer];
    let requests: Vec<_> = (0..count)
        .map(|i| create_request(&format!("u{i}"), &format!("u{i}@example.com"), roles[i % 3]))
        .collect();
    for batch in requests.chunks(20_000) {
        let response = app
            .admin()
            .bulk_create_users(tokio_stream::iter(batch.to_vec()))
            .await
            .unwrap();
        assert_eq!(response.total_count as usize, batch.len());
    }
}

#[tokio::test]
async fn list_streams_every_user_in_creation_order_across_pages() {
    let app = spawn_app_with(|s| s.limits.list_page_size = 7).await;
    seed(&app, 50).await;
    let users = collect(app.admin().list_users(Default::default()).await.unwrap())
        .await
        .unwrap();
    let expected: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
    assert_eq!(names(&users), expected);
}

#[tokio::test]
async fn offset_and_limit_page_the_list() {
    let app = spawn_app_with(|s| s.limits.list_page_size = 4).await;
    seed(&app, 20).await;
    let request = pb::ListUsersRequest {
        offset: 5,
        limit: 9,
        ..Default::default()
    };
    let users = collect(app.admin().list_users(request).await.unwrap())
        .await
        .unwrap();
    let expected: Vec<String> = (5..14).map(|i| format!("u{i}")).collect();
    assert_eq!(names(&users), expected);

    let past_end = pb::ListUsersRequest {
        offset: 25,
        ..Default::default()
    };
    assert!(
        collect(app.admin().list_users(past_end).await.unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn role_filter_takes_any_spelling_and_pages_within_the_role() {
    let app = spawn_app_with(|s| s.limits.list_page_size = 2).await;
    seed(&app, 12).await;
    for spelling in ["editor", "EDITOR", "USER_ROLE_EDITOR", "user_role_editor"] {
        let request = pb::ListUsersRequest {
            filter_role: spelling.into(),
            ..Default::default()
        };
        let users = collect(app.admin().list_users(request).await.unwrap())
            .await
            .unwrap();
        assert_eq!(names(&users), ["u1", "u4", "u7", "u10"], "{spelling}");
    }
    let request = pb::ListUsersRequest {
        filter_role: "admin".into(),
        offset: 1,
        limit: 2,
        ..Default::default()
    };
    let users = collect(app.admin().list_users(request).await.unwrap())
        .await
        .unwrap();
    assert_eq!(names(&users), ["u3", "u6"]);
}

#[tokio::test]
async fn invalid_list_requests_are_invalid_argument() {
    let app = spawn_app().await;
    let cases = [
        (
            pb::ListUsersRequest {
                limit: -1,
                ..Default::default()
            },
            "limit",
        ),
        (
            pb::ListUsersRequest {
                offset: -1,
                ..Default::default()
            },
            "offset",
        ),
        (
            pb::ListUsersRequest {
                filter_role: "superuser".into(),
                ..Default::default()
            },
            "filter_role",
        ),
    ];
    for (request, field) in cases {
        let status = app.admin().list_users(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert_eq!(bad_request_fields(&status), [field]);
    }
}

#[tokio::test]
async fn list_stops_reading_the_store_when_the_client_goes_away() {
    let store = Arc::new(crate::support::store::ScriptedStore::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = listener.local_addr().unwrap();
    let app = spawn_app_with(|s| {
        s.store = store.clone();
        s.limits.list_page_size = 100;
        s.metrics_listener = Some(Arc::new(listener));
    })
    .await;
    // 1,000 pages, about 8 MB: more than HTTP/2's flow-control windows hold.
    seed(&app, 100_000).await;

    let mut stream = app.admin().list_users(Default::default()).await.unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().name, "u0");
    drop(stream);
    // The server ends the call when the client goes away, and the listing
    // with it.
    let cancelled = crate::support::metrics::handled("ListUsers", "server_stream", "Cancelled");
    crate::support::metrics::wait_for(metrics, &cancelled, 1.0).await;
    let read = store.pages.load(Ordering::SeqCst);
    crate::support::metrics::scrape(metrics).await; // a round trip later

    assert_eq!(
        store.pages.load(Ordering::SeqCst),
        read,
        "reading went on after the client left"
    );
    assert!(
        read < 600,
        "read {read} of 1000 pages for a client that took one user"
    );
}

#[tokio::test]
async fn bulk_create_returns_every_user_and_stores_them() {
    let app = spawn_app().await;
    let requests = vec![
        create_request("A", "a@example.com", UserRole::Admin),
        create_request("B", "b@example.com", UserRole::Unspecified),
    ];
    let response = app
        .admin()
        .bulk_create_users(tokio_stream::iter(requests))
        .await
        .unwrap();
    assert_eq!(response.total_count, 2);
    assert_eq!(names(&response.users), ["A", "B"]);
    assert_eq!(response.users[1].role, UserRole::Viewer as i32);
    assert_eq!(app.list_all().await, response.users);
}

#[tokio::test]
async fn bulk_create_with_no_items_is_ok_with_count_zero() {
    let app = spawn_app().await;
    let response = app
        .admin()
        .bulk_create_users(tokio_stream::iter(Vec::<pb::CreateUserRequest>::new()))
        .await
        .unwrap();
    assert_eq!((response.total_count, response.users.len()), (0, 0));
}

#[tokio::test]
async fn bulk_create_is_all_or_nothing_and_names_the_failing_index() {
    let app = spawn_app().await;
    app.create("Existing", "taken@example.com", UserRole::Viewer)
        .await;

    // An invalid item.
    let requests = vec![
        create_request("A", "a@example.com", UserRole::Viewer),
        create_request("B", "b@example.com", UserRole::Viewer),
        create_request("C", "not-an-email", UserRole::Viewer),
    ];
    let status = app
        .admin()
        .bulk_create_users(tokio_stream::iter(requests))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("item 2:"),
        "{}",
        status.message()
    );
    assert_eq!(bad_request_fields(&status), ["requests[2].email"]);

    // A duplicate inside the stream, in another case.
    let requests = vec![
        create_request("A", "a@example.com", UserRole::Viewer),
        create_request("A2", "A@EXAMPLE.com", UserRole::Viewer),
    ];
    let status = app
        .admin()
        .bulk_create_users(tokio_stream::iter(requests))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().starts_with("item 1:"),
        "{}",
        status.message()
    );

    // A duplicate of a stored user.
    let requests = vec![
        create_request("A", "a@example.com", UserRole::Viewer),
        create_request("B", "b@example.com", UserRole::Viewer),
        create_request("T", "Taken@example.com", UserRole::Viewer),
    ];
    let status = app
        .admin()
        .bulk_create_users(tokio_stream::iter(requests))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().starts_with("item 2:"),
        "{}",
        status.message()
    );

    assert_eq!(
        names(&app.list_all().await),
        ["Existing"],
        "nothing else was stored"
    );
}

#[tokio::test]
async fn bulk_create_over_the_item_limit_is_resource_exhausted() {
    let app = spawn_app_with(|s| s.limits.max_bulk_items = 3).await;
    let requests: Vec<_> = (0..4)
        .map(|i| create_request("X", &format!("x{i}@example.com"), UserRole::Viewer))
        .collect();
    let status = app
        .admin()
        .bulk_create_users(tokio_stream::iter(requests))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("at most 3"),
        "{}",
        status.message()
    );
    assert!(app.list_all().await.is_empty());
}

#[tokio::test]
async fn bulk_create_whose_response_would_be_too_large_stores_nothing() {
    let app = spawn_app_with(|s| s.limits.max_message_bytes = 4_000).await;
    let requests: Vec<_> = (0..60)
        .map(|i| {
            create_request(
                "Somebody",
                &format!("somebody{i}@example.com"),
                UserRole::Viewer,
            )
        })
        .collect();
    let status = app
        .admin()
        .bulk_create_users(tokio_stream::iter(requests))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("split the batch"),
        "{}",
        status.message()
    );
    assert!(app.list_all().await.is_empty());

    // A batch that fits goes through, and its response carries every user.
    let requests: Vec<_> = (0..20)
        .map(|i| {
            create_request(
                "Somebody",
                &format!("somebody{i}@example.com"),
                UserRole::Viewer,
            )
        })
        .collect();
    let response = app
        .admin()
        .bulk_create_users(tokio_stream::iter(requests))
        .await
        .unwrap();
    assert_eq!(response.users.len(), 20);
}

#[tokio::test]
async fn bulk_create_cancelled_mid_stream_stores_nothing() {
    use crate::support::metrics::wait_for;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = listener.local_addr().unwrap();
    let app = spawn_app_with(|s| s.metrics_listener = Some(Arc::new(listener))).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let client = app.admin();
    let call = tokio::spawn(async move {
        client
            .bulk_create_users(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    for i in 0..3 {
        tx.send(create_request(
            "C",
            &format!("c{i}@example.com"),
            UserRole::Viewer,
        ))
        .await
        .unwrap();
    }
    // The server has read all three items...
    crate::support::metrics::wait_for_bulk_items(metrics, 3).await;
    // ...when the client goes away before closing its stream.
    call.abort();
    let _ = call.await;
    // The server ends the call as cancelled, and stores none of them.
    let cancelled =
        crate::support::metrics::handled("BulkCreateUsers", "client_stream", "Cancelled");
    wait_for(metrics, &cancelled, 1.0).await;
    assert!(app.list_all().await.is_empty());
}
