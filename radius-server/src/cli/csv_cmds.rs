//! `user import` and `user export`: users as CSV files, through [`Admin`].

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use portcullis_core::admin::{Admin, ImportRow};
use zeroize::Zeroizing;

use super::output::emit;

/// The columns `user import` reads; `factors` (written by `user export`) is accepted and
/// ignored, so that an export can be imported again.
const COLUMNS: &[&str] = &[
    "name",
    "email",
    "phone",
    "groups",
    "password_hash",
    "totp_secret",
    "disabled",
];
const IGNORED_COLUMNS: &[&str] = &["factors"];
/// At most this many problems of the file's shape are printed (all are counted).
const MAX_SHOWN: usize = 50;

/// Where each known column is in the file.
#[derive(Default)]
struct Header {
    name: usize,
    email: Option<usize>,
    phone: Option<usize>,
    groups: Option<usize>,
    password_hash: Option<usize>,
    totp_secret: Option<usize>,
    disabled: Option<usize>,
}

fn parse_header(record: &csv::StringRecord) -> Result<Header> {
    let mut found: Vec<(&str, usize)> = Vec::new();
    for (i, raw) in record.iter().enumerate() {
        let col = raw
            .trim()
            .trim_start_matches('\u{feff}')
            .to_ascii_lowercase();
        let known = COLUMNS
            .iter()
            .chain(IGNORED_COLUMNS)
            .find(|c| **c == col)
            .copied();
        match known {
            None => bail!(
                "line 1: unknown column '{raw}'; the header names some of: {} (the order is free)",
                COLUMNS.join(", ")
            ),
            Some(c) if found.iter().any(|(f, _)| *f == c) => {
                bail!("line 1: the column '{c}' appears twice in the header")
            }
            Some(c) => found.push((c, i)),
        }
    }
    let at = |c: &str| found.iter().find(|(f, _)| *f == c).map(|(_, i)| *i);
    Ok(Header {
        name: at("name").context(
            "line 1: the header has no 'name' column; the first line must name the columns, e.g. name,email,groups,password_hash,totp_secret",
        )?,
        email: at("email"),
        phone: at("phone"),
        groups: at("groups"),
        password_hash: at("password_hash"),
        totp_secret: at("totp_secret"),
        disabled: at("disabled"),
    })
}

/// Read every row; problems of the file's shape are collected with their line numbers.
fn read_rows(input: impl Read) -> Result<(Vec<ImportRow>, Vec<String>)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(input);
    let header = reader
        .headers()
        .context("line 1: cannot read the header row")?
        .clone();
    let h = parse_header(&header)?;
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                let what = match e.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => format!(
                        "has {len} fields but the header has {expected_len}: quote cells that contain a comma"
                    ),
                    csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8: save the file as UTF-8".into(),
                    _ => format!("cannot be read: {e}"),
                };
                problems.push(format!("line {line}: {what}"));
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let cell = |i: Option<usize>| i.map(|i| unguarded(record.get(i).unwrap_or("")).to_string());
        rows.push(ImportRow {
            line,
            name: unguarded(record.get(h.name).unwrap_or("")).to_string(),
            email: cell(h.email),
            phone: cell(h.phone),
            groups: cell(h.groups),
            password_hash: cell(h.password_hash),
            totp_secret: cell(h.totp_secret).map(Zeroizing::new),
            disabled: cell(h.disabled),
        });
    }
    Ok((rows, problems))
}

/// `user import`
pub fn import(admin: &Admin, tenant: &str, file: &Path, update: bool, json: bool) -> Result<()> {
    let (rows, problems) = if file == Path::new("-") {
        read_rows(std::io::stdin().lock())?
    } else {
        let f =
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        read_rows(std::io::BufReader::new(f)).with_context(|| format!("in {}", file.display()))?
    };
    if !problems.is_empty() {
        let shown = problems.len().min(MAX_SHOWN);
        let more = match problems.len() - shown {
            0 => String::new(),
            n => format!("\n  ... and {n} more"),
        };
        bail!(
            "{} problem(s) in {}, nothing was imported (fix them and run the import again):\n  {}{more}",
            problems.len(),
            file.display(),
            problems[..shown].join("\n  ")
        );
    }
    if rows.is_empty() {
        bail!(
            "{} has a header but no rows: nothing to import",
            file.display()
        );
    }
    let report = admin
        .import_users(tenant, rows, update)
        .with_context(|| format!("importing {}", file.display()))?;
    // One record per user written, beside the command's own: `audit --user NAME` shows
    // what an import did to them (which columns, never the values).
    let from = file.display();
    for u in &report.users {
        let (action, detail) = if u.created {
            let totp = if u.totp { " with a TOTP factor" } else { "" };
            ("user.create", format!("imported from {from}{totp}"))
        } else {
            let columns = if u.changed.is_empty() {
                "nothing".to_string()
            } else {
                u.changed.join(", ")
            };
            (
                "user.update",
                format!("imported from {from} (--update): {columns} set"),
            )
        };
        super::changes::record(admin, tenant, &u.name, action, &detail);
    }
    emit(json, &report, || {
        format!(
            "{} user(s) created, {} updated in tenant '{tenant}'; {} TOTP factor(s) enrolled",
            report.created, report.updated, report.totp_enrolled
        )
    });
    Ok(())
}

/// Whether a spreadsheet would take a cell that starts like `text` for a formula (or a
/// command: `=`, `+`, `-`, `@`, and tab or carriage return before one of them).
fn formula_like(text: &str) -> bool {
    text.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// A cell of an export: text that a spreadsheet would run as a formula gets a leading `'`
/// (OWASP's CSV-injection advice), so that a name or address a tenant's admin or the
/// directory set, such as `=HYPERLINK(...)`, stays text on the operator's machine.
fn guarded(text: &str) -> std::borrow::Cow<'_, str> {
    if formula_like(text) {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

/// A cell of an import: the `'` an export put before formula-like text is taken off again,
/// so that an export imports as it was.
fn unguarded(text: &str) -> &str {
    match text.strip_prefix('\'') {
        Some(rest) if formula_like(rest) => rest,
        _ => text,
    }
}

/// Writes `bytes` to a new file or over an old one of this user's at `path`, readable by
/// this user only (it lists every user of a tenant), never through a symbolic link. What
/// is already at `path` is checked before anything is written or truncated: anything but a
/// regular file (a FIFO or a device that someone else reads), and a file of another user
/// (placed in a shared directory such as /tmp for the export to fill), is refused.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o600)
        // A FIFO opens at once (or fails when no one reads it) instead of waiting for a
        // reader; a regular file is written as ever.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                anyhow::anyhow!("it is a symbolic link, which is not followed ({e})")
            }
            Some(libc::ENXIO) => anyhow::anyhow!(
                "it is not a regular file ({e}); export to a new file, or remove it first"
            ),
            _ => e.into(),
        })?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        bail!("it is not a regular file; export to a new file, or remove it first");
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "it belongs to uid {}, not to this user (uid {me}); export to a new file, or remove it first",
            meta.uid()
        );
    }
    f.set_len(0)?;
    // An old file keeps its mode through open: narrow it too.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// `user export`
pub fn export(admin: &Admin, tenant: &str, output: Option<&Path>, json: bool) -> Result<()> {
    let users = admin.export_users(tenant)?;
    if json && output.is_none() {
        emit(true, &users, String::new);
        return Ok(());
    }
    let mut out = Vec::new();
    {
        let mut w = csv::Writer::from_writer(&mut out);
        w.write_record(["name", "email", "phone", "groups", "disabled", "factors"])?;
        for u in &users {
            w.write_record([
                guarded(&u.name).as_ref(),
                &guarded(u.email.as_deref().unwrap_or("")),
                &guarded(u.phone.as_deref().unwrap_or("")),
                &guarded(&u.groups.join(";")),
                if u.disabled { "true" } else { "false" },
                &u.factors.join(";"),
            ])?;
        }
        w.flush()?;
    }
    match output {
        None => super::output::write_stdout(&out).context("writing to standard output")?,
        Some(path) => {
            write_private(path, &out)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let value = serde_json::json!({
                "ok": true, "exported": users.len(), "file": path.display().to_string()
            });
            emit(json, &value, || {
                format!(
                    "{} user(s) of '{tenant}' written to {}",
                    users.len(),
                    path.display()
                )
            });
        }
    }
    Ok(())
}
