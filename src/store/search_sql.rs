//! A listing's filter, keyset and order as SQL, for SQLite and PostgreSQL
//! alike: each store binds the values in its own way.
//!
//! Strings are compared in their folded form, which the stores keep beside
//! each searchable column (`name_key`, `email_key`, `bio_key`, and
//! `user_labels.value_key`), so that both engines give the memory store's
//! answers: byte order (PostgreSQL's columns are `COLLATE "C"`) on
//! [`fold`](crate::domain::filter::fold)ed text. A prefix is a range on the
//! index; a suffix or a substring is a `LIKE`, which reads every row.

use crate::domain::filter::{TextField, TextTest, TimeField};
use crate::domain::order::SortField;
use crate::domain::{Filter, Order, SortValue};

use super::{Cursor, PageQuery};

/// A value for a placeholder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bind {
    Int(i64),
    Text(String),
}

/// How placeholders are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `?`, bound in order.
    Sqlite,
    /// `$1`, `$2`, …
    Postgres,
}

/// SQL text with its placeholders' values, in order.
#[derive(Debug)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
    dialect: Dialect,
}

impl Sql {
    pub fn new(dialect: Dialect, text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            binds: Vec::new(),
            dialect,
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub fn bind(&mut self, value: Bind) -> &mut Self {
        self.binds.push(value);
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.binds.len().to_string());
            }
        }
        self
    }

    fn text_bind(&mut self, value: &str) -> &mut Self {
        self.bind(Bind::Text(value.to_owned()))
    }

    /// Appends `filter` as a condition.
    pub fn filter(&mut self, filter: &Filter) -> &mut Self {
        match filter {
            Filter::And(all) => self.join(all, " AND "),
            Filter::Or(any) => self.join(any, " OR "),
            Filter::Not(inner) => {
                self.push("NOT (");
                self.filter(inner);
                self.push(")")
            }
            Filter::Text(TextField::Label(key), test) => {
                self.push("position IN (SELECT position FROM user_labels WHERE key = ");
                self.text_bind(key);
                self.push(" AND ");
                self.text_test("value_key", test);
                self.push(")")
            }
            Filter::Text(field, test) => {
                let column = match field {
                    TextField::Name => "name_key",
                    TextField::Email => "email_key",
                    _ => "bio_key",
                };
                self.push("(");
                self.text_test(column, test);
                self.push(")")
            }
            Filter::HasLabel(key) => {
                self.push("position IN (SELECT position FROM user_labels WHERE key = ");
                self.text_bind(key);
                self.push(")")
            }
            Filter::Role(role) => {
                self.push("role = ");
                self.bind(Bind::Int(role.number().into()))
            }
            Filter::Time(field, cmp, at) => {
                self.push(time_column(*field));
                self.push(" ").push(cmp.sql()).push(" ");
                self.bind(Bind::Int(*at))
            }
            Filter::TimeEquals(field, at) => {
                self.push(time_column(*field)).push(" = ");
                self.bind(Bind::Int(*at))
            }
        }
    }

    fn join(&mut self, filters: &[Filter], with: &str) -> &mut Self {
        self.push("(");
        for (i, filter) in filters.iter().enumerate() {
            if i > 0 {
                self.push(with);
            }
            self.filter(filter);
        }
        self.push(")")
    }

    fn text_test(&mut self, column: &str, test: &TextTest) -> &mut Self {
        match test {
            TextTest::Equals(value) => {
                self.push(column).push(" = ");
                self.text_bind(value)
            }
            TextTest::StartsWith(prefix) => {
                // A range, which an index on the column serves.
                self.push(column).push(" >= ");
                self.text_bind(prefix);
                if let Some(above) = successor(prefix) {
                    self.push(" AND ").push(column).push(" < ");
                    self.text_bind(&above);
                }
                self
            }
            TextTest::EndsWith(suffix) => {
                self.push(column).push(" LIKE ");
                self.text_bind(&format!("%{}", escape_like(suffix)));
                self.push(" ESCAPE '\\'")
            }
            TextTest::Contains(part) => {
                self.push(column).push(" LIKE ");
                self.text_bind(&format!("%{}%", escape_like(part)));
                self.push(" ESCAPE '\\'")
            }
            TextTest::Compare(cmp, value) => {
                self.push(column).push(" ").push(cmp.sql()).push(" ");
                self.text_bind(value)
            }
        }
    }

    /// The statement for one page of `query`, selecting `columns`: its
    /// filter, the keyset after its cursor, its order, its size, and the
    /// users a first page skips.
    pub fn page(dialect: Dialect, columns: &str, query: &PageQuery) -> Sql {
        let mut sql = Sql::new(dialect, format!("SELECT {columns} FROM users WHERE TRUE"));
        if let Some(filter) = &query.filter {
            sql.push(" AND ").filter(filter);
        }
        if let Some(after) = &query.after {
            sql.push(" AND ").after(&query.order, after);
        }
        sql.order_by(&query.order).push(" LIMIT ");
        sql.bind(Bind::Int(i64::try_from(query.limit).unwrap_or(i64::MAX)));
        sql.push(" OFFSET ");
        sql.bind(Bind::Int(i64::try_from(query.skip).unwrap_or(i64::MAX)));
        sql
    }

    /// The statement that counts the users `filter` matches (everyone for
    /// `None`). A filter that is one condition on a label is counted from
    /// the labels' index: the same number (a user has at most one value per
    /// key), without looking up each user's row, which at a hundred
    /// thousand matches costs SQLite a quarter of a second.
    pub fn count(dialect: Dialect, filter: Option<&Filter>) -> Sql {
        match filter {
            None => Sql::new(dialect, "SELECT COUNT(*) FROM users"),
            Some(Filter::HasLabel(key)) => {
                let mut sql = Sql::new(dialect, "SELECT COUNT(*) FROM user_labels WHERE key = ");
                sql.text_bind(key);
                sql
            }
            Some(Filter::Text(TextField::Label(key), test)) => {
                let mut sql = Sql::new(dialect, "SELECT COUNT(*) FROM user_labels WHERE key = ");
                sql.text_bind(key);
                sql.push(" AND ");
                sql.text_test("value_key", test);
                sql
            }
            Some(filter) => {
                let mut sql = Sql::new(dialect, "SELECT COUNT(*) FROM users WHERE ");
                sql.filter(filter);
                sql
            }
        }
    }

    /// Appends the condition for "after `cursor`" in `order`.
    pub fn after(&mut self, order: &Order, cursor: &Cursor) -> &mut Self {
        if order.is_creation() {
            self.push("position > ");
            return self.bind(Bind::Int(cursor.as_position().unwrap_or(0)));
        }
        let columns = sort_columns(order);
        let values: Vec<Bind> = cursor.0.iter().take(columns.len()).map(bind_of).collect();
        if columns
            .iter()
            .all(|(_, descending)| *descending == columns[0].1)
        {
            // One direction: a row-value comparison, which an index on the
            // columns serves as a range.
            let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
            self.push("(").push(&names.join(", ")).push(")");
            self.push(if columns[0].1 { " < (" } else { " > (" });
            for (i, value) in values.into_iter().enumerate() {
                if i > 0 {
                    self.push(", ");
                }
                self.bind(value);
            }
            return self.push(")");
        }
        // Mixed directions: (a after) OR (a equal AND b after) OR …
        self.push("(");
        for last in 0..columns.len() {
            if last > 0 {
                self.push(" OR ");
            }
            self.push("(");
            for (i, ((column, descending), value)) in
                columns.iter().zip(&values).enumerate().take(last + 1)
            {
                if i > 0 {
                    self.push(" AND ");
                }
                let op = match (i == last, descending) {
                    (false, _) => " = ",
                    (true, true) => " < ",
                    (true, false) => " > ",
                };
                self.push(column).push(op);
                self.bind(value.clone());
            }
            self.push(")");
        }
        self.push(")")
    }

    /// Appends ` ORDER BY …` for `order`.
    pub fn order_by(&mut self, order: &Order) -> &mut Self {
        if order.is_creation() {
            return self.push(" ORDER BY position");
        }
        let terms: Vec<String> = sort_columns(order)
            .into_iter()
            .map(|(column, descending)| {
                format!("{column}{}", if descending { " DESC" } else { "" })
            })
            .collect();
        self.push(" ORDER BY ").push(&terms.join(", "))
    }
}

fn time_column(field: TimeField) -> &'static str {
    match field {
        TimeField::CreatedAt => "created_at",
        TimeField::UpdatedAt => "updated_at",
    }
}

/// The columns an order sorts by, tie-breaker included. Emails are unique,
/// so an order ending with the email needs no id after it, and the unique
/// email index serves it alone.
fn sort_columns(order: &Order) -> Vec<(&'static str, bool)> {
    let mut columns: Vec<(&'static str, bool)> = order
        .keys
        .iter()
        .map(|&(field, descending)| {
            let column = match field {
                SortField::Name => "name_key",
                SortField::Email => "email_key",
                SortField::CreatedAt => "created_at",
                SortField::UpdatedAt => "updated_at",
            };
            (column, descending)
        })
        .collect();
    if !matches!(order.keys.last(), Some((SortField::Email, _))) {
        columns.push(("id", order.tie_descends()));
    }
    columns
}

fn bind_of(value: &SortValue) -> Bind {
    match value {
        SortValue::Int(number) => Bind::Int(*number),
        SortValue::Text(text) => Bind::Text(text.clone()),
    }
}

/// `LIKE`'s wildcards and its escape character, taken literally.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The least string above every string that starts with `prefix`, in byte
/// order (which is code point order in UTF-8): the prefix with its last
/// character raised by one. `None` when no such string exists.
pub fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(raised) = char::from_u32(next) {
            chars.push(raised);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::filter;

    fn sql(text: &str, dialect: Dialect) -> Sql {
        let mut sql = Sql::new(dialect, "");
        sql.filter(&filter::parse(text).unwrap().unwrap());
        sql
    }

    #[test]
    fn filters_become_conditions_with_their_values_bound() {
        let built = sql(
            "email = \"Ada*\" AND (labels.team = x OR -role = admin)",
            Dialect::Postgres,
        );
        assert_eq!(
            built.text,
            "((email_key >= $1 AND email_key < $2) AND (position IN (SELECT position FROM user_labels WHERE key = $3 AND value_key = $4) OR NOT (role = $5)))"
        );
        assert_eq!(
            built.binds,
            [
                Bind::Text("ada".into()),
                Bind::Text("adb".into()),
                Bind::Text("team".into()),
                Bind::Text("x".into()),
                Bind::Int(1)
            ]
        );
        let like = sql("bio:\"50%_off\"", Dialect::Sqlite);
        assert_eq!(like.text, "(bio_key LIKE ? ESCAPE '\\')");
        assert_eq!(like.binds, [Bind::Text("%50\\%\\_off%".into())]);
    }

    #[test]
    fn a_single_label_condition_is_counted_from_the_labels_index() {
        let count = |filter: &str, dialect| {
            Sql::count(dialect, filter::parse(filter).unwrap().as_ref()).text
        };
        assert_eq!(
            count("labels:team", Dialect::Sqlite),
            "SELECT COUNT(*) FROM user_labels WHERE key = ?"
        );
        assert_eq!(
            count("labels.team = core", Dialect::Postgres),
            "SELECT COUNT(*) FROM user_labels WHERE key = $1 AND value_key = $2"
        );
        assert!(
            count("name:smith", Dialect::Sqlite).starts_with("SELECT COUNT(*) FROM users WHERE")
        );
        assert!(
            count("-labels:team", Dialect::Sqlite)
                .starts_with("SELECT COUNT(*) FROM users WHERE NOT")
        );
        assert_eq!(count("", Dialect::Sqlite), "SELECT COUNT(*) FROM users");
    }

    #[test]
    fn keysets_compare_rows_or_expand_mixed_directions() {
        let cursor = Cursor(vec![
            SortValue::Int(5),
            SortValue::Text("n".into()),
            SortValue::Text("id".into()),
        ]);
        let mut same = Sql::new(Dialect::Sqlite, "");
        same.after(
            &Order::parse("created_at desc, name desc", Order::default()).unwrap(),
            &cursor,
        );
        assert_eq!(same.text, "(created_at, name_key, id) < (?, ?, ?)");
        let mut mixed = Sql::new(Dialect::Sqlite, "");
        mixed.after(
            &Order::parse("created_at desc, name", Order::default()).unwrap(),
            &cursor,
        );
        assert_eq!(
            mixed.text,
            "((created_at < ?) OR (created_at = ? AND name_key > ?) OR (created_at = ? AND name_key = ? AND id > ?))"
        );
    }

    #[test]
    fn a_prefix_range_ends_above_every_string_that_has_it() {
        assert_eq!(successor("ab").as_deref(), Some("ac"));
        assert_eq!(successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(successor("\u{10FFFF}"), None);
    }
}
