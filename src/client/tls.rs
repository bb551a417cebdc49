//! What a client trusts, and the certificate it shows for mTLS: PEM files
//! into tonic's rustls configuration.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

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

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}
