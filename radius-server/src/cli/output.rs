//! Printing results for humans or, with `--json`, for scripts.

use serde::Serialize;

/// Print `value` as JSON, or `human` as text.
pub fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: cannot print JSON: {e}"),
        }
    } else {
        let text = human();
        if !text.is_empty() {
            println!("{}", text.trim_end());
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
