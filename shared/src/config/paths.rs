//! Settings that name files. [`Config::visit_paths`] is the one list of them: at load every
//! relative path is made absolute against the config file's directory ([`Config::load`]
//! calls `resolve_paths`), so that the rest of the code never depends on the working
//! directory, and `portcullis config check` opens the files it lists
//! ([`Config::path_settings`], [`PathSetting::check`]).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::Config;

/// What a setting's file is to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathKind {
    /// A secret read at start (`skey_file`, `password_file`, `auth_token_file`,
    /// `ntfy_token_file`): it must exist and be readable.
    Secret,
    /// A PEM certificate, chain or private key read at start (`tls_cert`, `tls_key`,
    /// `ca_file`, `sslrootcert`): it must exist and be readable.
    Pem,
    /// The master key (`secrets.key_file`): made for an empty store when missing; when it
    /// exists it must be readable.
    MasterKey,
    /// Made at start when missing (the SQLite database, the PAM socket).
    Created,
}

/// One setting that names a file: its config key, its (resolved) path, what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSetting {
    /// The config key, e.g. `http.tls_key` or `tenants.acme.duo.skey_file`.
    pub key: String,
    pub path: PathBuf,
    pub kind: PathKind,
}

impl PathSetting {
    /// Whether the file can be opened and read, as the daemon will need to at start:
    /// `Err` names the key, the path and the operating system's reason, e.g.
    /// `http.tls_key /etc/x.pem: cannot read: Permission denied (os error 13)`. Nothing of
    /// the file's content is read beyond its first byte, and none of it is ever shown.
    /// Files made at start, and a master key that does not exist yet, pass.
    pub fn check(&self) -> Result<(), String> {
        match self.kind {
            PathKind::Created => return Ok(()),
            PathKind::MasterKey => {
                // As `portcullis serve` decides: only a missing name is made anew (a
                // dangling symbolic link is not missing, and cannot be read).
                if let Err(e) = std::fs::symlink_metadata(&self.path) {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        return Ok(());
                    }
                }
            }
            PathKind::Secret | PathKind::Pem => {}
        }
        let cannot =
            |e: std::io::Error| format!("{} {}: cannot read: {e}", self.key, self.path.display());
        let mut file = std::fs::File::open(&self.path).map_err(cannot)?;
        let mut first = [0u8; 1];
        // A directory opens, and fails here (EISDIR).
        if file.read(&mut first).map_err(cannot)? == 0 {
            return Err(format!("{} {}: is empty", self.key, self.path.display()));
        }
        Ok(())
    }

    /// A warning when this is a secret file ([`PathKind::Secret`]) that its group or others
    /// may read or write (`mode & 0o077`), naming the key, the path, the mode and the
    /// `chmod` that fixes it: such a file written with the default umask (0644) is readable
    /// by every local user. A warning, not a refusal (unlike `http.tls_key`): deployments
    /// made before this check have such files. `None` for other kinds, and for a file that
    /// cannot be looked at ([`PathSetting::check`] reports that).
    pub fn mode_warning(&self) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        if self.kind != PathKind::Secret {
            return None;
        }
        // As the daemon reads it: through a symbolic link.
        let mode = std::fs::metadata(&self.path).ok()?.permissions().mode() & 0o7777;
        let loose = mode & 0o077;
        if loose == 0 {
            return None;
        }
        let file = self.path.display();
        Some(format!(
            "{} {file} has mode {mode:04o}: {} may {} the secret; chmod 600 {file} (owned by the user the daemon runs as)",
            self.key,
            who(loose),
            what(loose),
        ))
    }
}

/// Who besides the owner has the permission bits `loose` (some of `0o077`).
fn who(loose: u32) -> &'static str {
    match (loose & 0o070 != 0, loose & 0o007 != 0) {
        (true, true) => "group and others",
        (true, false) => "its group",
        _ => "every local user",
    }
}

/// What the bits `loose` let them do with a file.
fn what(loose: u32) -> &'static str {
    match (loose & 0o044 != 0, loose & 0o022 != 0) {
        (true, true) => "read and change",
        (true, false) => "read",
        (false, true) => "change",
        (false, false) => "use",
    }
}

/// A visitor of path settings: the key, the kind, the path (which it may change).
pub(super) type Visit<'a> = dyn FnMut(&str, PathKind, &mut PathBuf) + 'a;

impl Config {
    /// Calls `f` with every setting that names a file. The one list of them: a new path
    /// setting goes here, and is then resolved at load and opened by `config check`.
    ///
    /// Paths inside `store.url` (`sqlite://PATH`, PostgreSQL's `sslrootcert=PATH`) are
    /// written back into the URL when `f` changes them; `Err((key, message))` when a
    /// changed path cannot be written there (not UTF-8).
    pub(super) fn visit_paths(&mut self, f: &mut Visit<'_>) -> Result<(), (String, String)> {
        use PathKind::*;
        fn opt(f: &mut Visit<'_>, key: &str, kind: PathKind, p: &mut Option<PathBuf>) {
            if let Some(p) = p {
                f(key, kind, p);
            }
        }
        visit_store_url(&mut self.store.url, f)?;
        f("secrets.key_file", MasterKey, &mut self.secrets.key_file);
        if let Some(h) = &mut self.http {
            opt(f, "http.tls_cert", Pem, &mut h.tls_cert);
            opt(f, "http.tls_key", Pem, &mut h.tls_key);
        }
        if let Some(p) = &mut self.pam {
            f("pam.socket", Created, &mut p.socket);
        }
        for (name, t) in &mut self.tenants {
            let key = |k: &str| format!("tenants.{name}.{k}");
            if let Some(d) = &mut t.duo {
                opt(f, &key("duo.skey_file"), Secret, &mut d.skey_file);
                opt(f, &key("duo.ca_file"), Pem, &mut d.ca_file);
            }
            if let Some(s) = &mut t.sms {
                opt(
                    f,
                    &key("sms.auth_token_file"),
                    Secret,
                    &mut s.auth_token_file,
                );
                opt(f, &key("sms.ca_file"), Pem, &mut s.ca_file);
            }
            if let Some(e) = &mut t.email {
                opt(f, &key("email.password_file"), Secret, &mut e.password_file);
                opt(f, &key("email.ca_file"), Pem, &mut e.ca_file);
            }
            if let Some(p) = &mut t.push {
                opt(
                    f,
                    &key("push.ntfy_token_file"),
                    Secret,
                    &mut p.ntfy_token_file,
                );
                opt(f, &key("push.ca_file"), Pem, &mut p.ca_file);
            }
            if let Some(l) = &mut t.ldap {
                opt(f, &key("ldap.ca_file"), Pem, &mut l.ca_file);
            }
        }
        Ok(())
    }

    /// Warnings about files that hold secrets and that other local users may read, for
    /// `config check` and the start of `serve`: every secret file of
    /// [`PathSetting::mode_warning`], then the config file `config_file` itself when others
    /// may read it (`mode & 0o004`) and it holds secrets (see [`Config::secrets_in_file`]).
    pub fn secret_file_warnings(&self, config_file: &Path) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let mut out: Vec<String> = self
            .path_settings()
            .iter()
            .filter_map(PathSetting::mode_warning)
            .collect();
        let Ok(meta) = std::fs::metadata(config_file) else {
            return out;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o004 == 0 {
            return out;
        }
        // What the file itself says, without the environment's overrides (a secret given
        // only in the environment is not in the file); when the file alone does not load
        // (it relies on the environment for a setting), what was loaded.
        let secrets = match Config::load_with_env(config_file, Vec::new()) {
            Ok(own) => own.secrets_in_file(),
            Err(_) => self.secrets_in_file(),
        };
        if secrets.is_empty() {
            return out;
        }
        let file = config_file.display();
        out.push(format!(
            "config file {file} has mode {mode:04o} and holds secrets ({}): every local user may read them; \
             chown root:portcullis {file} && chmod 640 {file} (the daemon's group reads it), or chmod 600 {file}",
            secrets.join(", ")
        ));
        out
    }

    /// The settings of this config that hold a secret in the config file itself (keys,
    /// never values): RADIUS shared secrets, a password in `store.url`, the providers'
    /// inline keys, tokens and passwords.
    pub fn secrets_in_file(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.radius.clients.iter().any(|c| !c.secret.is_empty()) {
            out.push("radius.clients secret".to_string());
        }
        if crate::store::is_postgres_url(&self.store.url)
            && self.store.redacted_url() != self.store.url
        {
            out.push("store.url password".to_string());
        }
        for (name, t) in &self.tenants {
            let mut has = |set: bool, k: &str| {
                if set {
                    out.push(format!("tenants.{name}.{k}"));
                }
            };
            if let Some(d) = &t.duo {
                has(d.skey.is_some(), "duo.skey");
            }
            if let Some(s) = &t.sms {
                has(s.auth_token.is_some(), "sms.auth_token");
                // A webhook's headers carry its credentials (`Authorization`, API keys).
                has(!s.headers.is_empty(), "sms.headers");
            }
            if let Some(e) = &t.email {
                has(e.password.is_some(), "email.password");
            }
            if let Some(p) = &t.push {
                has(p.ntfy_token.is_some(), "push.ntfy_token");
                has(p.webhook_secret.is_some(), "push.webhook_secret");
            }
            if let Some(l) = &t.ldap {
                has(l.bind_password.is_some(), "ldap.bind_password");
            }
            if let Some(r) = &t.radius {
                has(!r.servers.is_empty(), "radius.servers secret");
            }
        }
        out
    }

    /// Every setting that names a file, in the order of the config file's sections.
    pub fn path_settings(&self) -> Vec<PathSetting> {
        let mut out = Vec::new();
        // Visiting needs `&mut`; the copy is changed by nobody, so writing back cannot fail.
        let _ = self.clone().visit_paths(&mut |key, kind, path| {
            out.push(PathSetting {
                key: key.to_string(),
                path: path.clone(),
                kind,
            })
        });
        out
    }

    /// Makes every relative path absolute against the directory of `config_file`, as
    /// given (a relative `config_file` is taken from the working directory, now). An empty
    /// path is an error naming its key.
    pub(super) fn resolve_paths(&mut self, config_file: &Path) -> Result<(), (String, String)> {
        let base = std::path::absolute(config_file).map(|p| match p.parent() {
            Some(dir) => dir.to_path_buf(),
            None => p,
        });
        let mut failed = None;
        self.visit_paths(&mut |key, _, path| {
            if failed.is_some() {
                return;
            }
            if path.as_os_str().is_empty() {
                failed = Some((key.to_string(), "names no file (the path is empty)".into()));
            } else if path.is_relative() {
                match &base {
                    Ok(dir) => {
                        let joined = dir.join(&*path);
                        // Drops `.` components; `..` stays (it may cross a symbolic link).
                        *path = std::path::absolute(&joined).unwrap_or(joined);
                    }
                    Err(e) => {
                        failed = Some((
                            key.to_string(),
                            format!(
                                "the relative path {} cannot be resolved against the config file's directory: {e}",
                                path.display()
                            ),
                        ))
                    }
                }
            }
        })?;
        failed.map_or(Ok(()), Err)
    }
}

/// The file paths inside `store.url`: a SQLite database, PostgreSQL's `sslrootcert`.
fn visit_store_url(url: &mut String, f: &mut Visit<'_>) -> Result<(), (String, String)> {
    let unwritable = |key: &str, path: &Path| {
        (
            key.to_string(),
            format!(
                "{} cannot be written into the URL (not UTF-8); use an absolute path",
                path.display()
            ),
        )
    };
    if let Some(old) = url.strip_prefix("sqlite://") {
        let mut path = PathBuf::from(old);
        f("store.url", PathKind::Created, &mut path);
        if path.as_os_str() != old {
            let new = path
                .to_str()
                .ok_or_else(|| unwritable("store.url", &path))?;
            *url = format!("sqlite://{new}");
        }
    } else if crate::store::is_postgres_url(url) {
        // A URL that does not parse is reported by validation, after this.
        let Ok((_, tls)) = crate::store::parse_postgres_url(url) else {
            return Ok(());
        };
        let (Some(old), Some(span)) = (tls.root_cert, sslrootcert_span(url)) else {
            return Ok(());
        };
        const KEY: &str = "store.url sslrootcert";
        let mut path = old.clone();
        f(KEY, PathKind::Pem, &mut path);
        if path != old {
            let new = path.to_str().ok_or_else(|| unwritable(KEY, &path))?;
            url.replace_range(span, &crate::totp::percent_encode(new, b"/"));
        }
    }
    Ok(())
}

/// Where the value of `sslrootcert=` is in a `postgres://` URL, read as
/// `store::parse_postgres_url` reads it: the user and password run up to the first `@`,
/// the query starts at the first `?` after it.
fn sslrootcert_span(url: &str) -> Option<std::ops::Range<usize>> {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let host_start = url[scheme_end..]
        .find('@')
        .map_or(scheme_end, |i| scheme_end + i + 1);
    let query_start = host_start + url[host_start..].find('?')? + 1;
    let mut at = query_start;
    let mut found = None;
    for kv in url[query_start..].split('&') {
        if let Some(value) = kv.strip_prefix("sslrootcert=") {
            // The last one wins, as in the parser.
            let start = at + "sslrootcert=".len();
            found = Some(start..start + value.len());
        }
        at += kv.len() + 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_in(dir: &Path, text: &str) -> Result<Config, super::super::ConfigError> {
        let path = dir.join("portcullis.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_with_env(&path, Vec::new())
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_files_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let text = "[store]\nurl = \"sqlite://state/p.db\"\n\
                    [secrets]\nkey_file = \"./state/master.key\"\n\
                    [http]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"/abs/key.pem\"\n\
                    [pam]\nsocket = \"run/pam.sock\"\n\
                    [tenants.acme.duo]\nikey = \"DI1\"\nskey_file = \"duo.skey\"\napi_host = \"api-1.duosecurity.com\"\nca_file = \"../ca.pem\"\n\
                    [tenants.acme.email]\nhost = \"smtp.example.com\"\nusername = \"u\"\npassword_file = \"smtp.pw\"\nfrom = \"a@example.com\"\n\
                    [tenants.acme.sms]\nprovider = \"twilio\"\naccount_sid = \"AC1\"\nauth_token_file = \"twilio.token\"\nfrom = \"+15550001111\"\nca_file = \"sms-ca.pem\"\n\
                    [tenants.acme.ldap]\nurl = \"ldaps://dc1\"\nbase_dn = \"dc=x\"\nca_file = \"ldap/ca.pem\"\n";
        let c = load_in(d, text).unwrap();
        let h = c.http.as_ref().unwrap();
        assert_eq!(h.tls_cert.as_deref(), Some(d.join("cert.pem").as_path()));
        assert_eq!(h.tls_key.as_deref(), Some(Path::new("/abs/key.pem")));
        assert_eq!(c.secrets.key_file, d.join("state/master.key"));
        assert_eq!(c.sqlite_path().unwrap(), d.join("state/p.db"));
        assert_eq!(c.pam.as_ref().unwrap().socket, d.join("run/pam.sock"));
        let t = &c.tenants["acme"];
        let duo = t.duo.as_ref().unwrap();
        assert_eq!(duo.skey_file.as_deref(), Some(d.join("duo.skey").as_path()));
        assert_eq!(duo.ca_file.as_deref(), Some(d.join("../ca.pem").as_path()));
        let email = t.email.as_ref().unwrap();
        assert_eq!(
            email.password_file.as_deref(),
            Some(d.join("smtp.pw").as_path())
        );
        let sms = t.sms.as_ref().unwrap();
        assert_eq!(
            sms.auth_token_file.as_deref(),
            Some(d.join("twilio.token").as_path())
        );
        assert_eq!(sms.ca_file.as_deref(), Some(d.join("sms-ca.pem").as_path()));
        let ldap = t.ldap.as_ref().unwrap();
        assert_eq!(
            ldap.ca_file.as_deref(),
            Some(d.join("ldap/ca.pem").as_path())
        );
        // Every listed setting came out absolute.
        let settings = c.path_settings();
        assert_eq!(settings.len(), 11, "{settings:?}");
        assert!(
            settings.iter().all(|s| s.path.is_absolute()),
            "{settings:?}"
        );
    }

    #[test]
    fn a_relative_config_file_name_is_taken_from_the_working_directory_at_load() {
        let cwd = std::env::current_dir().unwrap();
        let c = Config::from_toml_str(
            "[secrets]\nkey_file = \"k\"\n",
            Path::new("sub/portcullis.toml"),
        )
        .unwrap();
        assert_eq!(c.secrets.key_file, cwd.join("sub/k"));
    }

    #[test]
    fn an_empty_path_names_its_key() {
        for (text, key) in [
            ("[secrets]\nkey_file = \"\"\n", "secrets.key_file"),
            ("[pam]\nsocket = \"\"\n", "pam.socket"),
            ("[store]\nurl = \"sqlite://\"\n", "store.url"),
        ] {
            let e = Config::from_toml_str(text, Path::new("/etc/p.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("empty"), "{text}: {e}");
        }
    }

    #[test]
    fn sslrootcert_in_a_postgres_url_is_resolved_and_the_rest_kept() {
        let url =
            |q: &str| format!("[store]\nurl = \"postgres://app:p%3Fw@db:5432/portcullis?{q}\"\n");
        let c = Config::from_toml_str(
            &url("sslmode=verify-full&sslrootcert=tls/db%20ca.pem&application_name=x"),
            Path::new("/etc/portcullis/portcullis.toml"),
        )
        .unwrap();
        assert_eq!(
            c.store.url,
            "postgres://app:p%3Fw@db:5432/portcullis?sslmode=verify-full&sslrootcert=/etc/portcullis/tls/db%20ca.pem&application_name=x"
        );
        let (_, tls) = crate::store::parse_postgres_url(&c.store.url).unwrap();
        assert_eq!(
            tls.root_cert.unwrap(),
            Path::new("/etc/portcullis/tls/db ca.pem")
        );
        let settings = c.path_settings();
        assert!(settings.iter().any(|s| s.key == "store.url sslrootcert"
            && s.kind == PathKind::Pem
            && s.path == Path::new("/etc/portcullis/tls/db ca.pem")));
        // Absolute: the URL is left as written.
        let text = url("sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem");
        let c = Config::from_toml_str(&text, Path::new("/etc/p.toml")).unwrap();
        assert!(
            c.store.url.ends_with("sslrootcert=%2Fetc%2Fca.pem"),
            "{}",
            c.store.url
        );
    }

    #[test]
    fn check_names_the_key_the_path_and_the_reason_but_never_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let setting = |name: &str, kind| PathSetting {
            key: "tenants.acme.duo.skey_file".into(),
            path: dir.path().join(name),
            kind,
        };
        std::fs::write(dir.path().join("skey"), "s3cr3t-duo-key\n").unwrap();
        setting("skey", PathKind::Secret).check().unwrap();
        let e = setting("missing", PathKind::Secret).check().unwrap_err();
        assert!(
            e.starts_with(&format!(
                "tenants.acme.duo.skey_file {}: cannot read: ",
                dir.path().join("missing").display()
            )) && e.contains("No such file"),
            "{e}"
        );
        // A directory opens but cannot be read.
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let e = setting("d", PathKind::Pem).check().unwrap_err();
        assert!(e.contains("cannot read") && e.contains("directory"), "{e}");
        std::fs::write(dir.path().join("empty"), "").unwrap();
        let e = setting("empty", PathKind::Pem).check().unwrap_err();
        assert!(e.contains("is empty"), "{e}");
        // The master key may be missing (it is made for a new store), not unreadable.
        setting("missing", PathKind::MasterKey).check().unwrap();
        setting("d", PathKind::MasterKey).check().unwrap_err();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("dangling"))
            .unwrap();
        setting("dangling", PathKind::MasterKey)
            .check()
            .unwrap_err();
        setting("missing", PathKind::Created).check().unwrap();
    }

    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_secret_file_that_group_or_others_may_read_is_warned_about_with_its_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("duo.skey");
        std::fs::write(&path, "s3cr3t-duo-key\n").unwrap();
        let setting = |kind| PathSetting {
            key: "tenants.acme.duo.skey_file".into(),
            path: path.clone(),
            kind,
        };
        let shown = path.display();
        // The default umask's mode: every local user may read it.
        chmod(&path, 0o644);
        let w = setting(PathKind::Secret)
            .mode_warning()
            .expect("0644 warns");
        assert_eq!(
            w,
            format!(
                "tenants.acme.duo.skey_file {shown} has mode 0644: group and others may read the secret; \
                 chmod 600 {shown} (owned by the user the daemon runs as)"
            )
        );
        assert!(!w.contains("s3cr3t"), "{w}");
        chmod(&path, 0o640);
        let w = setting(PathKind::Secret).mode_warning().unwrap();
        assert!(
            w.contains("mode 0640: its group may read the secret"),
            "{w}"
        );
        chmod(&path, 0o602);
        let w = setting(PathKind::Secret).mode_warning().unwrap();
        assert!(w.contains("mode 0602: every local user may change"), "{w}");
        chmod(&path, 0o600);
        assert_eq!(setting(PathKind::Secret).mode_warning(), None);
        chmod(&path, 0o400);
        assert_eq!(setting(PathKind::Secret).mode_warning(), None);
        // Only secret files: certificates are public, the TLS key is refused elsewhere.
        chmod(&path, 0o644);
        assert_eq!(setting(PathKind::Pem).mode_warning(), None);
        // A missing file is `check`'s to report.
        let missing = PathSetting {
            path: dir.path().join("missing"),
            ..setting(PathKind::Secret)
        };
        assert_eq!(missing.mode_warning(), None);
    }

    #[test]
    fn a_config_file_others_may_read_is_warned_about_only_when_it_holds_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.toml");
        let shown = path.display();
        let skey = dir.path().join("duo.skey");
        std::fs::write(&skey, "s3cr3t\n").unwrap();
        chmod(&skey, 0o600);
        let client = "[[radius.clients]]\nname = \"vpn\"\naddress = \"127.0.0.1/32\"\n\
                      secret = \"a-long-shared-secret-0123\"\ntenant = \"acme\"\n";
        let load = |text: &str, mode| {
            std::fs::write(&path, text).unwrap();
            chmod(&path, mode);
            Config::load_with_env(&path, Vec::new()).unwrap()
        };
        let c = load(client, 0o644);
        let w = c.secret_file_warnings(&path);
        assert_eq!(
            w,
            vec![format!(
                "config file {shown} has mode 0644 and holds secrets (radius.clients secret): every local user may read them; \
                 chown root:portcullis {shown} && chmod 640 {shown} (the daemon's group reads it), or chmod 600 {shown}"
            )]
        );
        assert!(!w[0].contains("a-long-shared"), "{w:?}");
        // The daemon's group may read it (the Debian package's root:portcullis 0640).
        let c = load(client, 0o640);
        assert_eq!(c.secret_file_warnings(&path), Vec::<String>::new());
        // No secret in it (a PAM-only setup with a file for Duo's key): nothing to hide.
        let duo = format!(
            "[tenants.acme.duo]\nikey = \"DI1\"\nskey_file = \"{}\"\napi_host = \"api-1.duosecurity.com\"\n",
            skey.display()
        );
        let c = load(&duo, 0o644);
        assert_eq!(c.secret_file_warnings(&path), Vec::<String>::new());
        // ... until the secret file itself is loose, which is named.
        chmod(&skey, 0o644);
        let w = c.secret_file_warnings(&path);
        assert!(
            w.len() == 1
                && w[0].starts_with("tenants.acme.duo.skey_file ")
                && w[0].contains("0644"),
            "{w:?}"
        );
        chmod(&skey, 0o600);
        // Every kind of inline secret is named by its key.
        let inline = "[store]\nurl = \"postgres://app:pw@db/portcullis\"\n\
                      [tenants.acme.duo]\nikey = \"DI1\"\nskey = \"k\"\napi_host = \"api-1.duosecurity.com\"\n\
                      [tenants.acme.email]\nhost = \"smtp.example.com\"\nusername = \"u\"\npassword = \"p\"\nfrom = \"a@example.com\"\n";
        let c = load(inline, 0o604);
        assert_eq!(
            c.secrets_in_file(),
            [
                "store.url password",
                "tenants.acme.duo.skey",
                "tenants.acme.email.password"
            ]
        );
        let w = c.secret_file_warnings(&path);
        assert!(w.len() == 1 && w[0].contains("mode 0604"), "{w:?}");
        // A secret given only in the environment is not in the file.
        std::fs::write(&path, &duo).unwrap();
        chmod(&path, 0o644);
        let env = vec![(
            "PORTCULLIS__STORE__URL".into(),
            "postgres://app:pw@db/portcullis".into(),
        )];
        let c = Config::load_with_env(&path, env).unwrap();
        assert_eq!(c.secrets_in_file(), ["store.url password"]);
        assert_eq!(c.secret_file_warnings(&path), Vec::<String>::new());
    }
}
