//! The console at `GET /`: one page, embedded in the binary (HTML, CSS and
//! plain JS, no build step, no CDN), that shows the directory and talks
//! Connect JSON to the server that served it. `--console=false` turns it
//! off, and then `/` is what it was: not found.
//!
//! The page is served with a strict Content-Security-Policy: scripts,
//! styles and calls from its own origin only, nothing inline, no frames.

use std::future::{Ready, ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::Either;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tower::Service;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Only the page's own origin, and nothing inline.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The asset at `path`, with its content type.
fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some((INDEX, "text/html; charset=utf-8")),
        "/console.js" => Some((SCRIPT, "text/javascript; charset=utf-8")),
        "/console.css" => Some((STYLE, "text/css; charset=utf-8")),
        _ => None,
    }
}

fn page(body: &'static str, content_type: &'static str) -> Response<tonic::body::Body> {
    let mut response = Response::new(tonic::body::Body::new(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Serves the console in front of `S`, when on.
#[derive(Clone, Debug)]
pub struct ConsoleLayer {
    on: bool,
}

impl ConsoleLayer {
    pub fn new(on: bool) -> Self {
        Self { on }
    }
}

impl<S> tower::Layer<S> for ConsoleLayer {
    type Service = Console<S>;

    fn layer(&self, inner: S) -> Console<S> {
        Console { inner, on: self.on }
    }
}

#[derive(Clone, Debug)]
pub struct Console<S> {
    inner: S,
    on: bool,
}

impl<S, B> Service<Request<B>> for Console<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    /// The page at once, or the call: no allocation on the way to gRPC.
    type Future = Either<Ready<Result<Self::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let get = request.method() == Method::GET || request.method() == Method::HEAD;
        // A Connect GET carries its message in the query; the console's
        // paths have none of their own.
        match asset(request.uri().path()).filter(|_| self.on && get) {
            Some((body, content_type)) => Either::Left(ready(Ok(page(body, content_type)))),
            None if !self.on && request.uri().path() == "/" => {
                let mut response = Response::new(tonic::body::Body::empty());
                *response.status_mut() = StatusCode::NOT_FOUND;
                Either::Left(ready(Ok(response)))
            }
            None => Either::Right(self.inner.call(request)),
        }
    }
}
