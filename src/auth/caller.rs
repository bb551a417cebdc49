//! Who is calling: the token's subject, else the client certificate's, else
//! the peer address. Worked out once per call by the server's layers and
//! kept in the request's extensions, where the permission check, the rate
//! limit, the access log and the audit log all read the same answer.

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::Claims;

/// Everything known of the other end of one call.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The TCP peer, when the call came over TCP.
    pub peer: Option<SocketAddr>,
    /// The subject of the client's certificate under mTLS, as
    /// `CN=alice,O=example`.
    pub certificate: Option<String>,
    /// The claims of the caller's token, once a valid one was checked.
    pub claims: Option<Arc<Claims>>,
}

impl Caller {
    /// What the connection says of a request's caller: its address and, under
    /// mTLS, its certificate's subject.
    pub fn of_connection<B>(request: &http::Request<B>) -> Caller {
        let extensions = request.extensions();
        let tls = extensions.get::<TlsConnectInfo<TcpConnectInfo>>();
        let tcp = extensions
            .get::<TcpConnectInfo>()
            .or_else(|| tls.map(TlsConnectInfo::get_ref));
        Caller {
            peer: tcp.and_then(TcpConnectInfo::remote_addr),
            certificate: tls.and_then(certificate_subject),
            claims: None,
        }
    }

    /// The caller recorded on `request`, recorded first if it is not there.
    pub fn of<B>(request: &mut http::Request<B>) -> &mut Caller {
        if request.extensions().get::<Caller>().is_none() {
            let caller = Caller::of_connection(request);
            request.extensions_mut().insert(caller);
        }
        request
            .extensions_mut()
            .get_mut::<Caller>()
            .expect("inserted above")
    }

    /// The name the audit log gives the caller: the token's subject, else
    /// the certificate's.
    pub fn actor(&self) -> &str {
        match (&self.claims, &self.certificate) {
            (Some(claims), _) => &claims.sub,
            (None, Some(subject)) => subject,
            (None, None) => "anonymous",
        }
    }

    /// The key a caller's share of a limit is kept under: one per token
    /// subject, certificate or address.
    pub fn key(&self) -> String {
        match (&self.claims, &self.certificate, self.peer) {
            (Some(claims), _, _) => format!("sub:{}", claims.sub),
            (None, Some(subject), _) => format!("cert:{subject}"),
            (None, None, Some(peer)) => format!("ip:{}", peer.ip()),
            (None, None, None) => "unknown".to_owned(),
        }
    }
}

/// The subject of the connection's client certificate, if it sent one.
fn certificate_subject(tls: &TlsConnectInfo<TcpConnectInfo>) -> Option<String> {
    let certs = tls.peer_certs()?;
    let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?.as_ref()).ok()?;
    cert.subject()
        .to_string_with_registry(x509_parser::objects::oid_registry())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn claims(sub: &str) -> Arc<Claims> {
        Arc::new(Claims {
            sub: sub.into(),
            role: Role::Viewer,
            exp: 0,
            iat: None,
            nbf: None,
            iss: None,
            aud: None,
        })
    }

    #[test]
    fn the_token_comes_first_then_the_certificate_then_the_address() {
        let peer = Some("192.0.2.7:4000".parse().unwrap());
        let mut caller = Caller {
            peer,
            certificate: Some("CN=alice".into()),
            claims: Some(claims("bob")),
        };
        assert_eq!((caller.key().as_str(), caller.actor()), ("sub:bob", "bob"));
        caller.claims = None;
        assert_eq!(
            (caller.key().as_str(), caller.actor()),
            ("cert:CN=alice", "CN=alice")
        );
        caller.certificate = None;
        assert_eq!(
            (caller.key().as_str(), caller.actor()),
            ("ip:192.0.2.7", "anonymous")
        );
        // The port is not part of the key: every connection from one
        // address shares its bucket.
        caller.peer = Some("192.0.2.7:5000".parse().unwrap());
        assert_eq!(caller.key(), "ip:192.0.2.7");
        assert_eq!(Caller::default().key(), "unknown");
    }
}
