//! The tower layers in front of the service, one a file, outermost first:
//!
//! | layer | what it does |
//! |---|---|
//! | [`telemetry`] | one access line per call, message counts, metrics, `x-request-id` |
//! | (a [`gate`]) | answers the calls the web layer refused from their headers |
//! | [`auth`] | token and permission check; unknown methods refused |
//! | [`rate_limit`] | a token bucket per caller |
//! | [`request_memory`] | caps the request bytes held before a handler, per caller and in all |
//! | [`stream_end`] | notices a request stream that was cut off |
//! | [`oversize`] | RESOURCE_EXHAUSTED for a request over the size limit |
//! | [`deadline`] | the default deadline, DEADLINE_EXCEEDED |
//!
//! [`gate`] is the shape the auth check and the rate limit share.
//!
//! In front of them all, outermost first: the host check (on a loopback
//! address), CORS (when origins are listed), the console page
//! ([`super::console`]), the web protocols turned into gRPC ([`super::web`]),
//! and tonic-web. So every protocol reaches these layers as gRPC, and none
//! of them reads a request body: each decides from the headers.

pub mod auth;
pub mod deadline;
pub mod gate;
pub mod oversize;
pub mod rate_limit;
pub mod request_memory;
pub mod stream_end;
pub mod telemetry;
