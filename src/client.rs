//! A client for applications and the CLI: [`pb::client::UserServiceClient`]
//! plus a token, a deadline, and retries where they are safe.
//!
//! Retries follow one rule: only UNAVAILABLE (the call did not reach a
//! server able to run it), and only for calls that cannot do something twice
//! (reads, and creates carrying an idempotency key), with exponential backoff
//! and jitter so that a fleet of clients does not retry in step.

use opentelemetry::trace::TraceContextExt as _;
use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tonic::codec::Streaming;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, IntoStreamingRequest, Request, Status};

use crate::pb;
use crate::pb::IDEMPOTENCY_KEY;
use crate::pb::client::UserServiceClient;

mod resume;
mod tls;

pub use resume::{ResumingWatch, WatchItem};
pub use tls::ClientTls;

/// When and how often to try a call again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included; 1 means never retry.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (1-based): half of the capped
    /// exponential backoff, plus a random part of the other half.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let exponential = self
            .initial_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let half = exponential / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    /// Runs `call` until it succeeds, fails with a code other than
    /// UNAVAILABLE, or runs out of attempts.
    pub async fn run<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(status)
                    if status.code() == Code::Unavailable && attempt < self.max_attempts =>
                {
                    let pause = self.backoff(attempt);
                    tracing::debug!(attempt, ?pause, message = status.message(), "retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }
}

/// How to reach a server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// For example `http://127.0.0.1:50051`.
    pub addr: String,
    /// A JWT, sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Deadline of each call; streams included.
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    /// For `https://` addresses: the CA to trust, and a certificate for mTLS.
    pub tls: ClientTls,
}

impl ClientConfig {
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            token: None,
            timeout: None,
            retry: RetryPolicy::default(),
            tls: ClientTls::default(),
        }
    }
}

/// Why a client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid address {0:?}: {1}")]
    Address(String, tonic::transport::Error),
    #[error("the token is not valid metadata (it must be ASCII)")]
    Token,
    #[error("TLS: {0}")]
    Tls(String),
}

/// A call that failed in the transport, not at the server: the connection
/// was refused, the name did not resolve, TLS failed, or the server dropped
/// the connection before it answered (which hyper reports as CANCELLED). gRPC
/// calls all of these UNAVAILABLE; tonic says UNKNOWN or CANCELLED for some,
/// and names neither the address nor the cause. A caller's own cancellation
/// never produces one (its future is simply dropped). So each is reported,
/// and retried where that is safe, as UNAVAILABLE naming the address and
/// the innermost cause.
fn transport_failure(addr: &str, status: Status) -> Status {
    let Some(transport) =
        std::error::Error::source(&status).filter(|source| source.is::<tonic::transport::Error>())
    else {
        return status;
    };
    let mut cause: &dyn std::error::Error = transport;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    Status::unavailable(format!("cannot reach {addr}: {cause}"))
}

/// `addr` with a scheme: `host:port` is taken as grpcurl and most gRPC
/// tools take it, `http://`, or `https://` when TLS settings are given.
fn with_scheme(addr: &str, tls: &ClientTls) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else if tls.ca.is_some() || tls.cert.is_some() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

/// The W3C `traceparent` of `cx`'s span, when it has one.
pub fn traceparent(cx: &opentelemetry::Context) -> Option<String> {
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        )
    })
}

/// A `UserService` client with a token, a deadline and retries.
#[derive(Clone, Debug)]
pub struct Client {
    inner: UserServiceClient<Channel>,
    /// The server's address, scheme included, for error messages.
    addr: std::sync::Arc<str>,
    authorization: Option<AsciiMetadataValue>,
    timeout: Option<Duration>,
    retry: RetryPolicy,
}

impl Client {
    /// A client that connects on its first call, and again after a
    /// connection is lost, so that a server starting late or restarting is
    /// a retryable UNAVAILABLE rather than a failure here.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let addr = with_scheme(&config.addr, &config.tls);
        let mut endpoint = Endpoint::from_shared(addr.clone())
            .map_err(|e| ClientError::Address(config.addr.clone(), e))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if addr.starts_with("https://") {
            let tls = config.tls.config().map_err(ClientError::Tls)?;
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
        }
        let authorization = config
            .token
            .map(|token| {
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| ClientError::Token)
            })
            .transpose()?;
        Ok(Self {
            inner: UserServiceClient::new(endpoint.connect_lazy()),
            addr: addr.into(),
            authorization,
            timeout: config.timeout,
            retry: config.retry,
        })
    }

    /// What a failed call's status becomes: see [`transport_failure`].
    fn failed(&self) -> impl Fn(Status) -> Status + Send + 'static {
        let addr = std::sync::Arc::clone(&self.addr);
        move |status| transport_failure(&addr, status)
    }

    /// The generated-style client underneath, for calls this type does not wrap.
    pub fn raw(&self) -> UserServiceClient<Channel> {
        self.inner.clone()
    }

    /// `message` with this client's token and deadline.
    fn request<T>(&self, message: T) -> Request<T> {
        self.decorate(Request::new(message))
    }

    fn decorate<T>(&self, mut request: Request<T>) -> Request<T> {
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        if let Some(timeout) = self.timeout {
            request.set_timeout(timeout);
        }
        // The caller's trace goes on with the call, W3C's way.
        let trace = opentelemetry::Context::map_current(|cx| {
            traceparent(cx).map(|parent| (parent, cx.span().span_context().trace_state().header()))
        });
        if let Some((parent, state)) = trace {
            if let Ok(parent) = tonic::metadata::MetadataValue::try_from(parent) {
                request.metadata_mut().insert("traceparent", parent);
            }
            if let Ok(state) = tonic::metadata::MetadataValue::try_from(state)
                && !state.is_empty()
            {
                request.metadata_mut().insert("tracestate", state);
            }
        }
        request
    }

    pub async fn get_user(&self, user_id: &str) -> Result<pb::User, Status> {
        let message = pb::GetUserRequest {
            user_id: user_id.to_owned(),
        };
        let response = self
            .retry
            .run(|| {
                let mut inner = self.inner.clone();
                let request = self.request(message.clone());
                let failed = self.failed();
                async move { inner.get_user(request).await.map_err(failed) }
            })
            .await?;
        response
            .into_inner()
            .user
            .ok_or_else(|| Status::internal("server sent GetUserResponse without a user"))
    }

    /// Creates a user. With `idempotency_key`, the call is retried on
    /// UNAVAILABLE, since the server answers a repeat with the same user.
    pub async fn create_user(
        &self,
        message: pb::CreateUserRequest,
        idempotency_key: Option<&str>,
    ) -> Result<pb::User, Status> {
        let key = idempotency_key
            .map(|key| {
                key.parse::<AsciiMetadataValue>()
                    .map_err(|_| Status::invalid_argument("idempotency key must be ASCII"))
            })
            .transpose()?;
        let attempt = || {
            let mut inner = self.inner.clone();
            let mut request = self.request(message.clone());
            if let Some(key) = &key {
                request.metadata_mut().insert(IDEMPOTENCY_KEY, key.clone());
            }
            let failed = self.failed();
            async move { inner.create_user(request).await.map_err(failed) }
        };
        let response = match key {
            Some(_) => self.retry.run(attempt).await?,
            None => attempt().await?,
        };
        Ok(response.into_inner())
    }

    pub async fn update_user(&self, message: pb::UpdateUserRequest) -> Result<pb::User, Status> {
        let response = self
            .inner
            .clone()
            .update_user(self.request(message))
            .await
            .map_err(self.failed())?;
        Ok(response.into_inner())
    }

    pub async fn delete_user(&self, user_id: &str) -> Result<pb::User, Status> {
        self.delete_user_version(user_id, "").await
    }

    /// Deletes the user only at version `etag` (ABORTED if it changed
    /// since); an empty `etag` deletes whatever the version.
    pub async fn delete_user_version(&self, user_id: &str, etag: &str) -> Result<pb::User, Status> {
        let message = pb::DeleteUserRequest {
            user_id: user_id.to_owned(),
            etag: etag.to_owned(),
        };
        let response = self
            .inner
            .clone()
            .delete_user(self.request(message))
            .await
            .map_err(self.failed())?;
        response
            .into_inner()
            .user
            .ok_or_else(|| Status::internal("server sent DeleteUserResponse without a user"))
    }

    /// One page of a search; retried, as it changes nothing.
    pub async fn search_users(
        &self,
        message: pb::SearchUsersRequest,
    ) -> Result<pb::SearchUsersResponse, Status> {
        let response = self
            .retry
            .run(|| {
                let mut inner = self.inner.clone();
                let request = self.request(message.clone());
                let failed = self.failed();
                async move { inner.search_users(request).await.map_err(failed) }
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Opens a ListUsers stream; opening it is retried, reading it is not.
    pub async fn list_users(
        &self,
        message: pb::ListUsersRequest,
    ) -> Result<Streaming<pb::User>, Status> {
        Ok(self.open_list(message).await?.into_inner())
    }

    async fn open_list(
        &self,
        message: pb::ListUsersRequest,
    ) -> Result<tonic::Response<Streaming<pb::User>>, Status> {
        self.retry
            .run(|| {
                let mut inner = self.inner.clone();
                let request = self.request(message.clone());
                let failed = self.failed();
                async move { inner.list_users(request).await.map_err(failed) }
            })
            .await
    }

    /// [`Client::list_users`], with the sequence the listing reflects (the
    /// `usersvc-sequence` header): resume a watch after it to keep what was
    /// listed current.
    pub async fn list_users_at(
        &self,
        message: pb::ListUsersRequest,
    ) -> Result<(i64, Streaming<pb::User>), Status> {
        let response = self.open_list(message).await?;
        let sequence = response
            .metadata()
            .get(crate::service::SEQUENCE_HEADER)
            .and_then(|value| value.to_str().ok()?.parse().ok())
            .ok_or_else(|| Status::internal("ListUsers sent no usersvc-sequence header"))?;
        Ok((sequence, response.into_inner()))
    }

    /// Sends every item of `users` in one all-or-nothing BulkCreateUsers.
    pub async fn bulk_create_users(
        &self,
        users: impl IntoStreamingRequest<Message = pb::CreateUserRequest>,
    ) -> Result<pb::ListUsersResponse, Status> {
        let request = self.decorate(users.into_streaming_request());
        let response = self
            .inner
            .clone()
            .bulk_create_users(request)
            .await
            .map_err(self.failed())?;
        Ok(response.into_inner())
    }

    /// Opens a WatchUserEvents stream fed by `subscriptions`.
    pub async fn watch_user_events(
        &self,
        subscriptions: impl IntoStreamingRequest<Message = pb::EventStreamRequest>,
    ) -> Result<Streaming<pb::UserEvent>, Status> {
        let request = self.decorate(subscriptions.into_streaming_request());
        let response = self
            .inner
            .clone()
            .watch_user_events(request)
            .await
            .map_err(self.failed())?;
        Ok(response.into_inner())
    }

    /// SubscribeUserEvents: WatchUserEvents with every subscription in one
    /// request, for callers that have nothing more to send.
    pub async fn subscribe_user_events(
        &self,
        user_ids: Vec<String>,
        resume_after: i64,
    ) -> Result<Streaming<pb::UserEvent>, Status> {
        let request = self.decorate(Request::new(pb::SubscribeUserEventsRequest {
            user_ids,
            resume_after,
        }));
        let response = self
            .inner
            .clone()
            .subscribe_user_events(request)
            .await
            .map_err(self.failed())?;
        Ok(response.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_bounds() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(800),
        };
        for _ in 0..100 {
            let first = policy.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let late = policy.backoff(9);
            assert!(late >= Duration::from_millis(400) && late <= Duration::from_millis(800));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_unavailable_is_retried_and_attempts_are_bounded() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let mut calls = 0;
        let result: Result<(), Status> = policy
            .run(|| {
                calls += 1;
                async { Err(Status::unavailable("down")) }
            })
            .await;
        assert_eq!((result.unwrap_err().code(), calls), (Code::Unavailable, 3));

        let mut calls = 0;
        let result: Result<(), Status> = policy
            .run(|| {
                calls += 1;
                async { Err(Status::not_found("gone")) }
            })
            .await;
        assert_eq!((result.unwrap_err().code(), calls), (Code::NotFound, 1));
    }
}
