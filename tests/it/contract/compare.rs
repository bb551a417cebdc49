//! Compares what the Rust side declares with the .proto's descriptors.
//! Each problem is one line that names the message and field, or the method.

use prost_reflect::{
    DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, ServiceDescriptor,
};

use super::rust_side::{RustEnum, RustMessage, RustMethod};

/// The prost attribute a field of this descriptor must carry.
fn expected_kind(field: &FieldDescriptor) -> String {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            unreachable!("a map field's kind is its entry message");
        };
        let key = expected_kind(&entry.map_entry_key_field());
        let value = expected_kind(&entry.map_entry_value_field());
        return format!("map<{key},{value}>");
    }
    match field.kind() {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Message(_) => "message".into(),
        Kind::Enum(e) => format!("enumeration={}", e.name()),
    }
}

/// `repeated`, `optional` (proto3 `optional`, and every message field, which
/// prost always carries as `Option`), or empty.
fn expected_label(field: &FieldDescriptor) -> &'static str {
    if field.is_list() {
        "repeated"
    } else if field.supports_presence() {
        "optional"
    } else {
        ""
    }
}

pub fn messages(pool: &DescriptorPool, package: &str, rust: &[RustMessage]) -> Vec<String> {
    let mut problems = Vec::new();
    let proto: Vec<MessageDescriptor> = pool
        .all_messages()
        .filter(|m| m.package_name() == package && !m.is_map_entry())
        .collect();
    for message in &proto {
        let Some(ours) = rust.iter().find(|r| r.name == message.name()) else {
            problems.push(format!("message {} has no Rust struct", message.name()));
            continue;
        };
        for field in message.fields() {
            let at = format!("{}.{}", message.name(), field.name());
            let Some(mine) = ours.fields.iter().find(|f| f.name == field.name()) else {
                problems.push(format!(
                    "{at} (tag {}) is missing from the Rust struct",
                    field.number()
                ));
                continue;
            };
            if mine.tag != field.number() {
                problems.push(format!(
                    "{at}: Rust tag {} but the .proto says {}",
                    mine.tag,
                    field.number()
                ));
            }
            let kind = expected_kind(&field);
            if mine.kind != kind {
                problems.push(format!(
                    "{at}: Rust type {} but the .proto says {kind}",
                    mine.kind
                ));
            }
            let label = expected_label(&field);
            if mine.label != label {
                problems.push(format!(
                    "{at}: Rust label {:?} but the .proto says {label:?}",
                    mine.label
                ));
            }
            if let Kind::Message(inner) = field.kind()
                && !field.is_map()
                && mine.type_name != inner.name()
            {
                problems.push(format!(
                    "{at}: Rust holds {} but the .proto says {}",
                    mine.type_name,
                    inner.name()
                ));
            }
        }
        for mine in &ours.fields {
            if message.get_field_by_name(&mine.name).is_none() {
                problems.push(format!(
                    "{}.{} (tag {}) is not in the .proto",
                    ours.name, mine.name, mine.tag
                ));
            }
        }
    }
    for ours in rust {
        if !proto.iter().any(|m| m.name() == ours.name) {
            problems.push(format!("Rust message {} is not in the .proto", ours.name));
        }
    }
    problems
}

/// `USER_ROLE_ADMIN` in enum `UserRole` is prost's `Admin`.
fn rust_variant_name(enumeration: &EnumDescriptor, value: &str) -> String {
    let mut prefix = String::new();
    for (i, c) in enumeration.name().chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            prefix.push('_');
        }
        prefix.push(c.to_ascii_uppercase());
    }
    let bare = value.strip_prefix(&format!("{prefix}_")).unwrap_or(value);
    bare.split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_string() + &chars.as_str().to_lowercase()
            })
        })
        .collect()
}

pub fn enums(pool: &DescriptorPool, package: &str, rust: &[RustEnum]) -> Vec<String> {
    let mut problems = Vec::new();
    let proto: Vec<EnumDescriptor> = pool
        .all_enums()
        .filter(|e| e.package_name() == package)
        .collect();
    for enumeration in &proto {
        let Some(ours) = rust.iter().find(|r| r.name == enumeration.name()) else {
            problems.push(format!("enum {} has no Rust enum", enumeration.name()));
            continue;
        };
        let expected: Vec<(String, i64)> = enumeration
            .values()
            .map(|v| {
                (
                    rust_variant_name(enumeration, v.name()),
                    i64::from(v.number()),
                )
            })
            .collect();
        if ours.variants != expected {
            problems.push(format!(
                "enum {}: Rust has {:?} but the .proto says {:?}",
                ours.name, ours.variants, expected
            ));
        }
    }
    for ours in rust {
        if !proto.iter().any(|e| e.name() == ours.name) {
            problems.push(format!("Rust enum {} is not in the .proto", ours.name));
        }
    }
    problems
}

fn kind_of(client_streaming: bool, server_streaming: bool) -> &'static str {
    match (client_streaming, server_streaming) {
        (false, false) => "unary",
        (false, true) => "server_streaming",
        (true, false) => "client_streaming",
        (true, true) => "streaming",
    }
}

/// `side` is "server" or "client", for the messages.
pub fn methods(service: &ServiceDescriptor, side: &str, rust: &[RustMethod]) -> Vec<String> {
    let mut problems = Vec::new();
    for method in service.methods() {
        let at = format!("{side} {}", method.name());
        let path = format!("/{}/{}", service.full_name(), method.name());
        let Some(ours) = rust.iter().find(|r| r.name == path) else {
            problems.push(format!("{at}: the .proto has it, the Rust {side} does not"));
            continue;
        };
        let expected = kind_of(method.is_client_streaming(), method.is_server_streaming());
        let declared = kind_of(ours.client_streaming, ours.server_streaming);
        if declared != expected {
            problems.push(format!(
                "{at}: the Rust signature is {declared} but the .proto says {expected}"
            ));
        }
        if ours.via != expected {
            problems.push(format!(
                "{at}: handled as {} but the .proto says {expected}",
                ours.via
            ));
        }
        if ours.input != method.input().name() {
            problems.push(format!(
                "{at}: takes {} but the .proto says {}",
                ours.input,
                method.input().name()
            ));
        }
        if ours.output != method.output().name() {
            problems.push(format!(
                "{at}: returns {} but the .proto says {}",
                ours.output,
                method.output().name()
            ));
        }
    }
    for ours in rust {
        if service
            .methods()
            .all(|m| format!("/{}/{}", service.full_name(), m.name()) != ours.name)
        {
            problems.push(format!(
                "{side} {}: the Rust {side} has it, the .proto does not",
                ours.name
            ));
        }
    }
    problems
}
