//! A tower layer that may refuse a call before it is routed: the shape the
//! token check and the rate limit share. A [`Gate`] looks at the request
//! (and may annotate its extensions for handlers); a refusal is answered in
//! place as a trailers-only gRPC response, with no boxing on either path.
//! A gate that cannot decide yet (a token naming a key not fetched yet) may
//! ask to wait, and is then asked once more; the body is still unread.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

/// Decides whether a call may proceed.
pub trait Gate: Clone {
    /// Lets the call through, or refuses it with the status to answer.
    fn admit<B>(&self, request: &mut http::Request<B>) -> Result<(), Refusal>;
}

/// Marks a request its gate is asked about again, after a wait: a gate
/// asks for no second wait on it.
#[derive(Clone, Copy, Debug)]
pub struct SecondLook;

/// Why a call does not proceed now.
pub enum Refusal {
    /// Answer this status.
    Now(Status),
    /// Wait for `until`, then ask the gate again; if it still cannot
    /// decide, answer `otherwise`.
    After {
        until: Pin<Box<dyn Future<Output = ()> + Send>>,
        otherwise: Status,
    },
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Self {
        Refusal::Now(status)
    }
}

/// Puts a [`Gate`] in front of a service.
#[derive(Clone)]
pub struct GateLayer<G> {
    gate: G,
}

impl<G> GateLayer<G> {
    pub fn new(gate: G) -> Self {
        Self { gate }
    }
}

impl<S, G: Clone> Layer<S> for GateLayer<G> {
    type Service = Gated<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        Gated {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// A service behind a [`Gate`].
#[derive(Clone)]
pub struct Gated<S, G> {
    inner: S,
    gate: G,
}

impl<S, G, B, ResBody> Service<http::Request<B>> for Gated<S, G>
where
    G: Gate + Send + 'static,
    S: Service<http::Request<B>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = GateFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.gate.admit(&mut request) {
            Ok(()) => GateFuture::Admitted {
                inner: self.inner.call(request),
            },
            Err(Refusal::Now(status)) => GateFuture::Refused {
                status: Some(status),
                _body: std::marker::PhantomData,
            },
            Err(Refusal::After { until, otherwise }) => {
                // The service that was made ready goes with the call.
                let ready = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, ready);
                let gate = self.gate.clone();
                GateFuture::Waiting {
                    waiting: Box::pin(async move {
                        until.await;
                        request.extensions_mut().insert(SecondLook);
                        match gate.admit(&mut request) {
                            Ok(()) => inner.call(request).await,
                            Err(Refusal::Now(status)) => Ok(status.into_http()),
                            Err(Refusal::After { .. }) => Ok(otherwise.into_http()),
                        }
                    }),
                }
            }
        }
    }
}

/// A call waiting on its gate.
type Waiting<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project_lite::pin_project! {
    /// The inner service's response, or the refusal answered in its place.
    #[project = Projection]
    pub enum GateFuture<F: Future, ResBody> {
        Admitted { #[pin] inner: F },
        Refused { status: Option<Status>, _body: std::marker::PhantomData<fn() -> ResBody> },
        Waiting { waiting: Waiting<F::Output> },
    }
}

impl<F, E, ResBody> Future for GateFuture<F, ResBody>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projection::Admitted { inner } => inner.poll(cx),
            Projection::Waiting { waiting } => waiting.as_mut().poll(cx),
            Projection::Refused { status, .. } => {
                let status = status.take().expect("polled after completion");
                Poll::Ready(Ok(status.into_http()))
            }
        }
    }
}
