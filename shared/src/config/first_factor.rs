//! Who checks a tenant's first factor (the password): `first_factor` of `[tenants.NAME]`
//! and the settings of the `ldap` and `radius` (upstream RADIUS) backends. Kept apart from
//! the rest of the schema; `Config::validate` calls [`validate_tenants`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ClientConfig, ConfigError, TenantConfig};

/// Which backend checks the first factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FirstFactorKind {
    /// Password hashes in the store (`portcullis user passwd`).
    #[default]
    Local,
    /// Bind to an LDAP directory / Active Directory as the user.
    Ldap,
    /// Forward the password to an upstream RADIUS server (NPS, FreeRADIUS).
    Radius,
    /// Delegated: the first factor was checked elsewhere; the user gives the code alone.
    None,
}

impl FirstFactorKind {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            FirstFactorKind::Local => "local",
            FirstFactorKind::Ldap => "ldap",
            FirstFactorKind::Radius => "radius",
            FirstFactorKind::None => "none",
        }
    }
}

/// `[tenants.NAME.ldap]`: an LDAP directory or Active Directory.
///
/// Either search mode (`bind_dn` + `bind_password` + `base_dn` + `user_filter`: the service
/// account finds the user's entry, then Portcullis binds as the user) or direct bind
/// (`user_dn_template`: `uid={username},ou=people,dc=example,dc=org` or the UPN
/// `{username}@corp.example`).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldaps://host:636` or `ldap://host:389` (then StartTLS, unless `starttls = false`).
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS (default true).
    #[serde(default = "yes")]
    pub starttls: bool,
    /// Verify the server's certificate and name (default true). `false` is for labs only
    /// and is warned about at start.
    #[serde(default = "yes")]
    pub tls_verify: bool,
    /// Service account for the user search.
    pub bind_dn: Option<String>,
    pub bind_password: Option<String>,
    /// Where users are searched.
    pub base_dn: Option<String>,
    /// Search filter; `{username}` is replaced by the RFC 4515-escaped user name.
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    /// Direct bind: the user's DN or UPN; `{username}` is replaced (DN-escaped). A template
    /// without `=` is a UPN (`{username}@corp.example`): the user's entry is then found under
    /// `base_dn` by `userPrincipalName`.
    pub user_dn_template: Option<String>,
    /// Attribute of the user's entry holding the login name. Directories match names
    /// ignoring case (and spaces); the store and group searches such as `memberUid` do not,
    /// so after the bind this attribute must equal the typed name byte for byte, and
    /// `group_filter`'s `{username}` is taken from it. Default: see
    /// [`LdapConfig::username_attribute_or_default`].
    pub username_attribute: Option<String>,
    /// Attribute of the user's entry listing their groups' DNs.
    #[serde(default = "default_group_attribute")]
    pub group_attribute: String,
    /// Optional group search (for directories without memberOf): `{dn}` is the DN of the
    /// user's entry, `{username}` the name from its `username_attribute`, both escaped.
    /// Searched under `group_base_dn` (else `base_dn`).
    pub group_filter: Option<String>,
    pub group_base_dn: Option<String>,
    /// Users outside this group are refused: its cn (case-insensitive), or its full DN (a
    /// value that parses as a DN; compared RDN by RDN, ignoring case and spaces around `,`
    /// `=` `+`, with the DNs of `group_attribute` and of the groups `group_filter` finds).
    pub required_group: Option<String>,
    /// Attribute holding the user's e-mail address.
    #[serde(default = "default_email_attribute")]
    pub email_attribute: String,
    /// Attribute holding the user's mobile number.
    #[serde(default = "default_phone_attribute")]
    pub phone_attribute: String,
    /// Bound on connecting and on every operation.
    #[serde(default = "default_ldap_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Service-account connections kept open for reuse.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Create users who pass the directory but are not in the store yet (default true).
    #[serde(default = "yes")]
    pub create_users: bool,
    /// PEM file of the CA that signed the directory's certificate (else the system's).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for LdapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapConfig")
            .field("url", &self.url)
            .field("starttls", &self.starttls)
            .field("tls_verify", &self.tls_verify)
            .field("bind_dn", &self.bind_dn)
            .field(
                "bind_password",
                &self.bind_password.as_ref().map(|_| "<redacted>"),
            )
            .field("base_dn", &self.base_dn)
            .field("user_filter", &self.user_filter)
            .field("user_dn_template", &self.user_dn_template)
            .field("username_attribute", &self.username_attribute)
            .field("required_group", &self.required_group)
            .finish_non_exhaustive()
    }
}

impl LdapConfig {
    /// Whether `user_dn_template` is a UPN (`{username}@corp.example`) rather than a DN.
    pub fn is_upn_template(&self) -> bool {
        self.user_dn_template
            .as_deref()
            .is_some_and(|t| !t.contains('='))
    }

    /// The attribute holding login names: `username_attribute` when set; else, with a UPN
    /// `user_dn_template`, `userPrincipalName` (compared without the template's fixed part,
    /// `@corp.example`); with a DN template, the attribute of its `ATTR={username}`; in search
    /// mode, the attribute of `user_filter`'s `(ATTR={username})` when there is exactly one
    /// such; otherwise `uid`.
    pub fn username_attribute_or_default(&self) -> String {
        self.username_attributes_or_default()
            .into_iter()
            .next()
            .unwrap_or_else(|| "uid".into())
    }

    /// Every attribute whose value may be the typed name: `username_attribute` when set;
    /// else with a UPN template `userPrincipalName` and `sAMAccountName` (Active Directory
    /// also binds `sAMAccountName@` its domain); else each attribute the DN template or
    /// `user_filter` compares with `{username}` (`(|(uid={username})(mail={username}))`
    /// lets users log in by either), else `uid`.
    pub fn username_attributes_or_default(&self) -> Vec<String> {
        if let Some(a) = &self.username_attribute {
            return vec![a.clone()];
        }
        let found = match &self.user_dn_template {
            Some(_) if self.is_upn_template() => {
                return vec!["userPrincipalName".into(), "sAMAccountName".into()]
            }
            Some(t) => attributes_given_username(t, &[',', '+'], &[',', '+']),
            None => attributes_given_username(&self.user_filter, &['('], &[')']),
        };
        if found.is_empty() {
            vec!["uid".into()]
        } else {
            found
        }
    }
}

/// The distinct attributes `ATTR` in `text` of the form `ATTR={username}`, where `ATTR` comes
/// right after the start or one of `before` and `{username}` is followed by the end or one of
/// `after` (spaces around them are allowed).
fn attributes_given_username(text: &str, before: &[char], after: &[char]) -> Vec<String> {
    const PLACEHOLDER: &str = "{username}";
    let mut found: Vec<String> = Vec::new();
    for (i, _) in text.match_indices(PLACEHOLDER) {
        let rest = text[i + PLACEHOLDER.len()..].trim_start();
        if !(rest.is_empty() || rest.starts_with(after)) {
            continue;
        }
        let Some(head) = text[..i].trim_end().strip_suffix('=') else {
            continue;
        };
        let head = head.trim_end();
        let start = head
            .rfind(|c: char| !is_attribute_char(c))
            .map_or(0, |p| p + 1);
        let name = &head[start..];
        let lead = head[..start].trim_end();
        if name.is_empty() || !(lead.is_empty() || lead.ends_with(before)) {
            continue;
        }
        if !found.iter().any(|f| f.eq_ignore_ascii_case(name)) {
            found.push(name.to_string());
        }
    }
    found
}

fn is_attribute_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ';')
}

fn yes() -> bool {
    true
}
fn default_user_filter() -> String {
    "(uid={username})".into()
}
fn default_group_attribute() -> String {
    "memberOf".into()
}
fn default_email_attribute() -> String {
    "mail".into()
}
fn default_phone_attribute() -> String {
    "mobile".into()
}
fn default_ldap_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_pool_size() -> usize {
    4
}

/// `[tenants.NAME.radius]`: upstream RADIUS servers that check the password.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamRadiusConfig {
    /// Tried in order; the next one when a server does not answer (failover).
    pub servers: Vec<UpstreamServerConfig>,
    /// How long to wait for one reply.
    #[serde(default = "default_upstream_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Retransmissions to the same server before moving to the next.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// NAS-Identifier sent upstream.
    #[serde(default = "default_nas_identifier")]
    pub nas_identifier: String,
    /// Refuse upstream replies without a Message-Authenticator (default true).
    #[serde(default = "yes")]
    pub require_message_authenticator: bool,
    /// Attributes of the upstream Access-Accept copied into Portcullis's Access-Accept,
    /// by name: `Class`, `Filter-Id`, `Session-Timeout`, ... (see [`PASS_THROUGH_ATTRIBUTES`]).
    #[serde(default)]
    pub pass_through: Vec<String>,
    /// Create users the upstream accepts but the store does not know yet (default true):
    /// they can then be enrolled.
    #[serde(default = "yes")]
    pub create_users: bool,
}

/// `[[tenants.NAME.radius.servers]]`: one upstream server.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamServerConfig {
    /// `host:port` (an IP address).
    pub address: SocketAddr,
    pub secret: String,
}

impl std::fmt::Debug for UpstreamServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamServerConfig")
            .field("address", &self.address)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_retries() -> u32 {
    1
}
fn default_nas_identifier() -> String {
    "portcullis".into()
}

/// Attributes that `pass_through` may name, with their RADIUS types.
pub const PASS_THROUGH_ATTRIBUTES: &[(&str, u8)] = &[
    ("Service-Type", 6),
    ("Framed-Protocol", 7),
    ("Framed-IP-Address", 8),
    ("Framed-IP-Netmask", 9),
    ("Filter-Id", 11),
    ("Framed-MTU", 12),
    ("Reply-Message", 18),
    ("Framed-Route", 22),
    ("Class", 25),
    ("Vendor-Specific", 26),
    ("Session-Timeout", 27),
    ("Idle-Timeout", 28),
    ("Acct-Interim-Interval", 85),
    ("Framed-Pool", 88),
];

/// The RADIUS type of a `pass_through` name (case-insensitive).
pub fn pass_through_type(name: &str) -> Option<u8> {
    PASS_THROUGH_ATTRIBUTES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, t)| *t)
}

/// Checks of `[tenants.*]` and of the clients' `first_factor` overrides.
pub(super) fn validate_tenants(
    tenants: &BTreeMap<String, TenantConfig>,
    clients: &[ClientConfig],
    path: &Path,
) -> Result<(), ConfigError> {
    let bad = |key: String, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key,
        message,
    };
    for (name, t) in tenants {
        let key = |k: &str| format!("tenants.{name}.{k}");
        match t.first_factor {
            FirstFactorKind::Ldap if t.ldap.is_none() => {
                return Err(bad(
                    key("first_factor"),
                    format!("is \"ldap\" but there is no [tenants.{name}.ldap] table"),
                ))
            }
            FirstFactorKind::Radius if t.radius.is_none() => {
                return Err(bad(
                    key("first_factor"),
                    format!("is \"radius\" but there is no [tenants.{name}.radius] table"),
                ))
            }
            _ => {}
        }
        if let Some(l) = &t.ldap {
            validate_ldap(l, &|k| key(&format!("ldap.{k}")), &bad)?;
        }
        if let Some(r) = &t.radius {
            validate_upstream(r, &|k| key(&format!("radius.{k}")), &bad)?;
        }
    }
    for (i, c) in clients.iter().enumerate() {
        let Some(kind) = c.first_factor else { continue };
        let key = format!("radius.clients[{i}].first_factor");
        let t = tenants.get(&c.tenant);
        let has = match kind {
            FirstFactorKind::Ldap => t.is_some_and(|t| t.ldap.is_some()),
            FirstFactorKind::Radius => t.is_some_and(|t| t.radius.is_some()),
            FirstFactorKind::Local | FirstFactorKind::None => true,
        };
        if !has {
            return Err(bad(
                key,
                format!(
                    "is \"{}\" but tenant '{}' has no [tenants.{}.{}] table",
                    kind.as_str(),
                    c.tenant,
                    c.tenant,
                    kind.as_str()
                ),
            ));
        }
    }
    Ok(())
}

fn validate_ldap(
    l: &LdapConfig,
    key: &dyn Fn(&str) -> String,
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let ldaps = l.url.starts_with("ldaps://");
    if !ldaps && !l.url.starts_with("ldap://") {
        return Err(bad(
            key("url"),
            format!("'{}' must start with ldaps:// or ldap://", l.url),
        ));
    }
    match (&l.user_dn_template, &l.base_dn) {
        (Some(t), base) => {
            if !t.contains("{username}") {
                return Err(bad(
                    key("user_dn_template"),
                    "must contain {username}".into(),
                ));
            }
            if l.is_upn_template() && base.is_none() {
                return Err(bad(
                    key("base_dn"),
                    format!(
                        "is needed with the UPN user_dn_template '{t}': after the bind the user's entry (name, groups, mail) is found under it by userPrincipalName"
                    ),
                ));
            }
        }
        (None, None) => {
            return Err(bad(
                key("base_dn"),
                "is needed for the user search (or set user_dn_template for a direct bind)".into(),
            ))
        }
        (None, Some(_)) => {
            if !l.user_filter.contains("{username}") {
                return Err(bad(key("user_filter"), "must contain {username}".into()));
            }
            if !(l.user_filter.starts_with('(') && l.user_filter.ends_with(')')) {
                return Err(bad(
                    key("user_filter"),
                    format!(
                        "'{}' is not an LDAP filter; write it in parentheses, e.g. (uid={{username}})",
                        l.user_filter
                    ),
                ));
            }
        }
    }
    if let Some(a) = &l.username_attribute {
        if a.is_empty() || !a.chars().all(is_attribute_char) {
            return Err(bad(
                key("username_attribute"),
                format!(
                    "'{a}' is not an attribute name; name the attribute that holds login names, e.g. uid or sAMAccountName"
                ),
            ));
        }
    }
    if l.bind_dn.is_some() != l.bind_password.is_some() {
        return Err(bad(
            key("bind_password"),
            "bind_dn and bind_password go together (or leave both out for an anonymous search)"
                .into(),
        ));
    }
    if let Some(f) = &l.group_filter {
        if !(f.contains("{dn}") || f.contains("{username}")) {
            return Err(bad(
                key("group_filter"),
                "must contain {dn} or {username}".into(),
            ));
        }
        if l.group_base_dn.is_none() && l.base_dn.is_none() {
            return Err(bad(
                key("group_base_dn"),
                "is needed for the group search (or set base_dn)".into(),
            ));
        }
    }
    if l.timeout.is_zero() {
        return Err(bad(key("timeout"), "must be more than 0s".into()));
    }
    if l.pool_size == 0 || l.pool_size > 64 {
        return Err(bad(key("pool_size"), "must be between 1 and 64".into()));
    }
    Ok(())
}

fn validate_upstream(
    r: &UpstreamRadiusConfig,
    key: &dyn Fn(&str) -> String,
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if r.servers.is_empty() {
        return Err(bad(
            key("servers"),
            "needs at least one [[...radius.servers]] entry with address and secret".into(),
        ));
    }
    for (i, s) in r.servers.iter().enumerate() {
        if s.secret.is_empty() {
            return Err(bad(
                key(&format!("servers[{i}].secret")),
                "must not be empty".into(),
            ));
        }
    }
    if r.timeout.is_zero() || r.timeout > Duration::from_secs(30) {
        return Err(bad(key("timeout"), "must be between 1ms and 30s".into()));
    }
    if r.retries > 10 {
        return Err(bad(key("retries"), "must be at most 10".into()));
    }
    if r.nas_identifier.is_empty() || r.nas_identifier.len() > 253 {
        return Err(bad(
            key("nas_identifier"),
            "must be 1 to 253 bytes long".into(),
        ));
    }
    for (i, name) in r.pass_through.iter().enumerate() {
        if pass_through_type(name).is_none() {
            let known: Vec<&str> = PASS_THROUGH_ATTRIBUTES.iter().map(|(n, _)| *n).collect();
            return Err(bad(
                key(&format!("pass_through[{i}]")),
                format!(
                    "'{name}' is not an attribute that can be passed through; use one of {}",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, super::ConfigError> {
        Config::from_toml_str(text, Path::new("test.toml"))
    }

    const LDAP: &str = r#"
[tenants.acme]
first_factor = "ldap"
[tenants.acme.ldap]
url = "ldaps://dc1.example.org"
bind_dn = "cn=svc,dc=example,dc=org"
bind_password = "pw"
base_dn = "dc=example,dc=org"
user_filter = "(&(objectClass=user)(sAMAccountName={username}))"
required_group = "vpn-users"
"#;

    #[test]
    fn ldap_tenant_parses_with_secure_defaults() {
        let c = parse(LDAP).unwrap();
        let t = &c.tenants["acme"];
        assert_eq!(t.first_factor, super::FirstFactorKind::Ldap);
        let l = t.ldap.as_ref().unwrap();
        assert!(l.tls_verify);
        assert!(l.starttls);
        assert!(l.create_users);
        assert_eq!(l.group_attribute, "memberOf");
        assert_eq!(l.phone_attribute, "mobile");
        assert!(!format!("{l:?}").contains("\"pw\""));
    }

    #[test]
    fn ldap_without_its_table_is_refused() {
        let e = parse("[tenants.acme]\nfirst_factor = \"ldap\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants.acme.first_factor"), "{e}");
    }

    #[test]
    fn ldap_url_and_filter_are_checked() {
        let e = parse(&LDAP.replace("ldaps://", "http://"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants.acme.ldap.url"), "{e}");
        let e = parse(&LDAP.replace("{username}", "alice"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants.acme.ldap.user_filter"), "{e}");
        let e = parse(
            &LDAP
                .replace("tls_verify", "x")
                .replace("required_group", "requierd_group"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("requierd_group"), "{e}");
    }

    #[test]
    fn username_attribute_defaults_to_the_one_user_filter_names() {
        let ldap = |text: &str| {
            let c = parse(text).unwrap();
            let l = c.tenants["acme"].ldap.clone().unwrap();
            l.username_attribute_or_default()
        };
        // The AD example: sAMAccountName from the filter.
        assert_eq!(ldap(LDAP), "sAMAccountName");
        let filter = |f: &str| LDAP.replace("(&(objectClass=user)(sAMAccountName={username}))", f);
        assert_eq!(ldap(&filter("(uid={username})")), "uid");
        assert_eq!(
            ldap(&filter("(&(objectClass=person)( cn = {username} ))")),
            "cn"
        );
        assert_eq!(
            ldap(&filter("(|(uid={username})(UID={username}))")),
            "uid",
            "the same attribute twice is still one"
        );
        // Two different attributes: both may hold the typed name (uid is named first).
        assert_eq!(ldap(&filter("(|(uid={username})(mail={username}))")), "uid");
        let c = parse(&filter("(|(uid={username})(mail={username}))")).unwrap();
        assert_eq!(
            c.tenants["acme"]
                .ldap
                .as_ref()
                .unwrap()
                .username_attributes_or_default(),
            ["uid", "mail"]
        );
        assert_eq!(ldap(&filter("(mail={username}@corp.example)")), "uid");
        assert_eq!(ldap(&filter("(cn:dn:={username})")), "uid");
        // Set explicitly.
        let set = LDAP.replace(
            "required_group",
            "username_attribute = \"cn\"\nrequired_group",
        );
        assert_eq!(ldap(&set), "cn");
        let e = parse(&set.replace("\"cn\"", "\"(cn)\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants.acme.ldap.username_attribute"), "{e}");
        // Direct bind: the DN template's attribute; a UPN: userPrincipalName.
        let direct = |t: &str| {
            format!(
                "[tenants.acme]\nfirst_factor = \"ldap\"\n[tenants.acme.ldap]\nurl = \"ldaps://x\"\nbase_dn = \"dc=x\"\nuser_dn_template = \"{t}\"\n"
            )
        };
        assert_eq!(ldap(&direct("cn={username},ou=people,dc=x")), "cn");
        assert_eq!(ldap(&direct("uid = {username} ,dc=x")), "uid");
        assert_eq!(
            ldap(&direct("{username}@corp.example")),
            "userPrincipalName"
        );
    }

    #[test]
    fn a_upn_template_needs_base_dn() {
        let text = "[tenants.acme]\nfirst_factor = \"ldap\"\n[tenants.acme.ldap]\nurl = \"ldaps://x\"\nuser_dn_template = \"{username}@corp.example\"\n";
        let e = parse(text).unwrap_err().to_string();
        assert!(
            e.contains("tenants.acme.ldap.base_dn") && e.contains("userPrincipalName"),
            "{e}"
        );
        parse(&format!("{text}base_dn = \"DC=corp,DC=example\"\n")).unwrap();
        // A DN template does not.
        parse(&text.replace("{username}@corp.example", "uid={username},dc=x")).unwrap();
    }

    const UPSTREAM: &str = r#"
[tenants.acme]
first_factor = "radius"
[tenants.acme.radius]
pass_through = ["Class", "Filter-Id"]
[[tenants.acme.radius.servers]]
address = "127.0.0.1:1812"
secret = "up"
"#;

    #[test]
    fn upstream_radius_parses() {
        let c = parse(UPSTREAM).unwrap();
        let r = c.tenants["acme"].radius.as_ref().unwrap();
        assert_eq!(r.servers.len(), 1);
        assert!(r.require_message_authenticator);
        assert_eq!(super::pass_through_type("filter-id"), Some(11));
    }

    #[test]
    fn unknown_pass_through_attribute_is_refused() {
        let e = parse(&UPSTREAM.replace("Filter-Id", "Filter-Idd"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants.acme.radius.pass_through[1]"), "{e}");
    }

    #[test]
    fn tenant_names_keep_their_case() {
        let c = parse("[tenants.AcMe]\nfirst_factor = \"none\"\n").unwrap();
        assert_eq!(c.tenants.keys().collect::<Vec<_>>(), ["AcMe"]);
    }

    #[test]
    fn client_override_needs_the_tenants_table() {
        let text = format!(
            "{UPSTREAM}\n[[radius.clients]]\nname = \"vpn\"\naddress = \"127.0.0.1/32\"\nsecret = \"s\"\ntenant = \"acme\"\nfirst_factor = \"ldap\"\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("radius.clients[0].first_factor"), "{e}");
        let ok = text.replace("first_factor = \"ldap\"", "first_factor = \"none\"");
        parse(&ok).unwrap();
    }
}
