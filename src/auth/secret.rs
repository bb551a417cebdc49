//! The HS256 signing secret, and where it comes from.
//!
//! In order: `--jwt-secret-file`, then `USERSVC_JWT_SECRET`, then a file in
//! the data directory that the first `serve` or `token` creates (mode 0600).
//! `serve` and `token` resolve it the same way, so a token minted on the
//! server's machine is accepted without further setup.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;

/// File name of the generated secret inside the data directory.
pub const GENERATED_FILE: &str = "jwt-secret";
/// Shortest secret accepted, in bytes: below this HS256 is guessable.
pub const MIN_LEN: usize = 32;

/// Key material. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Where the secret was found, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Environment,
    Generated(PathBuf),
}

impl Secret {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Finds the secret: `file`, else `value` (from the environment), else the
    /// data directory's file, created with a fresh random secret if missing.
    pub fn resolve(
        file: Option<&Path>,
        value: Option<&str>,
        data_dir: &Path,
    ) -> io::Result<(Secret, Source)> {
        let (text, source) = match (file, value) {
            (Some(path), _) => (read_private(path)?, Source::File(path.into())),
            (None, Some(value)) => (value.to_owned(), Source::Environment),
            (None, None) => {
                let path = data_dir.join(GENERATED_FILE);
                (read_or_create(&path)?, Source::Generated(path))
            }
        };
        let secret = text.trim().as_bytes().to_vec();
        if secret.len() < MIN_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the JWT secret ({source:?}) must be at least {MIN_LEN} bytes"),
            ));
        }
        Ok((Secret(secret), source))
    }
}

/// Reads a secret file, refusing one that another account could read or
/// replace: anyone who reads the secret can mint an admin token.
fn read_private(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    let refuse = |why: String| io::Error::new(io::ErrorKind::PermissionDenied, why);
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "{} can be read by other users (mode {:o}): run `chmod 600 {}`",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        )));
    }
    // The owner of /proc/self is this process's effective user.
    if let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid())
        && meta.uid() != me
    {
        return Err(refuse(format!(
            "{} belongs to another user (uid {}, not {me}): run `chown {me} {}`",
            path.display(),
            meta.uid(),
            path.display()
        )));
    }
    std::fs::read_to_string(path)
}

/// Reads `path`, or creates it, readable by its owner only, with 32 random
/// bytes in hex. The file appears whole or not at all: it is written under
/// another name and linked into place, which also makes two processes
/// starting at once agree. An empty file, which a crash of an older version
/// could leave, is replaced the same way: no token can have been signed
/// with it.
fn read_or_create(path: &Path) -> io::Result<String> {
    match read_private(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Ok(text) if text.trim().is_empty() => {
            tracing::warn!(path = %path.display(), "the generated JWT secret is empty; making a new one");
            return write_whole(path, true);
        }
        other => return other,
    }
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    write_whole(path, false)
}

/// Writes a fresh secret to `path` atomically: under a temporary name,
/// synced, then renamed over an empty file (`replace`) or linked where there
/// is none. Returns the secret that ends up at `path`.
fn write_whole(path: &Path, replace: bool) -> io::Result<String> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    let placed = if replace {
        std::fs::rename(&temporary, path)
    } else {
        let linked = std::fs::hard_link(&temporary, path);
        std::fs::remove_file(&temporary)?;
        linked
    };
    match placed {
        Ok(()) => Ok(text),
        // Another process placed its secret first: use that one.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_private(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn generated_secret_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = Secret::resolve(None, None, dir.path()).unwrap();
        let path = dir.path().join(GENERATED_FILE);
        assert_eq!(source, Source::Generated(path.clone()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (second, _) = Secret::resolve(None, None, dir.path()).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn file_wins_over_environment_and_short_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, "f".repeat(40) + "\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (secret, _) = Secret::resolve(Some(&file), Some(&"e".repeat(40)), dir.path()).unwrap();
        assert_eq!(secret.as_bytes(), "f".repeat(40).as_bytes());
        let err = Secret::resolve(None, Some("short"), dir.path()).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
    }

    #[test]
    fn a_secret_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, "f".repeat(40)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Secret::resolve(Some(&file), None, dir.path()).unwrap_err();
        let shown = file.display();
        assert_eq!(
            err.to_string(),
            format!("{shown} can be read by other users (mode 640): run `chmod 600 {shown}`")
        );
        // The generated one is held to the same rule.
        let generated = dir.path().join(GENERATED_FILE);
        std::fs::write(&generated, "g".repeat(64)).unwrap();
        std::fs::set_permissions(&generated, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert!(Secret::resolve(None, None, dir.path()).is_err());
    }

    #[test]
    fn an_empty_generated_secret_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let generated = dir.path().join(GENERATED_FILE);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&generated)
            .unwrap();
        let (secret, _) = Secret::resolve(None, None, dir.path()).unwrap();
        assert_eq!(secret.as_bytes().len(), 64);
        assert_eq!(
            std::fs::read_to_string(&generated).unwrap().as_bytes(),
            secret.as_bytes()
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }
}
