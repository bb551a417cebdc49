//! Whether a client's request stream ended or was cut off.
//!
//! tonic's server reads a client's RST_STREAM(CANCEL) as a clean end of the
//! request stream (`Streaming::message` returns `Ok(None)`), so a handler
//! that commits when the stream ends would commit a batch the client
//! abandoned. This layer watches the request body beneath tonic and records
//! a cut-off in the request's [`StreamEnd`]; handlers that act on
//! end-of-stream ask it first.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

use crate::service::StreamEnd;

/// Installs [`StreamEnd`] on every request.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamEndLayer;

impl<S> Layer<S> for StreamEndLayer {
    type Service = WatchStreamEnd<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WatchStreamEnd { inner }
    }
}

/// [`StreamEndLayer`] applied to a service.
#[derive(Clone, Debug)]
pub struct WatchStreamEnd<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for WatchStreamEnd<S>
where
    S: Service<http::Request<WatchedBody<B>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let end = StreamEnd::default();
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(end.clone());
        let body = WatchedBody { inner: body, end };
        self.inner.call(http::Request::from_parts(parts, body))
    }
}

pin_project_lite::pin_project! {
    /// A request body that records in its [`StreamEnd`] if it fails.
    pub struct WatchedBody<B> {
        #[pin]
        inner: B,
        end: StreamEnd,
    }
}

impl<B: Body> Body for WatchedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Err(_)) = &frame {
            this.end.cut_off();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
