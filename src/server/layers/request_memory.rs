//! The memory that request bytes take before a handler has them: capped in
//! all, per caller, and, smallest, per caller with no token or certificate.
//!
//! A request message is held whole before it is decoded (by the codec, or
//! by the web layer that turns JSON into binary), so a caller that opens
//! many streams and sends each a message it never finishes holds a
//! message's worth of memory per stream. Every request body is metered: the
//! bytes of the message it has begun and not finished count against its
//! caller, and are given back when the message is whole (the handler has
//! it) or the call ends. Past a cap the call ends RESOURCE_EXHAUSTED.
//!
//! The meter sits where the bytes arrive, but the caller is known only once
//! the token is checked, which is later, so the meter asks a [`PayerSlot`]
//! that this layer fills (see [`meter`]). A gRPC call's body gets its meter
//! here; the web layer meters its calls' bodies itself, before it turns them
//! into gRPC.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tonic::Status;
use tower::{Layer, Service};

use crate::BoxError;
use crate::auth::Caller;

/// Request bytes held now, by every caller of every server in the process.
pub static HELD_BYTES: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::IntGauge::new(
        "usersvc_request_bytes_held",
        "Request bytes of unfinished messages held for calls before their handler has them.",
    )
    .expect("valid metric")
});

/// The caps, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryCaps {
    /// All callers together.
    pub total: usize,
    /// One caller with a token or a client certificate.
    pub per_caller: usize,
    /// One caller with neither, by address.
    pub anonymous: usize,
}

impl Default for MemoryCaps {
    fn default() -> Self {
        Self {
            total: 256 * 1024 * 1024,
            // Eight of the largest messages at once.
            per_caller: 32 * 1024 * 1024,
            // A public read's request is tens of bytes.
            anonymous: 1024 * 1024,
        }
    }
}

/// What every caller holds now.
pub struct RequestMemory {
    caps: MemoryCaps,
    total: AtomicUsize,
    per_caller: Mutex<HashMap<String, usize>>,
}

impl RequestMemory {
    pub fn new(caps: MemoryCaps) -> Arc<Self> {
        Arc::new(Self {
            caps,
            total: AtomicUsize::new(0),
            per_caller: Mutex::new(HashMap::new()),
        })
    }

    /// Moves `key`'s holding by `grow` bytes up, or `shrink` down; a growth
    /// past a cap is refused and changes nothing.
    fn adjust(&self, key: &str, cap: usize, grow: usize, shrink: usize) -> Result<(), Status> {
        if grow > 0 {
            let before = self.total.fetch_add(grow, Ordering::AcqRel);
            if before + grow > self.caps.total {
                self.total.fetch_sub(grow, Ordering::AcqRel);
                return Err(Status::resource_exhausted(format!(
                    "the server holds its most of request bytes not yet handled ({} bytes); try again shortly",
                    self.caps.total
                )));
            }
        }
        let mut per_caller = self.per_caller.lock().expect("not poisoned");
        let held = per_caller.get(key).copied().unwrap_or(0);
        if held + grow > cap {
            drop(per_caller);
            self.total.fetch_sub(grow, Ordering::AcqRel);
            return Err(Status::resource_exhausted(format!(
                "this caller's requests not yet handled may hold at most {cap} bytes"
            )));
        }
        // A caller holding nothing has no entry: the table is as large as
        // the callers with unfinished messages, no larger.
        match (
            (held + grow).saturating_sub(shrink),
            per_caller.get_mut(key),
        ) {
            (0, _) => {
                per_caller.remove(key);
            }
            (now, Some(entry)) => *entry = now,
            (now, None) => {
                per_caller.insert(key.to_owned(), now);
            }
        }
        drop(per_caller);
        self.total.fetch_sub(shrink, Ordering::AcqRel);
        HELD_BYTES.add(grow as i64 - shrink as i64);
        Ok(())
    }

    /// Bytes held now by every caller.
    pub fn held(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// Who pays for a call's request bytes, and under which cap. The caller's
/// key is made only when bytes are held, which a small unary request
/// never is.
#[derive(Clone)]
struct Payer {
    memory: Arc<RequestMemory>,
    caller: Caller,
    cap: usize,
}

impl Payer {
    fn adjust(&self, grow: usize, shrink: usize) -> Result<(), Status> {
        self.memory
            .adjust(&self.caller.key(), self.cap, grow, shrink)
    }
}

/// Where a metered body finds its payer once the caller is known.
#[derive(Clone, Default)]
pub struct PayerSlot(Arc<OnceLock<Payer>>);

/// How a body's bytes make messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Length-prefixed messages (gRPC, gRPC-Web, Connect streams).
    Enveloped,
    /// The whole body is one message (a Connect unary call, base64 gRPC-Web).
    Whole,
}

pin_project_lite::pin_project! {
    /// A request body whose unfinished message is paid for.
    pub struct Metered<B> {
        #[pin]
        inner: B,
        payment: Payment,
        framing: Framing,
        // Bytes of the message begun and not finished: what is paid for.
        held: usize,
        // Of an enveloped message: prefix bytes seen (0 to 5), the length
        // read so far, and the message's bytes still to come.
        prefix_seen: u8,
        length: u32,
        remaining: usize,
    }

    impl<B> PinnedDrop for Metered<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Payment::Paying(payer) = this.payment && *this.held > 0 {
                let _ = payer.adjust(0, *this.held);
            }
        }
    }
}

/// Who a metered body's bytes are charged to.
enum Payment {
    /// Not known when the body was made: the slot says, by the first byte.
    Pending(PayerSlot),
    Paying(Payer),
    /// Nobody: the slot was still empty at the first byte.
    Free,
}

impl<B> Metered<B> {
    fn new(inner: B, payment: Payment, framing: Framing) -> Self {
        Self {
            inner,
            payment,
            framing,
            held: 0,
            prefix_seen: 0,
            length: 0,
            remaining: 0,
        }
    }
}

/// `body`, metered once the returned [`PayerSlot`] is filled by this layer;
/// it goes into the request's extensions.
pub fn meter<B>(body: B, framing: Framing) -> (Metered<B>, PayerSlot) {
    let slot = PayerSlot::default();
    let body = Metered::new(body, Payment::Pending(slot.clone()), framing);
    (body, slot)
}

/// Bytes of the message unfinished after `data`, for an enveloped body.
fn unfinished(
    prefix_seen: &mut u8,
    length: &mut u32,
    remaining: &mut usize,
    held: usize,
    mut data: &[u8],
) -> usize {
    let mut held = held;
    while !data.is_empty() {
        if *remaining > 0 {
            let take = (*remaining).min(data.len());
            *remaining -= take;
            held += take;
            data = &data[take..];
            if *remaining == 0 {
                held = 0;
            }
            continue;
        }
        if *prefix_seen > 0 {
            *length = (*length << 8) | u32::from(data[0]);
        }
        data = &data[1..];
        *prefix_seen += 1;
        held += 1;
        if *prefix_seen == 5 {
            *prefix_seen = 0;
            *remaining = *length as usize;
            *length = 0;
            if *remaining == 0 {
                held = 0;
            }
        }
    }
    held
}

impl<B> Body for Metered<B>
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
        let frame = match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => {
                // A whole-body message is finished when the body is.
                return Poll::Ready(None);
            }
        };
        let Some(data) = frame.data_ref() else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let held = match this.framing {
            Framing::Whole => *this.held + data.len(),
            Framing::Enveloped => unfinished(
                this.prefix_seen,
                this.length,
                this.remaining,
                *this.held,
                data,
            ),
        };
        if let Payment::Pending(slot) = this.payment {
            *this.payment = match slot.0.get() {
                Some(payer) => Payment::Paying(payer.clone()),
                None => Payment::Free,
            };
        }
        if let Payment::Paying(payer) = this.payment
            && held != *this.held
        {
            let (grow, shrink) = (
                held.saturating_sub(*this.held),
                this.held.saturating_sub(held),
            );
            if let Err(status) = payer.adjust(grow, shrink) {
                return Poll::Ready(Some(Err(Box::new(status))));
            }
        }
        *this.held = held;
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Fills each call's [`PayerSlot`] with its caller, metering a body that
/// has none yet (a gRPC call's).
#[derive(Clone)]
pub struct RequestMemoryLayer {
    memory: Arc<RequestMemory>,
}

impl RequestMemoryLayer {
    pub fn new(memory: Arc<RequestMemory>) -> Self {
        Self { memory }
    }
}

impl<S> Layer<S> for RequestMemoryLayer {
    type Service = MeteredRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MeteredRequests {
            inner,
            memory: Arc::clone(&self.memory),
        }
    }
}

/// [`RequestMemoryLayer`] applied to a service.
#[derive(Clone)]
pub struct MeteredRequests<S> {
    inner: S,
    memory: Arc<RequestMemory>,
}

impl<S, B> Service<http::Request<B>> for MeteredRequests<S>
where
    S: Service<http::Request<tonic::body::Body>>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let caller = Caller::of(&mut request).clone();
        let anonymous = caller.claims.is_none() && caller.certificate.is_none();
        let caps = self.memory.caps;
        let payer = Payer {
            memory: Arc::clone(&self.memory),
            caller,
            cap: if anonymous {
                caps.anonymous
            } else {
                caps.per_caller
            },
        };
        let request = match request.extensions().get::<PayerSlot>().cloned() {
            Some(slot) => {
                let _ = slot.0.set(payer);
                request.map(tonic::body::Body::new)
            }
            None => request.map(|body| {
                tonic::body::Body::new(Metered::new(
                    body,
                    Payment::Paying(payer),
                    Framing::Enveloped,
                ))
            }),
        };
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_messages_are_held_until_whole() {
        let mut message = vec![0, 0, 0, 0, 10];
        message.extend_from_slice(&[7; 10]);
        let (mut seen, mut length, mut remaining) = (0, 0, 0);
        let held = unfinished(&mut seen, &mut length, &mut remaining, 0, &message[..8]);
        assert_eq!(held, 8);
        let held = unfinished(&mut seen, &mut length, &mut remaining, held, &message[8..]);
        assert_eq!(held, 0, "whole");
        // A whole message and half of the next.
        let mut two = message.clone();
        two.extend_from_slice(&message[..6]);
        let (mut seen, mut length, mut remaining) = (0, 0, 0);
        assert_eq!(
            unfinished(&mut seen, &mut length, &mut remaining, 0, &two),
            6
        );
    }

    #[test]
    fn callers_are_capped_alone_and_together() {
        let memory = RequestMemory::new(MemoryCaps {
            total: 100,
            per_caller: 60,
            anonymous: 10,
        });
        let (alice, bob, anon) = ("sub:alice", "sub:bob", "ip:192.0.2.1");
        assert!(memory.adjust(alice, 60, 60, 0).is_ok());
        assert!(memory.adjust(alice, 60, 1, 0).is_err(), "alice's cap");
        assert!(memory.adjust(anon, 10, 11, 0).is_err(), "the anonymous cap");
        assert!(memory.adjust(anon, 10, 10, 0).is_ok());
        assert!(memory.adjust(bob, 60, 31, 0).is_err(), "the total");
        assert_eq!(memory.held(), 70);
        assert!(memory.adjust(alice, 60, 0, 60).is_ok());
        assert!(memory.adjust(bob, 60, 31, 0).is_ok());
        assert!(memory.adjust("sub:carol", 60, 61, 0).is_err());
        let callers = memory.per_caller.lock().unwrap();
        assert!(!callers.contains_key(alice), "alice holds nothing now");
        assert!(
            !callers.contains_key("sub:carol"),
            "a refused caller has no entry"
        );
        drop(callers);
        assert_eq!(memory.held(), 41);
    }
}
