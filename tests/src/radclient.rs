//! `radclient` (freeradius-utils) as the NAS.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::tools::{require_tool, run_with_timeout};

/// Attributes of type `octets`: given as hex (`0x...`) and never quoted.
const OCTETS: &[&str] = &[
    "State",
    "Class",
    "Proxy-State",
    "Message-Authenticator",
    "EAP-Message",
    "CHAP-Password",
    "CHAP-Challenge",
];

/// What radclient saw in answer to one Access-Request.
#[derive(Debug, Clone)]
pub struct RadReply {
    /// `Access-Accept`, `Access-Reject`, `Access-Challenge`, or `None` for no (valid) reply.
    pub code: Option<String>,
    /// The State of the reply, as hex digits without `0x`.
    pub state_hex: Option<String>,
    /// The Reply-Message(s) of the reply, concatenated, unescaped.
    pub reply_message: Option<String>,
    /// Every attribute of the reply in order: name and value (strings unquoted/unescaped,
    /// octets as `0x...`, others as printed).
    pub attributes: Vec<(String, String)>,
    /// radclient's stdout and stderr, for assertion messages.
    pub raw_output: String,
}

impl RadReply {
    pub fn is_accept(&self) -> bool {
        self.code.as_deref() == Some("Access-Accept")
    }
    pub fn is_reject(&self) -> bool {
        self.code.as_deref() == Some("Access-Reject")
    }
    pub fn is_challenge(&self) -> bool {
        self.code.as_deref() == Some("Access-Challenge")
    }
    pub fn is_no_reply(&self) -> bool {
        self.code.is_none()
    }

    /// The value of the first attribute called `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The State to send back, `0x...`; fails the test when the reply has none.
    pub fn state_for_radclient(&self) -> String {
        format!(
            "0x{}",
            self.state_hex
                .as_deref()
                .unwrap_or_else(|| panic!("reply has no State:\n{}", self.raw_output))
        )
    }
}

/// Quotes a string value the way radclient's input parser expects.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The one input line radclient reads: `Name = value, ...`.
fn input_line(attrs: &[(&str, String)], with_message_authenticator: bool) -> String {
    let mut parts: Vec<String> = attrs
        .iter()
        .map(|(name, value)| {
            if OCTETS.contains(name) {
                let hex = value.strip_prefix("0x").unwrap_or(value);
                format!("{name} = 0x{hex}")
            } else {
                format!("{name} = {}", quote(value))
            }
        })
        .collect();
    if with_message_authenticator {
        // radclient 3.2.1 computes the real HMAC when the attribute is present.
        parts.push("Message-Authenticator = 0x00".into());
    }
    parts.join(", ") + "\n"
}

/// Undoes radclient's escaping of a printed double-quoted string.
fn unescape(printed: &str) -> String {
    let inner = printed
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(printed);
    let mut bytes = Vec::with_capacity(inner.len());
    let raw = inner.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() {
            let next = raw[i + 1];
            match next {
                b'n' => bytes.push(b'\n'),
                b'r' => bytes.push(b'\r'),
                b't' => bytes.push(b'\t'),
                b'0'..=b'7'
                    if raw.len() >= i + 4
                        && raw[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) =>
                {
                    let s = std::str::from_utf8(&raw[i + 1..i + 4]).unwrap();
                    bytes.push(u8::from_str_radix(s, 8).unwrap_or(b'?'));
                    i += 4;
                    continue;
                }
                other => bytes.push(other),
            }
            i += 2;
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Parses radclient `-x` output. The last `Received <Code> Id ...` block is the reply.
fn parse_output(raw_output: String) -> RadReply {
    let mut code = None;
    let mut attributes: Vec<(String, String)> = Vec::new();
    let mut in_reply = false;
    for line in raw_output.lines() {
        if let Some(rest) = line.strip_prefix("Received ") {
            code = rest.split_whitespace().next().map(str::to_string);
            attributes.clear();
            in_reply = true;
            continue;
        }
        if in_reply {
            if let Some(attr) = line.strip_prefix('\t') {
                if let Some((name, value)) = attr.split_once(" = ") {
                    let value = if value.starts_with('"') {
                        unescape(value)
                    } else {
                        value.to_string()
                    };
                    attributes.push((name.trim().to_string(), value));
                }
                continue;
            }
            in_reply = false;
        }
    }
    let state_hex = attributes
        .iter()
        .find(|(n, _)| n == "State")
        .map(|(_, v)| v.strip_prefix("0x").unwrap_or(v).to_ascii_lowercase());
    let messages: Vec<&str> = attributes
        .iter()
        .filter(|(n, _)| n == "Reply-Message")
        .map(|(_, v)| v.as_str())
        .collect();
    let reply_message = if messages.is_empty() {
        None
    } else {
        Some(messages.concat())
    };
    RadReply {
        code,
        state_hex,
        reply_message,
        attributes,
        raw_output,
    }
}

/// Sends one Access-Request with `radclient -x -r 1 -t 5 ADDR auth SECRET` (one try, 5 s
/// timeout) and parses what comes back. radclient's exit status (non-zero on reject or no
/// reply) is not an error here: the returned [`RadReply`] says what happened.
pub fn radclient(
    addr: SocketAddr,
    secret: &str,
    attrs: &[(&str, String)],
    with_message_authenticator: bool,
) -> RadReply {
    radclient_command(addr, "auth", secret, attrs, with_message_authenticator)
}

/// Like [`radclient`] with one try of `timeout_secs` (for a server that holds the
/// request, e.g. while a push waits for approval).
pub fn radclient_waiting(
    addr: SocketAddr,
    secret: &str,
    attrs: &[(&str, String)],
    timeout_secs: u32,
) -> RadReply {
    run_radclient(addr, "auth", secret, attrs, true, timeout_secs)
}

/// Like [`radclient`] with another radclient command: `status` sends a Status-Server.
pub fn radclient_command(
    addr: SocketAddr,
    command: &str,
    secret: &str,
    attrs: &[(&str, String)],
    with_message_authenticator: bool,
) -> RadReply {
    run_radclient(
        addr,
        command,
        secret,
        attrs,
        with_message_authenticator,
        ONE_TRY_SECS,
    )
}

/// How long [`radclient`] waits for its one try: a wrong password costs a whole password
/// hash (argon2id at the default cost, unoptimized in a debug build), which took more than
/// 2 s on a busy machine; the tests that expect no answer wait this long too.
const ONE_TRY_SECS: u32 = 5;

fn run_radclient(
    addr: SocketAddr,
    command: &str,
    secret: &str,
    attrs: &[(&str, String)],
    with_message_authenticator: bool,
    timeout_secs: u32,
) -> RadReply {
    let tool = require_tool("radclient", "freeradius-utils");
    let input = input_line(attrs, with_message_authenticator);
    let mut cmd = Command::new(tool);
    let t = timeout_secs.to_string();
    cmd.args(["-x", "-r", "1", "-t", &t])
        .arg(addr.to_string())
        .arg(command)
        .arg(secret);
    let out = run_with_timeout(
        cmd,
        Some(input.clone().into_bytes()),
        Duration::from_secs(20 + u64::from(timeout_secs)),
    );
    let raw_output = format!(
        "$ radclient -x -r 1 -t {t} {addr} {command} <secret> <<< {}{}{}(radclient {})",
        input,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    parse_output(raw_output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_challenge() {
        let out = "Sent Access-Request Id 102 from 0.0.0.0:38466 to 127.0.0.1:18998 length 67\n\
            \tUser-Name = \"alice\"\n\
            \tState = 0x0102\n\
            Received Access-Challenge Id 102 from 127.0.0.1:18998 to 127.0.0.1:38466 length 63\n\
            \tMessage-Authenticator = 0xbc4ff8787fb8b9d3385f716571c668ba\n\
            \tReply-Message = \"Enter \\\"code\\\":\\n\\\\x\\001\"\n\
            \tState = 0xDEADbeef0011\n\
            \tSession-Timeout = 120\n"
            .to_string();
        let r = parse_output(out);
        assert_eq!(r.code.as_deref(), Some("Access-Challenge"));
        assert_eq!(r.state_hex.as_deref(), Some("deadbeef0011"));
        assert_eq!(
            r.reply_message.as_deref(),
            Some("Enter \"code\":\n\\x\u{1}")
        );
        assert_eq!(r.attributes[0].0, "Message-Authenticator");
        assert_eq!(r.attribute("Session-Timeout"), Some("120"));
        assert_eq!(r.state_for_radclient(), "0xdeadbeef0011");
    }

    #[test]
    fn parses_no_reply() {
        let out = "Sent Access-Request Id 254 from 0.0.0.0:37214 to 127.0.0.1:18999 length 63\n\
            \tUser-Name = \"alice\"\n\
            (0) No reply from server for ID 254 socket 3\n"
            .to_string();
        let r = parse_output(out);
        assert!(r.is_no_reply());
        assert!(r.attributes.is_empty());
    }

    #[test]
    fn input_quotes_strings_and_not_octets() {
        let line = input_line(
            &[
                ("User-Name", "a\"b\\c,d".into()),
                ("State", "0xabcd".into()),
                ("Class", "ef01".into()),
            ],
            true,
        );
        assert_eq!(
            line,
            "User-Name = \"a\\\"b\\\\c,d\", State = 0xabcd, Class = 0xef01, Message-Authenticator = 0x00\n"
        );
    }
}
