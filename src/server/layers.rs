//! The tower layers in front of the service, one a file, outermost first:
//!
//! | layer | what it does |
//! |---|---|
//! | [`telemetry`] | one access line per call, message counts, metrics, `x-request-id` |
//! | [`auth`] | token and permission check; unknown methods refused |
//! | [`rate_limit`] | a token bucket per caller |
//! | [`stream_end`] | notices a request stream that was cut off |
//! | [`oversize`] | RESOURCE_EXHAUSTED for a request over the size limit |
//! | [`deadline`] | the default deadline, DEADLINE_EXCEEDED |
//!
//! [`gate`] is the shape the auth check and the rate limit share.
//!
//! In front of them all, outermost first: CORS (when origins are listed),
//! the console page ([`super::console`]), the web protocols turned into
//! gRPC ([`super::web`]), and tonic-web. So every protocol reaches these
//! layers as gRPC.

pub mod auth;
pub mod deadline;
pub mod gate;
pub mod oversize;
pub mod rate_limit;
pub mod stream_end;
pub mod telemetry;
