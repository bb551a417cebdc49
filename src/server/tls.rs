//! The server's TLS and mTLS: PEM files into a rustls configuration, and
//! the handshakes, done here rather than by tonic because tonic offers only
//! `h2` in ALPN, and a browser or curl that asks for HTTP/1.1 (Connect,
//! gRPC-Web) would be refused. Here ALPN offers `h2` and `http/1.1`. The
//! connection reaches tonic as a `TlsStream`, so the client certificate's
//! subject still reaches handlers as `auth::Caller`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

/// How long a client may take over its handshake before it is dropped:
/// a client that stalls there holds no more than a task for this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's certificate and key, and the CA that client certificates
/// must chain to for mTLS (without it, clients need no certificate).
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// The rustls configuration: the certificate chain and key, client
    /// certificates checked against the CA when one is given, and ALPN
    /// offering HTTP/2 first, then HTTP/1.1.
    pub fn config(&self) -> Result<Arc<ServerConfig>, String> {
        let certs = CertificateDer::pem_slice_iter(&read(&self.cert, "certificate")?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the certificate {}: {e}", self.cert.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key, "key")?)
            .map_err(|e| format!("the key {}: {e}", self.key.display()))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&read(ca, "client CA")?) {
                    let cert = cert.map_err(|e| format!("the client CA {}: {e}", ca.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("the client CA {}: {e}", ca.display()))?;
                }
                let verifier = WebPkiClientVerifier::builder(roots.into())
                    .build()
                    .map_err(|e| format!("the client CA {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("the certificate and key: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The handshake with one client, within [`HANDSHAKE_TIMEOUT`]; `None`
/// (logged at debug) when it failed or took too long: the client's failure,
/// not the server's.
pub async fn handshake<IO>(acceptor: &TlsAcceptor, stream: IO) -> Option<TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// Handshakes with every connection `incoming` yields, each in a task of
/// its own so that a slow client holds up no other, and yields the
/// connections that completed theirs. A failed handshake is logged at debug
/// and dropped: it is the client's failure, not the server's.
pub fn accept<S, IO>(
    incoming: S,
    config: Arc<ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<IO>>>
where
    S: tokio_stream::Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio_stream::StreamExt;
    let acceptor = TlsAcceptor::from(config);
    let (ready, handshaken) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        while let Some(accepted) = incoming.next().await {
            let stream = match accepted {
                Ok(stream) => stream,
                Err(error) => {
                    if ready.send(Err(error)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let (acceptor, ready) = (acceptor.clone(), ready.clone());
            tokio::spawn(async move {
                if let Some(tls) = handshake(&acceptor, stream).await {
                    let _ = ready.send(Ok(tls)).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(handshaken)
}
