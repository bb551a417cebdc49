//! A child span for each store call made on behalf of a traced call: what
//! the store did, on which database, and whether it failed.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;

use crate::domain::{Filter, NewUser, User, UserId, UserPatch};
use crate::events::{Event, EventBus};
use crate::store::{Created, IdempotencyKey, Interest, Page, PageQuery, StoreError, UserStore};

/// A store whose calls are spans, children of the call's own.
pub struct TracedStore {
    inner: Arc<dyn UserStore>,
    tracer: SdkTracer,
}

impl TracedStore {
    pub fn new(inner: Arc<dyn UserStore>, tracer: SdkTracer) -> Self {
        Self { inner, tracer }
    }

    /// Runs `call` in a span named `name` (the operation, then the
    /// collection, as OpenTelemetry's database conventions name spans),
    /// when the calling task has a span to be its parent. A store call made
    /// outside any traced call (health checks, pruning) makes no span.
    async fn traced<T>(
        &self,
        operation: &'static str,
        name: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let parent = Context::current();
        if !parent.has_active_span() {
            return call.await;
        }
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("db.system.name", self.inner.system_name()),
                KeyValue::new("db.operation.name", operation),
                KeyValue::new("db.collection.name", "users"),
            ])
            .start_with_context(&self.tracer, &parent);
        let result = call.await;
        // A user not found or an email taken is an answer, not a failure
        // of the store: only these two are.
        let failure = match &result {
            Err(StoreError::Unavailable(_)) => Some("unavailable"),
            Err(StoreError::Internal(_)) => Some("internal"),
            _ => None,
        };
        if let (Some(kind), Err(error)) = (failure, &result) {
            span.set_attribute(KeyValue::new("error.type", kind));
            span.set_status(Status::error(error.to_string()));
        }
        span.end();
        result
    }
}

#[async_trait]
impl UserStore for TracedStore {
    fn events(&self) -> &EventBus {
        self.inner.events()
    }
    fn system_name(&self) -> &'static str {
        self.inner.system_name()
    }
    async fn check(&self) -> Result<(), StoreError> {
        self.inner.check().await
    }
    async fn create(
        &self,
        user: NewUser,
        key: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        self.traced("create", "create users", self.inner.create(user, key))
            .await
    }
    async fn create_many(&self, users: Vec<NewUser>) -> Result<Vec<User>, StoreError> {
        self.traced(
            "create_many",
            "create_many users",
            self.inner.create_many(users),
        )
        .await
    }
    async fn get(&self, id: &UserId) -> Result<User, StoreError> {
        self.traced("get", "get users", self.inner.get(id)).await
    }
    async fn update(
        &self,
        id: &UserId,
        patch: UserPatch,
        protect_admins: bool,
    ) -> Result<User, StoreError> {
        self.traced(
            "update",
            "update users",
            self.inner.update(id, patch, protect_admins),
        )
        .await
    }
    async fn delete(&self, id: &UserId, etag: Option<&str>) -> Result<User, StoreError> {
        self.traced("delete", "delete users", self.inner.delete(id, etag))
            .await
    }
    async fn list_page(&self, query: PageQuery) -> Result<Page, StoreError> {
        self.traced("list_page", "list_page users", self.inner.list_page(query))
            .await
    }
    async fn count(&self, filter: Option<&Filter>) -> Result<u64, StoreError> {
        self.traced("count", "count users", self.inner.count(filter))
            .await
    }
    async fn sequence(&self) -> Result<u64, StoreError> {
        self.traced("sequence", "sequence users", self.inner.sequence())
            .await
    }
    async fn changes(
        &self,
        after: u64,
        interest: &Interest,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.traced(
            "changes",
            "changes users",
            self.inner.changes(after, interest, limit),
        )
        .await
    }
    fn page_token_key(&self) -> [u8; 32] {
        self.inner.page_token_key()
    }
}
