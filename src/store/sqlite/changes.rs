//! The `events` table: the numbered changes a watch that resumes replays.
//!
//! Written on the writer's connection inside the change's own savepoint,
//! so a change is numbered exactly when it commits; read on any connection.

use prost::Message;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::rows::failure;
use crate::clock;
use crate::domain::User;
use crate::events::{Event, EventKind};
use crate::pb;
use crate::store::StoreError;
use crate::store::history::{Horizon, Interest, Retention};

const INSERT: &str = "INSERT INTO events (kind, user_id, payload, at_ms) VALUES (?1, ?2, ?3, ?4)";

/// Numbers `user`'s change in the write's transaction; returns the event to
/// announce once it commits.
pub fn record(connection: &Connection, kind: EventKind, user: &User) -> Result<Event, StoreError> {
    let at_ms = clock::unix_millis();
    let payload = pb::User::from(user.clone()).encode_to_vec();
    connection
        .prepare_cached(INSERT)
        .and_then(|mut statement| {
            statement.execute(params![kind.as_str(), user.id.as_str(), &payload, at_ms])
        })
        .map_err(failure)?;
    let seq = u64::try_from(connection.last_insert_rowid()).unwrap_or(0);
    Ok(Event::new(
        seq,
        kind,
        user.id.as_str().to_owned(),
        &payload,
        at_ms,
    ))
}

/// What is kept, as one reader's snapshot sees it.
pub fn horizon(connection: &Connection) -> rusqlite::Result<Horizon> {
    connection
        .prepare_cached(
            "SELECT (SELECT pruned_through FROM event_horizon), \
             (SELECT MIN(seq) FROM events), \
             (SELECT MAX(seq) FROM events)",
        )?
        .query_row([], |row| {
            Ok(Horizon::from_columns(row.get(0)?, row.get(1)?, row.get(2)?))
        })
}

/// Up to `limit` changes after `after` that `interest` wants. The rows are
/// read before the horizon: a prune between the two shows in the horizon,
/// so a replay with a hole is never returned.
pub fn after(
    connection: &Connection,
    after: u64,
    interest: &Interest,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let start = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // Kinds this version knows, so that a page's LIMIT counts only what it
    // returns: a short page means the end.
    let columns = "SELECT seq, kind, user_id, payload, at_ms FROM events WHERE seq > ?1 \
                   AND kind IN ('user_created', 'user_updated', 'user_deleted')";
    let (sql, ids) = match interest {
        Interest::All => (format!("{columns} ORDER BY seq LIMIT ?2"), &[][..]),
        Interest::Users(ids) => {
            let marks = (0..ids.len())
                .map(|n| format!("?{}", n + 3))
                .collect::<Vec<_>>()
                .join(", ");
            (
                format!("{columns} AND user_id IN ({marks}) ORDER BY seq LIMIT ?2"),
                ids.as_slice(),
            )
        }
    };
    let mut statement = connection.prepare_cached(&sql).map_err(failure)?;
    let binds = [rusqlite::types::Value::Integer(start), limit.into()]
        .into_iter()
        .chain(ids.iter().map(|id| id.clone().into()));
    let events = statement
        .query_map(params_from_iter(binds), |row| {
            let kind: String = row.get(1)?;
            let payload: Vec<u8> = row.get(3)?;
            Ok((
                row.get::<_, i64>(0)?,
                kind,
                row.get::<_, String>(2)?,
                payload,
                row.get::<_, i64>(4)?,
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(failure)?;
    horizon(connection).map_err(failure)?.check(after)?;
    Ok(events
        .into_iter()
        .filter_map(|(seq, kind, user_id, payload, at_ms)| {
            Some(Event::new(
                u64::try_from(seq).ok()?,
                EventKind::from_name(&kind)?,
                user_id,
                &payload,
                at_ms,
            ))
        })
        .collect())
}

/// Prunes the oldest changes past the retention, and remembers the newest
/// pruned; in the writer's transaction.
pub fn prune(connection: &Connection, retention: &Retention) -> Result<(), StoreError> {
    let newest: Option<i64> = connection
        .query_row("SELECT MAX(seq) FROM events", [], |row| row.get(0))
        .map_err(failure)?;
    let Some(newest) = newest else {
        return Ok(());
    };
    let by_count = retention
        .pruned_by_count(u64::try_from(newest).unwrap_or(0))
        .map_or(0, |n| i64::try_from(n).unwrap_or(0));
    let cutoff = retention
        .cutoff_ms(clock::unix_millis())
        .unwrap_or(i64::MIN);
    let through: Option<i64> = connection
        .query_row(
            "SELECT MAX(seq) FROM events WHERE seq <= ?1 OR at_ms < ?2",
            params![by_count, cutoff],
            |row| row.get(0),
        )
        .optional()
        .map_err(failure)?
        .flatten();
    if let Some(through) = through {
        connection
            .execute("DELETE FROM events WHERE seq <= ?1", [through])
            .and_then(|_| {
                connection.execute(
                    "UPDATE event_horizon SET pruned_through = MAX(pruned_through, ?1)",
                    [through],
                )
            })
            .map_err(failure)?;
    }
    Ok(())
}
