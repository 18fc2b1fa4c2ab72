//! Printing results for humans or, with `--json`, for scripts.
//!
//! Standard output is written with `write!`, never `println!` (which panics when the
//! reader is gone). When the reader closes the pipe early (`portcullis ... | head`), the
//! rest of the output is dropped quietly and the command exits with status 141 (128 +
//! SIGPIPE, what the shell reports for `cat`, `grep` and the like in the same place), so
//! that `set -o pipefail` still tells a cut-off export from a whole one. The command's
//! work (a change, its audit record) is done either way.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::Serialize;

/// The exit status of a command whose reader closed standard output early.
pub const BROKEN_PIPE_STATUS: u8 = 141;

/// 0: standard output took everything; else the exit status its failure calls for.
static STDOUT_STATUS: AtomicU8 = AtomicU8::new(0);

/// The exit status that writing to standard output calls for: `None` if it took
/// everything, [`BROKEN_PIPE_STATUS`] if its reader went away, 1 on another error (which
/// was reported on standard error).
pub fn stdout_status() -> Option<u8> {
    match STDOUT_STATUS.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}

/// Write `bytes` to standard output. A closed pipe is remembered (see
/// [`stdout_status`]) and not an error; nothing more is written after it.
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    if STDOUT_STATUS.load(Ordering::Relaxed) == BROKEN_PIPE_STATUS {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_STATUS.store(BROKEN_PIPE_STATUS, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// Print one line (`text` and a newline) to standard output; a failure other than a
/// closed pipe is reported on standard error and makes the exit status 1.
pub fn print_line(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    if let Err(e) = write_stdout(line.as_bytes()) {
        let _ = STDOUT_STATUS.compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed);
        let _ = writeln!(
            std::io::stderr(),
            "error: cannot write to standard output: {e}"
        );
    }
}

/// Print `value` as JSON, or `human` as text.
pub fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(s) => print_line(&s),
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "error: cannot print JSON: {e}");
            }
        }
    } else {
        let text = human();
        if !text.is_empty() {
            print_line(text.trim_end());
        }
    }
}

/// A UTC timestamp for humans.
pub fn time(t: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
    )
    .to_string()
}

/// A terminal QR code of `text` (two rows per line), or an empty string if it does not fit.
pub fn qr(text: &str) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

/// Simple left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    // Cells hold what anyone could type (a RADIUS User-Name, a Calling-Station-Id, the
    // self-service form): terminal control sequences are shown escaped, never run.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c)).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:w$}", c, w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.iter().map(|s| s.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

/// `text` with control characters (ESC, CR, backspace, ...) and the bidirectional
/// overrides written as escapes (`\u{1b}`), so that a cell cannot move the cursor, erase
/// lines or reorder what the terminal shows.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}');
        if c.is_control() || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cells_cannot_drive_the_terminal() {
        let typed = "alice\u{1b}[1A\u{1b}[2K\rroot\u{202e}txt.exe".to_string();
        let out = table(&["USER"], &[vec![typed]]);
        assert!(!out
            .chars()
            .any(|c| c == '\u{1b}' || c == '\r' || c == '\u{202e}'));
        assert!(out.contains("alice\\u{1b}[1A"), "{out}");
        assert_eq!(printable("zoë ok"), "zoë ok");
    }
}
