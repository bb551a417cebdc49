//! The connections: accepted within their caps, handshaken, served by
//! hyper, and closed when they have nothing to do.
//!
//! usersvc serves its connections itself rather than through tonic's
//! `Server`, because a connection's life needs decisions tonic does not
//! offer, each taken before a byte of a request body is read:
//!
//! - **Caps.** `--max-connections` bounds open connections in all and per
//!   client address (an IPv6 client by its /64). Past a cap a connection
//!   is closed at once, counted in `usersvc_connections_refused_total`, and
//!   warned of at most every ten seconds.
//! - **The first request.** A connection that has not sent a whole first
//!   request head (HTTP/1.1), or the HTTP/2 preface and its SETTINGS,
//!   within `--header-read-timeout` is closed, TLS ones counted from the
//!   end of their handshake. hyper's own header timeout starts only once
//!   it knows the protocol, so a silent connection would otherwise live
//!   until `--max-connection-age`.
//! - **Idleness.** A connection with no call open for
//!   `--idle-connection-timeout` is shut down gracefully: GOAWAY over
//!   HTTP/2, a close between requests over HTTP/1.1.
//! - **Age.** At `--max-connection-age` a connection is shut down
//!   gracefully, and at the age plus its grace it is closed, streams and
//!   all, so that a watch stream cannot keep an old connection for ever.
//! - **Heads.** `--max-header-list-size` bounds an HTTP/1.1 head too:
//!   hyper answers 431 past it, as h2 does for HTTP/2.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use prometheus::IntCounterVec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
use tower::Service;

use super::TransportSettings;
use crate::BoxError;

mod held_writes;
use held_writes::HeldWrites;

/// Connections refused at accept, by the cap they were over.
pub static REFUSED_CONNECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        prometheus::Opts::new(
            "usersvc_connections_refused_total",
            "Connections closed at accept because a --max-connections cap was reached.",
        ),
        &["cap"],
    )
    .expect("valid metric")
});

/// How often, at most, a refused connection is warned of in the log.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The open connections, in all and per client address.
struct Census {
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    max_total: usize,
    max_per_client: usize,
    /// When a refusal was last warned of (ms since `start`), and how many
    /// refusals have not been warned of since.
    warned_at: AtomicU64,
    unwarned: AtomicU64,
    start: Instant,
}

/// A connection's place in the [`Census`], given back when it closes.
struct Admitted {
    census: Arc<Census>,
    client: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.census.total.fetch_sub(1, Ordering::Relaxed);
        let mut per_client = self.census.per_client.lock().expect("not poisoned");
        if let Some(count) = per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                per_client.remove(&self.client);
            }
        }
    }
}

/// The address a client is counted by: an IPv6 client by its /64, so that
/// one host cannot take a cap's worth per address of its block.
fn client_block(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Census {
    fn new(max_total: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            total: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            max_total,
            max_per_client,
            warned_at: AtomicU64::new(0),
            unwarned: AtomicU64::new(0),
            start: Instant::now(),
        })
    }

    /// A place for a connection from `peer`, or the cap it is over.
    fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Admitted, &'static str> {
        let client = client_block(peer.ip());
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err("total");
        }
        let mut per_client = self.per_client.lock().expect("not poisoned");
        let count = per_client.entry(client).or_insert(0);
        if *count >= self.max_per_client {
            drop(per_client);
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err("per_client");
        }
        *count += 1;
        Ok(Admitted {
            census: Arc::clone(self),
            client,
        })
    }

    /// Counts a refusal, and warns of it unless a warning went out in the
    /// last ten seconds (the next one then says how many it covers).
    fn refused(&self, cap: &'static str, peer: SocketAddr) {
        REFUSED_CONNECTIONS.with_label_values(&[cap]).inc();
        let unwarned = self.unwarned.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.start.elapsed().as_millis() as u64;
        let last = self.warned_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && self
                .warned_at
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.unwarned.store(0, Ordering::Relaxed);
            let (max_total, max_per_client) = (self.max_total, self.max_per_client);
            tracing::warn!(
                %peer, cap, refused = unwarned, max_total, max_per_client,
                "connections refused: a --max-connections cap is reached",
            );
        }
    }
}

/// What a connection's calls and its task share.
struct Activity {
    /// Calls open on the connection now.
    open: AtomicUsize,
    /// When the last call ended, or the connection began (ms since `start`).
    idle_since: AtomicU64,
    start: Instant,
    /// Whether the first request head (or HTTP/2 preface and SETTINGS) is in.
    greeted: AtomicBool,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            start: Instant::now(),
            greeted: AtomicBool::new(false),
        })
    }

    /// When the connection will have been idle for `timeout`, if it has no
    /// call open now.
    fn idle_deadline(&self, timeout: Duration) -> Option<tokio::time::Instant> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since.load(Ordering::Acquire));
        Some(tokio::time::Instant::from_std(self.start + since + timeout))
    }
}

/// A call in progress on a connection: the connection is busy until it is
/// dropped, with the response body or with the call that failed.
struct OpenCall(Arc<Activity>);

impl OpenCall {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity))
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        let now = self.0.start.elapsed().as_millis() as u64;
        self.0.idle_since.store(now, Ordering::Release);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's TCP or TLS facts, put into each request's extensions
/// as tonic would (`auth::Caller` reads them).
#[derive(Clone)]
enum ConnectInfo {
    Tcp(TcpConnectInfo),
    Tls(TlsConnectInfo<TcpConnectInfo>),
}

/// The server's service as one connection's: its calls carry the
/// connection's facts, and count as activity.
#[derive(Clone)]
struct ConnectionService<S> {
    inner: S,
    info: ConnectInfo,
    activity: Arc<Activity>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<hyper::body::Incoming>> for ConnectionService<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Busy<B>>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<hyper::body::Incoming>) -> Self::Future {
        let call = OpenCall::new(&self.activity);
        let mut request = request.map(tonic::body::Body::new);
        match &self.info {
            ConnectInfo::Tcp(info) => {
                request.extensions_mut().insert(info.clone());
            }
            ConnectInfo::Tls(info) => {
                request.extensions_mut().insert(info.clone());
            }
        }
        // hyper calls a clone made ready for this call alone.
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await.map_err(Into::into)?;
            Ok(response.map(|body| Busy {
                inner: body,
                _call: call,
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its connection busy until it is dropped.
    pub struct Busy<B> {
        #[pin]
        inner: B,
        _call: OpenCall,
    }
}

impl<B: http_body::Body> http_body::Body for Busy<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The first bytes of a connection, read until they make a first request
/// head: HTTP/2's preface and the SETTINGS frame after it, or an HTTP/1.1
/// head up to its blank line. Costs a flag's check once they have.
#[derive(Default)]
struct Greeting {
    /// Bytes seen so far.
    seen: u64,
    /// Still matching the HTTP/2 preface.
    h2: bool,
    /// The SETTINGS frame's header, as far as it has come, and its length.
    frame: [u8; 9],
    /// The last four bytes, for HTTP/1.1's `\r\n\r\n`.
    tail: u32,
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Greeting {
    fn new() -> Self {
        Self {
            h2: true,
            ..Self::default()
        }
    }

    /// Reads `bytes`; true once the greeting is whole.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for &byte in bytes {
            let at = self.seen as usize;
            self.seen += 1;
            if self.h2 {
                if at < PREFACE.len() {
                    if byte != PREFACE[at] {
                        self.h2 = false;
                    }
                } else if at < PREFACE.len() + 9 {
                    self.frame[at - PREFACE.len()] = byte;
                } else {
                    let [a, b, c, ..] = self.frame;
                    let length = u64::from(u32::from_be_bytes([0, a, b, c]));
                    if self.seen >= (PREFACE.len() + 9) as u64 + length {
                        return true;
                    }
                    continue;
                }
                if self.h2 && at == PREFACE.len() + 8 {
                    let [a, b, c, ..] = self.frame;
                    if u32::from_be_bytes([0, a, b, c]) == 0 {
                        return true;
                    }
                }
                if self.h2 {
                    continue;
                }
            }
            self.tail = (self.tail << 8) | u32::from(byte);
            if self.tail == u32::from_be_bytes(*b"\r\n\r\n") {
                return true;
            }
        }
        false
    }
}

/// A connection's stream, with its greeting watched as it is read, and
/// its writes held once the greeting says HTTP/2.
struct Greeted<IO> {
    inner: HeldWrites<IO>,
    greeting: Option<Greeting>,
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Greeted<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(greeting) = &mut this.greeting
            && greeting.feed(&buf.filled()[before..])
        {
            if greeting.h2 {
                this.inner.hold();
            }
            this.greeting = None;
            this.activity.greeted.store(true, Ordering::Release);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Greeted<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
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
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// hyper's connection settings, from the transport's.
fn builder(transport: &TransportSettings) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(transport.header_read_timeout)
        // hyper answers 431 to a head larger than its read buffer; 8 KiB
        // is the least it takes.
        .max_buf_size((transport.max_header_list_size as usize).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(transport.max_concurrent_streams)
        .max_local_error_reset_streams(Some(transport.max_local_error_reset_streams))
        .max_pending_accept_reset_streams(Some(transport.max_pending_accept_reset_streams))
        .max_header_list_size(transport.max_header_list_size)
        .keep_alive_interval(Some(transport.keepalive_interval))
        .keep_alive_timeout(transport.keepalive_timeout);
    builder
}

/// Accepts connections on `listener` and serves each with `service` until
/// `signal` resolves; then the listener closes, every connection is shut
/// down gracefully, and this returns once all have closed.
pub async fn serve<S, B>(
    listener: TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    service: S,
    transport: TransportSettings,
    signal: impl Future<Output = ()>,
) where
    S: Service<Request<tonic::body::Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let census = Census::new(
        transport.max_connections,
        transport.max_connections_per_client,
    );
    let builder = Arc::new(builder(&transport));
    let acceptor = tls.map(TlsAcceptor::from);
    // Each connection holds a sender: all are gone once all have closed.
    let (closed_tx, closed) = tokio::sync::mpsc::channel::<()>(1);
    let (stop, stopping) = watch::channel(false);
    let mut signal = std::pin::pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, say: pause rather than spin.
                    tracing::debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let admitted = match census.admit(peer) {
            Ok(admitted) => admitted,
            Err(cap) => {
                census.refused(cap, peer);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: Arc::clone(&builder),
            service: service.clone(),
            transport: transport.clone(),
            stopping: stopping.clone(),
            _admitted: admitted,
            _closed: closed_tx.clone(),
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => {
                    connection
                        .serve(stream, |s| ConnectInfo::Tcp(s.connect_info()))
                        .await
                }
                Some(acceptor) => {
                    if let Some(tls) = super::tls::handshake(&acceptor, stream).await {
                        connection
                            .serve(tls, |s| ConnectInfo::Tls(s.connect_info()))
                            .await
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(closed_tx);
    let mut closed = closed;
    let _ = closed.recv().await;
}

/// One accepted connection, and what serving it needs.
struct Connection<S> {
    builder: Arc<Builder<TokioExecutor>>,
    service: S,
    transport: TransportSettings,
    stopping: watch::Receiver<bool>,
    _admitted: Admitted,
    _closed: tokio::sync::mpsc::Sender<()>,
}

impl<S> Connection<S> {
    async fn serve<IO, B>(mut self, io: IO, info: impl FnOnce(&IO) -> ConnectInfo)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<tonic::body::Body>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let activity = Activity::new();
        let service = ConnectionService {
            inner: self.service,
            info: info(&io),
            activity: Arc::clone(&activity),
        };
        let io = Greeted {
            inner: HeldWrites::new(io),
            greeting: Some(Greeting::new()),
            activity: Arc::clone(&activity),
        };
        let transport = &self.transport;
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
        let mut connection = std::pin::pin!(connection);
        let start = tokio::time::Instant::now();
        let greeting_deadline = tokio::time::sleep_until(start + transport.header_read_timeout);
        let mut greeting_deadline = std::pin::pin!(greeting_deadline);
        let mut greeted = false;
        let old = tokio::time::sleep_until(start + transport.max_connection_age);
        let mut old = std::pin::pin!(old);
        let ended = tokio::time::sleep_until(
            start + transport.max_connection_age + transport.max_connection_age_grace,
        );
        let mut ended = std::pin::pin!(ended);
        let idle_timeout = transport.idle_connection_timeout;
        let idle = tokio::time::sleep(idle_timeout);
        let mut idle = std::pin::pin!(idle);
        let mut going_away = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                    return;
                }
                () = &mut greeting_deadline, if !greeted => {
                    if !activity.greeted.load(Ordering::Acquire) {
                        tracing::debug!("closing a connection that sent no request head in time");
                        return;
                    }
                    greeted = true;
                }
                () = &mut idle, if !going_away => match activity.idle_deadline(idle_timeout) {
                    Some(deadline) if deadline <= tokio::time::Instant::now() => {
                        connection.as_mut().graceful_shutdown();
                        going_away = true;
                        // With no call open, only the answer to the GOAWAY's
                        // PING is awaited: a client that gives none is closed.
                        let now = tokio::time::Instant::now();
                        if now + transport.keepalive_timeout < ended.deadline() {
                            ended.as_mut().reset(now + transport.keepalive_timeout);
                        }
                    }
                    Some(deadline) => idle.as_mut().reset(deadline),
                    None => idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout),
                },
                () = &mut old, if !going_away => {
                    connection.as_mut().graceful_shutdown();
                    going_away = true;
                }
                () = &mut ended => {
                    tracing::debug!("closing a connection past its age and grace, or idle and silent");
                    return;
                }
                _ = self.stopping.wait_for(|stopping| *stopping), if !going_away => {
                    connection.as_mut().graceful_shutdown();
                    going_away = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_greeting_is_whole_at_the_end_of_its_head_or_its_settings() {
        let mut h1 = Greeting::new();
        assert!(!h1.feed(b"POST /x HTTP/1.1\r\nHost: a\r\n"));
        assert!(h1.feed(b"\r\n"));

        let mut settings = PREFACE.to_vec();
        settings.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0]);
        settings.extend_from_slice(&[0, 3, 0, 0, 0, 100]);
        for split in 0..settings.len() {
            let mut h2 = Greeting::new();
            let (a, b) = settings.split_at(split);
            assert!(!h2.feed(a), "whole too early at {split}");
            assert!(h2.feed(b), "not whole at the end, split at {split}");
        }
        // The preface alone, or with half a SETTINGS frame, is not enough.
        let mut h2 = Greeting::new();
        assert!(!h2.feed(PREFACE));
        assert!(!h2.feed(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3]));
        // An empty SETTINGS frame is whole at its header's end.
        let mut h2 = Greeting::new();
        assert!(!h2.feed(PREFACE));
        assert!(h2.feed(&[0, 0, 0, 4, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn connections_are_capped_in_all_and_per_client_block() {
        let census = Census::new(3, 2);
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let b: SocketAddr = "[2001:db8:1:2::1]:1".parse().unwrap();
        let b_neighbour: SocketAddr = "[2001:db8:1:2:ffff::9]:1".parse().unwrap();
        let first = census.admit(a).unwrap();
        let _second = census.admit(a).unwrap();
        assert_eq!(census.admit(a).err(), Some("per_client"));
        let _third = census.admit(b).unwrap();
        assert_eq!(census.admit(b_neighbour).err(), Some("total"));
        drop(first);
        // b's /64 has one of its two; b's neighbour is counted with it.
        let _fourth = census.admit(b_neighbour).unwrap();
        drop(_second);
        assert_eq!(census.admit(b).err(), Some("per_client"));
        assert!(
            census.admit(a).is_ok(),
            "a's place came back when it closed"
        );
    }
}
