//! PostgreSQL's SQL through sqlx: reading a user row, the page and insert
//! queries, and recognising errors. And what both SQL stores keep: the
//! fingerprint that ties an idempotency key to its request.

use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

use super::{Created, StoreError};
use crate::domain::filter::fold;
use crate::domain::{Bio, Email, Labels, NewUser, Role, User, UserId, UserName};

/// The user columns every query selects, in the order `UserRow::user` reads.
pub const USER_COLUMNS: &str = "position, id, name, email, role, created_at, bio, COALESCE(updated_at, created_at), revision, labels";

/// A database row a user can be read from, whichever SQL store it came from.
/// The decoding bounds are stated once, here.
pub trait UserRow {
    /// The row's position in creation order, and the user, from the columns
    /// of `USER_COLUMNS`.
    fn user(&self) -> Result<(i64, User), StoreError>;
    /// The text at column `index`.
    fn text(&self, index: usize) -> Result<String, StoreError>;
}

impl<R> UserRow for R
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i32: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn user(&self) -> Result<(i64, User), StoreError> {
        let read = |e: sqlx::Error| StoreError::Internal(e.into());
        let role: i32 = self.try_get(4).map_err(read)?;
        let role = Role::from_number(role).ok_or_else(|| {
            StoreError::Internal(format!("stored role {role} is not a role").into())
        })?;
        let user = User {
            id: UserId::from_stored(self.try_get(1).map_err(read)?),
            name: UserName::from_stored(self.try_get(2).map_err(read)?),
            email: Email::from_stored(self.try_get(3).map_err(read)?),
            role,
            created_at: self.try_get(5).map_err(read)?,
            bio: self
                .try_get::<Option<String>, _>(6)
                .map_err(read)?
                .map(Bio::from_stored),
            updated_at: self.try_get(7).map_err(read)?,
            revision: self.try_get(8).map_err(read)?,
            labels: serde_json::from_str(&self.try_get::<String, _>(9).map_err(read)?)
                .map_err(|e| StoreError::Internal(e.into()))?,
            etag_memo: crate::domain::EtagMemo::default(),
        };
        Ok((self.try_get(0).map_err(read)?, user))
    }

    fn text(&self, index: usize) -> Result<String, StoreError> {
        self.try_get(index)
            .map_err(|e| StoreError::Internal(e.into()))
    }
}

/// An INSERT of `users`, in either SQL dialect; the first row carries
/// `idempotency` (the key, and the request's fingerprint) when given.
pub fn insert_users<'a, DB>(
    users: &'a [User],
    idempotency: Option<(&'a str, String)>,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
    Option<&'a str>: Encode<'a, DB> + Type<DB>,
    Option<String>: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    i32: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(
        "INSERT INTO users (id, name, email, email_key, role, created_at, bio, updated_at, name_key, bio_key, labels, idempotency_key, idempotency_request) ",
    );
    let mut idempotency = idempotency;
    query.push_values(users, |mut row, user| {
        let (key, request) = idempotency.take().unzip();
        row.push_bind(user.id.as_str())
            .push_bind(user.name.as_str())
            .push_bind(user.email.as_str())
            .push_bind(user.email.unique_key())
            .push_bind(user.role.number())
            .push_bind(user.created_at)
            .push_bind(user.bio.as_ref().map(|b| b.as_str()))
            .push_bind(user.updated_at)
            .push_bind(name_key(user))
            .push_bind(bio_key(user))
            .push_bind(labels_json(&user.labels))
            .push_bind(key)
            .push_bind(request);
    });
    query
}

/// The folded name that filters and the name order read.
pub fn name_key(user: &User) -> String {
    fold(user.name.as_str())
}

/// The folded bio that filters read; empty for a user without one.
pub fn bio_key(user: &User) -> String {
    user.bio
        .as_ref()
        .map_or_else(String::new, |bio| fold(bio.as_str()))
}

/// Labels as the `labels` column keeps them: a JSON object.
pub fn labels_json(labels: &Labels) -> String {
    serde_json::to_string(labels).expect("a map of strings serializes")
}

/// A create whose idempotency key is already in `row` (selected as
/// `USER_COLUMNS, idempotency_request`): the same request replays the user,
/// a different one is refused.
pub fn replay<R: UserRow>(row: &R, user: &NewUser) -> Result<Created, StoreError> {
    if row.text(10)? != fingerprint(user) {
        return Err(StoreError::IdempotencyKeyReused);
    }
    Ok(Created::Replayed(row.user()?.1))
}

/// A request as stored beside its idempotency key, to tell a retry from a
/// different request that reuses the key.
pub fn fingerprint(user: &NewUser) -> String {
    let mut request = serde_json::json!([
        user.name.as_str(),
        user.email.as_str(),
        user.role.as_str(),
        user.bio.as_ref().map(|bio| bio.as_str()),
    ]);
    // Only when there are labels, so that a key stored by a release before
    // labels still recognises its retry.
    if !user.labels.is_empty() {
        request
            .as_array_mut()
            .expect("an array")
            .push(serde_json::json!(user.labels));
    }
    request.to_string()
}

/// Whether the unique email index refused a write: PostgreSQL names the
/// constraint.
fn email_conflict(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    db.is_unique_violation()
        && db
            .constraint()
            .unwrap_or(db.message())
            .contains("email_key")
}

/// The error for a write that set `email`: taken, when the unique email
/// index refused it; otherwise as [`failure`] says.
pub fn write_error(error: sqlx::Error, email: Option<&Email>) -> StoreError {
    match email {
        Some(email) if email_conflict(&error) => StoreError::EmailTaken(email.as_str().to_owned()),
        _ => failure(error),
    }
}

/// A failure that is not a conflict: the database unreachable or timing
/// out is worth a retry (UNAVAILABLE); anything else is a bug or
/// corruption (INTERNAL).
pub fn failure(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(error.into()),
        sqlx::Error::Database(db) if is_transient(db.code().as_deref()) => {
            StoreError::Unavailable(error.into())
        }
        _ => StoreError::Internal(error.into()),
    }
}

/// PostgreSQL error codes that say "not now" rather than "never": the
/// connection, shutdown, statement-timeout and serialization classes.
fn is_transient(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("57014" | "57P01" | "57P02" | "57P03" | "40001" | "40P01")
    ) || code.is_some_and(|code| code.starts_with("08"))
}
