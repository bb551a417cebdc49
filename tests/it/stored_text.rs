//! What users store reaches other people's terminals and screens: text that
//! could rewrite or hide what they see is refused, ordinary Unicode is
//! welcome, and `usersvc list` escapes whatever control character a server
//! sends. Shown on a real `usersvc serve`.

use tonic::Code;
use usersvc::pb::{self, UserRole};

use crate::support::process::{BIN, ServerProcess};
use crate::support::{admin_client, bad_request_fields, create_request};

fn with_bio(name: &str, email: &str, bio: &str) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        bio: Some(bio.to_owned()),
        ..create_request(name, email, UserRole::Viewer)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn escapes_and_invisible_characters_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&["--store", "memory"], dir.path());
    let admin = admin_client(&server.url);
    let refused = [
        // A bio that writes the reader's clipboard, and one that forges a row.
        (
            with_bio("Eve", "eve@example.com", "hi\u{1b}]52;c;ZXZpbA==\u{7}"),
            "bio",
            "U+001B",
        ),
        (
            with_bio("Eve", "eve@example.com", "ok\r\u{1b}[2Kadmin  admin@corp"),
            "bio",
            "U+000D",
        ),
        // A name turned around, and one with a zero-width space.
        (
            create_request("evil\u{202e}gpj.exe", "a@example.com", UserRole::Viewer),
            "name",
            "U+202E",
        ),
        (
            create_request("Ad\u{200b}a", "a@example.com", UserRole::Viewer),
            "name",
            "U+200B",
        ),
        // A look-alike "unique" email, and a C1 control in a name.
        (
            create_request("Ada", "ad\u{200b}a@example.com", UserRole::Viewer),
            "email",
            "U+200B",
        ),
        (
            create_request("Ad\u{85}a", "a@example.com", UserRole::Viewer),
            "name",
            "U+0085",
        ),
    ];
    for (request, field, character) in refused {
        let status = admin.create_user(request.clone(), None).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert_eq!(bad_request_fields(&status), [field], "{request:?}");
        assert!(status.message().contains(character), "{}", status.message());
    }
    // Updates are held to the same rules.
    let ada = admin
        .create_user(
            create_request("Ada", "ada@example.com", UserRole::Viewer),
            None,
        )
        .await
        .unwrap();
    let status = admin
        .update_user(pb::UpdateUserRequest {
            user_id: ada.id.clone(),
            name: Some("Ada\u{1b}[31m".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_fields(&status), ["name"]);

    // Ordinary Unicode, and a bio's lines, tabs and joined emoji, are kept.
    let kept = [
        with_bio(
            "Zoë Ångström",
            "zoe@example.com",
            "line one\n\tline two 👨\u{200d}👩\u{200d}👧",
        ),
        create_request("李小龙", "li@example.com", UserRole::Viewer),
        create_request("Ada", "ａｄａ@example.com", UserRole::Viewer),
    ];
    for request in kept {
        let user = admin.create_user(request.clone(), None).await.unwrap();
        assert_eq!(
            (user.name, user.email, user.bio),
            (request.name.trim().to_owned(), request.email, request.bio)
        );
    }
}

/// A server that sends whatever a store holds: the tests' grpcio peer is
/// not needed, since the CLI's output is a function of what it receives;
/// here a user with control characters is planted straight in the store
/// file, as an older server or another writer might have left it.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_escapes_control_characters_whatever_the_server_sends() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/users.db", dir.path().display());
    drop(
        usersvc::store::open(&url, &usersvc::store::StoreOptions::default())
            .await
            .unwrap(),
    );
    crate::support::sqlite_file(&url)
        .execute(
            "INSERT INTO users (id, name, email, email_key, role, created_at, bio) VALUES \
             ('0190c0de-0000-7000-8000-000000000001', ?1, 'eve@example.com', 'eve@example.com', 3, 1700000000, ?2)",
            ["Eve\u{1b}[2K\radmin", "\u{1b}]52;c;ZXZpbA==\u{7}\u{202e}"],
        )
        .unwrap();

    let server = ServerProcess::start(&["--store", &url], dir.path());
    let output = std::process::Command::new(BIN)
        .args(["list", "--addr", &server.url])
        .env(
            "USERSVC_TOKEN",
            crate::support::token(usersvc::domain::Role::Admin),
        )
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let shown = String::from_utf8(output.stdout).unwrap();
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\n'
            || (matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'))),
        "raw control or format characters reached the terminal: {shown:?}"
    );
    assert!(shown.contains("Eve\\u{1b}[2K\\radmin"), "{shown}");

    // `usersvc watch` escapes what an event carries the same way: the
    // planted user's role changes, and the event holds the whole user.
    use std::io::BufRead;
    let mut watch = std::process::Command::new(BIN)
        .args(["watch", "*", "--addr", &server.url])
        .env(
            "USERSVC_TOKEN",
            crate::support::token(usersvc::domain::Role::Admin),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let subscribed = lines.next().unwrap().unwrap();
    assert!(subscribed.contains("subscribed"), "{subscribed}");
    crate::support::admin_client(&server.url)
        .update_user(usersvc::pb::UpdateUserRequest {
            user_id: "0190c0de-0000-7000-8000-000000000001".into(),
            role: Some(usersvc::pb::UserRole::Editor as i32),
            ..Default::default()
        })
        .await
        .unwrap();
    let event = lines.next().unwrap().unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        !event
            .chars()
            .any(|c| c.is_control()
                || (matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'))),
        "raw control or format characters reached the terminal: {event:?}"
    );
    assert!(event.contains("Eve\\u{1b}[2K\\radmin"), "{event}");
}
