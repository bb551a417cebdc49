//! The connections that read, used on the caller's own thread.
//!
//! A read by primary key takes SQLite a few microseconds from the page
//! cache: less than sending it to another thread and waking the caller
//! again would. So a read takes an idle connection, runs its prepared
//! statement where the call is, and puts the connection back. In WAL mode a
//! reader never waits for the writer, so this holds the thread no longer
//! than decoding the request does.

use std::sync::{Mutex, PoisonError};

use rusqlite::Connection;

use super::connection::Settings;
use super::rows::failure;
use crate::store::StoreError;

pub struct Readers {
    idle: Mutex<Vec<Connection>>,
    settings: Settings,
    /// Idle connections kept; a read that finds none idle opens another,
    /// which is closed after it if this many are idle again.
    keep: usize,
}

impl Readers {
    /// Opens `keep` connections, so that the first calls find them ready and
    /// a file that cannot be read stops the start.
    pub fn open(settings: Settings, keep: usize) -> Result<Self, StoreError> {
        let idle = (0..keep)
            .map(|_| settings.reader())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            idle: Mutex::new(idle),
            settings,
            keep,
        })
    }

    /// Connections kept open.
    pub fn kept(&self) -> usize {
        self.keep
    }

    /// Runs `read` on an idle connection.
    pub fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.read_with(|connection| read(connection).map_err(failure))
    }

    /// [`Readers::read`], for a read that fails with the store's error.
    pub fn read_with<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.lock().pop();
        let connection = match idle {
            Some(connection) => connection,
            None => self.settings.reader()?,
        };
        let result = read(&connection);
        let mut idle = self.lock();
        if idle.len() < self.keep {
            idle.push(connection);
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A connection is only pushed or popped under the lock: a panic
        // elsewhere leaves the list whole.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
