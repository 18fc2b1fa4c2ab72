//! The configuration file: typed, `deny_unknown_fields`, secure defaults.
//!
//! Loaded from a TOML file and overridable by environment variables named
//! `PORTCULLIS__SECTION__KEY` (for example `PORTCULLIS__STORE__URL`).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// Where the config file is looked for when neither `--config` nor `PORTCULLIS_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/portcullis/portcullis.toml";

/// A config file that cannot be used; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("config file {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub secrets: SecretsConfig,
    #[serde(default)]
    pub radius: RadiusConfig,
    #[serde(default)]
    pub passwords: PasswordConfig,
    #[serde(default)]
    pub totp: TotpConfig,
    #[serde(default)]
    pub lockout: LockoutConfig,
    #[serde(default)]
    pub transactions: TransactionConfig,
    /// Name shown in authenticator apps (the `issuer` of the otpauth URI).
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// `[http]`: the HTTP listener (/metrics). Absent: no HTTP listener.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// `[tenants.NAME]`: per-tenant settings (reply attributes of an Access-Accept).
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
}

/// `[http]`: the HTTP listener. It serves `/metrics` (Prometheus text format).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port, e.g. `127.0.0.1:8080` (port 0: any free port, printed at start).
    pub listen: SocketAddr,
}

/// `[tenants.NAME]`: RADIUS reply attributes of the tenant and of its groups.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Sent in every Access-Accept of the tenant: `NAME=value` or `VENDOR_ID:TYPE=value`
    /// (see `reply.rs`).
    #[serde(default)]
    pub reply: Vec<String>,
    /// `[[tenants.NAME.groups]]`: extra attributes for members of a group.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
}

/// `[[tenants.NAME.groups]]`: reply attributes for the members of one group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    #[serde(default)]
    pub reply: Vec<String>,
}

fn default_issuer() -> String {
    "Portcullis".into()
}

/// `[store]`: where all state lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite:///absolute/path.db` (the embedded default).
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite:///var/lib/portcullis/portcullis.db".into(),
        }
    }
}

/// `[secrets]`: the master key that encrypts TOTP seeds at rest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// Created with mode 0600 by the first command that needs it.
    pub key_file: PathBuf,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            key_file: PathBuf::from("/var/lib/portcullis/master.key"),
        }
    }
}

/// `[radius]`: listeners and clients (NAS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadiusConfig {
    #[serde(default = "default_radius_listen")]
    pub listen: Vec<SocketAddr>,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// UDP listeners for Accounting-Requests (RFC 2866, usually port 1813), acknowledged and
    /// not recorded; for NAS that need an accounting server. Empty (default): none.
    #[serde(default)]
    pub accounting_listen: Vec<SocketAddr>,
    /// How long a reply is kept to answer retransmissions (RFC 5080).
    #[serde(default = "default_response_cache", with = "humantime_serde")]
    pub response_cache_ttl: Duration,
    /// Requests processed at once; past it new logins are shed (started ones first).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// SO_RCVBUF asked of the kernel for each listener, in bytes.
    #[serde(default = "default_recv_buffer")]
    pub socket_receive_buffer: usize,
}

fn default_radius_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 1812))]
}
fn default_response_cache() -> Duration {
    Duration::from_secs(30)
}
fn default_max_in_flight() -> usize {
    1024
}
fn default_recv_buffer() -> usize {
    4 * 1024 * 1024
}

impl Default for RadiusConfig {
    fn default() -> Self {
        Self {
            listen: default_radius_listen(),
            clients: Vec::new(),
            accounting_listen: Vec::new(),
            response_cache_ttl: default_response_cache(),
            max_in_flight: default_max_in_flight(),
            socket_receive_buffer: default_recv_buffer(),
        }
    }
}

/// How a client's users present their second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoginMode {
    /// Password first, then an Access-Challenge asks for the code.
    Challenge,
    /// Password and code in one field: `hunter2123456` or `hunter2,123456`.
    Append,
    /// Password, then the default out-of-band factor is started and the request held.
    /// Until push approval exists it behaves as `challenge`.
    Auto,
    /// The first factor was checked elsewhere (PAM stack, another RADIUS server):
    /// User-Password is the code alone.
    OtpOnly,
}

impl LoginMode {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginMode::Challenge => "challenge",
            LoginMode::Append => "append",
            LoginMode::Auto => "auto",
            LoginMode::OtpOnly => "otp-only",
        }
    }
}

/// `[[radius.clients]]`: one NAS (or a network of them).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    /// CIDR; the longest matching prefix wins.
    pub address: IpNet,
    pub secret: String,
    pub tenant: String,
    #[serde(default = "default_mode")]
    pub mode: LoginMode,
    #[serde(default = "yes")]
    pub require_message_authenticator: bool,
    #[serde(default = "yes")]
    pub limit_proxy_state: bool,
    /// Separates password and code in `append` mode (`hunter2,123456`).
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// The Reply-Message of the code challenge.
    #[serde(default = "default_prompt")]
    pub prompt: String,
    /// Users without a confirmed second factor: `deny` (default) or `allow` (audited).
    #[serde(default)]
    pub unenrolled: Unenrolled,
    /// `auto` mode: how long a request may be held waiting for an out-of-band approval
    /// (keep it below the NAS's own timeout). Nothing is held until push exists.
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// Reply attributes of every Access-Accept to this client (`NAME=value`,
    /// `VENDOR_ID:TYPE=value`), after the tenant's and before the groups'.
    #[serde(default)]
    pub reply: Vec<String>,
}

fn default_max_wait() -> Duration {
    Duration::from_secs(25)
}

/// Longest `max_wait` accepted: NAS give up long before.
pub const MAX_WAIT_LIMIT: Duration = Duration::from_secs(120);

/// What happens to a user who passes the first factor but has no confirmed second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Unenrolled {
    /// Reject (fail closed).
    #[default]
    Deny,
    /// Accept on the first factor alone; every such login is audited as such.
    Allow,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("secret", &"<redacted>")
            .field("tenant", &self.tenant)
            .field("mode", &self.mode)
            .field(
                "require_message_authenticator",
                &self.require_message_authenticator,
            )
            .field("limit_proxy_state", &self.limit_proxy_state)
            .field("max_wait", &self.max_wait)
            .field("reply", &self.reply)
            .finish_non_exhaustive()
    }
}

fn default_mode() -> LoginMode {
    LoginMode::Challenge
}
fn yes() -> bool {
    true
}
fn default_delimiter() -> String {
    ",".into()
}
fn default_prompt() -> String {
    "Enter the verification code from your authenticator app".into()
}

/// `[passwords]`: argon2id cost for new hashes.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordConfig {
    #[serde(default = "default_m")]
    pub argon2_memory_kib: u32,
    #[serde(default = "default_t")]
    pub argon2_iterations: u32,
    #[serde(default = "default_p")]
    pub argon2_parallelism: u32,
}

fn default_m() -> u32 {
    19 * 1024
}
fn default_t() -> u32 {
    2
}
fn default_p() -> u32 {
    1
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            argon2_memory_kib: default_m(),
            argon2_iterations: default_t(),
            argon2_parallelism: default_p(),
        }
    }
}

/// `[totp]`: verification window.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotpConfig {
    /// Steps accepted on either side of the current one (clock drift).
    #[serde(default = "default_window")]
    pub window: u8,
}

fn default_window() -> u8 {
    1
}

impl Default for TotpConfig {
    fn default() -> Self {
        Self {
            window: default_window(),
        }
    }
}

/// `[lockout]`: second-factor failures per user.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutConfig {
    /// From this many failures on, each next attempt must wait a growing delay.
    #[serde(default = "default_throttle_after")]
    pub throttle_after: u32,
    /// The first delay; it doubles with every further failure.
    #[serde(default = "default_base_delay", with = "humantime_serde")]
    pub base_delay: Duration,
    /// At this many failures the user is locked.
    #[serde(default = "default_lock_after")]
    pub lock_after: u32,
    /// How long a lock lasts unless an admin runs `portcullis user unlock` first.
    #[serde(default = "default_lock_duration", with = "humantime_serde")]
    pub duration: Duration,
}

fn default_throttle_after() -> u32 {
    5
}
fn default_base_delay() -> Duration {
    Duration::from_secs(2)
}
fn default_lock_after() -> u32 {
    10
}
fn default_lock_duration() -> Duration {
    Duration::from_secs(30 * 60)
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            throttle_after: default_throttle_after(),
            base_delay: default_base_delay(),
            lock_after: default_lock_after(),
            duration: default_lock_duration(),
        }
    }
}

/// `[transactions]`: logins in progress.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionConfig {
    /// How long a started login may wait for its next answer.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Wrong answers allowed within one login before it is rejected.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_ttl() -> Duration {
    Duration::from_secs(120)
}
fn default_max_attempts() -> u32 {
    3
}

impl Default for TransactionConfig {
    fn default() -> Self {
        Self {
            ttl: default_ttl(),
            max_attempts: default_max_attempts(),
        }
    }
}

impl Config {
    /// Load `path`, apply `PORTCULLIS__SECTION__KEY` overrides from the environment, validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError::Load {
            path: path.to_path_buf(),
            message,
        };
        if !path.exists() {
            return Err(err(
                "not found; pass --config PATH or set PORTCULLIS_CONFIG (an example is conf/portcullis.toml)".into(),
            ));
        }
        let built = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("PORTCULLIS")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("radius.listen")
                    .with_list_parse_key("radius.accounting_listen"),
            )
            .build()
            .map_err(|e| err(e.to_string()))?;
        let cfg: Config = built.try_deserialize().map_err(|e| err(e.to_string()))?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Parse TOML text without the environment (for tests and `config check` of a snippet).
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::Load {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let cfg: Config = built.try_deserialize().map_err(|e| ConfigError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Checks that serde cannot express.
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        if !self.store.url.starts_with("sqlite://") {
            return Err(bad(
                "store.url".into(),
                format!(
                    "'{}' is not supported; use sqlite:///absolute/path.db",
                    self.store.url
                ),
            ));
        }
        let mut names = HashSet::new();
        for (i, c) in self.radius.clients.iter().enumerate() {
            let key = |k: &str| format!("radius.clients[{i}].{k}");
            if c.name.trim().is_empty() {
                return Err(bad(key("name"), "must not be empty".into()));
            }
            if !names.insert(c.name.as_str()) {
                return Err(bad(
                    key("name"),
                    format!(
                        "'{}' is used by another client; names must be unique",
                        c.name
                    ),
                ));
            }
            if c.secret.is_empty() {
                return Err(bad(key("secret"), "must not be empty".into()));
            }
            if c.tenant.trim().is_empty() {
                return Err(bad(key("tenant"), "must not be empty".into()));
            }
            if c.delimiter.is_empty() {
                return Err(bad(key("delimiter"), "must not be empty".into()));
            }
            if c.prompt.len() > 253 {
                return Err(bad(
                    key("prompt"),
                    "is longer than the 253 bytes one Reply-Message can carry".into(),
                ));
            }
            if c.max_wait.is_zero() || c.max_wait > MAX_WAIT_LIMIT {
                return Err(bad(
                    key("max_wait"),
                    format!(
                        "{} is outside 1s..=120s; keep it below the NAS's timeout (default 25s)",
                        humantime::format_duration(c.max_wait)
                    ),
                ));
            }
            crate::reply::parse_list(&key("reply"), &c.reply).map_err(|(k, m)| bad(k, m))?;
        }
        for (name, t) in &self.tenants {
            crate::reply::parse_list(&format!("tenants.{name}.reply"), &t.reply)
                .map_err(|(k, m)| bad(k, m))?;
            for (i, g) in t.groups.iter().enumerate() {
                let key = format!("tenants.{name}.groups[{i}]");
                if g.name.trim().is_empty() {
                    return Err(bad(format!("{key}.name"), "must not be empty".into()));
                }
                crate::reply::parse_list(&format!("{key}.reply"), &g.reply)
                    .map_err(|(k, m)| bad(k, m))?;
            }
        }
        if self.radius.max_in_flight == 0 {
            return Err(bad(
                "radius.max_in_flight".into(),
                "must be at least 1".into(),
            ));
        }
        if self.totp.window > 10 {
            return Err(bad(
                "totp.window".into(),
                "more than 10 steps each side would accept codes minutes old".into(),
            ));
        }
        if self.lockout.lock_after < self.lockout.throttle_after {
            return Err(bad(
                "lockout.lock_after".into(),
                "must not be smaller than lockout.throttle_after".into(),
            ));
        }
        if self.transactions.max_attempts == 0 {
            return Err(bad(
                "transactions.max_attempts".into(),
                "must be at least 1".into(),
            ));
        }
        argon2::Params::new(
            self.passwords.argon2_memory_kib,
            self.passwords.argon2_iterations,
            self.passwords.argon2_parallelism,
            None,
        )
        .map_err(|e| bad("passwords".into(), format!("argon2 cost: {e}")))?;
        Ok(())
    }

    /// The SQLite file named by `store.url`.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.store.url.strip_prefix("sqlite://").map(PathBuf::from)
    }

    /// The client whose CIDR is the longest prefix containing `ip`.
    pub fn client_for(&self, ip: std::net::IpAddr) -> Option<&ClientConfig> {
        self.radius
            .clients
            .iter()
            .filter(|c| c.address.contains(&ip))
            .max_by_key(|c| c.address.prefix_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("test.toml"))
    }

    const CLIENT: &str = r#"
[[radius.clients]]
name = "vpn"
address = "10.0.0.0/8"
secret = "s"
tenant = "acme"
"#;

    #[test]
    fn empty_file_gives_secure_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.radius.listen, vec!["127.0.0.1:1812".parse().unwrap()]);
        assert_eq!(c.transactions.ttl, Duration::from_secs(120));
        assert_eq!(c.totp.window, 1);
    }

    #[test]
    fn client_defaults_require_message_authenticator() {
        let c = parse(CLIENT).unwrap();
        let client = &c.radius.clients[0];
        assert!(client.require_message_authenticator);
        assert!(client.limit_proxy_state);
        assert_eq!(client.mode, LoginMode::Challenge);
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = parse("[radius]\nlisten_on = []\n").unwrap_err().to_string();
        assert!(e.contains("listen_on"), "{e}");
        let e = parse("[store]\nurl = \"sqlite:///x\"\ncolour = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn bad_cidr_is_an_error() {
        let e = parse(&CLIENT.replace("10.0.0.0/8", "10.0.0/8"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.0.0/8") || e.contains("address"), "{e}");
    }

    #[test]
    fn bad_mode_is_an_error() {
        let e = parse(&format!("{CLIENT}mode = \"sometimes\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sometimes"), "{e}");
    }

    #[test]
    fn duplicate_client_names_are_refused() {
        let e = parse(&format!("{CLIENT}{CLIENT}")).unwrap_err().to_string();
        assert!(e.contains("radius.clients[1].name"), "{e}");
    }

    #[test]
    fn unsupported_store_url_is_refused() {
        let e = parse("[store]\nurl = \"mysql://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.url"), "{e}");
    }

    #[test]
    fn max_wait_defaults_to_25s_and_is_bounded() {
        let c = parse(CLIENT).unwrap();
        assert_eq!(c.radius.clients[0].max_wait, Duration::from_secs(25));
        let e = parse(&format!("{CLIENT}max_wait = \"10m\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("radius.clients[0].max_wait"), "{e}");
        let e = parse(&format!("{CLIENT}max_wait = \"0s\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_wait"), "{e}");
    }

    #[test]
    fn http_listener_is_optional() {
        assert!(parse("").unwrap().http.is_none());
        let c = parse("[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
        assert_eq!(c.http.unwrap().listen.ip().to_string(), "127.0.0.1");
    }

    #[test]
    fn bad_reply_attribute_names_its_key() {
        let e = parse("[tenants.acme]\nreply = [\"Class=a\", \"Colour=red\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants.acme.reply[1]"), "{e}");
        assert!(e.contains("Colour"), "{e}");
        let e = parse("[[tenants.acme.groups]]\nname = \"g\"\nreply = [\"9:x=1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants.acme.groups[0].reply[0]"), "{e}");
        let e = parse(&format!("{CLIENT}reply = [\"Class\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("radius.clients[0].reply[0]"), "{e}");
    }

    #[test]
    fn longest_prefix_wins() {
        let text = format!(
            "{CLIENT}\n[[radius.clients]]\nname = \"one\"\naddress = \"10.1.2.3/32\"\nsecret = \"t\"\ntenant = \"acme\"\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.client_for("10.1.2.3".parse().unwrap()).unwrap().name,
            "one"
        );
        assert_eq!(
            c.client_for("10.9.9.9".parse().unwrap()).unwrap().name,
            "vpn"
        );
        assert!(c.client_for("192.0.2.1".parse().unwrap()).is_none());
    }
}
