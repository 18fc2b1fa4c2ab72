//! `first_factor = "ldap"`: LDAP directories and Active Directory.
//!
//! Search mode: a service account (from a small pool of bound connections) finds the user's
//! entry with `user_filter`, then a fresh connection binds as the user with their password.
//! Direct-bind mode: bind as `user_dn_template` (a DN or a UPN), then read the entry as the
//! user. Group membership comes from `group_attribute` (memberOf) and/or a group search.
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
                let pem = std::fs::read(path).map_err(|source| LdapSetupError::CaFile {
                    tenant: tenant.into(),
                    path: path.display().to_string(),
                    source,
                })?;
                let cert =
                    native_tls::Certificate::from_pem(&pem).map_err(|e| LdapSetupError::Tls {
                        tenant: tenant.into(),
                        message: format!(
                            "ca_file {} is not a PEM certificate: {e}",
                            path.display()
                        ),
                    })?;
                let mut b = native_tls::TlsConnector::builder();
                b.add_root_certificate(cert);
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

    fn user_attributes(&self) -> Vec<&str> {
        vec![
            self.cfg.group_attribute.as_str(),
            self.cfg.email_attribute.as_str(),
            self.cfg.phone_attribute.as_str(),
        ]
    }

    /// Check a password and collect groups, mail and mobile.
    pub fn verify(&self, username: &str, password: &[u8]) -> LdapCheck {
        let result = self.verify_inner(username, password);
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
        let (dn, entry) = match &self.cfg.user_dn_template {
            Some(template) => {
                let dn = template.replace("{username}", &escape_dn_value(username));
                let mut conn = self.connect().map_err(|f| (None, f))?;
                self.bind_user(&mut conn, &dn, password)
                    .map_err(|f| (Some(dn.clone()), f))?;
                // A template with `=` is a DN; otherwise a UPN (`{username}@corp.example`).
                let by_dn = template.contains('=');
                let entry = self.read_own_entry(&mut conn, &dn, by_dn, username);
                let _ = conn.unbind();
                (dn, entry)
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
                let dn = entry.dn.clone();
                let mut conn = self.connect().map_err(|f| (Some(dn.clone()), f))?;
                self.bind_user(&mut conn, &dn, password)
                    .map_err(|f| (Some(dn.clone()), f))?;
                let _ = conn.unbind();
                (dn, Some(entry))
            }
        };
        let info = self
            .directory_info(&dn, username, entry.as_ref())
            .map_err(|f| (Some(dn.clone()), f))?;
        if let Some(required) = &self.cfg.required_group {
            let groups = info.groups.as_deref().unwrap_or_default();
            let dns = entry
                .as_ref()
                .and_then(|e| attr(e, &self.cfg.group_attribute))
                .unwrap_or_default();
            let member = groups
                .iter()
                .chain(dns.iter())
                .any(|g| g.eq_ignore_ascii_case(required));
            if !member {
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
        let mut entries =
            self.service_search(base, Scope::Subtree, &filter, &self.user_attributes())?;
        match entries.len() {
            1 => Ok(Some(entries.remove(0))),
            0 => Ok(None),
            n => Err(Failure::Rejected(format!(
                "user_filter matched {n} directory entries; refusing an ambiguous user"
            ))),
        }
    }

    /// Direct-bind mode: read the user's entry as the user (by DN, else by `user_filter`).
    fn read_own_entry(
        &self,
        conn: &mut LdapConn,
        dn: &str,
        by_dn: bool,
        username: &str,
    ) -> Option<SearchEntry> {
        let attrs = self.user_attributes();
        let found = if by_dn {
            self.search(conn, dn, Scope::Base, "(objectClass=*)", &attrs)
        } else {
            let base = self.cfg.base_dn.as_deref()?;
            let filter = self
                .cfg
                .user_filter
                .replace("{username}", &escape_filter_value(username));
            self.search(conn, base, Scope::Subtree, &filter, &attrs)
        };
        found
            .ok()
            .and_then(|mut v| (v.len() == 1).then(|| v.remove(0)))
    }

    fn directory_info(
        &self,
        dn: &str,
        username: &str,
        entry: Option<&SearchEntry>,
    ) -> Result<DirectoryInfo, Failure> {
        let mut groups: Option<Vec<String>> = entry.map(|e| {
            attr(e, &self.cfg.group_attribute)
                .unwrap_or_default()
                .iter()
                .map(|g| group_name(g))
                .collect()
        });
        if let Some(filter) = &self.cfg.group_filter {
            let base = self
                .cfg
                .group_base_dn
                .as_deref()
                .or(self.cfg.base_dn.as_deref())
                .unwrap_or_default();
            let filter = filter
                .replace("{dn}", &escape_filter_value(dn))
                .replace("{username}", &escape_filter_value(username));
            let found = self.service_search(base, Scope::Subtree, &filter, &["cn"])?;
            let list = groups.get_or_insert_with(Vec::new);
            for g in found {
                let name = attr(&g, "cn")
                    .and_then(|v| v.first().cloned())
                    .unwrap_or_else(|| group_name(&g.dn));
                if !list.iter().any(|x| x.eq_ignore_ascii_case(&name)) {
                    list.push(name);
                }
            }
        }
        if let Some(list) = groups.as_mut() {
            list.sort();
            list.dedup();
        }
        let first = |name: &str| {
            entry
                .and_then(|e| attr(e, name))
                .and_then(|v| v.first().cloned())
        };
        Ok(DirectoryInfo {
            groups,
            email: first(&self.cfg.email_attribute),
            phone: first(&self.cfg.phone_attribute),
            reply_attributes: Vec::new(),
        })
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
        _user: Option<&User>,
        password: &[u8],
    ) -> FirstFactorResult {
        self.verify(username, password).result
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
    let first = dn.split(',').next().unwrap_or(dn);
    match first.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("cn") => v.trim().to_string(),
        _ => dn.to_string(),
    }
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
