//! The local side of a command: who runs it (for the audit records of admin changes) and
//! whether it may open the store and key files, so that a command run as the wrong user
//! fails with what to do instead of leaving files the daemon cannot open.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Result};
use rustix::fs::{Access, AtFlags};

/// The effective user id of this process.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The name `/etc/passwd` gives `uid`, if any.
pub fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// `uid` for humans: its name, else `uid N`.
pub fn display_user(uid: u32) -> String {
    user_name(uid).unwrap_or_else(|| format!("uid {uid}"))
}

/// `uid` as `sudo -u` and `chown` take it: its name, else `#N` (sudo) or `N` (chown).
fn sudo_user(uid: u32) -> String {
    user_name(uid).unwrap_or_else(|| format!("'#{uid}'"))
}
/// How to run a command as `uid`: `sudo portcullis` for root, else `sudo -u USER
/// portcullis`.
fn sudo_as(uid: u32) -> String {
    if uid == 0 {
        "sudo portcullis".into()
    } else {
        format!("sudo -u {} portcullis", sudo_user(uid))
    }
}
fn chown_user(uid: u32) -> String {
    user_name(uid).unwrap_or_else(|| uid.to_string())
}

/// Who runs this command, as its audit records name them: the effective user, then the
/// user who logged in (`root (login alice)`), from the kernel's audit login uid, which
/// the process cannot change (pam_loginuid sets it at login; sudo keeps it). Where the
/// kernel has none (containers, no pam_loginuid), `SUDO_USER` is named as what it is, an
/// unverified hint: `root (SUDO_USER=alice)`.
pub fn actor_name() -> String {
    let me_uid = euid();
    let me = display_user(me_uid);
    let login = std::fs::read_to_string("/proc/self/loginuid")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|&uid| uid != u32::MAX);
    if let Some(uid) = login {
        return if uid == me_uid {
            me
        } else {
            format!("{me} (login {})", display_user(uid))
        };
    }
    let sudo: String = std::env::var("SUDO_USER")
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    if sudo.is_empty() || sudo == me {
        me
    } else {
        format!("{me} (SUDO_USER={sudo})")
    }
}

/// The owner of `path`, if it exists.
fn owner(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().map(|m| m.uid())
}

/// As root, refuse to open `files` (`(what, path)`: the store, the key file) when they,
/// or the directories that hold them, belong to another user: root would make files
/// there (a new key, the database, its `-wal` and `-shm` files) that the daemon, running
/// as that user, cannot open. Checked before anything is created or opened.
pub fn refuse_root_in_others_files(files: &[(&str, &Path)]) -> Result<()> {
    if euid() != 0 {
        return Ok(());
    }
    for (what, path) in files {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let candidates = [Some(*path), dir];
        for candidate in candidates.into_iter().flatten() {
            match owner(candidate) {
                Some(uid) if uid != 0 => bail!(
                    "{what} {} {} owned by {}: as root, this command would leave files (a new key, the store's -wal and -shm) that the daemon cannot open; run admin commands as the daemon's user: {} ...",
                    path.display(),
                    if candidate == *path {
                        "is".to_string()
                    } else {
                        format!("is in {}, which is", candidate.display())
                    },
                    display_user(uid),
                    sudo_as(uid),
                ),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Whether `path` lets this process (its effective user) do `access`: `false` only for a
/// clear "permission denied".
pub(crate) fn denied(path: &Path, access: Access) -> bool {
    matches!(
        rustix::fs::accessat(rustix::fs::CWD, path, access, AtFlags::EACCESS),
        Err(e) if e == rustix::io::Errno::ACCESS
    )
}

/// Who is to open a file: an admin command, or the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    Admin,
    Daemon,
}

/// An error for `what` at `path`, which this process may not open: names the file's
/// owner and the two ways out (run as the owner, or give the file to this user).
fn permission_error(what: &str, path: &Path, opener: Opener) -> anyhow::Error {
    let me = euid();
    let Some(uid) = owner(path) else {
        return anyhow::anyhow!("{what} {}: permission denied", path.display());
    };
    let file = path.display();
    let (owner_name, me_name) = (display_user(uid), display_user(me));
    match opener {
        Opener::Admin => anyhow::anyhow!(
            "{what} {file}: permission denied: it is owned by {owner_name} and this command runs as {me_name}; run it as {owner_name} ({} ...), or, if {me_name} should own it: chown {}: {file}",
            sudo_as(uid),
            chown_user(me),
        ),
        Opener::Daemon => anyhow::anyhow!(
            "{what} {file}: permission denied: it is owned by {owner_name} and the daemon runs as {me_name} (an admin command run as {owner_name} may have made it); give it to the daemon's user: chown {}: {file}",
            chown_user(me),
        ),
    }
}

/// Refuse, with the owner named, when the store file (and its `-wal`, `-shm` files), or
/// the master key, cannot be opened by this process: before anything is opened, so that
/// no half of the work is done. A file that does not exist yet passes when its directory
/// lets it be made.
pub fn check_permissions(store: Option<&Path>, key_file: &Path, opener: Opener) -> Result<()> {
    let rw = Access::READ_OK | Access::WRITE_OK;
    let make = Access::WRITE_OK | Access::EXEC_OK;
    if let Some(db) = store {
        let mut missing = false;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            let file = Path::new(&name);
            if !file.exists() {
                missing = true;
            } else if denied(file, rw) {
                return Err(permission_error("the store", file, opener));
            }
        }
        if let Some(dir) = db.parent().filter(|d| missing && d.exists()) {
            // SQLite makes the database, and its -wal and -shm files, next to it.
            if denied(dir, make) {
                return Err(permission_error("the store's directory", dir, opener));
            }
        }
    }
    if std::fs::symlink_metadata(key_file).is_ok() {
        if denied(key_file, Access::READ_OK) {
            return Err(permission_error("the master key file", key_file, opener));
        }
    } else if let Some(dir) = key_file.parent().filter(|d| d.exists()) {
        if denied(dir, make) {
            return Err(permission_error(
                "the master key file's directory",
                dir,
                opener,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_a_name() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(display_user(4_000_000_000), "uid 4000000000");
    }
}
