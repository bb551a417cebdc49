//! `MemoryStore`: users in this process's memory, lost on exit.
//!
//! For tests, development and benchmarks. One lock guards every index, so
//! that a check and the write it allows are one step, as a database's unique
//! index would make them.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use async_trait::async_trait;

use super::{Created, Cursor, IdempotencyKey, Page, PageQuery, StoreError, UserStore};
use crate::clock;
use crate::domain::{NewUser, User, UserId, UserPatch};

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Indexes>,
}

#[derive(Debug, Default)]
struct Indexes {
    /// Position in creation order of the next user; positions are never reused.
    next_position: i64,
    /// Users by position: the listing order.
    users: BTreeMap<i64, User>,
    positions: HashMap<UserId, i64>,
    /// `Email::unique_key` to the owner's id.
    emails: HashMap<String, UserId>,
    /// What each idempotency key created, and from which request.
    keys: HashMap<IdempotencyKey, (NewUser, User)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
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
    fn insert(&mut self, user: NewUser) -> User {
        let user = user.into_user(UserId::generate(), clock::unix_seconds());
        let position = self.next_position;
        self.next_position += 1;
        self.emails.insert(user.email.unique_key(), user.id.clone());
        self.positions.insert(user.id.clone(), position);
        self.users.insert(position, user.clone());
        user
    }

    /// The user's entry, for a change in place.
    fn entry(&mut self, id: &UserId) -> Result<&mut User, StoreError> {
        let position = self
            .positions
            .get(id)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        Ok(self.users.get_mut(position).expect("indexes agree"))
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn create(
        &self,
        user: NewUser,
        key: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        let mut indexes = self.write();
        if let Some((request, created)) = key.as_ref().and_then(|key| indexes.keys.get(key)) {
            return match *request == user {
                true => Ok(Created::Replayed(created.clone())),
                false => Err(StoreError::IdempotencyKeyReused),
            };
        }
        if indexes.emails.contains_key(&user.email.unique_key()) {
            return Err(StoreError::EmailTaken(user.email.as_str().to_owned()));
        }
        let created = indexes.insert(user.clone());
        if let Some(key) = key {
            indexes.keys.insert(key, (user, created.clone()));
        }
        Ok(Created::New(created))
    }

    async fn create_many(&self, users: Vec<NewUser>) -> Result<Vec<User>, StoreError> {
        let mut indexes = self.write();
        let mut batch_emails = std::collections::HashSet::with_capacity(users.len());
        for (index, user) in users.iter().enumerate() {
            let email = user.email.unique_key();
            if indexes.emails.contains_key(&email) || !batch_emails.insert(email) {
                return Err(StoreError::Item {
                    index,
                    source: Box::new(StoreError::EmailTaken(user.email.as_str().to_owned())),
                });
            }
        }
        Ok(users.into_iter().map(|user| indexes.insert(user)).collect())
    }

    async fn get(&self, id: &UserId) -> Result<User, StoreError> {
        let indexes = self.read();
        indexes
            .positions
            .get(id)
            .map(|position| indexes.users[position].clone())
            .ok_or_else(|| StoreError::NotFound(id.clone()))
    }

    async fn update(&self, id: &UserId, patch: UserPatch) -> Result<User, StoreError> {
        let mut indexes = self.write();
        let old_email = indexes.entry(id)?.email.unique_key();
        let new_email = patch.email.as_ref().map(|email| email.unique_key());
        if let Some(new_email) = new_email.as_ref().filter(|&e| *e != old_email) {
            if indexes.emails.contains_key(new_email) {
                let taken = patch.email.as_ref().expect("new email").as_str().to_owned();
                return Err(StoreError::EmailTaken(taken));
            }
            indexes.emails.remove(&old_email);
            indexes.emails.insert(new_email.clone(), id.clone());
        }
        let user = indexes.entry(id)?;
        patch.apply(user);
        Ok(user.clone())
    }

    async fn delete(&self, id: &UserId) -> Result<User, StoreError> {
        let mut indexes = self.write();
        let position = indexes
            .positions
            .remove(id)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let user = indexes.users.remove(&position).expect("indexes agree");
        indexes.emails.remove(&user.email.unique_key());
        Ok(user)
    }

    async fn list_page(&self, query: PageQuery) -> Result<Page, StoreError> {
        let indexes = self.read();
        let start = query.after.map_or(0, |Cursor(after)| after + 1);
        let mut next = None;
        let users = indexes
            .users
            .range(start..)
            .filter(|(_, user)| query.role.is_none_or(|role| user.role == role))
            .skip(usize::try_from(query.skip).unwrap_or(usize::MAX))
            .take(query.limit)
            .map(|(&position, user)| {
                next = Some(Cursor(position));
                user.clone()
            })
            .collect();
        Ok(Page { users, next })
    }
}
