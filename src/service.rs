//! The `UserService` implementation: one method per RPC, each reading its
//! wire request into domain types, asking the store (which announces what it
//! commits), and answering. Failures are `crate::error::Error`, which
//! decides statuses.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status, Streaming};

use crate::auth::{AuthError, Caller, RateLimiter};
use crate::domain::{NewUser, Role, Subscribe, UserId, UserPatch, Violations};
use crate::error::{Error, oversized_is_exhausted};
use crate::pb::{self, IDEMPOTENCY_KEY};
use crate::store::{Created, IdempotencyKey, PageQuery, StoreError, UserStore};

mod list;
pub mod search;
mod slots;
mod stream_end;
mod watch;

use slots::StreamSlots;
pub use stream_end::StreamEnd;

/// Tunables of the service itself, as opposed to the transport's.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Users fetched from the store per page while streaming ListUsers.
    pub list_page_size: usize,
    /// Most items one BulkCreateUsers call may carry: the whole batch is one
    /// transaction and is held in memory until it commits.
    pub max_bulk_items: usize,
    /// Largest request or response message, as gRPC's usual 4 MiB default.
    /// The codec refuses a larger request, and BulkCreateUsers refuses a
    /// batch whose answer would not fit, before storing any of it.
    pub max_message_bytes: usize,
    /// BulkCreateUsers streams one caller may have open at once: each holds
    /// its batch in memory until it commits.
    pub max_bulk_streams_per_caller: usize,
    /// How long a request stream may send nothing before it is ended.
    pub stream_idle_timeout: Duration,
    /// Subscriptions one watch stream may hold.
    pub max_subscriptions: usize,
    /// Watch streams one caller may have open at once.
    pub max_watch_streams_per_caller: usize,
    /// Watch streams open at once, from every caller.
    pub max_watch_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            list_page_size: 256,
            max_bulk_items: 100_000,
            max_message_bytes: 4 * 1024 * 1024,
            max_bulk_streams_per_caller: 4,
            stream_idle_timeout: Duration::from_secs(30),
            max_subscriptions: 1_000,
            max_watch_streams_per_caller: 100,
            max_watch_streams: 10_000,
        }
    }
}

/// The response header in which ListUsers says which change its listing
/// reflects, as SearchUsersResponse.sequence does.
pub const SEQUENCE_HEADER: &str = "usersvc-sequence";

/// The user directory: a store, which also announces its changes.
#[derive(Clone)]
pub struct Directory {
    store: Arc<dyn UserStore>,
    limits: Limits,
    /// The callers' rate limit, which each message on a watch stream takes
    /// from as a call does.
    rate: RateLimiter,
    /// The open BulkCreateUsers and WatchUserEvents streams.
    bulk_streams: StreamSlots,
    watch_streams: StreamSlots,
    /// Turns true when the server begins to shut down, so that long-lived
    /// streams end with UNAVAILABLE instead of holding the shutdown open.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Directory {
    pub fn new(
        store: Arc<dyn UserStore>,
        limits: Limits,
        rate: RateLimiter,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            bulk_streams: StreamSlots::new(
                "bulk creation",
                limits.max_bulk_streams_per_caller,
                None,
            ),
            watch_streams: StreamSlots::new(
                "watch",
                limits.max_watch_streams_per_caller,
                Some(limits.max_watch_streams),
            ),
            store,
            limits,
            rate,
            stopping,
        }
    }
}

/// Bytes a message of `len` bytes takes as one item of a repeated field.
fn repeated_field_len(len: usize) -> usize {
    prost::encoding::key_len(1) + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Who made the call, for the audit log.
fn actor<T>(request: &Request<T>) -> &str {
    request
        .extensions()
        .get::<Caller>()
        .map_or("anonymous", Caller::actor)
}

/// The role of the caller's token, if it sent one.
fn caller_role<T>(request: &Request<T>) -> Option<Role> {
    request
        .extensions()
        .get::<Caller>()
        .and_then(|caller| caller.claims.as_ref())
        .and_then(|claims| claims.role)
}

/// Refuses `act` unless the caller (of `role`) is an admin: an editor may create and
/// change only viewers and editors, so that a directory whose roles an
/// identity provider mints tokens from cannot be used to escalate.
fn admin_only(role: Option<Role>, act: &'static str) -> Result<(), Error> {
    match role {
        Some(Role::Admin) => Ok(()),
        // Only where an operator made the method public: an admin token is
        // still what this needs.
        None => Err(Error::Auth(AuthError::MissingToken)),
        Some(role) => Err(Error::Auth(AuthError::AdminOnly { role, act })),
    }
}

/// The caller's key for its limits.
fn caller_key<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Caller>()
        .map_or_else(|| "unknown".to_owned(), Caller::key)
}

/// Runs a change, its announcement and its audit line to the end, whatever
/// the client does. hyper drops a handler's future when the client resets
/// its stream; a store call dropped after its commit but before it
/// published would lose the event, and the audit line after it. A spawned
/// task is not dropped with the handler. It runs in the call's trace, so
/// that its store calls are the call's spans' children.
async fn to_completion<T: Send + 'static>(
    change: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    use opentelemetry::context::FutureExt as _;
    use opentelemetry::trace::TraceContextExt as _;
    let task = match opentelemetry::Context::map_current(|cx| cx.has_active_span()) {
        true => tokio::spawn(change.with_current_context()),
        false => tokio::spawn(change),
    };
    match task.await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // Only the runtime's shutdown cancels a task.
        Err(_) => Err(Error::ShuttingDown),
    }
}

fn parse_id(user_id: String) -> Result<UserId, Error> {
    let mut violations = Violations::default();
    let id = violations.push_err(UserId::parse("user_id", user_id));
    violations.into_result()?;
    Ok(id.expect("checked"))
}

fn idempotency_key<T>(request: &Request<T>) -> Result<Option<IdempotencyKey>, Error> {
    let Some(value) = request.metadata().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let mut violations = Violations::default();
    let key = violations.check(
        IDEMPOTENCY_KEY,
        value
            .to_str()
            .map_err(|_| "must be visible ASCII characters")
            .and_then(IdempotencyKey::parse),
    );
    violations.into_result()?;
    Ok(key)
}

#[tonic::async_trait]
impl pb::server::UserService for Directory {
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let id = parse_id(request.into_inner().user_id)?;
        let user = self.store.get(&id).await.map_err(Error::from)?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user.into()),
        }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let key = idempotency_key(&request)?;
        let actor = actor(&request).to_owned();
        let role = caller_role(&request);
        let new_user = NewUser::parse(request.into_inner()).map_err(Error::from)?;
        if new_user.role == Role::Admin {
            admin_only(role, "create an admin")?;
        }
        let store = Arc::clone(&self.store);
        let user = to_completion(async move {
            Ok(match store.create(new_user, key).await? {
                Created::New(user) => {
                    tracing::info!(target: "usersvc::audit", actor, user_id = %user.id, "user created");
                    user
                }
                Created::Replayed(user) => user,
            })
        })
        .await?;
        Ok(Response::new(user.into()))
    }

    type ListUsersStream = list::UserStream;

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<Self::ListUsersStream>, Status> {
        let query = crate::domain::ListQuery::parse(request.into_inner()).map_err(Error::from)?;
        // Read before the first page: the listing reflects every change up
        // to it, and perhaps some after, which a watch replays harmlessly.
        let sequence = self.store.sequence().await.map_err(Error::from)?;
        let stream = list::stream(
            Arc::clone(&self.store),
            query,
            self.limits.list_page_size,
            self.stopping.clone(),
        );
        let mut response = Response::new(stream);
        response
            .metadata_mut()
            .insert(SEQUENCE_HEADER, sequence.into());
        Ok(response)
    }

    async fn bulk_create_users(
        &self,
        request: Request<Streaming<pb::CreateUserRequest>>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let actor = actor(&request).to_owned();
        let role = caller_role(&request);
        let _slot = self.bulk_streams.acquire(caller_key(&request))?;
        let end = StreamEnd::of(&request);
        let mut inbound = request.into_inner();
        let mut batch = Vec::new();
        let mut response_bytes = 0;
        let idle = self.limits.stream_idle_timeout;
        while let Some(item) = tokio::time::timeout(idle, inbound.message())
            .await
            .map_err(|_| Error::StreamIdle(idle))?
            .map_err(oversized_is_exhausted)?
        {
            let index = batch.len();
            if index == self.limits.max_bulk_items {
                return Err(Error::BulkTooManyItems(self.limits.max_bulk_items).into());
            }
            let user = NewUser::parse(item).map_err(|violations| Error::BulkItem {
                index,
                source: Box::new(violations.into()),
            })?;
            if user.role == Role::Admin {
                admin_only(role, "create an admin").map_err(|refused| Error::BulkItem {
                    index,
                    source: Box::new(refused),
                })?;
            }
            // Refuse before committing what could not be acknowledged.
            response_bytes += repeated_field_len(user.max_encoded_len());
            if response_bytes > self.limits.max_message_bytes {
                return Err(Error::BulkResponseTooLarge(self.limits.max_message_bytes).into());
            }
            batch.push(user);
        }
        if end.is_some_and(|end| end.was_cut_off()) {
            return Err(Error::Cancelled.into());
        }
        let store = Arc::clone(&self.store);
        let users = to_completion(async move {
            let users = store.create_many(batch).await?;
            tracing::info!(target: "usersvc::audit", actor, count = users.len(), "users created in bulk");
            Ok(users)
        })
        .await?;
        Ok(Response::new(pb::ListUsersResponse {
            total_count: i32::try_from(users.len()).unwrap_or(i32::MAX),
            users: users.into_iter().map(Into::into).collect(),
        }))
    }

    type WatchUserEventsStream = watch::EventStream;

    async fn watch_user_events(
        &self,
        request: Request<Streaming<pb::EventStreamRequest>>,
    ) -> Result<Response<Self::WatchUserEventsStream>, Status> {
        self.watch(request.map(|inbound| -> watch::Subscriptions {
            Box::pin(tokio_stream::StreamExt::map(inbound, |request| {
                request.map(Subscribe::parse)
            }))
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = actor(&request).to_owned();
        let role = caller_role(&request);
        let (id, patch) = UserPatch::parse(request.into_inner()).map_err(Error::from)?;
        if patch.role == Some(Role::Admin) {
            admin_only(role, "make a user an admin")?;
        }
        // Whether the target is an admin is decided in the write's own
        // transaction: read here, a promotion could land in between.
        let protect_admins = role != Some(Role::Admin);
        let store = Arc::clone(&self.store);
        let user = to_completion(async move {
            let user = match store.update(&id, patch, protect_admins).await {
                Err(StoreError::Admin(_)) => {
                    return Err(admin_only(role, "change an admin").unwrap_err());
                }
                other => other?,
            };
            tracing::info!(target: "usersvc::audit", actor, user_id = %id, "user updated");
            Ok(user)
        })
        .await?;
        Ok(Response::new(user.into()))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let actor = actor(&request).to_owned();
        let request = request.into_inner();
        let id = parse_id(request.user_id)?;
        let etag = Some(request.etag).filter(|etag| !etag.is_empty());
        let store = Arc::clone(&self.store);
        let user = to_completion(async move {
            let user = store.delete(&id, etag.as_deref()).await?;
            tracing::info!(target: "usersvc::audit", actor, user_id = %id, "user deleted");
            Ok(user)
        })
        .await?;
        Ok(Response::new(pb::DeleteUserResponse {
            user: Some(user.into()),
        }))
    }

    type SubscribeUserEventsStream = watch::EventStream;

    async fn subscribe_user_events(
        &self,
        request: Request<pb::SubscribeUserEventsRequest>,
    ) -> Result<Response<Self::SubscribeUserEventsStream>, Status> {
        let max = self.limits.max_subscriptions;
        let (metadata, extensions, message) = request.into_parts();
        let subscribe = Subscribe::parse_all(message, max).map_err(Error::from)?;
        let inbound = tokio_stream::iter([Ok(Ok(subscribe))]);
        self.watch(Request::from_parts(
            metadata,
            extensions,
            Box::pin(inbound) as watch::Subscriptions,
        ))
    }

    async fn search_users(
        &self,
        request: Request<pb::SearchUsersRequest>,
    ) -> Result<Response<pb::SearchUsersResponse>, Status> {
        let query = search::SearchQuery::parse(request.into_inner(), self.store.page_token_key())
            .map_err(Error::from)?;
        let page = PageQuery {
            filter: query.filter.clone(),
            order: query.order.clone(),
            after: query.after.clone(),
            skip: 0,
            // One more than the page, to know whether another follows.
            limit: query.page_size + 1,
        };
        // Read before the page: see ListUsers.
        let sequence = self.store.sequence().await.map_err(Error::from)?;
        let (page, total) = tokio::try_join!(
            self.store.list_page(page),
            self.store.count(query.filter.as_ref())
        )
        .map_err(Error::from)?;
        let mut users = Vec::with_capacity(page.users.len().min(query.page_size));
        let mut bytes = 0;
        let mut more = false;
        let mut last = None;
        // Room is kept for the token and the total; a page always holds one
        // user, so that a walk never stalls on an empty page.
        let room = self
            .limits
            .max_message_bytes
            .saturating_sub(8192.min(self.limits.max_message_bytes / 2));
        for user in page.users {
            // A page holds at most page_size users, and fits in one message.
            let encoded: pb::User = crate::domain::User::clone(&user).into();
            bytes += repeated_field_len(prost::Message::encoded_len(&encoded));
            if !users.is_empty() && (users.len() == query.page_size || bytes > room) {
                more = true;
                break;
            }
            last = Some(user);
            users.push(encoded);
        }
        let next_page_token = match (more, last) {
            (true, Some(last)) => query.token_after(&query.order.key_of(&last)),
            _ => String::new(),
        };
        Ok(Response::new(pb::SearchUsersResponse {
            users,
            next_page_token,
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
            sequence: i64::try_from(sequence).unwrap_or(i64::MAX),
        }))
    }
}

impl Directory {
    /// A watch stream, for WatchUserEvents or SubscribeUserEvents: a slot
    /// among the caller's streams, the caller's rate limit on its messages,
    /// and an end when its token expires.
    fn watch(
        &self,
        request: Request<watch::Subscriptions>,
    ) -> Result<Response<watch::EventStream>, Status> {
        let caller = caller_key(&request);
        let slot = self.watch_streams.acquire(caller.clone())?;
        let expires = request
            .extensions()
            .get::<Caller>()
            .and_then(|caller| caller.claims.as_ref())
            .map(|claims| claims.exp);
        Ok(Response::new(watch::stream(
            request.into_inner(),
            Arc::clone(&self.store),
            watch::Bounds {
                _slot: slot,
                caller,
                rate: self.rate.clone(),
                max_subscriptions: self.limits.max_subscriptions,
                expires: expires.map(watch::expiry),
            },
            self.stopping.clone(),
        )))
    }
}
