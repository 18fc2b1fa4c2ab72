//! Overrides from the environment: `PORTCULLIS__SECTION__KEY=value` (any case).
//!
//! Every value is kept as the exact text of the variable, as the config file's strings
//! are: a secret such as `00123` or `true` stays that text. Settings that are numbers,
//! booleans or durations are read from that text by their own type when the config is
//! deserialized (`max_connections = "16"`, `require_message_authenticator = "false"`).
//! Only the list settings in [`LIST_KEYS`] are split, at commas.

use std::ffi::OsString;

/// The prefix of the variables, with its separator.
const PREFIX: &str = "portcullis__";

/// Settings given in the environment as a comma-separated list
/// (`PORTCULLIS__RADIUS__LISTEN=127.0.0.1:1812,[::1]:1812`; empty: none).
pub(super) const LIST_KEYS: [&str; 2] = ["radius.listen", "radius.accounting_listen"];

/// The environment's overrides, sorted for the `config` crate.
#[derive(Debug, Default)]
pub(super) struct Overrides {
    /// Variables whose value is a string (the `config` crate maps their names to keys).
    pub strings: config::Map<String, String>,
    /// The list settings, by key, already split.
    pub lists: Vec<(String, Vec<String>)>,
}

/// The config key a variable name sets, as the `config` crate maps it (lowercase,
/// prefix dropped, `__` between sections): `None` without the prefix.
fn key_of(name: &str) -> Option<String> {
    let lower = name.to_lowercase();
    lower
        .strip_prefix(PREFIX)
        .map(|rest| rest.replace("__", "."))
}

/// The overrides in `vars` (the process's: `std::env::vars_os()`). A variable of ours
/// whose value is not UTF-8 is an error (naming the variable, never showing the value).
pub(super) fn overrides(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Overrides, String> {
    let mut out = Overrides::default();
    for (name, value) in vars {
        // Names that are not UTF-8 are not ours (the `config` crate skips them too).
        let Ok(name) = name.into_string() else {
            continue;
        };
        let Some(key) = key_of(&name) else { continue };
        let value = value
            .into_string()
            .map_err(|_| format!("environment variable {name}: the value is not valid UTF-8"))?;
        if LIST_KEYS.contains(&key.as_str()) {
            let items = if value.trim().is_empty() {
                Vec::new()
            } else {
                value.split(',').map(|s| s.trim().to_string()).collect()
            };
            out.lists.push((key, items));
        } else {
            out.strings.insert(name, value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::time::Duration;

    use super::super::Config;

    const FILE: &str = "[store]\nurl = \"postgres://app:pw@db/p\"\n\
        [[radius.clients]]\nname = \"vpn\"\naddress = \"10.0.0.0/8\"\nsecret = \"from-the-file\"\ntenant = \"acme\"\n\
        [tenants.acme.duo]\nikey = \"DIXXXXXXXXXXXXXXXXXX\"\nskey = \"file-skey\"\napi_host = \"api-x.duosecurity.com\"\n\
        [tenants.acme.ldap]\nurl = \"ldaps://dc1\"\nbase_dn = \"dc=x\"\nbind_dn = \"cn=svc\"\nbind_password = \"pw\"\n";

    fn load(env: &[(&str, &str)]) -> Result<Config, super::super::ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, FILE).unwrap();
        let vars = env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            // Variables that are not ours are left alone.
            .chain([(OsString::from("PATH"), OsString::from("/bin"))]);
        Config::load_with_env(&path, vars)
    }

    #[test]
    fn secrets_that_look_like_numbers_or_booleans_keep_their_exact_text() {
        let c = load(&[
            ("PORTCULLIS__TENANTS__ACME__DUO__SKEY", "00123"),
            ("PORTCULLIS__TENANTS__ACME__LDAP__BIND_PASSWORD", "true"),
            ("PORTCULLIS__ISSUER", "1e3"),
            ("PORTCULLIS__TENANTS__ACME__DUO__IKEY", "0x10"),
        ])
        .unwrap();
        let t = &c.tenants["acme"];
        assert_eq!(t.duo.as_ref().unwrap().skey.as_deref(), Some("00123"));
        assert_eq!(t.duo.as_ref().unwrap().ikey, "0x10");
        assert_eq!(
            t.ldap.as_ref().unwrap().bind_password.as_deref(),
            Some("true")
        );
        assert_eq!(c.issuer, "1e3");
    }

    #[test]
    fn numbers_booleans_durations_and_lists_still_come_from_the_environment() {
        let c = load(&[
            ("PORTCULLIS__STORE__MAX_CONNECTIONS", "16"),
            ("PORTCULLIS__STORE__STATEMENT_TIMEOUT", "2s"),
            ("PORTCULLIS__TOTP__WINDOW", "2"),
            ("portcullis__radius__max_in_flight", "64"),
            ("PORTCULLIS__TENANTS__ACME__LDAP__TLS_VERIFY", "false"),
            ("PORTCULLIS__RADIUS__LISTEN", "127.0.0.1:1812, [::1]:1812"),
            ("PORTCULLIS__RADIUS__ACCOUNTING_LISTEN", "127.0.0.1:1813"),
        ])
        .unwrap();
        assert_eq!(c.store.max_connections, 16);
        assert_eq!(c.store.statement_timeout, Duration::from_secs(2));
        assert_eq!(c.totp.window, 2);
        assert_eq!(c.radius.max_in_flight, 64);
        assert!(!c.tenants["acme"].ldap.as_ref().unwrap().tls_verify);
        assert_eq!(
            c.radius.listen,
            vec![
                "127.0.0.1:1812".parse().unwrap(),
                "[::1]:1812".parse().unwrap()
            ]
        );
        assert_eq!(
            c.radius.accounting_listen,
            vec!["127.0.0.1:1813".parse().unwrap()]
        );
        // An empty list turns the listeners off (radius.listen has a default to override).
        let c = load(&[
            ("PORTCULLIS__RADIUS__LISTEN", ""),
            ("PORTCULLIS__RADIUS__ACCOUNTING_LISTEN", ""),
        ])
        .unwrap();
        assert!(c.radius.listen.is_empty(), "{:?}", c.radius.listen);
        assert!(c.radius.accounting_listen.is_empty());
        // A number that is not one names its key.
        let e = load(&[("PORTCULLIS__STORE__MAX_CONNECTIONS", "many")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.max_connections"), "{e}");
    }

    #[test]
    fn a_value_that_is_not_utf8_names_the_variable() {
        use std::os::unix::ffi::OsStringExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, "").unwrap();
        let e = Config::load_with_env(
            &path,
            [(
                OsString::from("PORTCULLIS__ISSUER"),
                OsString::from_vec(vec![b's', 0xff]),
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("PORTCULLIS__ISSUER") && e.contains("UTF-8"),
            "{e}"
        );
        // Not ours: ignored.
        Config::load_with_env(
            &path,
            [(OsString::from("OTHER"), OsString::from_vec(vec![0xff]))],
        )
        .unwrap();
    }
}
