//! Where users are kept: the `UserStore` trait, and one implementation per
//! file below `store/`.
//!
//! The service holds an `Arc<dyn UserStore>` and never knows which store it
//! has. Every store gives the same semantics, which `tests/store_contract.rs`
//! checks against each: emails unique without regard to case, ids never
//! reused, bulk creation all or nothing, idempotency keys kept with the user,
//! and listing in creation order, a page at a time.
//!
//! A store also announces its committed writes on its [`EventBus`]: only the
//! store knows when a write has committed, and, for PostgreSQL, what other
//! replicas committed.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{Filter, NewUser, Order, SortValue, User, UserId, UserPatch, Violations};
use crate::events::{Event, EventBus};
pub use history::{Interest, Retention};

pub mod history;
pub mod memory;
pub mod postgres;
mod search_sql;
mod sql;
pub mod sqlite;

pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use sqlite::{SqliteStore, Synchronous};

/// A store's failure, before it is given a gRPC status in `crate::error`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("user {0} not found")]
    NotFound(UserId),
    #[error("email {0} is already taken")]
    EmailTaken(String),
    #[error("idempotency key was already used with a different request")]
    IdempotencyKeyReused,
    /// The request named a version of the user (its etag) that is no longer
    /// the stored one.
    #[error("user {0} changed since it was read")]
    Changed(UserId),
    /// The caller may not change an admin, and the user is one, as the
    /// write's own transaction read it.
    #[error("user {0} is an admin")]
    Admin(UserId),
    /// The change is valid alone but not on the stored user (too many
    /// labels once applied).
    #[error("{0}")]
    Invalid(Violations),
    /// A watch asked to resume after a change older than the history kept.
    #[error("resume point {after} is older than the oldest kept change {oldest}; list again")]
    ResumeTooOld { after: u64, oldest: u64 },
    /// A watch asked to resume after a change not made yet.
    #[error("resume point {after} is ahead of the newest change {newest}")]
    ResumeAhead { after: u64, newest: u64 },
    /// Item `index` of a bulk creation failed, so none was created.
    #[error("item {index}: {source}")]
    Item {
        index: usize,
        source: Box<StoreError>,
    },
    /// The store cannot be reached now; the call may succeed later.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] crate::BoxError),
    #[error("store failed: {0}")]
    Internal(#[source] crate::BoxError),
}

impl StoreError {
    /// Item `index` of a bulk creation has an email already taken.
    pub fn email_taken_at(index: usize, user: &NewUser) -> StoreError {
        StoreError::Item {
            index,
            source: Box::new(StoreError::EmailTaken(user.email.as_str().to_owned())),
        }
    }
}

/// Each user's `Email::unique_key`, computed once for the store to check and
/// write, refusing a batch in which one repeats, with the repeat's index: the
/// same in every store, before any of them looks at what is stored.
pub fn email_keys(users: &[NewUser]) -> Result<Vec<String>, StoreError> {
    let keys: Vec<String> = users.iter().map(|u| u.email.unique_key()).collect();
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    match keys.iter().position(|key| !seen.insert(key.as_str())) {
        Some(index) => Err(StoreError::email_taken_at(index, &users[index])),
        None => Ok(keys),
    }
}

/// A client's token for retrying one CreateUser safely.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Longest key accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Reads the `idempotency-key` metadata value: 1 to 128 visible ASCII
    /// characters, as a UUID or similar would be.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        if value.is_empty() || value.len() > Self::MAX_LEN {
            Err("must be 1 to 128 characters")
        } else if !value.bytes().all(|b| b.is_ascii_graphic()) {
            Err("must be visible ASCII characters")
        } else {
            Ok(Self(value.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a page of a listing starts: after the user with this sort key (as
/// `Order::key_of` makes it, or for creation order the user's position).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor(pub Vec<SortValue>);

impl Cursor {
    /// After the user at `position` in creation order.
    pub fn position(position: i64) -> Cursor {
        Cursor(vec![SortValue::Int(position)])
    }

    /// The position in creation order, for a cursor of that order.
    pub fn as_position(&self) -> Option<i64> {
        match self.0.as_slice() {
            [SortValue::Int(position)] => Some(*position),
            _ => None,
        }
    }
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageQuery {
    /// Which users; `None` is everyone.
    pub filter: Option<Filter>,
    /// Their order; empty is creation order.
    pub order: Order,
    /// Start after this key; `None` starts at the beginning.
    pub after: Option<Cursor>,
    /// Matching users to skip before the page: only the first page has any.
    pub skip: u64,
    /// Most users in the page.
    pub limit: usize,
}

impl PageQuery {
    /// The cursor after a page of `users`, the last of which is at
    /// `last_position` in creation order; `None` for an empty page. Made
    /// once a page, not once a user: a listing reads every user.
    pub fn cursor_after(&self, last_position: Option<i64>, users: &[Arc<User>]) -> Option<Cursor> {
        if self.order.is_creation() {
            last_position.map(Cursor::position)
        } else {
            users.last().map(|user| Cursor(self.order.key_of(user)))
        }
    }
}

/// Users in order, and the cursor after the last of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Shared, not copied: the memory store hands out the users it keeps,
    /// and a listing encodes each straight from it.
    pub users: Vec<Arc<User>>,
    pub next: Option<Cursor>,
}

/// The checks every store makes, in its write transaction, on the stored
/// version of a user about to change.
pub fn check_write(
    stored: &User,
    etag: Option<&str>,
    protect_admins: bool,
) -> Result<(), StoreError> {
    if etag.is_some_and(|etag| etag != stored.etag()) {
        return Err(StoreError::Changed(stored.id.clone()));
    }
    if protect_admins && stored.role == crate::domain::Role::Admin {
        return Err(StoreError::Admin(stored.id.clone()));
    }
    Ok(())
}

/// The outcome of a create that carried an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// A new user was stored.
    New(User),
    /// The key was seen before with the same request: this is that user, and
    /// nothing changed.
    Replayed(User),
}

#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Where this store announces committed changes.
    fn events(&self) -> &EventBus;

    /// The database behind the store, as OpenTelemetry names it
    /// (`db.system.name`): `sqlite`, `postgresql` or `memory`.
    fn system_name(&self) -> &'static str;

    /// Whether the store can serve now; for health checks.
    async fn check(&self) -> Result<(), StoreError>;

    /// Stores a new user with a fresh id, or, when `key` was used before with
    /// an equal `user`, returns the user that call created.
    async fn create(
        &self,
        user: NewUser,
        key: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError>;

    /// Stores every user or none, in one transaction. A failure names the
    /// index of the item that caused it.
    async fn create_many(&self, users: Vec<NewUser>) -> Result<Vec<User>, StoreError>;

    async fn get(&self, id: &UserId) -> Result<User, StoreError>;

    /// Applies `patch` and returns the user as it now is. In the write's own
    /// transaction: refuses with `Changed` when `patch.etag` is set and is
    /// not the stored version's, and with `Admin` when `protect_admins` is
    /// set and the stored user is an admin.
    async fn update(
        &self,
        id: &UserId,
        patch: UserPatch,
        protect_admins: bool,
    ) -> Result<User, StoreError>;

    /// Removes the user and returns it as it was; with `etag`, only that
    /// version of it (`Changed` otherwise).
    async fn delete(&self, id: &UserId, etag: Option<&str>) -> Result<User, StoreError>;

    /// One page of the users `query` matches, in its order.
    async fn list_page(&self, query: PageQuery) -> Result<Page, StoreError>;

    /// How many users `filter` matches; `None` counts everyone.
    async fn count(&self, filter: Option<&Filter>) -> Result<u64, StoreError>;

    /// The newest change committed: a listing read after this reflects it
    /// and every change before. The bus's sequence, unless the store knows
    /// better (PostgreSQL, whose relay may lag other replicas' commits).
    async fn sequence(&self) -> Result<u64, StoreError> {
        Ok(self.events().last_seq())
    }

    /// Up to `limit` of the changes numbered after `after` that `interest`
    /// wants, oldest first: what a watch that resumes replays. Refuses
    /// with `ResumeTooOld` when changes after `after` were pruned, and with
    /// `ResumeAhead` when `after` is past the newest change.
    async fn changes(
        &self,
        after: u64,
        interest: &Interest,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// The key that signs SearchUsers' page tokens. The SQL stores keep it
    /// in the database, so that every replica of a directory accepts the
    /// tokens of the others, and a restart keeps them good.
    fn page_token_key(&self) -> [u8; 32];
}

/// How to open a store, besides its address.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Events kept for slow watchers (see `EventBus`).
    pub watch_buffer: usize,
    /// SQLite's durability: see [`Synchronous`].
    pub sqlite_synchronous: Synchronous,
    /// Longest a call waits for a database connection, and a statement runs.
    pub db_timeout: Duration,
    /// How long numbered changes are kept for watches that resume.
    pub event_retention: Retention,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            watch_buffer: 1024,
            sqlite_synchronous: Synchronous::Full,
            db_timeout: Duration::from_secs(5),
            event_retention: Retention::default(),
        }
    }
}

/// The store `url` names, as the log may show it: its kind, host, port and
/// database or file, and nothing else. A password may sit in the user part
/// (`user:pass@`), the query (`?password=`) or `options`; none of them is
/// ever shown.
pub fn described(url: &str) -> String {
    if url == "memory" {
        return url.to_owned();
    }
    if url.starts_with("sqlite:") {
        return match sqlite::SqliteAddress::parse(url) {
            Ok(address) => format!("sqlite://{}", address.path.display()),
            Err(_) => "sqlite (an address that does not parse)".to_owned(),
        };
    }
    match sqlx::postgres::PgConnectOptions::from_str(url) {
        Ok(options) => format!(
            "postgres://{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        ),
        Err(_) => "postgres (an address that does not parse)".to_owned(),
    }
}

/// Opens the store `url` names: `memory`, `sqlite://PATH` or
/// `postgres://…`, running migrations for the SQL stores.
pub async fn open(
    url: &str,
    options: &StoreOptions,
) -> Result<std::sync::Arc<dyn UserStore>, StoreError> {
    let events = EventBus::new(options.watch_buffer);
    Ok(match url {
        "memory" => std::sync::Arc::new(MemoryStore::with_history(events, options.event_retention)),
        url if url.starts_with("sqlite:") => {
            std::sync::Arc::new(SqliteStore::open(url, options, events).await?)
        }
        url if url.starts_with("postgres:") || url.starts_with("postgresql:") => {
            std::sync::Arc::new(PostgresStore::open(url, options, events).await?)
        }
        other => {
            return Err(StoreError::Internal(
                format!("unknown store {other:?}: expected memory, sqlite://PATH or postgres://…")
                    .into(),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::described;

    #[test]
    fn a_described_store_shows_no_password_in_any_form() {
        for url in [
            "postgres://usersvc:hunter2@db.internal:5433/users",
            "postgres://usersvc@db.internal:5433/users?password=hunter2",
            "postgresql://db.internal:5433/users?user=usersvc&password=hunter2&sslmode=require",
            "postgres://usersvc:hunter2@db.internal:5433/users?options=-c%20search_path%3Dhunter2",
        ] {
            let shown = described(url);
            assert_eq!(shown, "postgres://db.internal:5433/users", "{url}");
        }
        assert_eq!(
            described("sqlite://data/users.db"),
            "sqlite://data/users.db"
        );
        assert_eq!(described("memory"), "memory");
    }
}
