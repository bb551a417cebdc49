//! usersvc: a gRPC user directory with no code generator.
//!
//! The contract is `proto/user_service.proto`; the wire types and the tonic
//! server and client for it are written by hand in [`pb`]. Dependencies point
//! down this table and never up:
//!
//! | module | what it owns |
//! |---|---|
//! | [`cli`] | the `usersvc` command: one file per subcommand |
//! | [`loadgen`] | the load generator behind `usersvc bench`, and the soak behind `usersvc soak` |
//! | [`client`] | retries, tokens and TLS around [`pb::client`], and the watch that resumes by itself |
//! | [`server`] | build and run: connections ([`server::connections`]), TLS, shutdown, health, reflection, metrics, the console page, Connect and gRPC-Web in [`server::web`], and the tower layers in [`server::layers`] |
//! | [`service`] | the `UserService` implementation: one method per RPC |
//! | [`error`] | the error enum and the one table from every error to a gRPC status |
//! | [`auth`] | tokens (a secret's, or an identity provider's JWKS), the permission table, the [`auth::Caller`] and its rate limit |
//! | [`store`] | the `UserStore` trait and its memory, SQLite and PostgreSQL implementations, the SQL that searches both, and the numbered history a watch resumes from |
//! | [`events`] | the event bus behind the watch streams |
//! | [`domain`] | validated types (`UserId`, `Email`, `UserName`, `Role`, labels), their violations, and search filters and orders |
//! | [`pb`] | wire types in the .proto's order, the `METHODS` table, the server and client |
//! | [`outbound`] | the HTTP/1.1 client for other services: the JWKS, the OTLP collector |
//! | [`clock`] | the time of day, in the units the contract uses |
//!
//! A call travels down the layers and back: [`server::web`] makes it gRPC
//! whatever the client spoke, [`server::layers`] wrap it,
//! [`pb::server`] decodes it, [`domain`] validates it, [`service`] decides,
//! [`store`] persists, [`events`] announces, and [`error`] answers failures.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod domain;
pub mod error;
pub mod events;
pub mod loadgen;
pub mod outbound;
pub mod pb;
pub mod server;
pub mod service;
pub mod store;

/// A boxed error for causes we log but do not match on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
