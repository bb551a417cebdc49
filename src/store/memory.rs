//! `MemoryStore`: users in this process's memory, lost on exit.
//!
//! For tests, development and benchmarks. One lock guards every index, so
//! that a check and the write it allows are one step, as a database's unique
//! index would make them.
//!
//! The indexes hash with foldhash rather than std's SipHash, which took a
//! quarter of BulkCreateUsers' time here. foldhash is seeded per process,
//! but it is not built to resist crafted keys as SipHash is; this store is
//! not meant to face the internet, the SQL stores are.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::history::{History, Interest, Retention};
use super::{Created, Cursor, IdempotencyKey, Page, PageQuery, StoreError, UserStore};
use crate::clock;
use crate::domain::{Filter, NewUser, SortValue, User, UserId, UserPatch};
use crate::events::{Event, EventBus, EventKind};

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug)]
pub struct MemoryStore {
    inner: RwLock<Indexes>,
    events: EventBus,
    /// Lost with the store, as its users are.
    page_token_key: [u8; 32],
}

#[derive(Debug, Default)]
struct Indexes {
    /// Position in creation order of the next user; positions are never reused.
    next_position: i64,
    /// Users by position: the listing order. Shared with the history,
    /// which keeps the version each change made.
    users: BTreeMap<i64, Arc<User>>,
    positions: HashMap<UserId, i64>,
    /// `Email::unique_key` to the owner's id.
    emails: HashMap<String, UserId>,
    /// What each idempotency key created, and from which request. A key
    /// lives as long as its user, as it does in the SQL stores' rows.
    keys: HashMap<IdempotencyKey, (NewUser, UserId)>,
    key_of: HashMap<UserId, IdempotencyKey>,
    /// The numbered changes, for watches that resume.
    history: History,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with a bus of the default size.
    pub fn new() -> Self {
        Self::with_events(EventBus::new(
            crate::store::StoreOptions::default().watch_buffer,
        ))
    }

    /// An empty store announcing on `events`, keeping the default history.
    pub fn with_events(events: EventBus) -> Self {
        Self::with_history(events, Retention::default())
    }

    /// An empty store announcing on `events`, keeping its changes as
    /// `retention` says.
    pub fn with_history(events: EventBus, retention: Retention) -> Self {
        let history = History::new(retention);
        events.start_after(history.horizon().newest);
        Self {
            inner: RwLock::new(Indexes {
                history,
                ..Indexes::default()
            }),
            events,
            page_token_key: rand::random(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Indexes> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Indexes> {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Indexes {
    /// Adds `user`, whose `Email::unique_key` is `email_key`; returns it
    /// and its change's number.
    fn insert(&mut self, user: NewUser, email_key: String) -> (User, u64) {
        let mut user = user.into_user(UserId::generate(), clock::unix_seconds());
        // Kept for every listing and read: hashed once here.
        user.memoize_etag();
        let position = self.next_position;
        self.next_position += 1;
        self.emails.insert(email_key, user.id.clone());
        self.positions.insert(user.id.clone(), position);
        let stored = Arc::new(user.clone());
        let seq = self.history.record(EventKind::Created, Arc::clone(&stored));
        self.users.insert(position, stored);
        (user, seq)
    }

    /// The user's entry, for a change in place.
    fn entry(&mut self, id: &UserId) -> Result<&mut Arc<User>, StoreError> {
        let position = self
            .positions
            .get(id)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        Ok(self.users.get_mut(position).expect("indexes agree"))
    }
}

// Writes announce while they hold the lock, so that events go out in the
// order the writes were made.
#[async_trait]
impl UserStore for MemoryStore {
    fn events(&self) -> &EventBus {
        &self.events
    }
    fn system_name(&self) -> &'static str {
        "memory"
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn create(
        &self,
        user: NewUser,
        key: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        let mut indexes = self.write();
        if let Some((request, id)) = key.as_ref().and_then(|key| indexes.keys.get(key)) {
            if *request != user {
                return Err(StoreError::IdempotencyKeyReused);
            }
            let position = indexes.positions[id];
            return Ok(Created::Replayed(User::clone(&indexes.users[&position])));
        }
        let email_key = user.email.unique_key();
        if indexes.emails.contains_key(&email_key) {
            return Err(StoreError::EmailTaken(user.email.as_str().to_owned()));
        }
        let (created, seq) = indexes.insert(user.clone(), email_key);
        if let Some(key) = key {
            indexes.key_of.insert(created.id.clone(), key.clone());
            indexes.keys.insert(key, (user, created.id.clone()));
        }
        self.events.publish(seq, EventKind::Created, &created);
        Ok(Created::New(created))
    }

    async fn create_many(&self, users: Vec<NewUser>) -> Result<Vec<User>, StoreError> {
        let email_keys = super::email_keys(&users)?;
        let mut indexes = self.write();
        if let Some(index) = email_keys
            .iter()
            .position(|key| indexes.emails.contains_key(key))
        {
            return Err(StoreError::email_taken_at(index, &users[index]));
        }
        let created: Vec<(User, u64)> = users
            .into_iter()
            .zip(email_keys)
            .map(|(user, key)| indexes.insert(user, key))
            .collect();
        Ok(created
            .into_iter()
            .map(|(user, seq)| {
                self.events.publish(seq, EventKind::Created, &user);
                user
            })
            .collect())
    }

    async fn get(&self, id: &UserId) -> Result<User, StoreError> {
        let indexes = self.read();
        indexes
            .positions
            .get(id)
            .map(|position| User::clone(&indexes.users[position]))
            .ok_or_else(|| StoreError::NotFound(id.clone()))
    }

    async fn update(
        &self,
        id: &UserId,
        patch: UserPatch,
        protect_admins: bool,
    ) -> Result<User, StoreError> {
        let mut indexes = self.write();
        let stored = indexes.entry(id)?;
        super::check_write(stored, patch.etag.as_deref(), protect_admins)?;
        let mut changed = User::clone(stored);
        let old_email = stored.email.unique_key();
        let new_email = patch.email.as_ref().map(|email| email.unique_key());
        patch
            .apply(&mut changed, clock::unix_seconds())
            .map_err(StoreError::Invalid)?;
        changed.memoize_etag();
        if let Some(new_email) = new_email.as_ref().filter(|&e| *e != old_email) {
            if indexes.emails.contains_key(new_email) {
                return Err(StoreError::EmailTaken(changed.email.as_str().to_owned()));
            }
            indexes.emails.remove(&old_email);
            indexes.emails.insert(new_email.clone(), id.clone());
        }
        let stored = Arc::new(changed);
        *indexes.entry(id)? = Arc::clone(&stored);
        let seq = indexes
            .history
            .record(EventKind::Updated, Arc::clone(&stored));
        self.events.publish(seq, EventKind::Updated, &stored);
        Ok(User::clone(&stored))
    }

    async fn delete(&self, id: &UserId, etag: Option<&str>) -> Result<User, StoreError> {
        let mut indexes = self.write();
        super::check_write(indexes.entry(id)?, etag, false)?;
        let position = indexes
            .positions
            .remove(id)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let user = indexes.users.remove(&position).expect("indexes agree");
        indexes.emails.remove(&user.email.unique_key());
        if let Some(key) = indexes.key_of.remove(id) {
            indexes.keys.remove(&key);
        }
        let seq = indexes
            .history
            .record(EventKind::Deleted, Arc::clone(&user));
        self.events.publish(seq, EventKind::Deleted, &user);
        Ok(Arc::unwrap_or_clone(user))
    }

    async fn list_page(&self, query: PageQuery) -> Result<Page, StoreError> {
        let indexes = self.read();
        let matches = |user: &User| query.filter.as_ref().is_none_or(|f| f.matches(user));
        let skip = usize::try_from(query.skip).unwrap_or(usize::MAX);
        if query.order.is_creation() {
            let start = query
                .after
                .as_ref()
                .and_then(Cursor::as_position)
                .map_or(0, |after| after.saturating_add(1));
            let mut last = None;
            let users = indexes
                .users
                .range(start..)
                .filter(|(_, user)| matches(user))
                .skip(skip)
                .take(query.limit)
                .map(|(&position, user)| {
                    last = Some(position);
                    Arc::clone(user)
                })
                .collect();
            return Ok(Page {
                users,
                next: last.map(Cursor::position),
            });
        }
        // Any other order reads every match: this store is for tests and
        // development, where a directory is small.
        let order = &query.order;
        let mut found: Vec<(Vec<SortValue>, &Arc<User>)> = indexes
            .users
            .values()
            .filter(|user| matches(user))
            .map(|user| (order.key_of(user), user))
            .filter(|(key, _)| {
                query.after.as_ref().is_none_or(|Cursor(after)| {
                    order.compare(key, after) == std::cmp::Ordering::Greater
                })
            })
            .collect();
        let wanted = skip.saturating_add(query.limit);
        if found.len() > wanted && wanted > 0 {
            found.select_nth_unstable_by(wanted - 1, |a, b| order.compare(&a.0, &b.0));
        }
        found.truncate(wanted);
        found.sort_unstable_by(|a, b| order.compare(&a.0, &b.0));
        let page: Vec<_> = found.into_iter().skip(skip).collect();
        Ok(Page {
            next: page.last().map(|(key, _)| Cursor(key.clone())),
            users: page.into_iter().map(|(_, user)| Arc::clone(user)).collect(),
        })
    }

    fn page_token_key(&self) -> [u8; 32] {
        self.page_token_key
    }

    async fn changes(
        &self,
        after: u64,
        interest: &Interest,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.read().history.after(after, interest, limit)
    }

    async fn count(&self, filter: Option<&Filter>) -> Result<u64, StoreError> {
        let indexes = self.read();
        Ok(match filter {
            None => indexes.users.len() as u64,
            Some(filter) => indexes.users.values().filter(|u| filter.matches(u)).count() as u64,
        })
    }
}
