//! The gate that checks every call, of every RPC kind, before routing.
//!
//! It reads only the path and the `authorization` header, so it decides
//! before any request message is decoded, and streaming RPCs cannot slip
//! past it. Refusals are answered as trailers-only gRPC responses.

use std::sync::Arc;

use http::header::AUTHORIZATION;
use tonic::Status;

use super::gate::{Gate, GateLayer, Refusal, SecondLook};
use crate::auth::{Access, AuthError, Caller, Cidr, Policy, Verifier};
use crate::error::Error;
use crate::pb::{Method, SERVICE_NAME};

/// The token check and the permission table, in front of a service.
pub type AuthLayer = GateLayer<Authorizer>;

/// Decides on calls with the verifier and the permission table.
#[derive(Clone)]
pub struct Authorizer {
    shared: Arc<(Verifier, Policy)>,
    /// Proxies whose `x-forwarded-for` names the client (`--trusted-proxy`).
    proxies: Arc<[Cidr]>,
}

impl Authorizer {
    pub fn new(verifier: Verifier, policy: Policy) -> Self {
        Self {
            shared: Arc::new((verifier, policy)),
            proxies: Arc::new([]),
        }
    }

    /// Takes the client's address from `x-forwarded-for` on connections
    /// from `proxies`.
    #[must_use]
    pub fn trusting(mut self, proxies: Vec<Cidr>) -> Self {
        self.proxies = proxies.into();
        self
    }

    /// The layer that puts this check in front of a service.
    pub fn layer(self) -> AuthLayer {
        GateLayer::new(self)
    }

    /// Decides on one call to `method`. On success the caller's claims, if it
    /// sent a valid token, are put into the request's [`Caller`] for the
    /// layers behind this one and the handler.
    fn authorize<B>(
        &self,
        method: Method,
        request: &mut http::Request<B>,
    ) -> Result<(), AuthError> {
        let (verifier, policy) = &*self.shared;
        let access = policy.lookup(method);
        let header = request.headers().get(AUTHORIZATION);
        let claims = match (access, header) {
            // A public method ignores a bad token rather than failing a call
            // that needs none.
            (Access::Public, None) => return Ok(()),
            (Access::Public, Some(value)) => match bearer(value).and_then(|t| verifier.verify(t)) {
                Ok(claims) => claims,
                Err(_) => return Ok(()),
            },
            (_, None) => return Err(AuthError::MissingToken),
            (access, Some(value)) => {
                let claims = verifier.verify(bearer(value)?)?;
                access.permits(method.name(), &claims, verifier.role_claim())?;
                claims
            }
        };
        Caller::of(request).claims = Some(claims);
        Ok(())
    }
}

/// The token in `Bearer <token>`, with the scheme in any case (RFC 7235).
fn bearer(value: &http::HeaderValue) -> Result<&str, AuthError> {
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

impl Gate for Authorizer {
    fn admit<B>(&self, request: &mut http::Request<B>) -> Result<(), Refusal> {
        if !self.proxies.is_empty() {
            let peer = Caller::of(request).peer;
            let forwarded = Caller::forwarded_client(&self.proxies, peer, request.headers());
            Caller::of(request).forwarded = forwarded;
        }
        let path = request.uri().path();
        match Method::from_path(path) {
            Some(method) => self.authorize(method, request).map_err(|refusal| {
                // A key the set lacks may have just been published: the call
                // waits for the one refetch allowed, and is checked again.
                let refetch = match request.extensions().get::<SecondLook>() {
                    None => self.shared.0.refetch(&refusal),
                    Some(SecondLook) => None,
                };
                let status = Status::from(Error::Auth(refusal));
                match refetch {
                    Some(until) => Refusal::After {
                        until: Box::pin(until),
                        otherwise: status,
                    },
                    None => Refusal::Now(status),
                }
            }),
            // Another method of ours is refused here, the same whatever the
            // token, before a token could tell a prober anything.
            None if is_under_user_service(path) => {
                Err(Status::from(Error::UnknownMethod(path.to_owned())).into())
            }
            // Health and reflection are open to anyone.
            None => Ok(()),
        }
    }
}

/// Whether `path` names a method of `UserService`, known or not.
fn is_under_user_service(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|path| path.strip_prefix(SERVICE_NAME))
        .is_some_and(|method| method.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::auth::{Expect, Secret, mint};
    use crate::domain::Role;

    #[tokio::test]
    async fn claims_reach_the_service_behind_the_layer() {
        let secret = Secret::from_bytes(vec![7; 32]);
        let layer = Authorizer::new(
            Verifier::new(&secret, &Expect::default()),
            Policy::default(),
        )
        .layer();
        // The inner service answers with the subject it finds in the extensions.
        let inner = tower::service_fn(|request: http::Request<()>| async move {
            let sub = request
                .extensions()
                .get::<Caller>()
                .and_then(|c| c.claims.as_ref())
                .map(|c| c.sub.clone());
            Ok::<_, std::convert::Infallible>(http::Response::new(sub))
        });
        let token = mint(
            &secret,
            "carol",
            Role::Editor,
            Duration::from_secs(60),
            &Expect::default(),
        )
        .unwrap();
        let request = http::Request::builder()
            .uri("/techoral.users.v1.UserService/CreateUser")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        let response = layer.layer(inner).oneshot(request).await.unwrap();
        assert_eq!(response.into_body().as_deref(), Some("carol"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        let value = |s: &'static str| http::HeaderValue::from_static(s);
        assert_eq!(bearer(&value("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(&value("bEaReR abc")).unwrap(), "abc");
        assert!(matches!(
            bearer(&value("Basic abc")),
            Err(AuthError::Malformed)
        ));
        assert!(matches!(bearer(&value("abc")), Err(AuthError::Malformed)));
        assert!(matches!(
            bearer(&value("Bearer ")),
            Err(AuthError::Malformed)
        ));
    }
}
