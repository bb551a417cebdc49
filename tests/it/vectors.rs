//! Golden vectors from Google's protobuf runtime (`tests/vectors/*.hex`,
//! written by `make vectors`): each decodes with the hand-written types to
//! the value expected here, and re-encodes byte for byte.

use std::collections::BTreeSet;
use std::path::Path;

use prost::Message;
use usersvc::pb::*;

struct Vector {
    message: String,
    bytes: Vec<u8>,
    reencoded: Option<Vec<u8>>,
}

fn unhex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn read(path: &Path) -> Vector {
    let text = std::fs::read_to_string(path).unwrap();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .map(str::to_owned)
    };
    Vector {
        message: field("message").expect("message line"),
        // An empty message is `bytes: ` with nothing after it; a file with
        // no bytes line at all is broken, not empty.
        bytes: unhex(
            &field("bytes").unwrap_or_else(|| panic!("{}: no `bytes: ` line", path.display())),
        ),
        reencoded: field("reencoded").map(|hex| unhex(&hex)),
    }
}

fn check<M: Message + Default + PartialEq + std::fmt::Debug>(
    name: &str,
    vector: &Vector,
    expected: M,
) {
    let type_name = std::any::type_name::<M>().rsplit("::").next().unwrap();
    assert_eq!(
        vector.message, type_name,
        "{name}: vector is a {}",
        vector.message
    );
    let decoded = M::decode(vector.bytes.as_slice()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(decoded, expected, "{name}: decoded value");
    let want = vector.reencoded.as_ref().unwrap_or(&vector.bytes);
    assert_eq!(&decoded.encode_to_vec(), want, "{name}: re-encoded bytes");
}

fn full_user() -> User {
    User {
        id: "ü-1".into(),
        name: "Zoë 😈".into(),
        email: "zoe@example.com".into(),
        role: UserRole::Viewer as i32,
        created_at: -5,
        bio: Some("☺\t\r\n".into()),
        ..Default::default()
    }
}

fn user(id: &str) -> User {
    User {
        id: id.into(),
        ..Default::default()
    }
}

/// Checks vector `name` against its expected value; false for a name this
/// table does not know.
fn expect(name: &str, v: &Vector) -> bool {
    match name {
        "user_full" => check(name, v, full_user()),
        "user_empty" => check(name, v, User::default()),
        "user_bio_present_but_empty" => check(
            name,
            v,
            User {
                bio: Some(String::new()),
                ..user("u")
            },
        ),
        "user_unknown_enum_value" => check(
            name,
            v,
            User {
                role: 7,
                ..user("u")
            },
        ),
        "user_max_int64" => check(
            name,
            v,
            User {
                created_at: i64::MAX,
                ..User::default()
            },
        ),
        "user_min_int64" => check(
            name,
            v,
            User {
                created_at: i64::MIN,
                ..User::default()
            },
        ),
        "user_fields_out_of_order_and_repeated" => check(
            name,
            v,
            User {
                name: "last".into(),
                created_at: 5,
                ..user("x")
            },
        ),
        "get_user_request" => check(
            name,
            v,
            GetUserRequest {
                user_id: "abc".into(),
            },
        ),
        "get_user_request_empty" => check(name, v, GetUserRequest::default()),
        "get_user_request_unknown_fields" => check(
            name,
            v,
            GetUserRequest {
                user_id: "abc".into(),
            },
        ),
        "get_user_response" => check(
            name,
            v,
            GetUserResponse {
                user: Some(full_user()),
            },
        ),
        "get_user_response_no_user" => check(name, v, GetUserResponse { user: None }),
        "get_user_response_empty_user" => check(
            name,
            v,
            GetUserResponse {
                user: Some(User::default()),
            },
        ),
        "list_users_request_edges" => check(
            name,
            v,
            ListUsersRequest {
                limit: -1,
                offset: i32::MIN,
                filter_role: "USER_ROLE_ADMIN".into(),
                ..Default::default()
            },
        ),
        "list_users_request_max" => check(
            name,
            v,
            ListUsersRequest {
                limit: i32::MAX,
                offset: i32::MAX,
                filter_role: String::new(),
                ..Default::default()
            },
        ),
        "list_users_response_three" => check(
            name,
            v,
            ListUsersResponse {
                users: vec![full_user(), user("2"), User::default()],
                total_count: 3,
            },
        ),
        "list_users_response_empty" => check(name, v, ListUsersResponse::default()),
        "create_user_request_no_bio" => check(
            name,
            v,
            CreateUserRequest {
                name: "Ann".into(),
                email: "ann@example.com".into(),
                role: UserRole::Admin as i32,
                bio: None,
                ..Default::default()
            },
        ),
        "create_user_request_with_bio" => check(
            name,
            v,
            CreateUserRequest {
                name: "Ann".into(),
                email: "ann@example.com".into(),
                role: 0,
                bio: Some("x".repeat(300)),
                ..Default::default()
            },
        ),
        "update_user_request_all_present_and_empty" => check(
            name,
            v,
            UpdateUserRequest {
                user_id: "u".into(),
                name: Some(String::new()),
                email: Some(String::new()),
                role: Some(0),
                bio: Some(String::new()),
                ..Default::default()
            },
        ),
        "update_user_request_id_only" => check(
            name,
            v,
            UpdateUserRequest {
                user_id: "u".into(),
                ..Default::default()
            },
        ),
        "delete_user_request" => check(
            name,
            v,
            DeleteUserRequest {
                user_id: "u".into(),
                ..Default::default()
            },
        ),
        "delete_user_response" => check(
            name,
            v,
            DeleteUserResponse {
                user: Some(full_user()),
            },
        ),
        "event_stream_request_star" => check(
            name,
            v,
            EventStreamRequest {
                user_id: "*".into(),
                ..Default::default()
            },
        ),
        "subscribe_user_events_request" => check(
            name,
            v,
            SubscribeUserEventsRequest {
                user_ids: vec![
                    "*".into(),
                    "0190c0de-0000-7000-8000-000000000000".into(),
                    String::new(),
                ],
                ..Default::default()
            },
        ),
        "user_event_binary_payload" => check(
            name,
            v,
            UserEvent {
                event_type: "user_created".into(),
                user_id: "u".into(),
                payload: vec![0xff, 0x00, 0x80].into(),
                timestamp: -1,
                ..Default::default()
            },
        ),
        "user_event_user_payload" => check(
            name,
            v,
            UserEvent {
                event_type: "user_updated".into(),
                user_id: "ü-1".into(),
                payload: full_user().encode_to_vec().into(),
                timestamp: 1_700_000_000_123,
                ..Default::default()
            },
        ),
        _ => return false,
    }
    true
}

#[test]
fn every_golden_vector_decodes_to_its_value_and_reencodes_exactly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut seen = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "hex") {
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            assert!(
                expect(&name, &read(&path)),
                "vector {name} has no expected value in tests/vectors.rs"
            );
            seen.insert(name);
        }
    }
    let messages: BTreeSet<String> = seen
        .iter()
        .map(|name| read(&dir.join(format!("{name}.hex"))).message)
        .collect();
    for message in [
        "User",
        "GetUserRequest",
        "GetUserResponse",
        "ListUsersRequest",
        "ListUsersResponse",
        "CreateUserRequest",
        "UpdateUserRequest",
        "DeleteUserRequest",
        "DeleteUserResponse",
        "EventStreamRequest",
        "UserEvent",
    ] {
        assert!(messages.contains(message), "no vector for {message}");
    }
    assert!(
        seen.len() >= 26,
        "only {} vectors: run `make vectors`",
        seen.len()
    );
}

/// `make vectors` is the only writer of `tests/vectors/*.hex`; this shows,
/// under `cargo test` too, that what is committed is what Google's runtime
/// writes today. Needs the Python environment `make test` installs.
#[test]
#[ignore = "needs .venv (make python-env); make test runs it"]
fn the_committed_vectors_are_what_the_generator_writes_today() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "no {}: run `make python-env` (make test does)",
        python.display()
    );
    let fresh = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(&python)
        .arg(root.join("tests/vectors/generate.py"))
        .arg(fresh.path())
        .status()
        .unwrap();
    assert!(status.success(), "generate.py failed: {status}");
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".hex"))
            .collect()
    };
    let committed_dir = root.join("tests/vectors");
    assert_eq!(
        names(&committed_dir),
        names(fresh.path()),
        "the vector files differ: run `make vectors`"
    );
    for name in names(fresh.path()) {
        let committed = std::fs::read_to_string(committed_dir.join(&name)).unwrap();
        let written = std::fs::read_to_string(fresh.path().join(&name)).unwrap();
        assert_eq!(committed, written, "{name} is stale: run `make vectors`");
    }
}
