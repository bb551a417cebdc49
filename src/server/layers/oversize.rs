//! Answers a request message over the size limit RESOURCE_EXHAUSTED, as the
//! gRPC spec says, where tonic answers OUT_OF_RANGE.
//!
//! tonic reports an oversized unary request before any handler runs, as a
//! trailers-only response; this layer rewrites that response's status. An
//! oversized message inside a request stream reaches the handler as an
//! error, which `crate::error::oversized_is_exhausted` rewrites. Responses
//! cannot exceed the limit: users are bounded in size, and BulkCreateUsers
//! refuses a batch whose answer would not fit before storing it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::HeaderValue;
use tower::{Layer, Service};

use crate::error::TOO_LARGE;

/// Rewrites OUT_OF_RANGE for an oversized request to RESOURCE_EXHAUSTED.
#[derive(Clone, Copy, Debug, Default)]
pub struct OversizeLayer;

impl<S> Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Oversize { inner }
    }
}

/// [`OversizeLayer`] applied to a service.
#[derive(Clone, Debug)]
pub struct Oversize<S> {
    inner: S,
}

impl<S, B, ResBody> Service<http::Request<B>> for Oversize<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut result = ready!(self.project().inner.poll(cx));
        if let Ok(response) = &mut result {
            let headers = response.headers_mut();
            let oversized = headers.get("grpc-status").is_some_and(|s| s == "11")
                && headers
                    .get("grpc-message")
                    .and_then(|m| m.to_str().ok())
                    .is_some_and(|m| {
                        m.contains("message%20length%20too%20large") || m.contains(TOO_LARGE)
                    });
            if oversized {
                headers.insert("grpc-status", HeaderValue::from_static("8"));
            }
        }
        Poll::Ready(result)
    }
}
