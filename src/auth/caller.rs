//! Who is calling: the token's subject, else the client certificate's, else
//! the peer address. Worked out once per call by the server's layers and
//! kept in the request's extensions, where the permission check, the rate
//! limit, the access log and the audit log all read the same answer.

use std::net::{IpAddr, SocketAddr};
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
    /// The client a trusted proxy says it forwards (`x-forwarded-for`).
    pub forwarded: Option<IpAddr>,
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
            forwarded: None,
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
    /// subject, certificate or address. An IPv6 address counts by its /64,
    /// the block one host is usually given, so that one host cannot take a
    /// bucket per address of its own.
    pub fn key(&self) -> String {
        let address = self.forwarded.or(self.peer.map(|peer| peer.ip()));
        match (&self.claims, &self.certificate, address) {
            (Some(claims), _, _) => format!("sub:{}", claims.sub),
            (None, Some(subject), _) => format!("cert:{subject}"),
            (None, None, Some(ip)) => format!("ip:{}", network(ip)),
            (None, None, None) => "unknown".to_owned(),
        }
    }

    /// The client a trusted proxy forwards: when the connection comes from
    /// one of `proxies`, the rightmost `x-forwarded-for` address that is not
    /// itself a trusted proxy. From anyone else the header is ignored, since
    /// anyone can send it.
    pub fn forwarded_client(
        proxies: &[Cidr],
        peer: Option<SocketAddr>,
        headers: &http::HeaderMap,
    ) -> Option<IpAddr> {
        let trusted = peer.is_some_and(|peer| proxies.iter().any(|p| p.contains(peer.ip())));
        if !trusted {
            return None;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        hops.into_iter()
            .rev()
            .find(|hop| !proxies.iter().any(|p| p.contains(*hop)))
    }
}

/// The block an address is counted in: itself for IPv4, its /64 for IPv6
/// (an IPv4-mapped one is its IPv4 address).
fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{net}/64")
            }
        },
    }
}

/// A block of addresses, as `10.0.0.0/8` or `fd00::/8` (`--trusted-proxy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// `ADDRESS/PREFIX`, or an address alone for just that address.
    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = text.split_once('/').unwrap_or((text, ""));
        let net: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an address block like 10.0.0.0/8"))?;
        let most = if net.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            most
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= most)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {most}"))?
        };
        Ok(Self { net, prefix })
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
            role: Some(Role::Viewer),
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
            forwarded: None,
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

    #[test]
    fn an_ipv6_host_counts_by_its_64_and_only_trusted_proxies_forward() {
        let mut caller = Caller {
            peer: Some("[2001:db8:1:2:aaaa::1]:4000".parse().unwrap()),
            ..Caller::default()
        };
        assert_eq!(caller.key(), "ip:2001:db8:1:2::/64");
        caller.peer = Some("[2001:db8:1:2:ffff::9]:4000".parse().unwrap());
        assert_eq!(caller.key(), "ip:2001:db8:1:2::/64", "the same host");
        caller.peer = Some("[::ffff:192.0.2.1]:1".parse().unwrap());
        assert_eq!(caller.key(), "ip:192.0.2.1");

        let proxies: Vec<Cidr> = ["10.0.0.0/8", "fd00::/8"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.9, 203.0.113.7, 10.1.2.3".parse().unwrap(),
        );
        let caller_via = |peer: &str| {
            let peer = Some(peer.parse().unwrap());
            Caller {
                peer,
                forwarded: Caller::forwarded_client(&proxies, peer, &headers),
                ..Caller::default()
            }
        };
        assert_eq!(
            caller_via("10.0.0.5:1").key(),
            "ip:203.0.113.7",
            "the rightmost hop no proxy of ours"
        );
        assert_eq!(
            caller_via("192.0.2.50:1").key(),
            "ip:192.0.2.50",
            "ignored from an untrusted peer"
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }
}
