//! Exact bytes of every message, worked out by hand from the protobuf
//! encoding rules, so that a wrong tag, type or presence in `src/pb.rs`
//! changes bytes a test pins down.

use prost::Message;
use usersvc::pb::*;

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Encodes `value`, compares with `expected` (hex), and decodes it back.
fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(value: M, expected: &str) {
    let encoded = value.encode_to_vec();
    assert_eq!(hex(&encoded), expected, "{value:?}");
    assert_eq!(M::decode(encoded.as_slice()).unwrap(), value);
}

/// -1 and -2 as int64/int32 varints: ten bytes, sign-extended.
const MINUS_ONE: &str = "ff ff ff ff ff ff ff ff ff 01";
const MINUS_TWO: &str = "fe ff ff ff ff ff ff ff ff 01";

#[test]
fn user_with_negative_created_at_and_empty_bio_present() {
    let user = User {
        id: "u1".into(),
        name: "Al".into(),
        email: "a@b.co".into(),
        role: UserRole::Admin as i32,
        created_at: -1,
        bio: Some(String::new()),
        ..Default::default()
    };
    assert_wire(
        user,
        &format!("0a 02 75 31 12 02 41 6c 1a 06 61 40 62 2e 63 6f 20 01 28 {MINUS_ONE} 32 00"),
    );
}

#[test]
fn user_with_bio_absent_writes_nothing_for_it() {
    let user = User {
        id: "u".into(),
        bio: None,
        ..Default::default()
    };
    assert_wire(user, "0a 01 75");
}

#[test]
fn unknown_enum_value_survives_a_round_trip() {
    let user = User {
        role: 7,
        ..Default::default()
    };
    assert_wire(user.clone(), "20 07");
    assert!(UserRole::try_from(user.role).is_err());
}

#[test]
fn get_user_request_and_response() {
    assert_wire(
        GetUserRequest {
            user_id: "x".into(),
        },
        "0a 01 78",
    );
    let response = GetUserResponse {
        user: Some(User {
            id: "x".into(),
            ..Default::default()
        }),
    };
    assert_wire(response, "0a 03 0a 01 78");
    assert_wire(GetUserResponse { user: None }, "");
}

#[test]
fn list_users_request_with_negative_offset() {
    let request = ListUsersRequest {
        limit: 10,
        offset: -1,
        filter_role: "admin".into(),
        ..Default::default()
    };
    assert_wire(
        request,
        &format!("08 0a 10 {MINUS_ONE} 1a 05 61 64 6d 69 6e"),
    );
}

#[test]
fn list_users_response_repeats_users() {
    let response = ListUsersResponse {
        users: vec![
            User {
                id: "a".into(),
                ..Default::default()
            },
            User {
                id: "b".into(),
                ..Default::default()
            },
        ],
        total_count: 2,
    };
    assert_wire(response, "0a 03 0a 01 61 0a 03 0a 01 62 10 02");
}

#[test]
fn create_user_request_with_and_without_bio() {
    let request = CreateUserRequest {
        name: "N".into(),
        email: "e".into(),
        role: UserRole::Viewer as i32,
        bio: None,
        ..Default::default()
    };
    assert_wire(request.clone(), "0a 01 4e 12 01 65 18 03");
    assert_wire(
        CreateUserRequest {
            bio: Some("b".into()),
            ..request
        },
        "0a 01 4e 12 01 65 18 03 22 01 62",
    );
}

#[test]
fn update_user_request_writes_present_fields_even_when_empty() {
    let request = UpdateUserRequest {
        user_id: "u".into(),
        name: None,
        email: Some(String::new()),
        role: Some(UserRole::Unspecified as i32),
        bio: Some("x".into()),
        ..Default::default()
    };
    assert_wire(request, "0a 01 75 1a 00 20 00 2a 01 78");
}

#[test]
fn delete_user_request_and_response() {
    assert_wire(
        DeleteUserRequest {
            user_id: "u".into(),
            ..Default::default()
        },
        "0a 01 75",
    );
    assert_wire(
        DeleteUserResponse {
            user: Some(User::default()),
        },
        "0a 00",
    );
}

#[test]
fn event_messages_with_binary_payload_and_negative_timestamp() {
    assert_wire(
        EventStreamRequest {
            user_id: "*".into(),
            ..Default::default()
        },
        "0a 01 2a",
    );
    let event = UserEvent {
        event_type: "e".into(),
        user_id: "u".into(),
        payload: vec![0xff, 0x00].into(),
        timestamp: -2,
        ..Default::default()
    };
    assert_wire(
        event,
        &format!("0a 01 65 12 01 75 1a 02 ff 00 20 {MINUS_TWO}"),
    );
}

#[test]
fn unknown_fields_are_skipped_when_decoding() {
    // GetUserRequest{user_id:"x"} followed by field 9 (varint 5), which a
    // newer client might send.
    let bytes = [0x0a, 0x01, 0x78, 0x48, 0x05];
    let decoded = GetUserRequest::decode(&bytes[..]).unwrap();
    assert_eq!(decoded.user_id, "x");
}
