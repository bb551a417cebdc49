//! What the server writes to disk and to its log keeps the directory's data
//! and its secrets to their owner. Shown on a real `usersvc serve`.

use std::os::unix::fs::PermissionsExt;

use crate::support::process::{BIN, ServerProcess};
use crate::support::{admin_client, create_request};
use usersvc::pb::UserRole;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_directory_database_and_secret_are_the_owners_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store = format!("sqlite://{}/users.db", data.display());
    let server = ServerProcess::start_with_generated_secret(&["--store", &store], &data);
    // A write, so that SQLite has made its WAL and SHM files.
    admin_client_for_generated(&server.url, &data)
        .create_user(
            create_request("Pii", "pii@example.com", UserRole::Viewer),
            None,
        )
        .await
        .unwrap();
    assert_eq!(mode(&data), 0o700, "the data directory");
    for file in ["users.db", "users.db-wal", "users.db-shm", "jwt-secret"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
}

/// An admin client whose token is signed with the secret the server
/// generated in `data`.
fn admin_client_for_generated(url: &str, data: &std::path::Path) -> usersvc::client::Client {
    let output = std::process::Command::new(BIN)
        .args(["token", "--sub", "t", "--role", "admin", "--data-dir"])
        .arg(data)
        .env_remove("USERSVC_JWT_SECRET")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let mut config = usersvc::client::ClientConfig::new(url.to_owned());
    config.token = Some(String::from_utf8(output.stdout).unwrap().trim().to_owned());
    usersvc::client::Client::new(config).unwrap()
}

#[test]
fn a_secret_file_others_can_read_stops_the_server_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "s".repeat(48)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--store", "memory"])
        .arg("--jwt-secret-file")
        .arg(&secret)
        .env_remove("USERSVC_JWT_SECRET")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must refuse at once; a server that starts would run for ever.
    let mut status = None;
    for _ in 0..300 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let Some(status) = status else {
        child.kill().unwrap();
        panic!("the server started with a secret others can read");
    };
    assert_eq!(status.code(), Some(2), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains(&format!("run `chmod 600 {}`", secret.display())),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_password_never_reaches_the_log() {
    let url = crate::support::required_postgres_url().await;
    // Trust authentication ignores it; the server must not show it.
    let with_password = url
        .replacen("://root@", "://root:hunter2-in-user@", 1)
        .replacen('?', "?password=hunter2-in-query&", 1);
    assert!(
        with_password.contains("hunter2-in-user") && with_password.contains("hunter2-in-query")
    );
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&["--store", &with_password], dir.path());
    admin_client(&server.url)
        .create_user(
            create_request("Pg", "pg@example.com", UserRole::Viewer),
            None,
        )
        .await
        .unwrap();
    server.terminate();
    let (_, log) = tokio::task::spawn_blocking(move || server.wait_with_log())
        .await
        .unwrap();
    assert!(
        log.iter()
            .any(|l| l.contains("store=postgres://127.0.0.1:5432/")),
        "{log:#?}"
    );
    assert!(!log.iter().any(|l| l.contains("hunter2")), "{log:#?}");
}
