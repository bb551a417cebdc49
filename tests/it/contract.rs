//! The drift guard: `proto/user_service.proto`, parsed at test time with
//! protox, against the hand-written Rust side.
//!
//! Two independent checks. The static one reads `src/pb.rs` and
//! `src/pb/{server,client}.rs` with syn and compares every message, field
//! (name, tag, type, label, presence), enum value and method (path, input,
//! output, streaming flags) with the .proto's descriptors. The dynamic one
//! encodes a filled value of every Rust message, decodes it with the .proto's
//! descriptor, and compares field by field with values only a type-exact
//! match reproduces, then re-encodes byte for byte. The fixture tests at the
//! end break the Rust side on purpose, one drift at a time, and show each
//! one caught with a message that names the field or method.

mod compare;
mod rust_side;

use std::sync::LazyLock;

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ServiceDescriptor, Value};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use usersvc::pb::*;

const PACKAGE: &str = "techoral.users.v1";

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    let root = env!("CARGO_MANIFEST_DIR");
    protox::Compiler::new([format!("{root}/proto")])
        .unwrap()
        .open_file("user_service.proto")
        .unwrap_or_else(|e| panic!("the .proto does not compile: {e:?}"))
        .descriptor_pool()
});

fn source(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn service() -> ServiceDescriptor {
    POOL.get_service_by_name(&format!("{PACKAGE}.UserService"))
        .unwrap()
}

fn message(name: &str) -> MessageDescriptor {
    POOL.get_message_by_name(&format!("{PACKAGE}.{name}"))
        .unwrap_or_else(|| panic!("message {name} is not in the .proto"))
}

fn assert_none(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "the Rust side drifted from the .proto:\n  {}",
        problems.join("\n  ")
    );
}

fn message_problems(pb_source: &str) -> Vec<String> {
    let (messages, enums) = rust_side::messages_and_enums(pb_source);
    let mut problems = compare::messages(&POOL, PACKAGE, &messages);
    problems.extend(compare::enums(&POOL, PACKAGE, &enums));
    problems
}

// ---- The static check, on the real source -------------------------------

#[test]
fn every_message_field_and_enum_value_matches_the_proto() {
    assert_none(message_problems(&source("src/pb.rs")));
}

#[test]
fn the_server_routes_exactly_the_proto_methods() {
    assert_none(compare::methods(
        &service(),
        "server",
        &rust_side::server_methods(&source("src/pb/server.rs")),
    ));
}

#[test]
fn the_client_calls_exactly_the_proto_methods() {
    assert_none(compare::methods(
        &service(),
        "client",
        &rust_side::client_methods(&source("src/pb/client.rs")),
    ));
}

#[test]
fn the_methods_table_is_the_proto_service_in_its_order() {
    use usersvc::pb::{METHODS, MethodKind};
    let proto: Vec<_> = service()
        .methods()
        .map(|m| {
            let path = format!("/{}/{}", service().full_name(), m.name());
            let streams = (m.is_client_streaming(), m.is_server_streaming());
            (m.name().to_owned(), path, streams)
        })
        .collect();
    let ours: Vec<_> = METHODS
        .iter()
        .map(|m| {
            let streams = match m.kind {
                MethodKind::Unary => (false, false),
                MethodKind::ServerStreaming => (false, true),
                MethodKind::ClientStreaming => (true, false),
                MethodKind::BidiStreaming => (true, true),
            };
            (m.name.to_owned(), m.path.to_owned(), streams)
        })
        .collect();
    assert_eq!(ours, proto);
}

#[test]
fn the_metrics_know_every_method_and_its_kind() {
    for method in service().methods() {
        let path = format!("/{}/{}", service().full_name(), method.name());
        let expected = match (method.is_client_streaming(), method.is_server_streaming()) {
            (false, false) => "unary",
            (false, true) => "server_stream",
            (true, false) => "client_stream",
            (true, true) => "bidi_stream",
        };
        assert_eq!(
            usersvc::server::metrics::grpc_type(&path),
            Some(expected),
            "{path}"
        );
    }
}

#[test]
fn enum_names_round_trip_through_the_proto_names() {
    let enumeration = POOL
        .get_enum_by_name(&format!("{PACKAGE}.UserRole"))
        .unwrap();
    for value in enumeration.values() {
        let role = UserRole::from_str_name(value.name())
            .unwrap_or_else(|| panic!("{} unknown", value.name()));
        assert_eq!(role as i32, value.number(), "{}", value.name());
        assert_eq!(role.as_str_name(), value.name());
    }
}

// ---- The dynamic check: transcoding filled values ------------------------

/// A Rust field value, and what the .proto's descriptor must read from it.
struct Sample<T> {
    rust: T,
    value: Value,
}

fn text(v: &str) -> Sample<String> {
    Sample {
        rust: v.into(),
        value: Value::String(v.into()),
    }
}
fn int64(v: i64) -> Sample<i64> {
    Sample {
        rust: v,
        value: Value::I64(v),
    }
}
fn int32(v: i32) -> Sample<i32> {
    Sample {
        rust: v,
        value: Value::I32(v),
    }
}
fn role(v: UserRole) -> Sample<i32> {
    Sample {
        rust: v as i32,
        value: Value::EnumNumber(v as i32),
    }
}
fn blob(v: &[u8]) -> Sample<Bytes> {
    Sample {
        rust: Bytes::copy_from_slice(v),
        value: Value::Bytes(Bytes::copy_from_slice(v)),
    }
}
fn present<T>(sample: Sample<T>) -> Sample<Option<T>> {
    Sample {
        rust: Some(sample.rust),
        value: sample.value,
    }
}
fn text_list(vs: &[&str]) -> Sample<Vec<String>> {
    Sample {
        rust: vs.iter().map(|v| v.to_string()).collect(),
        value: Value::List(vs.iter().map(|v| Value::String(v.to_string())).collect()),
    }
}
fn text_map(pairs: &[(&str, &str)]) -> Sample<std::collections::BTreeMap<String, String>> {
    Sample {
        rust: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value: Value::Map(
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        prost_reflect::MapKey::String(k.to_string()),
                        Value::String(v.to_string()),
                    )
                })
                .collect(),
        ),
    }
}
fn nested<M: Message>(name: &str, m: M) -> Sample<Option<M>> {
    let dynamic = DynamicMessage::decode(message(name), m.encode_to_vec().as_slice()).unwrap();
    Sample {
        rust: Some(m),
        value: Value::Message(dynamic),
    }
}
fn nested_list<M: Message>(name: &str, ms: Vec<M>) -> Sample<Vec<M>> {
    let values = ms
        .iter()
        .map(|m| {
            Value::Message(
                DynamicMessage::decode(message(name), m.encode_to_vec().as_slice()).unwrap(),
            )
        })
        .collect();
    Sample {
        rust: ms,
        value: Value::List(values),
    }
}

/// Encodes `value`, decodes it as the .proto's `proto_name`, and lists every
/// difference from `expected`, then re-encodes and compares bytes.
fn transcode<M: Message + Default + PartialEq + std::fmt::Debug>(
    proto_name: &str,
    value: &M,
    expected: Vec<(&str, Value)>,
) -> Vec<String> {
    let descriptor = message(proto_name);
    let bytes = value.encode_to_vec();
    let dynamic = match DynamicMessage::decode(descriptor.clone(), bytes.as_slice()) {
        Ok(dynamic) => dynamic,
        Err(e) => {
            return vec![format!(
                "{proto_name}: the .proto cannot decode the Rust bytes: {e}"
            )];
        }
    };
    let mut problems: Vec<String> = dynamic
        .unknown_fields()
        .map(|f| {
            format!(
                "{proto_name}: Rust wrote field number {}, which the .proto does not have",
                f.number()
            )
        })
        .collect();
    for (name, want) in &expected {
        let Some(field) = descriptor.get_field_by_name(name) else {
            problems.push(format!(
                "{proto_name}.{name} is in Rust but not in the .proto"
            ));
            continue;
        };
        if !dynamic.has_field(&field) {
            problems.push(format!(
                "{proto_name}.{name}: the .proto read nothing where Rust wrote {want:?}"
            ));
        } else if *dynamic.get_field(&field) != *want {
            problems.push(format!(
                "{proto_name}.{name}: Rust wrote {want:?}, the .proto read {:?}",
                dynamic.get_field(&field)
            ));
        }
    }
    for field in descriptor.fields() {
        if !expected.iter().any(|(name, _)| *name == field.name()) {
            problems.push(format!(
                "{proto_name}.{} is in the .proto but not in Rust",
                field.name()
            ));
        }
    }
    let again = dynamic.encode_to_vec();
    // A map's entries may be written in any order (the .proto side keeps
    // them in a hash map), so with a map the bytes may differ where the
    // message does not: compare what they decode to instead.
    let has_map = descriptor.fields().any(|field| field.is_map());
    if again != bytes && !has_map {
        problems.push(format!(
            "{proto_name}: re-encoding through the .proto changed the bytes"
        ));
    } else if M::decode(again.as_slice()).as_ref() != Ok(value) {
        problems.push(format!(
            "{proto_name}: the bytes do not decode back to the Rust value"
        ));
    }
    problems
}

/// Builds `$ty { field: sample, … }` from samples, recording what each
/// field's sample must read as under the .proto field of the same name.
macro_rules! transcode {
    ($proto:literal, $ty:ident { $($field:ident : $sample:expr),* $(,)? }) => {{
        let mut expected: Vec<(&str, Value)> = Vec::new();
        let value = $ty {
            $($field: {
                let sample = $sample;
                expected.push((stringify!($field), sample.value));
                sample.rust
            }),*
        };
        transcode($proto, &value, expected)
    }};
}

fn filled_user() -> User {
    User {
        id: "ü-1".into(),
        name: "Zoë 😈".into(),
        email: "zoe@example.com".into(),
        role: UserRole::Viewer as i32,
        created_at: -5,
        bio: Some("☺\t\r\n".into()),
        updated_at: -4,
        etag: "ë1".into(),
        labels: [("team".to_owned(), "Çore".to_owned())].into(),
    }
}

#[test]
fn every_message_transcodes_through_the_proto_field_for_field() {
    let mut problems = Vec::new();
    problems.extend(transcode!(
        "User",
        User {
            id: text("ü-1"),
            name: text("Zoë 😈"),
            email: text("zoe@example.com"),
            role: role(UserRole::Viewer),
            created_at: int64(-5),
            bio: present(text("☺\t\r\n")),
            updated_at: int64(-4),
            etag: text("ë1"),
            labels: text_map(&[("team", "Çore"), ("k8s.io/app", "")]),
        }
    ));
    problems.extend(transcode!(
        "GetUserRequest",
        GetUserRequest {
            user_id: text("ß")
        }
    ));
    problems.extend(transcode!(
        "GetUserResponse",
        GetUserResponse {
            user: nested("User", filled_user())
        }
    ));
    problems.extend(transcode!(
        "ListUsersRequest",
        ListUsersRequest {
            limit: int32(-7),
            offset: int32(-1),
            filter_role: text("ÄDMIN"),
            filter: text("name:\"ß\""),
            order_by: text("name desc"),
        }
    ));
    problems.extend(transcode!(
        "ListUsersResponse",
        ListUsersResponse {
            users: nested_list(
                "User",
                vec![
                    filled_user(),
                    User {
                        id: "2".into(),
                        ..filled_user()
                    }
                ]
            ),
            total_count: int32(-2),
        }
    ));
    problems.extend(transcode!(
        "CreateUserRequest",
        CreateUserRequest {
            name: text("Ñame"),
            email: text("n@example.com"),
            role: role(UserRole::Viewer),
            bio: present(text("bïo")),
            labels: text_map(&[("a", "1"), ("b", "ü")]),
        }
    ));
    problems.extend(transcode!(
        "UpdateUserRequest",
        UpdateUserRequest {
            user_id: text("ïd"),
            name: present(text("Nëw")),
            email: present(text("e@example.com")),
            role: present(role(UserRole::Viewer)),
            bio: present(text("")),
            etag: text("ë2"),
            set_labels: text_map(&[("team", "x")]),
            remove_labels: text_list(&["old", "é"]),
        }
    ));
    problems.extend(transcode!(
        "DeleteUserRequest",
        DeleteUserRequest {
            user_id: text("ïd"),
            etag: text("ë3"),
        }
    ));
    problems.extend(transcode!(
        "DeleteUserResponse",
        DeleteUserResponse {
            user: nested("User", filled_user())
        }
    ));
    problems.extend(transcode!(
        "EventStreamRequest",
        EventStreamRequest {
            user_id: text("*"),
            resume_after: int64(-3),
        }
    ));
    problems.extend(transcode!(
        "UserEvent",
        UserEvent {
            event_type: text("user_créated"),
            user_id: text("ü-1"),
            payload: blob(&[0xff, 0x00, 0xfe]),
            timestamp: int64(-1_700_000_000_000),
            sequence: int64(9_007_199_254_740_993),
        }
    ));
    problems.extend(transcode!(
        "SubscribeUserEventsRequest",
        SubscribeUserEventsRequest {
            user_ids: text_list(&["*", "0190c0de-0000-7000-8000-000000000000", "é"]),
            resume_after: int64(42),
        }
    ));
    problems.extend(transcode!(
        "SearchUsersRequest",
        SearchUsersRequest {
            filter: text("labels.team = \"Çore\""),
            order_by: text("created_at desc, name"),
            page_size: int32(-3),
            page_token: text("tökén"),
        }
    ));
    problems.extend(transcode!(
        "SearchUsersResponse",
        SearchUsersResponse {
            users: nested_list("User", vec![filled_user()]),
            next_page_token: text("nëxt"),
            total_size: int32(-9),
            sequence: int64(7),
        }
    ));
    assert_none(problems);
}

#[test]
fn the_transcoding_check_covers_every_proto_message() {
    let checked = [
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
        "SubscribeUserEventsRequest",
        "SearchUsersRequest",
        "SearchUsersResponse",
    ];
    let mut proto: Vec<String> = POOL
        .all_messages()
        .filter(|m| m.package_name() == PACKAGE && !m.is_map_entry())
        .map(|m| m.name().to_owned())
        .collect();
    proto.sort();
    let mut checked: Vec<String> = checked.iter().map(|s| s.to_string()).collect();
    checked.sort();
    assert_eq!(
        checked, proto,
        "a message was added to the .proto: add it to the transcoding check"
    );
}

// ---- The running server answers every proto method ----------------------

/// Sends and receives raw message bytes, to reach any path.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// The status of one call on `path` with one empty message.
async fn poke(app: &crate::support::TestApp, path: String) -> Code {
    let channel = tonic::transport::Channel::from_shared(app.url())
        .unwrap()
        .connect_lazy();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let token = crate::support::token(usersvc::domain::Role::Admin);
    let request = crate::support::with_token(tokio_stream::iter(vec![Vec::new()]), &token);
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    match grpc.streaming(request, path, RawCodec).await {
        Ok(response) => match response.into_inner().message().await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        },
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn the_running_server_answers_every_proto_method_and_only_those() {
    let app = crate::support::spawn_app().await;
    for method in service().methods() {
        let code = poke(
            &app,
            format!("/{}/{}", service().full_name(), method.name()),
        )
        .await;
        assert_ne!(code, Code::Unimplemented, "{} is not routed", method.name());
    }
    let code = poke(&app, format!("/{}/NotInTheProto", service().full_name())).await;
    assert_eq!(code, Code::Unimplemented);
    let code = poke(&app, "/techoral.users.v1.OtherService/GetUser".into()).await;
    assert_eq!(code, Code::Unimplemented);
}

// ---- Fixtures: each kind of drift, caught -------------------------------

/// The real `src/pb.rs` with one edit; the edit must apply.
fn pb_with(from: &str, to: &str) -> String {
    let original = source("src/pb.rs");
    assert!(
        original.contains(from),
        "fixture edit {from:?} no longer applies"
    );
    original.replacen(from, to, 1)
}

fn assert_caught(problems: Vec<String>, expected: &str) {
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "expected a problem containing {expected:?}, got {problems:#?}"
    );
}

#[test]
fn a_wrong_tag_is_caught() {
    let source = pb_with(
        "#[prost(int64, tag = \"5\")]",
        "#[prost(int64, tag = \"7\")]",
    );
    assert_caught(
        message_problems(&source),
        "User.created_at: Rust tag 7 but the .proto says 5",
    );
}

#[test]
fn int64_written_as_sint64_is_caught() {
    let source = pb_with(
        "#[prost(int64, tag = \"5\")]",
        "#[prost(sint64, tag = \"5\")]",
    );
    assert_caught(
        message_problems(&source),
        "User.created_at: Rust type sint64 but the .proto says int64",
    );
}

#[test]
fn a_lost_optional_is_caught() {
    let source = pb_with(
        "#[prost(string, optional, tag = \"6\")]\n    pub bio: Option<String>,",
        "#[prost(string, tag = \"6\")]\n    pub bio: String,",
    );
    assert_caught(
        message_problems(&source),
        "User.bio: Rust label \"\" but the .proto says \"optional\"",
    );
}

#[test]
fn a_missing_field_is_caught() {
    let source = pb_with(
        "    #[prost(string, optional, tag = \"6\")]\n    pub bio: Option<String>,\n",
        "",
    );
    assert_caught(
        message_problems(&source),
        "User.bio (tag 6) is missing from the Rust struct",
    );
}

#[test]
fn an_extra_field_and_an_extra_message_are_caught() {
    let source = pb_with(
        "pub struct GetUserRequest {",
        "pub struct Extra {}\n#[derive(Clone, PartialEq, ::prost::Message)]\npub struct GetUserRequest {\n    #[prost(bool, tag = \"9\")]\n    pub verbose: bool,",
    );
    let problems = message_problems(&source);
    assert_caught(
        problems.clone(),
        "GetUserRequest.verbose (tag 9) is not in the .proto",
    );
    assert_caught(problems, "Rust message Extra is not in the .proto");
}

#[test]
fn a_renumbered_enum_value_is_caught() {
    let source = pb_with("Viewer = 3,", "Viewer = 4,");
    assert_caught(
        message_problems(&source),
        "enum UserRole: Rust has [(\"Unspecified\", 0), (\"Admin\", 1), (\"Editor\", 2), (\"Viewer\", 4)] \
         but the .proto says [(\"Unspecified\", 0), (\"Admin\", 1), (\"Editor\", 2), (\"Viewer\", 3)]",
    );
}

#[test]
fn a_proto_message_without_a_rust_struct_is_caught() {
    let source = pb_with(
        "pub struct DeleteUserRequest {",
        "pub struct RemoveUserRequest {",
    );
    let problems = message_problems(&source);
    assert_caught(
        problems.clone(),
        "message DeleteUserRequest has no Rust struct",
    );
    assert_caught(
        problems,
        "Rust message RemoveUserRequest is not in the .proto",
    );
}

#[test]
fn a_wrong_nested_message_type_is_caught() {
    let source = pb_with(
        "pub struct GetUserResponse {\n    #[prost(message, optional, tag = \"1\")]\n    pub user: Option<User>,",
        "pub struct GetUserResponse {\n    #[prost(message, optional, tag = \"1\")]\n    pub user: Option<DeleteUserRequest>,",
    );
    assert_caught(
        message_problems(&source),
        "GetUserResponse.user: Rust holds DeleteUserRequest but the .proto says User",
    );
}

/// The real `path` with one edit; the edit must apply.
fn source_with(path: &str, from: &str, to: &str) -> String {
    let original = source(path);
    assert!(
        original.contains(from),
        "fixture edit {from:?} no longer applies to {path}"
    );
    original.replacen(from, to, 1)
}

#[test]
fn a_wrong_input_or_output_type_is_caught_on_both_sides() {
    let server = source_with(
        "src/pb/server.rs",
        "request: Request<GetUserRequest>,",
        "request: Request<DeleteUserRequest>,",
    );
    let problems = compare::methods(&service(), "server", &rust_side::server_methods(&server));
    assert_caught(
        problems,
        "server GetUser: takes DeleteUserRequest but the .proto says GetUserRequest",
    );

    let client = source_with(
        "src/pb/client.rs",
        "Result<Response<GetUserResponse>, Status> {",
        "Result<Response<DeleteUserResponse>, Status> {",
    );
    let problems = compare::methods(&service(), "client", &rust_side::client_methods(&client));
    assert_caught(
        problems,
        "client GetUser: returns DeleteUserResponse but the .proto says GetUserResponse",
    );
}

#[test]
fn an_extra_route_is_caught() {
    let server = source("src/pb/server.rs").replacen(
        "Some(Method::DeleteUser) =>",
        "Some(Method::PurgeUsers) => route!(self, req, unary, T::delete_user),\n            Some(Method::DeleteUser) =>",
        1,
    );
    let problems = compare::methods(&service(), "server", &rust_side::server_methods(&server));
    assert_caught(
        problems,
        "server /techoral.users.v1.UserService/PurgeUsers: the Rust server has it, the .proto does not",
    );
}

#[test]
fn a_wrong_streaming_flag_is_caught_on_both_sides() {
    let server = source("src/pb/server.rs").replacen(
        "route!(self, req, server_streaming, T::list_users,",
        "route!(self, req, unary, T::list_users,",
        1,
    );
    assert!(server.contains("route!(self, req, unary, T::list_users,"));
    let problems = compare::methods(&service(), "server", &rust_side::server_methods(&server));
    assert_caught(
        problems,
        "server ListUsers: handled as unary but the .proto says server_streaming",
    );

    let client = source("src/pb/client.rs").replacen(
        "request: impl IntoStreamingRequest<Message = CreateUserRequest>,",
        "request: impl IntoRequest<CreateUserRequest>,",
        1,
    );
    let problems = compare::methods(&service(), "client", &rust_side::client_methods(&client));
    assert_caught(
        problems,
        "client BulkCreateUsers: the Rust signature is unary but the .proto says client_streaming",
    );
}

/// `User` as it would be with `created_at` declared sint64: same tag, so
/// only a type-exact value check can tell.
#[derive(Clone, PartialEq, ::prost::Message)]
struct UserWithSint64 {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, tag = "3")]
    email: String,
    #[prost(enumeration = "UserRole", tag = "4")]
    role: i32,
    #[prost(sint64, tag = "5")]
    created_at: i64,
    #[prost(string, optional, tag = "6")]
    bio: Option<String>,
}

/// `EventStreamRequest` with its field as bytes: the wire type is the same.
#[derive(Clone, PartialEq, ::prost::Message)]
struct EventStreamRequestWithBytes {
    #[prost(bytes = "bytes", tag = "1")]
    user_id: Bytes,
}

#[test]
fn the_dynamic_check_catches_type_drift_that_keeps_the_tag() {
    let problems = transcode!(
        "User",
        UserWithSint64 {
            id: text("1"),
            name: text("n"),
            email: text("e@example.com"),
            role: role(UserRole::Viewer),
            created_at: int64(-5),
            bio: present(text("b")),
        }
    );
    assert_caught(
        problems,
        "User.created_at: Rust wrote I64(-5), the .proto read I64(9)",
    );

    let problems = transcode!(
        "EventStreamRequest",
        EventStreamRequestWithBytes {
            user_id: blob(&[0xff])
        }
    );
    assert_caught(
        problems,
        "EventStreamRequest: the .proto cannot decode the Rust bytes",
    );
}
