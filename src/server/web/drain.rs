//! HTTP/1.1 request bodies that a call did not read, read to their end
//! after its answer, so that the client gets the answer.
//!
//! A call refused from its headers (no token, over its rate) is answered
//! without its body being read. Over HTTP/2 the stream is reset and the
//! connection lives on; over HTTP/1.1 hyper closes the connection instead,
//! and a client still writing its body meets a reset before it reads the
//! refusal (curl and Node report a broken pipe). So the body a call drops
//! unread comes back here, and the answer's body, once sent, reads and
//! discards it: nothing of it is held, at most [`DRAIN_BYTES`]-worth is
//! read, for at most [`DRAIN_TIME`]. A body larger or slower than that
//! gets its connection closed, as before. (connect-go reads such a body to
//! its end too, without a bound.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use crate::BoxError;

/// The longest a dropped body is read for after its answer.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// A request body that, dropped before its end, goes back to be drained.
pub struct Lent {
    body: Option<tonic::body::Body>,
    back: Option<oneshot::Sender<tonic::body::Body>>,
}

/// Lends `body` to the call; the returned [`Unread`] gets it back if the
/// call drops it unfinished.
pub fn lend(body: tonic::body::Body) -> (Lent, Unread) {
    let (back, unread) = oneshot::channel();
    (
        Lent {
            body: Some(body),
            back: Some(back),
        },
        Unread(unread),
    )
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let (Some(body), Some(back)) = (self.body.take(), self.back.take())
            && !body.is_end_stream()
        {
            let _ = back.send(body);
        }
    }
}

impl Body for Lent {
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

/// Where a dropped body comes back.
pub struct Unread(oneshot::Receiver<tonic::body::Body>);

pin_project_lite::pin_project! {
    /// An answer's body that, after its last frame, drains the request's.
    pub struct Draining<B> {
        #[pin]
        inner: B,
        unread: Option<Unread>,
        draining: Option<(tonic::body::Body, Pin<Box<tokio::time::Sleep>>)>,
        budget: usize,
        done: bool,
    }
}

/// `answer`, draining what comes back to `unread` after its last frame,
/// up to `budget` bytes.
pub fn draining<B>(answer: B, unread: Unread, budget: usize) -> Draining<B> {
    Draining {
        inner: answer,
        unread: Some(unread),
        draining: None,
        budget,
        done: false,
    }
}

impl<B> Body for Draining<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if this.draining.is_none() {
            match ready!(this.inner.poll_frame(cx)) {
                Some(frame) => return Poll::Ready(Some(frame.map_err(Into::into))),
                None => match this.unread.take().and_then(|mut u| u.0.try_recv().ok()) {
                    Some(body) => {
                        let timer = Box::pin(tokio::time::sleep(DRAIN_TIME));
                        *this.draining = Some((body, timer));
                    }
                    None => {
                        *this.done = true;
                        return Poll::Ready(None);
                    }
                },
            }
        }
        let (body, timer) = this.draining.as_mut().expect("set above");
        loop {
            if timer.as_mut().poll(cx).is_ready() {
                break;
            }
            match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let len = frame.data_ref().map_or(0, Bytes::len);
                    match this.budget.checked_sub(len) {
                        Some(left) => *this.budget = left,
                        None => break,
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
        *this.draining = None;
        *this.done = true;
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        // hyper stops polling a body of known length at its last byte, and
        // this one has a drain to run after it: a body that came back
        // (before the head was sent, as a refusal's does) makes the length
        // unknown, so the answer is chunked.
        let returned = self
            .unread
            .as_ref()
            .is_some_and(|unread| !unread.0.is_empty() && !unread.0.is_terminated());
        if returned {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}
