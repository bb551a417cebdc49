//! The names a server on a loopback address answers browsers under.
//!
//! A page on another site can point its own name at 127.0.0.1 (DNS
//! rebinding) and then call a developer's local server as if it were its
//! own origin, past CORS, and read the directory. Its requests carry its
//! own name in `Host`. So when the server listens on a loopback address,
//! a browser-protocol request (Connect, gRPC-Web, the console) whose host
//! is not a loopback name or one listed with `--allowed-host` is refused
//! with 403. gRPC, which no browser can speak, is not affected.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::Service;

/// Adds [`Hosts`] in front of a service.
#[derive(Clone, Debug)]
pub struct Layer {
    allowed: Arc<[String]>,
}

impl Layer {
    /// The check, for a server listening on a loopback address; `allowed`
    /// are the other names it answers to (lower case, no port).
    pub fn new(allowed: Vec<String>) -> Self {
        let allowed = allowed
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        Self { allowed }
    }
}

impl<S> tower::Layer<S> for Layer {
    type Service = Hosts<S>;

    fn layer(&self, inner: S) -> Hosts<S> {
        Hosts {
            inner,
            allowed: Arc::clone(&self.allowed),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Hosts<S> {
    inner: S,
    allowed: Arc<[String]>,
}

/// Whether `request` speaks gRPC, which browsers cannot.
fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("application/grpc") && !v.starts_with("application/grpc-web")
        })
}

/// The host a request names, without its port: HTTP/2's `:authority`, or
/// HTTP/1.1's `Host`.
fn host_of<B>(request: &Request<B>) -> Option<String> {
    let authority = match request.uri().authority() {
        Some(authority) => authority.as_str().to_owned(),
        None => request
            .headers()
            .get(header::HOST)?
            .to_str()
            .ok()?
            .to_owned(),
    };
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h),
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// A name that can only mean this machine.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl<S, B> Service<Request<B>> for Hosts<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if is_grpc(&request) {
            return Either::Left(self.inner.call(request));
        }
        let allowed =
            host_of(&request).is_none_or(|host| is_loopback(&host) || self.allowed.contains(&host));
        if allowed {
            return Either::Left(self.inner.call(request));
        }
        let mut refused = Response::new(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from_static(
                b"this server answers browsers only under a loopback name or one given with --allowed-host\n",
            ),
        )));
        *refused.status_mut() = StatusCode::FORBIDDEN;
        refused.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Either::Right(ready(Ok(refused)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authority: Option<&str>, host: Option<&str>) -> Request<()> {
        let mut builder = Request::builder();
        if let Some(authority) = authority {
            builder = builder.uri(format!("http://{authority}/"));
        }
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn hosts_are_read_without_their_ports() {
        assert_eq!(
            host_of(&request(None, Some("LocalHost:50051"))).unwrap(),
            "localhost"
        );
        assert_eq!(host_of(&request(Some("[::1]:8080"), None)).unwrap(), "::1");
        assert_eq!(
            host_of(&request(Some("evil.example.:80"), None)).unwrap(),
            "evil.example"
        );
        assert!(host_of(&request(None, None)).is_none());
        assert!(is_loopback("127.0.0.2") && is_loopback("::1") && is_loopback("app.localhost"));
        assert!(!is_loopback("localhost.evil.example") && !is_loopback("10.0.0.1"));
    }
}
