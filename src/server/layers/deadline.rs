//! The server's default deadline, for calls that bring none of their own.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tonic::Status;
use tower::{Layer, Service};

/// Gives a call that brings no deadline (`grpc-timeout`) the server's
/// default, answered DEADLINE_EXCEEDED when it passes before the response
/// starts. (tonic's own server timeout answers CANCELLED, which tells a
/// client the wrong thing.)
#[derive(Clone, Copy, Debug)]
pub struct DefaultDeadlineLayer {
    deadline: Duration,
}

impl DefaultDeadlineLayer {
    pub fn new(deadline: Duration) -> Self {
        Self { deadline }
    }
}

impl<S> Layer<S> for DefaultDeadlineLayer {
    type Service = DefaultDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DefaultDeadline {
            inner,
            deadline: self.deadline,
        }
    }
}

/// [`DefaultDeadlineLayer`] applied to a service.
#[derive(Clone, Debug)]
pub struct DefaultDeadline<S> {
    inner: S,
    deadline: Duration,
}

impl<S, B, ResBody> Service<http::Request<B>> for DefaultDeadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let deadline = (!request.headers().contains_key("grpc-timeout")).then_some(self.deadline);
        DeadlineFuture {
            inner: self.inner.call(request),
            sleep: deadline.map(|deadline| Box::pin(tokio::time::sleep(deadline))),
            deadline: deadline.unwrap_or_default(),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        // Boxed so that this future stays Unpin-agnostic and small when no
        // default applies.
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        deadline: Duration,
    }
}

impl<F, ResBody, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        if let Some(sleep) = this.sleep {
            ready!(sleep.as_mut().poll(cx));
            let message = format!(
                "deadline exceeded: no response within the server's default of {:?}",
                this.deadline
            );
            return Poll::Ready(Ok(Status::deadline_exceeded(message).into_http()));
        }
        Poll::Pending
    }
}
