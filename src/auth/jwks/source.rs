//! Where a JWKS is read from: a file, or a URL and how long its answer may
//! be kept.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

use crate::outbound::{self, Https};

/// The largest JWKS read: a provider publishes a few keys, a few KiB.
pub const MAX_BYTES: usize = 1 << 20;

/// How long a fetch may take before it counts as failed.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a fetched set is kept when the answer says nothing, and the
/// most it is kept whatever it says: a day bounds how long a key the
/// provider withdrew keeps verifying.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
pub const LONGEST_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// How often a key file is looked at for changes.
pub const FILE_POLL: Duration = Duration::from_secs(1);

/// Default of `--jwks-refetch-interval`: the least time between two
/// fetches. A token with an unknown `kid` costs at most one fetch per
/// interval, so tokens made up by anyone cannot make the server hammer its
/// provider.
pub const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// The least `--jwks-refetch-interval`: below it a provider answering
/// `no-cache`, or a stream of made-up `kid`s, would have usersvc fetch in
/// a loop.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(1);

/// Where the keys are and how often they may be fetched.
#[derive(Clone, Debug)]
pub struct Config {
    pub source: Source,
    pub refetch_interval: Duration,
    /// Whether HS256 tokens signed with `--jwt-secret-file` are taken too.
    pub with_secret: bool,
}

/// A JWKS file or URL.
#[derive(Clone, Debug)]
pub enum Source {
    File(PathBuf),
    Url {
        uri: Uri,
        /// The CA an https URL's certificate must chain to; the system's
        /// roots when `None`.
        ca: Option<PathBuf>,
    },
}

impl Source {
    /// A URL source, refused unless it is https, or http to a loopback
    /// address: keys fetched in the clear could be swapped by anyone on the
    /// path, and then tokens minted by them.
    pub fn url(url: &str, ca: Option<PathBuf>) -> Result<Source, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("--jwks-url {url:?} is not a URL: {e}"))?;
        let host = uri
            .host()
            .ok_or_else(|| format!("--jwks-url {url:?} has no host"))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if is_loopback(host) => {
                if ca.is_some() {
                    return Err("--jwks-ca is for an https --jwks-url".into());
                }
            }
            Some("http") => {
                return Err(format!(
                    "--jwks-url {url:?}: plain http is taken only for a loopback address; \
                     use https"
                ));
            }
            _ => return Err(format!("--jwks-url {url:?}: expected an https:// URL")),
        }
        Ok(Source::Url { uri, ca })
    }

    /// What the log and metrics call this source.
    pub fn describe(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Url { uri, .. } => uri.to_string(),
        }
    }
}

/// `localhost` or a loopback address: the only hosts keys may come from
/// over plain http.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A source made ready to read: an https client built once.
pub struct Reader {
    source: Source,
    https: Option<Https>,
}

/// A JWKS as read, and how long it may be kept.
pub struct Fetched {
    pub body: Vec<u8>,
    pub keep: Duration,
}

impl Reader {
    pub fn new(source: Source) -> Result<Self, String> {
        let https = match &source {
            Source::Url { uri, ca } if uri.scheme_str() == Some("https") => {
                Some(Https::new(ca.as_deref())?)
            }
            _ => None,
        };
        Ok(Self { source, https })
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Reads the set once.
    pub async fn read(&self) -> Result<Fetched, String> {
        match &self.source {
            Source::File(path) => {
                let body = tokio::fs::read(path)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if body.len() > MAX_BYTES {
                    return Err(format!("{} is over {MAX_BYTES} bytes", path.display()));
                }
                Ok(Fetched {
                    body,
                    keep: FILE_POLL,
                })
            }
            Source::Url { uri, .. } => {
                let answer = tokio::time::timeout(
                    FETCH_TIMEOUT,
                    outbound::get(uri, self.https.as_ref(), MAX_BYTES),
                )
                .await
                .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))??;
                Ok(Fetched {
                    body: answer.body,
                    keep: keep_for(answer.cache_control.as_deref()),
                })
            }
        }
    }
}

/// How long an answer with this `Cache-Control` may be kept: its `max-age`,
/// or [`DEFAULT_MAX_AGE`] without one, and no longer than
/// [`LONGEST_MAX_AGE`]. `no-cache` and `no-store` keep it for no time, and
/// the refetch interval is then the floor.
pub fn keep_for(cache_control: Option<&str>) -> Duration {
    let Some(header) = cache_control else {
        return DEFAULT_MAX_AGE;
    };
    let mut keep = DEFAULT_MAX_AGE;
    for directive in header.split(',').map(str::trim) {
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        match name.to_ascii_lowercase().as_str() {
            "no-cache" | "no-store" => return Duration::ZERO,
            "max-age" => {
                if let Ok(seconds) = value.trim_matches('"').parse::<u64>() {
                    keep = Duration::from_secs(seconds);
                }
            }
            _ => {}
        }
    }
    keep.min(LONGEST_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_over_https_or_from_loopback_only() {
        assert!(Source::url("https://idp.example.com/certs", None).is_ok());
        assert!(Source::url("http://127.0.0.1:8080/certs", None).is_ok());
        assert!(Source::url("http://[::1]:8080/certs", None).is_ok());
        assert!(Source::url("http://localhost/certs", None).is_ok());
        let err = Source::url("http://idp.example.com/certs", None).unwrap_err();
        assert!(
            err.contains("plain http is taken only for a loopback"),
            "{err}"
        );
        assert!(Source::url("ftp://idp.example.com/certs", None).is_err());
        assert!(Source::url("/certs", None).is_err());
    }

    #[test]
    fn cache_control_is_honoured_within_bounds() {
        assert_eq!(keep_for(None), DEFAULT_MAX_AGE);
        assert_eq!(
            keep_for(Some("public, max-age=60")),
            Duration::from_secs(60)
        );
        assert_eq!(keep_for(Some("max-age=99999999")), LONGEST_MAX_AGE);
        assert_eq!(keep_for(Some("no-cache")), Duration::ZERO);
        assert_eq!(keep_for(Some("max-age=60, no-store")), Duration::ZERO);
        assert_eq!(keep_for(Some("max-age=soon")), DEFAULT_MAX_AGE);
    }
}
