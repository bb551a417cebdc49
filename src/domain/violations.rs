//! What is wrong with a request, field by field: the violations that
//! parsing collects, so that a client fixing a form hears about all of its
//! fields at once. `crate::error` turns them into a `google.rpc.BadRequest`.

use std::fmt;

/// One invalid field of a request, as a `google.rpc.BadRequest` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Every invalid field of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Keeps `result`'s value, or records its error against `field`.
    pub fn check<T, E: Into<String>>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        result
            .map_err(|description| self.0.push(FieldViolation::new(field, description)))
            .ok()
    }

    /// Keeps `result`'s value, or records its violation.
    pub fn push_err<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        result.map_err(|violation| self.0.push(violation)).ok()
    }

    /// `Ok` when nothing was recorded.
    pub fn into_result(self) -> Result<(), Violations> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    pub fn iter(&self) -> impl Iterator<Item = &FieldViolation> {
        self.0.iter()
    }

    /// The same violations, as fields of a repeated request at `prefix`
    /// (`name` becomes `requests[3].name`).
    pub fn nested(&self, prefix: &str) -> Vec<FieldViolation> {
        self.0
            .iter()
            .map(|v| FieldViolation::new(format!("{prefix}.{}", v.field), &*v.description))
            .collect()
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}invalid {}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}
