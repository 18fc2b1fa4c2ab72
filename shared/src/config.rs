//! The configuration file: typed, `deny_unknown_fields`, secure defaults.
//!
//! Loaded from a TOML file and overridable by environment variables named
//! `PORTCULLIS__SECTION__KEY` (for example `PORTCULLIS__STORE__URL`; see `config/env.rs`).
//! Relative paths are relative to the config file's directory (`config/paths.rs`).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

mod env;
mod first_factor;
mod paths;
mod push;
pub use first_factor::{
    pass_through_type, FirstFactorKind, LdapConfig, UpstreamRadiusConfig, UpstreamServerConfig,
    PASS_THROUGH_ATTRIBUTES,
};
pub use paths::{PathKind, PathSetting};
pub use push::PushConfig;

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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Per-tenant settings: `[tenants.NAME]`.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// `[pam]`: the PAM step-protocol socket. Absent = no PAM listener.
    #[serde(default)]
    pub pam: Option<PamConfig>,
    /// Name shown in authenticator apps (the `issuer` of the otpauth URI).
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// `[http]`: the HTTP listener (/metrics). Absent: no HTTP listener.
    #[serde(default)]
    pub http: Option<HttpConfig>,
}

/// `[http]`: the HTTP listener. It serves `/metrics` (Prometheus text format).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port, e.g. `127.0.0.1:8080` (port 0: any free port, printed at start).
    pub listen: SocketAddr,
    /// How phones reach this listener (`https://mfa.example.com`, behind a TLS proxy):
    /// the base of push approval links. Required when a tenant has `[push]`.
    pub public_url: Option<String>,
    /// PEM certificate chain: with `tls_key`, the listener speaks HTTPS (needed for
    /// `POST /v1/pam/step` from remote hosts). Both or neither.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (mode 0600 or stricter).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Reverse proxies in front of the listener, as CIDRs (`["127.0.0.1/32"]`): a request
    /// from one of them comes from the address its `X-Forwarded-For` names (the nearest
    /// one that is not itself a trusted proxy). List only a proxy that sets or appends
    /// that header itself (nginx, Apache, HAProxy in HTTP mode), never one that passes the
    /// browser's own through (stunnel, HAProxy in TCP mode). Others' header is ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
}

/// What `default_factor` may name.
pub const DEFAULT_FACTORS: [&str; 5] = ["push", "sms", "email", "totp", "hotp"];

/// `[[tenants.NAME.groups]]`: reply attributes for the members of one group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite:///absolute/path.db` (the embedded default; `sqlite://relative/path.db` is
    /// relative to the config file's directory) or, for several nodes,
    /// `postgres://user:password@host:port/database` (`postgresql://` too).
    pub url: String,
    /// PostgreSQL: connections this node keeps open at most.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// PostgreSQL: bound on connecting (and on waiting for a free pooled connection).
    #[serde(default = "default_store_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// PostgreSQL: bound on one statement.
    #[serde(default = "default_store_timeout", with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// How often a request held for a push decision reads the store. On PostgreSQL a
    /// decision made on any node arrives at once (LISTEN/NOTIFY) and this is the fallback
    /// while that connection is down; with SQLite (one node) the deciding request wakes it.
    #[serde(default = "default_push_poll_interval", with = "humantime_serde")]
    pub push_poll_interval: Duration,
}

fn default_push_poll_interval() -> Duration {
    Duration::from_millis(500)
}

fn default_max_connections() -> u32 {
    8
}

fn default_store_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite:///var/lib/portcullis/portcullis.db".into(),
            max_connections: default_max_connections(),
            connect_timeout: default_store_timeout(),
            statement_timeout: default_store_timeout(),
            push_poll_interval: default_push_poll_interval(),
        }
    }
}

impl StoreConfig {
    /// The URL as it may be shown: the password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        crate::store::redact_url(&self.url)
    }

    /// PostgreSQL settings when the URL names PostgreSQL.
    pub fn postgres(&self) -> Option<crate::store::PgSettings> {
        crate::store::is_postgres_url(&self.url).then(|| crate::store::PgSettings {
            url: self.url.clone(),
            max_connections: self.max_connections,
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
        })
    }
}

/// `[secrets]`: the master key that encrypts TOTP seeds at rest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// 1 to [`MAX_IN_FLIGHT`].
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
/// The largest `radius.max_in_flight`: far beyond what one node can work on at once, and
/// well inside what the drain and tokio's semaphore can count.
pub const MAX_IN_FLIGHT: usize = 1_000_000;
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
    /// Password, then the default out-of-band factor (push) is started and the request
    /// held up to the client's `max_wait`; users without it are challenged.
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
#[derive(Clone, PartialEq, Deserialize)]
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
    /// The heading of the factor menu (the numbered choices follow it); default
    /// "Choose a second factor (or enter a code):".
    #[serde(default)]
    pub menu_prompt: Option<String>,
    /// Users without a confirmed second factor: `deny` (default), `allow` (audited) or
    /// `enroll` (an enrolment link in the prompt; needs `[http] public_url`).
    #[serde(default)]
    pub unenrolled: Unenrolled,
    /// How long a request may be held waiting for a push approval (`auto`, `append` with
    /// `password,push`, and the answer to a push challenge); keep it below the NAS's own
    /// timeout.
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// How many of this client's requests may be held waiting for a push at once (each
    /// holds an in-flight slot up to `max_wait`): one busy NAS must not take every slot. A
    /// request past it is not held: its push wait is answered with a challenge.
    #[serde(default = "default_max_held")]
    pub max_held: usize,
    /// Reply attributes of every Access-Accept to this client (`NAME=value`,
    /// `VENDOR_ID:TYPE=value`), after the tenant's and before the groups'.
    #[serde(default)]
    pub reply: Vec<String>,
    /// Overrides the tenant's first factor for this client (`local`, `ldap`, `radius`, `none`).
    #[serde(default)]
    pub first_factor: Option<FirstFactorKind>,
    /// Whether wrong passwords are limited per Calling-Station-Id (`[lockout]
    /// source_failures`). Set false for a NAS whose Calling-Station-Id does not tell its
    /// users apart (a constant, or the NAS's own public address): all its users would
    /// share one count. Without a Calling-Station-Id nothing is counted anyway.
    #[serde(default = "yes")]
    pub source_limit: bool,
}

fn default_max_wait() -> Duration {
    Duration::from_secs(25)
}

fn default_max_held() -> usize {
    256
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
    /// Prompt with a single-use enrolment link (`[http] public_url`), then confirm the new
    /// factor with the first code at the same prompt. Without `public_url`: as `deny`.
    Enroll,
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
            .field("max_held", &self.max_held)
            .field("reply", &self.reply)
            .field("first_factor", &self.first_factor)
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

/// The shared secrets of the example configs (conf/), which a NAS must never share.
const EXAMPLE_SECRETS: &[&str] = &[
    "change-me-to-a-long-random-secret",
    "trial-secret-change-me",
    "another-long-secret",
    "upstream-secret-change-me",
];

/// Whether `secret` is one of the shipped examples, or says to change it. A client with one
/// is refused unless it is on this host's loopback (the trial config's), where `config
/// check` and the start still warn of it.
pub fn is_placeholder_secret(secret: &str) -> bool {
    let secret = secret.trim().to_ascii_lowercase();
    secret.contains("change-me")
        || secret.contains("changeme")
        || EXAMPLE_SECRETS
            .iter()
            .any(|example| example.eq_ignore_ascii_case(&secret))
}

/// Whether every address of `net` is a loopback address (127.0.0.0/8, ::1).
fn is_loopback_net(net: &IpNet) -> bool {
    match net {
        IpNet::V4(n) => n.network().is_loopback() && n.prefix_len() >= 8,
        IpNet::V6(n) => n.network().is_loopback() && n.prefix_len() == 128,
    }
}

/// `[tenants.NAME]`: what one tenant sets for itself.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// RADIUS attributes sent in every Access-Accept of the tenant: `NAME=value` or
    /// `VENDOR_ID:TYPE=value` (see `reply.rs`).
    #[serde(default)]
    pub reply: Vec<String>,
    /// Attributes that tell the NAS which second factor was used: like `reply`, with
    /// `{factor}` replaced by the factor (`totp`, `push`, ...; `none` when none was needed),
    /// e.g. `["Class=mfa:{factor}"]` or a VSA `"9:1=portcullis-factor={factor}"`.
    #[serde(default)]
    pub factor_reply: Vec<String>,
    /// The second factors this tenant accepts (default: all). Rules can narrow it further.
    #[serde(default)]
    pub factors: Vec<String>,
    /// The factor started at once in `auto` mode and listed first in the menu (`push`,
    /// `sms`, `email`, `totp`, `hotp`); a rule's `default_factor` overrides it.
    #[serde(default)]
    pub default_factor: Option<String>,
    /// `[[tenants.NAME.groups]]`: extra reply attributes for members of a group.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// `[tenants.NAME.sms]`: the text-message provider of the SMS factor.
    #[serde(default)]
    pub sms: Option<SmsConfig>,
    /// `[tenants.NAME.email]`: the SMTP server of the e-mail factor.
    #[serde(default)]
    pub email: Option<EmailConfig>,
    /// `[tenants.NAME.duo]`: Duo owns the second factor of this tenant's users.
    #[serde(default)]
    pub duo: Option<DuoConfig>,
    /// `[tenants.NAME.push]`: push approval (ntfy or webhook); needs `[http] public_url`.
    #[serde(default)]
    pub push: Option<PushConfig>,
    /// `[[tenants.NAME.rules]]`: policy rules, in order; the first match wins; without a
    /// match a second factor is required.
    #[serde(default)]
    pub rules: Vec<crate::policy::Rule>,
    /// Who checks the password: `local` (default), `ldap`, `radius` or `none`
    /// (see `config/first_factor.rs`).
    #[serde(default)]
    pub first_factor: FirstFactorKind,
    /// `[tenants.NAME.ldap]`, needed when `first_factor = "ldap"`.
    pub ldap: Option<LdapConfig>,
    /// `[tenants.NAME.radius]`, needed when `first_factor = "radius"`.
    pub radius: Option<UpstreamRadiusConfig>,
    /// Whether this tenant's PAM hosts with `failmode=safe` may let a login in without a
    /// second factor when they cannot reach the daemon (`"safe"`), or never (`"secure"`,
    /// the default). The daemon tells the hosts with each answer; they report every such
    /// login afterwards, and it is audited.
    #[serde(default)]
    pub pam_fail_mode: FailMode,
}

fn validate_rules(tenant: &str, rules: &[crate::policy::Rule]) -> Result<(), (String, String)> {
    use crate::policy::{parse_hhmm, Action, FACTOR_NAMES};
    let mut names = HashSet::new();
    for (i, r) in rules.iter().enumerate() {
        let key = |k: &str| format!("tenants.{tenant}.rules[{i}].{k}");
        if r.name.trim().is_empty() {
            return Err((key("name"), "must not be empty".into()));
        }
        if !names.insert(r.name.as_str()) {
            return Err((key("name"), format!("'{}' is used by another rule; names must be unique (audit records name the rule)", r.name)));
        }
        for f in &r.factors {
            if !FACTOR_NAMES.contains(&f.as_str()) {
                return Err((
                    key("factors"),
                    format!("'{f}' is not a factor; use {}", FACTOR_NAMES.join(", ")),
                ));
            }
        }
        if r.remember.is_some() && r.action != Action::RequireMfa {
            return Err((
                key("remember"),
                "only require_mfa rules can remember a source".into(),
            ));
        }
        if r.remember
            .is_some_and(|d| d.is_zero() || d.as_secs() > 90 * 86_400)
        {
            return Err((key("remember"), "use a duration from 1s to 90d".into()));
        }
        if r.action == Action::StepUp && r.factors.is_empty() {
            return Err((
                key("factors"),
                "step_up needs the factors that count as stronger, e.g. [\"hotp\"]".into(),
            ));
        }
        if !r.factors.is_empty() && matches!(r.action, Action::Deny | Action::SkipMfa) {
            return Err((
                key("factors"),
                "only require_mfa and step_up take factors".into(),
            ));
        }
        if let Some(t) = &r.time {
            match (parse_hhmm(&t.from), parse_hhmm(&t.to)) {
                (Some(a), Some(b)) if a < b => {}
                _ => return Err((key("time"), format!("from '{}' and to '{}' must be HH:MM with from before to (split a window across midnight into two rules)", t.from, t.to))),
            }
            if t.utc_offset_minutes.abs() > 14 * 60 {
                return Err((
                    key("time.utc_offset_minutes"),
                    "must be within +-840".into(),
                ));
            }
        }
    }
    Ok(())
}

/// What happens when a second-factor service cannot be reached: Duo
/// (`[tenants.NAME.duo] fail_mode`), or the daemon itself for a PAM host
/// (`[tenants.NAME] pam_fail_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FailMode {
    /// Deny (default).
    #[default]
    Secure,
    /// Let the user in on the first factor: for Duo only on 5xx, transport errors and
    /// malformed replies (never 4xx or timeouts); for PAM hosts only with their
    /// `failmode=safe` and a failed connect to the daemon. Every such login is audited as
    /// FAIL-OPEN.
    Safe,
}

/// Which user field Duo knows the user by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DuoUsername {
    #[default]
    Username,
    Email,
}

/// `[tenants.NAME.duo]`: Duo Auth API v2.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuoConfig {
    /// Integration key.
    pub ikey: String,
    /// Secret key, or `skey_file`.
    pub skey: Option<String>,
    pub skey_file: Option<PathBuf>,
    /// `api-xxxxxxxx.duosecurity.com`
    pub api_host: String,
    #[serde(default)]
    pub fail_mode: FailMode,
    #[serde(default)]
    pub username: DuoUsername,
    /// Duo knows users that have this attribute (`portcullis user set-attr USER NAME
    /// VALUE`) by its value; the others by `username`.
    #[serde(default)]
    pub username_attribute: Option<String>,
    /// Per request (preauth, passcode).
    #[serde(default = "default_provider_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a push or phone call may wait for the user.
    #[serde(default = "default_push_timeout", with = "humantime_serde")]
    pub push_timeout: Duration,
    /// Extra CA certificate(s) to trust: one or more PEM `CERTIFICATE` blocks (a file
    /// with none is refused at start). Verification cannot be turned off.
    pub ca_file: Option<PathBuf>,
}

fn default_push_timeout() -> Duration {
    Duration::from_secs(60)
}

impl std::fmt::Debug for DuoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DuoConfig")
            .field("ikey", &self.ikey)
            .field("skey", &self.skey.as_ref().map(|_| "<redacted>"))
            .field("api_host", &self.api_host)
            .field("fail_mode", &self.fail_mode)
            .finish_non_exhaustive()
    }
}

impl DuoConfig {
    fn validate(&self, key: &str) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((format!("{key}.{k}"), m.to_string()));
        if self.ikey.trim().is_empty() {
            return bad("ikey", "must not be empty");
        }
        if self.skey.is_some() == self.skey_file.is_some() {
            return bad("skey", "give exactly one of skey or skey_file");
        }
        if self.api_host.trim().is_empty() || self.api_host.contains('/') {
            return bad(
                "api_host",
                "a host name like api-xxxxxxxx.duosecurity.com, without https://",
            );
        }
        if self.timeout.is_zero()
            || self.push_timeout < self.timeout
            || self.push_timeout > Duration::from_secs(120)
        {
            return bad(
                "push_timeout",
                "use timeout > 0 and timeout <= push_timeout <= 120s",
            );
        }
        Ok(())
    }
}

/// How the SMTP connection is encrypted; there is no plaintext mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
}

/// `[tenants.NAME.email]`
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    /// Default: 587 with STARTTLS, 465 with implicit TLS.
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A file holding the SMTP password.
    pub password_file: Option<PathBuf>,
    /// The sender, e.g. `Portcullis <mfa@example.com>`.
    pub from: String,
    #[serde(default = "default_email_subject")]
    pub subject: String,
    /// Extra CA certificate(s) to trust: one or more PEM `CERTIFICATE` blocks (a file
    /// with none is refused at start). Verification cannot be turned off.
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_provider_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The text, with `{code}` (required) and `{issuer}`.
    #[serde(default = "default_email_message")]
    pub message: String,
    #[serde(default = "default_code_ttl", with = "humantime_serde")]
    pub code_ttl: Duration,
    #[serde(default = "default_resend_after", with = "humantime_serde")]
    pub resend_after: Duration,
    #[serde(default = "default_max_per_hour")]
    pub max_per_hour: u32,
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

fn default_email_subject() -> String {
    "Your verification code".into()
}
fn default_email_message() -> String {
    "Your {issuer} verification code is {code}. It is valid for 5 minutes. If you did not try to log in, tell your administrator.".into()
}

impl EmailConfig {
    fn validate(&self, key: &str) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((format!("{key}.{k}"), m.to_string()));
        if self.host.trim().is_empty() {
            return bad("host", "must not be empty");
        }
        if !self.message.contains("{code}") {
            return bad("message", "must contain {code}");
        }
        if !self.from.contains('@') {
            return bad(
                "from",
                "must be an address like Portcullis <mfa@example.com>",
            );
        }
        if self.password.is_some() && self.password_file.is_some() {
            return bad("password", "give at most one of password or password_file");
        }
        if (self.password.is_some() || self.password_file.is_some()) != self.username.is_some() {
            return bad(
                "username",
                "username and password (or password_file) go together",
            );
        }
        if self.max_per_hour == 0 {
            return bad("max_per_hour", "must be at least 1");
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return bad("timeout", "use a timeout from 1ms to 60s");
        }
        Ok(())
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
        })
    }
}

/// Which SMS provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmsProvider {
    /// Twilio Programmable Messaging.
    Twilio,
    /// Any HTTP(S) gateway, described by URL, method, headers and a body template.
    Http,
}

/// How the generic gateway's body template escapes `{to}`, `{code}`, `{message}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BodyEncoding {
    /// JSON string escaping (the template is a JSON document).
    #[default]
    Json,
    /// application/x-www-form-urlencoded escaping.
    Form,
}

/// `[tenants.NAME.sms]`
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    pub provider: SmsProvider,
    // Twilio
    pub account_sid: Option<String>,
    pub auth_token: Option<String>,
    /// A file holding the auth token (keeps it out of the config file).
    pub auth_token_file: Option<PathBuf>,
    /// Sender number (E.164), or use `messaging_service_sid`.
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    #[serde(default = "default_twilio_base")]
    pub base_url: String,
    // Generic HTTP gateway
    pub url: Option<String>,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template with `{to}`, `{code}`, `{message}`.
    pub body: Option<String>,
    #[serde(default)]
    pub body_encoding: BodyEncoding,
    // Both
    /// Extra CA certificate(s) to trust, for a gateway with a private CA: one or more PEM
    /// `CERTIFICATE` blocks (a file with none is refused at start). Public CAs are always
    /// trusted; certificate verification cannot be turned off.
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_provider_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The text, with `{code}` (required) and `{issuer}`.
    #[serde(default = "default_sms_message")]
    pub message: String,
    #[serde(default = "default_code_ttl", with = "humantime_serde")]
    pub code_ttl: Duration,
    #[serde(default = "default_resend_after", with = "humantime_serde")]
    pub resend_after: Duration,
    #[serde(default = "default_max_per_hour")]
    pub max_per_hour: u32,
}

impl std::fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsConfig")
            .field("provider", &self.provider)
            .field("account_sid", &self.account_sid)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn default_twilio_base() -> String {
    "https://api.twilio.com".into()
}
fn default_method() -> String {
    "POST".into()
}
fn default_provider_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_sms_message() -> String {
    "Your {issuer} verification code is {code}".into()
}
fn default_code_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_resend_after() -> Duration {
    Duration::from_secs(30)
}
fn default_max_per_hour() -> u32 {
    5
}

impl SmsConfig {
    fn validate(&self, key: &str) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((format!("{key}.{k}"), m.to_string()));
        if !self.message.contains("{code}") {
            return bad("message", "must contain {code}");
        }
        if self.max_per_hour == 0 {
            return bad("max_per_hour", "must be at least 1");
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return bad("timeout", "use a timeout from 1ms to 60s");
        }
        match self.provider {
            SmsProvider::Twilio => {
                if self.account_sid.as_deref().unwrap_or("").is_empty() {
                    return bad("account_sid", "is required for provider = \"twilio\"");
                }
                if self.auth_token.is_some() == self.auth_token_file.is_some() {
                    return bad(
                        "auth_token",
                        "give exactly one of auth_token or auth_token_file",
                    );
                }
                if self.from.is_some() == self.messaging_service_sid.is_some() {
                    return bad("from", "give exactly one of from or messaging_service_sid");
                }
                if !self.base_url.starts_with("https://") {
                    return bad("base_url", "must be an https:// URL");
                }
            }
            SmsProvider::Http => {
                match &self.url {
                    Some(u) if u.starts_with("https://") => {}
                    Some(_) => return bad("url", "must be an https:// URL"),
                    None => return bad("url", "is required for provider = \"http\""),
                }
                if self.body.is_none() {
                    return bad("body", "is required for provider = \"http\" (a template with {to} and {code} or {message})");
                }
                if !["POST", "PUT", "GET"].contains(&self.method.to_ascii_uppercase().as_str()) {
                    return bad("method", "use POST, PUT or GET");
                }
            }
        }
        Ok(())
    }
}

/// `[pam]`: the Unix socket that `pam_portcullis.so` talks to. The section being present
/// turns the listener on; every key has a default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PamConfig {
    /// Path of the socket; a stale file there is replaced at start.
    #[serde(default = "default_pam_socket")]
    pub socket: PathBuf,
    /// Peer uids (SO_PEERCRED) allowed to ask; others get a `forbidden` error frame.
    #[serde(default = "default_allowed_uids")]
    pub allowed_uids: Vec<u32>,
    /// Permission bits of the socket file, in octal (`"0600"`: only root can connect).
    #[serde(default = "default_socket_mode")]
    pub socket_mode: String,
    /// The prompt for a code.
    #[serde(default = "default_pam_prompt")]
    pub prompt: String,
    /// Connections served at once; past it new ones get a `busy` error frame. 1 to
    /// [`MAX_PAM_CONNECTIONS`].
    #[serde(default = "default_pam_max_connections")]
    pub max_connections: usize,
}

fn default_pam_socket() -> PathBuf {
    PathBuf::from("/run/portcullis/pam.sock")
}
fn default_allowed_uids() -> Vec<u32> {
    vec![0]
}
fn default_socket_mode() -> String {
    "0600".into()
}
fn default_pam_prompt() -> String {
    "Verification code (app): ".into()
}
fn default_pam_max_connections() -> usize {
    256
}
/// The largest `pam.max_connections`: each one is a file descriptor and a task, and no
/// host runs that many PAM logins at once.
pub const MAX_PAM_CONNECTIONS: usize = 100_000;

impl Default for PamConfig {
    fn default() -> Self {
        Self {
            socket: default_pam_socket(),
            allowed_uids: default_allowed_uids(),
            socket_mode: default_socket_mode(),
            prompt: default_pam_prompt(),
            max_connections: default_pam_max_connections(),
        }
    }
}

impl PamConfig {
    /// The socket's permission bits (validated at load).
    pub fn mode(&self) -> u32 {
        parse_mode(&self.socket_mode).unwrap_or(0o600)
    }
}

fn parse_mode(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
}

/// `[passwords]`: argon2id cost for new hashes.
#[derive(Debug, Clone, PartialEq, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordConfig {
    #[serde(default = "default_m")]
    pub argon2_memory_kib: u32,
    #[serde(default = "default_t")]
    pub argon2_iterations: u32,
    #[serde(default = "default_p")]
    pub argon2_parallelism: u32,
    /// How many password hashes are computed at once, at most; further logins wait their
    /// turn in order. 0 (the default) means two per CPU. Hashing is pure CPU work: more at
    /// once only shares the cores out finer, so every login waits longer, and argon2id's
    /// memory (`argon2_memory_kib` each) grows with every extra one.
    #[serde(default)]
    pub max_parallel_hashes: u32,
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
            max_parallel_hashes: 0,
        }
    }
}

/// `[totp]`: verification window.
#[derive(Debug, Clone, PartialEq, Copy, Deserialize)]
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

/// `[lockout]`: second-factor failures per user, wrong passwords per source address.
#[derive(Debug, Clone, PartialEq, Copy, Deserialize)]
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
    /// Wrong passwords allowed from one source address (Calling-Station-Id, PAM rhost, web
    /// client) per `source_window`, in a burst or spread out; one more blocks the address
    /// for `source_window`. 0 turns the check off.
    #[serde(default = "default_source_failures")]
    pub source_failures: u32,
    #[serde(default = "default_source_window", with = "humantime_serde")]
    pub source_window: Duration,
}

fn default_source_failures() -> u32 {
    20
}
fn default_source_window() -> Duration {
    Duration::from_secs(10 * 60)
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
            source_failures: default_source_failures(),
            source_window: default_source_window(),
        }
    }
}

/// `[transactions]`: logins in progress.
#[derive(Debug, Clone, PartialEq, Copy, Deserialize)]
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

/// The text of an error of the `config` crate, fit for logs and the terminal. A TOML
/// syntax error, as the parser renders it, quotes the whole offending line, and that line
/// may hold a secret (`secret = "Tr0ub4dor\&3"` with an invalid escape): only the line,
/// the column, the key and the parser's message are kept. `text`: the file's content,
/// read only when needed, to name the key.
fn load_error(e: &config::ConfigError, text: impl FnOnce() -> Option<String>) -> String {
    match e {
        config::ConfigError::FileParse { cause, .. } => syntax_error(&cause.to_string(), text),
        other => other.to_string(),
    }
}

/// The text of an error of deserializing the config: `KEY: MESSAGE`, the key with the `.`
/// after an index that the `config` crate leaves out (`radius.clients[0]mode`), and for a
/// value that is none of an enum's the values it may take instead of the Rust type's name
/// (`radius.clients[0].mode: unknown value 'chalenge' (expected challenge, append, auto,
/// otp-only)`).
fn deserialize_error(e: &config::ConfigError) -> String {
    use config::ConfigError as E;
    // Values from `PORTCULLIS__...` variables come from "the environment"; the file is
    // named by the caller.
    let origin = |origin: &Option<String>| match origin.as_deref() {
        Some(o) if o.contains("environment") => format!(" (set in {o})"),
        _ => String::new(),
    };
    match e {
        E::At {
            error,
            origin: o,
            key: Some(key),
        } => {
            let message = match error.as_ref() {
                E::Message(m) => unknown_variant(m).unwrap_or_else(|| m.clone()),
                other => other.to_string(),
            };
            format!("{}: {message}{}", dotted_key(key), origin(o))
        }
        E::Type {
            origin: o,
            unexpected,
            expected,
            key: Some(key),
        } => format!(
            "{}: invalid type: {unexpected}, expected {expected}{}",
            dotted_key(key),
            origin(o)
        ),
        E::Message(m) => unknown_variant(m).unwrap_or_else(|| m.clone()),
        other => other.to_string(),
    }
}

/// A key as the `config` crate writes it, with a `.` put back after every index that a
/// name follows: `tenants.acme.rules[1]action` -> `tenants.acme.rules[1].action`.
fn dotted_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut after_index = false;
    for c in key.chars() {
        if after_index && c != '[' && c != '.' {
            out.push('.');
        }
        after_index = c == ']';
        out.push(c);
    }
    out
}

/// `unknown value 'V' (expected a, b, c)` for the `config` crate's `enum T does not have
/// variant constructor V`, when `T` is an enum of the config.
fn unknown_variant(message: &str) -> Option<String> {
    let (name, value) = message
        .strip_prefix("enum ")?
        .split_once(" does not have variant constructor ")?;
    let values = match name {
        "LoginMode" => variant_names::<LoginMode>(),
        "Unenrolled" => variant_names::<Unenrolled>(),
        "FirstFactorKind" => variant_names::<FirstFactorKind>(),
        "FailMode" => variant_names::<FailMode>(),
        "DuoUsername" => variant_names::<DuoUsername>(),
        "SmtpTls" => variant_names::<SmtpTls>(),
        "SmsProvider" => variant_names::<SmsProvider>(),
        "BodyEncoding" => variant_names::<BodyEncoding>(),
        "Action" => variant_names::<crate::policy::Action>(),
        "Weekday" => variant_names::<crate::policy::Weekday>(),
        _ => &[],
    };
    Some(if values.is_empty() {
        format!("unknown value '{value}'")
    } else {
        format!("unknown value '{value}' (expected {})", values.join(", "))
    })
}

/// The names of the variants of the enum `T` as a config writes them (serde's, after
/// `rename_all`): asked from `T`'s `Deserialize`, so that they cannot go stale.
fn variant_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    /// A deserializer that only records what an enum says it has.
    struct Names(std::cell::Cell<&'static [&'static str]>);

    impl<'de> de::Deserializer<'de> for &Names {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not an enum"))
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            variants: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(variants);
            Err(de::Error::custom("only the names were asked for"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            struct identifier ignored_any
        }
    }

    let names = Names(std::cell::Cell::new(&[]));
    let _ = T::deserialize(&names);
    names.0.get()
}

/// A TOML parser's error text without its source snippet. The parser (`toml`) renders
/// ```text
/// TOML parse error at line 3, column 20
///   |
/// 3 | secret = "Tr0ub4dor\&3"
///   |                    ^^
/// invalid escape sequence, expected ...
/// ```
/// and only the position and the message are kept. Snippet lines (`  |`, `3 | ...`) are
/// dropped wherever they are, so that a change of the parser's layout cannot bring the
/// source line back.
fn syntax_error(rendered: &str, text: impl FnOnce() -> Option<String>) -> String {
    let is_snippet = |l: &str| {
        let l = l.trim_start();
        l.starts_with('|')
            || l.split_once(" |")
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut lines = rendered
        .lines()
        .filter(|l| !is_snippet(l) && !l.trim().is_empty());
    let position = rendered
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("TOML parse error at line "));
    if position.is_some() {
        lines.next();
    }
    let message: Vec<&str> = lines.map(str::trim).collect();
    let message = if message.is_empty() {
        "invalid TOML".to_string()
    } else {
        message.join("; ")
    };
    let Some(position) = position else {
        return format!("TOML syntax error: {message}");
    };
    let key = position
        .split(',')
        .next()
        .and_then(|n| n.trim().parse::<usize>().ok())
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| text().and_then(|t| t.lines().nth(i).and_then(key_of)))
        .map(|k| format!(" ({k})"))
        .unwrap_or_default();
    format!(
        "TOML syntax error at line {}{key}: {message} (the line is not shown: it may hold a \
         secret)",
        position.trim()
    )
}

/// What a TOML line sets, for an error message: `key `secret``, `table [tenants.acme]`.
/// Never the value. `None` for a line that is neither (a continued string or array).
fn key_of(line: &str) -> Option<String> {
    let line = line.trim();
    let keyish = |k: &str| {
        !k.is_empty()
            && k.len() <= 100
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-. ".contains(&b))
    };
    if let Some(table) = line.strip_prefix('[') {
        let name = table.trim_start_matches('[');
        let name = name.split(']').next()?.trim();
        return keyish(name).then(|| format!("table [{name}]"));
    }
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    keyish(k).then(|| format!("key `{k}`"))
}

/// One Reply-Message attribute carries at most 253 bytes; a longer text goes on in more
/// of them, and pam_radius_auth (and many NAS) show only the first.
pub const REPLY_MESSAGE_MAX: usize = 253;

/// What the Engine may put around a RADIUS client's `prompt` (prefix, suffix), as in
/// `engine/mod.rs` and `engine/external_mfa.rs`: the longest decides how long `prompt`
/// may be.
pub const PROMPT_DECORATIONS: [(&str, &str); 4] = [
    ("Wrong code, try again. ", ""),
    ("No code entered. ", ""),
    ("", " (or type sms or email to get a code sent)"),
    ("", " (Duo passcode)"),
];

/// The longest text around `prompt`: its bytes and the text itself.
fn longest_prompt_decoration() -> (usize, String) {
    PROMPT_DECORATIONS
        .iter()
        .map(|(pre, post)| (pre.len() + post.len(), format!("{pre}{post}")))
        .max_by_key(|(n, _)| *n)
        .unwrap_or_default()
}

/// The longest `prompt` whose every composed text fits one Reply-Message.
pub fn max_prompt_len() -> usize {
    REPLY_MESSAGE_MAX - longest_prompt_decoration().0
}

/// Bytes of an e-mail address's domain that `menu_prompt`'s limit leaves room for in the
/// menu (the e-mail choice shows the domain in full; a longer one spills over).
pub const MENU_EMAIL_DOMAIN_ROOM: usize = 40;

/// The factor menu as the RADIUS front end shows it (`Heading 1) ...  2) ...`: labels of
/// `engine/menu.rs`, joined as in `radius/server.rs`), with every choice at its widest:
/// all four methods, the HOTP-only label, the masked phone number of a valid E.164
/// number (`••••` and its last four digits), a four-byte first letter of the e-mail
/// address and a domain of [`MENU_EMAIL_DOMAIN_ROOM`] bytes.
pub fn worst_case_menu(heading: &str) -> String {
    let labels = [
        "code from your token".to_string(),
        "push to your phone".to_string(),
        format!(
            "text message to {}",
            crate::delivery::mask_address("+491511234567")
        ),
        format!(
            "e-mail to {}",
            crate::delivery::mask_address(&format!(
                "\u{10348}@{}",
                "d".repeat(MENU_EMAIL_DOMAIN_ROOM)
            ))
        ),
    ];
    let items: Vec<String> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{}) {l}", i + 1))
        .collect();
    format!("{heading} {}", items.join("  "))
}

/// The longest `menu_prompt` whose worst-case menu fits one Reply-Message.
pub fn max_menu_prompt_len() -> usize {
    REPLY_MESSAGE_MAX - worst_case_menu("").len()
}

/// The longest `[lockout] duration` and `base_delay`: 30 days.
const MAX_LOCK_SECS: u64 = 30 * 24 * 3600;

/// `d` in the largest unit that holds it whole, as a config writes it: `31d`, `90m`,
/// `500ms`.
fn short_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 {
        return if d.subsec_nanos().is_multiple_of(1_000_000) {
            format!("{}ms", d.as_millis())
        } else {
            humantime::format_duration(d).to_string()
        };
    }
    match secs {
        0 => "0s".into(),
        s if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        s if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Why `d` is no `[lockout]` length (1 s to 30 days), in terms of the value given:
/// `500ms is under 1s`, `31days is over 30d`; `None` when it is one.
fn outside_lock_range(d: Duration) -> Option<String> {
    let shown = short_duration(d);
    if d < Duration::from_secs(1) {
        Some(format!("{shown} is under 1s"))
    } else if d.as_secs() > MAX_LOCK_SECS {
        Some(format!("{shown} is over 30d"))
    } else {
        None
    }
}

impl Config {
    /// Load `path`, apply `PORTCULLIS__SECTION__KEY` overrides from the environment, make
    /// relative paths absolute against the directory of `path`, validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars_os())
    }

    /// [`Config::load`] with the environment variables `vars`.
    fn load_with_env(
        path: &Path,
        vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError::Load {
            path: path.to_path_buf(),
            message,
        };
        if !path.exists() {
            return Err(err(
                "not found; pass --config PATH or set PORTCULLIS_CONFIG (an example is conf/portcullis.toml)".into(),
            ));
        }
        let env = env::overrides(vars).map_err(err)?;
        let mut builder = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                // Values stay strings (no `try_parsing`): see `config/env.rs`.
                config::Environment::with_prefix("PORTCULLIS")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(env.strings)),
            );
        for (key, items) in env.lists {
            builder = builder
                .set_override(&key, items)
                .map_err(|e| err(format!("{key} from the environment: {e}")))?;
        }
        let built = builder
            .build()
            .map_err(|e| err(load_error(&e, || std::fs::read_to_string(path).ok())))?;
        Self::finish(built, path)
    }

    /// Parse TOML text without the environment (for tests and `config check` of a snippet);
    /// relative paths are taken from the directory of `path`.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::Load {
                path: path.to_path_buf(),
                message: load_error(&e, || Some(text.to_string())),
            })?;
        Self::finish(built, path)
    }

    /// Deserialize, resolve relative paths (once, here), validate.
    fn finish(built: config::Config, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = built.try_deserialize().map_err(|e| ConfigError::Load {
            path: path.to_path_buf(),
            message: deserialize_error(&e),
        })?;
        cfg.resolve_paths(path)
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
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
        if crate::store::is_postgres_url(&self.store.url) {
            if let Err(e) = crate::store::parse_postgres_url(&self.store.url) {
                return Err(bad(
                    "store.url".into(),
                    format!(
                        "'{}' is not a valid PostgreSQL URL: {e}",
                        self.store.redacted_url()
                    ),
                ));
            }
            if self.store.max_connections == 0 || self.store.max_connections > 1000 {
                return Err(bad(
                    "store.max_connections".into(),
                    "must be between 1 and 1000".into(),
                ));
            }
            for (key, d) in [
                ("store.connect_timeout", self.store.connect_timeout),
                ("store.statement_timeout", self.store.statement_timeout),
            ] {
                if d < Duration::from_millis(100) || d > Duration::from_secs(300) {
                    return Err(bad(key.into(), "must be between 100ms and 5m".into()));
                }
            }
        } else if !self.store.url.starts_with("sqlite://") {
            return Err(bad(
                "store.url".into(),
                format!(
                    "'{}' is not supported; use sqlite:///absolute/path.db for one node or \
                     postgres://user:password@host:port/database for several",
                    self.store.redacted_url()
                ),
            ));
        }
        let poll = self.store.push_poll_interval;
        if poll < Duration::from_millis(50) || poll > Duration::from_secs(60) {
            return Err(bad(
                "store.push_poll_interval".into(),
                "must be between 50ms and 60s".into(),
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
            // Everyone who read the shipped configs knows these: with them a NAS's users'
            // passwords can be read off the wire and Access-Accepts forged. Only the trial
            // config's client on this host's loopback may keep one.
            if is_placeholder_secret(&c.secret) && !is_loopback_net(&c.address) {
                return Err(bad(
                    key("secret"),
                    format!(
                        "client '{}' ({}) still has the placeholder secret of an example config; set a long random one here and on the NAS (e.g. openssl rand -base64 24)",
                        c.name, c.address
                    ),
                ));
            }
            if c.tenant.trim().is_empty() {
                return Err(bad(key("tenant"), "must not be empty".into()));
            }
            if c.delimiter.is_empty() {
                return Err(bad(key("delimiter"), "must not be empty".into()));
            }
            if c.prompt.len() > max_prompt_len() {
                let (extra, around) = longest_prompt_decoration();
                return Err(bad(
                    key("prompt"),
                    format!(
                        "is {} bytes; at most {} are allowed: the prompt is shown with up to \
                         {extra} more bytes (\"{}\") and the whole text must fit the \
                         {REPLY_MESSAGE_MAX} bytes of one Reply-Message (pam_radius_auth \
                         and many NAS show only the first one)",
                        c.prompt.len(),
                        max_prompt_len(),
                        around.trim()
                    ),
                ));
            }
            if let Some(m) = c
                .menu_prompt
                .as_ref()
                .filter(|m| m.len() > max_menu_prompt_len())
            {
                return Err(bad(
                    key("menu_prompt"),
                    format!(
                        "is {} bytes; at most {} are allowed: the menu's choices follow it \
                         (up to {} bytes with all four factors and an e-mail domain of \
                         {MENU_EMAIL_DOMAIN_ROOM} bytes) and the whole menu must fit the \
                         {REPLY_MESSAGE_MAX} bytes of one Reply-Message (pam_radius_auth \
                         and many NAS show only the first one)",
                        m.len(),
                        max_menu_prompt_len(),
                        worst_case_menu("").len()
                    ),
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
            if c.max_held == 0 || c.max_held > MAX_IN_FLIGHT {
                return Err(bad(
                    key("max_held"),
                    format!(
                        "{} is outside 1..={MAX_IN_FLIGHT} (default 256; at most \
                         radius.max_in_flight of them are held at once anyway)",
                        c.max_held
                    ),
                ));
            }
            crate::reply::parse_list(&key("reply"), &c.reply).map_err(|(k, m)| bad(k, m))?;
        }
        for (name, t) in &self.tenants {
            crate::reply::parse_list(&format!("tenants.{name}.reply"), &t.reply)
                .map_err(|(k, m)| bad(k, m))?;
            let sample: Vec<String> = t
                .factor_reply
                .iter()
                .map(|r| r.replace("{factor}", "totp"))
                .collect();
            crate::reply::parse_list(&format!("tenants.{name}.factor_reply"), &sample)
                .map_err(|(k, m)| bad(k, m))?;
            if let Some(f) = &t.default_factor {
                if !DEFAULT_FACTORS.contains(&f.as_str()) {
                    return Err(bad(
                        format!("tenants.{name}.default_factor"),
                        format!(
                            "'{f}' cannot be started; use {}",
                            DEFAULT_FACTORS.join(", ")
                        ),
                    ));
                }
            }
            for (i, r) in t.rules.iter().enumerate() {
                if let Some(f) = &r.default_factor {
                    if !DEFAULT_FACTORS.contains(&f.as_str()) {
                        return Err(bad(
                            format!("tenants.{name}.rules[{i}].default_factor"),
                            format!(
                                "'{f}' cannot be started; use {}",
                                DEFAULT_FACTORS.join(", ")
                            ),
                        ));
                    }
                }
            }
            for (i, f) in t.factors.iter().enumerate() {
                if !crate::policy::FACTOR_NAMES.contains(&f.as_str()) && f != "email" {
                    return Err(bad(
                        format!("tenants.{name}.factors[{i}]"),
                        format!(
                            "'{f}' is not a factor; use {}, email",
                            crate::policy::FACTOR_NAMES.join(", ")
                        ),
                    ));
                }
            }
            for (i, g) in t.groups.iter().enumerate() {
                let key = format!("tenants.{name}.groups[{i}]");
                if g.name.trim().is_empty() {
                    return Err(bad(format!("{key}.name"), "must not be empty".into()));
                }
                crate::reply::parse_list(&format!("{key}.reply"), &g.reply)
                    .map_err(|(k, m)| bad(k, m))?;
            }
        }
        for (name, t) in &self.tenants {
            validate_rules(name, &t.rules).map_err(|(key, message)| bad(key, message))?;
            if let Some(sms) = &t.sms {
                sms.validate(&format!("tenants.{name}.sms"))
                    .map_err(|(key, message)| bad(key, message))?;
            }
            if let Some(duo) = &t.duo {
                duo.validate(&format!("tenants.{name}.duo"))
                    .map_err(|(key, message)| bad(key, message))?;
                // Duo decides which of its methods a user passes (push, call, passcode, its
                // own bypass): a limit that names Portcullis factors would be met by any of
                // them, so it is refused rather than silently ignored.
                let limited = (!t.factors.is_empty())
                    .then(|| format!("tenants.{name}.factors"))
                    .or_else(|| {
                        t.rules
                            .iter()
                            .position(|r| !r.factors.is_empty())
                            .map(|i| format!("tenants.{name}.rules[{i}].factors"))
                    });
                if let Some(key) = limited {
                    return Err(bad(
                        key,
                        format!(
                            "cannot be combined with [tenants.{name}.duo]: Duo owns this tenant's second factor and any Duo method would meet the limit; remove it (and step_up rules), or move these users to a tenant without [duo]"
                        ),
                    ));
                }
            }
            if let Some(email) = &t.email {
                email
                    .validate(&format!("tenants.{name}.email"))
                    .map_err(|(key, message)| bad(key, message))?;
            }
            if let Some(push) = &t.push {
                push.validate(&format!("tenants.{name}.push"))
                    .map_err(|(key, message)| bad(key, message))?;
                if self
                    .http
                    .as_ref()
                    .and_then(|h| h.public_url.as_ref())
                    .is_none()
                {
                    return Err(bad(
                        format!("tenants.{name}.push"),
                        "push approval needs [http] listen and public_url (the address phones open to approve)".into(),
                    ));
                }
            }
        }
        if let Some(u) = self.http.as_ref().and_then(|h| h.public_url.as_ref()) {
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains(['?', '#', ' '])) {
                return Err(bad(
                    "http.public_url".into(),
                    format!("'{u}' is not a base URL such as https://mfa.example.com"),
                ));
            }
        }
        if let Some(h) = &self.http {
            match (&h.tls_cert, &h.tls_key) {
                (Some(_), None) => {
                    return Err(bad(
                        "http.tls_key".into(),
                        "is missing: tls_cert and tls_key go together (add the key's path, or remove tls_cert for plain HTTP)".into(),
                    ))
                }
                (None, Some(_)) => {
                    return Err(bad(
                        "http.tls_cert".into(),
                        "is missing: tls_cert and tls_key go together (add the certificate's path, or remove tls_key for plain HTTP)".into(),
                    ))
                }
                _ => {}
            }
        }
        let ttl = self.radius.response_cache_ttl;
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(300) {
            return Err(bad(
                "radius.response_cache_ttl".into(),
                format!(
                    "{} is outside 1s..=5m: a NAS's retransmission must find the reply \
                     (RFC 5080 suggests 5-30 s; default 30s)",
                    humantime::format_duration(ttl)
                ),
            ));
        }
        let n = self.radius.max_in_flight;
        if !(1..=MAX_IN_FLIGHT).contains(&n) {
            return Err(bad(
                "radius.max_in_flight".into(),
                format!(
                    "{n} is outside 1..={MAX_IN_FLIGHT}: requests processed at once (default 1024)"
                ),
            ));
        }
        if self.totp.window > crate::totp::MAX_WINDOW {
            return Err(bad(
                "totp.window".into(),
                "more than 10 steps each side would accept codes minutes old".into(),
            ));
        }
        // Durations are counted in whole seconds: under one second is zero, and a lock of
        // zero seconds is cleared (with its failures) by the next login.
        let duration = self.lockout.duration;
        if let Some(why) = outside_lock_range(duration) {
            let why = if duration.is_zero() {
                "0 would unlock at once and count no failures (for a lock that lasts until an admin lifts it, use a long duration and portcullis user unlock)".to_string()
            } else if duration < Duration::from_secs(1) {
                format!("{why} (a lock is counted in whole seconds; under one is none)")
            } else {
                format!("{why} (for a lock that lasts until an admin lifts it, use a long duration and portcullis user unlock)")
            };
            return Err(bad(
                "lockout.duration".into(),
                format!("must be between 1s and 30d: {why}"),
            ));
        }
        let base = self.lockout.base_delay;
        if let Some(why) = outside_lock_range(base).filter(|_| !base.is_zero()) {
            return Err(bad(
                "lockout.base_delay".into(),
                format!("must be 0 (no delays before the lock) or between 1s and 30d: {why}"),
            ));
        }
        if self.lockout.lock_after < self.lockout.throttle_after {
            return Err(bad(
                "lockout.lock_after".into(),
                "must not be smaller than lockout.throttle_after".into(),
            ));
        }
        if self.lockout.source_failures > 0
            && !(1..=86_400).contains(&self.lockout.source_window.as_secs())
        {
            return Err(bad(
                "lockout.source_window".into(),
                "must be between 1s and 24h (or set lockout.source_failures = 0 to turn the check off)"
                    .into(),
            ));
        }
        if self.transactions.max_attempts == 0 {
            return Err(bad(
                "transactions.max_attempts".into(),
                "must be at least 1".into(),
            ));
        }
        if let Some(pam) = &self.pam {
            // sun_path of sockaddr_un: 108 bytes with the NUL. A relative socket path is
            // resolved against the config's directory, which can make it long.
            let len = pam.socket.as_os_str().len();
            if len > 107 {
                return Err(bad(
                    "pam.socket".into(),
                    format!(
                        "'{}' is {len} bytes; a Unix socket path may have at most 107 \
                         (sun_path): use a shorter path",
                        pam.socket.display()
                    ),
                ));
            }
            if parse_mode(&pam.socket_mode).is_none() {
                return Err(bad(
                    "pam.socket_mode".into(),
                    format!(
                        "'{}' is not an octal mode such as \"0600\"",
                        pam.socket_mode
                    ),
                ));
            }
            let n = pam.max_connections;
            if !(1..=MAX_PAM_CONNECTIONS).contains(&n) {
                return Err(bad(
                    "pam.max_connections".into(),
                    format!(
                        "{n} is outside 1..={MAX_PAM_CONNECTIONS}: connections served at once (default 256)"
                    ),
                ));
            }
        }
        argon2::Params::new(
            self.passwords.argon2_memory_kib,
            self.passwords.argon2_iterations,
            self.passwords.argon2_parallelism,
            None,
        )
        .map_err(|e| bad("passwords".into(), format!("argon2 cost: {e}")))?;
        first_factor::validate_tenants(&self.tenants, &self.radius.clients, path)?;
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
    fn a_placeholder_secret_is_refused_off_the_loopback() {
        let with = |address: &str, secret: &str| {
            parse(
                &CLIENT
                    .replace("10.0.0.0/8", address)
                    .replace("secret = \"s\"", &format!("secret = \"{secret}\"")),
            )
        };
        for (address, secret) in [
            ("192.0.2.10/32", "change-me-to-a-long-random-secret"),
            ("10.0.0.0/8", "trial-secret-change-me"),
            ("0.0.0.0/0", "Another-CHANGE-ME"),
            ("127.0.0.0/7", "trial-secret-change-me"),
            ("::/0", "upstream-secret-change-me"),
            // The examples in another case, and the other spelling.
            ("192.0.2.10/32", "Another-Long-Secret"),
            ("192.0.2.10/32", "ChangeMe-later"),
        ] {
            let e = with(address, secret).unwrap_err().to_string();
            assert!(
                e.contains("radius.clients[0].secret") && e.contains("placeholder"),
                "{address}: {e}"
            );
            assert!(!e.contains(secret), "the secret is not shown: {e}");
        }
        // The trial config's client on this host's loopback keeps working (with warnings).
        for address in ["127.0.0.1/32", "127.0.0.0/8", "::1/128"] {
            with(address, "trial-secret-change-me").unwrap();
        }
        with("192.0.2.10/32", "a-long-random-secret-0123456789").unwrap();
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
    fn postgres_store_urls_are_accepted_and_checked() {
        for scheme in ["postgres", "postgresql"] {
            let c = parse(&format!(
                "[store]\nurl = \"{scheme}://app:s3cr3t@db:5432/portcullis?sslmode=disable\"\nmax_connections = 16\nstatement_timeout = \"2s\"\n"
            ))
            .unwrap();
            let pg = c.store.postgres().expect("postgres settings");
            assert_eq!(pg.max_connections, 16);
            assert_eq!(pg.statement_timeout, Duration::from_secs(2));
            assert_eq!(pg.connect_timeout, Duration::from_secs(5));
            assert!(!c.store.redacted_url().contains("s3cr3t"));
            assert!(!format!("{pg:?}").contains("s3cr3t"));
            assert!(c.sqlite_path().is_none());
        }
        let e = parse("[store]\nurl = \"postgres://app:s3cr3t@db/p\"\nmax_connections = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.max_connections"), "{e}");
        let e = parse("[store]\nurl = \"postgres://app:s3cr3t@db/p?sslmode=sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.url") && !e.contains("s3cr3t"), "{e}");
        let e = parse("[store]\nurl = \"mysql://app:s3cr3t@db/p\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("postgres://") && !e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn postgres_tls_settings_and_the_push_poll_interval_are_checked() {
        let c = parse(
            "[store]\nurl = \"postgres://app:s3cr3t@db/p?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(c.store.push_poll_interval, Duration::from_millis(500));
        let e = parse("[store]\nurl = \"postgres://app:s3cr3t@db/p?sslmode=verify-full\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.url") && e.contains("sslrootcert"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
        let c = parse("[store]\nurl = \"sqlite:///x.db\"\npush_poll_interval = \"10s\"\n").unwrap();
        assert_eq!(c.store.push_poll_interval, Duration::from_secs(10));
        let e = parse("[store]\nurl = \"sqlite:///x.db\"\npush_poll_interval = \"10ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.push_poll_interval"), "{e}");
    }

    #[test]
    fn sms_provider_settings_are_checked() {
        let ok = "[tenants.acme.sms]\nprovider = \"twilio\"\naccount_sid = \"AC1\"\nauth_token = \"t\"\nfrom = \"+15550001111\"\n";
        parse(ok).unwrap();
        let e = parse(&ok.replace("auth_token = \"t\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants.acme.sms.auth_token"), "{e}");
        let e = parse(&format!("{ok}message = \"no code here\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants.acme.sms.message"), "{e}");
        let e =
            parse("[tenants.acme.sms]\nprovider = \"http\"\nurl = \"http://gw\"\nbody = \"x\"\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("https://"), "{e}");
        let e = parse("[tenants.acme.sms]\nprovider = \"carrier-pigeon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("carrier-pigeon"), "{e}");
    }

    #[test]
    fn rules_are_checked() {
        let ok = "[[tenants.acme.rules]]\nname = \"lan\"\naction = \"skip_mfa\"\nsources = [\"10.0.0.0/8\"]\n";
        let c = parse(ok).unwrap();
        assert_eq!(c.tenants["acme"].rules.len(), 1);
        let e = parse(&format!("{ok}{ok}")).unwrap_err().to_string();
        assert!(e.contains("tenants.acme.rules[1].name"), "{e}");
        let e = parse("[[tenants.acme.rules]]\nname = \"s\"\naction = \"step_up\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rules[0].factors"), "{e}");
        let e = parse("[[tenants.acme.rules]]\nname = \"s\"\naction = \"require_mfa\"\nfactors = [\"carrier-pigeon\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("carrier-pigeon"), "{e}");
        let e = parse("[[tenants.acme.rules]]\nname = \"t\"\naction = \"deny\"\ntime = { from = \"22:00\", to = \"06:00\" }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rules[0].time"), "{e}");
        let e = parse("[[tenants.acme.rules]]\nname = \"t\"\naction = \"maybe\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("maybe"), "{e}");
        let e = parse(
            "[[tenants.acme.rules]]\nname = \"t\"\naction = \"deny\"\nsources = [\"10.0.0/8\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("10.0.0/8") || e.contains("sources"), "{e}");
    }

    #[test]
    fn pam_listener_is_off_without_the_section_and_root_only_with_it() {
        assert!(parse("").unwrap().pam.is_none());
        let c = parse("[pam]\n").unwrap();
        let pam = c.pam.unwrap();
        assert_eq!(pam.socket, PathBuf::from("/run/portcullis/pam.sock"));
        assert_eq!(pam.allowed_uids, vec![0]);
        assert_eq!(pam.mode(), 0o600);
        let c = parse("[pam]\nsocket = \"/tmp/x.sock\"\nsocket_mode = \"0666\"\n").unwrap();
        assert_eq!(c.pam.unwrap().mode(), 0o666);
    }

    #[test]
    fn a_toml_syntax_error_names_its_line_but_never_shows_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.toml");
        // Line 6: an invalid escape (`\&`) in the client's secret.
        let text = "[store]\nurl = \"sqlite:///var/lib/portcullis/p.db\"\n\n[[radius.clients]]\n\
                    name = \"vpn\"\nsecret = \"Tr0ub4dor\\&3\"\naddress = \"10.0.0.0/8\"\n\
                    tenant = \"acme\"\n";
        std::fs::write(&path, text).unwrap();
        for e in [
            Config::load(&path).unwrap_err().to_string(),
            Config::from_toml_str(text, &path).unwrap_err().to_string(),
        ] {
            assert!(e.contains("line 6"), "{e}");
            assert!(e.contains("key `secret`"), "{e}");
            assert!(e.contains("escape"), "{e}");
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(!e.contains("Tr0ub4dor"), "{e}");
            assert!(!e.contains("&3"), "{e}");
        }
        // An error without a snippet keeps the parser's words; a snippet in another
        // layout is still dropped.
        assert_eq!(
            syntax_error("floating-point number overflowed", || None),
            "TOML syntax error: floating-point number overflowed"
        );
        assert_eq!(
            syntax_error(
                "parse error\n   |\n12 | skey = \"s3cr3t\\q\"\n   |         ^\nbad escape\n",
                || None
            ),
            "TOML syntax error: parse error; bad escape"
        );
        assert_eq!(
            key_of("  [tenants.acme.duo] "),
            Some("table [tenants.acme.duo]".into())
        );
        assert_eq!(
            key_of("[[radius.clients]]"),
            Some("table [radius.clients]".into())
        );
        assert_eq!(key_of("  \"a\\b\" ,"), None);
    }

    fn client_with(extra: &str) -> Result<Config, ConfigError> {
        parse(&format!("{CLIENT}{extra}\n"))
    }

    #[test]
    fn prompt_leaves_room_for_what_the_engine_adds() {
        // "(or type sms or email to get a code sent)" is the longest addition.
        assert_eq!(max_prompt_len(), 253 - 42);
        let longest = "p".repeat(max_prompt_len());
        client_with(&format!("prompt = \"{longest}\"")).unwrap();
        for (pre, post) in PROMPT_DECORATIONS {
            assert!(format!("{pre}{longest}{post}").len() <= REPLY_MESSAGE_MAX);
        }
        // 230 bytes fit 253 alone, but not after "Wrong code, try again. ".
        for n in [max_prompt_len() + 1, 230, 253] {
            let e = client_with(&format!("prompt = \"{}\"", "p".repeat(n)))
                .unwrap_err()
                .to_string();
            assert!(e.contains("radius.clients[0].prompt"), "{e}");
            assert!(e.contains(&format!("is {n} bytes; at most 211")), "{e}");
            assert!(e.contains("253 bytes of one Reply-Message"), "{e}");
            assert!(e.contains("pam_radius_auth"), "{e}");
        }
        // Bytes, not characters.
        assert!(client_with(&format!("prompt = \"{}\"", "\u{e9}".repeat(106))).is_err());
    }

    #[test]
    fn menu_prompt_leaves_room_for_the_widest_menu() {
        let widest = worst_case_menu("");
        assert!(
            widest.contains("1) code from your token  2) push to your phone  3) text message to"),
            "{widest}"
        );
        assert_eq!(widest.len(), 153, "{widest}");
        assert_eq!(max_menu_prompt_len(), 100);
        let heading = "h".repeat(max_menu_prompt_len());
        assert_eq!(worst_case_menu(&heading).len(), REPLY_MESSAGE_MAX);
        client_with(&format!("menu_prompt = \"{heading}\"")).unwrap();
        assert!(crate::engine::MENU_HEADING.len() <= max_menu_prompt_len());
        // 150 bytes passed the old limit (200) but push the menu past 253.
        for n in [max_menu_prompt_len() + 1, 150, 200] {
            let e = client_with(&format!("menu_prompt = \"{}\"", "h".repeat(n)))
                .unwrap_err()
                .to_string();
            assert!(e.contains("radius.clients[0].menu_prompt"), "{e}");
            assert!(e.contains(&format!("is {n} bytes; at most 100")), "{e}");
            assert!(e.contains("253 bytes of one Reply-Message"), "{e}");
        }
    }

    #[test]
    fn duo_tenants_refuse_factor_limits_that_duo_would_meet_with_any_method() {
        let duo = "[tenants.acme.duo]\nikey = \"DIXXXXXXXXXXXXXXXXXX\"\nskey = \"s\"\napi_host = \"api-x.duosecurity.com\"\n";
        assert!(parse(&format!("{CLIENT}\n{duo}")).is_ok());
        let e = parse(&format!(
            "{CLIENT}\n[tenants.acme]\nfactors = [\"totp\"]\n{duo}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("tenants.acme.factors") && e.contains("[tenants.acme.duo]"),
            "{e}"
        );
        let e = parse(&format!(
            "{CLIENT}\n{duo}\n[[tenants.acme.rules]]\nname = \"sudo\"\naction = \"step_up\"\nfactors = [\"hotp\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("tenants.acme.rules[0].factors"), "{e}");
    }

    #[test]
    fn an_unknown_enum_value_names_the_key_and_the_values_it_may_take() {
        let e = parse(&CLIENT.replace(
            "tenant = \"acme\"",
            "tenant = \"acme\"\nmode = \"chalenge\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.ends_with(
                "radius.clients[0].mode: unknown value 'chalenge' (expected challenge, append, auto, otp-only)"
            ),
            "{e}"
        );
        let e = parse(&CLIENT.replace(
            "tenant = \"acme\"",
            "tenant = \"acme\"\nfirst_factor = \"nonee\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.ends_with(
                "radius.clients[0].first_factor: unknown value 'nonee' (expected local, ldap, radius, none)"
            ),
            "{e}"
        );
        let e = parse(&format!(
            "{CLIENT}\n[tenants.acme]\nfirst_factor = \"nonee\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.ends_with(
                "tenants.acme.first_factor: unknown value 'nonee' (expected local, ldap, radius, none)"
            ),
            "{e}"
        );
        let e = parse(&format!(
            "{CLIENT}\n[[tenants.acme.rules]]\nname = \"r\"\naction = \"allow\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.ends_with(
                "tenants.acme.rules[0].action: unknown value 'allow' (expected require_mfa, skip_mfa, deny, step_up)"
            ),
            "{e}"
        );
        // Other type errors name the key with its dot too.
        let e = parse(&CLIENT.replace(
            "tenant = \"acme\"",
            "tenant = \"acme\"\nrequire_message_authenticator = \"maybe\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("radius.clients[0].require_message_authenticator: invalid type"),
            "{e}"
        );
        assert_eq!(dotted_key("a.b[0][1]c.d[2]"), "a.b[0][1].c.d[2]");
    }

    #[test]
    fn pam_fail_mode_is_secure_unless_a_tenant_says_safe() {
        let c = parse(&format!("{CLIENT}\n[tenants.acme]\nfactors = [\"totp\"]\n")).unwrap();
        assert_eq!(c.tenants["acme"].pam_fail_mode, FailMode::Secure);
        let c = parse(&format!(
            "{CLIENT}\n[tenants.acme]\npam_fail_mode = \"safe\"\n[tenants.other]\npam_fail_mode = \"secure\"\n"
        ))
        .unwrap();
        assert_eq!(c.tenants["acme"].pam_fail_mode, FailMode::Safe);
        assert_eq!(c.tenants["other"].pam_fail_mode, FailMode::Secure);
        let e = parse(&format!(
            "{CLIENT}\n[tenants.acme]\npam_fail_mode = \"open\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.ends_with("tenants.acme.pam_fail_mode: unknown value 'open' (expected secure, safe)"),
            "{e}"
        );
    }

    #[test]
    fn lockout_durations_under_a_second_or_over_thirty_days_are_refused() {
        // The message says what is wrong with the value given.
        for (key, value, why) in [
            ("duration", "\"0s\"", "0 would unlock at once"),
            ("duration", "\"500ms\"", "500ms is under 1s"),
            ("duration", "\"400000000000y\"", "is over 30d"),
            ("base_delay", "\"500ms\"", "500ms is under 1s"),
            ("base_delay", "\"31d\"", "31d is over 30d"),
        ] {
            let e = parse(&format!("{CLIENT}\n[lockout]\n{key} = {value}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("lockout.{key}")) && e.contains(why),
                "{key} = {value}: {e}"
            );
            if value != "\"0s\"" {
                assert!(!e.contains("0 would"), "{key} = {value}: {e}");
            }
        }
        assert!(parse(&format!(
            "{CLIENT}\n[lockout]\nbase_delay = \"0s\"\nduration = \"30d\"\n"
        ))
        .is_ok());
    }

    #[test]
    fn the_shipped_example_configurations_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(root.join("conf/portcullis.toml")).unwrap();
        if let Err(e) = Config::from_toml_str(&text, Path::new("conf/portcullis.toml")) {
            panic!("conf/portcullis.toml: {e}");
        }
        // The package's config (its unit is neither enabled nor started at install) is
        // refused until its client's placeholder secret is replaced; then it loads.
        let file = "conf/deb/portcullis.toml";
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let e = Config::from_toml_str(&text, Path::new(file))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("radius.clients[0].secret") && e.contains("placeholder"),
            "{e}"
        );
        let set = text.replace(
            "change-me-to-a-long-random-secret",
            "a-long-random-secret-0123456789",
        );
        if let Err(e) = Config::from_toml_str(&set, Path::new(file)) {
            panic!("{file} with its secret set: {e}");
        }
    }

    #[test]
    fn a_pam_socket_path_too_long_for_sun_path_is_refused() {
        let long = format!("/run/{}/pam.sock", "d".repeat(100));
        let e = parse(&format!("[pam]\nsocket = \"{long}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pam.socket") && e.contains("107"), "{e}");
        assert!(parse("[pam]\nsocket = \"/run/portcullis/pam.sock\"\n").is_ok());
    }

    #[test]
    fn bad_pam_settings_name_their_key() {
        let e = parse("[pam]\nsocket = \"\"\n").unwrap_err().to_string();
        assert!(e.contains("pam.socket"), "{e}");
        let e = parse("[pam]\nsocket_mode = \"rw\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pam.socket_mode"), "{e}");
        let e = parse("[pam]\nsokcet = \"/x\"\n").unwrap_err().to_string();
        assert!(e.contains("sokcet"), "{e}");
    }

    #[test]
    fn response_cache_ttl_is_bounded() {
        let c = parse(CLIENT).unwrap();
        assert_eq!(c.radius.response_cache_ttl, Duration::from_secs(30));
        for bad in ["0s", "500ms", "1h"] {
            let e = parse(&format!("[radius]\nresponse_cache_ttl = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("radius.response_cache_ttl"), "{bad}: {e}");
        }
        let c = parse("[radius]\nresponse_cache_ttl = \"10s\"\n").unwrap();
        assert_eq!(c.radius.response_cache_ttl, Duration::from_secs(10));
    }

    #[test]
    fn max_in_flight_and_pam_max_connections_are_bounded() {
        let c = parse("[pam]\n").unwrap();
        assert_eq!(c.radius.max_in_flight, 1024);
        assert_eq!(c.pam.as_ref().unwrap().max_connections, 256);
        let c = parse(&format!(
            "[radius]\nmax_in_flight = {MAX_IN_FLIGHT}\n[pam]\nmax_connections = {MAX_PAM_CONNECTIONS}\n"
        ))
        .unwrap();
        assert_eq!(c.radius.max_in_flight, MAX_IN_FLIGHT);
        assert_eq!(c.pam.unwrap().max_connections, MAX_PAM_CONNECTIONS);
        // Past tokio's Semaphore::MAX_PERMITS (usize::MAX >> 3) the server would panic at
        // start; past u32::MAX the drain could not count them.
        let huge = usize::MAX >> 3;
        for (n, want) in [
            ("0", "0 is outside 1..=1000000"),
            ("1000001", "1000001 is outside 1..=1000000"),
            ("4294967296", "4294967296 is outside 1..=1000000"),
            (&huge.to_string(), "is outside 1..=1000000"),
        ] {
            let e = parse(&format!("[radius]\nmax_in_flight = {n}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("radius.max_in_flight") && e.contains(want),
                "{n}: {e}"
            );
        }
        for (n, want) in [
            ("0", "0 is outside 1..=100000"),
            ("100001", "100001 is outside 1..=100000"),
            (&huge.to_string(), "is outside 1..=100000"),
        ] {
            let e = parse(&format!("[pam]\nmax_connections = {n}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("pam.max_connections") && e.contains(want),
                "{n}: {e}"
            );
        }
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
    fn max_held_defaults_to_256_and_is_bounded() {
        let c = parse(CLIENT).unwrap();
        assert_eq!(c.radius.clients[0].max_held, 256);
        for bad in ["0", "1000001"] {
            let e = parse(&format!("{CLIENT}max_held = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("radius.clients[0].max_held"), "{e}");
        }
        assert_eq!(
            parse(&format!("{CLIENT}max_held = 1\n"))
                .unwrap()
                .radius
                .clients[0]
                .max_held,
            1
        );
    }

    #[test]
    fn push_needs_a_public_url_and_sane_bounds() {
        let e = parse("[tenants.acme.push]\nntfy_url = \"https://ntfy.example\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants.acme.push"), "{e}");
        assert!(e.contains("public_url"), "{e}");
        let http = "[http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://mfa.example.com\"\n";
        let c = parse(&format!(
            "{http}[tenants.acme.push]\nntfy_url = \"https://ntfy.example\"\n"
        ))
        .unwrap();
        let p = c.tenants["acme"].push.as_ref().unwrap();
        assert!(p.number_matching);
        assert_eq!(p.max_pushes, 5);
        assert_eq!(p.window, Duration::from_secs(600));
        let e = parse(&format!(
            "{http}[tenants.acme.push]\nntfy_url = \"http://ntfy.example\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("tenants.acme.push.ntfy_url"), "{e}");
        let e = parse(&format!("{http}[tenants.acme.push]\nttl = \"2s\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants.acme.push.ttl"), "{e}");
        let e = parse("[http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"mfa.example.com\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.public_url"), "{e}");
    }

    #[test]
    fn http_tls_needs_cert_and_key_together() {
        let c = parse(
            "[http]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n",
        )
        .unwrap();
        let h = c.http.unwrap();
        assert_eq!(h.tls_cert.unwrap(), PathBuf::from("/c.pem"));
        assert_eq!(h.tls_key.unwrap(), PathBuf::from("/k.pem"));
        for (text, key) in [
            ("tls_cert = \"/c.pem\"", "http.tls_key"),
            ("tls_key = \"/k.pem\"", "http.tls_cert"),
            ("tls_cert = \"\"\ntls_key = \"/k.pem\"", "http.tls_cert"),
        ] {
            let e = parse(&format!("[http]\nlisten = \"127.0.0.1:0\"\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        // A relative path is relative to the config file's directory.
        let c = Config::from_toml_str(
            "[http]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"c.pem\"\ntls_key = \"/k.pem\"\n",
            Path::new("/etc/portcullis/portcullis.toml"),
        )
        .unwrap();
        assert_eq!(
            c.http.unwrap().tls_cert.unwrap(),
            PathBuf::from("/etc/portcullis/c.pem")
        );
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
