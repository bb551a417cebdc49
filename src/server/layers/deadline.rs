//! Every call's deadline: the one it asks for (`grpc-timeout`, which the
//! web layer makes of `connect-timeout-ms`), at most the server's most, or
//! the server's default for a call that brings none (or one that does not
//! parse, so that a bad header cannot lift the deadline). It ends a call
//! DEADLINE_EXCEEDED if its response has not started, reading its request
//! included; a stream then runs on.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tonic::Status;
use tower::{Layer, Service};

/// Gives every call its deadline, answered DEADLINE_EXCEEDED when it passes
/// before the response starts. (tonic's own server timeout answers
/// CANCELLED, which tells a client the wrong thing.)
#[derive(Clone, Copy, Debug)]
pub struct DefaultDeadlineLayer {
    deadline: Duration,
    max: Duration,
}

impl DefaultDeadlineLayer {
    /// `deadline` for calls without a valid one of their own; `max` for
    /// calls that ask for more.
    pub fn new(deadline: Duration, max: Duration) -> Self {
        Self { deadline, max }
    }
}

impl<S> Layer<S> for DefaultDeadlineLayer {
    type Service = DefaultDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DefaultDeadline {
            inner,
            deadline: self.deadline,
            max: self.max,
        }
    }
}

/// [`DefaultDeadlineLayer`] applied to a service.
#[derive(Clone, Debug)]
pub struct DefaultDeadline<S> {
    inner: S,
    deadline: Duration,
    max: Duration,
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
        let asked = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| parse_grpc_timeout(value.as_bytes()));
        let deadline = match asked {
            None => (self.deadline, "the server's default"),
            Some(asked) if asked > self.max => (self.max, "the server's most"),
            Some(asked) => (asked, "the call's own"),
        };
        DeadlineFuture {
            inner: self.inner.call(request),
            sleep: Box::pin(tokio::time::sleep(deadline.0)),
            deadline,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        // Boxed, as tokio's timers are large.
        sleep: Pin<Box<tokio::time::Sleep>>,
        // The deadline, and which of the server's it is.
        deadline: (Duration, &'static str),
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
        ready!(this.sleep.as_mut().poll(cx));
        let (deadline, which) = this.deadline;
        let message = format!("deadline exceeded: no response within {which} of {deadline:?}");
        Poll::Ready(Ok(Status::deadline_exceeded(message).into_http()))
    }
}

/// A `grpc-timeout` value as the gRPC spec writes it: at most 8 digits and
/// a unit (H, M, S, m, u, n). Anything else is `None`, as if absent.
fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them_and_nothing_else() {
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for invalid in ["x", "-5S", "5", "S", "123456789S", "5s", "5 S", "+5S", ""] {
            assert_eq!(parse_grpc_timeout(invalid.as_bytes()), None, "{invalid:?}");
        }
    }
}
