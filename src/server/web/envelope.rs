//! Length-prefixed messages, the framing that gRPC, gRPC-Web and Connect
//! streams share: a flags byte, a big-endian u32 length, the message. A
//! body of them is rewritten one message at a time as it streams, so that a
//! long stream is never held whole.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame};
use tonic::Status;

use crate::BoxError;

/// Flags of a compressed message (all three protocols).
pub const COMPRESSED: u8 = 0x01;
/// Flags of Connect's end-of-stream message.
pub const END_STREAM: u8 = 0x02;
/// Flags of gRPC-Web's trailers frame.
pub const TRAILERS: u8 = 0x80;

/// One message with its prefix.
pub fn envelope(flags: u8, message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(flags);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The messages of a whole body, in order, with their flags.
pub fn split(mut body: Bytes) -> Result<Vec<(u8, Bytes)>, Status> {
    let mut messages = Vec::new();
    while !body.is_empty() {
        let Some((flags, message)) = next(&mut body)? else {
            return Err(Status::internal("a message cut off at the end of the body"));
        };
        messages.push((flags, message));
    }
    Ok(messages)
}

/// Takes the first whole message off `buffer`, if it holds one.
fn next<B: Buf + AsRef<[u8]>>(buffer: &mut B) -> Result<Option<(u8, Bytes)>, Status> {
    let bytes = buffer.as_ref();
    if bytes.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    if bytes.len() < 5 + len {
        return Ok(None);
    }
    let flags = bytes[0];
    buffer.advance(5);
    Ok(Some((flags, buffer.copy_to_bytes(len))))
}

/// Gunzips a message, reading at most `max` bytes of it.
pub fn gunzip(compressed: &[u8], max: usize) -> Result<Bytes, Status> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Status::invalid_argument(format!("invalid gzip: {e}")))?;
    if out.len() > max {
        return Err(too_large(max));
    }
    Ok(out.into())
}

pub fn too_large(max: usize) -> Status {
    Status::resource_exhausted(format!("the message is over the limit of {max} bytes"))
}

/// A message of a stream as its bytes: inflated when its flags say it is
/// compressed and the stream is gzipped; refused when the flags say so
/// but `header`, which names the stream's compression, did not.
pub fn inflated(
    flags: u8,
    message: Bytes,
    gzipped: bool,
    max: usize,
    header: &str,
) -> Result<Bytes, Status> {
    match (flags & COMPRESSED != 0, gzipped) {
        (false, _) => Ok(message),
        (true, true) => gunzip(&message, max),
        (true, false) => Err(Status::internal(format!(
            "a compressed message with no {header}"
        ))),
    }
}

/// What becomes of each message: the bytes to send in its place (a whole
/// envelope, or nothing).
pub type Rewrite = Box<dyn FnMut(u8, Bytes) -> Result<Bytes, Status> + Send>;

/// What to send after the last message, given the trailers if the body
/// had any.
pub type Finish = Box<dyn FnOnce(Option<HeaderMap>) -> Bytes + Send>;

/// A body of length-prefixed messages, each rewritten as it arrives, and
/// its trailers turned into a last message (or dropped).
pub struct Reframe<B> {
    inner: B,
    buffer: BytesMut,
    rewrite: Rewrite,
    finish: Option<Finish>,
    /// The most bytes of a message not yet whole that are held.
    max_message: usize,
    done: bool,
}

impl<B> Reframe<B> {
    pub fn new(inner: B, max_message: usize, rewrite: Rewrite, finish: Option<Finish>) -> Self {
        Self {
            inner,
            buffer: BytesMut::new(),
            rewrite,
            finish,
            max_message,
            done: false,
        }
    }

    fn finish(
        &mut self,
        trailers: Option<HeaderMap>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        if !self.buffer.is_empty() {
            let status = Status::internal("a message cut off at the end of the stream");
            return Poll::Ready(Some(Err(Box::new(status))));
        }
        match self.finish.take() {
            Some(finish) => Poll::Ready(Some(Ok(Frame::data(finish(trailers))))),
            None => Poll::Ready(None),
        }
    }
}

impl<B> Body for Reframe<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match next(&mut this.buffer) {
                Ok(Some((flags, message))) => {
                    return Poll::Ready(Some(
                        (this.rewrite)(flags, message)
                            .map(Frame::data)
                            .map_err(|status| Box::new(status) as BoxError),
                    ));
                }
                Ok(None) => {}
                Err(status) => return Poll::Ready(Some(Err(Box::new(status)))),
            }
            if this.buffer.len() > this.max_message.saturating_add(5) {
                let status = Status::resource_exhausted(format!(
                    "a message over the limit of {} bytes",
                    this.max_message
                ));
                return Poll::Ready(Some(Err(Box::new(status))));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        let trailers = frame.into_trailers().ok();
                        return this.finish(trailers);
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => return this.finish(None),
            }
        }
    }
}
