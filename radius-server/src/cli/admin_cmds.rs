//! The admin subcommands: thin wrappers over [`portcullis_core::admin::Admin`].

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use portcullis_core::admin::FactorInfo;
use portcullis_core::admin::NewPassword;
use portcullis_core::config::Config;
use portcullis_core::engine::{SendOutcome, ThrottleInForce};
use portcullis_core::model::AuditFilter;
use serde_json::json;
use zeroize::Zeroizing;

use super::output::{emit, printable, qr, table, time};
use super::{
    changes, AuditArgs, Command, EnrollCmd, FactorCmd, Opened, PasswordInput, PolicyCmd,
    RecoveryCmd, TenantCmd, UserCmd,
};

/// One line from standard input, without its line ending. Prompts when stdin is a terminal.
pub(super) fn read_stdin_line(what: &str) -> Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{what}: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = Zeroizing::new(String::new());
    stdin
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("reading the {what} from standard input"))?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_string());
    if trimmed.is_empty() {
        bail!("no {what} on standard input (pipe it in, e.g. printf '%s\\n' \"$PW\" | portcullis ...)");
    }
    Ok(trimmed)
}

fn password_input(p: &PasswordInput) -> Result<NewPassword> {
    Ok(if p.password_stdin {
        NewPassword::Plain(Zeroizing::new(
            read_stdin_line("password")?.as_bytes().to_vec(),
        ))
    } else if p.password_hash_stdin {
        NewPassword::Hash(read_stdin_line("password hash")?.to_string())
    } else {
        NewPassword::None
    })
}

fn done(json: bool, what: String) {
    emit(json, &json!({ "ok": true, "message": what }), || {
        what.clone()
    });
}

/// `config check`
pub fn config_check(path: &Path, json: bool) -> Result<()> {
    let cfg = Config::load(path)?;
    let problems = super::config_files::problems(&cfg)?;
    if !problems.is_empty() {
        if json {
            emit(
                true,
                &json!({"ok": false, "file": path.display().to_string(), "problems": problems}),
                String::new,
            );
        }
        bail!(
            "config file {}: {} problem{} with the files it names:\n  {}",
            path.display(),
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("\n  ")
        );
    }
    let mut warnings = Vec::new();
    for c in &cfg.radius.clients {
        if !c.require_message_authenticator {
            warnings.push(format!(
                "client '{}' does not require Message-Authenticator: only for NAS software that cannot send it (BlastRADIUS, CVE-2024-3596)",
                c.name
            ));
        }
        if c.secret.len() < 16 {
            warnings.push(format!(
                "client '{}' has a shared secret shorter than 16 characters",
                c.name
            ));
        }
        if crate::serve::is_placeholder_secret(&c.secret) {
            warnings.push(format!(
                "client '{}' has the example shared secret of a shipped config: set a long random one (e.g. openssl rand -base64 24) here and on the NAS",
                c.name
            ));
        }
    }
    if cfg.radius.clients.is_empty() {
        warnings.push("no [[radius.clients]]: every RADIUS request will be dropped".into());
    }
    warnings.extend(crate::first_factor::config_warnings(&cfg));
    warnings.extend(crate::http::web::config_warnings(&cfg));
    warnings.extend(cfg.secret_file_warnings(path));
    if let Some(pam) = &cfg.pam {
        let others = pam.mode() & 0o077;
        if pam.allowed_uids.iter().any(|u| *u != 0) && others == 0 {
            warnings.push(format!(
                "pam.allowed_uids names uids other than 0, but pam.socket_mode \"{}\" lets only the socket's owner connect; widen socket_mode (the uid check still applies)",
                pam.socket_mode
            ));
        }
        if pam.allowed_uids.is_empty() {
            warnings.push("pam.allowed_uids is empty: every PAM request will be refused".into());
        }
    }
    if let Some(h) = &cfg.http {
        if h.tls_cert.is_none() && !h.listen.ip().is_loopback() {
            warnings.push(format!(
                "http.listen {} has no TLS: remote PAM hosts would send tokens and codes in clear; set http.tls_cert and http.tls_key",
                h.listen
            ));
        }
    }
    let pam_socket = cfg.pam.as_ref().map(|p| p.socket.display().to_string());
    let clients: Vec<_> = cfg
        .radius
        .clients
        .iter()
        .map(|c| {
            json!({"name": c.name, "address": c.address.to_string(), "tenant": c.tenant,
                   "mode": c.mode.as_str(), "require_message_authenticator": c.require_message_authenticator})
        })
        .collect();
    let value = json!({
        "ok": true,
        "file": path.display().to_string(),
        "store": cfg.store.redacted_url(),
        "key_file": cfg.secrets.key_file.display().to_string(),
        "radius_listen": cfg.radius.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "clients": clients,
        "pam_socket": pam_socket,
        "http": cfg.http.as_ref().map(|h| json!({
            "listen": h.listen.to_string(),
            "tls": h.tls_cert.is_some(),
            "tls_cert": h.tls_cert.as_ref().map(|p| p.display().to_string()),
        })),
        "warnings": warnings,
    });
    emit(json, &value, || {
        let mut s = format!(
            "{}: OK\nstore: {}\nkey file: {}\npam socket: {}\nradius listen: {}\n",
            path.display(),
            cfg.store.redacted_url(),
            cfg.secrets.key_file.display(),
            pam_socket.as_deref().unwrap_or("off (no [pam] section)"),
            cfg.radius
                .listen
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(h) = &cfg.http {
            match &h.tls_cert {
                Some(cert) => s.push_str(&format!(
                    "http listen: {} (HTTPS, certificate {}; /metrics, /v1/push, /v1/pam/step, admin API /v1/, /my/, /admin/)\n",
                    h.listen,
                    cert.display()
                )),
                None => s.push_str(&format!(
                    "http listen: {} (plain HTTP; /metrics, /v1/push, /v1/pam/step, admin API /v1/, /my/, /admin/)\n",
                    h.listen
                )),
            }
        }
        let rows: Vec<Vec<String>> = cfg
            .radius
            .clients
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.address.to_string(),
                    c.tenant.clone(),
                    c.mode.as_str().into(),
                    if c.require_message_authenticator {
                        "required".into()
                    } else {
                        "optional".into()
                    },
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "CLIENT",
                "ADDRESS",
                "TENANT",
                "MODE",
                "MESSAGE-AUTHENTICATOR",
            ],
            &rows,
        ));
        for w in &warnings {
            s.push_str(&format!("warning: {w}\n"));
        }
        s
    });
    Ok(())
}

/// Every command that needs the store. `Some(detail)`: what the change turned out to be,
/// for its audit record in place of the one [`changes::describe`] gave beforehand (an
/// enrolment names the factor it made).
pub fn run(o: &Opened, cmd: Command, json: bool) -> Result<Option<String>> {
    let admin = o.admin();
    match cmd {
        Command::Serve | Command::Config(_) | Command::Ldap(_) | Command::Host(_) => {
            unreachable!("handled by the caller")
        }
        Command::Tenant(TenantCmd::Add { name }) => {
            let t = admin.add_tenant(&name)?;
            emit(json, &t, || format!("tenant '{}' created", t.name));
        }
        Command::Tenant(TenantCmd::List) => {
            let ts = admin.list_tenants()?;
            emit(json, &ts, || {
                let rows: Vec<Vec<String>> = ts
                    .iter()
                    .map(|t| vec![t.name.clone(), time(t.created_at)])
                    .collect();
                table(&["TENANT", "CREATED"], &rows)
            });
        }
        Command::User(cmd) => user(o, cmd, json)?,
        Command::Factor(cmd) => return factor(o, cmd, json),
        Command::Recovery(RecoveryCmd::Generate { tenant, user }) => {
            let codes = admin.generate_recovery_codes(&tenant.tenant, &user)?;
            emit(json, &json!({ "codes": codes }), || {
                format!(
                    "Recovery codes for {user} (each works once; store them safely, they are not shown again;\nany older codes no longer work):\n\n  {}\n",
                    codes.join("\n  ")
                )
            });
        }
        Command::Bypass {
            tenant,
            user,
            uses,
            ttl,
        } => {
            let b = admin.issue_bypass_code(
                &tenant.tenant,
                &user,
                uses,
                std::time::Duration::from(ttl).as_secs(),
            )?;
            emit(json, &b, || {
                format!(
                    "Bypass code for {user}: {}\nValid for {uses} login(s) until {} (UTC). It is not shown again; give it to the user over a trusted channel.",
                    b.code,
                    time(b.expires_at)
                )
            });
        }
        Command::Unblock { tenant, address } => {
            let had = admin.unblock_source(&tenant.tenant, &address)?;
            done(
                json,
                if had {
                    format!("source '{address}' unblocked; its wrong passwords forgotten")
                } else {
                    format!("source '{address}' had no wrong passwords on record; nothing to do")
                },
            );
        }
        Command::Audit(a) => audit(o, a, json)?,
        Command::Token(cmd) => super::token_cmd::run(o, cmd, json)?,
        Command::Policy(PolicyCmd::Test {
            tenant,
            user,
            client,
            source,
            host,
            at,
        }) => {
            let at = at.map(|t| {
                std::time::SystemTime::from(t)
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0)
            });
            let rules = o
                .config
                .tenants
                .get(&tenant.tenant)
                .map(|t| t.rules.as_slice())
                .unwrap_or(&[]);
            if let Some(w) = unknown_client(o, &tenant.tenant, rules, &client)? {
                eprintln!("warning: {w}");
            }
            let d = admin.policy_test(
                &tenant.tenant,
                rules,
                &portcullis_core::admin::PolicyQuery {
                    user: &user,
                    client: &client,
                    source: &source,
                    host: host.as_deref(),
                    at,
                },
            )?;
            let groups = d.groups.clone();
            emit(json, &d, || {
                let mut s = format!("{}: {}\n", user, d.decision);
                if !d.factors.is_empty() {
                    s.push_str(&format!("factors accepted: {}\n", d.factors.join(", ")));
                }
                s.push_str(&format!("groups: {}\n", groups.join(", ")));
                for line in &d.explanation {
                    s.push_str(&format!("  - {line}\n"));
                }
                s
            });
        }
    }
    Ok(None)
}

/// How many of a tenant's newest audit records `policy test` reads for the PAM services
/// that logged in (they are not configured: the PAM stack names them).
const PAM_SERVICES_SEEN_IN: u32 = 10_000;

/// A warning when `client` names no RADIUS client of `tenant`, no client or service in its
/// rules and no PAM service seen in its audit log: a typo answers like a real name.
fn unknown_client(
    o: &Opened,
    tenant: &str,
    rules: &[portcullis_core::policy::Rule],
    client: &str,
) -> Result<Option<String>> {
    let file = o.config_path.display();
    if let Some(c) = o.config.radius.clients.iter().find(|c| c.name == client) {
        if c.tenant == tenant {
            return Ok(None);
        }
        return Ok(Some(format!(
            "the RADIUS client '{client}' in {file} belongs to tenant '{}': its logins are never checked against the rules of '{tenant}'",
            c.tenant
        )));
    }
    let mut known: Vec<String> = o
        .config
        .radius
        .clients
        .iter()
        .filter(|c| c.tenant == tenant)
        .map(|c| c.name.clone())
        .collect();
    known.extend(rules.iter().flat_map(|r| r.clients.iter().cloned()));
    let seen = o.admin().audit(&AuditFilter {
        tenant: Some(tenant.to_string()),
        username: None,
        since: None,
        limit: PAM_SERVICES_SEEN_IN,
    })?;
    known.extend(
        seen.into_iter()
            .filter(|r| r.channel == "pam")
            .map(|r| r.client),
    );
    known.sort();
    known.dedup();
    if known.iter().any(|k| k == client) {
        return Ok(None);
    }
    Ok(Some(format!(
        "no RADIUS client or PAM service named '{client}' in {file} (known: {}); the answer is for a client of that name",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )))
}

/// The `user show` line of a throttle in force (a login now would be refused).
fn throttle_line(t: ThrottleInForce, now: i64, tenant: &str, name: &str) -> String {
    let within = |at: i64| {
        humantime::format_duration(std::time::Duration::from_secs((at - now).max(0) as u64))
    };
    match t {
        ThrottleInForce::Delayed {
            failures,
            next_try_at,
        } => format!(
            "throttled:  {failures} failures, next try allowed at {} (in {})\n",
            time(next_try_at),
            within(next_try_at)
        ),
        ThrottleInForce::Locked { failures, until } => format!(
            "locked:     until {} (in {}) after {failures} failures; lift it with: portcullis user unlock --tenant {tenant} {name}\n",
            time(until),
            within(until)
        ),
    }
}

fn user(o: &Opened, cmd: UserCmd, json: bool) -> Result<()> {
    let admin = o.admin();
    match cmd {
        UserCmd::Add {
            tenant,
            name,
            password,
            email,
            phone,
            groups,
        } => {
            let pw = password_input(&password)?;
            let u = admin.add_user(&tenant.tenant, &name, pw, email, phone, groups)?;
            emit(json, &u, || {
                let mut s = format!("user '{}' created in tenant '{}'", u.name, tenant.tenant);
                if u.password_hash.is_none() {
                    s.push_str(
                        " (no password yet: portcullis user set-password ... --password-stdin)",
                    );
                }
                s.push_str(&format!(
                    "\nnext: portcullis factor enroll totp --tenant {} {}",
                    tenant.tenant, u.name
                ));
                s
            });
        }
        UserCmd::List { tenant } => {
            let us = admin.list_users(&tenant.tenant)?;
            emit(json, &us, || {
                let rows: Vec<Vec<String>> = us
                    .iter()
                    .map(|u| {
                        vec![
                            u.name.clone(),
                            if u.disabled {
                                "disabled".into()
                            } else {
                                "enabled".into()
                            },
                            u.groups.join(","),
                            u.email.clone().unwrap_or_default(),
                            u.phone.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                table(&["USER", "STATE", "GROUPS", "E-MAIL", "PHONE"], &rows)
            });
        }
        UserCmd::Show { tenant, name } => {
            let d = admin.show_user(&tenant.tenant, &name)?;
            emit(json, &d, || {
                let mut s = format!(
                    "user:       {}\ntenant:     {}\nstate:      {}\npassword:   {}\ngroups:     {}\ne-mail:     {}\nphone:      {}\nrecovery:   {} unused codes\nfailures:   {} failed codes\n{}",
                    // Names, groups, e-mail and phone may come from a directory whose
                    // users edit their own: never raw to the operator's terminal.
                    printable(&d.user.name),
                    printable(&tenant.tenant),
                    if d.user.disabled { "disabled" } else { "enabled" },
                    if d.has_password { "set" } else { "not set" },
                    printable(&d.user.groups.join(", ")),
                    printable(d.user.email.as_deref().unwrap_or("-")),
                    printable(d.user.phone.as_deref().unwrap_or("-")),
                    d.unused_recovery_codes,
                    d.failed_codes,
                    d.throttle
                        .map(|t| throttle_line(t, o.clock.now(), &tenant.tenant, &name))
                        .unwrap_or_default(),
                );
                s.push_str("factors:\n");
                for f in &d.factors {
                    s.push_str(&format!(
                        "  {} {} {}\n",
                        printable(&f.factor_id),
                        f.kind,
                        f.state
                    ));
                }
                s
            });
        }
        UserCmd::Disable { tenant, name } => {
            admin.set_disabled(&tenant.tenant, &name, true)?;
            done(json, format!("user '{name}' disabled"));
        }
        UserCmd::Enable { tenant, name } => {
            admin.set_disabled(&tenant.tenant, &name, false)?;
            done(json, format!("user '{name}' enabled"));
        }
        UserCmd::Delete { tenant, name } => {
            admin.delete_user(&tenant.tenant, &name)?;
            done(
                json,
                format!("user '{name}' deleted with their factors and codes"),
            );
        }
        UserCmd::SetPassword {
            tenant,
            name,
            password,
        } => {
            if !password.password_stdin && !password.password_hash_stdin {
                bail!("give --password-stdin or --password-hash-stdin (a password never goes on the command line)");
            }
            admin.set_password(&tenant.tenant, &name, password_input(&password)?)?;
            done(json, format!("password of '{name}' set"));
        }
        UserCmd::Forget {
            tenant,
            name,
            source,
        } => {
            let n = admin.forget_sources(&tenant.tenant, &name, source.as_deref())?;
            done(
                json,
                format!("{n} remembered source(s) of '{name}' forgotten"),
            );
        }
        UserCmd::SetAttr {
            tenant,
            name,
            key,
            value,
        } => {
            admin.set_attribute(&tenant.tenant, &name, &key, value.as_deref())?;
            done(
                json,
                match value {
                    Some(v) => format!("attribute {key} of '{name}' set to \"{v}\""),
                    None => format!("attribute {key} of '{name}' removed"),
                },
            );
        }
        UserCmd::Import {
            tenant,
            file,
            update,
        } => super::csv_cmds::import(&admin, &tenant.tenant, &file, update, json)?,
        UserCmd::Export { tenant, output } => {
            super::csv_cmds::export(&admin, &tenant.tenant, output.as_deref(), json)?
        }
        UserCmd::Unlock { tenant, name } => {
            admin.unlock(&tenant.tenant, &name)?;
            done(
                json,
                format!("user '{name}' unlocked; failed codes forgotten"),
            );
        }
    }
    Ok(())
}

/// A `factor` subcommand; an enrolment returns the detail of its audit record, which
/// names the new factor.
fn factor(o: &Opened, cmd: FactorCmd, json: bool) -> Result<Option<String>> {
    let admin = o.admin();
    let enrolled = match cmd {
        FactorCmd::Enroll(EnrollCmd::Totp {
            tenant,
            user,
            secret,
            secret_stdin,
            digits,
            algorithm,
        }) => {
            let secret = if secret_stdin {
                Some(read_stdin_line("secret")?.to_string())
            } else {
                secret
            };
            let e = admin.enroll_totp(
                &tenant.tenant,
                &user,
                secret.as_deref(),
                digits.get(),
                algorithm.as_str(),
            )?;
            emit(json, &e, || {
                let mut s = String::new();
                if e.state == "pending" {
                    s.push_str(&qr(&e.uri));
                    s.push_str(&format!(
                        "\nScan this with the authenticator app, or enter the secret by hand:\n  secret: {}\n  uri:    {}\n\nThe factor {} is pending until a code from the app confirms it:\n  portcullis factor confirm --tenant {} {} {} CODE\n",
                        e.secret, e.uri, e.factor_id, tenant.tenant, user, e.factor_id
                    ));
                } else {
                    s.push_str(&format!(
                        "TOTP factor {} of '{}' enrolled from the given secret and confirmed ({} digits, {}).\n",
                        e.factor_id, user, e.digits, e.algorithm
                    ));
                }
                s
            });
            Some(changes::otp_enrolled(&e, secret.is_some()))
        }
        FactorCmd::Enroll(EnrollCmd::Hotp {
            tenant,
            user,
            secret,
            secret_stdin,
            counter,
            digits,
            algorithm,
        }) => {
            let secret = if secret_stdin {
                Some(read_stdin_line("secret")?.to_string())
            } else {
                secret
            };
            let e = admin.enroll_hotp(
                &tenant.tenant,
                &user,
                secret.as_deref(),
                digits.get(),
                algorithm.as_str(),
                counter,
            )?;
            emit(json, &e, || {
                if e.state == "pending" {
                    format!(
                        "{}\nScan this with a software token app, or enter the secret by hand:\n  secret: {}\n  uri:    {}\n\nThe factor {} is pending until a code confirms it:\n  portcullis factor confirm --tenant {} {} {} CODE\n",
                        qr(&e.uri), e.secret, e.uri, e.factor_id, tenant.tenant, user, e.factor_id
                    )
                } else {
                    format!(
                        "HOTP factor {} of '{}' enrolled and confirmed (counter {counter}, {} digits, {}).\nIf the token drifts: portcullis factor resync --tenant {} {} {} CODE1 CODE2\n",
                        e.factor_id, user, e.digits, e.algorithm, tenant.tenant, user, e.factor_id
                    )
                }
            });
            Some(changes::otp_enrolled(&e, secret.is_some()))
        }
        FactorCmd::Enroll(EnrollCmd::Sms {
            tenant,
            user,
            phone,
        }) => {
            let f = admin.enroll_sms(&tenant.tenant, &user, phone.as_deref())?;
            Some(send_confirmation(o, json, &tenant.tenant, &user, f)?)
        }
        FactorCmd::Enroll(EnrollCmd::Push {
            tenant,
            user,
            webhook,
        }) => Some(enroll_push(
            o,
            json,
            &tenant.tenant,
            &user,
            webhook.as_deref(),
        )?),
        FactorCmd::Enroll(EnrollCmd::Email {
            tenant,
            user,
            email,
        }) => {
            let f = admin.enroll_email(&tenant.tenant, &user, email.as_deref())?;
            Some(send_confirmation(o, json, &tenant.tenant, &user, f)?)
        }
        FactorCmd::Resync {
            tenant,
            user,
            factor_id,
            code1,
            code2,
        } => {
            let next = admin.resync_hotp(&tenant.tenant, &user, &factor_id, &code1, &code2)?;
            done(
                json,
                format!("factor {factor_id} of '{user}' resynchronised; next counter {next}"),
            );
            None
        }
        FactorCmd::Confirm {
            tenant,
            user,
            factor_id,
            code,
        } => {
            admin.confirm_factor(&tenant.tenant, &user, &factor_id, &code)?;
            done(json, format!("factor {factor_id} of '{user}' confirmed"));
            None
        }
        FactorCmd::List { tenant, user } => {
            let fs = admin.list_factors(&tenant.tenant, &user)?;
            emit(json, &fs, || {
                let rows: Vec<Vec<String>> = fs
                    .iter()
                    .map(|f| {
                        vec![
                            f.factor_id.clone(),
                            f.kind.into(),
                            f.state.into(),
                            time(f.created_at),
                            f.last_used_at.map(time).unwrap_or_else(|| "never".into()),
                        ]
                    })
                    .collect();
                table(&["FACTOR", "KIND", "STATE", "CREATED", "LAST USED"], &rows)
            });
            None
        }
        FactorCmd::Remove {
            tenant,
            user,
            factor_id,
        } => {
            admin.remove_factor(&tenant.tenant, &user, &factor_id)?;
            done(json, format!("factor {factor_id} of '{user}' removed"));
            None
        }
    };
    Ok(enrolled)
}

/// Enrol a push factor, push the code that confirms it and show where the phone subscribes;
/// the detail of the audit record.
fn enroll_push(
    o: &Opened,
    json: bool,
    tenant: &str,
    user: &str,
    webhook: Option<&str>,
) -> Result<String> {
    let (engine, _rt) = o.engine()?;
    // The operator's CLI may name any webhook, also one on an internal address.
    let target = webhook.map(|url| portcullis_core::push::WebhookTarget {
        url,
        public_only: false,
    });
    let e = crate::push::enroll_and_send(&o.admin(), &engine, tenant, user, target)?;
    let id = &e.factor.factor_id;
    let value = json!({
        "factor_id": id, "kind": e.factor.kind, "state": "pending", "sent": true,
        "subscribe_url": e.subscribe_url,
    });
    emit(json, &value, || {
        let subscribe = match &e.subscribe_url {
            Some(url) => format!(
                "{}
Subscribe to this topic in the ntfy app (scan, or add the topic by hand):
  {url}
Keep the topic secret: whoever knows it can read the login notifications.

",
                qr(url)
            ),
            None => String::new(),
        };
        format!(
            "{subscribe}A confirmation code was pushed to the phone.
The push factor {id} is pending until the user reads you the code:
  portcullis factor confirm --tenant {tenant} {user} {id} CODE"
        )
    });
    Ok(changes::enrolled(
        e.factor.kind,
        id,
        e.factor.state,
        Some(&format!("code sent via {}", e.sent_to)),
    ))
}

/// Send the code that confirms a new SMS or e-mail factor; the detail of the audit record.
fn send_confirmation(
    o: &Opened,
    json: bool,
    tenant: &str,
    user: &str,
    f: FactorInfo,
) -> Result<String> {
    let (engine, _rt) = o.engine()?;
    let sent = engine.send_enrolment_code(tenant, user, &f.factor_id)?;
    let SendOutcome::Sent { to, .. } = &sent else {
        bail!(
            "factor {} created but pending: {} (fix [tenants.{tenant}.{}], then remove the factor and enrol again)",
            f.factor_id,
            sent.reason(),
            f.kind
        );
    };
    let value = json!({
        "factor_id": f.factor_id, "kind": f.kind, "state": "pending", "sent": true,
        "message": sent.reason(),
    });
    emit(json, &value, || {
        format!(
            "{}\nThe {} factor {} is pending until the user reads you the code:\n  portcullis factor confirm --tenant {tenant} {user} {} CODE",
            sent.user_text(),
            f.kind,
            f.factor_id,
            f.factor_id
        )
    });
    Ok(changes::enrolled(
        f.kind,
        &f.factor_id,
        f.state,
        Some(&format!("code sent to {to}")),
    ))
}

fn audit(o: &Opened, a: AuditArgs, json: bool) -> Result<()> {
    let since = a
        .since
        .map(|d| o.clock.now() - std::time::Duration::from(d).as_secs() as i64);
    let records = o.admin().audit(&AuditFilter {
        tenant: a.tenant,
        username: a.user,
        since,
        limit: a.limit,
    })?;
    emit(json, &records, || {
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|r| {
                vec![
                    time(r.time),
                    r.tenant.clone(),
                    r.username.clone(),
                    match &r.host {
                        // PAM: the service on its host.
                        Some(host) => format!("{}:{}@{host}", r.channel, r.client),
                        None => format!("{}:{}", r.channel, r.client),
                    },
                    r.source.clone(),
                    r.mode.clone(),
                    r.result.as_str().into(),
                    r.factors.join("+"),
                    r.reason.clone(),
                ]
            })
            .collect();
        table(
            &[
                "TIME", "TENANT", "USER", "CLIENT", "SOURCE", "MODE", "RESULT", "FACTORS", "REASON",
            ],
            &rows,
        )
    });
    Ok(())
}
