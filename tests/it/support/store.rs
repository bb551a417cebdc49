//! A memory store that counts what it is asked and fails on cue, for tests
//! of how the service and client behave around a store.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use usersvc::domain::{NewUser, User, UserId, UserPatch};
use usersvc::events::{Event, EventBus};
use usersvc::store::{
    Created, IdempotencyKey, Interest, MemoryStore, Page, PageQuery, StoreError, UserStore,
};

#[derive(Default)]
pub struct ScriptedStore {
    inner: MemoryStore,
    /// Creates asked for, failed ones included.
    pub creates: AtomicUsize,
    /// Pages of listings asked for.
    pub pages: AtomicUsize,
    /// Gets asked for, failed ones included.
    pub gets: AtomicUsize,
    /// How many of the next creates fail with UNAVAILABLE.
    pub failing_creates: AtomicUsize,
    /// How many of the next gets fail with UNAVAILABLE.
    pub failing_gets: AtomicUsize,
    /// While set, `get` is UNAVAILABLE and `list_page` is INTERNAL.
    pub broken_reads: AtomicBool,
}

#[async_trait]
impl UserStore for ScriptedStore {
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
        self.creates.fetch_add(1, Ordering::SeqCst);
        if take_one(&self.failing_creates) {
            return Err(StoreError::Unavailable("database restarting".into()));
        }
        self.inner.create(user, key).await
    }
    async fn create_many(&self, users: Vec<NewUser>) -> Result<Vec<User>, StoreError> {
        self.inner.create_many(users).await
    }
    async fn sequence(&self) -> Result<u64, StoreError> {
        self.inner.sequence().await
    }
    async fn changes(
        &self,
        after: u64,
        interest: &Interest,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.inner.changes(after, interest, limit).await
    }
    async fn get(&self, id: &UserId) -> Result<User, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        if self.broken_reads.load(Ordering::SeqCst) || take_one(&self.failing_gets) {
            return Err(StoreError::Unavailable("connection refused".into()));
        }
        self.inner.get(id).await
    }
    async fn update(
        &self,
        id: &UserId,
        patch: UserPatch,
        protect_admins: bool,
    ) -> Result<User, StoreError> {
        self.inner.update(id, patch, protect_admins).await
    }
    async fn delete(&self, id: &UserId, etag: Option<&str>) -> Result<User, StoreError> {
        self.inner.delete(id, etag).await
    }
    async fn count(&self, filter: Option<&usersvc::domain::Filter>) -> Result<u64, StoreError> {
        self.inner.count(filter).await
    }
    fn page_token_key(&self) -> [u8; 32] {
        self.inner.page_token_key()
    }
    async fn list_page(&self, query: PageQuery) -> Result<Page, StoreError> {
        self.pages.fetch_add(1, Ordering::SeqCst);
        if self.broken_reads.load(Ordering::SeqCst) {
            return Err(StoreError::Internal("corrupt page".into()));
        }
        self.inner.list_page(query).await
    }
}

/// Takes one from `count` if it is above zero; says whether it did.
fn take_one(count: &AtomicUsize) -> bool {
    count
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}
