//! Server reflection (`grpc.reflection.v1` and `v1alpha`), so grpcurl,
//! Postman and other dynamic clients can discover and call the API.
//!
//! Reflection serves descriptors, and without protoc something must make
//! them. We commit `proto/user_service.binpb`, the encoded descriptor set of
//! the .proto (with its comments), and embed it here. `tests/reflection.rs`
//! rebuilds it from the .proto with protox and fails if the committed bytes
//! differ, so it cannot go stale; protox stays a dev-dependency, and the
//! server does no parsing at start. (A descriptor built by hand in Rust would
//! be one more copy of the contract to keep in step.)

use tonic_reflection::server::{v1, v1alpha};

/// The encoded `FileDescriptorSet` of `proto/user_service.proto`.
pub const USER_SERVICE_DESCRIPTOR: &[u8] = include_bytes!("../../proto/user_service.binpb");

/// The reflection services, v1 and v1alpha, describing UserService and
/// the health service.
pub fn services() -> (
    v1::ServerReflectionServer<impl v1::ServerReflection>,
    v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
) {
    let configure = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(USER_SERVICE_DESCRIPTOR)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = configure()
        .build_v1()
        .expect("the embedded descriptors are valid");
    let v1alpha = configure()
        .build_v1alpha()
        .expect("the embedded descriptors are valid");
    (v1, v1alpha)
}
