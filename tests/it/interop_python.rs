//! Our hand-written Rust client against a Python grpcio server generated
//! from the same .proto (`tests/python/server.py`): all seven RPCs.
//!
//! Needs the Python environment that `make test` installs (`.venv`), so it
//! is ignored under a bare `cargo test`; `make test` runs it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use tokio_stream::StreamExt;
use usersvc::client::{Client, ClientConfig};
use usersvc::pb::{self, UserRole};

struct PythonServer {
    child: Child,
    url: String,
}

impl PythonServer {
    fn start() -> PythonServer {
        let root = env!("CARGO_MANIFEST_DIR");
        let python = format!("{root}/.venv/bin/python");
        assert!(
            std::path::Path::new(&python).exists(),
            "no {python}: run `make python-env` (make test does)"
        );
        let mut child = Command::new(python)
            .arg("server.py")
            .current_dir(format!("{root}/tests/python"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .unwrap_or_else(|| panic!("server said {line:?}"));
        PythonServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn create(name: &str, email: &str) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        name: name.into(),
        email: email.into(),
        role: UserRole::Editor as i32,
        bio: Some("from rust ☺".into()),
        ..Default::default()
    }
}

#[tokio::test]
#[ignore = "needs the Python environment; `make test` runs it"]
async fn the_rust_client_drives_all_seven_rpcs_on_a_grpcio_server() {
    let server = PythonServer::start();
    let client = Client::new(ClientConfig::new(server.url.clone())).unwrap();

    // WatchUserEvents first, so that it sees what follows.
    let subscriptions = tokio_stream::iter(vec![pb::EventStreamRequest {
        user_id: "*".into(),
        ..Default::default()
    }])
    .chain(tokio_stream::pending());
    let mut events = client.watch_user_events(subscriptions).await.unwrap();
    assert_eq!(
        events.message().await.unwrap().unwrap().event_type,
        "subscribed"
    );

    let ann = client
        .create_user(create("Ann", "ann@example.com"), None)
        .await
        .unwrap();
    assert_eq!(
        (ann.name.as_str(), ann.role, ann.bio.as_deref()),
        ("Ann", UserRole::Editor as i32, Some("from rust ☺"))
    );

    let fetched = client.get_user(&ann.id).await.unwrap();
    assert_eq!(fetched, ann);

    let bulk = client
        .bulk_create_users(tokio_stream::iter(vec![
            create("Bob", "bob@example.com"),
            create("Cy", "cy@example.com"),
        ]))
        .await
        .unwrap();
    assert_eq!(bulk.total_count, 2);

    let mut stream = client
        .list_users(pb::ListUsersRequest {
            offset: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut names = Vec::new();
    while let Some(user) = stream.message().await.unwrap() {
        names.push(user.name);
    }
    assert_eq!(names, ["Bob", "Cy"]);

    let updated = client
        .update_user(pb::UpdateUserRequest {
            user_id: ann.id.clone(),
            name: Some("Ann B".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(updated.name, "Ann B");

    let deleted = client.delete_user(&ann.id).await.unwrap();
    assert_eq!(deleted.id, ann.id);
    let status = client.get_user(&ann.id).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), format!("user {} not found", ann.id));

    let kinds: Vec<String> = {
        let mut kinds = Vec::new();
        while kinds.len() < 5 {
            kinds.push(events.message().await.unwrap().unwrap().event_type);
        }
        kinds
    };
    assert_eq!(
        kinds,
        [
            "user_created",
            "user_created",
            "user_created",
            "user_updated",
            "user_deleted"
        ]
    );
}
