//! Canonical proto3 JSON for every message of the contract, read at run
//! time from the committed descriptor set, so that a change to the .proto
//! needs no JSON code: lowerCamelCase names out, both spellings in, int64 as
//! a string, enums by name (numbers accepted), unknown fields refused.

use std::collections::HashMap;
use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor};
use prost_reflect::{SerializeOptions, Value};
use tonic::Status;

use crate::server::reflection::USER_SERVICE_DESCRIPTOR;

/// What the web protocols need to know of one method.
#[derive(Clone, Debug)]
pub struct MethodSchema {
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
    pub client_streaming: bool,
    pub server_streaming: bool,
    /// `idempotency_level = NO_SIDE_EFFECTS`: Connect may send it as a GET.
    pub no_side_effects: bool,
}

/// Every method of the contract, by its path.
static METHODS: LazyLock<HashMap<String, MethodSchema>> = LazyLock::new(|| {
    let pool = DescriptorPool::decode(USER_SERVICE_DESCRIPTOR)
        .expect("the embedded descriptor set is valid");
    pool.services()
        .flat_map(|service| service.methods().collect::<Vec<_>>())
        .map(|method| {
            let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
            // NO_SIDE_EFFECTS is 1 in google.protobuf.MethodOptions.IdempotencyLevel.
            let no_side_effects = matches!(
                method
                    .options()
                    .get_field_by_name("idempotency_level")
                    .as_deref(),
                Some(Value::EnumNumber(1))
            );
            let schema = MethodSchema {
                input: method.input(),
                output: method.output(),
                client_streaming: method.is_client_streaming(),
                server_streaming: method.is_server_streaming(),
                no_side_effects,
            };
            (path, schema)
        })
        .collect()
});

/// The method at `path`, if the contract has it.
pub fn method(path: &str) -> Option<&'static MethodSchema> {
    METHODS.get(path)
}

/// A JSON message, as the binary one. Malformed JSON, a wrong type or an
/// unknown field is INVALID_ARGUMENT, with serde's words for where.
pub fn to_binary(message: &MessageDescriptor, json: &[u8]) -> Result<Vec<u8>, Status> {
    let refused = |e: serde_json::Error| {
        Status::invalid_argument(format!("invalid JSON {}: {e}", message.name()))
    };
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let dynamic = DynamicMessage::deserialize_with_options(
        message.clone(),
        &mut deserializer,
        &DeserializeOptions::new(),
    )
    .map_err(refused)?;
    deserializer.end().map_err(refused)?;
    Ok(dynamic.encode_to_vec())
}

/// A binary message, as JSON. The server wrote it, so a failure is ours:
/// INTERNAL.
pub fn to_json(message: &MessageDescriptor, binary: &[u8]) -> Result<Vec<u8>, Status> {
    let dynamic = DynamicMessage::decode(message.clone(), binary)
        .map_err(|e| Status::internal(format!("cannot decode {}: {e}", message.name())))?;
    let mut json = Vec::with_capacity(binary.len() * 2);
    let mut serializer = serde_json::Serializer::new(&mut json);
    dynamic
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .map_err(|e| Status::internal(format!("cannot write {} as JSON: {e}", message.name())))?;
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn schema(name: &str) -> &'static MethodSchema {
        method(&format!("/techoral.users.v1.UserService/{name}")).unwrap()
    }

    #[test]
    fn every_method_of_the_contract_is_known_with_its_kind() {
        for info in pb::METHODS {
            let schema = method(info.path).unwrap_or_else(|| panic!("{}", info.name));
            let kind = match (schema.client_streaming, schema.server_streaming) {
                (false, false) => pb::MethodKind::Unary,
                (false, true) => pb::MethodKind::ServerStreaming,
                (true, false) => pb::MethodKind::ClientStreaming,
                (true, true) => pb::MethodKind::BidiStreaming,
            };
            assert_eq!(kind, info.kind, "{}", info.name);
        }
        assert!(schema("GetUser").no_side_effects);
        assert!(!schema("CreateUser").no_side_effects);
    }

    #[test]
    fn json_is_canonical_out_and_lenient_in() {
        let user = pb::User {
            id: "u1".into(),
            name: "Zoë".into(),
            email: "zoe@example.com".into(),
            role: pb::UserRole::Editor as i32,
            created_at: 1_700_000_000_123,
            bio: Some(String::new()),
            ..Default::default()
        };
        let json = to_json(&schema("CreateUser").output, &user.encode_to_vec()).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "u1", "name": "Zoë", "email": "zoe@example.com",
                "role": "USER_ROLE_EDITOR", "createdAt": "1700000000123", "bio": ""
            })
        );

        let input = &schema("ListUsers").input;
        let camel = to_binary(input, br#"{"limit": 3, "filterRole": "admin"}"#);
        let snake = to_binary(input, br#"{"limit": 3, "filter_role": "admin"}"#);
        assert!(camel.is_ok(), "{camel:?}");
        assert_eq!(camel.unwrap(), snake.unwrap());
        let create = &schema("CreateUser").input;
        let by_name = to_binary(create, br#"{"name": "A", "role": "USER_ROLE_ADMIN"}"#);
        let by_number = to_binary(create, br#"{"name": "A", "role": 1}"#);
        assert_eq!(by_name.unwrap(), by_number.unwrap());

        let unknown = to_binary(input, br#"{"limit": 3, "colour": "red"}"#).unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
        assert!(
            unknown.message().contains("colour"),
            "{}",
            unknown.message()
        );
    }
}
