//! CORS for the origins an operator lists (`--cors-origin`), none by
//! default. tower-http's `CorsLayer` answers preflights and adds the
//! headers; this layer lets only the listed origins reach it, so that any
//! other origin gets no CORS header at all (and a refused preflight).
//! With origins listed, every answer varies on `Origin`, so that a shared
//! cache never gives one origin an answer made for another. With none (the
//! default) every preflight is refused, and no answer has a CORS header.

use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use tower::Service;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The request headers a browser may send: Connect's and gRPC-Web's, and
/// the ones usersvc reads.
const ALLOWED_HEADERS: &[&str] = &[
    "content-type",
    "authorization",
    "x-request-id",
    "idempotency-key",
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-content-encoding",
    "connect-accept-encoding",
    "grpc-timeout",
    "x-grpc-web",
    "x-user-agent",
    "content-encoding",
    "accept-encoding",
];

/// The response headers a page may read.
const EXPOSED_HEADERS: &[&str] = &[
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-request-id",
    "content-encoding",
    "connect-content-encoding",
];

fn names(names: &[&'static str]) -> Vec<HeaderName> {
    names.iter().map(|n| HeaderName::from_static(n)).collect()
}

/// Adds [`Cors`] for `origins`.
#[derive(Clone, Debug)]
pub struct Layer {
    origins: Vec<HeaderValue>,
}

impl Layer {
    pub fn new(origins: Vec<HeaderValue>) -> Self {
        Self { origins }
    }
}

impl<S> tower::Layer<S> for Layer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::list(self.origins.clone()))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers(names(ALLOWED_HEADERS))
            .expose_headers(names(EXPOSED_HEADERS))
            .max_age(Duration::from_secs(7200));
        Cors {
            cors,
            inner,
            origins: self.origins.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Cors<S> {
    cors: CorsLayer,
    inner: S,
    origins: Vec<HeaderValue>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Cors<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<ResBody>, S::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both wrap the same inner service, made ready here.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let origin = request.headers().get(header::ORIGIN);
        let listed = origin.is_some_and(|origin| self.origins.contains(origin));
        let preflight = request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        if listed {
            // tower-http's service around the inner service made ready.
            return Box::pin(tower::Layer::layer(&self.cors, inner).call(request));
        }
        let configured = !self.origins.is_empty();
        let vary = move |response: &mut Response<ResBody>| {
            if configured {
                response
                    .headers_mut()
                    .append(header::VARY, HeaderValue::from_static("origin"));
            }
        };
        if preflight {
            let mut refused = Response::new(ResBody::default());
            *refused.status_mut() = StatusCode::FORBIDDEN;
            vary(&mut refused);
            return Box::pin(async move { Ok(refused) });
        }
        let mut inner = inner;
        let call = inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            vary(&mut response);
            Ok(response)
        })
    }
}
