//! What `failmode=safe` keeps on the host (`state_dir=`, default
//! `/var/lib/portcullis-pam`): the tenant's `pam_fail_mode` as the daemon last told it, and
//! the logins let in without a second factor while the daemon could not be reached, until
//! they are reported to it.
//!
//! - `<state_dir>/<tenant>.fail-mode`: `safe` or `secure`, the `fail_mode` of the daemon's
//!   last answer; rewritten (a temporary file renamed over it, mode 0600) only when it
//!   changes. Without it (or with anything else in it) the host never fails open.
//! - `<state_dir>/<tenant>.fail-opens`: one JSON line per fail-open login
//!   ([`FailOpenReport`]), appended (O_APPEND, mode 0600). A login that cannot append its
//!   line is not let in: a fail-open that cannot be audited is not done.
//! - `<state_dir>/<tenant>.fail-opens.sending`: the lines one login is sending with its
//!   `start`. A login claims the spool by `link(spool, sending)` and `unlink(spool)`: only
//!   one process at a time can (EEXIST: another one is sending), and a `.sending` whose
//!   claim is older than [`STALE_CLAIM`] (its process died) is taken over, its lines put
//!   back into the spool, and only then removed. The claim is deleted once the daemon
//!   answered without an error frame; otherwise its lines go back into the spool.
//!
//! Appending and claiming take `flock` on the spool's inode, and an appender checks, under
//! the lock, that the file it opened is still the spool: a line never lands in a claim
//! that was already read. An append that fails is cut off again (no half line), and a line
//! that was cut anyway (a crash) is ended before the next one; lines that are not reports
//! (bytes that are not text included) are dropped with a note, the others still sent.
//!
//! The files are written with the process's file-size limit raised while the state is
//! open ([`StateDir::open`]) and put back after: the user who runs `su` or `sudo` sets that
//! limit, and at it a write would fail half-way or kill the process (SIGXFSZ) with a claim
//! in hand. Where it cannot be raised (not root), nothing is written and nobody fails open.
//! The spool holds at most [`SPOOL_MAX`] bytes of reports not yet sent: past it, logins are
//! no longer let in without a second factor.
//!
//! Every file is opened with O_NOFOLLOW, and the directory must be root's and writable by
//! root alone (it is created 0700 if missing): nobody else can plant a grant or a symlink.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_core::protocol::{
    FailMode as TenantFailMode, FailOpenReport, Origin, MAX_FAIL_OPENS, MAX_REPORT_RHOST,
    MAX_REPORT_SERVICE, MAX_REPORT_USER, MAX_REPORT_WHY,
};

use crate::flow::{FailOpenLedger, Grant};

/// A `.sending` claim older than this was left by a process that died: taken over.
pub const STALE_CLAIM: Duration = Duration::from_secs(120);

/// At most this many bytes of reports go with one request (64 reports of the longest
/// fields fit; the frame holds 64 KiB with the password and origin).
const CLAIM_BYTES: usize = 48 * 1024;

/// The longest `.fail-mode` file read.
const GRANT_FILE_MAX: u64 = 64;

/// The most bytes of reports the spool holds (about 4,000 logins): past it a fail-open is
/// refused, so that a daemon away for long (or logins of someone who keeps it away) cannot
/// fill the disk or make every login read megabytes.
pub const SPOOL_MAX: u64 = 1024 * 1024;

/// `text` as a report field: control characters replaced, at most `max` bytes (cut at a
/// character boundary).
fn field(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// A new report's id: 128 random bits in hex, so that the daemon records a report sent
/// twice once (see [`FailOpenReport::id`]). None without `/dev/urandom` (a chroot): the
/// report is then recorded each time it is sent, rather than risk an id that another
/// report had (a clock and process ids that repeat after a reboot), which would lose it.
fn new_report_id() -> Option<String> {
    let mut random = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .ok()?;
    Some(random.iter().map(|b| format!("{b:02x}")).collect())
}

/// The report of a login let in now without a second factor, `why` the failed connect.
pub fn report(origin: &Origin, why: &str, at: u64) -> FailOpenReport {
    FailOpenReport {
        id: new_report_id(),
        at,
        user: field(&origin.user, MAX_REPORT_USER),
        service: field(&origin.service, MAX_REPORT_SERVICE),
        rhost: origin
            .rhost
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(|r| field(r, MAX_REPORT_RHOST)),
        why: field(why, MAX_REPORT_WHY),
    }
}

/// Whether `tenant` can name files in the state directory (what `portcullis tenant add`
/// accepts, without a leading dot).
fn tenant_file_name_ok(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 128
        && !tenant.starts_with('.')
        && tenant
            .chars()
            .all(|c| c.is_alphanumeric() || "._-@+".contains(c))
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// `flock(fd, LOCK_EX)`: held until the file is closed.
fn lock(file: &File) -> std::io::Result<()> {
    loop {
        // SAFETY: the descriptor belongs to `file`, which is open for the whole call;
        // flock only takes an advisory lock on it.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The state directory of one tenant's fail-opens.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    tenant: String,
    /// The lines of the claim being sent (none when nothing is claimed).
    claimed: Option<Claim>,
    /// What went wrong on the way, for the module's log (never a secret).
    pub notes: Vec<String>,
    /// The file-size limit to put back when the state is closed (it was raised).
    restore_limit: Option<libc::rlimit>,
    /// Why nothing may be written here (a file-size limit that could not be raised).
    read_only: Option<String>,
    /// The grant this login wrote (device and inode): no bar to its own later steps.
    written: std::cell::Cell<Option<(u64, u64)>>,
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if let Some(old) = self.restore_limit.take() {
            // SAFETY: setrlimit reads the struct passed by reference for the duration of
            // the call only; lowering a limit (back to what it was) is always allowed.
            unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &old) };
        }
    }
}

/// The file-size limit the state's files need at least (the fullest spool, a claim put
/// back, their lines).
const FSIZE_NEEDED: u64 = 4 * SPOOL_MAX;

/// Raises the process's file-size limit (RLIMIT_FSIZE) to unlimited, or (without the
/// privilege to raise the hard limit) to the hard limit if that is enough. The limit to
/// put back when it was raised (`None`: it was high enough), or why it cannot be.
fn raise_file_size_limit() -> Result<Option<libc::rlimit>, String> {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `old`, which lives for the whole call.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut old) } != 0 {
        return Err(format!(
            "cannot read the file size limit ({})",
            std::io::Error::last_os_error()
        ));
    }
    let enough = |limit: libc::rlim_t| limit == libc::RLIM_INFINITY || limit >= FSIZE_NEEDED;
    if enough(old.rlim_cur) {
        return Ok(None);
    }
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads `unlimited` for the duration of the call only.
    if unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &unlimited) } == 0 {
        return Ok(Some(old));
    }
    let denied = std::io::Error::last_os_error();
    // Up to the hard limit is allowed without privilege.
    let up_to_hard = libc::rlimit {
        rlim_cur: old.rlim_max,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above, `up_to_hard` is read for the duration of the call only.
    if enough(old.rlim_max) && unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &up_to_hard) } == 0 {
        return Ok(Some(old));
    }
    Err(format!(
        "the file size limit is {} bytes and cannot be raised ({denied})",
        old.rlim_cur
    ))
}

#[derive(Debug)]
struct Claim {
    lines: Vec<String>,
    /// The claim file's inode (dev, ino): only that one is deleted.
    id: (u64, u64),
}

impl StateDir {
    /// The state directory `dir` for `tenant`: created 0700 if missing; one that is not a
    /// directory, not root's or writable by group or others is a setup error.
    pub fn open(dir: &Path, tenant: &str) -> Result<StateDir, String> {
        let shown = dir.display();
        if !tenant_file_name_ok(tenant) {
            return Err(format!(
                "tenant={tenant}: with failmode=safe the tenant names files in state_dir={shown}; use the tenant's name (letters, digits, . _ - @ +)"
            ));
        }
        let meta = match std::fs::symlink_metadata(dir) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(format!(
                            "state_dir={shown}: cannot create it ({e}); failmode=safe keeps the tenant's grant and its fail-open reports there"
                        ))
                    }
                }
                std::fs::symlink_metadata(dir).map_err(|e| format!("state_dir={shown}: {e}"))?
            }
            Err(e) => return Err(format!("state_dir={shown}: {e}")),
        };
        if !meta.file_type().is_dir() {
            return Err(format!(
                "state_dir={shown} is not a directory (a symlink or a file); make it a directory owned by root, mode 0700"
            ));
        }
        if meta.uid() != 0 {
            return Err(format!(
                "state_dir={shown} is owned by uid {}, not root: whoever may write it could let logins in without a second factor; chown root:root {shown}",
                meta.uid()
            ));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(format!(
                "state_dir={shown} has mode {mode:04o}: group or others may write it and so let logins in without a second factor; chmod 700 {shown}"
            ));
        }
        // Whoever may rename an entry of a directory above could put a directory of their
        // own in its place after this check: each must be root's, and writable by root
        // alone or sticky (/tmp).
        let real = std::fs::canonicalize(dir).map_err(|e| format!("state_dir={shown}: {e}"))?;
        for above in real.ancestors().skip(1) {
            let m = std::fs::metadata(above)
                .map_err(|e| format!("state_dir={shown}: {}: {e}", above.display()))?;
            let mode = m.mode() & 0o7777;
            if m.uid() != 0 || (mode & 0o022 != 0 && mode & 0o1000 == 0) {
                return Err(format!(
                    "state_dir={shown} is in {} (uid {}, mode {mode:04o}), which someone other than root may change: they could put a state_dir of their own in its place; keep state_dir in directories owned by root and writable by root alone",
                    above.display(),
                    m.uid()
                ));
            }
        }
        let (restore_limit, read_only) = match raise_file_size_limit() {
            Ok(old) => (old, None),
            Err(e) => (None, Some(e)),
        };
        Ok(StateDir {
            dir: dir.to_path_buf(),
            tenant: tenant.to_string(),
            claimed: None,
            notes: Vec::new(),
            restore_limit,
            read_only,
            written: std::cell::Cell::new(None),
        })
    }

    /// Err (why) when nothing may be written in the state directory now.
    fn writable(&self) -> Result<(), String> {
        match &self.read_only {
            Some(why) => Err(format!(
                "state_dir={}: {why}; nothing is written there, and no login is let in without a second factor",
                self.dir.display()
            )),
            None => Ok(()),
        }
    }

    pub fn grant_path(&self) -> PathBuf {
        self.dir.join(format!("{}.fail-mode", self.tenant))
    }

    pub fn spool_path(&self) -> PathBuf {
        self.dir.join(format!("{}.fail-opens", self.tenant))
    }

    pub fn sending_path(&self) -> PathBuf {
        self.dir.join(format!("{}.fail-opens.sending", self.tenant))
    }

    /// The tenant's `pam_fail_mode` as the daemon last told it; `None` if it never did.
    pub fn read_grant(&self) -> Result<Option<TenantFailMode>, String> {
        let path = self.grant_path();
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: cannot read it ({e})", path.display())),
        };
        let mut text = String::new();
        file.take(GRANT_FILE_MAX)
            .read_to_string(&mut text)
            .map_err(|e| format!("{}: cannot read it ({e})", path.display()))?;
        match text.trim() {
            "safe" => Ok(Some(TenantFailMode::Safe)),
            "secure" => Ok(Some(TenantFailMode::Secure)),
            _ => Err(format!(
                "{} holds neither safe nor secure; it is rewritten at the next login that reaches the daemon",
                path.display()
            )),
        }
    }

    /// Keep `mode`, what the daemon said to a request sent at `asked_at`: the file is
    /// replaced (temporary file, rename) only when it changes, and not when another login
    /// wrote it after that request went out (this one may have been stopped, Ctrl-Z, with
    /// an answer from before the tenant's setting changed).
    pub fn write_grant(&self, mode: TenantFailMode, asked_at: SystemTime) -> Result<(), String> {
        if self.read_grant() == Ok(Some(mode)) {
            return Ok(());
        }
        self.writable()?;
        let path = self.grant_path();
        let newer = std::fs::symlink_metadata(&path).is_ok_and(|m| {
            Some((m.dev(), m.ino())) != self.written.get()
                && m.modified().is_ok_and(|at| at > asked_at)
        });
        if newer {
            return Ok(());
        }
        let tmp = self
            .dir
            .join(format!(".{}.fail-mode.{}", self.tenant, std::process::id()));
        // One left by a process of this pid that died: ours to replace.
        let _ = std::fs::remove_file(&tmp);
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(format!("{}\n", mode.as_str()).as_bytes())?;
            f.sync_all()?;
            let meta = f.metadata()?;
            std::fs::rename(&tmp, &path)?;
            self.written.set(Some((meta.dev(), meta.ino())));
            Ok::<(), std::io::Error>(())
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: cannot write it ({e})", path.display())
        })
    }

    /// Append `data` (whole lines) to the spool, under its lock, to the file that is the
    /// spool at the time of the write (not one claimed meanwhile). New reports (`fresh`)
    /// only while the spool stays within [`SPOOL_MAX`]; reports put back always.
    fn append_to_spool(&self, data: &[u8], fresh: bool) -> Result<(), String> {
        use std::os::unix::fs::FileExt;
        self.writable()?;
        let path = self.spool_path();
        let shown = path.display();
        for _ in 0..8 {
            let mut f = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| format!("{shown}: cannot open it ({e})"))?;
            lock(&f).map_err(|e| format!("{shown}: cannot lock it ({e})"))?;
            let opened = f.metadata().map_err(|e| format!("{shown}: {e}"))?;
            match std::fs::symlink_metadata(&path) {
                Ok(now) if (now.dev(), now.ino()) == (opened.dev(), opened.ino()) => {}
                // Claimed (renamed away) between the open and the lock: open the new one.
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("{shown}: {e}")),
            }
            if !opened.file_type().is_file() {
                return Err(format!("{shown} is not a regular file"));
            }
            let len = opened.len();
            if fresh && len + data.len() as u64 > SPOOL_MAX {
                return Err(format!(
                    "{shown} holds {len} bytes of fail-open reports the daemon has not had yet (at most {SPOOL_MAX} are kept); bring the daemon back (the next login that reaches it sends them) or look at the file"
                ));
            }
            // A line cut by a crash is ended first: the next one is not glued to it.
            let mut last = [0u8; 1];
            let cut = len > 0 && f.read_at(&mut last, len - 1).is_ok() && last[0] != b'\n';
            let written = if cut { f.write_all(b"\n") } else { Ok(()) }
                .and_then(|()| f.write_all(data))
                .and_then(|()| f.sync_data());
            if let Err(e) = written {
                // No half line left behind.
                let _ = f.set_len(len);
                return Err(format!("{shown}: cannot write it ({e})"));
            }
            return Ok(());
        }
        Err(format!(
            "{shown}: replaced too often while appending; try again"
        ))
    }

    /// Keep the report of a login let in now; an error means it was not kept.
    pub fn append(&self, report: &FailOpenReport) -> Result<(), String> {
        let mut line = serde_json::to_vec(report).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.append_to_spool(&line, true)
    }

    /// Put a claim left by a process that died (or a leftover of an older version of this
    /// module, `.stale.PID`) back into the spool, under the claim's lock, and remove it only
    /// then: a takeover that fails half-way leaves it for the next one (at worst a report
    /// is sent twice, never lost).
    fn take_over_stale(&mut self, claim: &Path) -> Result<(), String> {
        let shown = claim.display();
        let f = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(claim)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{shown}: cannot take it over ({e})")),
        };
        lock(&f).map_err(|e| format!("{shown}: cannot lock it ({e})"))?;
        let opened = f.metadata().map_err(|e| format!("{shown}: {e}"))?;
        match std::fs::symlink_metadata(claim) {
            Ok(now) if (now.dev(), now.ino()) == (opened.dev(), opened.ino()) => {}
            // Taken over (and removed) by another login meanwhile.
            _ => return Ok(()),
        }
        if !opened.file_type().is_file() {
            return Err(format!("{shown} is not a regular file"));
        }
        let mut data = Vec::new();
        (&f).take(SPOOL_MAX + CLAIM_BYTES as u64)
            .read_to_end(&mut data)
            .map_err(|e| format!("{shown}: cannot read it ({e})"))?;
        if !data.is_empty() {
            if !data.ends_with(b"\n") {
                data.push(b'\n');
            }
            self.append_to_spool(&data, false)?;
        }
        std::fs::remove_file(claim).map_err(|e| format!("{shown}: cannot remove it ({e})"))?;
        self.notes.push(format!(
            "took over {shown} (left by a login that did not finish) and put its reports back in the spool"
        ));
        Ok(())
    }

    /// Leftovers of an older version of this module (`<tenant>.fail-opens.stale.PID`)
    /// older than [`STALE_CLAIM`] at `now`.
    fn stale_leftovers(&self, now: SystemTime) -> Vec<PathBuf> {
        let prefix = format!("{}.fail-opens.stale.", self.tenant);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter(|e| e.metadata().is_ok_and(|m| is_stale(&m, now)))
            .map(|e| e.path())
            .collect()
    }

    /// Claim the spool's reports for one request (at most [`MAX_FAIL_OPENS`]; the rest are
    /// put back at once). Nothing when there are none, or another login is sending them.
    pub fn claim_reports(&mut self) -> Result<Vec<FailOpenReport>, String> {
        self.claim_reports_at(SystemTime::now())
    }

    /// [`StateDir::claim_reports`] at `now` (a claim older than [`STALE_CLAIM`] then is
    /// taken over).
    fn claim_reports_at(&mut self, now: SystemTime) -> Result<Vec<FailOpenReport>, String> {
        if self.claimed.is_some() {
            return Ok(Vec::new());
        }
        self.writable()?;
        for leftover in self.stale_leftovers(now) {
            self.take_over_stale(&leftover)?;
        }
        let (spool, sending) = (self.spool_path(), self.sending_path());
        if let Ok(meta) = std::fs::symlink_metadata(&sending) {
            if !is_stale(&meta, now) {
                return Ok(Vec::new());
            }
            self.take_over_stale(&sending)?;
        }
        match std::fs::hard_link(&spool, &sending) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            // Another login is sending them.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(Vec::new()),
            Err(e) => {
                return Err(format!(
                    "{}: cannot claim it ({e}, errno {})",
                    spool.display(),
                    errno_of(&e)
                ))
            }
        }
        if let Err(e) = std::fs::remove_file(&spool) {
            // Not claimed after all: leave the spool as it was.
            let _ = std::fs::remove_file(&sending);
            return Err(format!("{}: cannot claim it ({e})", spool.display()));
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&sending)
            .map_err(|e| format!("{}: {e}", sending.display()))?;
        // Appenders that opened the spool before the unlink finish first (see
        // append_to_spool); later ones find it gone.
        lock(&f).map_err(|e| format!("{}: cannot lock it ({e})", sending.display()))?;
        let meta = f
            .metadata()
            .map_err(|e| format!("{}: {e}", sending.display()))?;
        let mut raw = Vec::new();
        if let Err(e) = (&f)
            .take(SPOOL_MAX + CLAIM_BYTES as u64)
            .read_to_end(&mut raw)
        {
            // Kept where it is (taken over later).
            return Err(format!("{}: cannot read it ({e})", sending.display()));
        }
        // Bytes that are not text spoil their line only (dropped below, with a note).
        let data = String::from_utf8_lossy(&raw);
        let mut taken = Vec::new();
        let mut lines = Vec::new();
        let mut rest = String::new();
        let mut bytes = 0;
        for line in data.lines().filter(|l| !l.trim().is_empty()) {
            let report = match serde_json::from_str::<FailOpenReport>(line) {
                Ok(r) if r.check().is_ok() => r,
                _ => {
                    self.notes.push(format!(
                        "{}: dropped a line that is no fail-open report: {}",
                        sending.display(),
                        field(line, 200)
                    ));
                    continue;
                }
            };
            if taken.len() < MAX_FAIL_OPENS && bytes + line.len() <= CLAIM_BYTES {
                bytes += line.len();
                taken.push(report);
                lines.push(line.to_string());
            } else {
                rest.push_str(line);
                rest.push('\n');
            }
        }
        if !rest.is_empty() {
            self.append_to_spool(rest.as_bytes(), false)?;
            // The claim keeps only what this request sends.
            let kept: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let rewritten = f
                .set_len(0)
                .and_then(|()| (&f).write_all(kept.as_bytes()))
                .and_then(|()| f.sync_data());
            if let Err(e) = rewritten {
                self.notes.push(format!(
                    "{}: cannot rewrite it ({e}); some reports may be sent twice",
                    sending.display()
                ));
            }
        }
        drop(f);
        self.claimed = Some(Claim {
            lines,
            id: (meta.dev(), meta.ino()),
        });
        Ok(taken)
    }

    /// The daemon took the claimed reports (`delivered`), or not: then they go back into
    /// the spool. Either way the claim is removed (unless it could not be given back).
    pub fn settle_claim(&mut self, delivered: bool) -> Result<(), String> {
        let Some(claim) = self.claimed.take() else {
            return Ok(());
        };
        if !delivered && !claim.lines.is_empty() {
            let data: String = claim.lines.iter().map(|l| format!("{l}\n")).collect();
            self.append_to_spool(data.as_bytes(), false)?;
        }
        let sending = self.sending_path();
        match std::fs::symlink_metadata(&sending) {
            Ok(m) if (m.dev(), m.ino()) == claim.id => std::fs::remove_file(&sending)
                .map_err(|e| format!("{}: cannot remove it ({e})", sending.display())),
            // Taken over by another login meanwhile: no longer ours.
            _ => Ok(()),
        }
    }
}

/// Whether a claim (or a leftover of one) was made more than [`STALE_CLAIM`] before `now`:
/// its process died. The claim's time is its inode's change time, which link() and
/// unlink() (and rename()) set.
fn is_stale(meta: &std::fs::Metadata, now: SystemTime) -> bool {
    let claimed_at = UNIX_EPOCH + Duration::from_secs(meta.ctime().max(0) as u64);
    now.duration_since(claimed_at).unwrap_or(Duration::ZERO) > STALE_CLAIM
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl FailOpenLedger for StateDir {
    fn grant(&mut self) -> Grant {
        match self.read_grant() {
            Ok(Some(TenantFailMode::Safe)) => Grant::Safe,
            Ok(Some(TenantFailMode::Secure)) => Grant::Secure,
            Ok(None) => Grant::Unknown(None),
            Err(e) => Grant::Unknown(Some(e)),
        }
    }

    fn remember(&mut self, mode: TenantFailMode, asked_at: SystemTime) {
        if let Err(e) = self.write_grant(mode, asked_at) {
            self.notes.push(e);
        }
    }

    fn record(&mut self, origin: &Origin, why: &str) -> Result<(), String> {
        self.append(&report(origin, why, unix_now()))
    }

    fn claim(&mut self) -> Vec<FailOpenReport> {
        match self.claim_reports() {
            Ok(r) => r,
            Err(e) => {
                self.notes
                    .push(format!("fail-open reports not sent this time: {e}"));
                Vec::new()
            }
        }
    }

    fn settle(&mut self, delivered: bool) {
        if let Err(e) = self.settle_claim(delivered) {
            self.notes.push(format!(
                "fail-open reports: {e}; the claim stays and is taken over after {} s",
                STALE_CLAIM.as_secs()
            ));
        }
    }

    fn refused(&mut self, message: &str) {
        self.notes.push(format!(
            "the daemon refused this host's fail-open reports as malformed ({}); they are kept and sent again with the next login (a daemon older than this module? upgrade it)",
            field(message, 200)
        ));
        self.settle(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn origin(user: &str) -> Origin {
        Origin {
            tenant: "acme".into(),
            user: user.into(),
            service: "sshd".into(),
            host: "h".into(),
            rhost: Some("192.0.2.7".into()),
            tty: None,
            ruser: None,
        }
    }

    fn state() -> (tempfile::TempDir, StateDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let s = StateDir::open(&dir, "acme").unwrap();
        (tmp, s)
    }

    /// The users of the reports a claim at `at` takes.
    fn claimed_users(s: &mut StateDir, at: SystemTime) -> Vec<String> {
        s.claim_reports_at(at)
            .unwrap()
            .into_iter()
            .map(|r| r.user)
            .collect()
    }

    fn spool_lines(s: &StateDir) -> Vec<FailOpenReport> {
        match std::fs::read_to_string(s.spool_path()) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    #[test]
    fn the_state_dir_is_made_0700_and_a_loose_one_is_a_setup_error() {
        let (tmp, s) = state();
        let meta = std::fs::metadata(&s.dir).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        // Open again: fine.
        StateDir::open(&s.dir, "acme").unwrap();
        // Group or others may write it: refused.
        for mode in [0o770, 0o702, 0o777] {
            std::fs::set_permissions(&s.dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = StateDir::open(&s.dir, "acme").unwrap_err();
            assert!(e.contains("chmod 700"), "{mode:o}: {e}");
        }
        std::fs::set_permissions(&s.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        StateDir::open(&s.dir, "acme").unwrap();
        // In a directory others may change (unless it is sticky, as /tmp is): refused.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = StateDir::open(&s.dir, "acme").unwrap_err();
        assert!(e.contains("someone other than root may change"), "{e}");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        StateDir::open(&s.dir, "acme").unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        // A symlink or a file in its place.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&s.dir, &link).unwrap();
        assert!(StateDir::open(&link, "acme")
            .unwrap_err()
            .contains("not a directory"));
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(StateDir::open(&file, "acme")
            .unwrap_err()
            .contains("not a directory"));
        // Not root's (when the test may give it away).
        if is_root() {
            let other = tmp.path().join("other");
            std::fs::create_dir(&other).unwrap();
            std::os::unix::fs::chown(&other, Some(65534), None).unwrap();
            let e = StateDir::open(&other, "acme").unwrap_err();
            assert!(e.contains("not root"), "{e}");
        }
        // A parent that does not exist: not made.
        assert!(StateDir::open(&tmp.path().join("a/b"), "acme")
            .unwrap_err()
            .contains("cannot create"));
        // A tenant that cannot name a file.
        for t in ["../x", ".hidden", "a/b", ""] {
            assert!(StateDir::open(&s.dir, t).is_err(), "{t}");
        }
    }

    fn is_root() -> bool {
        std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }

    #[test]
    fn the_grant_is_what_the_daemon_said_last_and_is_rewritten_only_on_change() {
        let (_tmp, mut s) = state();
        assert_eq!(s.read_grant(), Ok(None));
        assert_eq!(s.grant(), Grant::Unknown(None));
        s.remember(TenantFailMode::Safe, SystemTime::now());
        assert_eq!(s.grant(), Grant::Safe);
        let path = s.grant_path();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "safe\n");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        // The same again: not rewritten (same inode).
        s.remember(TenantFailMode::Safe, SystemTime::now());
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), meta.ino());
        // A change: replaced.
        s.remember(TenantFailMode::Secure, SystemTime::now());
        assert_eq!(s.grant(), Grant::Secure);
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), meta.ino());
        assert!(s.notes.is_empty(), "{:?}", s.notes);
        // No temporary file is left.
        let names: Vec<_> = std::fs::read_dir(&s.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["acme.fail-mode".to_string()]);
        // Garbage: not a grant.
        std::fs::write(&path, "open\n").unwrap();
        assert!(matches!(s.grant(), Grant::Unknown(Some(e)) if e.contains("neither")));
        // A symlink in its place is not followed.
        std::fs::remove_file(&path).unwrap();
        let elsewhere = s.dir.join("elsewhere");
        std::fs::write(&elsewhere, "safe\n").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert!(
            matches!(s.grant(), Grant::Unknown(Some(_))),
            "{:?}",
            s.grant()
        );
    }

    #[test]
    fn reports_are_spooled_claimed_once_and_given_back_on_failure() {
        let (_tmp, mut s) = state();
        // Nothing to claim.
        assert!(s.claim().is_empty());
        s.settle(true);
        s.record(&origin("alice"), "connect: refused").unwrap();
        s.record(&origin("bob"), "connect: refused").unwrap();
        let spool = spool_lines(&s);
        assert_eq!(spool.len(), 2);
        assert_eq!(spool[0].user, "alice");
        assert_eq!(spool[0].rhost.as_deref(), Some("192.0.2.7"));
        assert_eq!(spool[0].why, "connect: refused");
        assert!(spool[0].at > 1_700_000_000);
        // Each report has its own id, kept in the spool: sent again, it is the same report.
        let id = spool[0].id.clone().unwrap();
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        assert_ne!(spool[0].id, spool[1].id);
        assert_eq!(
            std::fs::metadata(s.spool_path()).unwrap().mode() & 0o777,
            0o600
        );

        // Claimed: the spool is gone, the claim holds them.
        let claimed = s.claim();
        assert_eq!(claimed, spool);
        assert!(!s.spool_path().exists());
        assert!(s.sending_path().exists());
        // A second login meanwhile claims nothing (another one is sending) ...
        let mut other = StateDir::open(&s.dir, "acme").unwrap();
        assert!(other.claim().is_empty());
        // ... and its own fail-open goes to a new spool.
        other.record(&origin("carol"), "connect: refused").unwrap();
        // The daemon answered with an error frame: given back.
        s.settle(false);
        assert!(!s.sending_path().exists());
        let given_back = spool_lines(&s);
        let users: Vec<_> = given_back.iter().map(|r| r.user.as_str()).collect();
        assert_eq!(users, ["carol", "alice", "bob"]);
        assert_eq!(given_back[1..], spool[..], "given back with their ids");

        // Delivered: gone for good.
        assert_eq!(s.claim().len(), 3);
        s.settle(true);
        assert!(!s.spool_path().exists());
        assert!(!s.sending_path().exists());
        assert!(s.claim().is_empty());
        assert!(s.notes.is_empty(), "{:?}", s.notes);
    }

    #[test]
    fn at_most_64_reports_go_with_one_request_and_the_rest_stays() {
        let (_tmp, mut s) = state();
        for i in 0..70 {
            s.record(&origin(&format!("u{i}")), "connect: refused")
                .unwrap();
        }
        let first = s.claim();
        assert_eq!(first.len(), MAX_FAIL_OPENS);
        assert_eq!(first[0].user, "u0");
        // The rest is back in the spool at once.
        let rest: Vec<_> = spool_lines(&s).into_iter().map(|r| r.user).collect();
        assert_eq!(rest, (64..70).map(|i| format!("u{i}")).collect::<Vec<_>>());
        // The claim holds only what is sent.
        let sending = std::fs::read_to_string(s.sending_path()).unwrap();
        assert_eq!(sending.lines().count(), MAX_FAIL_OPENS);
        s.settle(true);
        assert_eq!(s.claim().len(), 6);
        s.settle(true);
        assert!(!s.spool_path().exists());
    }

    #[test]
    fn a_claim_left_by_a_dead_login_is_taken_over_after_two_minutes() {
        let (_tmp, mut s) = state();
        s.record(&origin("alice"), "connect: refused").unwrap();
        let mut dead = StateDir::open(&s.dir, "acme").unwrap();
        assert_eq!(dead.claim().len(), 1);
        std::mem::forget(dead.claimed.take());
        s.record(&origin("bob"), "connect: refused").unwrap();
        // Fresh: another login is sending, also a minute later.
        assert!(s.claim().is_empty());
        let now = SystemTime::now();
        assert!(s
            .claim_reports_at(now + Duration::from_secs(60))
            .unwrap()
            .is_empty());
        assert!(s.sending_path().exists());
        // Past two minutes: taken over, its report put back and sent with the others.
        let got = claimed_users(&mut s, now + STALE_CLAIM + Duration::from_secs(5));
        assert_eq!(got, ["bob", "alice"]);
        assert!(!s.spool_path().exists());
        s.settle(true);
        assert!(!s.sending_path().exists());
        assert!(s.claim().is_empty());
        assert_eq!(s.notes.len(), 1, "{:?}", s.notes);
        assert!(s.notes[0].contains("took over"), "{:?}", s.notes);
    }

    #[test]
    fn an_answer_to_an_older_request_does_not_overwrite_a_newer_grant() {
        let (_tmp, stopped) = state();
        // Asked, heard "safe", then stopped (Ctrl-Z) before writing it.
        let stopped_asked = SystemTime::now();
        std::thread::sleep(Duration::from_millis(20));
        // Another login asks later, hears "secure" (the tenant's setting changed), writes.
        let later = StateDir::open(&stopped.dir, "acme").unwrap();
        later
            .write_grant(TenantFailMode::Secure, SystemTime::now())
            .unwrap();
        // The stopped one resumes: its older answer is not kept.
        stopped
            .write_grant(TenantFailMode::Safe, stopped_asked)
            .unwrap();
        assert_eq!(stopped.read_grant(), Ok(Some(TenantFailMode::Secure)));
        // The same stopped login asks again now (a later step) and hears "safe": kept.
        std::thread::sleep(Duration::from_millis(20));
        stopped
            .write_grant(TenantFailMode::Safe, SystemTime::now())
            .unwrap();
        assert_eq!(stopped.read_grant(), Ok(Some(TenantFailMode::Safe)));
        // Its own grant is no bar to its next answer, whenever that was asked.
        stopped
            .write_grant(TenantFailMode::Secure, stopped_asked)
            .unwrap();
        assert_eq!(stopped.read_grant(), Ok(Some(TenantFailMode::Secure)));
    }

    #[test]
    fn a_cut_line_or_bytes_that_are_not_text_spoil_only_their_own_line() {
        let (_tmp, mut s) = state();
        s.record(&origin("alice"), "connect: refused").unwrap();
        // A crash cut the next line half-way (and wrote a byte that is not UTF-8).
        let mut f = OpenOptions::new()
            .append(true)
            .open(s.spool_path())
            .unwrap();
        f.write_all(b"{\"at\":1,\"user\":\"mall\xc3").unwrap();
        drop(f);
        s.record(&origin("carol"), "connect: refused").unwrap();
        let got: Vec<_> = s.claim().into_iter().map(|r| r.user).collect();
        assert_eq!(got, ["alice", "carol"]);
        assert_eq!(s.notes.len(), 1, "{:?}", s.notes);
        assert!(s.notes[0].contains("no fail-open report"), "{:?}", s.notes);
    }

    #[test]
    fn a_full_spool_refuses_new_reports_but_takes_back_a_claim() {
        let (_tmp, mut s) = state();
        s.record(&origin("alice"), "connect: refused").unwrap();
        assert_eq!(s.claim().len(), 1);
        let filler = vec![b'x'; SPOOL_MAX as usize - 10];
        std::fs::write(s.spool_path(), [filler.as_slice(), b"\n"].concat()).unwrap();
        let e = s.record(&origin("bob"), "connect: refused").unwrap_err();
        assert!(e.contains("bring the daemon back"), "{e}");
        // The claimed report is not lost for that.
        s.settle(false);
        let text = std::fs::read(s.spool_path()).unwrap();
        assert!(String::from_utf8_lossy(&text).contains("\"alice\""));
        assert!(!String::from_utf8_lossy(&text).contains("\"bob\""));
    }

    #[test]
    fn a_leftover_of_an_older_takeover_is_put_back() {
        let (_tmp, mut s) = state();
        s.record(&origin("alice"), "connect: refused").unwrap();
        let leftover = s.dir.join("acme.fail-opens.stale.4242");
        std::fs::rename(s.spool_path(), &leftover).unwrap();
        let now = SystemTime::now();
        assert!(s.claim_reports_at(now).unwrap().is_empty(), "too fresh");
        let got = claimed_users(&mut s, now + STALE_CLAIM + Duration::from_secs(5));
        assert_eq!(got, ["alice"]);
        assert!(!leftover.exists());
    }

    /// The user who runs `su` sets its file-size limit: at it, a write would kill the
    /// process (SIGXFSZ) with the spool claimed, or cut a line. Run in a child process of
    /// its own (the limit is the whole process's).
    #[test]
    fn a_file_size_limit_of_the_user_neither_kills_nor_cuts_and_is_put_back() {
        const CHILD: &str = "PORTCULLIS_TEST_FSIZE_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let name = "failopen::tests::a_file_size_limit_of_the_user_neither_kills_nor_cuts_and_is_put_back";
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--nocapture", "--test-threads=1"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{:?}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        let limit = |cur, max| {
            let l = libc::rlimit {
                rlim_cur: cur,
                rlim_max: max,
            };
            // SAFETY: setrlimit reads `l` for the duration of the call only.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &l) }, 0);
        };
        let current = || {
            let mut now = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes one rlimit into `now`, which lives for the call.
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut now) }, 0);
            (now.rlim_cur, now.rlim_max)
        };
        // `ulimit -S -f 0`-like: a soft limit, which anyone may raise to the hard one.
        limit(16, libc::RLIM_INFINITY);
        let (_tmp, mut s) = state();
        for user in ["alice", "bob", "carol"] {
            s.record(&origin(user), "connect: refused").unwrap();
        }
        s.remember(TenantFailMode::Safe, SystemTime::now());
        assert_eq!(s.read_grant(), Ok(Some(TenantFailMode::Safe)));
        assert_eq!(s.claim().len(), 3);
        s.settle(false);
        assert_eq!(spool_lines(&s).len(), 3);
        drop(s);
        assert_eq!(current(), (16, libc::RLIM_INFINITY), "put back");

        // `ulimit -f 16`: the hard limit too, which only a privileged process may raise.
        limit(16, 16);
        let (_tmp, mut s) = state();
        if s.read_only.is_none() {
            s.record(&origin("alice"), "connect: refused").unwrap();
            assert_eq!(s.claim().len(), 1);
        } else {
            // Without that privilege: nothing is written (and nobody fails open).
            let e = s.record(&origin("alice"), "connect: refused").unwrap_err();
            assert!(e.contains("file size limit is 16 bytes"), "{e}");
            assert!(s.claim().is_empty());
            assert!(!s.spool_path().exists());
        }
        drop(s);
        assert_eq!(current(), (16, 16), "put back");
    }

    #[test]
    fn a_spool_that_cannot_be_written_is_an_error() {
        let (_tmp, mut s) = state();
        // A directory in the spool's place.
        std::fs::create_dir(s.spool_path()).unwrap();
        assert!(s.record(&origin("alice"), "connect: refused").is_err());
        std::fs::remove_dir(s.spool_path()).unwrap();
        // A symlink in its place is not followed.
        let target = s.dir.join("target");
        std::os::unix::fs::symlink(&target, s.spool_path()).unwrap();
        assert!(s.record(&origin("alice"), "connect: refused").is_err());
        assert!(!target.exists());
    }

    #[test]
    fn report_fields_are_cut_to_the_protocols_limits() {
        let mut o = origin(&"ü".repeat(200));
        o.service = "s\ns".into();
        o.rhost = Some(String::new());
        let r = report(&o, &"w".repeat(1000), 5);
        assert!(r.user.len() <= MAX_REPORT_USER && r.user.chars().all(|c| c == 'ü'));
        assert_eq!(r.service, "s s");
        assert_eq!(r.rhost, None);
        assert_eq!(r.why.len(), MAX_REPORT_WHY);
        assert!(r.check().is_ok());
    }
}
