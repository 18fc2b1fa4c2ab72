//! PAM peers: `pamtester` under `pam_wrapper` (no change to /etc/pam.d), the module under
//! test (`libpam_portcullis.so`), and a Portcullis installation with a `[pam]` socket.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::env::TestEnv;
use crate::server::Server;
use crate::tools::{require_tool, run_with_timeout_after};
use crate::totp::{oathtool_totp, random_base32_secret, wrong_totp, Algorithm};

/// How long one pamtester run may take.
const PAMTESTER_TIMEOUT: Duration = Duration::from_secs(60);

/// Directories where Debian installs libraries and PAM modules.
const LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/lib",
];

/// The module under test: `$PAM_PORTCULLIS_SO`, or `libpam_portcullis.so` in the target
/// directory next to the test executable. Panics when it was not built.
pub fn pam_module_path() -> PathBuf {
    if let Some(path) = std::env::var_os("PAM_PORTCULLIS_SO") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "PAM_PORTCULLIS_SO={} does not exist; build it: cargo build -p pam_portcullis",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("libpam_portcullis.so"))
        .collect();
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "libpam_portcullis.so is missing (looked at {candidates:?}); build it first: cargo build -p pam_portcullis"
            )
        })
}

/// A library or PAM module shipped by a Debian package, by file name under the usual
/// library directories (and their `security/` and `pam_wrapper/` subdirectories).
pub fn system_file(name: &str, debian_package: &str) -> PathBuf {
    for dir in LIB_DIRS {
        for sub in ["", "security", "pam_wrapper"] {
            let candidate = Path::new(dir).join(sub).join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "`{name}` is not installed; install the Debian package `{debian_package}` \
         (apt-get install {debian_package}) or run scripts/test as root, which installs it"
    )
}

/// `libpam_wrapper.so` (Debian `libpam-wrapper`).
pub fn pam_wrapper_lib() -> PathBuf {
    system_file("libpam_wrapper.so", "libpam-wrapper")
}

/// Sets the pam_wrapper variables on `cmd`: PAM reads its services from `service_dir`.
/// Start it with [`run_under_pam_wrapper`] or [`spawn_under_pam_wrapper`] (or take a
/// [`PamWrapperTurn`]), never alone: see there.
pub fn under_pam_wrapper(cmd: &mut Command, service_dir: &Path) {
    cmd.env("LD_PRELOAD", pam_wrapper_lib())
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", service_dir);
}

/// pam_wrapper (Debian's 1.1.4) copies the service directory at `pam_start` to
/// `/tmp/pam.X`: it takes the first X whose name is free, creates it afterwards and goes
/// on when that fails. Two processes starting PAM at the same moment can so share one copy
/// and one of them runs the other's service file: a login against another test's daemon
/// (seen once in CI, where two tests of one binary started pamtester together). So the
/// processes of a test binary start PAM one at a time: whoever holds the turn starts its
/// process and gives the turn back once that process (or one it started) has made its own
/// copy, has exited, or 10 s have passed. Test binaries run one after another, so a lock
/// within the binary is enough.
static PAM_WRAPPER_START: Mutex<()> = Mutex::new(());

/// The turn to start a process whose PAM runs under pam_wrapper ([`PAM_WRAPPER_START`]).
pub struct PamWrapperTurn {
    _turn: MutexGuard<'static, ()>,
    /// The copies (`/tmp/pam.X` and the pid in it) that were there before.
    before: Vec<(String, u32)>,
}

impl PamWrapperTurn {
    /// Waits for the turn (a test that panicked holding it does not keep it).
    pub fn take() -> PamWrapperTurn {
        let turn = PAM_WRAPPER_START
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        PamWrapperTurn {
            _turn: turn,
            before: pam_wrapper_copies(),
        }
    }

    /// Gives the turn back once a process under `pam_root` (its pid, or an ancestor's: an
    /// sshd whose session processes run PAM) has made a new copy, `child` has exited or
    /// 10 s have passed.
    pub fn until_copied(self, child: &mut Child, pam_root: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            let made = pam_wrapper_copies()
                .into_iter()
                .any(|c| !self.before.contains(&c) && descends_from(c.1, pam_root));
            if made {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// `run_with_timeout` for a command set up by [`under_pam_wrapper`], started in turn.
pub fn run_under_pam_wrapper(cmd: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Output {
    let turn = PamWrapperTurn::take();
    run_with_timeout_after(cmd, stdin, timeout, move |child| {
        let id = child.id();
        turn.until_copied(child, id)
    })
}

/// Spawns a command set up by [`under_pam_wrapper`] in turn.
pub fn spawn_under_pam_wrapper(cmd: &mut Command) -> std::io::Result<Child> {
    let turn = PamWrapperTurn::take();
    let mut child = cmd.spawn()?;
    let id = child.id();
    turn.until_copied(&mut child, id);
    Ok(child)
}

/// pam_wrapper's copies of service directories: `/tmp/pam.X` with the pid it wrote there.
fn pam_wrapper_copies() -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !(name.len() == 5 && name.starts_with("pam.")) {
                return None;
            }
            let pid = std::fs::read_to_string(e.path().join("pid")).ok()?;
            Some((name, pid.trim().parse().ok()?))
        })
        .collect()
}

/// Whether process `pid` is `root` or was started by it (through at most 16 parents).
fn descends_from(mut pid: u32, root: u32) -> bool {
    for _ in 0..16 {
        if pid == root {
            return true;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Some(parent) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        else {
            return false;
        };
        if parent == 0 {
            return false;
        }
        pid = parent;
    }
    false
}

/// Panics unless the tests run as root (sshd and uid switching need it).
pub fn require_root(what: &str) {
    assert!(
        crate::process::is_root(),
        "{what} needs root (it starts sshd / switches uid); run scripts/test as root"
    );
}

/// Where the module keeps `failmode=safe`'s state (`state_dir=`) for a test in `base`:
/// never the host's /var/lib.
pub fn fail_open_state_dir(base: &Path) -> PathBuf {
    base.join("pam-state")
}

/// What a host keeps once the daemon has said that `tenant` allows failing open
/// (`pam_fail_mode = "safe"`): `state_dir` (root's, 0700) with `<tenant>.fail-mode`.
pub fn grant_fail_open(state_dir: &Path, tenant: &str) {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !state_dir.exists() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(state_dir)
            .expect("create the module's state_dir");
    }
    let grant = state_dir.join(format!("{tenant}.fail-mode"));
    std::fs::write(&grant, "safe\n").expect("write the grant");
    std::fs::set_permissions(&grant, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The fail-open reports a host keeps for `tenant` in `state_dir` (one JSON per line).
pub fn fail_open_spool(state_dir: &Path, tenant: &str) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(state_dir.join(format!("{tenant}.fail-opens"))) {
        Ok(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a spool line is JSON"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `args` with `state_dir=` in `base` when they say `failmode=safe` and name none.
pub fn with_state_dir(args: &str, base: &Path) -> String {
    if args.contains("failmode=safe") && !args.contains("state_dir=") {
        format!("{args} state_dir={}", fail_open_state_dir(base).display())
    } else {
        args.to_string()
    }
}

/// A Portcullis installation with a PAM socket, tenant `acme` and user `alice` (password
/// and a confirmed TOTP factor), plus a pam_wrapper service directory.
pub struct PamFixture {
    // Declared first so that it is dropped (the server stopped) before the directory goes.
    pub server: Option<Server>,
    pub env: TestEnv,
    pub socket: PathBuf,
    pub service_dir: PathBuf,
    pub tenant: String,
    pub user: String,
    pub password: String,
    pub secret: String,
}

impl PamFixture {
    /// The usual fixture with a running server.
    pub fn new() -> PamFixture {
        PamFixture::with_config("", true)
    }

    /// `extra` TOML is appended to the config (after the `[pam]` section); with `start`
    /// false no server runs (the daemon is down).
    pub fn with_config(extra: &str, start: bool) -> PamFixture {
        PamFixture::with_pam_section("", extra, start)
    }

    /// Like [`PamFixture::with_config`], with `pam_keys` added inside `[pam]`.
    pub fn with_pam_section(pam_keys: &str, extra: &str, start: bool) -> PamFixture {
        require_tool("pamtester", "pamtester");
        pam_wrapper_lib();
        // The socket path must fit in sun_path (108 bytes): the temp dir keeps it short.
        let env = TestEnv::with_config_in_dir(vec![], |dir| {
            format!(
                "[pam]\nsocket = \"{}\"\n{pam_keys}\n{extra}",
                dir.join("pam.sock").display()
            )
        });
        let socket = env.dir().join("pam.sock");
        let service_dir = env.dir().join("pam.d");
        std::fs::create_dir(&service_dir).expect("create service dir");
        let tenant = "acme".to_string();
        let user = "alice".to_string();
        let password = "correct horse battery".to_string();
        let secret = random_base32_secret();
        env.add_tenant(&tenant);
        env.add_user(&tenant, &user, &password);
        let factor = env.enroll_totp(&tenant, &user, Some(&secret));
        assert_eq!(factor.state, "confirmed", "{:?}", factor.json);
        let server = if start {
            let server = env.start_server();
            let bound = server.wait_for_pam();
            assert_eq!(bound, socket);
            Some(server)
        } else {
            None
        };
        PamFixture {
            server,
            env,
            socket,
            service_dir,
            tenant,
            user,
            password,
            secret,
        }
    }

    /// The `auth` line of the module under test with this fixture's socket and tenant
    /// (no failure delay, so that failing tests stay fast) and `args` (with `failmode=safe`,
    /// the fixture's `state_dir=` unless they name one).
    pub fn module_line(&self, args: &str) -> String {
        format!(
            "auth required {} socket={} tenant={} fail_delay=0 {}\n",
            pam_module_path().display(),
            self.socket.display(),
            self.tenant,
            with_state_dir(args, self.env.dir())
        )
    }

    /// The module's `state_dir=` in this fixture.
    pub fn state_dir(&self) -> PathBuf {
        fail_open_state_dir(self.env.dir())
    }

    /// As if the daemon had told this host that the tenant allows failing open.
    pub fn grant_fail_open(&self) {
        grant_fail_open(&self.state_dir(), &self.tenant);
    }

    /// The fail-open reports this host keeps for the daemon.
    pub fn fail_open_spool(&self) -> Vec<serde_json::Value> {
        fail_open_spool(&self.state_dir(), &self.tenant)
    }

    /// Writes the service file `name` with `content`.
    pub fn service(&self, name: &str, content: &str) {
        std::fs::write(self.service_dir.join(name), content).expect("write service file");
    }

    /// Writes service `name` holding only the module with `args`.
    pub fn module_service(&self, name: &str, args: &str) {
        self.service(name, &self.module_line(args));
    }

    /// `pamtester SERVICE USER authenticate` under pam_wrapper with `stdin` as the
    /// answers. Prompts and messages go to stderr; exit status 0 = authenticated.
    pub fn pamtester(&self, service: &str, user: &str, stdin: &str) -> Output {
        self.pamtester_with_env(service, user, stdin, &[])
    }

    /// [`PamFixture::pamtester`] with what modules log through pam_syslog on stderr too
    /// (pam_wrapper prints it as `PWRAP_...SYSLOG(priority): message`).
    pub fn pamtester_logged(&self, service: &str, user: &str, stdin: &str) -> Output {
        self.pamtester_with_env(service, user, stdin, &[("PAM_WRAPPER_DEBUGLEVEL", "3")])
    }

    /// [`PamFixture::pamtester`] with extra environment variables.
    pub fn pamtester_with_env(
        &self,
        service: &str,
        user: &str,
        stdin: &str,
        vars: &[(&str, &str)],
    ) -> Output {
        let mut cmd = Command::new(require_tool("pamtester", "pamtester"));
        cmd.args(["-v", service, user, "authenticate"]);
        under_pam_wrapper(&mut cmd, &self.service_dir);
        cmd.envs(vars.iter().copied());
        run_under_pam_wrapper(cmd, Some(stdin.as_bytes().to_vec()), PAMTESTER_TIMEOUT)
    }

    /// `pamtester -v SERVICE USER authenticate` under pam_wrapper (with `vars`) that the
    /// test answers one line at a time: the login stays at a prompt for as long as the test
    /// likes (a transaction left to expire, a daemon restarted under it).
    pub fn pamtester_held(&self, service: &str, user: &str, vars: &[(&str, &str)]) -> HeldLogin {
        let mut cmd = Command::new(require_tool("pamtester", "pamtester"));
        cmd.args(["-v", service, user, "authenticate"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        under_pam_wrapper(&mut cmd, &self.service_dir);
        cmd.envs(vars.iter().copied());
        let mut child = spawn_under_pam_wrapper(&mut cmd).expect("start pamtester");
        let stdin = child.stdin.take().expect("stdin piped");
        // Prompts and messages (and pam_wrapper's syslog lines) come on stderr.
        let (tx, output) = mpsc::channel::<Vec<u8>>();
        let mut readers = Vec::new();
        for mut pipe in [
            Box::new(child.stderr.take().expect("stderr piped")) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().expect("stdout piped")),
        ] {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }));
        }
        HeldLogin {
            child,
            stdin: Some(stdin),
            output,
            seen: Vec::new(),
            readers,
        }
    }

    /// The current code of alice's factor, from oathtool.
    pub fn code(&self) -> String {
        oathtool_totp(&self.secret, 6, Algorithm::Sha1, 0)
    }

    /// A well-formed code that is not valid now.
    pub fn wrong_code(&self) -> String {
        wrong_totp(&self.secret, 6, Algorithm::Sha1)
    }

    /// The newest audit record of `user` as JSON.
    pub fn last_audit(&self, user: &str) -> serde_json::Value {
        let v = self.env.cli_json(&[
            "audit",
            "--tenant",
            &self.tenant,
            "--user",
            user,
            "--limit",
            "1",
            "--json",
        ]);
        v.as_array()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_else(|| panic!("no audit record for {user}: {v}"))
    }
}

/// A running `pamtester` answered line by line ([`PamFixture::pamtester_held`]); killed
/// when dropped unfinished.
pub struct HeldLogin {
    child: Child,
    stdin: Option<ChildStdin>,
    output: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
    readers: Vec<JoinHandle<()>>,
}

impl HeldLogin {
    /// Types `line` and Enter at the current (or next) prompt.
    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open until finish");
        writeln!(stdin, "{line}").expect("write to pamtester");
    }

    /// Waits up to `timeout` until pamtester's output holds `text`; fails the test with
    /// what it printed otherwise. Returns everything printed so far.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while !String::from_utf8_lossy(&self.seen).contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(_) => panic!(
                    "pamtester did not print `{text}` within {timeout:?}: {}",
                    self.printed()
                ),
            }
        }
        self.printed()
    }

    /// What pamtester printed so far (stderr and stdout).
    pub fn printed(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Closes stdin and waits up to `timeout` for pamtester to end: its status and
    /// everything it printed.
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, String) {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for pamtester") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "pamtester did not finish within {timeout:?}: {}",
                self.printed()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let rest: Vec<Vec<u8>> = self.output.try_iter().collect();
        for chunk in rest {
            self.seen.extend_from_slice(&chunk);
        }
        (status, self.printed())
    }
}

impl Drop for HeldLogin {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Default for PamFixture {
    fn default() -> Self {
        PamFixture::new()
    }
}

/// Text of a finished command, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
