//! A provider's secret (Duo's `skey`, Twilio's `auth_token`, the ntfy token): given in
//! the config, or in a file (`skey_file`, ...) that is read again when it changes. A secret
//! rotated in place, by a secrets manager or by hand, is used from the next request on,
//! with no restart and no reload. A file that cannot be read any more, or is empty, leaves
//! the last secret read in use, and the log says so (at most once a minute).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use zeroize::Zeroizing;

/// How often a file that cannot be read is warned about.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A secret from the config, or from a file.
pub enum Secret {
    Inline(Arc<Zeroizing<String>>),
    File(SecretFile),
}

impl Secret {
    /// `value` if given, else the file at `path` (read now: an error names `key`, the
    /// config key of the file, e.g. `tenants.acme.duo.skey_file`); neither: None.
    pub fn from_config(
        value: Option<&String>,
        path: Option<&PathBuf>,
        key: &str,
    ) -> Result<Option<Secret>> {
        Ok(match (value, path) {
            (Some(v), _) => Some(Secret::Inline(Arc::new(Zeroizing::new(v.clone())))),
            (None, Some(path)) => Some(Secret::File(SecretFile::open(key, path)?)),
            (None, None) => None,
        })
    }

    /// The secret to use now.
    pub fn current(&self) -> Arc<Zeroizing<String>> {
        match self {
            Secret::Inline(v) => v.clone(),
            Secret::File(f) => f.current(),
        }
    }
}

/// What tells a file's contents apart without reading it: a secret written in place keeps
/// its inode but not its change time (which, unlike the modification time, `cp -p` or
/// `rsync -t` cannot set back); one renamed into place (or behind a symlink swapped by
/// Kubernetes) gets another inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
    changed: (i64, i64),
}

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        modified: meta.modified().ok(),
        changed: (meta.ctime(), meta.ctime_nsec()),
    }
}

struct Loaded {
    stamp: Stamp,
    value: Arc<Zeroizing<String>>,
    warned_at: Option<Instant>,
}

/// A secret kept in a file, read again when the file changes.
pub struct SecretFile {
    key: String,
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

/// The file's secret (trimmed) and its stamp; an empty one is an error.
fn read(path: &Path) -> std::io::Result<(Stamp, Zeroizing<String>)> {
    let before = std::fs::metadata(path)?;
    let text = Zeroizing::new(std::fs::read_to_string(path)?);
    let value = Zeroizing::new(text.trim().to_string());
    if value.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        ));
    }
    Ok((stamp(&before), value))
}

impl SecretFile {
    /// Reads the file at `path` now; `key` names it in errors and logs.
    pub fn open(key: &str, path: &Path) -> Result<SecretFile> {
        let (stamp, value) =
            read(path).with_context(|| format!("{key}: reading {}", path.display()))?;
        Ok(SecretFile {
            key: key.to_string(),
            path: path.to_path_buf(),
            loaded: Mutex::new(Loaded {
                stamp,
                value: Arc::new(value),
                warned_at: None,
            }),
        })
    }

    /// The secret as the file holds it now (one `stat` per call; read only when it
    /// changed); the last one read if the file cannot be read.
    pub fn current(&self) -> Arc<Zeroizing<String>> {
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = match std::fs::metadata(&self.path) {
            Ok(meta) => stamp(&meta) != loaded.stamp,
            Err(e) => {
                self.warn(&mut loaded, &e);
                return loaded.value.clone();
            }
        };
        if changed {
            match read(&self.path) {
                Ok((stamp, value)) => {
                    tracing::info!(key = %self.key, file = %self.path.display(),
                        "secret file changed: read again, used from now on");
                    loaded.stamp = stamp;
                    loaded.value = Arc::new(value);
                    loaded.warned_at = None;
                }
                Err(e) => self.warn(&mut loaded, &e),
            }
        }
        loaded.value.clone()
    }

    fn warn(&self, loaded: &mut Loaded, e: &std::io::Error) {
        if loaded.warned_at.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        loaded.warned_at = Some(Instant::now());
        tracing::warn!(key = %self.key, file = %self.path.display(), error = %e,
            "cannot read the secret file again; the last secret read stays in use: fix the file (it is read again when it changes)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_rotated_in_place_or_by_rename_is_used_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let s = Secret::from_config(None, Some(&path), "tenants.acme.sms.auth_token_file")
            .unwrap()
            .unwrap();
        assert_eq!(s.current().as_str(), "first");
        // Rewritten in place (same inode): another length.
        std::fs::write(&path, "second-one\n").unwrap();
        assert_eq!(s.current().as_str(), "second-one");
        // Same length, modification time set back (as `cp -p` or `rsync -t` do): the
        // change time still tells.
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "SECOND-ONE\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(before)
            .unwrap();
        assert_eq!(s.current().as_str(), "SECOND-ONE");
        // Renamed into place.
        let new = dir.path().join("token.new");
        std::fs::write(&new, "third").unwrap();
        std::fs::rename(&new, &path).unwrap();
        assert_eq!(s.current().as_str(), "third");
        // Emptied, then gone: the last one read stays.
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(s.current().as_str(), "third");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(s.current().as_str(), "third");
        // Back: used again.
        std::fs::write(&path, "fourth").unwrap();
        assert_eq!(s.current().as_str(), "fourth");
    }

    #[test]
    fn a_secret_in_the_config_wins_and_an_empty_file_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("skey");
        std::fs::write(&path, "from-file").unwrap();
        let inline = "inline".to_string();
        let s = Secret::from_config(Some(&inline), Some(&path), "k")
            .unwrap()
            .unwrap();
        assert_eq!(s.current().as_str(), "inline");
        assert!(Secret::from_config(None, None, "k").unwrap().is_none());
        std::fs::write(&path, "  \n").unwrap();
        let e = Secret::from_config(None, Some(&path), "tenants.acme.duo.skey_file")
            .err()
            .expect("an empty file is refused");
        assert!(
            format!("{e:#}").contains("tenants.acme.duo.skey_file"),
            "{e:#}"
        );
    }
}
