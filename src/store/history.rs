//! The directory's history of changes, as a watch that resumes reads it:
//! how long it is kept (`Retention`), which changes a subscription wants
//! (`Interest`), where a resume point stands against what is kept
//! (`Horizon`), and the memory store's own bounded history.
//!
//! Every store numbers its changes in commit order. The SQL stores keep the
//! numbered changes in a table written in the same transaction as the
//! change; the memory store keeps them in [`History`]. Each prunes to the
//! retention and remembers the newest number it pruned, so that a resume
//! point before it is answered OUT_OF_RANGE rather than with a replay that
//! has a hole in it.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::StoreError;
use crate::clock;
use crate::domain::User;
use crate::events::{Event, EventKind};

/// How long numbered changes are kept for watches that resume: at most
/// `count` changes, none older than `age`. A change is pruned once either
/// bound passes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub count: Option<u64>,
    pub age: Option<Duration>,
}

impl Default for Retention {
    /// An hour, and at most 100,000 changes. A watcher reconnects within
    /// seconds after a deploy or a replica's death; an hour covers one that
    /// waited out an incident, and 100,000 changes bound what is kept (the
    /// memory store's history, the tables' size) whatever the write rate:
    /// at 1,000 writes/s that is still 100 s of history.
    fn default() -> Self {
        Retention {
            count: Some(100_000),
            age: Some(Duration::from_secs(3600)),
        }
    }
}

impl Retention {
    /// The newest change number to prune among those up to `newest`, by
    /// count; `None` when the count keeps them all.
    pub fn pruned_by_count(&self, newest: u64) -> Option<u64> {
        self.count
            .and_then(|count| newest.checked_sub(count))
            .filter(|&n| n > 0)
    }

    /// Changes made before this Unix millisecond are pruned, by age, when
    /// it is `now_ms`.
    pub fn cutoff_ms(&self, now_ms: i64) -> Option<i64> {
        self.age
            .map(|age| now_ms - i64::try_from(age.as_millis()).unwrap_or(i64::MAX / 2))
    }
}

impl FromStr for Retention {
    type Err = String;

    /// `COUNT`, `DURATION` (`90s`, `30m`, `1h`, `7d`) or both, separated by a
    /// comma, as `100000,1h`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut retention = Retention {
            count: None,
            age: None,
        };
        for part in text.split(',').map(str::trim) {
            if let Ok(count) = part.parse::<u64>() {
                if count == 0 || retention.count.replace(count).is_some() {
                    return Err(format!("{text:?}: give one count, at least 1"));
                }
                continue;
            }
            let unit = match part.char_indices().last() {
                Some((at, 's')) => Some((at, 1)),
                Some((at, 'm')) => Some((at, 60)),
                Some((at, 'h')) => Some((at, 3600)),
                Some((at, 'd')) => Some((at, 86_400)),
                _ => None,
            };
            let seconds = unit.and_then(|(at, scale)| {
                part[..at]
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n > 0)
                    .and_then(|n| n.checked_mul(scale))
            });
            match seconds {
                Some(seconds) if retention.age.is_none() => {
                    retention.age = Some(Duration::from_secs(seconds));
                }
                _ => {
                    return Err(format!(
                        "{text:?}: expected a count of changes, a duration such as 1h, or both (100000,1h)"
                    ));
                }
            }
        }
        Ok(retention)
    }
}

/// The changes a subscription wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interest {
    /// Every user's.
    All,
    /// These users' (as the ids are stored).
    Users(Vec<String>),
}

impl Interest {
    pub fn matches(&self, user_id: &str) -> bool {
        match self {
            Interest::All => true,
            Interest::Users(ids) => ids.iter().any(|id| id == user_id),
        }
    }
}

/// What a store keeps of its history: where a resume point stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Horizon {
    /// The newest change pruned; 0 if none was.
    pub pruned_through: u64,
    /// The oldest change kept, if any is.
    pub oldest: Option<u64>,
    /// The newest change made.
    pub newest: u64,
}

impl Horizon {
    /// What a store's columns say: the newest change pruned, and the
    /// oldest and newest kept (none when nothing is kept).
    pub fn from_columns(pruned: i64, oldest: Option<i64>, newest: Option<i64>) -> Horizon {
        let number = |n: i64| u64::try_from(n).unwrap_or(0);
        Horizon {
            pruned_through: number(pruned),
            oldest: oldest.map(number),
            newest: number(newest.unwrap_or(pruned).max(pruned)),
        }
    }

    /// Whether a replay after `after` can be whole: refused with
    /// `ResumeTooOld` when changes after it were pruned, and `ResumeAhead`
    /// when no change has its number yet.
    pub fn check(&self, after: u64) -> Result<(), StoreError> {
        if after > self.newest {
            return Err(StoreError::ResumeAhead {
                after,
                newest: self.newest,
            });
        }
        if after < self.pruned_through {
            return Err(StoreError::ResumeTooOld {
                after,
                oldest: self.oldest.unwrap_or(self.newest + 1),
            });
        }
        Ok(())
    }
}

/// One change the memory store keeps: the user shares its allocation with
/// the store's own copy until it changes again.
#[derive(Debug)]
struct Kept {
    seq: u64,
    kind: EventKind,
    user: Arc<User>,
    at_ms: i64,
}

/// The memory store's history: its numbered changes, pruned to the
/// retention as new ones arrive.
#[derive(Debug, Default)]
pub struct History {
    retention: Retention,
    kept: VecDeque<Kept>,
    newest: u64,
    pruned_through: u64,
}

impl History {
    /// An empty history. As in the SQL stores, numbering starts after the
    /// Unix microsecond the directory was made: never 0 (which asks a watch
    /// for no replay), and past any number an earlier directory (this
    /// store's last run) gave out, so that a client resuming from one is
    /// told to list again rather than replayed changes that are not its.
    pub fn new(retention: Retention) -> Self {
        let base = u64::try_from(clock::unix_micros()).unwrap_or(1).max(1);
        Self {
            retention,
            newest: base,
            pruned_through: base,
            ..Self::default()
        }
    }

    /// Numbers and keeps a change made now; returns its number.
    pub fn record(&mut self, kind: EventKind, user: Arc<User>) -> u64 {
        self.newest += 1;
        let at_ms = clock::unix_millis();
        self.kept.push_back(Kept {
            seq: self.newest,
            kind,
            user,
            at_ms,
        });
        let by_count = self.retention.pruned_by_count(self.newest).unwrap_or(0);
        let cutoff = self.retention.cutoff_ms(at_ms).unwrap_or(i64::MIN);
        while let Some(front) = self.kept.front() {
            if front.seq > by_count && front.at_ms >= cutoff {
                break;
            }
            self.pruned_through = front.seq;
            self.kept.pop_front();
        }
        self.newest
    }

    pub fn horizon(&self) -> Horizon {
        Horizon {
            pruned_through: self.pruned_through,
            oldest: self.kept.front().map(|kept| kept.seq),
            newest: self.newest,
        }
    }

    /// Up to `limit` changes after `after` that `interest` wants, oldest
    /// first. A read: pruning happens as changes are recorded.
    pub fn after(
        &self,
        after: u64,
        interest: &Interest,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.horizon().check(after)?;
        // Numbers here have no gaps: the change after `after` sits at a
        // known place.
        let start = self
            .kept
            .front()
            .map_or(0, |front| after.saturating_sub(front.seq - 1));
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        Ok(self
            .kept
            .iter()
            .skip(start)
            .filter(|kept| interest.matches(kept.user.id.as_str()))
            .take(limit)
            .map(|kept| Event::of(kept.seq, kept.kind, &kept.user, kept.at_ms))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_reads_a_count_a_duration_or_both() {
        let both: Retention = "100000,1h".parse().unwrap();
        assert_eq!(both.count, Some(100_000));
        assert_eq!(both.age, Some(Duration::from_secs(3600)));
        let days: Retention = "7d".parse().unwrap();
        assert_eq!(
            (days.count, days.age),
            (None, Some(Duration::from_secs(604_800)))
        );
        let count: Retention = "500".parse().unwrap();
        assert_eq!((count.count, count.age), (Some(500), None));
        for bad in ["", "0", "1h,2h", "5,6", "1w", "-1", "h"] {
            let error = bad.parse::<Retention>().unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
    }

    #[test]
    fn a_resume_point_is_checked_against_what_is_kept() {
        let horizon = Horizon {
            pruned_through: 10,
            oldest: Some(11),
            newest: 20,
        };
        assert!(horizon.check(10).is_ok(), "the first kept change follows");
        assert!(horizon.check(20).is_ok(), "the newest: nothing to replay");
        assert!(matches!(
            horizon.check(9),
            Err(StoreError::ResumeTooOld {
                after: 9,
                oldest: 11
            })
        ));
        assert!(matches!(
            horizon.check(21),
            Err(StoreError::ResumeAhead {
                after: 21,
                newest: 20
            })
        ));
    }
}
