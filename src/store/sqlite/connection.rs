//! Opening one SQLite connection: where the file is, who may read it, and
//! the settings every connection must run with, checked as SQLite reports
//! them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::Synchronous;
use super::rows::failure;
use crate::store::StoreError;

/// The file a `sqlite://PATH` (or `sqlite:PATH`) address names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub path: PathBuf,
}

impl Address {
    /// Reads `sqlite://data/users.db` (relative) or `sqlite:///srv/users.db`
    /// (absolute). Parameters after `?` are refused rather than ignored:
    /// each would change how the file is opened behind the store's back.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| format!("{url:?} is not a sqlite:// address"))?;
        if rest.contains('?') {
            return Err(format!(
                "{url:?}: a SQLite address takes no parameters; the flags set its options"
            ));
        }
        // Percent-decoded, as the path of a URL is (and as sqlx read it).
        let rest = percent_encoding::percent_decode_str(rest)
            .decode_utf8()
            .map_err(|_| format!("{url:?}: the path is not UTF-8 once decoded"))?;
        if rest.is_empty() || rest == ":memory:" {
            return Err(format!(
                "{url:?} names no file: use sqlite://PATH, or `memory` for a store that keeps nothing"
            ));
        }
        Ok(Self {
            path: PathBuf::from(rest.as_ref()),
        })
    }
}

/// How each connection is opened.
#[derive(Clone, Debug)]
pub struct Settings {
    pub path: PathBuf,
    pub synchronous: Synchronous,
    /// How long a write waits for another process's lock.
    pub busy_timeout: Duration,
}

/// How long a read waits on a lock. Reads run on the caller's thread, so
/// they must not wait long; in WAL mode they only wait while the file is
/// being recovered or another process holds it exclusively.
const READ_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// WAL pages (4 KiB each) before a checkpoint: the WAL grows to about
/// 40 MiB, and is reused from its start after each.
const WAL_PAGES_BEFORE_CHECKPOINT: i64 = 10_000;

/// The writer's page cache, in KiB (SQLite's default is 2 MiB).
const WRITER_CACHE_KIB: i64 = 64 * 1024;

impl Settings {
    /// The one connection that writes, which also sets the journal mode: it
    /// is kept in the file, so every later connection finds WAL.
    pub fn writer(&self) -> Result<Connection, StoreError> {
        private_file(&self.path)?;
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.cannot_open(e))?;
        // Before the first statement, which may find the file locked.
        connection
            .busy_timeout(self.busy_timeout)
            .map_err(failure)?;
        let mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(failure)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Internal(
                format!("SQLite kept journal_mode={mode} instead of WAL").into(),
            ));
        }
        self.configure(&connection, self.busy_timeout)?;
        // The pages a bulk creation's index inserts touch stay in memory,
        // rather than being read back from the file for every batch.
        connection
            .pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(failure)?;
        // The commit that takes the WAL past this many pages copies them
        // back into the file. SQLite's 1,000 made a bulk creation checkpoint
        // every few batches, copying the hot pages (the indexes' right
        // edges) again each time: 6% of its time, measured.
        connection
            .pragma_update(None, "wal_autocheckpoint", WAL_PAGES_BEFORE_CHECKPOINT)
            .map_err(failure)?;
        Ok(connection)
    }

    /// A connection that can only read: a bug cannot make it write.
    pub fn reader(&self) -> Result<Connection, StoreError> {
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.cannot_open(e))?;
        self.configure(&connection, READ_BUSY_TIMEOUT)?;
        Ok(connection)
    }

    fn configure(&self, connection: &Connection, busy: Duration) -> Result<(), StoreError> {
        connection.busy_timeout(busy).map_err(failure)?;
        connection
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(failure)?;
        connection
            .pragma_update(None, "synchronous", self.synchronous.pragma())
            .map_err(failure)?;
        // Every statement the store runs, kept prepared.
        connection.set_prepared_statement_cache_capacity(32);
        check_synchronous(connection, self.synchronous)
    }

    fn cannot_open(&self, error: rusqlite::Error) -> StoreError {
        StoreError::Internal(format!("cannot open {}: {error}", self.path.display()).into())
    }
}

/// Checks that `connection` runs with the `synchronous` it was given, as
/// SQLite itself reports it: a durability promise that only a configuration
/// value makes is not one.
fn check_synchronous(connection: &Connection, wanted: Synchronous) -> Result<(), StoreError> {
    let mode: i64 = connection
        .pragma_query_value(None, "synchronous", |row| row.get(0))
        .map_err(failure)?;
    if mode != wanted.level() {
        return Err(StoreError::Internal(
            format!(
                "a SQLite connection runs with synchronous={mode}, not {}",
                wanted.level()
            )
            .into(),
        ));
    }
    Ok(())
}

/// Makes `path`, the database, readable by its owner only, before SQLite
/// opens it: its directory, when created, is 0700, and the file is 0600,
/// which SQLite gives its WAL and SHM files too. The users' personal data is
/// no business of the machine's other accounts. A file that is open to
/// others already is closed to them, with a warning.
fn private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let failed = |what: &str, e: std::io::Error| {
        StoreError::Internal(format!("cannot {what} {}: {e}", path.display()).into())
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| failed("create the directory of", e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| failed("create", e))?;
    let mode = std::fs::metadata(path)
        .map_err(|e| failed("read the mode of", e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the database was open to other users; making it 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| failed("restrict", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Address, Settings, Synchronous};

    /// Both kinds of connection run with the setting they were given, as
    /// SQLite reports it (its default would be FULL).
    #[test]
    fn every_connection_runs_with_the_synchronous_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        for wanted in [Synchronous::Normal, Synchronous::Full] {
            let settings = Settings {
                path: dir.path().join("users.db"),
                synchronous: wanted,
                busy_timeout: std::time::Duration::from_secs(1),
            };
            let writer = settings.writer().unwrap();
            let reader = settings.reader().unwrap();
            for connection in [&writer, &reader] {
                let level: i64 = connection
                    .query_row("PRAGMA synchronous", [], |row| row.get(0))
                    .unwrap();
                assert_eq!(level, wanted.level(), "{wanted:?}");
            }
            let mode: String = reader
                .query_row("PRAGMA journal_mode", [], |row| row.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
    }

    #[test]
    fn an_address_names_a_file_and_nothing_else() {
        assert_eq!(
            Address::parse("sqlite://data/users.db").unwrap().path,
            std::path::Path::new("data/users.db")
        );
        assert_eq!(
            Address::parse("sqlite:///srv/usersvc/users.db")
                .unwrap()
                .path,
            std::path::Path::new("/srv/usersvc/users.db")
        );
        assert_eq!(
            Address::parse("sqlite:users.db").unwrap().path,
            std::path::Path::new("users.db")
        );
        assert_eq!(
            Address::parse("sqlite:///srv/my%20data/users.db")
                .unwrap()
                .path,
            std::path::Path::new("/srv/my data/users.db")
        );
        for refused in ["sqlite://users.db?mode=ro", "sqlite://", "sqlite::memory:"] {
            let error = Address::parse(refused).unwrap_err();
            assert!(error.contains(refused), "{error}");
        }
    }
}
