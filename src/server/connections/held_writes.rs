//! A connection's writes, held past the first flush so that more frames
//! join them.
//!
//! h2 writes a DATA frame of 256 bytes or more on its own: it chains the
//! payload behind the frame's head and flushes before it takes the next
//! frame. A watch stream's frame holds every event it had ready, so with a
//! thousand watchers on ten connections the server made one `writev` and
//! one loopback TCP segment per watcher per wake, about ten kilobytes
//! each, and the kernel's share of a million deliveries a second was half
//! the server's time.
//!
//! Here writes are copied into a buffer of the connection's own, and a
//! flush is put off once: the frames h2 takes next are copied behind it,
//! and the flush after that writes them all. h2 asks for a flush after
//! each chained frame and at the end of each poll of the connection, so a
//! write carries two frames or more rather than one (in the watch
//! benchmark, 17 KB a write instead of 9.8 KB, and the kernel's share fell
//! from 46% to 32%). A flush put off at the end of a poll is made on the
//! next one, for which the task wakes itself; a flush is never put off
//! twice in a row, and past [`HOLD`] bytes the buffer is written without
//! waiting for one. Shutting down writes what is held first.
//!
//! Holding until the runtime has run the other streams' tasks would batch
//! more, but a write cannot see where a poll of its task begins; that is
//! left for a change that can show it never strands a write.
//!
//! Only HTTP/2 connections hold: an HTTP/1.1 connection has one response
//! in flight, with nothing to join it, so holding would only delay it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes held before they are written without waiting for a flush.
const HOLD: usize = 64 * 1024;

/// `inner`, with its writes held as the module says.
pub struct HeldWrites<IO> {
    inner: IO,
    held: Vec<u8>,
    /// How much of `held` the socket has taken.
    written: usize,
    /// A flush was put off: the next one writes.
    owed: bool,
    /// Writes are held; until then they pass straight through.
    holding: bool,
}

impl<IO> HeldWrites<IO> {
    pub fn new(inner: IO) -> Self {
        Self {
            inner,
            held: Vec::new(),
            written: 0,
            owed: false,
            holding: false,
        }
    }

    /// Holds writes from now on: the connection speaks HTTP/2.
    pub fn hold(&mut self) {
        self.holding = true;
    }
}

impl<IO: AsyncWrite + Unpin> HeldWrites<IO> {
    /// Writes everything held.
    fn poll_write_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.held.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        // Freed rather than kept: ten thousand quiet connections holding
        // an empty buffer each would be memory held for nothing.
        self.held = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Takes what fits of `bufs`, writing what is held first if it is full.
    fn poll_hold(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.held.len() >= HOLD {
            ready!(self.poll_write_held(cx))?;
        }
        let mut taken = 0;
        for buf in bufs {
            let room = HOLD - self.held.len();
            if room == 0 {
                break;
            }
            let part = &buf[..buf.len().min(room)];
            self.held.extend_from_slice(part);
            taken += part.len();
        }
        Poll::Ready(Ok(taken))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for HeldWrites<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for HeldWrites<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.holding && this.held.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.poll_hold(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.holding && this.held.is_empty() {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        this.poll_hold(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.holding || self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.held.is_empty() {
            this.owed = false;
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        if !this.owed {
            // Put off once: the next flush writes, at the latest on the
            // task's next poll, which this wake makes sure of.
            this.owed = true;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_write_held(cx))?;
        this.owed = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_held(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// What is written reaches the peer, in order, by the second flush at
    /// the latest; and shutting down writes what is held.
    #[tokio::test]
    async fn held_writes_arrive_in_order_by_the_second_flush() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let mut held = HeldWrites::new(ours);
        held.hold();
        held.write_all(b"one ").await.unwrap();
        held.flush().await.unwrap();
        let mut got = [0; 4];
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            theirs.read_exact(&mut got),
        )
        .await;
        assert!(early.is_err(), "the first flush is put off");
        held.write_all(b"two ").await.unwrap();
        held.flush().await.unwrap();
        let mut got = [0; 8];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two ");

        held.write_all(b"three").await.unwrap();
        held.shutdown().await.unwrap();
        let mut rest = Vec::new();
        theirs.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"three");
    }

    /// Until it holds, a write goes straight out.
    #[tokio::test]
    async fn writes_pass_through_until_held() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut held = HeldWrites::new(ours);
        held.write_all(b"head").await.unwrap();
        let mut got = [0; 4];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"head");
    }

    /// Past `HOLD` bytes, writes go out without a flush.
    #[tokio::test]
    async fn a_full_buffer_is_written_without_a_flush() {
        let (ours, mut theirs) = tokio::io::duplex(4 * HOLD);
        let mut held = HeldWrites::new(ours);
        held.hold();
        let data: Vec<u8> = (0..HOLD + 10).map(|n| n as u8).collect();
        held.write_all(&data).await.unwrap();
        let mut got = vec![0; HOLD];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(got, data[..HOLD]);
    }
}
