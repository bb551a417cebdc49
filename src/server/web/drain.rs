//! HTTP/1.1 request bodies that a call did not read, read to their end
//! after its answer, so that the client gets the answer.
//!
//! A call refused from its headers (no token, over its rate) is answered
//! without its body being read. Over HTTP/2 the stream is reset and the
//! connection lives on; over HTTP/1.1 hyper closes the connection once the
//! body is dropped, and a client still writing its body meets a reset,
//! often before it reads the refusal (curl and Node report a broken pipe).
//! So a body dropped unfinished is read and discarded in a task of its own:
//! nothing of it is held, at most a budget of bytes is read, for at most
//! [`DRAIN_TIME`]. A body larger or slower than that gets its connection
//! closed, as before. (connect-go reads such a body to its end too.)

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

/// The longest a dropped body is read for.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// A request body that, dropped before its end, is drained.
pub struct Drained {
    body: Option<tonic::body::Body>,
    /// The most bytes read from it once dropped.
    budget: usize,
}

impl Drained {
    pub fn new(body: tonic::body::Body, budget: usize) -> Self {
        Self {
            body: Some(body),
            budget,
        }
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        let Some(mut body) = self.body.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut budget = self.budget;
        runtime.spawn(tokio::time::timeout(DRAIN_TIME, async move {
            while let Some(Ok(frame)) = body.frame().await {
                let len = frame.data_ref().map_or(0, Bytes::len);
                match budget.checked_sub(len) {
                    Some(left) => budget = left,
                    None => return,
                }
            }
        }));
    }
}

impl Body for Drained {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        match self.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
