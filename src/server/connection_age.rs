//! Connections that end: each accepted connection is closed once it is
//! older than `--max-connection-age` plus `--max-connection-age-grace`.
//!
//! tonic sends the GOAWAY at `max_connection_age`, but a client may keep
//! its streams on the old connection for ever (a watch stream does), and
//! tonic's own `max_connection_age_grace` (0.14.9) skips the GOAWAY and only
//! drops the connection at age plus grace. So the GOAWAY stays tonic's, and
//! the end is this wrapper's: past its time, the connection's reads and
//! writes fail, which hyper answers by closing it, ending its streams.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted TCP connection that fails once its time is up. `Unpin`, as
/// tonic needs its connections to be.
pub struct AgedConnection {
    inner: TcpStream,
    end: Pin<Box<tokio::time::Sleep>>,
}

impl AgedConnection {
    /// `stream`, closed after `lifetime`.
    pub fn new(stream: TcpStream, lifetime: Duration) -> Self {
        Self {
            inner: stream,
            end: Box::pin(tokio::time::sleep(lifetime)),
        }
    }
}

fn ended() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the connection outlived --max-connection-age and its grace",
    )
}

impl AsyncRead for AgedConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Polled while reading, so that an idle connection wakes at its end.
        if this.end.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(ended()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgedConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.end.is_elapsed() {
            return Poll::Ready(Err(ended()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.end.is_elapsed() {
            return Poll::Ready(Err(ended()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for AgedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}
