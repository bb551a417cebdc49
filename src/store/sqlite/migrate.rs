//! Bringing a database's schema up to date with the numbered migrations in
//! `src/store/migrations/sqlite/`.
//!
//! The bookkeeping is sqlx's own: the same `_sqlx_migrations` table, the
//! same checksums (which `sqlx::migrate!` computes when it embeds the
//! files). So a database made by an earlier release, which ran its
//! migrations through sqlx, opens here with its history intact, and the
//! `sqlx migrate` tool still reads what this runner wrote.

use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::rows::failure;
use crate::store::StoreError;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");

/// Applies, each in a transaction of its own, the migrations `connection`'s
/// database has not had. Refuses a database whose history this release
/// does not know: a migration that failed partway, one whose text changed
/// since it ran, or one from a newer release.
pub fn run(connection: &mut Connection) -> Result<(), StoreError> {
    let refused = |message: String| StoreError::Internal(message.into());
    connection
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
                version BIGINT PRIMARY KEY,
                description TEXT NOT NULL,
                installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                success BOOLEAN NOT NULL,
                checksum BLOB NOT NULL,
                execution_time BIGINT NOT NULL
            )",
        )
        .map_err(failure)?;
    let applied: Vec<(i64, bool, Vec<u8>)> = connection
        .prepare("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect()
        })
        .map_err(failure)?;
    for (version, success, checksum) in &applied {
        if !success {
            return Err(refused(format!(
                "migration {version} failed partway; the database needs repair before usersvc can open it"
            )));
        }
        match MIGRATIONS.iter().find(|m| m.version == *version) {
            None => {
                return Err(refused(format!(
                    "the database has migration {version}, which this release does not know: it was made by a newer usersvc"
                )));
            }
            Some(known) if known.checksum.as_ref() != checksum.as_slice() => {
                return Err(refused(format!(
                    "migration {version} ({}) differs from the one applied to this database",
                    known.description
                )));
            }
            Some(_) => {}
        }
    }
    for migration in MIGRATIONS
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
    {
        if applied
            .iter()
            .any(|(version, ..)| *version == migration.version)
        {
            continue;
        }
        let started = Instant::now();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failure)?;
        // Another process may have applied it while this one waited.
        let done = transaction
            .query_row(
                "SELECT 1 FROM _sqlx_migrations WHERE version = ?1",
                [migration.version],
                |_| Ok(()),
            )
            .optional()
            .map_err(failure)?
            .is_some();
        if !done {
            transaction.execute_batch(&migration.sql).map_err(|e| {
                refused(format!(
                    "migration {} ({}) failed: {e}",
                    migration.version, migration.description
                ))
            })?;
            transaction
                .execute(
                    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                     VALUES (?1, ?2, TRUE, ?3, ?4)",
                    rusqlite::params![
                        migration.version,
                        migration.description.as_ref(),
                        migration.checksum.as_ref(),
                        i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX),
                    ],
                )
                .map_err(failure)?;
        }
        transaction.commit().map_err(failure)?;
        if !done {
            tracing::info!(
                version = migration.version,
                description = %migration.description,
                "SQLite schema migrated"
            );
        }
    }
    fill_search_keys(connection)
}

/// The key that signs page tokens, made at the first start.
pub fn page_token_key(connection: &Connection) -> Result<[u8; 32], StoreError> {
    connection
        .execute(
            "INSERT OR IGNORE INTO keys (name, value) VALUES ('page-token', randomblob(32))",
            [],
        )
        .map_err(failure)?;
    let key: Vec<u8> = connection
        .query_row(
            "SELECT value FROM keys WHERE name = 'page-token'",
            [],
            |row| row.get(0),
        )
        .map_err(failure)?;
    key.try_into()
        .map_err(|_| StoreError::Internal("the stored page-token key is not 32 bytes".into()))
}

/// Gives users stored before the search migration the folded name and bio
/// that filters compare, folded as new users' are: in Rust, since SQLite's
/// own lower() folds ASCII only. One transaction, so that a crash midway
/// leaves the rest for the next start.
fn fill_search_keys(connection: &mut Connection) -> Result<(), StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failure)?;
    let missing: Vec<(i64, String, Option<String>)> = transaction
        .prepare("SELECT position, name, bio FROM users WHERE name_key IS NULL OR bio_key IS NULL")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect()
        })
        .map_err(failure)?;
    if missing.is_empty() {
        return Ok(());
    }
    {
        let mut update = transaction
            .prepare("UPDATE users SET name_key = ?2, bio_key = ?3 WHERE position = ?1")
            .map_err(failure)?;
        for (position, name, bio) in &missing {
            let bio_key = bio
                .as_deref()
                .map(crate::domain::filter::fold)
                .unwrap_or_default();
            update
                .execute(rusqlite::params![
                    position,
                    crate::domain::filter::fold(name),
                    bio_key
                ])
                .map_err(failure)?;
        }
    }
    transaction.commit().map_err(failure)?;
    tracing::info!(
        users = missing.len(),
        "search keys filled for users stored before search"
    );
    Ok(())
}
