//! OpenTelemetry traces, received by an OTLP receiver in the test built on
//! `opentelemetry-proto`'s own types: over gRPC (its tonic server) and over
//! http/protobuf (its messages behind a small HTTP server). The spans are
//! checked as a collector would store them: ids, parent, name, kind,
//! attributes, status, and the store's child span.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use usersvc::domain::Role;
use usersvc::pb;
use usersvc::server::traces::{Export, Protocol, Traces};

use crate::support::process::ServerProcess;
use crate::support::{self, create_request, metrics, spawn_app_with};

/// What a receiver was sent: every span, with its resource's service name.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn take(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().unwrap();
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
    }

    /// Waits (10 s at most, far more than a healthy export needs) for a
    /// span of trace `trace_id` named `name`.
    async fn span(&self, trace_id: &[u8], name: &str) -> (String, Span) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .0
                .lock()
                .unwrap()
                .iter()
                .find(|(_, span)| span.trace_id == trace_id && span.name == name)
                .cloned();
            if let Some(found) = found {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no span {name} in trace {}; received: {:?}",
                hex(trace_id),
                self.0
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(_, s)| (s.name.clone(), hex(&s.trace_id)))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The attribute `key` of `span`, as text.
fn attribute(span: &Span, key: &str) -> String {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
        .unwrap_or_else(|| panic!("span {} has no {key}: {:?}", span.name, span.attributes));
    match value {
        Value::StringValue(text) => text,
        Value::IntValue(number) => number.to_string(),
        other => format!("{other:?}"),
    }
}

struct Receiver;

#[tonic::async_trait]
impl TraceService for ReceiverService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

struct ReceiverService(Received);

impl Receiver {
    /// An OTLP/gRPC receiver on a free port.
    async fn grpc() -> (SocketAddr, Received) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Received::default();
        let service = TraceServiceServer::new(ReceiverService(received.clone()));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (addr, received)
    }

    /// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf) on a free port.
    async fn http() -> (SocketAddr, Received) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Received::default();
        let shared = received.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let received = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let received = received.clone();
                            async move {
                                assert_eq!(request.uri().path(), "/v1/traces");
                                assert_eq!(
                                    request.headers()["content-type"],
                                    "application/x-protobuf"
                                );
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                received.take(ExportTraceServiceRequest::decode(body).unwrap());
                                let answer = ExportTraceServiceResponse::default().encode_to_vec();
                                Ok::<_, Infallible>(
                                    http::Response::builder()
                                        .header("content-type", "application/x-protobuf")
                                        .body(Full::new(bytes::Bytes::from(answer)))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, received)
    }
}

const GRPC_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const GRPC_PARENT: &str = "00f067aa0ba902b7";
const CONNECT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CONNECT_PARENT: &str = "b7ad6b7169203331";

/// A Connect JSON POST with curl, a client we did not write.
fn connect_post(url: &str, headers: &[String], body: &str) -> String {
    let mut command = std::process::Command::new("curl");
    command.args([
        "-sS",
        "-X",
        "POST",
        url,
        "-H",
        "content-type: application/json",
    ]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command.args(["-d", body]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn every_call_is_a_server_span_with_the_store_below_it_exported_over_grpc() {
    let (receiver, received) = Receiver::grpc().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{receiver}");
    let mut server = ServerProcess::start_with_env(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "directory-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        &["--store", "memory"],
        dir.path(),
    );
    let created = support::admin_client(&server.url)
        .create_user(
            create_request("Traced", "traced@example.com", pb::UserRole::Viewer),
            None,
        )
        .await
        .unwrap();

    // The library client passes on the trace its caller is in.
    let mut headers = http::HeaderMap::new();
    let traceparent = format!("00-{GRPC_TRACE}-{GRPC_PARENT}-01");
    headers.insert("traceparent", traceparent.parse().unwrap());
    headers.insert("tracestate", "vendor=opaque".parse().unwrap());
    let caller = usersvc::server::traces::parent(&headers);
    let got = {
        let _in_trace = caller.attach();
        support::client_as(&server.url, Role::Viewer)
            .get_user(&created.id)
            .await
            .unwrap()
    };
    assert_eq!(got.email, "traced@example.com");
    // Connect, from curl, with its own trace.
    let answer = connect_post(
        &format!("{}/techoral.users.v1.UserService/GetUser", server.url),
        &[
            format!("traceparent: 00-{CONNECT_TRACE}-{CONNECT_PARENT}-01"),
            format!("authorization: Bearer {}", support::token(Role::Viewer)),
        ],
        &format!(r#"{{"userId":"{}"}}"#, created.id),
    );
    assert!(answer.contains("traced@example.com"), "{answer}");

    // The CLI, in a traced script, passes on the trace it is given.
    let cli_trace = "7777cccc7777cccc7777cccc7777cccc";
    let cli_parent = "abcdef0123456789";
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_usersvc"))
        .args(["get", &created.id, "--addr", &server.url])
        .env("USERSVC_TOKEN", support::token(Role::Viewer))
        .env("TRACEPARENT", format!("00-{cli_trace}-{cli_parent}-01"))
        .output()
        .unwrap();
    assert!(cli.status.success(), "{cli:?}");

    let name = "techoral.users.v1.UserService/GetUser";
    let (_, from_cli) = received.span(&unhex(cli_trace), name).await;
    assert_eq!(hex(&from_cli.parent_span_id), cli_parent);
    for (trace, parent, system) in [
        (GRPC_TRACE, GRPC_PARENT, "grpc"),
        (CONNECT_TRACE, CONNECT_PARENT, "connect_rpc"),
    ] {
        let (service, call) = received.span(&unhex(trace), name).await;
        assert_eq!(service, "directory-under-test");
        assert_eq!(
            hex(&call.parent_span_id),
            parent,
            "{system}: the caller's span"
        );
        assert_eq!(call.kind, SpanKind::Server as i32);
        assert_eq!(attribute(&call, "rpc.system"), system);
        assert_eq!(
            attribute(&call, "rpc.service"),
            "techoral.users.v1.UserService"
        );
        assert_eq!(attribute(&call, "rpc.method"), "GetUser");
        assert_eq!(attribute(&call, "network.peer.address"), "127.0.0.1");
        let status = call.status.clone().unwrap_or_default();
        assert_eq!(status.code, 0, "{system}: OK leaves the status unset");
        let (_, store) = received.span(&unhex(trace), "get users").await;
        assert_eq!(
            store.parent_span_id, call.span_id,
            "{system}: the store call's parent"
        );
        assert_eq!(attribute(&store, "db.system.name"), "memory");
        assert_eq!(attribute(&store, "db.operation.name"), "get");
        assert!(store.start_time_unix_nano >= call.start_time_unix_nano);
        assert!(store.end_time_unix_nano <= call.end_time_unix_nano);
    }
    let (_, grpc) = received.span(&unhex(GRPC_TRACE), name).await;
    assert_eq!(attribute(&grpc, "rpc.grpc.status_code"), "0");
    assert_eq!(
        grpc.trace_state, "vendor=opaque",
        "tracestate goes on with the trace"
    );

    // A call that names no trace starts one: the create above, made by a
    // client with no span, is a root with its store call below it.
    let create = received
        .0
        .lock()
        .unwrap()
        .iter()
        .find(|(_, s)| s.name == "techoral.users.v1.UserService/CreateUser")
        .map(|(_, s)| s.clone())
        .expect("a span for CreateUser");
    assert!(create.parent_span_id.is_empty(), "a root span");
    let (_, write) = received.span(&create.trace_id, "create users").await;
    assert_eq!(
        write.parent_span_id, create.span_id,
        "the write's own task is traced"
    );

    // A user not found: the caller's error, so the status stays unset, with
    // the code in the attributes, gRPC's or Connect's.
    let missing = "0190b7c8-0000-7000-8000-000000000000";
    let lost_trace = "5555aaaa5555aaaa5555aaaa5555aaaa";
    headers.insert(
        "traceparent",
        format!("00-{lost_trace}-{GRPC_PARENT}-01").parse().unwrap(),
    );
    let caller = usersvc::server::traces::parent(&headers);
    let not_found = {
        let _in_trace = caller.attach();
        support::client_as(&server.url, Role::Viewer)
            .get_user(missing)
            .await
            .unwrap_err()
    };
    assert_eq!(not_found.code(), tonic::Code::NotFound);
    let (_, lost) = received.span(&unhex(lost_trace), name).await;
    assert_eq!(attribute(&lost, "rpc.grpc.status_code"), "5");
    assert_eq!(lost.status.unwrap_or_default().code, 0);
    let connect_lost = "6666bbbb6666bbbb6666bbbb6666bbbb";
    connect_post(
        &format!("{}/techoral.users.v1.UserService/GetUser", server.url),
        &[
            format!("traceparent: 00-{connect_lost}-{CONNECT_PARENT}-01"),
            format!("authorization: Bearer {}", support::token(Role::Viewer)),
        ],
        &format!(r#"{{"userId":"{missing}"}}"#),
    );
    let (_, lost) = received.span(&unhex(connect_lost), name).await;
    assert_eq!(attribute(&lost, "rpc.connect_rpc.error_code"), "not_found");

    // The access line names the trace.
    server.terminate();
    let (_, log) = server.wait_with_log();
    let line = log
        .iter()
        .filter(|line| line.contains("rpc finished") && line.contains("/GetUser\""))
        .find(|line| line.contains("protocol=\"grpc\""))
        .expect("an access line for GetUser");
    assert!(
        line.contains(&format!("trace_id=\"{GRPC_TRACE}\"")),
        "{line}"
    );
}

#[tokio::test]
async fn spans_go_over_http_protobuf_and_a_collector_that_is_down_costs_calls_nothing() {
    let (receiver, received) = Receiver::http().await;
    let traces = Traces::start(&Export {
        endpoint: format!("http://{receiver}/v1/traces"),
        protocol: Protocol::HttpProtobuf,
    })
    .unwrap();
    let app = spawn_app_with(|s| s.traces = Some(traces.clone())).await;
    let mut client = app.raw();
    let mut request = tonic::Request::new(pb::ListUsersRequest::default());
    let trace = "11112222333344445555666677778888";
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-1234567890abcdef-01").parse().unwrap(),
    );
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", support::token(Role::Admin))
            .parse()
            .unwrap(),
    );
    let mut stream = client.list_users(request).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
    drop(stream);
    let flushing = traces.clone();
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .unwrap();
    let (service, call) = received
        .span(&unhex(trace), "techoral.users.v1.UserService/ListUsers")
        .await;
    assert_eq!(service, "usersvc", "the default service name");
    assert_eq!(attribute(&call, "rpc.grpc.status_code"), "0");
    let (_, page) = received.span(&unhex(trace), "list_page users").await;
    assert_eq!(
        page.parent_span_id, call.span_id,
        "a stream's store calls too"
    );
    app.stop().await;

    tokio::task::spawn_blocking(move || traces.shutdown())
        .await
        .unwrap();

    // A collector that takes connections and never answers: the calls do
    // not wait on it (each has 5 s, half an export's timeout), and once
    // the exports have failed the spans are counted as dropped.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nowhere = silent.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let holding = Arc::clone(&held);
    tokio::spawn(async move {
        while let Ok((stream, _)) = silent.accept().await {
            holding.lock().unwrap().push(stream);
        }
    });
    let traces = Traces::start(&Export {
        endpoint: format!("http://{nowhere}/v1/traces"),
        protocol: Protocol::HttpProtobuf,
    })
    .unwrap();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let app = spawn_app_with(|s| {
        s.traces = Some(traces.clone());
        s.metrics_listener = Some(Arc::new(metrics_listener));
    })
    .await;
    let before = metrics::value(
        &metrics::scrape(metrics_addr).await,
        "usersvc_trace_spans_dropped_total",
    );
    let mut config = usersvc::client::ClientConfig::new(app.url());
    config.token = Some(support::token(Role::Admin));
    config.timeout = Some(Duration::from_secs(5));
    let admin = usersvc::client::Client::new(config).unwrap();
    for i in 0..20 {
        admin
            .create_user(
                create_request(
                    "Untraced",
                    &format!("u{i}@example.com"),
                    pb::UserRole::Viewer,
                ),
                None,
            )
            .await
            .unwrap();
    }
    // The exports fail when their post times out (10 s): wait for the
    // count, for up to three of those.
    let flushing = traces.clone();
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(35);
    let mut after = before;
    while after - before < 40.0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = metrics::value(
            &metrics::scrape(metrics_addr).await,
            "usersvc_trace_spans_dropped_total",
        );
    }
    // Each create is a server span and a store span.
    assert!(after - before >= 40.0, "dropped {before} → {after}");
    app.stop().await;
    tokio::task::spawn_blocking(move || traces.shutdown())
        .await
        .unwrap();
}
