//! The per-caller rate limit, in front of UserService's methods (health and
//! reflection are not limited). It sits behind auth, so that the caller is
//! known. Over the limit is RESOURCE_EXHAUSTED, with the wait in the message.

use tonic::Status;

use super::gate::{Gate, GateLayer, Refusal};
use crate::auth::{Caller, RateLimiter};
use crate::error::Error;
use crate::pb::Method;

/// The layer that puts `limiter` in front of a service.
pub fn layer(limiter: RateLimiter) -> GateLayer<RateLimiter> {
    GateLayer::new(limiter)
}

impl Gate for RateLimiter {
    fn admit<B>(&self, request: &mut http::Request<B>) -> Result<(), Refusal> {
        if !self.is_on() || Method::from_path(request.uri().path()).is_none() {
            return Ok(());
        }
        self.take(Caller::of(request).key())
            .map_err(|wait| Status::from(Error::RateLimited { retry_after: wait }).into())
    }
}
