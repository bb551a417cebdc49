//! OpenTelemetry traces: one server span per call on every protocol, a
//! child span per store call, exported over OTLP to a collector.
//!
//! Configured by OpenTelemetry's own environment variables, so that it works
//! with any collector as other services do: `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `--otlp-endpoint`), `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or `http/protobuf`),
//! `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` and its `_ARG`, and
//! `OTEL_SDK_DISABLED`. With no endpoint, tracing is off: no span is made,
//! no header is read, and the layers test one `Option`.
//!
//! Spans are not made through `tracing`: the server span's start, end and
//! status are the access log's own (the `Call` in the telemetry layer), and
//! that log is written by a writer of ours, not by a `tracing` subscriber.
//! So the span is made with OpenTelemetry's API where the call is known.
//!
//! Export is batched on the SDK's own thread and never waits on a call: a
//! collector that is down or slow costs calls nothing. Spans that cannot be
//! queued or exported are dropped and counted in
//! `usersvc_trace_spans_dropped_total`, as access lines are.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use prometheus::IntCounter;

mod collector;
pub mod store;

pub use store::TracedStore;

/// Spans dropped since the process started: the queue to the exporter was
/// full, or the collector refused or missed the batch.
pub static DROPPED_SPANS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "usersvc_trace_spans_dropped_total",
        "Trace spans dropped because the queue to the collector was full or an export failed.",
    )
    .expect("valid metric")
});

/// How spans travel to the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    fn parse(value: &str) -> Result<Self, String> {
        match value.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => Err(format!(
                "OTLP protocol {other:?} is not supported: grpc or http/protobuf"
            )),
        }
    }
}

/// Where spans go, read from the environment and `--otlp-endpoint`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// The traces endpoint, whole: for http/protobuf, with its
    /// `/v1/traces`.
    pub endpoint: String,
    pub protocol: Protocol,
}

impl Export {
    /// The export the standard variables describe, `None` when tracing is
    /// off: no endpoint is set, or `OTEL_SDK_DISABLED` is true. `endpoint`
    /// is `--otlp-endpoint`, which stands for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn from_env(endpoint: Option<&str>) -> Result<Option<Export>, String> {
        Self::from_vars(endpoint, |name| std::env::var(name).ok())
    }

    fn from_vars(
        endpoint: Option<&str>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Export>, String> {
        let set = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        // The specification's default is http/protobuf.
        let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .map_or(Ok(Protocol::HttpProtobuf), |value| Protocol::parse(&value))?;
        let generic = endpoint
            .map(str::to_owned)
            .filter(|value| !value.trim().is_empty())
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let endpoint = match (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), generic) {
            // The signal's own endpoint is taken as it is.
            (Some(traces), _) => traces,
            // The generic one is a base: http/protobuf appends the path.
            (None, Some(base)) => match protocol {
                Protocol::Grpc => base,
                Protocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
            },
            (None, None) => return Ok(None),
        };
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| format!("OTLP endpoint {endpoint:?}: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "OTLP endpoint {endpoint:?}: expected http://HOST:PORT or https://HOST:PORT"
            ));
        }
        Ok(Some(Export { endpoint, protocol }))
    }
}

/// The tracer the layers and the store make spans with, and the provider
/// that exports them. Cloning shares both.
#[derive(Clone, Debug)]
pub struct Traces {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
}

impl Traces {
    /// Starts exporting to `export`. Needs a tokio runtime: the exporters'
    /// connections run on it.
    pub fn start(export: &Export) -> Result<Traces, String> {
        let exporter = match export.protocol {
            Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(export.endpoint.clone())
                .build(),
            Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(export.endpoint.clone())
                .with_http_client(collector::Client::new(&export.endpoint)?)
                .build(),
        }
        .map_err(|e| format!("OTLP exporter for {}: {e}", export.endpoint))?;
        let queue = std::env::var("OTEL_BSP_MAX_QUEUE_SIZE")
            .ok()
            .and_then(|value| value.trim().parse::<usize>().ok())
            .filter(|size| *size > 0)
            .unwrap_or(QUEUE);
        let pending = Arc::new(AtomicUsize::new(0));
        let batches = BatchSpanProcessor::builder(Counted {
            inner: exporter,
            pending: Arc::clone(&pending),
        })
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(queue)
                .build(),
        )
        .build();
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("usersvc");
        }
        // The sampler is OTEL_TRACES_SAMPLER's (parent-based, always on by
        // default): the SDK reads it.
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Bounded {
                inner: batches,
                pending,
                queue,
                shut: std::sync::atomic::AtomicBool::new(false),
            })
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("usersvc");
        Ok(Traces { tracer, provider })
    }

    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// Exports what is queued now, and waits for it. Blocks the thread.
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }

    /// Exports what is queued and stops: called at exit, so that the last
    /// calls' spans are not lost.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown_with_timeout(Duration::from_secs(5));
    }
}

/// The longest an http/protobuf post may take, whatever
/// `OTEL_EXPORTER_OTLP_TIMEOUT` says (its default is 10 s too): the SDK's
/// thread waits on it.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Spans held for export, at most (`OTEL_BSP_MAX_QUEUE_SIZE`'s default).
const QUEUE: usize = 2048;

/// The parent a call's headers name, W3C `traceparent` and `tracestate`:
/// an empty context when they name none or do not parse.
pub fn parent(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract_with_context(&Context::new(), &Headers(headers))
}

/// The trace id of `cx`'s span, for the access log, when it has one.
pub fn trace_id(cx: &Context) -> Option<String> {
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| context.trace_id().to_string())
}

/// Request headers, as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Counts spans in a batch that failed to export as dropped, and spans
/// leaving the queue.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    pending: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len();
        // Out of the queue however the export ends, a panic included.
        let _left = Left(&self.pending, count);
        let result = self.inner.export(batch).await;
        if result.is_err() {
            DROPPED_SPANS.inc_by(count as u64);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Takes `.1` spans off the pending count when dropped.
struct Left<'a>(&'a AtomicUsize, usize);

impl Drop for Left<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
}

/// Drops (and counts) a span when the queue is full, or once the processor
/// is shut down, rather than leaving the SDK to drop it uncounted.
#[derive(Debug)]
struct Bounded<P> {
    inner: P,
    pending: Arc<AtomicUsize>,
    queue: usize,
    shut: std::sync::atomic::AtomicBool,
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.shut.load(Ordering::Acquire) {
            DROPPED_SPANS.inc();
            return;
        }
        let taken = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |pending| {
                (pending < self.queue).then_some(pending + 1)
            });
        match taken {
            Ok(_) => self.inner.on_end(span),
            Err(_) => DROPPED_SPANS.inc(),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.shut.store(true, Ordering::Release);
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn the_standard_variables_decide_where_spans_go() {
        assert_eq!(
            Export::from_vars(None, vars(&[])),
            Ok(None),
            "off without an endpoint"
        );
        let http = Export::from_vars(
            None,
            vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]),
        );
        assert_eq!(
            http,
            Ok(Some(Export {
                endpoint: "http://c:4318/v1/traces".into(),
                protocol: Protocol::HttpProtobuf
            }))
        );
        let grpc = Export::from_vars(
            Some("http://c:4317"),
            vars(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
        );
        assert_eq!(grpc.unwrap().unwrap().endpoint, "http://c:4317");
        let own = Export::from_vars(
            Some("http://c:4318"),
            vars(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/traces")]),
        );
        assert_eq!(own.unwrap().unwrap().endpoint, "http://t:9/traces");
        let disabled = Export::from_vars(
            Some("http://c:4318"),
            vars(&[("OTEL_SDK_DISABLED", "TRUE")]),
        );
        assert_eq!(disabled, Ok(None));
        let json = Export::from_vars(
            Some("http://c:4318"),
            vars(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
        );
        assert!(json.unwrap_err().contains("grpc or http/protobuf"));
        assert!(Export::from_vars(Some("c:4317"), vars(&[])).is_err());
    }

    #[test]
    fn a_traceparent_is_read_and_written_back_the_same() {
        let mut headers = HeaderMap::new();
        let sent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        headers.insert("traceparent", sent.parse().unwrap());
        let cx = parent(&headers);
        assert_eq!(crate::client::traceparent(&cx).as_deref(), Some(sent));
        assert_eq!(
            trace_id(&cx).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        headers.insert("traceparent", "00-zz-yy-01".parse().unwrap());
        assert_eq!(crate::client::traceparent(&parent(&headers)), None);
    }
}
