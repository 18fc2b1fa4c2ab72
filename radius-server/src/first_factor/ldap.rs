//! `first_factor = "ldap"`: LDAP directories and Active Directory.
//!
//! Search mode: a service account (from a small pool of bound connections) finds the user's
//! entry with `user_filter`, then a fresh connection binds as the user with their password.
//! Direct-bind mode: bind as `user_dn_template` (a DN or a UPN), then read the entry as the
//! user (a UPN names no entry: the entry is the one with that `userPrincipalName`). The
//! entry's `username_attribute` must then be the typed name byte for byte (directories match
//! names ignoring case; the store and `memberUid` do not). Group membership comes from
//! `group_attribute` (memberOf) and/or a group search; `required_group` may be a cn or a DN.
//! Every network step is bounded by `timeout`; a directory that cannot be reached is
//! `Unavailable` with a reason the audit shows.

use std::sync::Mutex;
use std::time::Duration;

use ldap3::{LdapConn, LdapConnSettings, LdapError, ResultEntry, Scope, SearchEntry};
use portcullis_core::config::LdapConfig;
use portcullis_core::first_factor::{DirectoryInfo, FirstFactor, FirstFactorResult};
use portcullis_core::model::User;

/// LDAP result code of a wrong password (or unknown bind DN).
const INVALID_CREDENTIALS: u32 = 49;

/// A problem setting up the backend (before any login).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LdapSetupError {
    #[error("tenants.{tenant}.ldap.ca_file: cannot read {path}: {source}; point it at the PEM file of the directory's CA")]
    CaFile {
        tenant: String,
        path: String,
        source: std::io::Error,
    },
    #[error("tenants.{tenant}.ldap: TLS setup failed: {message}")]
    Tls { tenant: String, message: String },
}

/// The LDAP/AD backend of one tenant.
pub struct LdapBackend {
    tenant: String,
    cfg: LdapConfig,
    connector: Option<native_tls::TlsConnector>,
    /// Connections bound as the service account, ready for searches.
    pool: Mutex<Vec<LdapConn>>,
}

/// What the directory said about a user, for `portcullis ldap test`.
#[derive(Debug, Clone)]
pub struct LdapCheck {
    pub result: FirstFactorResult,
    /// The entry the password was checked against, when one was found.
    pub dn: Option<String>,
}

/// Why a step failed: the directory is unreachable, or it refused.
enum Failure {
    Unavailable(String),
    Rejected(String),
}

impl From<Failure> for FirstFactorResult {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(r) => FirstFactorResult::Unavailable(r),
            Failure::Rejected(r) => FirstFactorResult::Rejected(r),
        }
    }
}

impl LdapBackend {
    /// The backend of `tenant` with these settings (no connection is made yet).
    pub fn new(tenant: &str, cfg: &LdapConfig) -> Result<Self, LdapSetupError> {
        let connector = match &cfg.ca_file {
            None => None,
            Some(path) => {
                // An unreadable file is named as such; what it holds is then read by the
                // providers' reader: every certificate of a bundle (old and new CA during a
                // rollover, intermediate and root), and a file without one is refused.
                std::fs::read(path).map_err(|source| LdapSetupError::CaFile {
                    tenant: tenant.into(),
                    path: path.display().to_string(),
                    source,
                })?;
                let not_pem = |e: String| LdapSetupError::Tls {
                    tenant: tenant.into(),
                    message: format!("ca_file {} is not a PEM certificate ({e})", path.display()),
                };
                let certs = crate::providers::ca_certificates(
                    &format!("tenants.{tenant}.ldap.ca_file"),
                    path,
                )
                .map_err(|e| not_pem(format!("{e:#}")))?;
                let mut b = native_tls::TlsConnector::builder();
                for (n, der) in certs.iter().enumerate() {
                    let cert = native_tls::Certificate::from_der(der).map_err(|e| {
                        not_pem(format!("certificate {} does not load: {e}", n + 1))
                    })?;
                    b.add_root_certificate(cert);
                }
                if !cfg.tls_verify {
                    b.danger_accept_invalid_certs(true)
                        .danger_accept_invalid_hostnames(true);
                }
                Some(b.build().map_err(|e| LdapSetupError::Tls {
                    tenant: tenant.into(),
                    message: e.to_string(),
                })?)
            }
        };
        Ok(Self {
            tenant: tenant.into(),
            cfg: cfg.clone(),
            connector,
            pool: Mutex::new(Vec::new()),
        })
    }

    /// Whether passwords cross the network in clear text (`ldap://` without StartTLS).
    pub fn is_plaintext(&self) -> bool {
        self.cfg.url.starts_with("ldap://") && !self.cfg.starttls
    }

    fn timeout(&self) -> Duration {
        self.cfg.timeout
    }

    fn connect(&self) -> Result<LdapConn, Failure> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout())
            .set_starttls(self.cfg.url.starts_with("ldap://") && self.cfg.starttls)
            .set_no_tls_verify(!self.cfg.tls_verify);
        if let Some(c) = &self.connector {
            settings = settings.set_connector(c.clone());
        }
        LdapConn::with_settings(settings, &self.cfg.url).map_err(|e| {
            Failure::Unavailable(format!(
                "directory {} unreachable: {}",
                self.cfg.url,
                describe(&e)
            ))
        })
    }

    /// A search as the service account. A pooled connection that fails (the directory
    /// restarted, an idle timeout closed it) is dropped and the search tried once more on a
    /// fresh one; connections that worked go back to the pool.
    fn service_search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<SearchEntry>, Failure> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(mut conn) = pooled {
            if !conn.is_closed() {
                if let Ok(found) = self.search(&mut conn, base, scope, filter, attrs) {
                    self.give_back(conn);
                    return Ok(found);
                }
                tracing::debug!(tenant = %self.tenant, "pooled LDAP connection failed; retrying on a new one");
            }
        }
        let mut conn = self.new_service_conn()?;
        let found = self.search(&mut conn, base, scope, filter, attrs)?;
        self.give_back(conn);
        Ok(found)
    }

    /// A new connection bound as the service account (or anonymous).
    fn new_service_conn(&self) -> Result<LdapConn, Failure> {
        let mut conn = self.connect()?;
        if let (Some(dn), Some(pw)) = (&self.cfg.bind_dn, &self.cfg.bind_password) {
            let res = conn
                .with_timeout(self.timeout())
                .simple_bind(dn, pw)
                .map_err(|e| unreachable_or(&self.cfg.url, &e))?;
            if res.rc != 0 {
                return Err(Failure::Unavailable(format!(
                    "the service account bind_dn was refused by {} (LDAP result {}): check tenants.{}.ldap.bind_dn and bind_password",
                    self.cfg.url, res.rc, self.tenant
                )));
            }
        }
        Ok(conn)
    }

    fn give_back(&self, conn: LdapConn) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < self.cfg.pool_size {
            pool.push(conn);
        }
    }

    fn search(
        &self,
        conn: &mut LdapConn,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<SearchEntry>, Failure> {
        let res = conn
            .with_timeout(self.timeout())
            .search(base, scope, filter, attrs.to_vec())
            .map_err(|e| unreachable_or(&self.cfg.url, &e))?;
        // 32 noSuchObject: the base does not exist, so nothing matched.
        if res.1.rc == 32 {
            return Ok(Vec::new());
        }
        let (entries, _) = res.success().map_err(|e| {
            Failure::Unavailable(format!("search under '{base}' failed: {}", describe(&e)))
        })?;
        // Active Directory answers a search at the domain root with continuation references
        // (DomainDnsZones, ...) besides the entries; they are not chased.
        entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(construct)
            .collect()
    }

    fn user_attributes(&self) -> Vec<String> {
        let mut attrs = self.cfg.username_attributes_or_default();
        attrs.extend([
            self.cfg.group_attribute.clone(),
            self.cfg.email_attribute.clone(),
            self.cfg.phone_attribute.clone(),
        ]);
        attrs
    }

    /// Check a password and collect groups, mail and mobile.
    pub fn verify(&self, username: &str, password: &[u8]) -> LdapCheck {
        self.verify_as(username, password, false)
    }

    /// [`LdapBackend::verify`] for a login whose typed name is already a store user
    /// (`known`): such a user (created before names were checked, or by an administrator)
    /// keeps logging in with the spelling the store has, when it is the directory's up to
    /// case and spaces; only a new spelling must be the directory's byte for byte.
    fn verify_as(&self, username: &str, password: &[u8], known: bool) -> LdapCheck {
        let result = self.verify_inner(username, password, known);
        match result {
            Ok((dn, info)) => LdapCheck {
                result: FirstFactorResult::Accepted(info),
                dn: Some(dn),
            },
            Err((dn, f)) => LdapCheck {
                result: f.into(),
                dn,
            },
        }
    }

    #[allow(clippy::type_complexity)]
    fn verify_inner(
        &self,
        username: &str,
        password: &[u8],
        known: bool,
    ) -> Result<(String, DirectoryInfo), (Option<String>, Failure)> {
        // An empty password would be an "unauthenticated bind", which succeeds (RFC 4513 §5.1.2).
        if password.is_empty() {
            return Err((None, Failure::Rejected("empty password".into())));
        }
        let Ok(password) = std::str::from_utf8(password) else {
            return Err((None, Failure::Rejected("password is not UTF-8".into())));
        };
        if username.is_empty() || username.len() > 256 {
            return Err((
                None,
                Failure::Rejected("user name empty or too long".into()),
            ));
        }
        let entry = match &self.cfg.user_dn_template {
            Some(template) => {
                let bind_name = bind_name(template, username);
                let mut conn = self.connect().map_err(|f| (None, f))?;
                self.bind_user(&mut conn, &bind_name, password)
                    .map_err(|f| (Some(bind_name.clone()), f))?;
                // A template with `=` is a DN; otherwise a UPN (`{username}@corp.example`),
                // which names no entry: the entry is the one with that userPrincipalName.
                let entry = if self.cfg.is_upn_template() {
                    self.read_entry_by_upn(&mut conn, &bind_name)
                } else {
                    self.read_own_entry(&mut conn, &bind_name)
                };
                let _ = conn.unbind();
                entry.map_err(|f| (Some(bind_name.clone()), f))?
            }
            None => {
                let Some(entry) = self.find_user(username).map_err(|f| (None, f))? else {
                    // Cost about what a wrong password costs: bind once to a DN that does
                    // not exist, so timing does not tell unknown users from known ones.
                    if let Ok(mut conn) = self.connect() {
                        let base = self.cfg.base_dn.as_deref().unwrap_or_default();
                        let dn = format!("cn=portcullis-no-such-user,{base}");
                        let _ = conn.with_timeout(self.timeout()).simple_bind(&dn, password);
                        let _ = conn.unbind();
                    }
                    return Err((
                        None,
                        Failure::Rejected("user not found in the directory".into()),
                    ));
                };
                let mut conn = self.connect().map_err(|f| (Some(entry.dn.clone()), f))?;
                self.bind_user(&mut conn, &entry.dn, password)
                    .map_err(|f| (Some(entry.dn.clone()), f))?;
                let _ = conn.unbind();
                entry
            }
        };
        let dn = entry.dn.clone();
        let name = self
            .directory_name(username, &entry, known)
            .map_err(|f| (Some(dn.clone()), f))?;
        let (info, group_dns) = self
            .directory_info(&name, &entry)
            .map_err(|f| (Some(dn.clone()), f))?;
        if let Some(required) = &self.cfg.required_group {
            let names = info.groups.as_deref().unwrap_or_default();
            if !in_group(required, names, &group_dns) {
                return Err((
                    Some(dn),
                    Failure::Rejected(format!("not a member of the required group '{required}'")),
                ));
            }
        }
        Ok((dn, info))
    }

    fn bind_user(&self, conn: &mut LdapConn, dn: &str, password: &str) -> Result<(), Failure> {
        let res = conn
            .with_timeout(self.timeout())
            .simple_bind(dn, password)
            .map_err(|e| unreachable_or(&self.cfg.url, &e))?;
        match res.rc {
            0 => Ok(()),
            INVALID_CREDENTIALS => Err(Failure::Rejected(
                "wrong password (directory: invalid credentials)".into(),
            )),
            // 53 unwillingToPerform: e.g. an AD account that is disabled or must change its password.
            rc => Err(Failure::Rejected(format!(
                "directory refused the bind (LDAP result {rc}{})",
                if res.text.is_empty() {
                    String::new()
                } else {
                    format!(": {}", res.text)
                }
            ))),
        }
    }

    /// Search mode: the service account finds exactly one entry (`None`: no entry).
    fn find_user(&self, username: &str) -> Result<Option<SearchEntry>, Failure> {
        let base = self.cfg.base_dn.as_deref().unwrap_or_default();
        let filter = self
            .cfg
            .user_filter
            .replace("{username}", &escape_filter_value(username));
        let attrs = self.user_attributes();
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let mut entries = self.service_search(base, Scope::Subtree, &filter, &attrs)?;
        match entries.len() {
            1 => Ok(Some(entries.remove(0))),
            0 => Ok(None),
            n => Err(Failure::Rejected(format!(
                "user_filter matched {n} directory entries; refusing an ambiguous user"
            ))),
        }
    }

    /// Direct bind with a DN template: read the bound entry, as the user.
    fn read_own_entry(&self, conn: &mut LdapConn, dn: &str) -> Result<SearchEntry, Failure> {
        let attrs = self.user_attributes();
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let mut found = self.search(conn, dn, Scope::Base, "(objectClass=*)", &attrs)?;
        if found.len() != 1 {
            return Err(Failure::Rejected(format!(
                "bound as '{dn}', but that entry cannot be read as the user (needed to confirm the user name and read groups): let users read their own entry, or use search mode (tenants.{}.ldap.bind_dn, base_dn)",
                self.tenant
            )));
        }
        Ok(found.remove(0))
    }

    /// Direct bind with a UPN template: the bind proved the UPN, so the entry is the one
    /// whose `userPrincipalName` is that UPN (searched as the user under `base_dn`).
    fn read_entry_by_upn(&self, conn: &mut LdapConn, upn: &str) -> Result<SearchEntry, Failure> {
        let Some(base) = self.cfg.base_dn.as_deref() else {
            return Err(Failure::Rejected(format!(
                "tenants.{}.ldap.base_dn is needed with a UPN user_dn_template: the user's entry is found under it by userPrincipalName",
                self.tenant
            )));
        };
        let attrs = self.user_attributes();
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let mut found = self.search(conn, base, Scope::Subtree, &upn_filter(upn), &attrs)?;
        if found.is_empty() {
            // Active Directory also binds `sAMAccountName@` its own DNS domain, whatever
            // the account's userPrincipalName says (another suffix, or none).
            if let Some((account, _)) = upn.rsplit_once('@') {
                let filter = format!("(sAMAccountName={})", escape_filter_value(account));
                found = self.search(conn, base, Scope::Subtree, &filter, &attrs)?;
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(Failure::Rejected(format!(
                "bound as '{upn}', but no entry under '{base}' that the user can read has that userPrincipalName: check tenants.{}.ldap.base_dn and user_dn_template",
                self.tenant
            ))),
            n => Err(Failure::Rejected(format!(
                "{n} directory entries have the userPrincipalName '{upn}'; refusing an ambiguous user"
            ))),
        }
    }

    /// The entry's login name, which must be the typed name byte for byte: the first value
    /// of the first username attribute the entry has (`uid` of
    /// `(|(uid={username})(mail={username}))`; the `userPrincipalName` without the template's
    /// suffix, else `sAMAccountName`, in UPN mode). The store keys users by name, so one
    /// entry must have one name: its mail, a second `uid` value or another spelling would
    /// be a second store user without the first one's factors (and free to enrol its own).
    /// The directory found the entry ignoring case and spaces, and by any attribute of the
    /// filter, but group searches such as `memberUid` compare exactly. `known`: the store
    /// has a user of the typed name, which keeps logging in when it is another spelling
    /// (case, spaces) of the login name, made before names were checked.
    fn directory_name(
        &self,
        typed: &str,
        entry: &SearchEntry,
        known: bool,
    ) -> Result<String, Failure> {
        let attributes = self.cfg.username_attributes_or_default();
        let Some((attribute, name)) = self.login_name(entry) else {
            return Err(Failure::Rejected(format!(
                "the directory entry '{}' has no (readable) attribute '{}' to confirm the user name: set tenants.{}.ldap.username_attribute to the attribute holding login names (sAMAccountName on Active Directory)",
                entry.dn,
                attributes.join("/"),
                self.tenant
            )));
        };
        if name == typed {
            return Ok(name.to_string());
        }
        let spelling = fold_name(name) == fold_name(typed);
        if spelling && known {
            // The store already has this spelling (its groups are searched with the
            // directory's): refusing it would lock the user out, since the directory's
            // spelling is then refused as a near-duplicate of it by the Engine.
            return Ok(name.to_string());
        }
        let other_name = attributes
            .iter()
            .flat_map(|a| self.names_in(entry, a).into_iter().map(move |v| (a, v)))
            .find(|(_, v)| *v == typed && !spelling);
        Err(Failure::Rejected(match other_name {
            Some((other, _)) => format!(
                "user name '{typed}' is the {other} of the directory entry '{}', whose login name is '{name}' ({attribute}): one entry is one user with one set of factors; log in as '{name}'",
                entry.dn
            ),
            None => format!(
                "user name '{typed}' is spelled '{name}' in the directory ({attribute} of '{}'); names are matched exactly: log in as '{name}'",
                entry.dn
            ),
        }))
    }

    /// The entry's values of the username attribute `a`, as names to type: a UPN without
    /// the template's suffix, and none of another suffix (no name that binds: AD binds such
    /// an account by `sAMAccountName@` the template's domain).
    fn names_in<'e>(&self, entry: &'e SearchEntry, a: &str) -> Vec<&'e str> {
        let upn_template = self
            .cfg
            .user_dn_template
            .as_deref()
            .filter(|_| self.cfg.is_upn_template());
        attr(entry, a)
            .unwrap_or_default()
            .iter()
            .filter_map(|v| match upn_template {
                Some(t) if a.eq_ignore_ascii_case(UPN) => upn_login_name(t, v),
                _ => Some(v.as_str()),
            })
            .collect()
    }

    /// The entry's login name and its attribute: the first value of the first username
    /// attribute the entry has. It is also the name `group_filter`'s `{username}` stands
    /// for (`uid` for `(|(uid={username})(mail={username}))`: `memberUid` holds uids).
    fn login_name<'e>(&self, entry: &'e SearchEntry) -> Option<(String, &'e str)> {
        self.cfg
            .username_attributes_or_default()
            .into_iter()
            .find_map(|a| {
                let first = self.names_in(entry, &a).first().copied();
                first.map(|v| (a, v))
            })
    }

    /// Groups (names for the store, DNs for `required_group`), mail and mobile.
    fn directory_info(
        &self,
        name: &str,
        entry: &SearchEntry,
    ) -> Result<(DirectoryInfo, Vec<String>), Failure> {
        let mut group_dns: Vec<String> = attr(entry, &self.cfg.group_attribute)
            .unwrap_or_default()
            .to_vec();
        let mut groups: Vec<String> = group_dns.iter().map(|g| group_name(g)).collect();
        if let Some(filter) = &self.cfg.group_filter {
            let base = self
                .cfg
                .group_base_dn
                .as_deref()
                .or(self.cfg.base_dn.as_deref())
                .unwrap_or_default();
            let filter = group_search_filter(filter, &entry.dn, name);
            let found = self.service_search(base, Scope::Subtree, &filter, &["cn"])?;
            for g in found {
                let name = attr(&g, "cn")
                    .and_then(|v| v.first().cloned())
                    .unwrap_or_else(|| group_name(&g.dn));
                if !groups.iter().any(|x| x.eq_ignore_ascii_case(&name)) {
                    groups.push(name);
                }
                group_dns.push(g.dn);
            }
        }
        groups.sort();
        groups.dedup();
        let first = |name: &str| attr(entry, name).and_then(|v| v.first().cloned());
        let info = DirectoryInfo {
            groups: Some(groups),
            email: first(&self.cfg.email_attribute),
            phone: first(&self.cfg.phone_attribute),
            reply_attributes: Vec::new(),
        };
        Ok((info, group_dns))
    }
}

impl Drop for LdapBackend {
    fn drop(&mut self) {
        let pool = self.pool.get_mut().unwrap_or_else(|p| p.into_inner());
        let conns = std::mem::take(pool);
        if conns.is_empty() {
            return;
        }
        // Each connection owns a tokio runtime, which panics when dropped inside an async
        // context; the server drops its backends on its own runtime when it stops.
        let _ = std::thread::spawn(move || drop(conns)).join();
    }
}

impl FirstFactor for LdapBackend {
    fn name(&self) -> &'static str {
        "ldap"
    }

    fn check(
        &self,
        _tenant: &str,
        username: &str,
        user: Option<&User>,
        password: &[u8],
    ) -> FirstFactorResult {
        self.verify_as(username, password, user.is_some()).result
    }

    fn creates_users(&self) -> bool {
        self.cfg.create_users
    }
}

/// Attribute values, looked up case-insensitively (directories differ in case).
fn attr<'a>(e: &'a SearchEntry, name: &str) -> Option<&'a [String]> {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// `cn=vpn-users,ou=groups,dc=example,dc=org` -> `vpn-users`; anything else unchanged.
fn group_name(dn: &str) -> String {
    let first = parse_dn(dn).and_then(|rdns| rdns.into_iter().next());
    match first.as_deref() {
        Some([(ty, value)]) if ty == "cn" => match String::from_utf8(value.clone()) {
            Ok(name) => name,
            Err(_) => dn.to_string(),
        },
        _ => dn.to_string(),
    }
}

/// A DN's RDNs, each a list of (attribute type in lower case, unescaped value).
type Rdns = Vec<Vec<(String, Vec<u8>)>>;

/// Splits a DN (RFC 4514) into RDNs and their attribute-value pairs: spaces around `,`,
/// `+` and `=` are dropped (escaped ones kept), `\,` and `\2c` escapes decoded. `None` when
/// it is not a DN (a part without `=`, a bad attribute type, a trailing `\`).
fn parse_dn(dn: &str) -> Option<Rdns> {
    let b = dn.as_bytes();
    let mut rdns: Rdns = Vec::new();
    let mut rdn: Vec<(String, Vec<u8>)> = Vec::new();
    let mut ty: Option<String> = None;
    // The bytes of the part being read, each with whether it was escaped.
    let mut cur: Vec<(u8, bool)> = Vec::new();
    let mut i = 0;
    loop {
        let c = b.get(i).copied();
        match c {
            Some(b'\\') => {
                let hex = b
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        cur.push((v, true));
                        i += 3;
                    }
                    None => {
                        cur.push((*b.get(i + 1)?, true));
                        i += 2;
                    }
                }
                continue;
            }
            Some(b'=') if ty.is_none() => {
                let t = trim_unescaped(&cur);
                if t.is_empty()
                    || !t.iter().all(|(c, esc)| {
                        !esc && (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.'))
                    })
                {
                    return None;
                }
                ty = Some(
                    t.iter()
                        .map(|(c, _)| char::from(c.to_ascii_lowercase()))
                        .collect(),
                );
                cur.clear();
            }
            None | Some(b',') | Some(b'+') => {
                let t = ty.take()?;
                rdn.push((t, trim_unescaped(&cur).iter().map(|(c, _)| *c).collect()));
                cur.clear();
                if c != Some(b'+') {
                    rdns.push(std::mem::take(&mut rdn));
                }
                if c.is_none() {
                    break;
                }
            }
            Some(x) => cur.push((x, false)),
        }
        i += 1;
    }
    Some(rdns)
}

fn trim_unescaped(part: &[(u8, bool)]) -> &[(u8, bool)] {
    let space = |p: &(u8, bool)| *p == (b' ', false);
    let start = part.iter().position(|p| !space(p)).unwrap_or(part.len());
    let end = part
        .iter()
        .rposition(|p| !space(p))
        .map_or(start, |e| e + 1);
    &part[start..end]
}

/// A DN for comparison: its RDNs with attribute types and values ASCII-case-folded and the
/// pairs of a multi-valued RDN in order.
fn normalize_dn(dn: &str) -> Option<Rdns> {
    let mut rdns = parse_dn(dn)?;
    for rdn in &mut rdns {
        for (_, value) in rdn.iter_mut() {
            value.make_ascii_lowercase();
        }
        rdn.sort();
    }
    Some(rdns)
}

/// Whether `required` is among the user's groups: a DN (anything that parses as one) equal
/// to one of the groups' DNs once both are normalized; else a group name, ignoring case.
fn in_group(required: &str, names: &[String], dns: &[String]) -> bool {
    match normalize_dn(required) {
        Some(wanted) => dns
            .iter()
            .any(|d| normalize_dn(d).is_some_and(|d| d == wanted)),
        None => names.iter().any(|g| g.eq_ignore_ascii_case(required)),
    }
}

const UPN: &str = "userPrincipalName";

/// `group_filter` with `{dn}` (the DN of the user's entry) and `{username}` (the user's name
/// as the directory spells it) filled in, RFC 4515-escaped.
fn group_search_filter(filter: &str, dn: &str, name: &str) -> String {
    filter
        .replace("{dn}", &escape_filter_value(dn))
        .replace("{username}", &escape_filter_value(name))
}

/// The name bound in direct-bind mode: `user_dn_template` with `{username}` DN-escaped.
fn bind_name(template: &str, username: &str) -> String {
    template.replace("{username}", &escape_dn_value(username))
}

/// The search for the entry of a UPN the user bound as.
fn upn_filter(upn: &str) -> String {
    format!("({UPN}={})", escape_filter_value(upn))
}

/// The name to type for the UPN `value` with the UPN `template`, `None` when the value does
/// not have the template's fixed parts (another UPN suffix: not a name that binds).
fn upn_login_name<'a>(template: &str, value: &'a str) -> Option<&'a str> {
    let (prefix, suffix) = template.split_once("{username}")?;
    let n = value.len();
    if n < prefix.len() + suffix.len() {
        return None;
    }
    let head = value.get(..prefix.len());
    let tail = value.get(n - suffix.len()..);
    match (head, tail, value.get(prefix.len()..n - suffix.len())) {
        (Some(h), Some(t), Some(middle))
            if h.eq_ignore_ascii_case(prefix) && t.eq_ignore_ascii_case(suffix) =>
        {
            Some(middle).filter(|m| !m.is_empty())
        }
        _ => None,
    }
}

/// A name as directories compare names, roughly (case and runs of spaces ignored): to pick
/// which of an entry's names the user meant.
fn fold_name(name: &str) -> String {
    name.to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// ldap3 panics on a malformed entry; a directory's bytes must not panic us.
fn construct(e: ResultEntry) -> Result<SearchEntry, Failure> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| SearchEntry::construct(e)))
        .map_err(|_| Failure::Unavailable("the directory sent a malformed search entry".into()))
}

fn unreachable_or(url: &str, e: &LdapError) -> Failure {
    Failure::Unavailable(format!("directory {url}: {}", describe(e)))
}

fn describe(e: &LdapError) -> String {
    match e {
        LdapError::Timeout { .. } => "timed out (tenants.*.ldap.timeout)".into(),
        other => other.to_string(),
    }
}

/// RFC 4515 §3: escape a value for use inside a search filter. `*`, `(`, `)`, `\` and NUL
/// become `\2a`, `\28`, `\29`, `\5c`, `\00`; so does every non-ASCII byte (as UTF-8 octets),
/// which keeps the filter printable and unambiguous.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        match b {
            b'*' | b'(' | b')' | b'\\' | 0 | 0x80..=0xff => {
                out.push_str(&format!("\\{b:02x}"));
            }
            _ => out.push(char::from(b)),
        }
    }
    out
}

/// RFC 4514 §2.4: escape a value for use as an attribute value inside a DN.
pub fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_metacharacters_are_escaped_per_rfc_4515() {
        assert_eq!(escape_filter_value("alice"), "alice");
        assert_eq!(escape_filter_value("*"), "\\2a");
        assert_eq!(escape_filter_value("a)(uid=*"), "a\\29\\28uid=\\2a");
        assert_eq!(escape_filter_value("back\\slash"), "back\\5cslash");
        assert_eq!(escape_filter_value("nul\0"), "nul\\00");
        assert_eq!(escape_filter_value("zoë"), "zo\\c3\\ab");
        // An injection attempt stays inside one assertion value.
        let f = "(uid={username})".replace("{username}", &escape_filter_value("*)(|(uid=*"));
        assert_eq!(f, "(uid=\\2a\\29\\28|\\28uid=\\2a)");
        assert_eq!(f.matches('(').count(), 1);
    }

    #[test]
    fn dn_values_are_escaped_per_rfc_4514() {
        assert_eq!(escape_dn_value("alice"), "alice");
        assert_eq!(escape_dn_value("a,ou=admins"), "a\\,ou\\=admins");
        assert_eq!(escape_dn_value("#x "), "\\#x\\ ");
        assert_eq!(escape_dn_value(" x"), "\\ x");
        assert_eq!(escape_dn_value("a+b\"c"), "a\\+b\\\"c");
    }

    #[test]
    fn group_names_come_from_the_first_rdn() {
        assert_eq!(
            group_name("cn=vpn-users,ou=groups,dc=example,dc=org"),
            "vpn-users"
        );
        assert_eq!(
            group_name("CN=Domain Admins,CN=Users,DC=corp"),
            "Domain Admins"
        );
        assert_eq!(group_name("ou=x,dc=y"), "ou=x,dc=y");
        assert_eq!(group_name("plain"), "plain");
    }

    #[test]
    fn group_names_keep_escaped_separators() {
        assert_eq!(
            group_name("cn=ops+ou=eu,dc=x"),
            "cn=ops+ou=eu,dc=x",
            "a multi-valued first RDN is not a plain cn"
        );
        assert_eq!(group_name("cn=Smith\\, J,ou=g,dc=x"), "Smith, J");
        assert_eq!(group_name("cn = ops\\2c eu ,dc=x"), "ops, eu");
    }

    fn same_dn(a: &str, b: &str) -> bool {
        matches!((normalize_dn(a), normalize_dn(b)), (Some(x), Some(y)) if x == y)
    }

    #[test]
    fn dns_compare_rdn_by_rdn_ignoring_case_and_spaces() {
        let staff = "cn=staff,ou=groups,dc=example,dc=org";
        assert!(same_dn(staff, "CN=Staff, OU=Groups,DC=Example , dc = org"));
        assert!(same_dn(staff, "  cn=staff,ou=groups,dc=example,dc=org  "));
        assert!(same_dn("cn=a\\,b,dc=x", "cn=A\\2Cb,dc=x"));
        assert!(same_dn("cn=a+uid=b,dc=x", "UID=B + CN=A,dc=x"));
        // An escaped space is part of the value.
        assert!(!same_dn("cn=a\\ ,dc=x", "cn=a,dc=x"));
        assert!(same_dn("cn=a\\ ,dc=x", "cn=a\\20,dc=x"));
        assert!(!same_dn(staff, "cn=staff,ou=people,dc=example,dc=org"));
        assert!(!same_dn(staff, "cn=staff,ou=groups,dc=example"));
        assert!(!same_dn("cn=a\\,b,dc=x", "cn=a,b=,dc=x"));
        // Not DNs.
        for bad in ["staff", "cn=x\\", ",dc=x", "cn=x,,dc=y", "c n=x", "=x"] {
            assert_eq!(normalize_dn(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn required_group_matches_a_cn_or_a_dn() {
        let names = vec!["staff".to_string(), "vpn-users".to_string()];
        let dns = vec![
            "cn=staff,ou=groups,dc=example,dc=org".to_string(),
            "CN=VPN-Users,OU=Groups,DC=example,DC=org".to_string(),
        ];
        assert!(in_group("VPN-users", &names, &dns));
        assert!(in_group(
            "cn=vpn-users, ou=groups, dc=example, dc=org",
            &names,
            &dns
        ));
        assert!(in_group(
            "CN=STAFF,OU=GROUPS,DC=EXAMPLE,DC=ORG",
            &names,
            &dns
        ));
        assert!(!in_group(
            "cn=vpn-users,ou=other,dc=example,dc=org",
            &names,
            &dns
        ));
        assert!(!in_group("admins", &names, &dns));
        assert!(!in_group("", &names, &dns));
        // A DN is compared as a DN only, not with the names.
        let odd = vec!["cn=staff,ou=groups,dc=example,dc=org".to_string()];
        assert!(!in_group("cn=staff,ou=groups,dc=example,dc=org", &odd, &[]));
    }

    #[test]
    fn upn_mode_finds_the_entry_by_the_bound_upn_and_passes_its_dn() {
        let t = "{username}@corp.example";
        let upn = bind_name(t, "bob");
        assert_eq!(upn, "bob@corp.example");
        assert_eq!(upn_filter(&upn), "(userPrincipalName=bob@corp.example)");
        // What the user typed cannot leave the assertion value.
        let upn = bind_name(t, "*)(objectClass=*");
        assert_eq!(
            upn_filter(&upn),
            "(userPrincipalName=\\2a\\29\\28objectClass\\5c=\\2a@corp.example)"
        );
        // {dn} is the entry's DN (escaped), not the UPN.
        let nested = "(&(objectClass=group)(member:1.2.840.113556.1.4.1941:={dn}))";
        assert_eq!(
            group_search_filter(nested, "CN=Bob \\, Jr,OU=Staff,DC=corp,DC=example", "bob"),
            "(&(objectClass=group)(member:1.2.840.113556.1.4.1941:=CN=Bob \\5c, Jr,OU=Staff,DC=corp,DC=example))"
        );
        assert_eq!(
            group_search_filter("(memberUid={username})", "uid=bob,dc=x", "bob"),
            "(memberUid=bob)"
        );
        // The name in a userPrincipalName is the part {username} stands for.
        assert_eq!(upn_login_name(t, "bob@corp.example"), Some("bob"));
        assert_eq!(upn_login_name(t, "bob@CORP.Example"), Some("bob"));
        assert_eq!(upn_login_name(t, "BOB@corp.example"), Some("BOB"));
        assert_eq!(upn_login_name(t, "bob@other.example"), None);
        assert_eq!(upn_login_name(t, "@corp.example"), None);
        assert_eq!(upn_login_name("pre-{username}", "PRE-bob"), Some("bob"));
        assert_eq!(upn_login_name(t, "é"), None);
    }

    fn backend(extra: &str) -> LdapBackend {
        let cfg = portcullis_core::config::Config::from_toml_str(
            &format!("[tenants.acme]\nfirst_factor = \"ldap\"\n[tenants.acme.ldap]\nurl = \"ldaps://127.0.0.1:1\"\nbase_dn = \"DC=corp,DC=example\"\n{extra}"),
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        LdapBackend::new("acme", cfg.tenants["acme"].ldap.as_ref().unwrap()).unwrap()
    }

    fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> SearchEntry {
        SearchEntry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|x| x.to_string()).collect()))
                .collect(),
            bin_attrs: Default::default(),
        }
    }

    fn refusal(r: Result<String, Failure>) -> String {
        match r {
            Err(Failure::Rejected(why)) => why,
            Err(Failure::Unavailable(why)) => panic!("unavailable: {why}"),
            Ok(name) => panic!("accepted as {name}"),
        }
    }

    #[test]
    fn the_typed_name_must_be_the_directorys_spelling() {
        // Search mode, default attribute uid (from user_filter).
        let b = backend("");
        let bob = entry("uid=bob,ou=people,dc=x", &[("uid", &["bob", "robert"])]);
        assert_eq!(
            b.directory_name("bob", &bob, false).ok().as_deref(),
            Some("bob")
        );
        // A second value of the attribute would be a second store user: refused, known
        // to the store or not.
        for known in [false, true] {
            let why = refusal(b.directory_name("robert", &bob, known));
            assert!(
                why.contains("is the uid of the directory entry 'uid=bob,")
                    && why.contains("log in as 'bob'"),
                "{why}"
            );
        }
        let why = refusal(b.directory_name("BOB", &bob, false));
        assert!(
            why.contains("log in as 'bob'") && why.contains("uid of 'uid=bob,"),
            "{why}"
        );
        let why = refusal(b.directory_name("Robert ", &bob, false));
        assert!(why.contains("log in as 'bob'"), "{why}");
        // Found by its mail (the filter compares both): the mail is not a login name.
        let b2 = backend("user_filter = \"(|(uid={username})(mail={username}))\"\n");
        let bob2 = entry(
            "uid=bob,ou=people,dc=x",
            &[("uid", &["bob"]), ("mail", &["bob@example.org"])],
        );
        assert_eq!(
            b2.directory_name("bob", &bob2, false).ok().as_deref(),
            Some("bob")
        );
        for known in [false, true] {
            let why = refusal(b2.directory_name("bob@example.org", &bob2, known));
            assert!(
                why.contains("is the mail of the directory entry")
                    && why.contains("log in as 'bob'"),
                "{why}"
            );
        }
        // An entry without a uid is known by its mail.
        let mail_only = entry("cn=svc,dc=x", &[("mail", &["svc@example.org"])]);
        assert_eq!(
            b2.directory_name("svc@example.org", &mail_only, false)
                .ok()
                .as_deref(),
            Some("svc@example.org")
        );
        // A store user of that spelling already exists (created before names were
        // checked): it keeps logging in, its groups searched with the directory's name.
        assert_eq!(
            b.directory_name("BOB", &bob, true).ok().as_deref(),
            Some("bob")
        );
        // Never another entry's name, known or not.
        assert!(b.directory_name("alice", &bob, true).is_err());
        let why = refusal(b.directory_name("bob", &entry("uid=bob,dc=x", &[]), false));
        assert!(
            why.contains("no (readable) attribute 'uid'")
                && why.contains("tenants.acme.ldap.username_attribute"),
            "{why}"
        );
        // Active Directory: sAMAccountName, named by the filter or set.
        let b = backend("user_filter = \"(&(objectClass=user)(sAMAccountName={username}))\"\n");
        let ad = entry("CN=Bob,DC=corp", &[("sAMAccountName", &["Bob"])]);
        assert_eq!(
            b.directory_name("Bob", &ad, false).ok().as_deref(),
            Some("Bob")
        );
        assert!(refusal(b.directory_name("bob", &ad, false)).contains("log in as 'Bob'"));
        let b = backend("user_filter = \"(|(mail={username})(uid={username}))\"\nusername_attribute = \"samaccountname\"\n");
        assert_eq!(
            b.directory_name("Bob", &ad, false).ok().as_deref(),
            Some("Bob")
        );
        // UPN mode: userPrincipalName without the template's fixed part.
        let b = backend("user_dn_template = \"{username}@corp.example\"\n");
        let upn = entry(
            "CN=Bob Smith,OU=Staff,DC=corp,DC=example",
            &[("userPrincipalName", &["bob@Corp.Example"])],
        );
        assert_eq!(
            b.directory_name("bob", &upn, false).ok().as_deref(),
            Some("bob")
        );
        let why = refusal(b.directory_name("BOB", &upn, false));
        assert!(why.contains("log in as 'bob'"), "{why}");
        // A UPN of another suffix binds no name: the login name is the sAMAccountName
        // (AD binds it at the template's domain), and the UPN's name is refused.
        let other = entry(
            "CN=Bob Smith,OU=Staff,DC=corp,DC=example",
            &[
                ("userPrincipalName", &["bob.smith@other.example"]),
                ("sAMAccountName", &["bob"]),
            ],
        );
        assert_eq!(
            b.directory_name("bob", &other, false).ok().as_deref(),
            Some("bob")
        );
        // Both names of one account in the template's domain: the UPN's is the login name.
        let both = entry(
            "CN=Bob Smith,OU=Staff,DC=corp,DC=example",
            &[
                ("userPrincipalName", &["bob.smith@corp.example"]),
                ("sAMAccountName", &["bob"]),
            ],
        );
        let why = refusal(b.directory_name("bob", &both, false));
        assert!(
            why.contains("is the sAMAccountName of") && why.contains("log in as 'bob.smith'"),
            "{why}"
        );
        // ... or the attribute set for it.
        let b = backend("user_dn_template = \"{username}@corp.example\"\nusername_attribute = \"sAMAccountName\"\n");
        let upn = entry(
            "CN=Bob Smith,OU=Staff,DC=corp,DC=example",
            &[
                ("sAMAccountName", &["bob"]),
                ("userPrincipalName", &["bob@corp.example"]),
            ],
        );
        assert_eq!(
            b.directory_name("bob", &upn, false).ok().as_deref(),
            Some("bob")
        );
    }

    #[test]
    fn an_unreachable_directory_is_unavailable_not_rejected() {
        let cfg: portcullis_core::config::Config = portcullis_core::config::Config::from_toml_str(
            "[tenants.acme]\nfirst_factor = \"ldap\"\n[tenants.acme.ldap]\nurl = \"ldap://127.0.0.1:1\"\nstarttls = false\nbase_dn = \"dc=x\"\ntimeout = \"2s\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let ldap = cfg.tenants["acme"].ldap.as_ref().unwrap();
        let b = LdapBackend::new("acme", ldap).unwrap();
        assert!(b.is_plaintext());
        match b.check("acme", "alice", None, b"pw") {
            FirstFactorResult::Unavailable(r) => assert!(r.contains("unreachable"), "{r}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            b.check("acme", "alice", None, b""),
            FirstFactorResult::Rejected(_)
        ));
    }
}
