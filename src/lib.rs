//! usersvc: a gRPC user directory with no code generator.
//!
//! The contract is `proto/user_service.proto`; the wire types and the tonic
//! server and client for it are written by hand in [`pb`]. A call travels:
//!
//! | step | module |
//! |---|---|
//! | one log line per call, message counts, metrics | [`telemetry`], [`metrics`] |
//! | token and permission check | [`auth`] (a [`guard`]) |
//! | per-caller rate limit, oversized requests | [`limits`] |
//! | noticing a request stream cut off | [`inbound`] |
//! | bytes to messages, routing | [`pb::server`] |
//! | wire types to validated domain types | [`domain`] |
//! | the decision, per RPC | [`service`] |
//! | storage | [`store`] |
//! | announcing changes to watchers | [`events`] |
//! | every failure to a gRPC status | [`error`] |
//!
//! [`health`] answers load balancers' probes and [`reflection`] describes the
//! API; [`tls`] configures rustls. [`server`] assembles it all on a bound
//! listener, [`shutdown`] says when to stop, [`client`] adds retries, tokens
//! and TLS to [`pb::client`], [`bench`] is the load generator, and [`cli`] is the `usersvc`
//! command.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod domain;
pub mod error;
pub mod events;
pub mod guard;
pub mod health;
pub mod inbound;
pub mod limits;
pub mod metrics;
pub mod pb;
pub mod reflection;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tls;

/// A boxed error for causes we log but do not match on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
