//! `SqliteStore`: the embedded default, one file on disk.
//!
//! WAL mode, so readers never wait for the writer. Writes are serialized by
//! a lock in this process (SQLite allows one writer at a time anyway), which
//! also keeps their events in commit order. With `synchronous=FULL`, the
//! default, a write is on disk when its RPC returns OK; `NORMAL` is faster
//! and survives a crash of usersvc, but a power loss or kernel crash may
//! lose the last commits (never corrupting the file).

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
use tokio::sync::Mutex;

use super::sql::{self, USER_COLUMNS, UserRow};
use super::{Created, IdempotencyKey, Page, PageQuery, StoreError, StoreOptions, UserStore};
use crate::clock;
use crate::domain::{NewUser, User, UserId, UserPatch};
use crate::events::{EventBus, EventKind};

/// SQLite's `synchronous` setting: how durable a commit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Synchronous {
    /// Every commit is on disk before the RPC returns.
    Full,
    /// Commits survive a process crash, but not necessarily a power loss.
    Normal,
}

/// Rows per INSERT in a bulk creation: 8 parameters a row, well under
/// SQLite's limit of 32,766 parameters a statement.
const ROWS_PER_INSERT: usize = 500;

pub struct SqliteStore {
    pool: SqlitePool,
    /// Held for the whole of each write transaction and its announcement.
    write: Mutex<()>,
    events: EventBus,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url`, e.g.
    /// `sqlite://data/users.db`, and brings its schema up to date.
    pub async fn open(
        url: &str,
        options: &StoreOptions,
        events: EventBus,
    ) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| {
                StoreError::Internal(format!("invalid SQLite address {url:?}: {e}").into())
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match options.sqlite_synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(options.db_timeout)
            .foreign_keys(true);
        private_file(connect.get_filename())?;
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(options.db_timeout)
            .connect_with(connect)
            .await
            .map_err(sql::failure)?;
        sqlx::migrate!("src/store/migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| {
                StoreError::Internal(format!("migrating the SQLite schema: {e}").into())
            })?;
        durability(&pool, options.sqlite_synchronous).await?;
        Ok(Self {
            pool,
            write: Mutex::new(()),
            events,
        })
    }

    async fn find(&self, id: &UserId) -> Result<User, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql::failure)?;
        match row {
            Some(row) => Ok(row.user()?.1),
            None => Err(StoreError::NotFound(id.clone())),
        }
    }
}

/// Connections the pool may hold at once.
const POOL_SIZE: u32 = 4;

/// Checks that every connection of the pool runs with the `synchronous`
/// it was given, as SQLite itself reports it (`PRAGMA synchronous`), and
/// says so in the log: a durability promise that only a configuration
/// value makes is not one. A connection that disagrees stops the start.
async fn durability(pool: &SqlitePool, wanted: Synchronous) -> Result<(), StoreError> {
    let expected: i64 = match wanted {
        Synchronous::Full => 2,
        Synchronous::Normal => 1,
    };
    let mut connections = Vec::new();
    for _ in 0..POOL_SIZE {
        connections.push(pool.acquire().await.map_err(sql::failure)?);
    }
    for connection in &mut connections {
        let (mode,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(&mut **connection)
            .await
            .map_err(sql::failure)?;
        if mode != expected {
            return Err(StoreError::Internal(
                format!("a SQLite connection runs with synchronous={mode}, not {expected}").into(),
            ));
        }
    }
    let name = match wanted {
        Synchronous::Full => "full",
        Synchronous::Normal => "normal",
    };
    tracing::info!(
        synchronous = name,
        connections = connections.len(),
        "SQLite connections checked: PRAGMA synchronous as configured"
    );
    Ok(())
}

/// Makes `path`, the database, readable by its owner only, before SQLite
/// opens it: its directory, when created, is 0700, and the file is 0600,
/// which SQLite gives its WAL and SHM files too. The users' personal data is
/// no business of the machine's other accounts. A file that is open to
/// others already is closed to them, with a warning.
fn private_file(path: &std::path::Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let failed = |what: &str, e: std::io::Error| {
        StoreError::Internal(format!("cannot {what} {}: {e}", path.display()).into())
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| failed("create the directory of", e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| failed("create", e))?;
    let mode = std::fs::metadata(path)
        .map_err(|e| failed("read the mode of", e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the database was open to other users; making it 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| failed("restrict", e))?;
    }
    Ok(())
}

#[async_trait]
impl UserStore for SqliteStore {
    fn events(&self) -> &EventBus {
        &self.events
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
        let _write = self.write.lock().await;
        if let Some(key) = &key {
            let row = sqlx::query(&format!(
                "SELECT {USER_COLUMNS}, idempotency_request FROM users WHERE idempotency_key = ?"
            ))
            .bind(key.as_str())
            .fetch_optional(&self.pool)
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
        sql::insert_users::<Sqlite>(std::slice::from_ref(&created), idempotency)
            .build()
            .execute(&self.pool)
            .await
            .map_err(|e| sql::write_error(e, Some(&user.email)))?;
        self.events.publish(EventKind::Created, &created);
        Ok(Created::New(created))
    }

    async fn create_many(&self, users: Vec<NewUser>) -> Result<Vec<User>, StoreError> {
        let _write = self.write.lock().await;
        let email_keys = super::email_keys(&users)?;
        for (chunk_start, chunk) in email_keys.chunks(ROWS_PER_INSERT).enumerate() {
            let mut query =
                QueryBuilder::<Sqlite>::new("SELECT email_key FROM users WHERE email_key IN (");
            let mut keys = query.separated(", ");
            for key in chunk {
                keys.push_bind(key.as_str());
            }
            query.push(")");
            let taken: Vec<String> = query
                .build_query_scalar()
                .fetch_all(&self.pool)
                .await
                .map_err(sql::failure)?;
            if let Some(offset) = chunk.iter().position(|key| taken.contains(key)) {
                let index = chunk_start * ROWS_PER_INSERT + offset;
                return Err(StoreError::email_taken_at(index, &users[index]));
            }
        }

        let now = clock::unix_seconds();
        let created: Vec<User> = users
            .into_iter()
            .map(|u| u.into_user(UserId::generate(), now))
            .collect();
        let mut tx = self.pool.begin().await.map_err(sql::failure)?;
        for chunk in created.chunks(ROWS_PER_INSERT) {
            sql::insert_users::<Sqlite>(chunk, None)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(sql::failure)?;
        }
        tx.commit().await.map_err(sql::failure)?;
        for user in &created {
            self.events.publish(EventKind::Created, user);
        }
        Ok(created)
    }

    async fn get(&self, id: &UserId) -> Result<User, StoreError> {
        self.find(id).await
    }

    async fn update(&self, id: &UserId, patch: UserPatch) -> Result<User, StoreError> {
        let _write = self.write.lock().await;
        let mut user = self.find(id).await?;
        let new_email = patch.email.clone();
        patch.apply(&mut user);
        sqlx::query(
            "UPDATE users SET name = ?, email = ?, email_key = ?, role = ?, bio = ? WHERE id = ?",
        )
        .bind(user.name.as_str())
        .bind(user.email.as_str())
        .bind(user.email.unique_key())
        .bind(user.role.number())
        .bind(user.bio.as_ref().map(|b| b.as_str()))
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| sql::write_error(e, new_email.as_ref()))?;
        self.events.publish(EventKind::Updated, &user);
        Ok(user)
    }

    async fn delete(&self, id: &UserId) -> Result<User, StoreError> {
        let _write = self.write.lock().await;
        let row = sqlx::query(&format!(
            "DELETE FROM users WHERE id = ? RETURNING {USER_COLUMNS}"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql::failure)?;
        let user = match row {
            Some(row) => row.user()?.1,
            None => return Err(StoreError::NotFound(id.clone())),
        };
        self.events.publish(EventKind::Deleted, &user);
        Ok(user)
    }

    async fn list_page(&self, query: PageQuery) -> Result<Page, StoreError> {
        let rows = sql::page_query::<Sqlite>(&query)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sql::failure)?;
        sql::page(&rows)
    }
}
