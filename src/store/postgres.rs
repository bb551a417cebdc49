//! `PostgresStore`: for several stateless replicas over one database.
//!
//! Every write runs in one transaction that also inserts its events into the
//! `events` outbox and calls `pg_notify`. A relay task in each replica
//! listens for the notification, reads the outbox rows after the last one it
//! saw, and publishes them on the replica's bus. So an event exists exactly
//! when its write committed, every replica sees every write, and a replica
//! whose listening connection dropped catches up from the outbox when it
//! reconnects. Writers take one transaction-scoped advisory lock, which makes
//! the outbox's order the commit order (a reader can never pass a row that
//! commits later with a smaller number), at the price of serialising writes.
//!
//! Relies on: identity columns, `RETURNING`, `pg_advisory_xact_lock`,
//! `LISTEN`/`NOTIFY`, and unique indexes. CockroachDB lacks advisory locks
//! and LISTEN; YugabyteDB supports advisory locks but not LISTEN.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};
use tokio::task::JoinHandle;

use super::history::{Horizon, Interest, Retention};
use super::search_sql::{Bind, Dialect, Sql};
use super::sql::{self, USER_COLUMNS, UserRow};
use super::{Created, IdempotencyKey, Page, PageQuery, StoreError, StoreOptions, UserStore};
use crate::clock;
use crate::domain::filter::fold;
use crate::domain::{Filter, NewUser, User, UserId, UserPatch};
use crate::events::{Event, EventBus, EventKind};
use crate::pb;

/// The NOTIFY channel that wakes the relays.
const CHANNEL: &str = "usersvc_events";
/// The advisory lock every write transaction takes (an arbitrary constant).
const WRITE_LOCK: i64 = 0x0075_7365_7273_7663; // "usersvc"
/// Rows per INSERT in a bulk creation: PostgreSQL allows 65,535 parameters.
const ROWS_PER_INSERT: usize = 1_000;
/// How often a relay prunes the outbox to the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

pub struct PostgresStore {
    pool: PgPool,
    events: EventBus,
    relay: JoinHandle<()>,
    page_token_key: [u8; 32],
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

impl PostgresStore {
    /// Connects to `url`, brings the schema up to date, and starts relaying
    /// events from the outbox to `events`.
    pub async fn open(
        url: &str,
        options: &StoreOptions,
        events: EventBus,
    ) -> Result<Self, StoreError> {
        let timeout_ms = options.db_timeout.as_millis().to_string();
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Internal(format!("invalid PostgreSQL address: {e}").into()))?
            .options([
                ("statement_timeout", timeout_ms.as_str()),
                ("lock_timeout", timeout_ms.as_str()),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(options.db_timeout)
            .test_before_acquire(true)
            .connect_with(connect)
            .await
            .map_err(sql::failure)?;
        sqlx::migrate!("src/store/migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| {
                StoreError::Internal(format!("migrating the PostgreSQL schema: {e}").into())
            })?;
        fill_search_keys(&pool).await?;
        trigram_index(&pool).await;
        // The first replica to start makes the key; the others read it.
        sqlx::query(
            "INSERT INTO keys (name, value) VALUES ('page-token', $1) ON CONFLICT DO NOTHING",
        )
        .bind(rand::random::<[u8; 32]>().to_vec())
        .execute(&pool)
        .await
        .map_err(sql::failure)?;
        let key: Vec<u8> = sqlx::query_scalar("SELECT value FROM keys WHERE name = 'page-token'")
            .fetch_one(&pool)
            .await
            .map_err(sql::failure)?;
        let page_token_key = key.try_into().map_err(|_| {
            StoreError::Internal("the stored page-token key is not 32 bytes".into())
        })?;
        prune(&pool, &options.event_retention)
            .await
            .map_err(sql::failure)?;
        let last = horizon(&pool).await.map_err(sql::failure)?.newest;
        events.start_after(last);
        let last = i64::try_from(last).unwrap_or(i64::MAX);
        let relay = tokio::spawn(relay(
            pool.clone(),
            events.clone(),
            last,
            options.event_retention,
        ));
        Ok(Self {
            pool,
            events,
            relay,
            page_token_key,
        })
    }

    async fn find(&self, id: &UserId) -> Result<User, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql::failure)?;
        match row {
            Some(row) => Ok(row.user()?.1),
            None => Err(StoreError::NotFound(id.clone())),
        }
    }

    /// The user `id` names, and its position, read in a write's transaction.
    async fn find_in(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        id: &UserId,
    ) -> Result<(i64, User), StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&mut **tx)
            .await
            .map_err(sql::failure)?;
        match row {
            Some(row) => row.user(),
            None => Err(StoreError::NotFound(id.clone())),
        }
    }

    /// Begins a write: a transaction holding the write lock.
    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(sql::failure)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(sql::failure)?;
        Ok(tx)
    }
}

/// Gives users stored before the search migration the folded name and bio
/// that filters compare, folded in Rust as new users' are. Each row is
/// written only if its keys are still missing, so a write that lands
/// meanwhile is not undone. (Replicas of the release before search do not
/// keep these columns: stop them before starting this one.)
async fn fill_search_keys(pool: &PgPool) -> Result<(), StoreError> {
    let mut after = 0_i64;
    loop {
        let rows = sqlx::query(
            "SELECT position, name, bio FROM users \
             WHERE position > $1 AND (name_key IS NULL OR bio_key IS NULL) ORDER BY position LIMIT 5000",
        )
        .bind(after)
        .fetch_all(pool)
        .await
        .map_err(sql::failure)?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.try_get(0).map_err(sql::failure)?;
        let mut positions = Vec::with_capacity(rows.len());
        let mut names = Vec::with_capacity(rows.len());
        let mut bios = Vec::with_capacity(rows.len());
        for row in &rows {
            positions.push(row.try_get::<i64, _>(0).map_err(sql::failure)?);
            names.push(fold(&row.try_get::<String, _>(1).map_err(sql::failure)?));
            let bio: Option<String> = row.try_get(2).map_err(sql::failure)?;
            bios.push(bio.as_deref().map(fold).unwrap_or_default());
        }
        sqlx::query(
            "UPDATE users SET name_key = k.name, bio_key = k.bio, updated_at = COALESCE(updated_at, created_at) \
             FROM unnest($1::bigint[], $2::text[], $3::text[]) AS k(position, name, bio) \
             WHERE users.position = k.position AND (users.name_key IS NULL OR users.bio_key IS NULL)",
        )
        .bind(&positions)
        .bind(&names)
        .bind(&bios)
        .execute(pool)
        .await
        .map_err(sql::failure)?;
        tracing::info!(
            users = rows.len(),
            "search keys filled for users stored before search"
        );
    }
}

/// Substring filters on names (`name:"smith"`) through a pg_trgm index,
/// when the server has the extension: a LIKE that reads the index, not
/// every row. Best effort, outside the numbered migrations, since the
/// extension is not everywhere: without it the filter still works, and
/// reads every row.
async fn trigram_index(pool: &PgPool) {
    let created: Result<(), sqlx::Error> = async {
        // Made once: CREATE INDEX takes a lock on users even when the
        // index exists, and other replicas' writes would wait behind it.
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = 'users_by_name_trigram' \
             AND schemaname = current_schema())",
        )
        .fetch_one(pool)
        .await?;
        if exists {
            return Ok(());
        }
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            .execute(pool)
            .await?;
        // The operator class lives in the schema the extension was made in,
        // which need not be on this connection's search path.
        let schema: String = sqlx::query_scalar(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
             WHERE e.extname = 'pg_trgm'",
        )
        .fetch_one(pool)
        .await?;
        sqlx::query(&format!(
            "CREATE INDEX IF NOT EXISTS users_by_name_trigram ON users USING gin (name_key \"{}\".gin_trgm_ops)",
            schema.replace('"', "\"\"")
        ))
        .execute(pool)
        .await?;
        Ok(())
    }
    .await;
    if let Err(error) = created {
        tracing::warn!(%error, "no pg_trgm index: substring filters on names read every row");
    }
}

/// Adds the labels of `users` to the table that filters search, in `tx`.
async fn insert_labels(
    tx: &mut Transaction<'static, Postgres>,
    users: &[User],
) -> Result<(), StoreError> {
    let (mut ids, mut keys, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for user in users {
        for (key, value) in &user.labels {
            ids.push(user.id.as_str().to_owned());
            keys.push(key.clone());
            values.push(fold(value));
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO user_labels (position, key, value_key) \
         SELECT u.position, l.key, l.value FROM unnest($1::text[], $2::text[], $3::text[]) AS l(id, key, value) \
         JOIN users u ON u.id = l.id",
    )
    .bind(&ids)
    .bind(&keys)
    .bind(&values)
    .execute(&mut **tx)
    .await
    .map_err(sql::failure)?;
    Ok(())
}

/// `sql`'s statement with its values bound.
fn bound(sql: &Sql) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments> {
    let mut query = sqlx::query(&sql.text);
    for bind in &sql.binds {
        query = match bind {
            Bind::Int(number) => query.bind(*number),
            Bind::Text(text) => query.bind(text.as_str()),
        };
    }
    query
}

/// Adds `users`' events to the outbox and wakes the relays, in `tx`.
async fn announce(
    tx: &mut Transaction<'static, Postgres>,
    kind: EventKind,
    users: &[User],
) -> Result<(), StoreError> {
    use prost::Message;
    let at = clock::unix_millis();
    for chunk in users.chunks(ROWS_PER_INSERT) {
        let mut query =
            QueryBuilder::<Postgres>::new("INSERT INTO events (kind, user_id, payload, at_ms) ");
        query.push_values(chunk, |mut row, user| {
            row.push_bind(kind.as_str())
                .push_bind(user.id.as_str().to_owned())
                .push_bind(pb::User::from(user.clone()).encode_to_vec())
                .push_bind(at);
        });
        query
            .build()
            .execute(&mut **tx)
            .await
            .map_err(sql::failure)?;
    }
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut **tx)
        .await
        .map_err(sql::failure)?;
    Ok(())
}

/// An outbox row as the bus carries it; `None` for a kind this version
/// does not know.
fn event(row: &sqlx::postgres::PgRow) -> Result<Option<Event>, sqlx::Error> {
    let seq: i64 = row.try_get(0)?;
    let kind: String = row.try_get(1)?;
    let payload: Vec<u8> = row.try_get(3)?;
    Ok(EventKind::from_name(&kind).map(|kind| {
        Event::new(
            u64::try_from(seq).unwrap_or(0),
            kind,
            row.try_get(2).unwrap_or_default(),
            &payload,
            row.try_get(4).unwrap_or_default(),
        )
    }))
}

/// Publishes outbox rows after `last` on `events`, in order, moving `last`
/// past each: a failure part way leaves it at the last one published, so
/// that the next try does not publish them again.
async fn catch_up(pool: &PgPool, events: &EventBus, last: &mut i64) -> Result<(), sqlx::Error> {
    loop {
        let rows = sqlx::query("SELECT seq, kind, user_id, payload, at_ms FROM events WHERE seq > $1 ORDER BY seq LIMIT 1000")
            .bind(*last)
            .fetch_all(pool)
            .await?;
        // A number skipped may be a rolled-back write, or a change pruned
        // before this relay read it (it was away longer than the
        // retention): then its watchers must hear that they lost it.
        if let Some(first) = rows.first() {
            let first: i64 = first.try_get(0)?;
            if first > *last + 1 {
                let pruned = horizon(pool).await?.pruned_through;
                if i64::try_from(pruned).unwrap_or(i64::MAX) > *last {
                    tracing::error!(
                        last = *last,
                        pruned,
                        "the outbox was pruned past this replica's relay: its watchers are ended to resume or list again"
                    );
                    events.lost(pruned);
                }
            }
        }
        for row in &rows {
            if let Some(event) = event(row)? {
                events.publish_event(event);
            }
            *last = row.try_get(0)?;
        }
        if rows.len() < 1000 {
            return Ok(());
        }
    }
}

/// What the outbox keeps, in one statement's snapshot.
async fn horizon(pool: &PgPool) -> Result<Horizon, sqlx::Error> {
    let (pruned, oldest, newest): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT pruned_through FROM event_horizon),          (SELECT MIN(seq) FROM events), (SELECT MAX(seq) FROM events)",
    )
    .fetch_one(pool)
    .await?;
    Ok(Horizon::from_columns(pruned, oldest, newest))
}

/// Prunes the outbox's oldest rows past the retention, and remembers the
/// newest pruned, in one statement. Every replica runs it; running it
/// twice prunes nothing more.
async fn prune(pool: &PgPool, retention: &Retention) -> Result<(), sqlx::Error> {
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
        .fetch_one(pool)
        .await?;
    let Some(newest) = newest else {
        return Ok(());
    };
    let by_count = retention
        .pruned_by_count(u64::try_from(newest).unwrap_or(0))
        .map_or(0, |n| i64::try_from(n).unwrap_or(0));
    sqlx::query(
        "WITH bound AS (SELECT MAX(seq) AS through FROM events WHERE seq <= $1 OR at_ms < $2),          gone AS (DELETE FROM events WHERE seq <= (SELECT through FROM bound))          UPDATE event_horizon SET pruned_through =          GREATEST(pruned_through, COALESCE((SELECT through FROM bound), 0))",
    )
    .bind(by_count)
    .bind(retention.cutoff_ms(clock::unix_millis()).unwrap_or(i64::MIN))
    .execute(pool)
    .await?;
    Ok(())
}

/// The relay: wakes on NOTIFY (or every second, in case a notification was
/// missed while reconnecting) and publishes new outbox rows.
async fn relay(pool: PgPool, events: EventBus, mut last: i64, retention: Retention) {
    let mut listener: Option<PgListener> = None;
    let mut since_cleanup = std::time::Instant::now();
    loop {
        if listener.is_none() {
            match PgListener::connect_with(&pool).await {
                Ok(mut l) => match l.listen(CHANNEL).await {
                    Ok(()) => listener = Some(l),
                    Err(error) => tracing::warn!(%error, "cannot LISTEN for events; retrying"),
                },
                Err(error) => tracing::warn!(%error, "cannot connect the event listener; retrying"),
            }
        }
        if let Err(error) = catch_up(&pool, &events, &mut last).await {
            tracing::warn!(%error, "cannot read the event outbox; retrying");
        }
        if since_cleanup.elapsed() > PRUNE_EVERY {
            since_cleanup = std::time::Instant::now();
            if let Err(error) = prune(&pool, &retention).await {
                tracing::warn!(%error, "cannot prune the event outbox");
            }
        }
        match listener.as_mut() {
            Some(l) => match tokio::time::timeout(Duration::from_secs(1), l.try_recv()).await {
                Ok(Ok(Some(_))) | Err(_) => {}
                // The connection dropped (None) or failed: reconnect.
                Ok(Ok(None)) | Ok(Err(_)) => listener = None,
            },
            None => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[async_trait]
impl UserStore for PostgresStore {
    fn events(&self) -> &EventBus {
        &self.events
    }
    fn system_name(&self) -> &'static str {
        "postgresql"
    }

    async fn check(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(sql::failure)?;
        Ok(())
    }

    async fn create(
        &self,
        user: NewUser,
        key: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(key) = &key {
            let row = sqlx::query(&format!(
                "SELECT {USER_COLUMNS}, idempotency_request FROM users WHERE idempotency_key = $1"
            ))
            .bind(key.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql::failure)?;
            if let Some(row) = row {
                return sql::replay(&row, &user);
            }
        }
        let created = user
            .clone()
            .into_user(UserId::generate(), clock::unix_seconds());
        let idempotency = key.as_ref().map(|k| (k.as_str(), sql::fingerprint(&user)));
        sql::insert_users::<Postgres>(std::slice::from_ref(&created), idempotency)
            .build()
            .execute(&mut *tx)
            .await
            .map_err(|e| sql::write_error(e, Some(&user.email)))?;
        insert_labels(&mut tx, std::slice::from_ref(&created)).await?;
        announce(&mut tx, EventKind::Created, std::slice::from_ref(&created)).await?;
        tx.commit().await.map_err(sql::failure)?;
        Ok(Created::New(created))
    }

    async fn create_many(&self, users: Vec<NewUser>) -> Result<Vec<User>, StoreError> {
        let keys = super::email_keys(&users)?;
        let mut tx = self.begin_write().await?;
        let taken: Vec<String> =
            sqlx::query_scalar("SELECT email_key FROM users WHERE email_key = ANY($1)")
                .bind(&keys)
                .fetch_all(&mut *tx)
                .await
                .map_err(sql::failure)?;
        if let Some(index) = keys.iter().position(|k| taken.contains(k)) {
            return Err(StoreError::email_taken_at(index, &users[index]));
        }
        let now = clock::unix_seconds();
        let created: Vec<User> = users
            .into_iter()
            .map(|u| u.into_user(UserId::generate(), now))
            .collect();
        for chunk in created.chunks(ROWS_PER_INSERT) {
            sql::insert_users::<Postgres>(chunk, None)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(sql::failure)?;
        }
        insert_labels(&mut tx, &created).await?;
        announce(&mut tx, EventKind::Created, &created).await?;
        tx.commit().await.map_err(sql::failure)?;
        Ok(created)
    }

    async fn get(&self, id: &UserId) -> Result<User, StoreError> {
        self.find(id).await
    }

    async fn update(
        &self,
        id: &UserId,
        patch: UserPatch,
        protect_admins: bool,
    ) -> Result<User, StoreError> {
        let mut tx = self.begin_write().await?;
        let (position, mut user) = self.find_in(&mut tx, id).await?;
        super::check_write(&user, patch.etag.as_deref(), protect_admins)?;
        let new_email = patch.email.clone();
        let labels_before = user.labels.clone();
        patch
            .apply(&mut user, clock::unix_seconds())
            .map_err(StoreError::Invalid)?;
        sqlx::query(
            "UPDATE users SET name = $1, email = $2, email_key = $3, role = $4, bio = $5, \
             updated_at = $7, revision = $8, name_key = $9, bio_key = $10, labels = $11 WHERE id = $6",
        )
        .bind(user.name.as_str())
        .bind(user.email.as_str())
        .bind(user.email.unique_key())
        .bind(user.role.number())
        .bind(user.bio.as_ref().map(|b| b.as_str()))
        .bind(id.as_str())
        .bind(user.updated_at)
        .bind(user.revision)
        .bind(sql::name_key(&user))
        .bind(sql::bio_key(&user))
        .bind(sql::labels_json(&user.labels))
        .execute(&mut *tx)
        .await
        .map_err(|e| sql::write_error(e, new_email.as_ref()))?;
        if user.labels != labels_before {
            sqlx::query("DELETE FROM user_labels WHERE position = $1")
                .bind(position)
                .execute(&mut *tx)
                .await
                .map_err(sql::failure)?;
            insert_labels(&mut tx, std::slice::from_ref(&user)).await?;
        }
        announce(&mut tx, EventKind::Updated, std::slice::from_ref(&user)).await?;
        tx.commit().await.map_err(sql::failure)?;
        Ok(user)
    }

    async fn delete(&self, id: &UserId, etag: Option<&str>) -> Result<User, StoreError> {
        let mut tx = self.begin_write().await?;
        let (position, stored) = self.find_in(&mut tx, id).await?;
        super::check_write(&stored, etag, false)?;
        sqlx::query("DELETE FROM user_labels WHERE position = $1")
            .bind(position)
            .execute(&mut *tx)
            .await
            .map_err(sql::failure)?;
        let row = sqlx::query(&format!(
            "DELETE FROM users WHERE id = $1 RETURNING {USER_COLUMNS}"
        ))
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql::failure)?;
        let Some(row) = row else {
            return Err(StoreError::NotFound(id.clone()));
        };
        let user = row.user()?.1;
        announce(&mut tx, EventKind::Deleted, std::slice::from_ref(&user)).await?;
        tx.commit().await.map_err(sql::failure)?;
        Ok(user)
    }

    async fn list_page(&self, query: PageQuery) -> Result<Page, StoreError> {
        let sql = Sql::page(Dialect::Postgres, USER_COLUMNS, &query);
        let rows = bound(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(sql::failure)?;
        let mut page = Page::default();
        let mut last = None;
        for row in &rows {
            let (position, user) = row.user()?;
            last = Some(position);
            page.users.push(std::sync::Arc::new(user));
        }
        page.next = query.cursor_after(last, &page.users);
        Ok(page)
    }

    /// From the outbox: writes commit in the order of their numbers, so
    /// every change up to the newest row is visible to a later read.
    async fn sequence(&self) -> Result<u64, StoreError> {
        Ok(horizon(&self.pool).await.map_err(sql::failure)?.newest)
    }

    /// The rows are read before the horizon: a prune between the two shows
    /// in the horizon, so a replay with a hole is never returned.
    async fn changes(
        &self,
        after: u64,
        interest: &Interest,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let start = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Kinds this version knows, so that a page's LIMIT counts only what
        // it returns: a short page means the end.
        let columns = "SELECT seq, kind, user_id, payload, at_ms FROM events WHERE seq > $1 \
                       AND kind IN ('user_created', 'user_updated', 'user_deleted')";
        let rows = match interest {
            Interest::All => {
                sqlx::query(&format!("{columns} ORDER BY seq LIMIT $2"))
                    .bind(start)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
            Interest::Users(ids) => {
                sqlx::query(&format!(
                    "{columns} AND user_id = ANY($3) ORDER BY seq LIMIT $2"
                ))
                .bind(start)
                .bind(limit)
                .bind(ids)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(sql::failure)?;
        horizon(&self.pool)
            .await
            .map_err(sql::failure)?
            .check(after)?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            events.extend(event(row).map_err(sql::failure)?);
        }
        Ok(events)
    }

    fn page_token_key(&self) -> [u8; 32] {
        self.page_token_key
    }

    /// Everyone is the row the triggers keep (`user_count`); a filter is a
    /// COUNT over what it matches.
    async fn count(&self, filter: Option<&Filter>) -> Result<u64, StoreError> {
        let sql = match filter {
            None => Sql::new(Dialect::Postgres, "SELECT n FROM user_count"),
            filter => Sql::count(Dialect::Postgres, filter),
        };
        let row = bound(&sql)
            .fetch_one(&self.pool)
            .await
            .map_err(sql::failure)?;
        let count: i64 = row.try_get(0).map_err(sql::failure)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
