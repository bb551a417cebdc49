//! The keys in use, kept fresh by one task: on the schedule the source's
//! `Cache-Control` sets (a file is looked at every second), and at once when
//! a token names a key the set does not have, at most once per refetch
//! interval. A fetch that fails keeps the keys already held, and says so in
//! the log and in `usersvc_jwks_fetch_failures_total`.
//!
//! Verification never waits on the network unless a token names an unknown
//! key; then its call waits for the one fetch in flight (bounded by the
//! fetch's timeout), so that the first token signed with a freshly
//! published key is taken, as providers rotate.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

use super::KeySet;
use super::source::{
    Config, FETCH_TIMEOUT, FILE_POLL, Fetched, MIN_REFETCH_INTERVAL, Reader, Source,
};

/// Fetches of the key set that failed, since the process started.
pub static FETCH_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "usersvc_jwks_fetch_failures_total",
        "Fetches of the JWKS that failed; the keys fetched before are kept.",
    )
    .expect("valid metric")
});

/// Usable keys in the set last fetched.
pub static KEYS: LazyLock<IntGauge> = LazyLock::new(|| {
    IntGauge::new("usersvc_jwks_keys", "Usable keys in the JWKS in use.").expect("valid metric")
});

/// When the set was last fetched, Unix seconds; 0 before the first fetch.
pub static LAST_SUCCESS: LazyLock<IntGauge> = LazyLock::new(|| {
    IntGauge::new(
        "usersvc_jwks_last_success_timestamp_seconds",
        "When the JWKS was last fetched successfully, Unix seconds.",
    )
    .expect("valid metric")
});

/// Calls that may wait on a refetch at once.
pub const MAX_WAITING: usize = 64;

/// The keys in use and the fetches that refresh them.
pub struct Jwks {
    keys: RwLock<Arc<KeySet>>,
    /// Bumped whenever the keys change, so that tokens verified with a key
    /// that was since withdrawn are checked again.
    generation: AtomicU64,
    fetches: Mutex<Fetches>,
    /// Counts fetches finished, for calls waiting on one.
    finished: watch::Sender<u64>,
    /// Asks the task to fetch now.
    wake: Notify,
    /// Calls that may wait on a fetch at once; past it a call with an
    /// unknown key is refused without waiting, so that made-up `kid`s hold
    /// no more than this many calls, whoever sends them.
    waiting: Arc<Semaphore>,
    refetch_interval: Duration,
    described: String,
}

#[derive(Default)]
struct Fetches {
    running: bool,
    /// A call asked for the fetch the task has not started yet: a wake
    /// left over from one already done starts none.
    asked: bool,
    /// The task has ended (the server is stopping): nothing will fetch.
    stopped: bool,
    /// When a token with an unknown key last started a fetch: the interval
    /// bounds those, the fetches anyone can cause. Scheduled fetches are
    /// bounded by the same interval on their own.
    last_asked: Option<Instant>,
    last_error: Option<String>,
}

impl Jwks {
    /// Reads the keys once and starts the task that keeps them fresh, until
    /// `stopping` turns true. An unreadable or invalid file is an error: the
    /// operator is there to fix it. A URL that cannot be fetched is not: the
    /// server starts, answers UNAVAILABLE for tokens until a fetch succeeds,
    /// and keeps trying, since an identity provider that is down at the
    /// same moment should not keep the directory down after it is back.
    pub async fn start(
        config: &Config,
        stopping: watch::Receiver<bool>,
    ) -> Result<Arc<Jwks>, String> {
        let reader = Reader::new(config.source.clone())?;
        let jwks = Arc::new(Jwks::empty(
            config.source.describe(),
            config.refetch_interval,
        ));
        let first = reader.read().await;
        let keep = match (&config.source, first) {
            (Source::File(_), Err(why)) => return Err(format!("--jwks-file: {why}")),
            (Source::File(_), Ok(fetched)) => {
                let (set, skipped) = KeySet::parse(&fetched.body)
                    .map_err(|why| format!("--jwks-file {}: {why}", jwks.described))?;
                jwks.replace(set, &skipped);
                fetched.keep
            }
            (Source::Url { .. }, first) => jwks.apply(first),
        };
        tokio::spawn(Arc::clone(&jwks).refresh(reader, keep, stopping));
        Ok(jwks)
    }

    /// No keys yet, and no fetch made.
    fn empty(described: String, refetch_interval: Duration) -> Jwks {
        Jwks {
            keys: RwLock::new(Arc::new(KeySet::default())),
            generation: AtomicU64::new(0),
            fetches: Mutex::new(Fetches::default()),
            finished: watch::Sender::new(0),
            wake: Notify::new(),
            waiting: Arc::new(Semaphore::new(MAX_WAITING)),
            refetch_interval,
            described,
        }
    }

    /// The keys in use.
    pub fn keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes whenever the keys do.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Where the keys come from, for messages.
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// Why the last fetch failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.fetches().last_error.clone()
    }

    /// For a token naming a key the set lacks: a future that resolves once
    /// a fetch has finished (one started now, or the one running), or `None`
    /// when the refetch interval has not passed since the last fetch began,
    /// when [`MAX_WAITING`] calls already wait, or when the server stops.
    pub fn refetch(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let mut fetches = self.fetches();
        if fetches.stopped {
            return None;
        }
        let permit = Arc::clone(&self.waiting).try_acquire_owned().ok()?;
        let seen = *self.finished.borrow();
        if !fetches.running {
            let now = Instant::now();
            if fetches
                .last_asked
                .is_some_and(|last| now.duration_since(last) < self.refetch_interval)
            {
                return None;
            }
            fetches.running = true;
            fetches.asked = true;
            fetches.last_asked = Some(now);
            self.wake.notify_one();
        }
        let mut finished = self.finished.subscribe();
        Some(async move {
            let _permit = permit;
            let wait = finished.wait_for(|count| *count > seen);
            let _ = tokio::time::timeout(FETCH_TIMEOUT + Duration::from_secs(1), wait).await;
        })
    }

    fn fetches(&self) -> std::sync::MutexGuard<'_, Fetches> {
        self.fetches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetches when due or asked, until the server stops.
    async fn refresh(
        self: Arc<Self>,
        reader: Reader,
        keep: Duration,
        mut stopping: watch::Receiver<bool>,
    ) {
        let is_file = matches!(reader.source(), Source::File(_));
        let mut due = Instant::now() + self.next_in(keep, is_file);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = self.wake.notified() => {
                    // A wake from a call whose fetch was already made.
                    if !self.fetches().asked {
                        continue;
                    }
                }
                _ = stopping.wait_for(|stopping| *stopping) => {
                    let mut fetches = self.fetches();
                    fetches.stopped = true;
                    fetches.running = false;
                    self.finished.send_modify(|count| *count += 1);
                    return;
                }
            }
            {
                let mut fetches = self.fetches();
                fetches.running = true;
                fetches.asked = false;
            }
            let keep = self.apply(reader.read().await);
            due = Instant::now() + self.next_in(keep, is_file);
            let mut fetches = self.fetches();
            fetches.running = false;
            self.finished.send_modify(|count| *count += 1);
        }
    }

    /// When to look again: a file every second (reading it is cheap, and an
    /// operator who edits it expects it taken at once); a URL when its
    /// answer says, and never sooner than the refetch interval.
    fn next_in(&self, keep: Duration, is_file: bool) -> Duration {
        if is_file {
            keep.max(FILE_POLL)
        } else {
            keep.max(self.refetch_interval).max(MIN_REFETCH_INTERVAL)
        }
    }

    /// Takes a fetch's result: new keys in place of the old when it parsed,
    /// the old ones kept when it did not. Returns how long to keep them.
    fn apply(&self, fetched: Result<Fetched, String>) -> Duration {
        let parsed = fetched.and_then(|Fetched { body, keep }| {
            KeySet::parse(&body).map(|(set, skipped)| (set, skipped, keep))
        });
        match parsed {
            Ok((set, skipped, keep)) => {
                self.fetches().last_error = None;
                LAST_SUCCESS.set(crate::clock::unix_seconds());
                self.replace(set, &skipped);
                keep
            }
            Err(why) => {
                FETCH_FAILURES.inc();
                let held = self.keys().len();
                tracing::warn!(
                    source = %self.described,
                    error = %why,
                    keys_kept = held,
                    "cannot fetch the JWKS; the keys fetched before stay in use"
                );
                self.fetches().last_error = Some(why);
                Duration::ZERO
            }
        }
    }

    /// Puts `set` in use, when it differs from the set in use.
    fn replace(&self, set: KeySet, skipped: &[String]) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if keys.same_as(&set) && self.generation() > 0 {
            return;
        }
        for why in skipped {
            tracing::warn!(source = %self.described, key = %why, "a JWKS key is not used");
        }
        tracing::info!(source = %self.described, kids = ?set.kids(), "JWKS keys in use");
        KEYS.set(i64::try_from(set.len()).unwrap_or(i64::MAX));
        *keys = Arc::new(set);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwks(interval: Duration) -> Jwks {
        Jwks::empty("test".into(), interval)
    }

    #[tokio::test]
    async fn made_up_kids_start_one_fetch_per_interval_and_hold_a_bounded_number_of_calls() {
        let jwks = jwks(Duration::from_secs(3600));
        let waits: Vec<_> = (0..MAX_WAITING + 10)
            .filter_map(|_| jwks.refetch())
            .collect();
        assert_eq!(waits.len(), MAX_WAITING, "the rest are refused at once");
        assert!(jwks.fetches().asked, "one fetch asked for");
        // The fetch ends: every waiter goes on, and within the interval no
        // call may ask for another.
        jwks.fetches().running = false;
        jwks.finished.send_modify(|count| *count += 1);
        for wait in waits {
            wait.await;
        }
        assert!(jwks.refetch().is_none(), "within the interval");
        // Once stopped, nothing waits.
        let jwks = self::jwks(Duration::ZERO);
        jwks.fetches().stopped = true;
        assert!(jwks.refetch().is_none());
    }
}
