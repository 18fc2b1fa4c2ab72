//! One isolated Portcullis installation per test: config, store, master key, CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::radclient::{radclient, RadReply};
use crate::server::Server;
use crate::tools::{portcullis_bin, run_with_timeout};
use crate::totp::{oathtool_totp, random_base32_secret, wrong_totp, Algorithm};

/// How a RADIUS client's users give their second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Password first, then an Access-Challenge asks for the code.
    Challenge,
    /// Password immediately followed by the code in User-Password.
    Append,
    /// Password, then the default out-of-band factor (a challenge until push exists).
    Auto,
    /// The code alone (the password was checked elsewhere).
    OtpOnly,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Challenge => "challenge",
            Mode::Append => "append",
            Mode::Auto => "auto",
            Mode::OtpOnly => "otp-only",
        }
    }
}

/// One `[[radius.clients]]` entry.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub name: String,
    pub address: String,
    pub secret: String,
    pub tenant: String,
    pub mode: Mode,
    pub require_message_authenticator: bool,
    /// More `key = value` lines of the client's table (e.g. `max_wait = "2s"`).
    pub extra: String,
}

impl ClientSpec {
    /// The usual test NAS: `vpn` on 127.0.0.1/32, secret `s3cret-vpn`, tenant `acme`,
    /// Message-Authenticator required.
    pub fn new(mode: Mode) -> Self {
        ClientSpec {
            name: "vpn".into(),
            address: "127.0.0.1/32".into(),
            secret: "s3cret-vpn".into(),
            tenant: "acme".into(),
            mode,
            require_message_authenticator: true,
            extra: String::new(),
        }
    }

    /// A lenient NAS: `legacy` on 127.0.0.2/32, secret `s3cret-legacy`, tenant `acme`, no
    /// Message-Authenticator required (so anyone able to use its address can send it
    /// datagrams that need no secret).
    pub fn legacy(mode: Mode) -> Self {
        ClientSpec {
            name: "legacy".into(),
            address: "127.0.0.2/32".into(),
            secret: "s3cret-legacy".into(),
            require_message_authenticator: false,
            ..ClientSpec::new(mode)
        }
    }

    fn to_toml(&self) -> String {
        format!(
            "[[radius.clients]]\nname = {}\naddress = {}\nsecret = {}\ntenant = {}\nmode = {}\nrequire_message_authenticator = {}\n{}",
            toml_str(&self.name),
            toml_str(&self.address),
            toml_str(&self.secret),
            toml_str(&self.tenant),
            toml_str(self.mode.as_str()),
            self.require_message_authenticator,
            self.extra,
        )
    }
}

fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What `factor enroll --json` / `factor list --json` says about a factor.
#[derive(Debug, Clone)]
pub struct FactorInfo {
    pub factor_id: String,
    pub kind: String,
    pub state: String,
    pub secret: Option<String>,
    pub uri: Option<String>,
    pub digits: Option<u32>,
    pub algorithm: Option<String>,
    /// The whole JSON object, for fields the harness does not name.
    pub json: Value,
}

impl FactorInfo {
    fn from_json(v: &Value) -> FactorInfo {
        let s = |key: &str| -> Option<String> {
            match v.get(key) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            }
        };
        FactorInfo {
            factor_id: s("factor_id").unwrap_or_else(|| panic!("no factor_id in {v}")),
            kind: s("kind").unwrap_or_else(|| panic!("no kind in {v}")),
            state: s("state").unwrap_or_else(|| panic!("no state in {v}")),
            secret: s("secret"),
            uri: s("uri"),
            digits: v.get("digits").and_then(Value::as_u64).map(|d| d as u32),
            algorithm: s("algorithm"),
            json: v.clone(),
        }
    }
}

/// Options of `factor enroll totp`.
#[derive(Debug, Clone, Default)]
pub struct TotpOptions {
    pub secret: Option<String>,
    pub digits: Option<u32>,
    pub algorithm: Option<Algorithm>,
}

/// A temporary directory holding `portcullis.toml`, the SQLite store and the master key.
pub struct TestEnv {
    dir: TempDir,
    config_path: PathBuf,
    clients: Vec<ClientSpec>,
}

/// How long one CLI command may take before the test fails.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

impl TestEnv {
    /// An installation with the given RADIUS clients.
    pub fn new(clients: Vec<ClientSpec>) -> TestEnv {
        TestEnv::with_extra_config(clients, "")
    }

    /// Like [`TestEnv::new`], with `extra` TOML appended to the config file.
    pub fn with_extra_config(clients: Vec<ClientSpec>, extra: &str) -> TestEnv {
        TestEnv::with_config_in_dir(clients, |_| extra.to_string())
    }

    /// Like [`TestEnv::with_extra_config`], the extra TOML made from the env's directory
    /// (for paths inside it, such as a PAM socket).
    pub fn with_config_in_dir(
        clients: Vec<ClientSpec>,
        extra: impl FnOnce(&Path) -> String,
    ) -> TestEnv {
        TestEnv::build(clients, None, extra)
    }

    /// Like [`TestEnv::with_extra_config`] with another `[store]` section (e.g. a shared
    /// PostgreSQL: `url = "postgres://..."` and its settings) instead of a SQLite file.
    pub fn with_store(clients: Vec<ClientSpec>, store_toml: &str, extra: &str) -> TestEnv {
        TestEnv::build(clients, Some(store_toml.to_string()), |_| extra.to_string())
    }

    fn build(
        clients: Vec<ClientSpec>,
        store_toml: Option<String>,
        extra: impl FnOnce(&Path) -> String,
    ) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-test-")
            .tempdir()
            .expect("create temp dir");
        let config_path = dir.path().join("portcullis.toml");
        let d = dir.path().display().to_string();
        let store = store_toml.unwrap_or_else(|| {
            format!(
                "url = {}\n",
                toml_str(&format!("sqlite://{d}/portcullis.db"))
            )
        });
        let mut text = format!(
            "[store]\n{store}\n[secrets]\nkey_file = {}\n\n\
             # Cheap password hashes: the tests are about the protocol, not the hash cost.\n\
             [passwords]\nargon2_memory_kib = 1024\nargon2_iterations = 1\nargon2_parallelism = 1\n\n\
             [radius]\nlisten = [\"127.0.0.1:0\"]\n\n",
            toml_str(&format!("{d}/master.key")),
        );
        for c in &clients {
            text.push_str(&c.to_toml());
            text.push('\n');
        }
        text.push_str(&extra(dir.path()));
        std::fs::write(&config_path, text).expect("write config");
        TestEnv {
            dir,
            config_path,
            clients,
        }
    }

    /// One `vpn` client (see [`ClientSpec::new`]) in challenge mode.
    pub fn challenge() -> TestEnv {
        TestEnv::new(vec![ClientSpec::new(Mode::Challenge)])
    }

    /// One `vpn` client (see [`ClientSpec::new`]) in append mode.
    pub fn append() -> TestEnv {
        TestEnv::new(vec![ClientSpec::new(Mode::Append)])
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The first configured RADIUS client.
    pub fn client(&self) -> &ClientSpec {
        self.clients.first().expect("no RADIUS client configured")
    }

    /// `portcullis --config <file>` with a clean environment (no PORTCULLIS_* overrides).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(portcullis_bin());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PORTCULLIS") && key != "PORTCULLIS_BIN" {
                cmd.env_remove(key);
            }
        }
        cmd.arg("--config").arg(&self.config_path);
        cmd
    }

    /// Runs `portcullis --config <file> ARGS...` with no stdin.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        run_with_timeout(cmd, None, CLI_TIMEOUT)
    }

    /// Runs `portcullis --config <file> ARGS...` with `stdin` as its standard input.
    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        run_with_timeout(cmd, Some(stdin.as_bytes().to_vec()), CLI_TIMEOUT)
    }

    /// [`TestEnv::cli`], failing the test unless the command succeeds.
    pub fn cli_ok(&self, args: &[&str]) -> Output {
        let out = self.cli(args);
        assert_success(args, &out);
        out
    }

    /// [`TestEnv::cli_stdin`], failing the test unless the command succeeds.
    pub fn cli_stdin_ok(&self, args: &[&str], stdin: &str) -> Output {
        let out = self.cli_stdin(args, stdin);
        assert_success(args, &out);
        out
    }

    /// Runs a `--json` command that must succeed and parses its stdout.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli_ok(args);
        parse_json(args, &out)
    }

    /// `tenant add NAME --json`; returns the tenant id.
    pub fn add_tenant(&self, name: &str) -> i64 {
        let v = self.cli_json(&["tenant", "add", name, "--json"]);
        assert_eq!(
            v.get("name").and_then(Value::as_str),
            Some(name),
            "tenant add output: {v}"
        );
        v.get("id")
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("tenant add output has no numeric id: {v}"))
    }

    /// `user add --tenant T NAME --password-stdin`.
    pub fn add_user(&self, tenant: &str, name: &str, password: &str) {
        self.cli_stdin_ok(
            &["user", "add", "--tenant", tenant, name, "--password-stdin"],
            &format!("{password}\n"),
        );
    }

    /// `factor enroll totp`; with a secret the factor is confirmed, without it pending.
    pub fn enroll_totp(&self, tenant: &str, user: &str, secret: Option<&str>) -> FactorInfo {
        self.enroll_totp_with(
            tenant,
            user,
            &TotpOptions {
                secret: secret.map(str::to_string),
                ..TotpOptions::default()
            },
        )
    }

    /// `factor enroll totp` with all options.
    pub fn enroll_totp_with(&self, tenant: &str, user: &str, opts: &TotpOptions) -> FactorInfo {
        let mut args: Vec<String> = ["factor", "enroll", "totp", "--tenant", tenant, user]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(secret) = &opts.secret {
            args.extend(["--secret".into(), secret.clone()]);
        }
        if let Some(digits) = opts.digits {
            args.extend(["--digits".into(), digits.to_string()]);
        }
        if let Some(algorithm) = opts.algorithm {
            args.extend(["--algorithm".into(), algorithm.cli_name().into()]);
        }
        args.push("--json".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let v = self.cli_json(&args);
        let info = FactorInfo::from_json(&v);
        assert_eq!(info.kind, "totp", "factor enroll output: {v}");
        info
    }

    /// `factor enroll push` (the tenant pushes through `ntfy`), then `factor confirm` with
    /// the code the fake received: a confirmed push factor. The enrolment's JSON.
    pub fn enroll_push_confirmed(
        &self,
        tenant: &str,
        user: &str,
        ntfy: &crate::fakes::ntfy::FakeNtfy,
    ) -> Value {
        let enrolled = self.cli_json(&[
            "factor", "enroll", "push", "--tenant", tenant, user, "--json",
        ]);
        let id = enrolled["factor_id"].as_str().expect("factor id");
        self.cli_ok(&[
            "factor",
            "confirm",
            "--tenant",
            tenant,
            user,
            id,
            &ntfy.last_code(),
        ]);
        enrolled
    }

    /// `factor confirm --tenant T USER FACTOR_ID CODE` (not asserted: callers check the exit).
    pub fn confirm_factor(&self, tenant: &str, user: &str, factor_id: &str, code: &str) -> Output {
        self.cli(&[
            "factor", "confirm", "--tenant", tenant, user, factor_id, code,
        ])
    }

    /// `factor list --tenant T USER --json`.
    pub fn list_factors(&self, tenant: &str, user: &str) -> Vec<FactorInfo> {
        let v = self.cli_json(&["factor", "list", "--tenant", tenant, user, "--json"]);
        v.as_array()
            .unwrap_or_else(|| panic!("factor list --json is not an array: {v}"))
            .iter()
            .map(FactorInfo::from_json)
            .collect()
    }

    /// `recovery generate --tenant T USER --json`; returns the codes.
    pub fn generate_recovery_codes(&self, tenant: &str, user: &str) -> Vec<String> {
        let v = self.cli_json(&["recovery", "generate", "--tenant", tenant, user, "--json"]);
        v.get("codes")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("recovery generate output has no codes array: {v}"))
            .iter()
            .map(|c| {
                c.as_str()
                    .unwrap_or_else(|| panic!("recovery code is not a string: {c}"))
                    .to_string()
            })
            .collect()
    }

    /// `user unlock --tenant T USER`.
    pub fn unlock_user(&self, tenant: &str, user: &str) {
        self.cli_ok(&["user", "unlock", "--tenant", tenant, user]);
    }

    /// Starts `portcullis --config <file> serve` and waits for it to listen.
    pub fn start_server(&self) -> Server {
        Server::start(self.command())
    }
}

fn assert_success(args: &[&str], out: &Output) {
    assert!(
        out.status.success(),
        "`portcullis {}` failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn parse_json(args: &[&str], out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "`portcullis {}` did not print JSON on stdout ({e})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The common setup of a login test: tenant `acme`, user `alice` with a password and a
/// confirmed TOTP factor, one `vpn` client in the given mode, and a running server.
pub struct LoginFixture {
    // Declared first so that it is dropped (the server stopped) before the directory goes.
    pub server: Server,
    pub env: TestEnv,
    pub tenant: String,
    pub user: String,
    pub password: String,
    pub secret: String,
    pub digits: u32,
    pub algorithm: Algorithm,
    pub factor: FactorInfo,
}

impl LoginFixture {
    /// A 6-digit SHA1 factor with a random secret.
    pub fn new(mode: Mode) -> LoginFixture {
        LoginFixture::with_totp(mode, 6, Algorithm::Sha1)
    }

    /// A factor with the given digits and algorithm and a random secret.
    pub fn with_totp(mode: Mode, digits: u32, algorithm: Algorithm) -> LoginFixture {
        let env = TestEnv::new(vec![ClientSpec::new(mode)]);
        let tenant = env.client().tenant.clone();
        let user = "alice".to_string();
        let password = "correct horse battery".to_string();
        let secret = random_base32_secret();
        env.add_tenant(&tenant);
        env.add_user(&tenant, &user, &password);
        let factor = env.enroll_totp_with(
            &tenant,
            &user,
            &TotpOptions {
                secret: Some(secret.clone()),
                digits: Some(digits),
                algorithm: Some(algorithm),
            },
        );
        assert_eq!(
            factor.state, "confirmed",
            "enrolling with --secret: {:?}",
            factor.json
        );
        let server = env.start_server();
        LoginFixture {
            server,
            env,
            tenant,
            user,
            password,
            secret,
            digits,
            algorithm,
            factor,
        }
    }

    /// The current code of the user's factor, from oathtool.
    pub fn code(&self) -> String {
        oathtool_totp(&self.secret, self.digits, self.algorithm, 0)
    }

    /// A well-formed code that is not valid now.
    pub fn wrong_code(&self) -> String {
        wrong_totp(&self.secret, self.digits, self.algorithm)
    }

    /// radclient as the configured NAS (right secret, Message-Authenticator included):
    /// User-Name = the fixture's user, User-Password = `password`, State if given (hex).
    pub fn login(&self, password: &str, state_hex: Option<&str>) -> RadReply {
        self.login_as(&self.user, password, state_hex)
    }

    /// Like [`LoginFixture::login`] with another User-Name.
    pub fn login_as(&self, user: &str, password: &str, state_hex: Option<&str>) -> RadReply {
        let mut attrs = vec![
            ("User-Name", user.to_string()),
            ("User-Password", password.to_string()),
        ];
        if let Some(state) = state_hex {
            attrs.push(("State", state.to_string()));
        }
        radclient(self.server.addr, &self.env.client().secret, &attrs, true)
    }
}
