//! The HS256 signing secret, and where it comes from.
//!
//! In order: `--jwt-secret-file`, then `USERSVC_JWT_SECRET`, then a file in
//! the data directory that the first `serve` or `token` creates (mode 0600).
//! `serve` and `token` resolve it the same way, so a token minted on the
//! server's machine is accepted without further setup.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
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
            (Some(path), _) => (std::fs::read_to_string(path)?, Source::File(path.into())),
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

/// Reads `path`, or creates it, readable by its owner only, with 32 random
/// bytes in hex. `create_new` makes two processes starting at once agree.
fn read_or_create(path: &Path) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut file) => {
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            Ok(text)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => std::fs::read_to_string(path),
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
        let (secret, _) = Secret::resolve(Some(&file), Some(&"e".repeat(40)), dir.path()).unwrap();
        assert_eq!(secret.as_bytes(), "f".repeat(40).as_bytes());
        let err = Secret::resolve(None, Some("short"), dir.path()).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
    }
}
