//! Server reflection: the committed descriptor is what the .proto compiles
//! to today, and what the running server describes is the .proto.

use prost::Message;
use prost_types::FileDescriptorProto;
use tokio_stream::StreamExt;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/user_service.binpb");

/// The .proto compiled now, with its comments, as the server embeds it.
fn compiled() -> Vec<u8> {
    protox::Compiler::new([concat!(env!("CARGO_MANIFEST_DIR"), "/proto")])
        .unwrap()
        .include_source_info(true)
        .open_file("user_service.proto")
        .unwrap()
        .encode_file_descriptor_set()
}

#[test]
fn the_committed_descriptor_is_what_the_proto_compiles_to() {
    let fresh = compiled();
    // Rewriting is for a developer who changed the .proto. In CI a stale
    // descriptor fails whatever the environment says.
    let update = std::env::var_os("USERSVC_UPDATE_DESCRIPTOR").is_some();
    if update && std::env::var_os("CI").is_none() {
        std::fs::write(COMMITTED, &fresh).unwrap();
    }
    let committed = std::fs::read(COMMITTED).unwrap();
    assert!(
        committed == fresh,
        "proto/user_service.binpb is stale: run `USERSVC_UPDATE_DESCRIPTOR=1 cargo test --test it reflection` outside CI"
    );
}

async fn ask(app: &crate::support::TestApp, request: MessageRequest) -> MessageResponse {
    let channel = tonic::transport::Channel::from_shared(app.url())
        .unwrap()
        .connect_lazy();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    responses
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

#[tokio::test]
async fn reflection_describes_the_proto_without_a_token() {
    let app = crate::support::spawn_app().await;

    let MessageResponse::ListServicesResponse(list) =
        ask(&app, MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "techoral.users.v1.UserService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let symbol = MessageRequest::FileContainingSymbol("techoral.users.v1.UserService".into());
    let MessageResponse::FileDescriptorResponse(files) = ask(&app, symbol).await else {
        panic!("no file")
    };
    let served = FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();

    // The .proto parsed here, independently of the committed bytes.
    let fresh = prost_types::FileDescriptorSet::decode(compiled().as_slice()).unwrap();
    let expected = fresh
        .file
        .into_iter()
        .find(|f| f.name() == "user_service.proto")
        .unwrap();
    assert_eq!(served, expected);
}

#[tokio::test]
async fn reflection_can_be_turned_off() {
    let app = crate::support::spawn_app_with(|s| s.reflection = false).await;
    let channel = tonic::transport::Channel::from_shared(app.url())
        .unwrap()
        .connect_lazy();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(channel);
    let status = match client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
    {
        Err(status) => status,
        Ok(response) => response.into_inner().next().await.unwrap().unwrap_err(),
    };
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}
