//! The service's error, and the one table that turns every error into a
//! gRPC status.
//!
//! Each layer has its own error enum (`StoreError`, `AuthError`); they all
//! become [`Error`], and `impl From<Error> for Status` below is the only place
//! that picks a code or a message for the caller. Internal causes are logged
//! here and never sent: a caller learns "store unavailable", not a SQL error.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::AuthError;
use crate::domain::{FieldViolation, UserId, Violations};
use crate::store::StoreError;

/// A failed call, whatever layer it failed in.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(Violations),
    #[error("user {0} not found")]
    NotFound(UserId),
    #[error("email {0} is already taken")]
    EmailTaken(String),
    #[error("idempotency key was already used with a different request")]
    IdempotencyKeyReused,
    #[error(
        "user {0} changed since it was read (its etag is no longer the one sent): read it again and reapply the change"
    )]
    Changed(UserId),
    /// An editor's change to a user who is an admin, as the write's own
    /// transaction found it.
    #[error("only an admin may change an admin, and user {0} is one")]
    AdminTarget(UserId),
    /// One item of a BulkCreateUsers stream failed, so none was created.
    #[error("item {index}: {source}")]
    BulkItem { index: usize, source: Box<Error> },
    #[error("a bulk creation may carry at most {0} items; split it into several calls")]
    BulkTooManyItems(usize),
    #[error("the created users would not fit in one {0}-byte response; split the batch")]
    BulkResponseTooLarge(usize),
    #[error("the client cancelled the stream; nothing was created")]
    Cancelled,
    #[error("the request stream sent nothing for {0:?}; nothing was created")]
    StreamIdle(std::time::Duration),
    #[error("a watch stream may hold at most {0} subscriptions; open another stream")]
    TooManySubscriptions(usize),
    #[error("at most {limit} {kind} streams may be open at once {scope}")]
    TooManyStreams {
        kind: &'static str,
        limit: usize,
        scope: &'static str,
    },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("this watcher fell {skipped} events behind and was dropped; resubscribe and re-read")]
    WatcherLagged { skipped: u64 },
    /// A watch's resume point is older than the history kept.
    #[error("resume point {after} is older than the oldest kept change {oldest}; list again")]
    ResumeTooOld { after: u64, oldest: u64 },
    /// A watch's resume point is past the newest change.
    #[error("resume point {after} is ahead of the newest change {newest}")]
    ResumeAhead { after: u64, newest: u64 },
    #[error("rate limit exceeded; retry in {} ms", retry_after.as_millis().max(1))]
    RateLimited { retry_after: std::time::Duration },
    #[error("unknown method {0}")]
    UnknownMethod(String),
    /// A request stream that broke off: a message that does not parse
    /// (INTERNAL, as the gRPC spec says), or one over the size limit. Its
    /// status is tonic's codec's, with the size limit's code fixed.
    #[error("{}", .0.message())]
    RequestStream(Status),
    #[error("server shutting down")]
    ShuttingDown,
    #[error("store unavailable")]
    StoreUnavailable(#[source] crate::BoxError),
    #[error("internal error")]
    Internal(#[source] crate::BoxError),
}

impl From<Violations> for Error {
    fn from(violations: Violations) -> Self {
        Error::InvalidArgument(violations)
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(id) => Error::NotFound(id),
            StoreError::EmailTaken(email) => Error::EmailTaken(email),
            StoreError::IdempotencyKeyReused => Error::IdempotencyKeyReused,
            StoreError::Changed(id) => Error::Changed(id),
            StoreError::Admin(id) => Error::AdminTarget(id),
            StoreError::Invalid(violations) => Error::InvalidArgument(violations),
            StoreError::ResumeTooOld { after, oldest } => Error::ResumeTooOld { after, oldest },
            StoreError::ResumeAhead { after, newest } => Error::ResumeAhead { after, newest },
            StoreError::Item { index, source } => Error::BulkItem {
                index,
                source: Box::new(Error::from(*source)),
            },
            StoreError::Unavailable(cause) => Error::StoreUnavailable(cause),
            StoreError::Internal(cause) => Error::Internal(cause),
        }
    }
}

impl Error {
    /// The gRPC code for this error: the table.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) | Error::ResumeAhead { .. } => Code::InvalidArgument,
            Error::ResumeTooOld { .. } => Code::OutOfRange,
            Error::Changed(_) => Code::Aborted,
            Error::AdminTarget(_) => Code::PermissionDenied,
            Error::NotFound(_) => Code::NotFound,
            Error::EmailTaken(_) | Error::IdempotencyKeyReused => Code::AlreadyExists,
            Error::BulkItem { source, .. } => source.code(),
            Error::Auth(
                AuthError::PermissionDenied { .. }
                | AuthError::AdminOnly { .. }
                | AuthError::NoRole { .. },
            ) => Code::PermissionDenied,
            // The provider's keys could not be fetched: a retry may succeed.
            Error::Auth(AuthError::KeysUnavailable { .. }) => Code::Unavailable,
            Error::Auth(_) => Code::Unauthenticated,
            Error::WatcherLagged { .. }
            | Error::TooManySubscriptions(_)
            | Error::TooManyStreams { .. }
            | Error::RateLimited { .. }
            | Error::BulkTooManyItems(_)
            | Error::BulkResponseTooLarge(_) => Code::ResourceExhausted,
            Error::Cancelled => Code::Cancelled,
            Error::StreamIdle(_) => Code::DeadlineExceeded,
            Error::StoreUnavailable(_) | Error::ShuttingDown => Code::Unavailable,
            Error::UnknownMethod(_) => Code::Unimplemented,
            Error::RequestStream(status) => oversized_is_exhausted(status.clone()).code(),
            Error::Internal(_) => Code::Internal,
        }
    }

    /// The violations to attach as a `google.rpc.BadRequest`, if any.
    fn violations(&self) -> Option<Vec<FieldViolation>> {
        match self {
            Error::InvalidArgument(violations) => Some(violations.iter().cloned().collect()),
            Error::BulkItem { index, source } => match &**source {
                Error::InvalidArgument(violations) => {
                    Some(violations.nested(&format!("requests[{index}]")))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// What tonic's codec says when a message is over the limit.
pub const TOO_LARGE: &str = "message length too large";

/// The status to answer for an error reading a request stream: a message
/// over the size limit is RESOURCE_EXHAUSTED, as the gRPC spec says, where
/// tonic's codec answers OUT_OF_RANGE.
pub fn oversized_is_exhausted(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().contains(TOO_LARGE) {
        Status::resource_exhausted(status.message())
    } else {
        status
    }
}

/// A gRPC code as the spec spells it, for logs and the CLI: `NOT_FOUND`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let code = error.code();
        if matches!(error, Error::Internal(_) | Error::StoreUnavailable(_)) {
            tracing::error!(error = ?error, "call failed");
        }
        let message = error.to_string();
        match error.violations() {
            Some(violations) => {
                let violations: Vec<_> = violations
                    .into_iter()
                    .map(|v| tonic_types::FieldViolation::new(v.field, v.description))
                    .collect();
                Status::with_error_details(
                    code,
                    message,
                    ErrorDetails::with_bad_request(violations),
                )
            }
            None => Status::new(code, message),
        }
    }
}
