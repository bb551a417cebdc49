//! The statements the SQLite store runs, rows read straight into the domain
//! types, and SQLite's errors as the store's.
//!
//! Each statement is a constant, so that a connection prepares it once and
//! finds it in its cache by the same text every time after.

use rusqlite::types::Type;
use rusqlite::{ErrorCode, Row};

use crate::domain::{Bio, Email, Role, User, UserId, UserName};
use crate::store::StoreError;

/// The user columns every query selects, in the order [`user`] reads.
macro_rules! user_columns {
    () => {
        "position, id, name, email, role, created_at, bio, COALESCE(updated_at, created_at), revision, labels"
    };
}

/// The user columns, for a query built at run time.
pub const USER_COLUMNS: &str = user_columns!();

pub const FIND: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = ?1");

pub const FIND_BY_KEY: &str = concat!(
    "SELECT ",
    user_columns!(),
    ", idempotency_request FROM users WHERE idempotency_key = ?1"
);

pub const INSERT: &str = "INSERT INTO users \
    (id, name, email, email_key, role, created_at, bio, updated_at, name_key, bio_key, labels, idempotency_key, idempotency_request) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?6, ?8, ?9, ?10, ?11, ?12)";

/// One label of a user, by the user's id, as filters search it.
pub const INSERT_LABEL: &str = "INSERT INTO user_labels (position, key, value_key) \
    SELECT position, ?2, ?3 FROM users WHERE id = ?1";

pub const DELETE_LABELS: &str = "DELETE FROM user_labels WHERE position = ?1";

/// Users per multi-row INSERT in a bulk creation: one statement opens its
/// cursors on the table and its four indexes once for all of them.
pub const ROWS_PER_INSERT: usize = 100;

/// The INSERT of [`ROWS_PER_INSERT`] users, with no idempotency key (a bulk
/// creation takes none): 11 parameters a row, numbered from 1 in order.
pub fn insert_many() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
        format!(
            "INSERT INTO users (id, name, email, email_key, role, created_at, bio, updated_at, name_key, bio_key, labels) VALUES {}",
            vec![row; ROWS_PER_INSERT].join(", ")
        )
    })
}

/// Binds `users` (at most [`ROWS_PER_INSERT`]) to an INSERT of that many
/// rows, as [`insert_many`] writes it, and runs it.
pub fn insert_rows(
    statement: &mut rusqlite::Statement<'_>,
    users: &[User],
    email_keys: &[String],
) -> rusqlite::Result<usize> {
    let mut parameter = 0;
    let mut bind = |statement: &mut rusqlite::Statement<'_>, value: &dyn rusqlite::ToSql| {
        parameter += 1;
        statement.raw_bind_parameter(parameter, value)
    };
    for (user, email_key) in users.iter().zip(email_keys) {
        bind(statement, &user.id.as_str())?;
        bind(statement, &user.name.as_str())?;
        bind(statement, &user.email.as_str())?;
        bind(statement, &email_key.as_str())?;
        bind(statement, &user.role.number())?;
        bind(statement, &user.created_at)?;
        bind(statement, &user.bio.as_ref().map(|b| b.as_str()))?;
        bind(statement, &user.updated_at)?;
        bind(statement, &name_key(user))?;
        bind(statement, &bio_key(user))?;
        bind(statement, &labels_json(&user.labels))?;
    }
    statement.raw_execute()
}

pub use crate::store::sql::{bio_key, labels_json, name_key};

pub const TAKEN: &str = "SELECT 1 FROM users WHERE email_key = ?1";

pub const UPDATE: &str = "UPDATE users SET name = ?1, email = ?2, email_key = ?3, role = ?4, bio = ?5, \
    updated_at = ?7, revision = ?8, name_key = ?9, bio_key = ?10, labels = ?11 WHERE id = ?6";

pub const DELETE: &str = concat!(
    "DELETE FROM users WHERE id = ?1 RETURNING ",
    user_columns!()
);

/// The user in a row selected with the user columns, and its position in
/// creation order.
pub fn user(row: &Row<'_>) -> rusqlite::Result<(i64, User)> {
    let number: i32 = row.get(4)?;
    let role = Role::from_number(number).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            4,
            Type::Integer,
            format!("stored role {number} is not a role").into(),
        )
    })?;
    let user = User {
        id: UserId::from_stored(row.get(1)?),
        name: UserName::from_stored(row.get(2)?),
        email: Email::from_stored(row.get(3)?),
        role,
        created_at: row.get(5)?,
        bio: row.get::<_, Option<String>>(6)?.map(Bio::from_stored),
        updated_at: row.get(7)?,
        revision: row.get(8)?,
        labels: {
            let text: String = row.get(9)?;
            serde_json::from_str(&text)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(9, Type::Text, e.into()))?
        },
        etag_memo: crate::domain::EtagMemo::default(),
    };
    Ok((row.get(0)?, user))
}

/// Whether the unique email index refused a write; SQLite names the column
/// in its message ("UNIQUE constraint failed: users.email_key").
pub fn email_conflict(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, Some(message))
            if failure.code == ErrorCode::ConstraintViolation && message.contains("email_key")
    )
}

/// The error for a write that stored `email`: taken, when the unique email
/// index refused it; otherwise as [`failure`] says.
pub fn write_error(error: rusqlite::Error, email: &Email) -> StoreError {
    if email_conflict(&error) {
        StoreError::EmailTaken(email.as_str().to_owned())
    } else {
        failure(error)
    }
}

/// A failure that is not a conflict: the file busy or locked by another
/// process is worth a retry (UNAVAILABLE); anything else is a bug or
/// corruption (INTERNAL).
pub fn failure(error: rusqlite::Error) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(
                failure.code,
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable(error.into())
        }
        _ => StoreError::Internal(error.into()),
    }
}
