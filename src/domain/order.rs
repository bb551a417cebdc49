//! The order of a listing (AIP-132's `order_by`), and where in that order a
//! page starts.
//!
//! Every order ends with a tie-breaker that no two users share, so that a
//! page can start strictly after the last user of the one before (keyset
//! paging): the id, in the direction of the last field; or, for creation
//! order, the user's position, which only the store knows.

use std::cmp::Ordering;

use super::User;
use super::filter::fold;

/// A field a listing can be sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortField {
    Name,
    Email,
    CreatedAt,
    UpdatedAt,
}

impl SortField {
    pub fn name(self) -> &'static str {
        match self {
            SortField::Name => "name",
            SortField::Email => "email",
            SortField::CreatedAt => "created_at",
            SortField::UpdatedAt => "updated_at",
        }
    }

    /// The value `user` sorts by: the folded text, or the time.
    pub fn value(self, user: &User) -> SortValue {
        match self {
            SortField::Name => SortValue::Text(fold(user.name.as_str())),
            SortField::Email => SortValue::Text(user.email.unique_key()),
            SortField::CreatedAt => SortValue::Int(user.created_at),
            SortField::UpdatedAt => SortValue::Int(user.updated_at),
        }
    }

    fn is_text(self) -> bool {
        matches!(self, SortField::Name | SortField::Email)
    }
}

/// One value of a sort key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortValue {
    Int(i64),
    Text(String),
}

/// The sort keys of a listing; empty is creation order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Order {
    /// Each field, and whether it is descending.
    pub keys: Vec<(SortField, bool)>,
}

impl Order {
    /// SearchUsers' default: `created_at`, then the id.
    pub fn by_creation_time() -> Order {
        Order {
            keys: vec![(SortField::CreatedAt, false)],
        }
    }

    /// Creation order, by the store's position.
    pub fn is_creation(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether the tie-breaker (the id) descends: as the last field does.
    pub fn tie_descends(&self) -> bool {
        self.keys.last().is_some_and(|&(_, descending)| descending)
    }

    /// The key a page's cursor holds for `user`: each field's value, then
    /// the id. Not for creation order, whose tie-breaker is the position.
    pub fn key_of(&self, user: &User) -> Vec<SortValue> {
        let mut key: Vec<SortValue> = self.keys.iter().map(|(f, _)| f.value(user)).collect();
        key.push(SortValue::Text(user.id.as_str().to_owned()));
        key
    }

    /// Compares two keys as this order sorts them.
    pub fn compare(&self, left: &[SortValue], right: &[SortValue]) -> Ordering {
        let directions = self
            .keys
            .iter()
            .map(|&(_, descending)| descending)
            .chain([self.tie_descends()]);
        for ((l, r), descending) in left.iter().zip(right).zip(directions) {
            let ordering = l.cmp(r);
            let ordering = if descending {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        Ordering::Equal
    }

    /// Whether `key` has the shape of this order's keys: what a page token
    /// must hold before any store sees it.
    pub fn fits(&self, key: &[SortValue]) -> bool {
        if self.is_creation() {
            return matches!(key, [SortValue::Int(_)]);
        }
        key.len() == self.keys.len() + 1
            && self.keys.iter().zip(key).all(|((field, _), value)| {
                matches!(
                    (field.is_text(), value),
                    (true, SortValue::Text(_)) | (false, SortValue::Int(_))
                )
            })
            && matches!(key.last(), Some(SortValue::Text(_)))
    }

    /// Reads an `order_by`: fields separated by commas, each optionally
    /// followed by `desc` (or `asc`). Empty gives `default`.
    pub fn parse(text: &str, default: Order) -> Result<Order, String> {
        if text.trim().is_empty() {
            return Ok(default);
        }
        let mut keys = Vec::new();
        for part in text.split(',') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let (name, descending) = match words.as_slice() {
                [name] => (*name, false),
                [name, direction] if direction.eq_ignore_ascii_case("desc") => (*name, true),
                [name, direction] if direction.eq_ignore_ascii_case("asc") => (*name, false),
                [] => return Err("has an empty item: expected a field between commas".into()),
                [_, other, ..] => {
                    return Err(format!("expected \"desc\" or a comma, found {other:?}"));
                }
            };
            let field = match name {
                "name" => SortField::Name,
                "email" => SortField::Email,
                "created_at" => SortField::CreatedAt,
                "updated_at" => SortField::UpdatedAt,
                other => {
                    return Err(format!(
                        "cannot sort by {other:?}: expected name, email, created_at or updated_at"
                    ));
                }
            };
            if keys.iter().any(|&(f, _)| f == field) {
                return Err(format!("names {} twice", field.name()));
            }
            keys.push((field, descending));
        }
        Ok(Order { keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_by_reads_as_aip_132_writes_it() {
        let order = Order::parse("created_at desc, name", Order::default()).unwrap();
        assert_eq!(
            order.keys,
            [(SortField::CreatedAt, true), (SortField::Name, false)]
        );
        assert_eq!(
            Order::parse(" ", Order::by_creation_time()).unwrap(),
            Order::by_creation_time()
        );
        for bad in ["bio", "name sideways", "name,,email", "name, name desc"] {
            assert!(Order::parse(bad, Order::default()).is_err(), "{bad}");
        }
    }
}
