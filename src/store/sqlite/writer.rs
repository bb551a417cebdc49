//! The one connection that writes, on a thread of its own, committing the
//! writes that wait together.
//!
//! SQLite lets one writer in at a time, and a commit with
//! `synchronous=FULL` waits for the disk: that must not hold a runtime
//! thread. So every write is a job for this thread. The jobs that arrive
//! while a commit is running are taken together as a group: one
//! transaction, each job in a savepoint of its own, and one commit, so one
//! wait for the disk makes them all durable. A job that fails rolls back its
//! own savepoint and nothing else.
//!
//! A job's answer and its events wait for the commit: nothing is
//! acknowledged or announced that is not on disk, and a failed commit fails
//! every job of its group. Events are published in the order the jobs ran,
//! which is the order of their changes.
//!
//! A job runs to its end once sent, whether or not its caller still waits:
//! the commit, and the event after it, never depend on the caller's future.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::rows::failure;
use crate::events::EventBus;
use crate::store::StoreError;

/// What a job leaves to do once its group's commit is known.
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Runs a write on the connection, or answers with the error that kept its
/// group from beginning. `None` when it failed (and has answered).
type Job = Box<dyn FnOnce(Result<&Connection, StoreError>) -> Option<Finish> + Send>;

/// Most jobs committed together: enough to take every CreateUser a busy
/// server has in flight, few enough that the first answer is not held long.
const MOST_IN_GROUP: usize = 128;

pub struct Writer {
    jobs: mpsc::Sender<Job>,
    events: EventBus,
}

impl Writer {
    /// Starts the thread that owns `connection`, announcing committed
    /// changes on `events`. It ends when the writer is dropped and the jobs
    /// sent before are done.
    pub fn spawn(connection: Connection, events: EventBus) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("usersvc-sqlite-writer".into())
            .spawn(move || serve(&connection, &queue))
            .map_err(|e| {
                StoreError::Internal(format!("cannot start the SQLite writer: {e}").into())
            })?;
        Ok(Self { jobs, events })
    }

    /// Runs `write` in a transaction with the writes waiting beside it, and
    /// answers once they are committed, after `announce` has published
    /// what it changed.
    pub async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        announce: impl FnOnce(&EventBus, &T) + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let events = self.events.clone();
        let job: Job = Box::new(move |connection| match connection.and_then(write) {
            // The caller may have gone; the write is done all the same.
            Err(error) => {
                let _ = reply.send(Err(error));
                None
            }
            Ok(value) => Some(Box::new(move |committed| match committed {
                Ok(()) => {
                    announce(&events, &value);
                    let _ = reply.send(Ok(value));
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            })),
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Internal("the SQLite writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Internal("the SQLite write ended without an answer".into()))?
    }
}

fn serve(connection: &Connection, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MOST_IN_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit(connection, group);
    }
}

/// Runs `statement`, one of the transaction's own, kept prepared.
fn run(connection: &Connection, statement: &str) -> Result<(), StoreError> {
    connection
        .prepare_cached(statement)
        .and_then(|mut statement| statement.execute([]))
        .map(drop)
        .map_err(failure)
}

/// Runs `group` in one transaction and finishes each job with the commit's
/// outcome.
fn commit(connection: &Connection, group: Vec<Job>) {
    if let Err(error) = run(connection, "BEGIN IMMEDIATE") {
        for job in group {
            job(Err(copy(&error)));
        }
        return;
    }
    let mut finishes = Vec::with_capacity(group.len());
    let mut broken = None;
    for job in group {
        if let Some(error) = &broken {
            job(Err(copy(error)));
            continue;
        }
        if let Err(error) = run(connection, "SAVEPOINT job") {
            job(Err(error));
            continue;
        }
        // A bug in one write must not stop the others: its savepoint is
        // rolled back and its caller told that the write failed.
        let finish = catch_unwind(AssertUnwindSafe(|| job(Ok(connection)))).unwrap_or_else(|_| {
            tracing::error!("a SQLite write panicked; its changes are rolled back");
            None
        });
        let ended = match finish {
            Some(finish) => {
                finishes.push(finish);
                run(connection, "RELEASE job")
            }
            None => {
                run(connection, "ROLLBACK TO job").and_then(|()| run(connection, "RELEASE job"))
            }
        };
        // What the transaction holds is not known now: none of it commits.
        if let Err(error) = ended {
            broken = Some(error);
        }
    }
    let committed = match broken {
        Some(error) => Err(error),
        None => run(connection, "COMMIT"),
    };
    if committed.is_err() && !connection.is_autocommit() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    for finish in finishes {
        finish(committed.as_ref().map(|_| ()).map_err(copy));
    }
}

/// The same failure again, for another job of the group.
fn copy(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(source) => StoreError::Unavailable(source.to_string().into()),
        StoreError::Internal(source) => StoreError::Internal(source.to_string().into()),
        other => StoreError::Internal(other.to_string().into()),
    }
}
