//! `SqliteStore`: the embedded default, one file on disk.
//!
//! WAL mode, so readers never wait for the writer. Reads run on the
//! caller's thread with a connection of their own ([`readers`]); writes run
//! on the writer's thread ([`writer`]), which commits those that wait
//! together and publishes their events in commit order. Each connection keeps its statements prepared,
//! and rows are read straight into the domain types ([`rows`]).
//!
//! With `synchronous=FULL`, the default, a write is on disk when its RPC
//! returns OK; `NORMAL` is faster and survives a crash of usersvc, but a
//! power loss or kernel crash may lose the last commits (never corrupting
//! the file).
//!
//! One usersvc process is the file's only writer: SQLite would serialize
//! two, but their events would not reach each other's watchers.

mod changes;
mod connection;
mod migrate;
mod readers;
mod rows;
mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use self::connection::{Address, Settings};
use self::readers::Readers;
use self::rows::failure;
use self::writer::Writer;
use super::history::{Interest, Retention};
use super::search_sql::{Bind, Dialect, Sql};
use super::{Created, IdempotencyKey, Page, PageQuery, StoreError, StoreOptions, UserStore};
use crate::clock;
use crate::domain::filter::fold;
use crate::domain::{Filter, NewUser, User, UserId, UserPatch};
use crate::events::{Event, EventBus, EventKind};

pub use self::connection::Address as SqliteAddress;

/// SQLite's `synchronous` setting: how durable a commit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Synchronous {
    /// Every commit is on disk before the RPC returns.
    Full,
    /// Commits survive a process crash, but not necessarily a power loss.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }

    /// The number `PRAGMA synchronous` reports for this setting.
    fn level(self) -> i64 {
        match self {
            Synchronous::Full => 2,
            Synchronous::Normal => 1,
        }
    }
}

/// Reading connections kept open: one per runtime thread for point reads,
/// and some for the listings read on blocking threads. A read that finds
/// none idle opens one of its own.
const READERS: usize = 8;

pub struct SqliteStore {
    readers: Arc<Readers>,
    writer: Writer,
    events: EventBus,
    page_token_key: [u8; 32],
    /// Prunes the history to the retention, now and then.
    pruner: tokio::task::JoinHandle<()>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.pruner.abort();
    }
}

/// How often the history is pruned: a change outlives its retention by
/// at most this.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Publishes a committed write's numbered changes, in order.
fn announce<T>(events: &EventBus, outcome: &mut (T, Vec<Event>)) {
    for event in std::mem::take(&mut outcome.1) {
        events.publish_event(event);
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url`, e.g.
    /// `sqlite://data/users.db`, and brings its schema up to date.
    pub async fn open(
        url: &str,
        options: &StoreOptions,
        events: EventBus,
    ) -> Result<Self, StoreError> {
        let address = Address::parse(url).map_err(|e| StoreError::Internal(e.into()))?;
        let settings = Settings {
            path: address.path,
            synchronous: options.sqlite_synchronous,
            busy_timeout: options.db_timeout,
        };
        // Opening and migrating touch the disk: off the runtime's threads.
        let retention = options.event_retention;
        let (readers, writer, page_token_key) = tokio::task::spawn_blocking(move || {
            let mut writer = settings.writer()?;
            migrate::run(&mut writer)?;
            // In a transaction: the rows and the horizon move together.
            let pruning = writer.transaction().map_err(rows::failure)?;
            changes::prune(&pruning, &retention)?;
            pruning.commit().map_err(rows::failure)?;
            let page_token_key = migrate::page_token_key(&writer)?;
            let readers = Readers::open(settings, READERS)?;
            Ok::<_, StoreError>((readers, writer, page_token_key))
        })
        .await
        .map_err(|e| StoreError::Internal(e.into()))??;
        tracing::info!(
            synchronous = match options.sqlite_synchronous {
                Synchronous::Full => "full",
                Synchronous::Normal => "normal",
            },
            connections = readers.kept() + 1,
            "SQLite connections checked: PRAGMA synchronous as configured"
        );
        let newest = readers.read(changes::horizon)?.newest;
        events.start_after(newest);
        let writer = Writer::spawn(writer, events.clone())?;
        Ok(Self {
            readers: Arc::new(readers),
            pruner: tokio::spawn(prune(writer.clone(), retention)),
            writer,
            events,
            page_token_key,
        })
    }
}

/// Prunes the history every `PRUNE_EVERY`, as one more write.
async fn prune(writer: Writer, retention: Retention) {
    loop {
        tokio::time::sleep(PRUNE_EVERY).await;
        let pruned = writer
            .write(
                1,
                move |connection| changes::prune(connection, &retention),
                |_, ()| {},
            )
            .await;
        if let Err(error) = pruned {
            tracing::warn!(%error, "cannot prune the SQLite event history");
        }
    }
}

/// The user `id` names, if there is one, on any connection.
fn find(connection: &Connection, id: &UserId) -> rusqlite::Result<Option<User>> {
    Ok(find_at(connection, id)?.map(|(_, user)| user))
}

/// [`find`], with the user's position.
fn find_at(connection: &Connection, id: &UserId) -> rusqlite::Result<Option<(i64, User)>> {
    connection
        .prepare_cached(rows::FIND)?
        .query_row([id.as_str()], rows::user)
        .optional()
}

/// Adds `user`'s labels to the table that filters search.
fn insert_labels(connection: &Connection, user: &User) -> rusqlite::Result<()> {
    if user.labels.is_empty() {
        return Ok(());
    }
    let mut statement = connection.prepare_cached(rows::INSERT_LABEL)?;
    for (key, value) in &user.labels {
        statement.execute(params![user.id.as_str(), key, fold(value)])?;
    }
    Ok(())
}

/// Inserts `user`, with the idempotency key and request fingerprint it was
/// created with, if any; its labels are the caller's to insert.
fn insert(
    connection: &Connection,
    user: &User,
    email_key: &str,
    idempotency: Option<(&str, &str)>,
) -> rusqlite::Result<usize> {
    let (key, request) = idempotency.unzip();
    let inserted = connection.prepare_cached(rows::INSERT)?.execute(params![
        user.id.as_str(),
        user.name.as_str(),
        user.email.as_str(),
        email_key,
        user.role.number(),
        user.created_at,
        user.bio.as_ref().map(|b| b.as_str()),
        rows::name_key(user),
        rows::bio_key(user),
        rows::labels_json(&user.labels),
        key,
        request,
    ])?;
    Ok(inserted)
}

/// Which of `keys` is the first already stored.
fn first_taken(connection: &Connection, keys: &[String]) -> Result<usize, StoreError> {
    let mut statement = connection.prepare_cached(rows::TAKEN).map_err(failure)?;
    for (offset, key) in keys.iter().enumerate() {
        if statement.exists([key]).map_err(failure)? {
            return Ok(offset);
        }
    }
    Err(StoreError::Internal(
        "the email index refused a batch in which no address is taken".into(),
    ))
}

#[async_trait]
impl UserStore for SqliteStore {
    fn events(&self) -> &EventBus {
        &self.events
    }
    fn system_name(&self) -> &'static str {
        "sqlite"
    }

    /// Both sides must answer: a reader, and the writer's thread.
    async fn check(&self) -> Result<(), StoreError> {
        self.readers
            .read(|connection| connection.query_row("SELECT 1", [], |_| Ok(())))?;
        self.writer
            .write(
                1,
                |connection| {
                    connection
                        .query_row("SELECT 1", [], |_| Ok(()))
                        .map_err(failure)
                },
                |_, ()| {},
            )
            .await
    }

    async fn create(
        &self,
        user: NewUser,
        key: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        self.writer
            .write(
                1,
                move |connection| {
                    let fingerprint = key.as_ref().map(|_| super::sql::fingerprint(&user));
                    if let (Some(key), Some(fingerprint)) = (&key, &fingerprint) {
                        let earlier = connection
                            .prepare_cached(rows::FIND_BY_KEY)
                            .and_then(|mut statement| {
                                statement
                                    .query_row([key.as_str()], |row| {
                                        Ok((rows::user(row)?.1, row.get::<_, String>(10)?))
                                    })
                                    .optional()
                            })
                            .map_err(failure)?;
                        if let Some((earlier, request)) = earlier {
                            return if &request == fingerprint {
                                Ok((Created::Replayed(earlier), Vec::new()))
                            } else {
                                Err(StoreError::IdempotencyKeyReused)
                            };
                        }
                    }
                    let email_key = user.email.unique_key();
                    let idempotency = key
                        .as_ref()
                        .map(IdempotencyKey::as_str)
                        .zip(fingerprint.as_deref());
                    let created = user.into_user(UserId::generate(), clock::unix_seconds());
                    insert(connection, &created, &email_key, idempotency)
                        .map_err(|e| rows::write_error(e, &created.email))?;
                    insert_labels(connection, &created).map_err(failure)?;
                    let event = changes::record(connection, EventKind::Created, &created)?;
                    Ok((Created::New(created), vec![event]))
                },
                announce,
            )
            .await
            .map(|(created, _)| created)
    }

    /// An INSERT of many rows at a time, all or none (the writer's
    /// savepoint). When the unique email index refuses one, the statement is
    /// undone and the first of its addresses already stored names the item:
    /// only a failing batch looks anything up.
    async fn create_many(&self, users: Vec<NewUser>) -> Result<Vec<User>, StoreError> {
        let email_keys = super::email_keys(&users)?;
        let rows = users.len();
        self.writer
            .write(
                rows,
                move |connection| {
                    let now = clock::unix_seconds();
                    let created: Vec<User> = users
                        .into_iter()
                        .map(|u| u.into_user(UserId::generate(), now))
                        .collect();
                    let taken = |index: usize| StoreError::Item {
                        index,
                        source: Box::new(StoreError::EmailTaken(
                            created[index].email.as_str().to_owned(),
                        )),
                    };
                    let chunks = created
                        .chunks(rows::ROWS_PER_INSERT)
                        .zip(email_keys.chunks(rows::ROWS_PER_INSERT));
                    for (number, (chunk, keys)) in chunks.enumerate() {
                        let start = number * rows::ROWS_PER_INSERT;
                        if chunk.len() < rows::ROWS_PER_INSERT {
                            for (offset, (user, key)) in chunk.iter().zip(keys).enumerate() {
                                match insert(connection, user, key, None) {
                                    Ok(_) => {}
                                    Err(e) if rows::email_conflict(&e) => {
                                        return Err(taken(start + offset));
                                    }
                                    Err(e) => return Err(failure(e)),
                                }
                            }
                            continue;
                        }
                        let inserted = connection.prepare_cached(rows::insert_many()).and_then(
                            |mut statement| rows::insert_rows(&mut statement, chunk, keys),
                        );
                        match inserted {
                            Ok(_) => {}
                            // None of this statement's rows is stored, and the
                            // earlier ones have other addresses.
                            Err(e) if rows::email_conflict(&e) => {
                                return Err(taken(start + first_taken(connection, keys)?));
                            }
                            Err(e) => return Err(failure(e)),
                        }
                    }
                    for user in created.iter().filter(|u| !u.labels.is_empty()) {
                        insert_labels(connection, user).map_err(failure)?;
                    }
                    let events = created
                        .iter()
                        .map(|user| changes::record(connection, EventKind::Created, user))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((created, events))
                },
                announce,
            )
            .await
            .map(|(created, _)| created)
    }

    async fn get(&self, id: &UserId) -> Result<User, StoreError> {
        self.readers
            .read(|connection| find(connection, id))?
            .ok_or_else(|| StoreError::NotFound(id.clone()))
    }

    async fn update(
        &self,
        id: &UserId,
        patch: UserPatch,
        protect_admins: bool,
    ) -> Result<User, StoreError> {
        let id = id.clone();
        self.writer
            .write(
                1,
                move |connection| {
                    let (position, mut user) = find_at(connection, &id)
                        .map_err(failure)?
                        .ok_or_else(|| StoreError::NotFound(id.clone()))?;
                    super::check_write(&user, patch.etag.as_deref(), protect_admins)?;
                    let labels_before = user.labels.clone();
                    patch
                        .apply(&mut user, clock::unix_seconds())
                        .map_err(StoreError::Invalid)?;
                    connection
                        .prepare_cached(rows::UPDATE)
                        .and_then(|mut statement| {
                            statement.execute(params![
                                user.name.as_str(),
                                user.email.as_str(),
                                user.email.unique_key(),
                                user.role.number(),
                                user.bio.as_ref().map(|b| b.as_str()),
                                id.as_str(),
                                user.updated_at,
                                user.revision,
                                rows::name_key(&user),
                                rows::bio_key(&user),
                                rows::labels_json(&user.labels),
                            ])
                        })
                        .map_err(|e| rows::write_error(e, &user.email))?;
                    if user.labels != labels_before {
                        connection
                            .prepare_cached(rows::DELETE_LABELS)
                            .and_then(|mut statement| statement.execute([position]))
                            .and_then(|_| insert_labels(connection, &user))
                            .map_err(failure)?;
                    }
                    let event = changes::record(connection, EventKind::Updated, &user)?;
                    Ok((user, vec![event]))
                },
                announce,
            )
            .await
            .map(|(user, _)| user)
    }

    async fn delete(&self, id: &UserId, etag: Option<&str>) -> Result<User, StoreError> {
        let id = id.clone();
        let etag = etag.map(str::to_owned);
        self.writer
            .write(
                1,
                move |connection| {
                    let (position, stored) = find_at(connection, &id)
                        .map_err(failure)?
                        .ok_or_else(|| StoreError::NotFound(id.clone()))?;
                    super::check_write(&stored, etag.as_deref(), false)?;
                    connection
                        .prepare_cached(rows::DELETE_LABELS)
                        .and_then(|mut statement| statement.execute([position]))
                        .map_err(failure)?;
                    // The writer's transaction commits it: a DELETE … RETURNING
                    // in autocommit would commit when the statement is reset,
                    // whose result nobody reads.
                    let deleted = connection
                        .prepare_cached(rows::DELETE)
                        .and_then(|mut statement| {
                            statement.query_row([id.as_str()], rows::user).optional()
                        })
                        .map_err(failure)?;
                    let (_, user) = deleted.ok_or_else(|| StoreError::NotFound(id.clone()))?;
                    let event = changes::record(connection, EventKind::Deleted, &user)?;
                    Ok((user, vec![event]))
                },
                announce,
            )
            .await
            .map(|(user, _)| user)
    }

    /// On a blocking thread, unlike a point read: a page is hundreds of rows,
    /// and the first page may skip any number of users (`offset`), which
    /// SQLite can only step over one by one.
    async fn list_page(&self, query: PageQuery) -> Result<Page, StoreError> {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || page(&readers, &query))
            .await
            .map_err(|e| StoreError::Internal(e.into()))?
    }

    /// On a blocking thread, as a listing: a page of a replay may read
    /// through many changes to find the ones it wants.
    async fn changes(
        &self,
        after: u64,
        interest: &Interest,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let readers = Arc::clone(&self.readers);
        let interest = interest.clone();
        tokio::task::spawn_blocking(move || {
            readers.read_with(|connection| changes::after(connection, after, &interest, limit))
        })
        .await
        .map_err(|e| StoreError::Internal(e.into()))?
    }

    fn page_token_key(&self) -> [u8; 32] {
        self.page_token_key
    }

    /// On a blocking thread: a filter on a substring reads every row.
    async fn count(&self, filter: Option<&Filter>) -> Result<u64, StoreError> {
        let readers = Arc::clone(&self.readers);
        let sql = Sql::count(Dialect::Sqlite, filter);
        tokio::task::spawn_blocking(move || {
            readers.read(|connection| {
                connection
                    .prepare_cached(&sql.text)?
                    .query_row(rusqlite::params_from_iter(&sql.binds), |row| {
                        row.get::<_, i64>(0)
                    })
            })
        })
        .await
        .map_err(|e| StoreError::Internal(e.into()))?
        .map(|count| u64::try_from(count).unwrap_or(0))
    }
}

impl rusqlite::ToSql for Bind {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Bind::Int(number) => number.to_sql(),
            Bind::Text(text) => text.to_sql(),
        }
    }
}

/// One page of a listing, read on a reader. The statement's text depends
/// only on the query's shape, so a connection's cache keeps it prepared
/// for the next page of the same search.
fn page(readers: &Readers, query: &PageQuery) -> Result<Page, StoreError> {
    let sql = Sql::page(Dialect::Sqlite, rows::USER_COLUMNS, query);
    readers.read(|connection| {
        let mut page = Page {
            users: Vec::with_capacity(query.limit.min(1024)),
            next: None,
        };
        let mut statement = connection.prepare_cached(&sql.text)?;
        let mut found = statement.query(rusqlite::params_from_iter(&sql.binds))?;
        let mut last = None;
        while let Some(row) = found.next()? {
            let (position, user) = rows::user(row)?;
            last = Some(position);
            page.users.push(Arc::new(user));
        }
        page.next = query.cursor_after(last, &page.users);
        Ok(page)
    })
}
