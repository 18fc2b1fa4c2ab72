//! Who answers on the socket: the module trusts a peer only if its uid is root's, the
//! owner's of the socket's directory, or the one of `daemon_user=`.
//!
//! Whoever may create files in the socket's directory (a group-writable directory, say)
//! could, while the daemon is down, bind a socket of their own at the daemon's path and
//! answer "accept" to every login. The kernel records the credentials of the process that
//! made the listening socket (`SO_PEERCRED`, taken at `listen()`), so the module reads them
//! right after the connect and refuses anyone else as a setup error, in every failmode.
//!
//! The packaged setup passes: systemd makes `/run/portcullis` (`RuntimeDirectory=`) and
//! gives it to the unit's `User=` (or `DynamicUser=`), which is the uid that makes the
//! socket. A daemon run as root passes too.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// The uids the module accepts as the daemon behind `socket=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected<'a> {
    /// The socket's directory, for the message.
    pub dir: &'a Path,
    /// Its owner, if it could be read.
    pub dir_owner: Option<u32>,
    /// `daemon_user=NAME` and its uid, if given.
    pub daemon_user: Option<(&'a str, u32)>,
}

/// What the kernel says about the process behind a connected Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
}

/// Whether `peer` may answer for the daemon; if not, a message that says what to fix.
///
/// Accepted: uid 0, the owner of the socket's directory, and the uid of `daemon_user=`.
pub fn check(socket: &Path, peer: Peer, expected: &Expected<'_>) -> Result<(), String> {
    let Peer { pid, uid } = peer;
    if uid == 0 || Some(uid) == expected.dir_owner {
        return Ok(());
    }
    if expected
        .daemon_user
        .is_some_and(|(_, daemon)| daemon == uid)
    {
        return Ok(());
    }
    let dir = expected.dir.display();
    let mut trusted = vec!["uid 0 (root)".to_string()];
    match expected.dir_owner {
        Some(owner) if owner != 0 => {
            trusted.push(format!("uid {owner} (the owner of its directory {dir})"))
        }
        Some(_) => trusted[0] = format!("uid 0 (root, the owner of its directory {dir})"),
        None => {}
    }
    if let Some((name, daemon)) = expected.daemon_user {
        trusted.push(format!("uid {daemon} (daemon_user={name})"));
    }
    let fix = match expected.daemon_user {
        None => format!(
            "if portcullis serve runs as uid {uid}, name its user in daemon_user=NAME or give it {dir} (systemd: RuntimeDirectory= with User=)"
        ),
        Some((name, _)) => format!(
            "if portcullis serve runs as uid {uid}, daemon_user={name} names the wrong user: name its user in daemon_user=NAME"
        ),
    };
    Err(format!(
        "socket={} is answered by uid {uid} (pid {pid}), not by {}: someone else may have put a socket of their own there; {fix}, and keep the directory writable only by the daemon and root",
        socket.display(),
        trusted.join(" or "),
    ))
}

/// The credentials of the process that made the listening socket `stream` is connected
/// to (`SO_PEERCRED`).
pub fn peer_of(stream: &UnixStream) -> io::Result<Peer> {
    // Not root if the kernel leaves them unwritten: -1 is no user.
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let size = std::mem::size_of::<libc::ucred>();
    let mut len = libc::socklen_t::try_from(size).map_err(io::Error::other)?;
    // SAFETY: the descriptor is open for the life of `stream`, which we borrow; `cred` is
    // a live, writable `ucred` on our stack and `len` holds its exact size, so the kernel
    // writes at most that many bytes into it (and the new length into `len`).
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if usize::try_from(len).ok() != Some(size) {
        return Err(io::Error::other(format!(
            "SO_PEERCRED returned {len} bytes, not {size}"
        )));
    }
    Ok(Peer {
        pid: cred.pid,
        uid: cred.uid,
    })
}

/// The largest buffer given to getpwnam_r (a passwd entry with very long fields).
const MAX_PASSWD_BUF: usize = 1 << 20;

/// The uid of the user `name` (getpwnam_r: /etc/passwd or whatever NSS is configured);
/// `None` if there is no such user.
pub fn uid_of_user(name: &str) -> io::Result<Option<u32>> {
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the name"))?;
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `cname` is a NUL-terminated string that outlives the call; `pwd` is
        // writable space for one `passwd`; `buf` is writable for `buf.len()` bytes, which
        // is what we pass; `result` is a valid out-pointer. getpwnam_r keeps none of them.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                pwd.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        match rc {
            0 if result.is_null() => return Ok(None),
            // SAFETY: on success with an entry found, `result` points at `pwd`, which
            // getpwnam_r filled in (its strings point into `buf`, which we do not read).
            0 => return Ok(Some(unsafe { (*result).pw_uid })),
            // Some NSS modules say "not found" this way (getpwnam(3)).
            libc::ENOENT | libc::ESRCH => return Ok(None),
            libc::ERANGE if buf.len() < MAX_PASSWD_BUF => buf.resize(buf.len() * 2, 0),
            libc::EINTR => {}
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKET: &str = "/run/portcullis/pam.sock";

    fn expected(dir_owner: Option<u32>, daemon_user: Option<(&str, u32)>) -> Expected<'_> {
        Expected {
            dir: Path::new("/run/portcullis"),
            dir_owner,
            daemon_user,
        }
    }

    fn peer(uid: u32) -> Peer {
        Peer { pid: 4242, uid }
    }

    #[test]
    fn root_the_directory_owner_and_daemon_user_are_accepted() {
        let socket = Path::new(SOCKET);
        for (uid, exp) in [
            // Root, whoever owns the directory.
            (0, expected(Some(0), None)),
            (0, expected(Some(999), None)),
            (0, expected(None, None)),
            // The packaged setup: /run/portcullis belongs to the daemon's user.
            (999, expected(Some(999), None)),
            // daemon_user= names the daemon's user; the directory is root's.
            (65534, expected(Some(0), Some(("nobody", 65534)))),
            (999, expected(Some(0), Some(("portcullis", 999)))),
        ] {
            assert_eq!(check(socket, peer(uid), &exp), Ok(()), "{uid}: {exp:?}");
        }
    }

    #[test]
    fn any_other_uid_is_refused_with_what_to_fix() {
        let socket = Path::new(SOCKET);
        // A group member of a root-owned 0770 directory put its own socket there.
        let e = check(socket, peer(65534), &expected(Some(0), None)).unwrap_err();
        assert!(
            e.starts_with("socket=/run/portcullis/pam.sock is answered by uid 65534 (pid 4242), not by uid 0 (root, the owner of its directory /run/portcullis)"),
            "{e}"
        );
        assert!(e.contains("daemon_user=NAME"), "{e}");
        // The daemon's directory, another uid.
        let e = check(socket, peer(1000), &expected(Some(999), None)).unwrap_err();
        assert!(
            e.contains(
                "not by uid 0 (root) or uid 999 (the owner of its directory /run/portcullis)"
            ),
            "{e}"
        );
        assert!(e.contains("uid 1000"), "{e}");
        // daemon_user= names another uid than the peer's.
        let e = check(
            socket,
            peer(1000),
            &expected(Some(0), Some(("portcullis", 999))),
        )
        .unwrap_err();
        assert!(
            e.contains("uid 999 (daemon_user=portcullis)")
                && e.contains("daemon_user=portcullis names the wrong user"),
            "{e}"
        );
        // The owner unknown: only root and daemon_user= are named.
        let e = check(socket, peer(1000), &expected(None, None)).unwrap_err();
        assert!(e.contains("not by uid 0 (root):"), "{e}");
        // uid -1 (credentials the kernel did not give) is no one.
        assert!(check(socket, peer(u32::MAX), &expected(Some(0), None)).is_err());
    }

    #[test]
    fn the_peer_of_a_socket_pair_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let got = peer_of(&a).unwrap();
        assert_eq!(got.uid, effective_uid());
        assert_eq!(got.pid, i32::try_from(std::process::id()).unwrap());
    }

    /// The effective uid, as the uid of this process's own socket pair: from /proc.
    fn effective_uid() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        // Uid: real effective saved fs
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    #[test]
    fn users_are_looked_up_by_name() {
        assert_eq!(uid_of_user("root").unwrap(), Some(0));
        assert_eq!(uid_of_user("no-such-user-portcullis-test").unwrap(), None);
        assert!(uid_of_user("ro\0ot").is_err());
    }
}
