//! Prometheus metrics, on an admin address of their own (`--metrics-addr`).
//!
//! The names and labels are go-grpc-prometheus's, so existing gRPC
//! dashboards and alerts work unchanged: `grpc_server_started_total`,
//! `grpc_server_handled_total` (by `grpc_code`), `grpc_server_handling_seconds`,
//! `grpc_server_msg_received_total` and `grpc_server_msg_sent_total`, each by
//! `grpc_type`, `grpc_service` and `grpc_method`. Ours add
//! `usersvc_watch_streams_open` and `usersvc_store_errors_total`.
//! The telemetry layer feeds the call metrics, so every RPC kind is counted.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use http_body_util::Full;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::Code;

use crate::domain::{Filter, NewUser, User, UserId, UserPatch};
use crate::events::{Event, EventBus};
use crate::pb::{METHODS, MethodKind};
use crate::server::web::Protocol;
use crate::store::{Created, IdempotencyKey, Interest, Page, PageQuery, StoreError, UserStore};

/// The methods of the other services this server has (health and
/// reflection), with their go-grpc-prometheus `grpc_type`. UserService's
/// come from `pb::METHODS`.
const OTHER_METHODS: &[(&str, &str)] = &[
    ("/grpc.health.v1.Health/Check", "unary"),
    ("/grpc.health.v1.Health/Watch", "server_stream"),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "bidi_stream",
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "bidi_stream",
    ),
];

/// go-grpc-prometheus's name for a kind of method.
fn type_label(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Unary => "unary",
        MethodKind::ServerStreaming => "server_stream",
        MethodKind::ClientStreaming => "client_stream",
        MethodKind::BidiStreaming => "bidi_stream",
    }
}

/// Every method this server has, with its `grpc_type`: UserService's, then
/// the others'.
fn served() -> impl Iterator<Item = (&'static str, &'static str)> {
    METHODS
        .iter()
        .map(|m| (m.path, type_label(m.kind)))
        .chain(OTHER_METHODS.iter().copied())
}

/// The path and `grpc_type` of the method counted as `series`.
fn served_at(series: Series) -> (&'static str, &'static str) {
    served().nth(series.method).expect("a served method")
}

/// The `grpc_type` of the method at `path`; `None` for a path this server
/// does not serve, which is not counted (as go-grpc-prometheus does not).
pub fn grpc_type(path: &str) -> Option<&'static str> {
    served().find(|(p, _)| *p == path).map(|(_, t)| t)
}

/// A code as Go's `codes.Code.String()` spells it: `OK`, `NotFound`.
fn code_label(code: Code) -> String {
    match code {
        Code::Ok => "OK".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The labels of one series: type, service, method, protocol.
fn labels(series: Series) -> [&'static str; 4] {
    let (path, kind) = served_at(series);
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .expect("a served path");
    [kind, service, method, series.protocol.label()]
}

/// The series of a method this server serves, as found once when its call
/// starts.
#[derive(Clone, Copy, Debug)]
pub struct Series {
    method: usize,
    protocol: Protocol,
}

/// The protocols a call may come in, each a value of the `protocol` label.
const PROTOCOLS: [Protocol; 3] = [Protocol::Grpc, Protocol::GrpcWeb, Protocol::Connect];

impl Series {
    fn index(self) -> usize {
        let protocol = PROTOCOLS
            .iter()
            .position(|p| *p == self.protocol)
            .expect("a known protocol");
        self.method * PROTOCOLS.len() + protocol
    }
}

/// gRPC has 17 codes, 0 to 16.
const CODES: usize = 17;

/// One method's series. Resolving them by label takes a hash and a lock,
/// which on every call cost GetUser about 2% (see BENCHMARKS.md); here they
/// are resolved on a method's first call, and a code's on its first use,
/// so that only what has happened is exported, as before.
#[derive(Default)]
struct MethodSeries {
    calls: OnceLock<CallSeries>,
    handled: [OnceLock<IntCounter>; CODES],
}

struct CallSeries {
    started: IntCounter,
    handling: Histogram,
    received: IntCounter,
    sent: IntCounter,
}

pub struct Metrics {
    registry: Registry,
    started: IntCounterVec,
    handled: IntCounterVec,
    handling: HistogramVec,
    received: IntCounterVec,
    sent: IntCounterVec,
    watch_streams: IntGauge,
    store_errors: IntCounterVec,
    methods: Vec<MethodSeries>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let call = ["grpc_type", "grpc_service", "grpc_method", "protocol"];
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(counter.clone()))
                .expect("registered once");
            counter
        };
        let started = counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            &call,
        );
        let handled = counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            &[
                "grpc_type",
                "grpc_service",
                "grpc_method",
                "protocol",
                "grpc_code",
            ],
        );
        let received = counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            &call,
        );
        let sent = counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            &call,
        );
        let store_errors = counter(
            "usersvc_store_errors_total",
            "Store calls that failed: unavailable (worth a retry) or internal.",
            &["kind"],
        );
        let handling = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            ),
            &call,
        )
        .expect("valid metric");
        registry
            .register(Box::new(handling.clone()))
            .expect("registered once");
        let watch_streams = IntGauge::new(
            "usersvc_watch_streams_open",
            "WatchUserEvents streams open now.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(watch_streams.clone()))
            .expect("registered once");
        registry
            .register(Box::new(super::logging::DROPPED_LINES.clone()))
            .expect("registered once");
        registry
            .register(Box::new(super::logging::WAITING_LINES.clone()))
            .expect("registered once");
        registry
            .register(Box::new(super::connections::REFUSED_CONNECTIONS.clone()))
            .expect("registered once");
        registry
            .register(Box::new(super::layers::request_memory::HELD_BYTES.clone()))
            .expect("registered once");
        for jwks in [
            Box::new(crate::auth::jwks::refresh::FETCH_FAILURES.clone())
                as Box<dyn prometheus::core::Collector>,
            Box::new(crate::auth::jwks::refresh::KEYS.clone()),
            Box::new(crate::auth::jwks::refresh::LAST_SUCCESS.clone()),
            Box::new(super::traces::DROPPED_SPANS.clone()),
        ] {
            registry.register(jwks).expect("registered once");
        }
        Arc::new(Self {
            registry,
            started,
            handled,
            handling,
            received,
            sent,
            watch_streams,
            store_errors,
            methods: served()
                .flat_map(|_| PROTOCOLS.map(|_| MethodSeries::default()))
                .collect(),
        })
    }

    /// The method at `path`; `None` for a path this server does not serve,
    /// which is not counted (as go-grpc-prometheus does not).
    pub fn series(path: &str, protocol: Protocol) -> Option<Series> {
        let method = served().position(|(p, _)| p == path)?;
        Some(Series { method, protocol })
    }

    fn calls(&self, method: Series) -> &CallSeries {
        self.methods[method.index()].calls.get_or_init(|| {
            let labels = labels(method);
            CallSeries {
                started: self.started.with_label_values(&labels),
                handling: self.handling.with_label_values(&labels),
                received: self.received.with_label_values(&labels),
                sent: self.sent.with_label_values(&labels),
            }
        })
    }

    pub fn call_started(&self, method: Series) {
        self.calls(method).started.inc();
    }

    /// Counts messages as they pass, as go-grpc-prometheus does, so that a
    /// long stream's progress shows while it runs.
    pub fn messages(&self, method: Series, inbound: bool, count: u64) {
        let calls = self.calls(method);
        let counter = if inbound {
            &calls.received
        } else {
            &calls.sent
        };
        counter.inc_by(count);
    }

    pub fn call_finished(&self, method: Series, code: Code, elapsed: Duration) {
        let calls = self.calls(method);
        calls.handling.observe(elapsed.as_secs_f64());
        // A `Code`'s value is its number, 0 to 16.
        let handled = self.methods[method.index()].handled[code as usize].get_or_init(|| {
            let [kind, service, name, protocol] = labels(method);
            self.handled
                .with_label_values(&[kind, service, name, protocol, &code_label(code)])
        });
        handled.inc();
    }

    /// The text exposition format, with the open watch streams counted now.
    pub fn render(&self, events: &EventBus) -> String {
        self.watch_streams
            .set(i64::try_from(events.watchers()).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    fn store_failed(&self, error: &StoreError) {
        match error {
            StoreError::Unavailable(_) => {
                self.store_errors.with_label_values(&["unavailable"]).inc()
            }
            StoreError::Internal(_) => self.store_errors.with_label_values(&["internal"]).inc(),
            _ => {}
        }
    }
}

/// How long a scraper may take to send a request's headers before its
/// connection is closed: a client that trickles them (slowloris) holds a
/// connection for no longer than this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Metrics connections open at once; one more is closed as it arrives. A
/// Prometheus server needs one.
const MAX_CONNECTIONS: usize = 32;

/// Serves the metrics on a thread and runtime of their own, so that they
/// answer even while the server's runtime is held up (by a stalled log
/// sink, say): that is when they are wanted most. A listener shared with
/// others stays on the caller's runtime.
pub fn spawn(
    listener: Arc<TcpListener>,
    metrics: Arc<Metrics>,
    events: EventBus,
    stopping: watch::Receiver<bool>,
) {
    let listener = match Arc::try_unwrap(listener).map(|l| l.into_std()) {
        Ok(Ok(listener)) => listener,
        Ok(Err(error)) => {
            tracing::warn!(%error, "the metrics listener cannot move to its own thread");
            return;
        }
        Err(shared) => {
            tokio::spawn(serve(shared, metrics, events, stopping));
            return;
        }
    };
    let started = std::thread::Builder::new()
        .name("usersvc-metrics".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the metrics");
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(Arc::new(listener), metrics, events, stopping).await,
                    Err(error) => tracing::warn!(%error, "the metrics listener failed"),
                }
            });
        });
    if let Err(error) = started {
        tracing::warn!(%error, "the metrics thread did not start");
    }
}

/// Serves `GET /metrics` (any path, in fact) on `listener` until `stopping`.
///
/// It is an admin endpoint, but reachable by whoever can reach its address,
/// so it is bounded as the main port is: a header-read timeout, a cap on
/// connections, and a pause after a failed accept, which is how running
/// out of file descriptors shows (without it, a busy loop of warnings).
async fn serve(
    listener: Arc<TcpListener>,
    metrics: Arc<Metrics>,
    events: EventBus,
    mut stopping: watch::Receiver<bool>,
) {
    use hyper::service::service_fn;
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut pause = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|stopping| *stopping) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                pause = Duration::ZERO;
                stream
            }
            Err(error) => {
                pause = (pause * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tracing::warn!(%error, ?pause, "metrics listener failed to accept; pausing");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&open).try_acquire_owned() else {
            // Dropped, so closed: the cap is reached.
            continue;
        };
        let (metrics, events) = (Arc::clone(&metrics), events.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let respond = service_fn(move |_request| {
                let body = metrics.render(&events);
                async move {
                    let response = http::Response::builder()
                        .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                        .body(Full::new(bytes::Bytes::from(body)))
                        .expect("a valid response");
                    Ok::<_, Infallible>(response)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(io, respond)
                .await;
        });
    }
}

/// A store that counts its failures in `usersvc_store_errors_total`.
pub struct MeteredStore {
    inner: Arc<dyn UserStore>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn UserStore>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn observe<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(error) = &result {
            self.metrics.store_failed(error);
        }
        result
    }
}

#[async_trait]
impl UserStore for MeteredStore {
    fn events(&self) -> &EventBus {
        self.inner.events()
    }
    fn system_name(&self) -> &'static str {
        self.inner.system_name()
    }
    async fn check(&self) -> Result<(), StoreError> {
        self.inner.check().await
    }
    async fn create(
        &self,
        user: NewUser,
        key: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        self.observe(self.inner.create(user, key).await)
    }
    async fn create_many(&self, users: Vec<NewUser>) -> Result<Vec<User>, StoreError> {
        self.observe(self.inner.create_many(users).await)
    }
    async fn get(&self, id: &UserId) -> Result<User, StoreError> {
        self.observe(self.inner.get(id).await)
    }
    async fn update(
        &self,
        id: &UserId,
        patch: UserPatch,
        protect_admins: bool,
    ) -> Result<User, StoreError> {
        self.observe(self.inner.update(id, patch, protect_admins).await)
    }
    async fn delete(&self, id: &UserId, etag: Option<&str>) -> Result<User, StoreError> {
        self.observe(self.inner.delete(id, etag).await)
    }
    async fn list_page(&self, query: PageQuery) -> Result<Page, StoreError> {
        self.observe(self.inner.list_page(query).await)
    }
    async fn count(&self, filter: Option<&Filter>) -> Result<u64, StoreError> {
        self.observe(self.inner.count(filter).await)
    }
    async fn sequence(&self) -> Result<u64, StoreError> {
        self.observe(self.inner.sequence().await)
    }
    async fn changes(
        &self,
        after: u64,
        interest: &Interest,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.observe(self.inner.changes(after, interest, limit).await)
    }
    fn page_token_key(&self) -> [u8; 32] {
        self.inner.page_token_key()
    }
}
