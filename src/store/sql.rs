//! PostgreSQL's SQL through sqlx: reading a user row, the page and insert
//! queries, and recognising errors. And what both SQL stores keep: the
//! fingerprint that ties an idempotency key to its request.

use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

use super::{Created, Cursor, Page, PageQuery, StoreError};
use crate::domain::{Bio, Email, NewUser, Role, User, UserId, UserName};

/// The user columns every query selects, in the order `UserRow::user` reads.
pub const USER_COLUMNS: &str = "position, id, name, email, role, created_at, bio";

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
        };
        Ok((self.try_get(0).map_err(read)?, user))
    }

    fn text(&self, index: usize) -> Result<String, StoreError> {
        self.try_get(index)
            .map_err(|e| StoreError::Internal(e.into()))
    }
}

/// The query for one page of a listing, in either SQL dialect: keyset
/// pagination on `position`, so that no page costs more than its size.
pub fn page_query<'a, DB>(query: &PageQuery) -> QueryBuilder<'a, DB>
where
    DB: Database,
    i64: 'a + Encode<'a, DB> + Type<DB>,
    i32: 'a + Encode<'a, DB> + Type<DB>,
{
    let mut sql = QueryBuilder::new(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE position > "
    ));
    sql.push_bind(query.after.map_or(0, |Cursor(after)| after));
    if let Some(role) = query.role {
        sql.push(" AND role = ").push_bind(role.number());
    }
    sql.push(" ORDER BY position LIMIT ")
        .push_bind(i64::try_from(query.limit).unwrap_or(i64::MAX))
        .push(" OFFSET ")
        .push_bind(i64::try_from(query.skip).unwrap_or(i64::MAX));
    sql
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
        "INSERT INTO users (id, name, email, email_key, role, created_at, bio, idempotency_key, idempotency_request) ",
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
            .push_bind(key)
            .push_bind(request);
    });
    query
}

/// The page that `page_query`'s rows make, with the cursor after its last user.
pub fn page<R: UserRow>(rows: &[R]) -> Result<Page, StoreError> {
    let mut page = Page::default();
    for row in rows {
        let (position, user) = row.user()?;
        page.next = Some(Cursor(position));
        page.users.push(user);
    }
    Ok(page)
}

/// A create whose idempotency key is already in `row` (selected as
/// `USER_COLUMNS, idempotency_request`): the same request replays the user,
/// a different one is refused.
pub fn replay<R: UserRow>(row: &R, user: &NewUser) -> Result<Created, StoreError> {
    if row.text(7)? != fingerprint(user) {
        return Err(StoreError::IdempotencyKeyReused);
    }
    Ok(Created::Replayed(row.user()?.1))
}

/// A request as stored beside its idempotency key, to tell a retry from a
/// different request that reuses the key.
pub fn fingerprint(user: &NewUser) -> String {
    serde_json::json!([
        user.name.as_str(),
        user.email.as_str(),
        user.role.as_str(),
        user.bio.as_ref().map(|bio| bio.as_str()),
    ])
    .to_string()
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
