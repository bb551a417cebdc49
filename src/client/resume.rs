//! A watch that reconnects by itself and misses nothing: [`ResumingWatch`].
//!
//! It follows its users with SubscribeUserEvents, remembers the sequence of
//! the last change it handed out, and when the stream breaks (a replica
//! died, a deploy, a dropped connection) opens a new one with
//! `resume_after` set to it, after a backoff. The server replays what came
//! in between, so the caller sees every change once, in order. Given the
//! clients of several replicas, it moves to the next one each time a
//! stream breaks or cannot be opened.

use std::time::{Duration, Instant};

use tonic::codec::Streaming;
use tonic::{Code, Status};

use super::{Client, RetryPolicy};
use crate::pb;

/// What [`ResumingWatch::next`] hands out.
#[derive(Debug)]
pub enum WatchItem {
    /// A change, or a subscription's confirmation (`subscribed`).
    Event(pb::UserEvent),
    /// The stream broke with `error` and was opened again, resuming after
    /// `resumed_after`, `took` after it broke.
    Reconnected {
        error: Status,
        resumed_after: i64,
        took: Duration,
    },
}

/// A SubscribeUserEvents stream that reopens itself where it left off.
pub struct ResumingWatch {
    /// One client per replica; `current` is the one in use.
    clients: Vec<Client>,
    current: usize,
    user_ids: Vec<String>,
    /// The sequence of the last change handed out.
    last: i64,
    stream: Option<Streaming<pb::UserEvent>>,
    backoff: RetryPolicy,
    /// Attempts since the last stream that delivered a change.
    failures: u32,
    /// The error that broke the stream being replaced, and when.
    broken: Option<(Status, Instant)>,
}

impl ResumingWatch {
    /// Follows `user_ids` (user ids, or `*`) from just after `resume_after`.
    ///
    /// With `resume_after` 0 it first reads the directory's sequence (one
    /// SearchUsers of a single user), so that even a stream that breaks
    /// before its first change resumes from a known point.
    pub async fn start(
        client: Client,
        user_ids: Vec<String>,
        resume_after: i64,
    ) -> Result<Self, Status> {
        Self::start_any(vec![client], user_ids, resume_after).await
    }

    /// [`ResumingWatch::start`] on the first of `clients`, the replicas of
    /// one directory, moving to the next whenever a stream breaks.
    ///
    /// # Panics
    /// When `clients` is empty.
    pub async fn start_any(
        clients: Vec<Client>,
        user_ids: Vec<String>,
        resume_after: i64,
    ) -> Result<Self, Status> {
        assert!(!clients.is_empty(), "a watch needs a client");
        let last = if resume_after > 0 {
            resume_after
        } else {
            clients[0]
                .search_users(pb::SearchUsersRequest {
                    page_size: 1,
                    ..Default::default()
                })
                .await?
                .sequence
        };
        let mut watch = Self {
            clients,
            current: 0,
            user_ids,
            last,
            stream: None,
            backoff: RetryPolicy {
                max_attempts: u32::MAX,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
            },
            failures: 0,
            broken: None,
        };
        watch.stream = Some(watch.open().await?);
        Ok(watch)
    }

    /// The sequence of the last change handed out: where the next stream
    /// resumes.
    pub fn last_sequence(&self) -> i64 {
        self.last
    }

    async fn open(&self) -> Result<Streaming<pb::UserEvent>, Status> {
        self.clients[self.current]
            .subscribe_user_events(self.user_ids.clone(), self.last)
            .await
    }

    /// The next change, or the news of a reconnection. Fails only with what
    /// reconnecting cannot fix: a resume point no longer kept
    /// (OUT_OF_RANGE: list again), or a request or token the server refuses.
    pub async fn next(&mut self) -> Result<WatchItem, Status> {
        loop {
            if let Some(stream) = self.stream.as_mut() {
                let error = match stream.message().await {
                    Ok(Some(event)) => {
                        if event.sequence > 0 {
                            self.last = event.sequence;
                            self.failures = 0;
                        }
                        return Ok(WatchItem::Event(event));
                    }
                    Ok(None) => Status::unavailable("the server ended the watch"),
                    Err(status) if resumable(&status) => status,
                    Err(status) => return Err(status),
                };
                self.stream = None;
                self.broken = Some((error, Instant::now()));
            }
            self.failures = self.failures.saturating_add(1);
            self.current = (self.current + 1) % self.clients.len();
            tokio::time::sleep(self.backoff.backoff(self.failures)).await;
            match self.open().await {
                Ok(stream) => {
                    self.stream = Some(stream);
                    if let Some((error, since)) = self.broken.take() {
                        return Ok(WatchItem::Reconnected {
                            error,
                            resumed_after: self.last,
                            took: since.elapsed(),
                        });
                    }
                }
                Err(status) if resumable(&status) => {}
                Err(status) => return Err(status),
            }
        }
    }
}

/// Whether a broken watch is worth opening again: the server or the
/// connection went away, or it dropped a watcher that fell behind.
fn resumable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
    )
}
