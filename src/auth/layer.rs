//! The tower layer that checks every call, of every RPC kind, before routing.
//!
//! It reads only the path and the `authorization` header, so it decides
//! before any request message is decoded, and streaming RPCs cannot slip
//! past it. Refusals are answered here as trailers-only gRPC responses.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use tonic::Status;
use tower::{Layer, Service};

use super::{Access, AuthError, Claims, Policy, Verifier};
use crate::error::Error;
use crate::tls::ClientIdentity;

/// Adds the token check and the permission table in front of a service.
#[derive(Clone)]
pub struct AuthLayer {
    shared: Arc<(Verifier, Policy)>,
}

impl AuthLayer {
    pub fn new(verifier: Verifier, policy: Policy) -> Self {
        Self {
            shared: Arc::new((verifier, policy)),
        }
    }

    /// Decides on one call. On success the caller's claims, if it sent a
    /// valid token, and its client certificate's subject, under mTLS, are
    /// put into the request's extensions for the handler.
    fn authorize<B>(&self, request: &mut http::Request<B>) -> Result<(), AuthError> {
        if let Some(identity) = ClientIdentity::of(request) {
            request.extensions_mut().insert(identity);
        }
        let (verifier, policy) = &*self.shared;
        let (method, access) = policy.lookup(request.uri().path());
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
                access.permits(method, &claims)?;
                claims
            }
        };
        request.extensions_mut().insert::<Claims>(claims);
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

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// [`AuthLayer`] applied to a service.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B, ResBody> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RefusableFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.layer.authorize(&mut request) {
            Ok(()) => RefusableFuture::allowed(self.inner.call(request)),
            Err(refusal) => RefusableFuture::refused(Status::from(Error::Auth(refusal))),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's response, or a refusal answered in its place,
    /// without boxing. Shared by the layers that may refuse a call.
    #[project = Projection]
    pub enum RefusableFuture<F, ResBody> {
        Allowed { #[pin] inner: F },
        Refused { status: Option<Status>, _body: std::marker::PhantomData<fn() -> ResBody> },
    }
}

impl<F, ResBody> RefusableFuture<F, ResBody> {
    pub fn allowed(inner: F) -> Self {
        Self::Allowed { inner }
    }

    /// Answers `status` as a trailers-only gRPC response.
    pub fn refused(status: Status) -> Self {
        Self::Refused {
            status: Some(status),
            _body: std::marker::PhantomData,
        }
    }
}

impl<F, E, ResBody> Future for RefusableFuture<F, ResBody>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projection::Allowed { inner } => inner.poll(cx),
            Projection::Refused { status, .. } => {
                let status = status.take().expect("polled after completion");
                Poll::Ready(Ok(status.into_http()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::ServiceExt;

    use super::*;
    use crate::auth::{Expect, Secret, mint};
    use crate::domain::Role;

    #[tokio::test]
    async fn claims_reach_the_service_behind_the_layer() {
        let secret = Secret::from_bytes(vec![7; 32]);
        let layer = AuthLayer::new(
            Verifier::new(&secret, &Expect::default()),
            Policy::default(),
        );
        // The inner service answers with the subject it finds in the extensions.
        let inner = tower::service_fn(|request: http::Request<()>| async move {
            let sub = request.extensions().get::<Claims>().map(|c| c.sub.clone());
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
