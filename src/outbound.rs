//! The HTTP/1.1 client usersvc reaches other services with: the identity
//! provider's JWKS, and the OTLP collector over http/protobuf. One request
//! per connection, the answer read to a bound, on the hyper and rustls the
//! server already has, rather than a general HTTP client with a TLS stack
//! of its own.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// What https trusts: a CA given (`--jwks-ca`), or the system's roots.
#[derive(Clone)]
pub struct Https {
    connector: TlsConnector,
}

impl std::fmt::Debug for Https {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Https(..)")
    }
}

impl Https {
    pub fn new(ca: Option<&Path>) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(ca) => {
                let pem = std::fs::read(ca)
                    .map_err(|e| format!("cannot read the CA {}: {e}", ca.display()))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| format!("the CA {}: {e}", ca.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("the CA {}: {e}", ca.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err("no CA certificates found on this system; give a CA file".into());
                }
            }
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }
}

/// An answer's body and its `Cache-Control`.
pub struct Answer {
    pub body: Vec<u8>,
    pub cache_control: Option<String>,
}

/// GETs `uri` and reads at most `limit` bytes of a 200 answer. Redirects
/// are not followed: the configured URL is the one trusted.
pub async fn get(uri: &Uri, https: Option<&Https>, limit: usize) -> Result<Answer, String> {
    let request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("cannot make the request: {e}"))?;
    let response = send(uri, https, request, limit).await?;
    let status = response.status();
    if status != StatusCode::OK {
        return Err(format!("answered {status}, not 200"));
    }
    let cache_control = response
        .headers()
        .get(header::CACHE_CONTROL)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    Ok(Answer {
        body: response.into_body().to_vec(),
        cache_control,
    })
}

/// Sends `request` (its URI's path; `Host` and `User-Agent` are set here) to
/// `uri`'s host on a fresh connection, and reads at most `limit` bytes of
/// the answer, whatever its status.
pub async fn send(
    uri: &Uri,
    https: Option<&Https>,
    mut request: Request<Full<Bytes>>,
    limit: usize,
) -> Result<http::Response<Bytes>, String> {
    let host = uri.host().ok_or("the URL has no host")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if https.is_some() { 443 } else { 80 });
    let authority = uri.authority().map_or(host, |a| a.as_str());
    // The request line names the path; the host goes in `Host`.
    *request.uri_mut() = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e| format!("the URL's path: {e}"))?;
    let headers = request.headers_mut();
    headers.insert(
        header::HOST,
        authority
            .parse()
            .map_err(|_| format!("{authority} is not a host"))?,
    );
    headers.insert(
        header::USER_AGENT,
        header::HeaderValue::from_static(concat!("usersvc/", env!("CARGO_PKG_VERSION"))),
    );
    let tcp = TcpStream::connect((bare, port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let response = match https {
        Some(https) => {
            let name = ServerName::try_from(bare.to_owned())
                .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
            let tls = https
                .connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host}: {e}"))?;
            exchange(TokioIo::new(tls), request).await?
        }
        None => exchange(TokioIo::new(tcp), request).await?,
    };
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok(http::Response::from_parts(parts, body))
}

/// Sends one request on a fresh HTTP/1.1 connection.
async fn exchange<IO>(
    io: IO,
    request: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))
}
