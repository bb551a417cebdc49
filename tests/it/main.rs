//! The integration tests, as one binary: each module is one concern, and
//! `support` starts a real server on 127.0.0.1:0 and gives clients and
//! tokens for it. One binary links the crate once instead of once per file.
//!
//! Logs are silent unless `TEST_LOG` is set.

mod support;

mod auth;
mod cancelled_writes;
mod cli;
mod client;
mod compression;
mod contract;
mod encoding;
mod fuzzing;
mod hardening;
mod health;
mod identity;
mod interop_python;
mod least_privilege;
mod limits;
mod memory;
mod metrics;
mod outage;
mod persistence;
mod private_files;
mod reflection;
mod request_ids;
mod resume;
mod search;
mod shutdown;
mod slow_log;
mod store_contract;
mod stored_text;
mod stream_limits;
mod streaming;
mod tls;
mod traces;
mod unary;
mod vectors;
mod watch;
mod web;
mod web_limits;
