//! Labels: a user's custom attributes, as a client may set and search them.
//!
//! Keys are narrow (`[a-z0-9._/-]`, starting with a letter) so that a filter
//! can name one bare, as `labels.team`, and so that a key needs no case
//! folding: `Team` and `team` cannot both exist. Values are free text, held
//! to the rules of a name: no control or invisible characters.

use std::collections::BTreeMap;

use super::{FieldViolation, Violations, text};

/// Most labels one user may carry.
pub const MAX_LABELS: usize = 64;
/// Longest label key, in characters.
pub const MAX_KEY_CHARS: usize = 63;
/// Longest label value, in characters.
pub const MAX_VALUE_CHARS: usize = 256;

/// A user's labels, sorted by key, so that a user always reads, encodes and
/// compares the same way.
pub type Labels = BTreeMap<String, String>;

/// Why `key` is not a label key, if it is not one.
pub fn key_error(key: &str) -> Option<&'static str> {
    let mut chars = key.chars();
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
        return Some("a label key must be 1 to 63 characters");
    }
    if !chars.next().is_some_and(|c| c.is_ascii_lowercase()) {
        return Some("a label key must start with a letter a-z");
    }
    if !chars.all(is_key_char) {
        return Some("a label key may hold only a-z, 0-9, '.', '_', '/' and '-'");
    }
    None
}

/// A character a label key may hold after its first.
pub fn is_key_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '/' | '-')
}

/// Why `value` is not a label value, if it is not one.
fn value_error(value: &str) -> Option<String> {
    if value.chars().count() > MAX_VALUE_CHARS {
        return Some(format!(
            "a label value must be at most {MAX_VALUE_CHARS} characters"
        ));
    }
    text::refused_char(value, &[], false)
}

/// The field a violation about `key` names: `labels[team]`. A key that is
/// not one is shown escaped and cut short, so that the message stays
/// printable whatever the client sent.
pub fn field(prefix: &str, key: &str) -> String {
    if key_error(key).is_none() {
        return format!("{prefix}[{key}]");
    }
    let shown: String = key.chars().take(MAX_KEY_CHARS).collect();
    format!("{prefix}[{:?}]", shown)
}

/// Checks labels as a request sets them (`prefix` is the request's field),
/// recording a violation per bad key or value.
pub fn check(prefix: &str, labels: &Labels, violations: &mut Violations) {
    if labels.len() > MAX_LABELS {
        violations.push_err::<()>(Err(FieldViolation::new(
            prefix,
            format!("a user may carry at most {MAX_LABELS} labels"),
        )));
    }
    for (key, value) in labels {
        if let Some(error) = key_error(key) {
            violations.push_err::<()>(Err(FieldViolation::new(field(prefix, key), error)));
        } else if let Some(error) = value_error(value) {
            violations.push_err::<()>(Err(FieldViolation::new(field(prefix, key), error)));
        }
    }
}

/// Checks the label keys an update removes.
pub fn check_removed(
    prefix: &str,
    keys: &[String],
    set: &Labels,
    set_prefix: &str,
    violations: &mut Violations,
) {
    for (index, key) in keys.iter().enumerate() {
        if let Some(error) = key_error(key) {
            violations.push_err::<()>(Err(FieldViolation::new(
                format!("{prefix}[{index}]"),
                error,
            )));
        } else if set.contains_key(key) {
            violations.push_err::<()>(Err(FieldViolation::new(
                field(set_prefix, key),
                format!("label {key} is both set and removed"),
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_narrow_and_values_printable() {
        for good in ["team", "a", "k8s.io/app-name_2", &"k".repeat(63)] {
            assert_eq!(key_error(good), None, "{good}");
        }
        for bad in [
            "",
            "Team",
            "1team",
            "team space",
            "té",
            &"k".repeat(64),
            "-x",
        ] {
            assert!(key_error(bad).is_some(), "{bad}");
        }
        assert!(value_error(&"v".repeat(256)).is_none());
        assert!(value_error(&"v".repeat(257)).is_some());
        assert!(value_error("a\u{1b}[31m").is_some());
        assert!(value_error("a\u{200b}b").is_some());
        assert!(value_error("Zürich, 東京").is_none());
    }

    #[test]
    fn a_violation_names_the_key() {
        let mut violations = Violations::default();
        let labels = Labels::from([
            ("team".to_owned(), "a\u{7}".to_owned()),
            ("Bad Key".to_owned(), "v".to_owned()),
        ]);
        check("labels", &labels, &mut violations);
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["labels[\"Bad Key\"]", "labels[team]"]);
    }
}
