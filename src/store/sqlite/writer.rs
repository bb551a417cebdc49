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

/// What a job leaves to do once its group's commit is known: answer, and
/// announce what it changed if the commit succeeded.
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Runs a write on the connection (or tells it why its group could not
/// begin): whether it succeeded, and what to do once the commit is known.
type Run = Box<dyn FnOnce(Result<&Connection, StoreError>) -> (bool, Finish) + Send>;

/// One write, and about how many rows it writes.
struct Job {
    rows: usize,
    run: Run,
}

/// Most jobs committed together: enough to take every CreateUser a busy
/// server has in flight, few enough that the first answer is not held long.
const MOST_JOBS: usize = 128;

/// Most rows a group takes on before it commits: a bulk creation's users
/// count each, so that a few large ones do not make one huge transaction.
const MOST_ROWS: usize = 10_000;

#[derive(Clone)]
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
    ///
    /// `rows` is about how many rows it writes. A write that fails is
    /// answered after the commit too: its error may rest on another write
    /// of the group (an address that one took), so a failed commit answers
    /// it with the commit's error instead.
    pub async fn write<T: Send + 'static>(
        &self,
        rows: usize,
        write: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        announce: impl FnOnce(&EventBus, &mut T) + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let events = self.events.clone();
        let run = move |connection: Result<&Connection, StoreError>| -> (bool, Finish) {
            let outcome = connection.and_then(write);
            let succeeded = outcome.is_ok();
            let finish: Finish = Box::new(move |committed| {
                // The caller may have gone; the write is done all the same.
                let _ = reply.send(match (committed, outcome) {
                    (Ok(()), Ok(mut value)) => {
                        announce(&events, &mut value);
                        Ok(value)
                    }
                    (Ok(()), Err(error)) | (Err(error), _) => Err(error),
                });
            });
            (succeeded, finish)
        };
        let job = Job {
            rows,
            run: Box::new(run),
        };
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Internal("the SQLite writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Internal("the SQLite write ended without an answer".into()))?
    }
}

fn serve(connection: &Connection, queue: &mpsc::Receiver<Job>) {
    let mut next = None;
    while let Some(first) = next.take().or_else(|| queue.recv().ok()) {
        let mut rows = first.rows;
        let mut group = vec![first];
        while group.len() < MOST_JOBS && rows < MOST_ROWS {
            match queue.try_recv() {
                Ok(job) if rows + job.rows > MOST_ROWS => {
                    next = Some(job);
                    break;
                }
                Ok(job) => {
                    rows += job.rows;
                    group.push(job);
                }
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
    // A transaction left open by a ROLLBACK that failed before.
    if !connection.is_autocommit() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    if let Err(error) = run(connection, "BEGIN IMMEDIATE") {
        for job in group {
            let (_, finish) = (job.run)(Err(copy(&error)));
            finish(Err(copy(&error)));
        }
        return;
    }
    let mut finishes = Vec::with_capacity(group.len());
    let mut broken = None;
    for job in group {
        if let Some(error) = &broken {
            let (_, finish) = (job.run)(Err(copy(error)));
            finishes.push(finish);
            continue;
        }
        if let Err(error) = run(connection, "SAVEPOINT job") {
            let (_, finish) = (job.run)(Err(copy(&error)));
            finishes.push(finish);
            broken = Some(error);
            continue;
        }
        // A bug in one write must not stop the others: its savepoint is
        // rolled back and its caller told that the write failed (its answer
        // is dropped with it).
        let succeeded = match catch_unwind(AssertUnwindSafe(|| (job.run)(Ok(connection)))) {
            Ok((succeeded, finish)) => {
                finishes.push(finish);
                succeeded
            }
            Err(_) => {
                tracing::error!("a SQLite write panicked; its changes are rolled back");
                false
            }
        };
        // Some errors (a full disk, I/O) make SQLite undo the whole
        // transaction: the others' changes are gone too.
        let ended = if connection.is_autocommit() {
            Err(StoreError::Unavailable(
                "SQLite undid the transaction after another write of it failed; retry".into(),
            ))
        } else if succeeded {
            run(connection, "RELEASE job")
        } else {
            run(connection, "ROLLBACK TO job").and_then(|()| run(connection, "RELEASE job"))
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
        let outcome = committed.as_ref().map(|_| ()).map_err(copy);
        // Announcing runs outside the savepoints: a panic there must not
        // stop the writer, nor the answers of the rest.
        if catch_unwind(AssertUnwindSafe(|| finish(outcome))).is_err() {
            tracing::error!("announcing a committed SQLite write panicked");
        }
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
