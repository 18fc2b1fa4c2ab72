//! The users file of `radius-load`: one user per line, `name password base32-secret`
//! separated by spaces or tabs; `#` starts a comment line. Written by `bench-users`.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// A user the generator logs in as.
pub struct LoadUser {
    pub name: String,
    pub password: String,
    pub secret: Vec<u8>,
}

/// Read a users file.
pub fn read(path: &Path) -> Result<Vec<LoadUser>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

/// Parse the text of a users file.
pub fn parse(text: &str) -> Result<Vec<LoadUser>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, password, secret] = fields[..] else {
            bail!(
                "line {}: expected 3 fields `name password base32-secret`, found {}",
                i + 1,
                fields.len()
            );
        };
        let secret = data_encoding::BASE32_NOPAD
            .decode(secret.trim_end_matches('=').to_ascii_uppercase().as_bytes())
            .with_context(|| format!("line {}: the secret is not base32", i + 1))?;
        out.push(LoadUser {
            name: name.to_string(),
            password: password.to_string(),
            secret,
        });
    }
    if out.is_empty() {
        bail!("no users");
    }
    Ok(out)
}

/// Which users were used at which TOTP step across runs (`--ledger`): a user is never
/// sent twice within one step, also by two runs, so the server's replay protection sees
/// only honest traffic. One line per user: the last step it was used at (0 = never).
pub struct Ledger {
    pub last_step: Vec<u64>,
}

impl Ledger {
    /// Load the ledger for `users` users (a missing file = nobody used yet).
    pub fn load(path: &Path, users: usize) -> Result<Ledger> {
        let mut last_step = vec![0u64; users];
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    if let Some(slot) = last_step.get_mut(i) {
                        *slot = line.trim().parse().with_context(|| {
                            format!("{} line {}: not a step number", path.display(), i + 1)
                        })?;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
        Ok(Ledger { last_step })
    }

    /// Indexes of the users not used at `step` or later.
    pub fn free_at(&self, step: u64) -> Vec<usize> {
        (0..self.last_step.len())
            .filter(|&i| self.last_step[i] < step)
            .collect()
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = String::with_capacity(self.last_step.len() * 9);
        for s in &self.last_step {
            text.push_str(&s.to_string());
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users_and_refuses_bad_lines() {
        let u = parse("# c\nalice pw1 JBSWY3DPEHPK3PXP\n\nbob\tpw2\tjbswy3dpehpk3pxp\n").unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u[1].name, "bob");
        assert_eq!(u[0].secret, b"Hello!\xde\xad\xbe\xef");
        assert!(parse("alice pw1\n").is_err());
        assert!(parse("alice pw1 not-base32!\n").is_err());
    }

    #[test]
    fn the_ledger_frees_users_only_in_a_later_step() {
        let dir = std::env::temp_dir().join(format!("ledger-{}", std::process::id()));
        let mut l = Ledger::load(&dir, 3).unwrap();
        assert_eq!(l.free_at(100), vec![0, 1, 2]);
        l.last_step[1] = 100;
        l.save(&dir).unwrap();
        let l = Ledger::load(&dir, 3).unwrap();
        assert_eq!(l.free_at(100), vec![0, 2]);
        assert_eq!(l.free_at(101), vec![0, 1, 2]);
        let _ = std::fs::remove_file(&dir);
    }
}
