//! SearchUsers, ListUsers' filter and order, labels and etags, through a
//! real server and client: what a caller sees, status by status.

use prost::Message;
use tonic::Code;
use usersvc::domain::Role;
use usersvc::pb;

use crate::support::{
    TestApp, bad_request_fields, create_request, every_store, spawn_app, spawn_app_with,
};

fn search(filter: &str, order_by: &str, page_size: i32, token: &str) -> pb::SearchUsersRequest {
    pb::SearchUsersRequest {
        filter: filter.into(),
        order_by: order_by.into(),
        page_size,
        page_token: token.into(),
    }
}

#[tokio::test]
async fn search_pages_carry_the_total_and_a_token_bound_to_their_search() {
    for (store, app, _dir) in every_store().await {
        search_pages_on(store, &app).await;
    }
}

async fn search_pages_on(store: &str, app: &TestApp) {
    let admin = app.admin();
    for i in 0..12 {
        let mut request = create_request(
            &format!("Searcher {:02}", 11 - i),
            &format!("s{i}@search.test"),
            pb::UserRole::Viewer,
        );
        request.labels = [(
            "team".to_owned(),
            if i % 2 == 0 { "Even" } else { "odd" }.to_owned(),
        )]
        .into();
        admin.create_user(request, None).await.unwrap();
    }
    app.create("Outsider", "outsider@elsewhere.test", pb::UserRole::Viewer)
        .await;
    let viewer = app.client(Some(Role::Viewer));

    let filter = "email = \"*@SEARCH.test\"";
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = viewer
            .search_users(search(filter, "name desc", 5, &token))
            .await
            .unwrap();
        assert_eq!(page.total_size, 12, "every page says how many match");
        assert!(page.users.len() <= 5);
        names.extend(page.users.iter().map(|u| u.name.clone()));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3, "{store}");
    let expected: Vec<String> = (0..12).rev().map(|i| format!("Searcher {i:02}")).collect();
    assert_eq!(names, expected, "{store}");

    let first = viewer
        .search_users(search(filter, "name desc", 5, ""))
        .await
        .unwrap();
    let token = first.next_page_token;
    for (other_filter, other_order) in [
        ("labels.team = even", "name desc"),
        (filter, "name"),
        (filter, "email desc"),
    ] {
        let refused = viewer
            .search_users(search(other_filter, other_order, 5, &token))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{other_filter} / {other_order}"
        );
        assert_eq!(bad_request_fields(&refused), ["page_token"]);
        assert!(
            refused.message().contains("same filter and order_by"),
            "{}",
            refused.message()
        );
    }
    let mut altered = token.clone().into_bytes();
    altered[3] = if altered[3] == b'x' { b'y' } else { b'x' };
    let refused = viewer
        .search_users(search(
            filter,
            "name desc",
            5,
            &String::from_utf8(altered).unwrap(),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    let labelled = viewer
        .search_users(search("labels.team = EVEN", "", 0, ""))
        .await
        .unwrap();
    assert_eq!(labelled.total_size, 6);
    assert!(labelled.users.iter().all(|u| u.labels["team"] == "Even"));
    let everyone = viewer.search_users(search("", "", 0, "")).await.unwrap();
    assert_eq!(everyone.total_size, 13);
    assert!(everyone.next_page_token.is_empty());
}

#[tokio::test]
async fn a_filter_or_order_that_does_not_parse_is_refused_naming_where() {
    let app = spawn_app().await;
    let viewer = app.client(Some(Role::Viewer));
    let cases = [
        (
            search("name = ", "", 0, ""),
            "filter",
            "at character 8: expected a value after =",
        ),
        (
            search("role = boss", "", 0, ""),
            "filter",
            "at character 8: unknown role",
        ),
        (
            search("(name = a", "", 0, ""),
            "filter",
            "at character 10: expected ')'",
        ),
        (
            search("", "bio", 0, ""),
            "order_by",
            "cannot sort by \"bio\"",
        ),
        (search("", "", -1, ""), "page_size", "must not be negative"),
    ];
    for (request, field, message) in cases {
        let refused = viewer.search_users(request.clone()).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{request:?}");
        assert_eq!(bad_request_fields(&refused), [field], "{request:?}");
        assert!(
            refused.message().contains(message),
            "{request:?}: {}",
            refused.message()
        );
    }
    let anonymous = app
        .client(None)
        .search_users(search("", "", 0, ""))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn list_users_takes_a_filter_with_its_role_and_an_order() {
    let app = spawn_app().await;
    for (name, role) in [
        ("Bea", pb::UserRole::Editor),
        ("Abe", pb::UserRole::Editor),
        ("Cid", pb::UserRole::Viewer),
        ("Dee", pb::UserRole::Editor),
    ] {
        app.create(name, &format!("{name}@list.test"), role).await;
    }
    let viewer = app.client(Some(Role::Viewer));
    let mut stream = viewer
        .list_users(pb::ListUsersRequest {
            filter_role: "editor".into(),
            filter: "name != dee".into(),
            order_by: "name desc".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut names = Vec::new();
    while let Some(user) = stream.message().await.unwrap() {
        names.push(user.name);
    }
    assert_eq!(names, ["Bea", "Abe"]);
    let refused = viewer
        .list_users(pb::ListUsersRequest {
            filter: "name ~ x".into(),
            ..Default::default()
        })
        .await;
    let refused = match refused {
        Err(status) => status,
        Ok(mut stream) => stream.message().await.unwrap_err(),
    };
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&refused), ["filter"]);
}

#[tokio::test]
async fn a_write_with_a_stale_etag_is_aborted_and_changes_nothing() {
    for (_store, app, _dir) in every_store().await {
        stale_etag_on(&app).await;
    }
}

async fn stale_etag_on(app: &TestApp) {
    let admin = app.admin();
    let created = app
        .create("Etta", "etta@etag.test", pb::UserRole::Viewer)
        .await;
    assert_eq!(created.updated_at, created.created_at);
    assert!(!created.etag.is_empty());
    let renamed = admin
        .update_user(pb::UpdateUserRequest {
            user_id: created.id.clone(),
            name: Some("Etta 2".into()),
            etag: created.etag.clone(),
            set_labels: [("team".to_owned(), "core".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_ne!(renamed.etag, created.etag);
    assert_eq!(renamed.labels["team"], "core");

    let stale = admin
        .update_user(pb::UpdateUserRequest {
            user_id: created.id.clone(),
            name: Some("Etta 3".into()),
            etag: created.etag.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert!(
        stale.message().contains("changed since it was read"),
        "{}",
        stale.message()
    );
    let stale = admin
        .delete_user_version(&created.id, &created.etag)
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(
        admin.get_user(&created.id).await.unwrap(),
        renamed,
        "nothing changed"
    );

    let deleted = admin
        .delete_user_version(&created.id, &renamed.etag)
        .await
        .unwrap();
    assert_eq!(deleted, renamed);
    assert_eq!(
        admin.get_user(&created.id).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn bad_labels_are_refused_naming_the_key() {
    let app = spawn_app().await;
    let admin = app.admin();
    let mut request = create_request("Labelled", "labelled@label.test", pb::UserRole::Viewer);
    request.labels = [
        ("Bad Key".to_owned(), "x".to_owned()),
        ("team".to_owned(), "\u{1b}[31m".to_owned()),
        ("ok".to_owned(), "v".repeat(257)),
    ]
    .into();
    let refused = admin.create_user(request, None).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&refused),
        ["labels[\"Bad Key\"]", "labels[ok]", "labels[team]"]
    );

    let user = app
        .create("Plain", "plain@label.test", pb::UserRole::Viewer)
        .await;
    let refused = admin
        .update_user(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            set_labels: [("team".to_owned(), "a".to_owned())].into(),
            remove_labels: vec!["team".into(), "9lives".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&refused),
        ["set_labels[team]", "remove_labels[1]"]
    );
    assert_eq!(app.admin().get_user(&user.id).await.unwrap(), user);
}

/// Last wave's race: an editor's UpdateUser read the target, then wrote it,
/// so a promotion to admin in between went unseen and the editor changed
/// an admin. The check is now made in the write's own transaction.
#[tokio::test]
async fn an_editor_never_changes_a_user_promoted_while_its_update_runs() {
    for (store, app, _dir) in every_store().await {
        race_on(store, &app).await;
    }
}

async fn race_on(store: &str, app: &TestApp) {
    let admin = app.admin();
    let editor = app.client(Some(Role::Editor));
    let mut editor_won = 0;
    let mut editor_refused = 0;
    for round in 0..100 {
        let target = app
            .create(
                &format!("Target {round}"),
                &format!("race{round}@race.test"),
                pb::UserRole::Viewer,
            )
            .await;
        let promote = admin.update_user(pb::UpdateUserRequest {
            user_id: target.id.clone(),
            role: Some(pb::UserRole::Admin as i32),
            ..Default::default()
        });
        let rename = editor.update_user(pb::UpdateUserRequest {
            user_id: target.id.clone(),
            bio: Some(format!("edited in round {round}")),
            ..Default::default()
        });
        let (promoted, renamed) = tokio::join!(promote, rename);
        promoted.unwrap();
        match renamed {
            Ok(user) => {
                assert_eq!(
                    user.role,
                    pb::UserRole::Viewer as i32,
                    "{store}, round {round}: the editor changed an admin"
                );
                editor_won += 1;
            }
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{store}, round {round}: {status:?}"
                );
                editor_refused += 1;
            }
        }
        let stored = admin.get_user(&target.id).await.unwrap();
        assert_eq!(stored.role, pb::UserRole::Admin as i32);
    }
    assert_eq!(editor_won + editor_refused, 100, "{store}");
}

#[tokio::test]
async fn events_carry_the_whole_user_with_its_labels_and_etag() {
    for (_store, app, _dir) in every_store().await {
        events_on(&app).await;
    }
}

async fn events_on(app: &TestApp) {
    let admin = app.admin();
    let mut events = admin
        .subscribe_user_events(vec!["*".into()], 0)
        .await
        .unwrap();
    let subscribed = events.message().await.unwrap().unwrap();
    assert_eq!(subscribed.event_type, "subscribed");
    let mut request = create_request("Evented", "evented@event.test", pb::UserRole::Viewer);
    request.labels = [("team".to_owned(), "core".to_owned())].into();
    let created = admin.create_user(request, None).await.unwrap();
    let event = events.message().await.unwrap().unwrap();
    assert_eq!(event.event_type, "user_created");
    assert_eq!(pb::User::decode(event.payload).unwrap(), created);
    let updated = admin
        .update_user(pb::UpdateUserRequest {
            user_id: created.id.clone(),
            remove_labels: vec!["team".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let event = events.message().await.unwrap().unwrap();
    let announced = pb::User::decode(event.payload).unwrap();
    assert_eq!(announced, updated);
    assert!(announced.labels.is_empty());
    assert_ne!(announced.etag, created.etag);
}

/// A server whose messages are small still gives every user, a page at a
/// time: a page holds at least one user, never none with a total of N.
#[tokio::test]
async fn small_messages_make_short_pages_not_empty_ones() {
    let app = spawn_app_with(|s| s.limits.max_message_bytes = 1000).await;
    for i in 0..3 {
        app.create(
            &format!("Small {i}"),
            &format!("small{i}@small.test"),
            pb::UserRole::Viewer,
        )
        .await;
    }
    let viewer = app.client(Some(Role::Viewer));
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = viewer
            .search_users(search("", "name", 10, &token))
            .await
            .unwrap();
        assert_eq!(page.total_size, 3);
        assert!(!page.users.is_empty(), "an empty page with a total of 3");
        names.extend(page.users.into_iter().map(|u| u.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, ["Small 0", "Small 1", "Small 2"]);
}

/// The attacks two reviews found, against the real binary on PostgreSQL:
/// a page token forged with the digest the first version used (SHA-256 of
/// public inputs, which anyone can compute), and a NUL in a filter, which
/// PostgreSQL refused as INTERNAL. Both are INVALID_ARGUMENT now.
#[tokio::test(flavor = "multi_thread")]
async fn forged_tokens_and_control_characters_are_refused_by_the_binary_on_postgres() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let url = crate::support::required_postgres_url().await;
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::process::ServerProcess::start(&["--store", &url], dir.path());
    let client = crate::support::admin_client(&server.url);
    for i in 0..3 {
        client
            .create_user(
                create_request(
                    &format!("Forged {i}"),
                    &format!("forged{i}@forge.test"),
                    pb::UserRole::Viewer,
                ),
                None,
            )
            .await
            .unwrap();
    }

    // A token as the first version made it: version 1, the key
    // (created_at, id), then 16 bytes of an unkeyed SHA-256.
    let (filter, order_by) = ("", "created_at");
    let mut payload = vec![1u8, b'i'];
    payload.extend(0i64.to_be_bytes());
    payload.push(b's');
    payload.extend(0u32.to_be_bytes());
    let mut hash = sha2::Sha256::new();
    hash.update(b"usersvc page token\0");
    for part in [filter.as_bytes(), order_by.as_bytes()] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.update(&payload);
    payload.extend(&hash.finalize()[..16]);
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload);
    let refused = client
        .search_users(search(filter, order_by, 2, &forged))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(bad_request_fields(&refused), ["page_token"]);
    // The server's own token still opens the next page.
    let first = client
        .search_users(search(filter, order_by, 2, ""))
        .await
        .unwrap();
    let next = client
        .search_users(search(filter, order_by, 2, &first.next_page_token))
        .await
        .unwrap();
    assert_eq!(next.users.len(), 1);

    let refused = client
        .search_users(search("name = \"a\u{0}z\"", "", 0, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("at character 10: a filter may not hold control characters"),
        "{}",
        refused.message()
    );
}
