//! A real PostgreSQL server for the tests of the shared store and of several nodes.
//!
//! With `PORTCULLIS_TEST_POSTGRES` set (a URL whose user may `CREATE DATABASE`), the tests
//! use that server. Otherwise [`PgServer::start`] makes its own: `initdb` into a temporary
//! directory and `postgres` listening on a free 127.0.0.1 port, from Debian's `postgresql`
//! package (`/usr/lib/postgresql/*/bin`). As root both run as the `postgres` user
//! (PostgreSQL refuses to run as root), through `setpriv`.
//!
//! Every test takes a fresh database of its own ([`PgServer::create_database`]), so tests
//! running in parallel never see each other's rows. A missing PostgreSQL fails the test
//! with what to install: it is never skipped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::is_root;

/// The password of the test superuser (password authentication over TCP is required, so
/// the store's URL handling and redaction are exercised with a real password).
pub const TEST_PASSWORD: &str = "pg-t3st-pw";
const TEST_USER: &str = "portcullis";

/// A PostgreSQL server for one test (or the external one named by the environment).
pub struct PgServer {
    /// `postgres://user:password@127.0.0.1:port` without a database.
    base: String,
    /// The admin database URL (for CREATE DATABASE).
    admin_url: String,
    own: Option<OwnServer>,
}

struct OwnServer {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    run_as: Option<(u32, u32)>,
    /// More `-c name=value` server settings (TLS).
    settings: Vec<String>,
}

/// The directory holding `initdb` and `postgres`, newest version first; fails the test
/// when PostgreSQL is not installed.
pub fn postgres_bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    if let Some(initdb) = crate::tools::find_on_path("initdb") {
        if let Some(dir) = initdb.parent() {
            return dir.to_path_buf();
        }
    }
    panic!(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); install the Debian \
         package `postgresql` (apt-get install postgresql) or run scripts/test as root, which \
         installs it; or set PORTCULLIS_TEST_POSTGRES to a postgres:// URL"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// uid and gid of `postgres` from /etc/passwd.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == "postgres").then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
        .and_then(|(u, g)| Some((u?, g?)))
        .expect(
            "running as root but there is no `postgres` user; install the Debian package `postgresql`",
        )
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir").flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

impl OwnServer {
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        match self.run_as {
            Some((uid, gid)) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(exe);
                cmd
            }
            None => Command::new(exe),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).expect("log file");
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            // A test database: durability is not what is tested here.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"]);
        for setting in &self.settings {
            cmd.arg("-c").arg(setting);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().expect("start postgres"));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl PgServer {
    /// The server named by `PORTCULLIS_TEST_POSTGRES`, or a new one of our own.
    pub fn start() -> PgServer {
        if let Ok(url) = std::env::var("PORTCULLIS_TEST_POSTGRES") {
            let base = match url.rsplit_once('/') {
                Some((base, db)) if !base.ends_with('/') && !db.contains('@') => base.to_string(),
                _ => url.trim_end_matches('/').to_string(),
            };
            let admin_url = url.clone();
            let server = PgServer {
                base,
                admin_url,
                own: None,
            };
            server.wait_ready(Duration::from_secs(30));
            return server;
        }
        PgServer::start_own()
    }

    /// A new server of our own, whatever `PORTCULLIS_TEST_POSTGRES` says (for tests that
    /// stop and restart the database).
    pub fn start_own() -> PgServer {
        PgServer::start_own_with(None)
    }

    /// A new server of our own that also accepts TLS (`ssl=on`) with this certificate
    /// chain and key (PEM); connections without TLS are still accepted.
    pub fn start_own_tls(cert_pem: &str, key_pem: &str) -> PgServer {
        PgServer::start_own_with(Some((cert_pem, key_pem)))
    }

    fn start_own_with(tls: Option<(&str, &str)>) -> PgServer {
        let bin = postgres_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("portcullis-pg-")
            .tempdir()
            .expect("create temp dir");
        let run_as = is_root().then(postgres_user);
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, format!("{TEST_PASSWORD}\n")).expect("write pwfile");
        let mut settings = Vec::new();
        if let Some((cert_pem, key_pem)) = tls {
            let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::write(&cert, cert_pem).expect("write server.crt");
            std::fs::write(&key, key_pem).expect("write server.key");
            // PostgreSQL refuses a key that group or others can read.
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod server.key");
            settings.push("ssl=on".to_string());
            settings.push(format!("ssl_cert_file={}", cert.display()));
            settings.push(format!("ssl_key_file={}", key.display()));
        }
        if let Some((uid, gid)) = run_as {
            chown_tree(dir.path(), uid, gid);
        }
        let port = free_port();
        let mut own = OwnServer {
            dir,
            bin,
            port,
            child: None,
            run_as,
            settings,
        };
        let mut initdb = own.command("initdb");
        initdb
            .arg("-D")
            .arg(own.data())
            .args(["-U", TEST_USER, "-E", "UTF8", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()));
        let out = crate::tools::run_with_timeout(initdb, None, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "initdb failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        own.spawn();
        let base = format!("postgres://{TEST_USER}:{TEST_PASSWORD}@127.0.0.1:{port}");
        let server = PgServer {
            admin_url: format!("{base}/postgres?sslmode=disable"),
            base,
            own: Some(own),
        };
        server.wait_ready(Duration::from_secs(60));
        server
    }

    fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match postgres::Client::connect(&self.admin_url, postgres::NoTls) {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => panic!(
                    "PostgreSQL did not accept connections within {timeout:?}: {e}\n{}",
                    self.own.as_ref().map(OwnServer::log).unwrap_or_default()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// A new empty database; its URL (with the password, `sslmode=disable`).
    pub fn create_database(&self) -> String {
        let name = format!(
            "portcullis_t_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let mut client = postgres::Client::connect(&self.admin_url, postgres::NoTls)
            .expect("connect to PostgreSQL");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE");
        format!("{}/{name}?sslmode=disable", self.base)
    }

    /// The URL of the server's admin database (`sslmode=disable`), to look at its state.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The password in the server's URL (to check that it is never shown).
    pub fn password(&self) -> Option<String> {
        let (_, rest) = self.base.split_once("://")?;
        let userinfo = rest.rsplit_once('@')?.0;
        userinfo.split_once(':').map(|(_, p)| p.to_string())
    }

    /// The port of our own server (not available for an external one).
    pub fn port(&self) -> u16 {
        self.own.as_ref().map(|o| o.port).expect("own server")
    }

    /// Whether this is a server of our own (that [`PgServer::stop`] can stop).
    pub fn is_own(&self) -> bool {
        self.own.is_some()
    }

    /// Stops our own server (fast shutdown: open connections are cut).
    pub fn stop(&mut self) {
        let own = self
            .own
            .as_mut()
            .expect("only our own server can be stopped");
        if let Some(mut child) = own.child.take() {
            // SIGINT = fast shutdown: open connections are cut, as when a database fails.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts our own server again on the same port and data.
    pub fn restart(&mut self) {
        let own = self
            .own
            .as_mut()
            .expect("only our own server can be restarted");
        own.spawn();
        self.wait_ready(Duration::from_secs(60));
    }

    /// The server's log (our own server only).
    pub fn log(&self) -> String {
        self.own.as_ref().map(OwnServer::log).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.own.is_some() {
            self.stop();
        }
    }
}
