//! The one connection that writes, on a thread of its own.
//!
//! SQLite lets one writer in at a time, and a commit with
//! `synchronous=FULL` waits for the disk: that must not hold a runtime
//! thread. So every write is a job for this thread, which runs them one
//! after another. That order is also the order in which their events are
//! published, since each job publishes its own after its commit.
//!
//! A job runs to its end once sent, whether or not its caller still waits:
//! the commit, and the event after it, never depend on the caller's future.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::store::StoreError;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the thread that owns `connection`. It ends when the writer is
    /// dropped and the jobs sent before are done.
    pub fn spawn(connection: Connection) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("usersvc-sqlite-writer".into())
            .spawn(move || serve(connection, queue))
            .map_err(|e| {
                StoreError::Internal(format!("cannot start the SQLite writer: {e}").into())
            })?;
        Ok(Self { jobs })
    }

    /// Runs `write` on the writer's connection, after the writes sent before.
    pub async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |connection| {
            // The caller may have gone; the write is done all the same.
            let _ = reply.send(write(connection));
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Internal("the SQLite writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Internal("the SQLite write ended without an answer".into()))?
    }
}

fn serve(mut connection: Connection, queue: mpsc::Receiver<Job>) {
    for job in queue {
        // A bug in one write must not stop every later one: its transaction
        // is rolled back and its caller told that the write failed.
        if catch_unwind(AssertUnwindSafe(|| job(&mut connection))).is_err() {
            tracing::error!("a SQLite write panicked; its transaction is rolled back");
            if !connection.is_autocommit() {
                let _ = connection.execute_batch("ROLLBACK");
            }
        }
    }
}
