//! A full disk under the embedded SQLite store: the database lives on a small tmpfs, the
//! real server runs on it, and the filesystem is filled to the last page while it serves.
//! Logins and admin commands are then refused with an error naming the full disk (fail
//! closed: a valid code whose use cannot be recorded is not accepted), the server keeps
//! running, and as soon as space is freed it works again without a restart. Afterwards the
//! file passes SQLite's integrity check and nothing committed before the fill is lost.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use portcullis_tests::raw::code;
use portcullis_tests::tools::run_with_timeout;
use portcullis_tests::{
    oathtool_totp, random_base32_secret, require_tool, Algorithm, ClientSpec, Mode, RawClient,
    TestEnv,
};

/// The size of the filesystem holding the database.
const TMPFS_SIZE: &str = "2m";
/// What SQLite says when a write finds no space (SQLITE_FULL).
const DISK_FULL: &str = "database or disk is full";

/// A tmpfs mounted on a fresh temporary directory; unmounted when dropped, also when the
/// test fails (the server must be stopped first: drop it before this guard).
struct TmpfsMount {
    dir: tempfile::TempDir,
}

impl TmpfsMount {
    /// Mounts a tmpfs of `size`. `None` (the test is skipped, with a message) only when
    /// not root and not under CI; under CI=true, or as root, a failing mount fails the test.
    fn new(size: &str) -> Option<TmpfsMount> {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-diskfull-")
            .tempdir()
            .expect("create the mount point");
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let root = portcullis_tests::process::is_root();
        if !root && !ci {
            eprintln!(
                "SKIPPED disk_full: mounting a tmpfs needs root (run as root, or with CI=true to \
                 make this a failure)"
            );
            return None;
        }
        let out = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("portcullis-diskfull")
            .arg(dir.path()));
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed ({}): {}{}",
            dir.path().display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(TmpfsMount { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let out = run(Command::new("umount").arg(self.dir.path()));
        if !out.status.success() {
            // Something still holds a file open: detach it now, it goes once released.
            let lazy = run(Command::new("umount").arg("-l").arg(self.dir.path()));
            eprintln!(
                "umount {} failed ({}), lazy umount: {}",
                self.dir.path().display(),
                String::from_utf8_lossy(&out.stderr).trim(),
                lazy.status
            );
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Writes a file until the filesystem has no page left; returns its path.
fn fill(dir: &Path) -> PathBuf {
    fill_named(dir, "filler")
}

fn fill_named(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = File::create(&path).expect("create the filler");
    let chunk = vec![0xa5u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Nothing, not even one byte, can be written any more.
    let probe = dir.join("probe");
    let err = std::fs::write(&probe, b"x").expect_err("the filesystem still has room");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    let _ = std::fs::remove_file(&probe);
    path
}

struct User {
    name: String,
    secret: String,
}

#[test]
fn full_disk_refuses_logins_and_writes_then_recovers_without_restart_or_loss() {
    require_tool("oathtool", "oathtool");
    let Some(mount) = TmpfsMount::new(TMPFS_SIZE) else {
        return;
    };
    let db = mount.path().join("portcullis.db");
    let env = TestEnv::with_store(
        vec![ClientSpec::new(Mode::Append)],
        &format!("url = \"sqlite://{}\"\n", db.display()),
        "",
    );
    env.add_tenant("acme");
    let users: Vec<User> = (0..5)
        .map(|i| {
            let name = format!("u{i}");
            env.add_user("acme", &name, "pw");
            let secret = random_base32_secret();
            let f = env.enroll_totp("acme", &name, Some(&secret));
            assert_eq!(f.state, "confirmed", "{:?}", f.json);
            User { name, secret }
        })
        .collect();
    let totp = |u: &User| oathtool_totp(&u.secret, 6, Algorithm::Sha1, 0);
    let factor_of = |u: &User| env.list_factors("acme", &u.name)[0].factor_id.clone();
    let factors: Vec<String> = users.iter().map(factor_of).collect();

    let mut server = env.start_server();
    let raw = RawClient::new(server.addr, &env.client().secret);
    let mut id: u8 = 0;
    let mut login = |user: &str, password: &str| -> (u8, Option<String>) {
        id = id.wrapping_add(1);
        let req = raw.access_request(id, user, password.as_bytes(), None, true);
        let reply = raw
            .exchange(&req, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no answer to {user}'s login"));
        let r = raw.decode(&req, &reply);
        (r.code, r.reply_message)
    };

    // Before the fill: u0 and u1 log in; the replay of u0's code is refused.
    let mut used = Vec::new();
    for u in &users[..2] {
        let c = totp(u);
        assert_eq!(
            login(&u.name, &format!("pw{c}")).0,
            code::ACCESS_ACCEPT,
            "{}: a good login before the fill",
            u.name
        );
        used.push((u.name.clone(), c));
    }
    assert_eq!(
        login(&used[0].0, &format!("pw{}", used[0].1)).0,
        code::ACCESS_REJECT,
        "replay before the fill"
    );

    // Fill the filesystem to the last page.
    let filler = fill(mount.path());
    // The store copies its WAL back into the database in the background and then writes
    // the WAL again from its start: a write that fits in space the files already hold
    // succeeds even now. Writes fail once the database file must grow (its checkpoint
    // cannot finish, so the WAL must grow too). Failed logins write audit records (the
    // audit table grows): at most a few hundred of them get there.
    let mut refused = 0;
    while !server.stderr().contains(DISK_FULL) {
        assert_eq!(
            login(&users[3].name, "not-the-password").0,
            code::ACCESS_REJECT
        );
        refused += 1;
        assert!(
            refused < 400,
            "{refused} logins on a full disk and no write failed:\n{}",
            server.stderr()
        );
    }

    // A valid, never used code of u2. Whether its writes find room depends on the
    // background checkpoint of the moment; either way an accepted code is recorded
    // (fail closed: nothing accepted without its use written). A refused one may be
    // recorded too: the code's use is written before the login's audit record, and when
    // the record is the write that finds no room, the code stays used (never usable
    // again, the safe side) and the user takes the next one.
    let c2 = totp(&users[2]);
    let (answer, message) = login(&users[2].name, &format!("pw{c2}"));
    let recorded = used_codes(&db, &factors[2]);
    let u2_refused = answer == code::ACCESS_REJECT;
    // Refused and not recorded: the same code works once space is back.
    let u2_retry = u2_refused && recorded == 0;
    if u2_refused {
        assert_eq!(message.as_deref(), Some("Authentication failed"));
        assert!(recorded <= 1, "u2's code recorded {recorded} times");
    } else {
        assert_eq!(answer, code::ACCESS_ACCEPT);
        assert_eq!(
            recorded, 1,
            "u2's code was accepted but its use is not recorded"
        );
        used.push((users[2].name.clone(), c2.clone()));
    }
    // Replays, a wrong password and a wrong code are refused as well; every login is answered.
    assert_eq!(
        login(&used[0].0, &format!("pw{}", used[0].1)).0,
        code::ACCESS_REJECT
    );
    assert_eq!(
        login(&users[3].name, &format!("wrong{}", totp(&users[3]))).0,
        code::ACCESS_REJECT
    );
    assert_eq!(login(&users[3].name, "pw000000").0, code::ACCESS_REJECT);
    // The log names the problem.
    let log = server.wait_for_stderr(DISK_FULL, Duration::from_secs(5));
    assert!(
        log.contains(DISK_FULL),
        "the server did not log `{DISK_FULL}`:\n{log}"
    );
    // Admin commands either succeed (their write found room) or fail with an error that
    // names the problem and change nothing.
    let enroll = env.cli(&[
        "factor", "enroll", "totp", "--tenant", "acme", "u3", "--json",
    ]);
    let add = env.cli_stdin(
        &[
            "user",
            "add",
            "--tenant",
            "acme",
            "late",
            "--password-stdin",
        ],
        "pw\n",
    );
    for (what, out) in [("factor enroll", &enroll), ("user add", &add)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || stderr.contains(DISK_FULL),
            "`{what}` on a full disk: {}\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
        );
    }
    let enrolled_on_full_disk = enroll.status.success();
    let added_on_full_disk = add.status.success();
    assert!(server.is_running(), "the server died on a full disk");

    // Free the space: the same server works again, no restart.
    std::fs::remove_file(&filler).expect("delete the filler");
    if u2_retry {
        assert_eq!(
            login(&users[2].name, &format!("pw{c2}")).0,
            code::ACCESS_ACCEPT,
            "u2's code, refused on the full disk and not recorded, after space was freed"
        );
        used.push((users[2].name.clone(), c2.clone()));
    } else if u2_refused {
        // Recorded while refused: used, so refused again as a replay.
        assert_eq!(
            login(&users[2].name, &format!("pw{c2}")).0,
            code::ACCESS_REJECT,
            "u2's code was recorded as used and still logged in"
        );
        used.push((users[2].name.clone(), c2.clone()));
    }
    let c4 = totp(&users[4]);
    assert_eq!(
        login(&users[4].name, &format!("pw{c4}")).0,
        code::ACCESS_ACCEPT
    );
    used.push((users[4].name.clone(), c4));
    let late = env.enroll_totp("acme", "u3", None);
    assert_eq!(late.state, "pending");
    if !added_on_full_disk {
        env.add_user("acme", "late", "pw");
    }

    // Stop; the file is sound and holds everything committed before and after the fill.
    let status = server.stop().expect("the server stopped");
    assert!(status.success(), "the server exited with {status}");
    drop(server);
    {
        let conn = rusqlite::Connection::open(&db).expect("open the database");
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(check, "ok");
        for (u, f) in users.iter().zip(&factors) {
            let state: String = conn
                .query_row("SELECT state FROM factors WHERE id = ?1", [f], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{}'s factor {f}: {e}", u.name));
            assert_eq!(state, "confirmed", "{}", u.name);
        }
        // What an admin command reported done is there, once.
        let pending: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM factors f JOIN users u ON u.id = f.user_id
                 WHERE u.name = 'u3' AND f.state = 'pending'",
                [],
                |r| r.get(0),
            )
            .expect("count u3's pending factors");
        assert_eq!(pending, 1 + i64::from(enrolled_on_full_disk));
        let late: i64 = conn
            .query_row("SELECT COUNT(*) FROM users WHERE name = 'late'", [], |r| {
                r.get(0)
            })
            .expect("count users named late");
        assert_eq!(late, 1);
        for i in [0, 1, 2, 4] {
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM used_otps WHERE factor_id = ?1",
                    [&factors[i]],
                    |r| r.get(0),
                )
                .expect("count used codes");
            assert_eq!(n, 1, "u{i}'s used code in the replay cache");
        }
    }

    // Restarted: every code used (before the fill, or after it) is refused again.
    let server = env.start_server();
    for u in &users {
        env.unlock_user("acme", &u.name);
    }
    let raw = RawClient::new(server.addr, &env.client().secret);
    for (i, (user, c)) in used.iter().enumerate() {
        let req = raw.access_request(100 + i as u8, user, format!("pw{c}").as_bytes(), None, true);
        let reply = raw
            .exchange(&req, Duration::from_secs(10))
            .expect("the restarted server answers");
        assert_eq!(
            raw.decode(&req, &reply).code,
            code::ACCESS_REJECT,
            "{user}'s code was accepted twice"
        );
    }
    drop(server);
    drop(env);
    drop(mount);
}

/// A login of `user` in append mode (`pw` + `code`); the reply's packet code.
fn login_once(raw: &RawClient, id: u8, user: &str, code: &str) -> u8 {
    let req = raw.access_request(id, user, format!("pw{code}").as_bytes(), None, true);
    let reply = raw
        .exchange(&req, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no answer to {user}'s login"));
    raw.decode(&req, &reply).code
}

#[test]
fn start_on_a_full_disk_fails_clearly_and_loses_nothing() {
    require_tool("oathtool", "oathtool");
    let Some(mount) = TmpfsMount::new(TMPFS_SIZE) else {
        return;
    };
    let db = mount.path().join("portcullis.db");
    let env = TestEnv::with_store(
        vec![ClientSpec::new(Mode::Append)],
        &format!("url = \"sqlite://{}\"\n", db.display()),
        "",
    );
    env.add_tenant("acme");
    let secrets: Vec<String> = (0..2)
        .map(|i| {
            env.add_user("acme", &format!("u{i}"), "pw");
            let secret = random_base32_secret();
            env.enroll_totp("acme", &format!("u{i}"), Some(&secret));
            secret
        })
        .collect();
    let c0 = oathtool_totp(&secrets[0], 6, Algorithm::Sha1, 0);
    let mut server = env.start_server();
    let raw = RawClient::new(server.addr, &env.client().secret);
    assert_eq!(login_once(&raw, 1, "u0", &c0), code::ACCESS_ACCEPT);

    // The disk fills up, the server is stopped (its last checkpoint frees the WAL and the
    // -shm file) and the disk fills up again before it comes back.
    let first = fill_named(mount.path(), "filler");
    let status = server.stop().expect("the server stopped");
    assert!(status.success(), "stopping on a full disk: {status}");
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
    drop(server);
    let second = fill_named(mount.path(), "filler2");
    let mut cmd = env.command();
    cmd.arg("serve");
    let out = run_with_timeout(cmd, None, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("is the disk full")
            && !stderr.contains("panicked"),
        "`serve` on a full disk: {}\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
    );

    // Space freed: it starts, the code used before is still spent, a fresh one works.
    std::fs::remove_file(first).expect("delete the filler");
    std::fs::remove_file(second).expect("delete the filler");
    let server = env.start_server();
    let raw = RawClient::new(server.addr, &env.client().secret);
    assert_eq!(
        login_once(&raw, 2, "u0", &c0),
        code::ACCESS_REJECT,
        "u0's code, used before the disk filled up, was accepted again"
    );
    let c1 = oathtool_totp(&secrets[1], 6, Algorithm::Sha1, 0);
    assert_eq!(login_once(&raw, 3, "u1", &c1), code::ACCESS_ACCEPT);
    drop(server);
    let conn = rusqlite::Connection::open(&db).expect("open the database");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    drop(conn);
    drop(env);
    drop(mount);
}

/// How many uses of `factor` the replay cache holds (a read-only look beside the server).
fn used_codes(db: &std::path::Path, factor: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database read-only");
    conn.query_row(
        "SELECT COUNT(*) FROM used_otps WHERE factor_id = ?1",
        [factor],
        |r| r.get(0),
    )
    .expect("count used codes")
}
