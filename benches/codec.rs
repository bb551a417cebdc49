//! Encoding and decoding each message of the contract, with criterion:
//! `cargo bench --bench codec`. The values are typical, not worst cases.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message;
use usersvc::pb::*;

fn user(n: u32) -> User {
    User {
        id: format!("01a20adb-31af-741b-b7f2-{n:012}"),
        name: format!("User number {n}"),
        email: format!("user{n}@example.com"),
        role: UserRole::Editor as i32,
        created_at: 1_795_478_467,
        bio: Some("Writes about distributed systems and gardening.".into()),
        ..Default::default()
    }
}

/// Measures encoding `value` and decoding its bytes, as `name`.
fn round_trip<M: Message + Default>(c: &mut Criterion, name: &str, value: M) {
    let bytes = value.encode_to_vec();
    c.bench_function(&format!("encode {name}"), |b| {
        b.iter(|| black_box(&value).encode_to_vec())
    });
    c.bench_function(&format!("decode {name}"), |b| {
        b.iter(|| M::decode(black_box(bytes.as_slice())).unwrap())
    });
}

fn messages(c: &mut Criterion) {
    round_trip(c, "User", user(1));
    round_trip(
        c,
        "GetUserRequest",
        GetUserRequest {
            user_id: user(1).id,
        },
    );
    round_trip(
        c,
        "GetUserResponse",
        GetUserResponse {
            user: Some(user(1)),
        },
    );
    round_trip(
        c,
        "ListUsersRequest",
        ListUsersRequest {
            limit: 100,
            offset: 20,
            filter_role: "editor".into(),
            ..Default::default()
        },
    );
    round_trip(
        c,
        "ListUsersResponse (1,000 users)",
        ListUsersResponse {
            users: (0..1000).map(user).collect(),
            total_count: 1000,
        },
    );
    round_trip(
        c,
        "CreateUserRequest",
        CreateUserRequest {
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
            role: UserRole::Viewer as i32,
            bio: Some("First programmer".into()),
            ..Default::default()
        },
    );
    round_trip(
        c,
        "UpdateUserRequest",
        UpdateUserRequest {
            user_id: user(1).id,
            name: Some("Ada".into()),
            email: None,
            role: Some(UserRole::Admin as i32),
            bio: None,
            ..Default::default()
        },
    );
    round_trip(
        c,
        "DeleteUserRequest",
        DeleteUserRequest {
            user_id: user(1).id,
            ..Default::default()
        },
    );
    round_trip(
        c,
        "DeleteUserResponse",
        DeleteUserResponse {
            user: Some(user(1)),
        },
    );
    round_trip(
        c,
        "EventStreamRequest",
        EventStreamRequest {
            user_id: "*".into(),
            ..Default::default()
        },
    );
    round_trip(
        c,
        "UserEvent",
        UserEvent {
            event_type: "user_created".into(),
            user_id: user(1).id,
            payload: user(1).encode_to_vec().into(),
            timestamp: 1_795_478_467_002,
            ..Default::default()
        },
    );
}

criterion_group!(benches, messages);
criterion_main!(benches);
