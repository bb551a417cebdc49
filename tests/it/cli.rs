//! Smoke tests of the built `usersvc` binary: a real `serve` process, and
//! the client commands run as a user would run them.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::process::{BIN, ServerProcess};

/// A `usersvc serve` process with a SQLite store and a generated secret in
/// a directory of its own.
struct Server {
    process: ServerProcess,
    url: String,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("sqlite://{}/users.db", dir.path().display());
        let process = ServerProcess::start_with_generated_secret(&["--store", &store], dir.path());
        Server {
            url: process.url.clone(),
            process,
            dir,
        }
    }

    /// Runs a client command against this server, with `token` if given.
    fn run(&self, args: &[&str], token: Option<&str>) -> Output {
        self.command(args, token).output().unwrap()
    }

    fn command(&self, args: &[&str], token: Option<&str>) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("USERSVC_ADDR", &self.url)
            .env_remove("USERSVC_TOKEN");
        if let Some(token) = token {
            command.env("USERSVC_TOKEN", token);
        }
        command
    }

    /// Mints a token with the secret the server generated in its data dir.
    fn token(&self, role: &str) -> String {
        token_for(self.dir.path(), role)
    }
}

fn token_for(data_dir: &Path, role: &str) -> String {
    let output = Command::new(BIN)
        .args([
            "token",
            "--sub",
            "cli-test",
            "--role",
            role,
            "--ttl",
            "10m",
            "--data-dir",
        ])
        .arg(data_dir)
        .env_remove("USERSVC_JWT_SECRET")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn a_user_goes_through_create_get_list_update_and_delete() {
    let server = Server::start();
    let admin = server.token("admin");
    let admin = Some(admin.as_str());

    let created = stdout(&server.run(
        &[
            "create",
            "--name",
            "Ann",
            "--email",
            "ann@example.com",
            "--role",
            "editor",
            "--bio",
            "hi",
            "--output",
            "json",
        ],
        admin,
    ));
    let user = &json_lines(&created)[0];
    let id = user["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            user["name"].as_str(),
            user["role"].as_str(),
            user["bio"].as_str()
        ),
        (Some("Ann"), Some("editor"), Some("hi"))
    );

    // GetUser is public: no token.
    let table = stdout(&server.run(&["get", &id], None));
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains(&id) && table.contains("ann@example.com"),
        "{table}"
    );

    let listed = json_lines(&stdout(
        &server.run(&["list", "--role", "EDITOR", "--output", "json"], admin),
    ));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"].as_str(), Some(id.as_str()));

    let updated = json_lines(&stdout(&server.run(
        &[
            "update", &id, "--name", "Ann B", "--bio", "", "--output", "json",
        ],
        admin,
    )));
    assert_eq!(updated[0]["name"].as_str(), Some("Ann B"));
    assert!(
        updated[0].get("bio").is_none(),
        "bio removed: {}",
        updated[0]
    );

    stdout(&server.run(&["delete", &id], admin));
    let gone = server.run(&["get", &id], None);
    assert_eq!(gone.status.code(), Some(1));
    let stderr = String::from_utf8(gone.stderr).unwrap();
    assert_eq!(stderr, format!("error: NOT_FOUND: user {id} not found\n"));
}

#[test]
fn search_labels_and_if_match_from_the_command_line() {
    let server = Server::start();
    let admin = server.token("admin");
    let admin = Some(admin.as_str());
    for (name, team) in [("Ada", "core"), ("Bob", "web"), ("Cy", "core")] {
        let email = format!("{}@cli.test", name.to_lowercase());
        stdout(&server.run(
            &[
                "create",
                "--name",
                name,
                "--email",
                &email,
                "--label",
                &format!("team={team}"),
            ],
            admin,
        ));
    }

    // One page of two, the total and the next token on stderr.
    let first = server.run(
        &[
            "search",
            "labels.team = CORE OR name = bob",
            "--order-by",
            "name desc",
            "--page-size",
            "2",
            "--output",
            "json",
        ],
        admin,
    );
    let page = json_lines(&stdout(&first));
    let names: Vec<_> = page.iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Cy", "Bob"]);
    let stderr = String::from_utf8(first.stderr).unwrap();
    assert!(stderr.contains("2 of 3 users"), "{stderr}");
    let token = stderr
        .split("--page-token ")
        .nth(1)
        .expect("a next page")
        .trim()
        .to_owned();
    let rest = json_lines(&stdout(&server.run(
        &[
            "search",
            "labels.team = CORE OR name = bob",
            "--order-by",
            "name desc",
            "--page-size",
            "2",
            "--page-token",
            &token,
            "--output",
            "json",
        ],
        admin,
    )));
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["name"].as_str(), Some("Ada"));
    // --all walks every page.
    let all = json_lines(&stdout(&server.run(
        &[
            "search",
            "",
            "--page-size",
            "1",
            "--all",
            "--output",
            "json",
        ],
        admin,
    )));
    assert_eq!(all.len(), 3);
    // list takes the filter too.
    let listed = json_lines(&stdout(&server.run(
        &[
            "list",
            "--filter",
            "labels:team -labels.team = web",
            "--output",
            "json",
        ],
        admin,
    )));
    assert_eq!(listed.len(), 2);

    // An update with the etag it read; then the same etag again is stale.
    let ada = &page
        .iter()
        .chain(&rest)
        .find(|u| u["name"] == "Ada")
        .unwrap()
        .clone();
    let (id, etag) = (ada["id"].as_str().unwrap(), ada["etag"].as_str().unwrap());
    let updated = json_lines(&stdout(&server.run(
        &[
            "update",
            id,
            "--label",
            "floor=3",
            "--remove-label",
            "team",
            "--if-match",
            etag,
            "--output",
            "json",
        ],
        admin,
    )));
    assert_eq!(updated[0]["labels"], serde_json::json!({"floor": "3"}));
    let stale = server.run(
        &["update", id, "--name", "Ada 2", "--if-match", etag],
        admin,
    );
    assert_eq!(stale.status.code(), Some(1));
    let stderr = String::from_utf8(stale.stderr).unwrap();
    assert!(stderr.starts_with("error: ABORTED: user "), "{stderr}");
    assert!(stderr.contains("changed since it was read"), "{stderr}");
    let stale = server.run(&["delete", id, "--if-match", etag], admin);
    assert_eq!(stale.status.code(), Some(1));
    let kept = json_lines(&stdout(&server.run(&["get", id, "--output", "json"], None)));
    assert_eq!(kept[0]["name"].as_str(), Some("Ada"));

    let bad = server.run(&["search", "name ="], admin);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert!(
        stderr.contains("INVALID_ARGUMENT") && stderr.contains("at character 7"),
        "{stderr}"
    );
}

#[test]
fn errors_print_code_and_message_on_one_line_and_exit_non_zero() {
    let server = Server::start();
    let no_token = server.run(&["list"], None);
    assert_eq!(no_token.status.code(), Some(1));
    let stderr = String::from_utf8(no_token.stderr).unwrap();
    assert!(
        stderr.starts_with("error: UNAUTHENTICATED: missing authorization"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);

    let viewer = server.token("viewer");
    let denied = server.run(
        &["create", "--name", "X", "--email", "x@example.com"],
        Some(&viewer),
    );
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        String::from_utf8(denied.stderr)
            .unwrap()
            .starts_with("error: PERMISSION_DENIED: ")
    );

    let bad_role = server.run(
        &[
            "create",
            "--name",
            "X",
            "--email",
            "x@example.com",
            "--role",
            "king",
        ],
        Some(&viewer),
    );
    assert_eq!(bad_role.status.code(), Some(2), "a usage error");
}

/// With no `--store`, the users go in `--data-dir`, beside the secret: a
/// server started with a data directory of its own writes nothing else.
#[test]
fn the_default_store_lives_in_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start_with_generated_secret(&[], dir.path());
    let store = dir.path().join("users.db");
    assert!(store.exists(), "no {}", store.display());
    server.terminate();
    let (_, log) = server.wait_with_log();
    let listening = log
        .iter()
        .find(|l| l.contains("usersvc listening"))
        .unwrap();
    assert!(
        listening.contains(&format!("store=sqlite://{}", store.display())),
        "{listening}"
    );
}

/// Each `usersvc create` sends a key of its own: the same user created
/// twice is refused the second time (the email is taken), not answered
/// with the first user as a retry of the same call would be.
#[test]
fn each_create_is_a_new_call_not_a_retry_of_the_last() {
    let server = Server::start();
    let admin = server.token("admin");
    let args = ["create", "--name", "Twice", "--email", "twice@example.com"];
    let first = server.run(&args, Some(&admin));
    assert!(first.status.success(), "{first:?}");
    let second = server.run(&args, Some(&admin));
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    let stderr = String::from_utf8(second.stderr).unwrap();
    assert!(stderr.starts_with("error: ALREADY_EXISTS: "), "{stderr}");
    let listed = stdout(&server.run(&["list", "--output", "json"], Some(&admin)));
    assert_eq!(json_lines(&listed).len(), 1, "{listed}");
}

#[test]
fn bulk_create_reads_csv_from_stdin_and_json_lines_from_a_file() {
    let server = Server::start();
    let admin = server.token("admin");

    let mut child = server
        .command(&["bulk-create", "-"], Some(&admin))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"name,email,role,bio\nAnn,ann@example.com,admin,\nBob,bob@example.com,,likes tea\n",
        )
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(stdout(&output), "created 2 users\n");

    let file = server.dir.path().join("more.jsonl");
    std::fs::write(&file, "{\"name\":\"Cy\",\"email\":\"cy@example.com\"}\n{\"name\":\"Di\",\"email\":\"di@example.com\",\"role\":\"USER_ROLE_EDITOR\"}\n").unwrap();
    let output = server.run(
        &["bulk-create", file.to_str().unwrap(), "--output", "json"],
        Some(&admin),
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(summary["total_count"], 2);

    let listed = json_lines(&stdout(
        &server.run(&["list", "--output", "json"], Some(&admin)),
    ));
    let names: Vec<_> = listed.iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Ann", "Bob", "Cy", "Di"]);
    assert_eq!(listed[1]["bio"].as_str(), Some("likes tea"));

    // A duplicate inside the file: nothing is created, and the index is named.
    std::fs::write(&file, "{\"name\":\"Ed\",\"email\":\"ed@example.com\"}\n{\"name\":\"Ed\",\"email\":\"ED@example.com\"}\n").unwrap();
    let output = server.run(&["bulk-create", file.to_str().unwrap()], Some(&admin));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .starts_with("error: ALREADY_EXISTS: item 1:")
    );
    assert_eq!(
        json_lines(&stdout(
            &server.run(&["list", "--output", "json"], Some(&admin))
        ))
        .len(),
        4
    );
}

#[test]
fn watch_prints_events_as_they_happen() {
    let server = Server::start();
    let admin = server.token("admin");
    let mut watch = server
        .command(&["watch", "*", "--output", "json"], Some(&admin))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let subscribed: serde_json::Value =
        serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(subscribed["event_type"], "subscribed");

    stdout(&server.run(
        &["create", "--name", "Fay", "--email", "fay@example.com"],
        Some(&admin),
    ));
    let event: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(event["event_type"], "user_created");
    assert_eq!(event["user"]["name"], "Fay");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn invalid_serve_settings_exit_2_before_binding() {
    let output = Command::new(BIN)
        .args(["serve", "--store", "bogus"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("unknown store \"bogus\""), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--public-methods",
            "GetUsers",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("unknown method \"GetUsers\"")
    );
}

#[test]
fn sigterm_ends_open_watches_and_the_cli_watch_resumes_on_the_next_server() {
    let mut server = Server::start();
    let admin = server.token("admin");
    let mut watch = server
        .command(&["watch", "*", "--output", "json"], Some(&admin))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains("subscribed"));

    server.process.terminate();
    let status = server.process.child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    // The watch goes on by itself: a server started again at the same
    // address, on the same file, gets it back, from where it stopped.
    let store = format!("sqlite://{}/users.db", server.dir.path().display());
    let addr = server.url.trim_start_matches("http://").to_owned();
    let _next = ServerProcess::start_with_generated_secret(
        &["--store", &store, "--addr", &addr],
        server.dir.path(),
    );
    let created = server.run(
        &[
            "create",
            "--name",
            "Ada",
            "--email",
            "ada@example.com",
            "--output",
            "json",
        ],
        Some(&admin),
    );
    let ada = json_lines(&stdout(&created)).remove(0);
    let event = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|line| line.contains("user_created"))
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(&event).unwrap();
    assert_eq!(event["user_id"], ada["id"]);
    assert_eq!(event["user"]["name"], "Ada");
    assert!(event["sequence"].as_i64().unwrap() > 1, "{event}");

    watch.kill().unwrap();
    let output = watch.wait_with_output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with(
            "watch: the stream broke (UNAVAILABLE: server shutting down); reconnected after "
        ),
        "{stderr}"
    );
    assert!(stderr.contains(", resuming after change "), "{stderr}");
}

#[test]
fn bench_drives_every_scenario_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_generated_secret(
        &["--store", "memory", "--rate-limit", "0"],
        dir.path(),
    );
    let token = token_for(dir.path(), "admin");
    for scenario in ["get", "create", "list", "bulk", "watch"] {
        let output = Command::new(BIN)
            .args([
                "bench",
                scenario,
                "--duration",
                "300ms",
                "--warmup",
                "100ms",
                "--connections",
                "1",
                "--concurrency",
                "2",
            ])
            .args([
                "--users",
                "50",
                "--batch",
                "20",
                "--watchers",
                "3",
                "--write-rate",
                "100",
                "--output",
                "json",
            ])
            .env("USERSVC_ADDR", &server.url)
            .env("USERSVC_TOKEN", &token)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
        assert_eq!(report["scenario"], scenario);
        assert!(report["calls"].as_u64().unwrap() > 0, "{report}");
        assert!(
            report["items_per_second"].as_f64().unwrap() > 0.0,
            "{report}"
        );
        assert_eq!(report["errors"], serde_json::json!({}), "{report}");
        let l = &report["latency_us"];
        let (p50, p99, max) = (
            l["p50"].as_u64().unwrap(),
            l["p99"].as_u64().unwrap(),
            l["max"].as_u64().unwrap(),
        );
        assert!(0 < p50 && p50 <= p99 && p99 <= max, "{report}");
    }
}

#[test]
fn bench_count_measures_exactly_that_many_calls() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_generated_secret(
        &["--store", "memory", "--rate-limit", "0"],
        dir.path(),
    );
    let token = token_for(dir.path(), "admin");
    let bench = |scenario: &str, count: &str| {
        Command::new(BIN)
            .args(["bench", scenario, "--count", count, "--warmup", "100ms"])
            .args(["--connections", "2", "--concurrency", "3", "--users", "20"])
            .args(["--output", "json"])
            .env("USERSVC_ADDR", &server.url)
            .env("USERSVC_TOKEN", &token)
            .output()
            .unwrap()
    };
    for (scenario, count) in [("get", 250), ("create", 40)] {
        let output = bench(scenario, &count.to_string());
        let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
        assert_eq!(report["calls"], count, "{report}");
        assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    }
    let refused = bench("watch", "10");
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--count is for get"),
        "{refused:?}"
    );
}

#[test]
fn an_address_without_a_scheme_works_and_a_dead_one_is_unavailable_naming_it() {
    let server = Server::start();
    let bare = server.url.trim_start_matches("http://").to_owned();
    let viewer = server.token("viewer");
    for command in [
        vec!["get", "0190c0de-0000-7000-8000-000000000000"],
        vec!["list"],
    ] {
        let mut args = command.clone();
        args.extend(["--addr", &bare]);
        let output = server.run(&args, Some(&viewer));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(!stderr.contains("transport error"), "{command:?}: {stderr}");
        if command[0] == "get" {
            assert!(stderr.starts_with("error: NOT_FOUND: "), "{stderr}");
        } else {
            assert!(output.status.success(), "{stderr}");
        }
    }

    // Port 1 (tcpmux) is privileged and nothing on this machine serves it,
    // unlike a freed ephemeral port, which another process could take.
    for addr in ["127.0.0.1:1", "http://127.0.0.1:1"] {
        let output = server.run(&["get", "x", "--addr", addr], Some(&viewer));
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            stderr.starts_with("error: UNAVAILABLE: cannot reach http://127.0.0.1:1: "),
            "{addr}: {stderr}"
        );
        assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
    }
    let output = server.run(
        &[
            "bench",
            "get",
            "--addr",
            "127.0.0.1:1",
            "--duration",
            "1s",
            "--warmup",
            "0s",
        ],
        Some(&viewer),
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("UNAVAILABLE") || stderr.contains("cannot reach http://127.0.0.1:1"),
        "{stderr}"
    );
}
