//! The `portcullis` command line: the daemon (`serve`) and the admin commands.

mod admin_cmds;
mod config_files;
mod csv_cmds;
mod host_cmd;
mod ldap_cmd;
mod output;
mod token_cmd;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
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
    /// Run the daemon: RADIUS listeners and, with a `[pam]` section, the PAM socket.
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
    /// Show the audit log: one record per login decision.
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
    /// The user's tenant.
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
    /// Show a user with factors, recovery codes left and lock state.
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
    /// Import users from a CSV file (header row: name, and any of email, phone, groups,
    /// password_hash, totp_secret). Every row is checked before anything is written.
    Import {
        #[command(flatten)]
        tenant: TenantArg,
        /// The CSV file (`-` for standard input).
        file: PathBuf,
        /// Update users that exist (e-mail, phone, groups, hash) instead of refusing them.
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
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(6..=8))]
        digits: u8,
        #[arg(long, default_value = "SHA1", value_parser = ["SHA1", "SHA256", "SHA512", "sha1", "sha256", "sha512"])]
        algorithm: String,
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
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(6..=8))]
        digits: u8,
        #[arg(long, default_value = "SHA1", value_parser = ["SHA1", "SHA256", "SHA512", "sha1", "sha256", "sha512"])]
        algorithm: String,
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

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[arg(long)]
    pub tenant: Option<String>,
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
    pub store: Arc<dyn Store>,
    pub key: Arc<MasterKey>,
    pub clock: Arc<dyn Clock>,
    pub hasher: PasswordHasher,
}

/// Load the config and open the store and master key (creating the key if needed).
pub fn open(config_path: &std::path::Path) -> Result<Opened> {
    let config = Config::load(config_path)?;
    let key_file = &config.secrets.key_file;
    let key_missing = matches!(
        std::fs::symlink_metadata(key_file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound
    );
    let store: Arc<dyn Store> = if let Some(pg) = config.store.postgres() {
        Arc::new(
            PgStore::open(&pg)
                .with_context(|| format!("opening the store {}", config.store.redacted_url()))?,
        )
    } else {
        let path = config
            .sqlite_path()
            .context("store.url must be sqlite:///path or postgres://...")?;
        Arc::new(
            SqliteStore::open(&path)
                .with_context(|| format!("opening the store {}", path.display()))?,
        )
    };
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
    let key = MasterKey::load_or_create(key_file)
        .context("the master key is needed to read and write factor secrets")?;
    if key_missing {
        tracing::warn!(path = %key_file.display(),
            "created a new master key for a new store: back it up; every node of a cluster needs a copy");
    }
    let hasher = PasswordHasher::new(&config.passwords)?;
    Ok(Opened {
        config,
        store,
        key: Arc::new(key),
        clock: Arc::new(SystemClock),
        hasher,
    })
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
    }
}

/// Run the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve => crate::serve::run(&cli.config),
        Command::Config(ConfigCmd::Check) => admin_cmds::config_check(&cli.config, cli.json),
        Command::Ldap(cmd) => ldap_cmd::run(&cli.config, cmd, cli.json),
        Command::Host(cmd) => host_cmd::run(&open(&cli.config)?, cmd, cli.json),
        other => {
            let opened = open(&cli.config)?;
            admin_cmds::run(&opened, other, cli.json)
        }
    }
}
