//! `config check`: the files that the settings name are opened, then read and parsed by
//! the very code that `serve` runs at start (TLS certificate and key, CA files, secret
//! files), so that a restart does not fail on them. Every problem is reported, not only
//! the first; a file's content is never shown.

use std::collections::HashSet;

use anyhow::{Context, Result};
use portcullis_core::config::Config;

/// What is wrong with the files `cfg` names, one message each (naming the setting, the
/// path and the reason); empty when `serve` would read them all.
pub fn problems(cfg: &Config) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    // 1. Every file that must exist can be opened and read.
    let mut unreadable = HashSet::new();
    for setting in cfg.path_settings() {
        if let Err(e) = setting.check() {
            problems.push(e);
            unreadable.insert(setting.key);
        }
    }
    // 2. The files that could be read, as `serve` reads and parses them. A part whose file
    // is already reported above is skipped (it would fail on the same file again).
    let readable = |keys: &[&str]| keys.iter().all(|k| !unreadable.contains(*k));
    // Every error names its setting (and path) itself.
    let mut failed = |e: anyhow::Error| problems.push(format!("{e:#}"));
    if let Some(h) = &cfg.http {
        if let (Some(cert), Some(key)) = (&h.tls_cert, &h.tls_key) {
            if readable(&["http.tls_cert", "http.tls_key"]) {
                if let Err(e) = crate::http::tls::acceptor(cert, key) {
                    failed(e);
                }
            }
        }
    }
    // PostgreSQL's CA, parsed as a connection parses it (a file of something else would
    // only fail at the first connection, when the store opens at start).
    if portcullis_core::store::is_postgres_url(&cfg.store.url)
        && readable(&["store.url sslrootcert"])
    {
        if let Err(e) = portcullis_core::store::check_postgres_tls(&cfg.store.url) {
            failed(anyhow::anyhow!("store.url: {e}"));
        }
    }
    // The providers keep a handle of the runtime their requests will run on; none is sent.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let handle = runtime.handle();
    for (name, t) in &cfg.tenants {
        // Whether no file of `[tenants.NAME.SECTION]` is reported above.
        let section_readable = |section: &str| {
            let prefix = format!("tenants.{name}.{section}.");
            !unreadable.iter().any(|k| k.starts_with(&prefix))
        };
        let key = |section: &str| format!("tenants.{name}.{section}");
        if let Some(duo) = t.duo.as_ref().filter(|_| section_readable("duo")) {
            if let Err(e) = crate::providers::duo::Duo::new(&key("duo"), duo, handle.clone()) {
                failed(e);
            }
        }
        if let Some(sms) = t.sms.as_ref().filter(|_| section_readable("sms")) {
            if let Err(e) = crate::providers::sms_sender(&key("sms"), sms, handle.clone()) {
                failed(e);
            }
        }
        if let Some(email) = t.email.as_ref().filter(|_| section_readable("email")) {
            if let Err(e) = crate::providers::Smtp::new(&key("email"), email) {
                failed(e);
            }
        }
        if let Some(push) = t.push.as_ref().filter(|_| section_readable("push")) {
            if let Err(e) = crate::push::PushClient::new(&key("push"), push, handle.clone()) {
                failed(e);
            }
        }
        if let Some(ldap) = t.ldap.as_ref().filter(|_| section_readable("ldap")) {
            if let Err(e) = crate::first_factor::ldap::LdapBackend::new(name, ldap) {
                failed(e.into());
            }
        }
    }
    if let Some(pam) = &cfg.pam {
        problems.extend(pam_socket_problem(&pam.socket));
    }
    Ok(problems)
}

/// Why `serve` could not make the PAM socket at `path`, if it could not: something that is
/// not a socket is in the way, or this user may not make the file (or its directory) there.
/// A socket already there is fine: `serve` replaces a stale one and refuses a live one.
fn pam_socket_problem(path: &std::path::Path) -> Option<String> {
    use rustix::fs::Access;
    use std::os::unix::fs::FileTypeExt;
    let file = path.display();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        return (!meta.file_type().is_socket()).then(|| {
            format!("pam.socket: {file} exists and is not a socket; move it away or choose another path")
        });
    }
    // `serve` makes missing directories: the nearest one that exists must let it.
    let dir = path
        .ancestors()
        .skip(1)
        .map(|d| {
            if d.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                d
            }
        })
        .find(|d| std::fs::symlink_metadata(d).is_ok())?;
    let shown = dir.display();
    if !dir.is_dir() {
        return Some(format!(
            "pam.socket: {file} cannot be made: {shown} is not a directory"
        ));
    }
    crate::cli::local::denied(dir, Access::WRITE_OK | Access::EXEC_OK).then(|| {
        format!(
            "pam.socket: {file} cannot be made: this user may not create files in {shown}; \
             create the directory for the daemon's user (systemd: RuntimeDirectory=portcullis) \
             or choose another path"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::pam_socket_problem;

    #[test]
    fn the_pam_socket_must_be_makeable_where_the_config_puts_it() {
        let dir = tempfile::tempdir().unwrap();
        // A missing directory under a writable one: serve makes it.
        assert_eq!(pam_socket_problem(&dir.path().join("run/pam.sock")), None);
        // A regular file in the way.
        let file = dir.path().join("pam.sock");
        std::fs::write(&file, b"").unwrap();
        let e = pam_socket_problem(&file).unwrap();
        assert!(e.contains("is not a socket"), "{e}");
        // A file where a directory should be.
        let e = pam_socket_problem(&file.join("x.sock")).unwrap();
        assert!(e.contains("is not a directory"), "{e}");
        // A live (or stale) socket is serve's to handle.
        let sock = dir.path().join("live.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(pam_socket_problem(&sock), None);
    }
}
