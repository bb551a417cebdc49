//! Caps on streams held open at once, per caller and in all: an open watch
//! costs memory for as long as it lives, and an open upload holds its batch
//! until it commits, so what one caller can hold is bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::Error;

/// The streams of one kind that are open now.
#[derive(Clone, Debug)]
pub struct StreamSlots {
    /// `watch` or `bulk creation`, for the refusal's message.
    kind: &'static str,
    per_caller: usize,
    total: Option<usize>,
    open: Arc<Mutex<Open>>,
}

#[derive(Debug, Default)]
struct Open {
    by_caller: HashMap<String, usize>,
    total: usize,
}

/// One open stream's place; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: StreamSlots,
    caller: String,
}

impl StreamSlots {
    pub fn new(kind: &'static str, per_caller: usize, total: Option<usize>) -> Self {
        Self {
            kind,
            per_caller,
            total,
            open: Arc::default(),
        }
    }

    /// A place for one more stream of `caller` (a `Caller::key`), or
    /// RESOURCE_EXHAUSTED naming the limit it would pass.
    pub fn acquire(&self, caller: String) -> Result<Slot, Error> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(total) = self.total.filter(|&total| open.total >= total) {
            return Err(Error::TooManyStreams {
                kind: self.kind,
                limit: total,
                scope: "in all",
            });
        }
        let mine = open.by_caller.entry(caller.clone()).or_default();
        if *mine >= self.per_caller {
            return Err(Error::TooManyStreams {
                kind: self.kind,
                limit: self.per_caller,
                scope: "per caller",
            });
        }
        *mine += 1;
        open.total += 1;
        Ok(Slot {
            slots: self.clone(),
            caller,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if let Some(mine) = open.by_caller.get_mut(&self.caller) {
            *mine -= 1;
            if *mine == 0 {
                open.by_caller.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_caller_and_in_all_and_frees_on_drop() {
        let slots = StreamSlots::new("watch", 2, Some(3));
        let a1 = slots.acquire("a".into()).unwrap();
        let _a2 = slots.acquire("a".into()).unwrap();
        let refused = slots.acquire("a".into()).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "at most 2 watch streams may be open at once per caller"
        );
        let _b1 = slots.acquire("b".into()).unwrap();
        let refused = slots.acquire("c".into()).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "at most 3 watch streams may be open at once in all"
        );
        drop(a1);
        slots.acquire("c".into()).unwrap();
    }
}
