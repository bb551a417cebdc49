//! TLS and mTLS: PEM files into tonic's rustls configuration, and the
//! client certificate's subject for handlers.

use std::path::{Path, PathBuf};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Who is on the other end of an mTLS connection: the subject of the
/// client's certificate, as `CN=alice,O=example`. Put into each request's
/// extensions by the auth layer, for handlers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    pub subject: String,
}

impl ClientIdentity {
    /// The identity the connection's client certificate gives, if any.
    pub fn of<B>(request: &http::Request<B>) -> Option<ClientIdentity> {
        let certs = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()?
            .peer_certs()?;
        let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?.as_ref()).ok()?;
        let subject = cert
            .subject()
            .to_string_with_registry(x509_parser::objects::oid_registry())
            .ok()?;
        Some(ClientIdentity { subject })
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

/// The server's certificate and key, and the CA that client certificates
/// must chain to for mTLS (without it, clients need no certificate).
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    pub fn config(&self) -> Result<ServerTlsConfig, String> {
        let identity =
            Identity::from_pem(read(&self.cert, "certificate")?, read(&self.key, "key")?);
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read(ca, "client CA")?));
        }
        Ok(config)
    }
}

/// What a client trusts, and the certificate it shows for mTLS.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// The CA the server's certificate must chain to.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTls {
    pub fn config(&self) -> Result<ClientTlsConfig, String> {
        let mut config = ClientTlsConfig::new();
        match &self.ca {
            Some(ca) => {
                config = config.ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?))
            }
            None => {
                return Err(
                    "an https:// address needs --ca, the CA that signed the server's certificate"
                        .into(),
                );
            }
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(
                    read(cert, "certificate")?,
                    read(key, "key")?,
                ));
            }
            (None, None) => {}
            _ => return Err("--cert and --key go together".into()),
        }
        Ok(config)
    }
}
