//! The `portcullis` command line: the daemon (`serve`) and the admin commands.

mod admin_cmds;
mod changes;
mod config_files;
mod csv_cmds;
mod host_cmd;
mod ldap_cmd;
mod local;
mod output;
mod token_cmd;

pub use output::stdout_status;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use portcullis_core::admin::Admin;
use portcullis_core::clock::{Clock, SystemClock};
use portcullis_core::config::{Config, DEFAULT_CONFIG_PATH};
use portcullis_core::password::PasswordHasher;
use portcullis_core::secrets::MasterKey;
use portcullis_core::store::{PgStore, SqliteStore, Store};

/// Portcullis: a second-factor gate for SSH (PAM) and VPN (RADIUS) logins.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file.
    #[arg(long, global = true, env = "PORTCULLIS_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: RADIUS listeners; with a `[pam]` section, the PAM socket; with an
    /// `[http]` section, /metrics, push approvals, enrolment links, the admin API (/v1/)
    /// and the /my/ and /admin/ pages.
    Serve,
    /// Check the config file.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Enrol, confirm, list and remove second factors.
    #[command(subcommand)]
    Factor(FactorCmd),
    /// Recovery codes.
    #[command(subcommand)]
    Recovery(RecoveryCmd),
    /// Issue a bypass code for a user who lost their device (shown once).
    Bypass {
        #[command(flatten)]
        tenant: TenantArg,
        user: String,
        /// How many logins it may be used for.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it stays valid (e.g. 1h, 30m, 2d).
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
    },
    /// Lift the block of a source address (Calling-Station-Id, PAM rhost, web client)
    /// after too many wrong passwords (`[lockout] source_failures`).
    Unblock {
        #[command(flatten)]
        tenant: TenantArg,
        /// The address as the audit log shows it in `source`.
        address: String,
    },
    /// Show the audit log: one record per login decision and per admin change (CLI, admin
    /// API, web pages).
    Audit(AuditArgs),
    /// Policy rules.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Check a tenant's LDAP/AD settings by hand.
    #[command(subcommand)]
    Ldap(LdapCmd),
    /// Admin API tokens (shown once, stored hashed).
    #[command(subcommand)]
    Token(token_cmd::TokenCmd),
    /// Remote PAM hosts of a fleet (pam_portcullis.so with url= and token_file=).
    #[command(subcommand)]
    Host(HostCmd),
}

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// Register a host and print its token (shown once; put it in the host's token_file).
    Add {
        #[command(flatten)]
        tenant: TenantArg,
        /// The host's name, as rules and the audit log will show it.
        name: String,
    },
    /// List a tenant's hosts.
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Revoke a host's token at once.
    Remove {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LdapCmd {
    /// Check USER's password (read from standard input) against the tenant's directory and
    /// show what it says: the entry, groups, e-mail and phone. Nothing is stored.
    Test {
        #[command(flatten)]
        tenant: TenantArg,
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Explain which rule a login would match, and why.
    Test {
        #[command(flatten)]
        tenant: TenantArg,
        /// The user (their groups come from the store).
        #[arg(long)]
        user: String,
        /// RADIUS client or PAM service name.
        #[arg(long)]
        client: String,
        /// Source address (Calling-Station-Id or PAM rhost).
        #[arg(long, default_value = "")]
        source: String,
        /// PAM host.
        #[arg(long)]
        host: Option<String>,
        /// When (RFC 3339, e.g. 2026-11-23T10:00:00Z); default now.
        #[arg(long)]
        at: Option<humantime::Timestamp>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Parse and validate the config file, open and read the files it names (certificates,
    /// keys, secret files); print what it sets, or every problem found.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Create a tenant.
    Add { name: String },
    /// List tenants.
    List,
}

#[derive(Debug, Args)]
pub struct TenantArg {
    /// The tenant (see `portcullis tenant list`).
    #[arg(long)]
    pub tenant: String,
}

#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct PasswordInput {
    /// Read the password from standard input (one line).
    #[arg(long)]
    pub password_stdin: bool,
    /// Read an existing hash (argon2id or SHA-512 crypt `$6$`) from standard input.
    #[arg(long)]
    pub password_hash_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user.
    Add {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        #[command(flatten)]
        password: PasswordInput,
        #[arg(long)]
        email: Option<String>,
        /// Phone number in E.164 form (+4915112345678).
        #[arg(long)]
        phone: Option<String>,
        /// A group (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// List a tenant's users.
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Show a user with factors, recovery codes left, failed codes and the delay or lock
    /// in force after them.
    Show {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
    },
    /// Refuse all logins of a user.
    Disable {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
    },
    /// Allow a disabled user again.
    Enable {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
    },
    /// Delete a user with their factors and codes (audit records stay).
    Delete {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
    },
    /// Set a user's password.
    SetPassword {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        #[command(flatten)]
        password: PasswordInput,
    },
    /// Revoke remembered sources: the user gives a second factor again from there.
    Forget {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        /// Only this source (default: all of the user's).
        #[arg(long)]
        source: Option<String>,
    },
    /// Set a user attribute that policy rules can test (`attributes = { KEY = "VALUE" }`);
    /// without VALUE the attribute is removed.
    SetAttr {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        key: String,
        value: Option<String>,
    },
    /// Lift a lock or throttle after failed codes.
    Unlock {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
    },
    /// Import users from a CSV file (header row: name, and any of email, phone, groups
    /// (`;`-separated), password_hash, totp_secret, disabled (`true`/`false`; empty: a new
    /// user is enabled); a `factors` column, as `user export` writes it, is ignored).
    /// Every row is checked before anything is written.
    Import {
        #[command(flatten)]
        tenant: TenantArg,
        /// The CSV file (`-` for standard input).
        file: PathBuf,
        /// Update users that exist instead of refusing them: e-mail, phone, groups, hash
        /// and disabled state from the row's columns (an absent column, or an empty
        /// password_hash or disabled cell, keeps what is stored; totp_secret is refused).
        #[arg(long)]
        update: bool,
    },
    /// Export users as CSV: name, email, phone, groups, disabled, factors (kinds only;
    /// never secrets or hashes).
    Export {
        #[command(flatten)]
        tenant: TenantArg,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum FactorCmd {
    /// Enrol a factor.
    #[command(subcommand)]
    Enroll(EnrollCmd),
    /// Confirm a pending factor with a code from the user's app.
    Confirm {
        #[command(flatten)]
        tenant: TenantArg,
        user: String,
        factor_id: String,
        code: String,
    },
    /// Resynchronise a hardware HOTP token with two consecutive codes.
    Resync {
        #[command(flatten)]
        tenant: TenantArg,
        user: String,
        factor_id: String,
        code1: String,
        code2: String,
    },
    /// List a user's factors.
    List {
        #[command(flatten)]
        tenant: TenantArg,
        user: String,
    },
    /// Remove a factor.
    Remove {
        #[command(flatten)]
        tenant: TenantArg,
        user: String,
        factor_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnrollCmd {
    /// A TOTP authenticator app (or an existing secret being migrated).
    Totp {
        #[command(flatten)]
        tenant: TenantArg,
        user: String,
        /// Migrate an existing base32 secret (the factor is confirmed at once).
        #[arg(long, conflicts_with = "secret_stdin")]
        secret: Option<String>,
        /// Read the secret to migrate from standard input (keeps it out of `ps`).
        #[arg(long)]
        secret_stdin: bool,
        /// Digits per code.
        #[arg(long, value_enum, default_value_t = Digits::Six)]
        digits: Digits,
        /// The HMAC hash (most apps and tokens use SHA1; any case).
        #[arg(long, value_enum, ignore_case = true, default_value_t = Algorithm::Sha1)]
        algorithm: Algorithm,
    },
    /// Text-message codes to a phone: a code is sent now; `factor confirm` with it enables the factor.
    Sms {
        #[command(flatten)]
        tenant: TenantArg,
        user: String,
        /// E.164 number; defaults to the user's phone.
        #[arg(long)]
        phone: Option<String>,
    },
    /// E-mail codes, as an extra factor beside another one: a code is sent now;
    /// `factor confirm` with it enables the factor.
    Email {
        #[command(flatten)]
        tenant: TenantArg,
        user: String,
        /// The address; defaults to the user's e-mail.
        #[arg(long)]
        email: Option<String>,
    },
    /// Push approval: a new unguessable ntfy topic to subscribe to (or a webhook URL); a
    /// code is pushed now; `factor confirm` with it enables the factor.
    Push {
        #[command(flatten)]
        tenant: TenantArg,
        user: String,
        /// Deliver to this https:// webhook instead of an ntfy topic.
        #[arg(long)]
        webhook: Option<String>,
    },
    /// An HOTP (RFC 4226) token: a hardware token's secret, or a new software token.
    Hotp {
        #[command(flatten)]
        tenant: TenantArg,
        user: String,
        /// The token's base32 secret (the factor is confirmed at once).
        #[arg(long, conflicts_with = "secret_stdin")]
        secret: Option<String>,
        /// Read the token's secret from standard input (keeps it out of `ps`).
        #[arg(long)]
        secret_stdin: bool,
        /// The token's current counter.
        #[arg(long, default_value_t = 0)]
        counter: u64,
        /// Digits per code.
        #[arg(long, value_enum, default_value_t = Digits::Six)]
        digits: Digits,
        /// The HMAC hash (most apps and tokens use SHA1; any case).
        #[arg(long, value_enum, ignore_case = true, default_value_t = Algorithm::Sha1)]
        algorithm: Algorithm,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecoveryCmd {
    /// Make 10 new single-use codes (replacing the old ones); shown once.
    Generate {
        #[command(flatten)]
        tenant: TenantArg,
        user: String,
    },
}

/// Digits of a TOTP or HOTP code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Digits {
    #[value(name = "6")]
    Six,
    #[value(name = "8")]
    Eight,
}

impl Digits {
    pub fn get(self) -> u8 {
        match self {
            Digits::Six => 6,
            Digits::Eight => 8,
        }
    }
}

/// The HMAC hash of a TOTP or HOTP factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algorithm {
    #[value(name = "SHA1")]
    Sha1,
    #[value(name = "SHA256")]
    Sha256,
    #[value(name = "SHA512")]
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this tenant's records (default: every tenant's).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only the records of this user name (logins and admin changes about them).
    #[arg(long)]
    pub user: Option<String>,
    /// Only records newer than this (e.g. 1h, 30m, 7d).
    #[arg(long)]
    pub since: Option<humantime::Duration>,
    /// At most this many records (newest).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

/// What every command opens: config, store, master key.
pub struct Opened {
    pub config: Config,
    /// The file `config` was loaded from, as given.
    pub config_path: PathBuf,
    pub store: Arc<dyn Store>,
    pub key: Arc<MasterKey>,
    pub clock: Arc<dyn Clock>,
    pub hasher: PasswordHasher,
}

/// Who opens the store, and for what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFor {
    /// `serve`: a new installation's store and key are made at the first start.
    Serve,
    /// An admin command that changes the store: may make a new store (the Quick start's
    /// `tenant add`), and says so.
    Change,
    /// An admin command that only reads: a store that does not exist is an error (a
    /// mistyped `store.url`), and nothing is made.
    Read,
}

/// Open the store and master key of `config` (loaded from `config_path`) for `serve`
/// (making both for a new installation).
pub fn open(config: Config, config_path: &std::path::Path) -> Result<Opened> {
    open_loaded(config, config_path, OpenFor::Serve)
}

/// Load the config and open the store and master key (a new key only for an empty store;
/// a new store only unless `purpose` is [`OpenFor::Read`]).
pub fn open_for(config_path: &std::path::Path, purpose: OpenFor) -> Result<Opened> {
    open_loaded(Config::load(config_path)?, config_path, purpose)
}

/// [`open_for`] with the config already loaded from `config_path`.
fn open_loaded(config: Config, config_path: &std::path::Path, purpose: OpenFor) -> Result<Opened> {
    let key_file = &config.secrets.key_file;
    let sqlite = if config.store.postgres().is_some() {
        None
    } else {
        Some(
            config
                .sqlite_path()
                .context("store.url must be sqlite:///path or postgres://...")?,
        )
    };
    // Before anything is made or opened for writing.
    if purpose != OpenFor::Serve {
        let mut files = vec![("the master key file", key_file.as_path())];
        if let Some(db) = &sqlite {
            files.insert(0, ("the store", db.as_path()));
        }
        local::refuse_root_in_others_files(&files)?;
    }
    let new_store = sqlite
        .as_deref()
        .is_some_and(|db| std::fs::symlink_metadata(db).is_err());
    if let (Some(db), true, OpenFor::Read) = (&sqlite, new_store, purpose) {
        anyhow::bail!(
            "no store at {} (store.url in {}): start portcullis serve once, or fix store.url",
            absolute(db).display(),
            absolute(config_path).display()
        );
    }
    local::check_permissions(
        sqlite.as_deref(),
        key_file,
        if purpose == OpenFor::Serve {
            local::Opener::Daemon
        } else {
            local::Opener::Admin
        },
    )?;
    let key_missing = matches!(
        std::fs::symlink_metadata(key_file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound
    );
    let store: Arc<dyn Store> = match (&sqlite, config.store.postgres()) {
        (None, Some(pg)) => Arc::new(
            PgStore::open(&pg)
                .with_context(|| format!("opening the store {}", config.store.redacted_url()))?,
        ),
        (Some(path), _) => Arc::new(
            SqliteStore::open(path)
                .with_context(|| format!("opening the store {}", path.display()))?,
        ),
        (None, None) => anyhow::bail!("store.url must be sqlite:///path or postgres://..."),
    };
    if let (Some(db), true) = (&sqlite, new_store) {
        tracing::warn!(
            "created a new, empty store at {} (store.url in {})",
            absolute(db).display(),
            absolute(config_path).display()
        );
    }
    // A new key is made for a new installation only. A store that already has tenants was
    // used with a key: making another (a typo in key_file, a second node whose key was not
    // copied, a command run from another directory) would seal new secrets under it and
    // leave every existing factor and token unreadable.
    if key_missing && !store.list_tenants()?.is_empty() {
        anyhow::bail!(
            "the master key file {} does not exist, but the store already holds tenants whose secrets were sealed with a key: copy the key from the first node or a backup (or fix secrets.key_file); a new key is made only for an empty store",
            key_file.display()
        );
    }
    // A command that only reads makes no key either (a typo in key_file would leave a
    // stray key behind).
    if key_missing && matches!(purpose, OpenFor::Read) {
        anyhow::bail!(
            "no master key at {} (secrets.key_file in {}): a command that only reads makes none; start portcullis serve once, or fix secrets.key_file",
            absolute(key_file).display(),
            absolute(config_path).display()
        );
    }
    let key = MasterKey::load_or_create(key_file)
        .context("the master key is needed to read and write factor secrets")?;
    if key_missing {
        tracing::warn!(
            "created a new master key at {}: back it up (factor secrets sealed under it cannot be read without it); every node of a cluster needs a copy",
            absolute(key_file).display());
    }
    let hasher = PasswordHasher::new(&config.passwords)?;
    Ok(Opened {
        config,
        config_path: config_path.to_path_buf(),
        store,
        key: Arc::new(key),
        clock: Arc::new(SystemClock),
        hasher,
    })
}

/// `path` made absolute (against the working directory), without `.` and `..`, for
/// messages: as the system resolves it when it exists, else written out.
fn absolute(path: &std::path::Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

impl Opened {
    /// The Engine as the config describes it: settings, each tenant's rules and providers
    /// (which run on `handle`).
    pub fn build_engine(
        &self,
        handle: &tokio::runtime::Handle,
    ) -> Result<portcullis_core::engine::Engine> {
        let mut engine = portcullis_core::engine::Engine::new(
            self.store.clone(),
            self.clock.clone(),
            self.key.clone(),
            self.hasher.clone(),
            portcullis_core::engine::EngineSettings::from_config(&self.config),
        );
        for (tenant, t) in &self.config.tenants {
            engine.set_rules(tenant, t.rules.clone());
            engine.set_allowed_factors(tenant, t.factors.clone());
            engine.set_default_factor(tenant, t.default_factor.clone());
        }
        crate::providers::configure(&mut engine, &self.config, handle)?;
        engine.set_enroll_url(
            self.config
                .http
                .as_ref()
                .and_then(|h| h.public_url.as_deref()),
        );
        Ok(engine)
    }

    /// An Engine for commands that send (CLI code runs on the main thread, outside the
    /// runtime that the providers' requests run on).
    pub fn engine(&self) -> Result<(portcullis_core::engine::Engine, tokio::runtime::Runtime)> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let engine = self.build_engine(rt.handle())?;
        Ok((engine, rt))
    }

    /// The admin service over this store.
    pub fn admin(&self) -> Admin {
        Admin::new(
            self.store.clone(),
            self.clock.clone(),
            self.key.clone(),
            self.hasher.clone(),
            self.config.issuer.clone(),
            self.config.totp.window,
        )
        .with_lockout(self.config.lockout)
    }
}

/// Run the parsed command. A command that changes the store leaves an audit record
/// (channel `cli`, see [`changes`]) once it succeeded.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve => crate::serve::run(&cli.config),
        Command::Config(ConfigCmd::Check) => admin_cmds::config_check(&cli.config, cli.json),
        Command::Ldap(cmd) => ldap_cmd::run(&cli.config, cmd, cli.json),
        other => {
            let change = changes::describe(&other);
            let purpose = if changes::writes(&other) {
                OpenFor::Change
            } else {
                OpenFor::Read
            };
            let opened = open_for(&cli.config, purpose)?;
            // `Some(detail)`: what the change turned out to be (the factor it made).
            let result = match other {
                Command::Host(cmd) => host_cmd::run(&opened, cmd, cli.json).map(|()| None),
                other => admin_cmds::run(&opened, other, cli.json),
            };
            match (&change, &result) {
                (Some(c), Ok(learnt)) => {
                    let detail = learnt.as_deref().unwrap_or(&c.detail);
                    changes::record(&opened.admin(), &c.tenant, &c.user, c.action, detail)
                }
                (Some(c), Err(e)) => changes::record_failed(&opened.admin(), c, e),
                (None, _) => {}
            }
            result.map(|_| ())
        }
    }
}
