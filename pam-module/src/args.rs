//! Module arguments (`auth required pam_portcullis.so tenant=acme first_factor=stack ...`).
//! Pure parsing: a typo is an error naming the argument, never a silent default.

use std::path::PathBuf;
use std::time::Duration;

use portcullis_core::protocol::Unenrolled;

/// Where the socket is unless `socket=` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/portcullis/pam.sock";

/// Where `failmode=safe` keeps the tenant's grant and its fail-open reports unless
/// `state_dir=` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/portcullis-pam";

/// The longest `socket=` path: `sun_path` of `sockaddr_un` holds 108 bytes with the NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// Who checks the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstFactorArg {
    /// Another module of the stack checked it (PAM_AUTHTOK is not sent anywhere).
    Stack,
    /// This module asks for it (or takes PAM_AUTHTOK) and the daemon checks it.
    Portcullis,
    /// Checked outside PAM (e.g. sshd's public key): only the second factor is asked.
    None,
}

/// What happens when the daemon cannot be reached: when the connect itself failed (no
/// socket file, nobody listening on it; over `url=` a resolver failing for now, connection
/// refused, no route, a connect that timed out). A failure once a connection was made (the
/// peer closed or reset it, the TLS handshake broke off, no answer in time, an answer cut
/// short) is refused in both modes: see [`crate::flow::CallError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Deny, telling the user the service is unavailable.
    Secure,
    /// Allow on the first factor alone and log it loudly (never with an unchecked password),
    /// only when the connect failed, only when the daemon has told this host that the
    /// tenant allows it (`pam_fail_mode = "safe"`), and only once the login's report is
    /// kept for the daemon's audit (see [`crate::failopen`]).
    Safe,
}

/// `url=https://HOST[:PORT][/PREFIX]`: the daemon of a fleet, over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsUrl {
    /// The host as written (a name, an IPv4 address, or an IPv6 address without brackets):
    /// what the certificate must name.
    pub host: String,
    pub port: u16,
    /// A path prefix (empty, or starting with `/` without a trailing one) for a daemon behind
    /// a reverse proxy; the module posts to `PREFIX/v1/pam/step`.
    pub prefix: String,
}

impl HttpsUrl {
    /// Parse `https://host[:port][/prefix]`.
    pub fn parse(text: &str) -> Result<HttpsUrl, String> {
        let rest = text
            .strip_prefix("https://")
            .ok_or("must start with https:// (the token and codes never travel in clear)")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err("must not hold a user name or password".into());
        }
        if path.contains(['?', '#']) {
            return Err("must not hold a query or fragment".into());
        }
        if !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the path must be printable ASCII without spaces".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or("an IPv6 address needs its closing ]")?;
            // After the ] only nothing or :PORT: `[fd00::5]8443` is a typo, not port 443.
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => {
                    return Err(format!(
                        "'{after}' after the ] of an IPv6 address: write the port as [ADDRESS]:PORT"
                    ))
                }
            };
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!(
                    "'[{h}]' is not an IPv6 address (brackets are only for one, as in https://[fd00::5]:8443)"
                ));
            }
            (h, port)
        } else {
            let (h, p) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            // `https://fd00::5` would otherwise become host `fd00:`, port 5.
            if p.is_some_and(|p| p.contains(':')) {
                return Err(format!(
                    "'{authority}' has more than one ':': an IPv6 address goes in brackets, as in https://[{authority}]:443"
                ));
            }
            let host_ok = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if !host_ok {
                return Err("needs a host name or address after https://".into());
            }
            (h, p)
        };
        let port = match port {
            None => 443,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("port '{p}' must be a number from 1 to 65535")),
            },
        };
        Ok(HttpsUrl {
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }
}

impl std::fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}{}", self.host, self.port, self.prefix)
        } else {
            write!(f, "https://{}:{}{}", self.host, self.port, self.prefix)
        }
    }
}

/// The parsed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub socket: PathBuf,
    /// `url=`: ask a remote daemon over HTTPS instead of the socket.
    pub url: Option<HttpsUrl>,
    /// `token_file=`: this host's token (`portcullis host add`), with `url=`.
    pub token_file: Option<PathBuf>,
    /// `ca_file=`: the CA certificates that sign the daemon's certificate (a private CA);
    /// without it the system's trust store is used.
    pub ca_file: Option<PathBuf>,
    /// `daemon_user=NAME`: the user `portcullis serve` runs as, trusted to answer on the
    /// socket besides root and the owner of the socket's directory (its uid is looked up
    /// when the module runs; a name that does not exist is a setup error).
    pub daemon_user: Option<String>,
    pub tenant: String,
    pub first_factor: FirstFactorArg,
    pub unenrolled: Unenrolled,
    pub failmode: FailMode,
    /// `state_dir=`: where `failmode=safe` keeps the tenant's grant and its fail-open
    /// reports (see [`crate::failopen`]).
    pub state_dir: PathBuf,
    /// Deadline of each exchange with the daemon (connect, send, receive).
    pub timeout: Duration,
    /// How long a step in the middle of a login waits for a daemon that cannot be reached
    /// or closes the connection under the request (a restart) before the login is decided
    /// (`failmode` if the connect still fails, refused if a connection is made and closed);
    /// 0 = not at all. Counted in attempts and pauses, so stopping the process does not
    /// spend it (see `flow::call_waiting`).
    pub restart_wait: Duration,
    /// Delay after a failed login (pam_fail_delay), in microseconds.
    pub fail_delay_us: u32,
    /// `use_first_pass`: never prompt for the password, take PAM_AUTHTOK.
    pub use_first_pass: bool,
    /// `try_first_pass`: take PAM_AUTHTOK if set, else prompt.
    pub try_first_pass: bool,
    pub debug: bool,
}

/// Default of `restart_wait=`: longer than the daemon takes to stop (it lets logins in
/// flight finish for up to 10 s, then its HTTP listener for up to 5 s) and start again.
pub const DEFAULT_RESTART_WAIT_SECS: u64 = 30;

/// An argument that cannot be used; the message names it and says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(pub String);

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user name as `daemon_user=` takes it: what useradd and systemd's `User=` accept,
/// no more (a `$` at the end, for machine accounts, is no daemon's).
fn is_user_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && !v.starts_with('-')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Args {
    /// Parse the module's arguments.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Args, ArgError> {
        let mut a = Args {
            socket: PathBuf::from(DEFAULT_SOCKET),
            url: None,
            token_file: None,
            ca_file: None,
            daemon_user: None,
            tenant: String::new(),
            first_factor: FirstFactorArg::Portcullis,
            unenrolled: Unenrolled::Deny,
            failmode: FailMode::Secure,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            timeout: Duration::from_secs(10),
            restart_wait: Duration::from_secs(DEFAULT_RESTART_WAIT_SECS),
            fail_delay_us: 2_000_000,
            use_first_pass: false,
            try_first_pass: false,
            debug: false,
        };
        let err = |m: String| Err(ArgError(m));
        let mut socket_given = false;
        let mut state_dir_given = false;
        for arg in args {
            let arg = arg.as_ref();
            let (key, value) = match arg.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (arg, None),
            };
            match (key, value) {
                ("socket", Some(v)) if v.len() > MAX_SOCKET_PATH => {
                    return err(format!(
                        "socket={v}: {} bytes, longer than the {MAX_SOCKET_PATH} a Unix socket path may have (sun_path); use a shorter path, in the daemon's [pam] socket too",
                        v.len()
                    ))
                }
                ("socket", Some(v)) if v.starts_with('/') => {
                    a.socket = PathBuf::from(v);
                    socket_given = true;
                }
                ("socket", _) => return err(format!("socket={}: must be an absolute path", value.unwrap_or(""))),
                ("url", Some(v)) => match HttpsUrl::parse(v) {
                    Ok(u) => a.url = Some(u),
                    Err(e) => return err(format!("url={v}: {e}")),
                },
                ("token_file", Some(v)) if v.starts_with('/') => a.token_file = Some(PathBuf::from(v)),
                ("ca_file", Some(v)) if v.starts_with('/') => a.ca_file = Some(PathBuf::from(v)),
                ("state_dir", Some(v)) if v.starts_with('/') && v.len() > 1 => {
                    a.state_dir = PathBuf::from(v);
                    state_dir_given = true;
                }
                ("state_dir", _) => {
                    return err(format!("state_dir={}: must be an absolute path of a directory", value.unwrap_or("")))
                }
                ("token_file" | "ca_file", _) => {
                    return err(format!("{key}={}: must be an absolute path", value.unwrap_or("")))
                }
                ("tenant", Some(v)) if !v.is_empty() => a.tenant = v.to_string(),
                ("daemon_user", Some(v)) if is_user_name(v) => a.daemon_user = Some(v.to_string()),
                ("daemon_user", _) => {
                    return err(format!(
                        "{arg}: daemon_user= needs the name of the user portcullis serve runs as (letters, digits, . _ -)"
                    ))
                }
                ("first_factor", Some("stack")) => a.first_factor = FirstFactorArg::Stack,
                ("first_factor", Some("portcullis")) => a.first_factor = FirstFactorArg::Portcullis,
                ("first_factor", Some("none")) => a.first_factor = FirstFactorArg::None,
                ("unenrolled", Some("deny")) => a.unenrolled = Unenrolled::Deny,
                ("unenrolled", Some("allow")) => a.unenrolled = Unenrolled::Allow,
                ("unenrolled", Some("enroll")) => a.unenrolled = Unenrolled::Enroll,
                ("failmode", Some("secure")) => a.failmode = FailMode::Secure,
                ("failmode", Some("safe")) => a.failmode = FailMode::Safe,
                ("timeout", Some(v)) => match v.parse::<u64>() {
                    Ok(s) if (1..=120).contains(&s) => a.timeout = Duration::from_secs(s),
                    _ => return err(format!("timeout={v}: must be whole seconds from 1 to 120")),
                },
                ("restart_wait", Some(v)) => match v.parse::<u64>() {
                    Ok(s) if s <= 300 => a.restart_wait = Duration::from_secs(s),
                    _ => {
                        return err(format!(
                            "restart_wait={v}: must be whole seconds from 0 to 300"
                        ))
                    }
                },
                ("fail_delay", Some(v)) => match v.parse::<u32>() {
                    Ok(ms) if ms <= 10_000 => a.fail_delay_us = ms * 1000,
                    _ => return err(format!("fail_delay={v}: must be milliseconds from 0 to 10000")),
                },
                ("use_first_pass", None) => a.use_first_pass = true,
                ("try_first_pass", None) => a.try_first_pass = true,
                ("debug", None) => a.debug = true,
                ("tenant", _) => return err("tenant=: needs the tenant's name".into()),
                ("first_factor", _) => {
                    return err(format!(
                        "{arg}: first_factor must be stack, portcullis or none"
                    ))
                }
                ("unenrolled", _) => {
                    return err(format!("{arg}: unenrolled must be deny, allow or enroll"))
                }
                ("failmode", _) => return err(format!("{arg}: failmode must be secure or safe")),
                _ => {
                    return err(format!(
                        "unknown argument '{arg}' (known: socket= daemon_user= url= token_file= ca_file= tenant= first_factor= unenrolled= failmode= state_dir= timeout= restart_wait= fail_delay= use_first_pass try_first_pass debug)"
                    ))
                }
            }
        }
        if a.tenant.is_empty() {
            return err("tenant=NAME is required".into());
        }
        match (&a.url, &a.token_file) {
            (Some(_), _) if socket_given => {
                return err("socket= and url= exclude each other: use socket= for a daemon on this machine, url= for a remote one".into())
            }
            (Some(_), None) => {
                return err("url= needs token_file=/path/to/token (the host's token from `portcullis host add`)".into())
            }
            (None, Some(_)) => {
                return err("token_file= is used only with url=https://...".into())
            }
            _ => {}
        }
        if state_dir_given && a.failmode != FailMode::Safe {
            return err("state_dir= is used only with failmode=safe (where it keeps the tenant's grant and the fail-open reports)".into());
        }
        if a.ca_file.is_some() && a.url.is_none() {
            return err("ca_file= is used only with url=https://...".into());
        }
        if a.daemon_user.is_some() && a.url.is_some() {
            return err("daemon_user= is used only with the socket (socket=), not with url=: over HTTPS the daemon's certificate says who it is".into());
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fail_closed() {
        let a = Args::parse(&["tenant=acme"]).unwrap();
        assert_eq!(a.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(a.first_factor, FirstFactorArg::Portcullis);
        assert_eq!(a.unenrolled, Unenrolled::Deny);
        assert_eq!(a.failmode, FailMode::Secure);
        assert_eq!(a.timeout, Duration::from_secs(10));
        assert_eq!(a.restart_wait, Duration::from_secs(30));
        assert_eq!(a.daemon_user, None);
        assert_eq!(a.state_dir, PathBuf::from("/var/lib/portcullis-pam"));
        assert!(!a.debug);
    }

    #[test]
    fn state_dir_is_an_absolute_path_used_only_with_failmode_safe() {
        let a = Args::parse(&["tenant=acme", "failmode=safe"]).unwrap();
        assert_eq!(a.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        let a = Args::parse(&["tenant=acme", "state_dir=/srv/pam-state", "failmode=safe"]).unwrap();
        assert_eq!(a.state_dir, PathBuf::from("/srv/pam-state"));
        for (args, needle) in [
            (
                vec!["tenant=acme", "failmode=safe", "state_dir=rel"],
                "state_dir=rel: must be an absolute path",
            ),
            (
                vec!["tenant=acme", "failmode=safe", "state_dir="],
                "state_dir=: must be an absolute path",
            ),
            (
                vec!["tenant=acme", "failmode=safe", "state_dir=/"],
                "state_dir=/: must be",
            ),
            (
                vec!["tenant=acme", "failmode=safe", "state_dir"],
                "state_dir=: must be",
            ),
            (
                vec!["tenant=acme", "state_dir=/srv/x"],
                "state_dir= is used only with failmode=safe",
            ),
            (
                vec!["tenant=acme", "failmode=secure", "state_dir=/srv/x"],
                "used only with failmode=safe",
            ),
        ] {
            let e = Args::parse(&args).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        let e = Args::parse(&["tenant=acme", "statedir=/x"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("state_dir="), "{e}");
    }

    #[test]
    fn every_argument_is_understood() {
        let a = Args::parse(&[
            "socket=/tmp/p.sock",
            "daemon_user=portcullis",
            "tenant=acme",
            "first_factor=stack",
            "unenrolled=allow",
            "failmode=safe",
            "timeout=3",
            "restart_wait=0",
            "fail_delay=0",
            "try_first_pass",
            "use_first_pass",
            "debug",
        ])
        .unwrap();
        assert_eq!(a.socket, PathBuf::from("/tmp/p.sock"));
        assert_eq!(a.daemon_user.as_deref(), Some("portcullis"));
        assert_eq!(a.first_factor, FirstFactorArg::Stack);
        assert_eq!(a.unenrolled, Unenrolled::Allow);
        assert_eq!(a.failmode, FailMode::Safe);
        assert_eq!(a.timeout, Duration::from_secs(3));
        assert_eq!(a.restart_wait, Duration::ZERO);
        assert_eq!(a.fail_delay_us, 0);
        assert!(a.try_first_pass && a.use_first_pass && a.debug);
        let a = Args::parse(&["tenant=acme", "unenrolled=enroll", "first_factor=none"]).unwrap();
        assert_eq!(a.unenrolled, Unenrolled::Enroll);
        assert_eq!(a.first_factor, FirstFactorArg::None);
    }

    #[test]
    fn https_transport_arguments() {
        let a = Args::parse(&[
            "tenant=acme",
            "url=https://gate.example.com:8443",
            "token_file=/etc/portcullis/host.token",
            "ca_file=/etc/portcullis/ca.pem",
        ])
        .unwrap();
        let url = a.url.unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.prefix.as_str()),
            ("gate.example.com", 8443, "")
        );
        assert_eq!(url.to_string(), "https://gate.example.com:8443");
        assert_eq!(
            a.token_file.unwrap(),
            PathBuf::from("/etc/portcullis/host.token")
        );
        assert_eq!(a.ca_file.unwrap(), PathBuf::from("/etc/portcullis/ca.pem"));
        // The default port, a path prefix, addresses.
        for (text, host, port, prefix) in [
            ("https://gate", "gate", 443, ""),
            ("https://gate/", "gate", 443, ""),
            ("https://gate/mfa/", "gate", 443, "/mfa"),
            ("https://127.0.0.1:9", "127.0.0.1", 9, ""),
            ("https://[::1]:8443/p", "::1", 8443, "/p"),
        ] {
            let u = HttpsUrl::parse(text).unwrap();
            assert_eq!(
                (u.host.as_str(), u.port, u.prefix.as_str()),
                (host, port, prefix),
                "{text}"
            );
        }
        assert_eq!(
            HttpsUrl::parse("https://[::1]:8443").unwrap().to_string(),
            "https://[::1]:8443"
        );
        // Without url= the socket is used, as before.
        let a = Args::parse(&["tenant=acme"]).unwrap();
        assert!(a.url.is_none() && a.token_file.is_none() && a.ca_file.is_none());
    }

    #[test]
    fn malformed_url_hosts_are_refused() {
        for (text, needle) in [
            // Not port 443: the ':' is missing.
            ("https://[fd00::5]8443", "after the ]"),
            ("https://[fd00::5]x", "after the ]"),
            // Not host `fd00:` and port 5.
            ("https://fd00::5", "brackets"),
            ("https://fd00::5:8443", "brackets"),
            ("https://::443", "brackets"),
            // Brackets hold an IPv6 address and nothing else.
            ("https://[gate.example.com]:8443", "not an IPv6 address"),
            ("https://[127.0.0.1]", "not an IPv6 address"),
            ("https://[:]", "not an IPv6 address"),
            ("https://[]:443", "not an IPv6 address"),
            ("https://[fd00::5", "closing ]"),
            // A bare ':' is no host.
            ("https://:", "host"),
            ("https://:443", "host"),
            ("https://[fd00::5]:", "port"),
            ("https://[fd00::5]:0", "port"),
        ] {
            let e = HttpsUrl::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
            // The module's argument parser refuses it too, naming url=.
            let arg = format!("url={text}");
            let e = Args::parse(&["tenant=acme", &arg, "token_file=/t"])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("url="), "{text}: {e}");
        }
        for (text, host, port) in [
            ("https://[fd00::5]", "fd00::5", 443),
            ("https://[fd00::5]:8443", "fd00::5", 8443),
            ("https://[::ffff:192.0.2.1]:9", "::ffff:192.0.2.1", 9),
        ] {
            let u = HttpsUrl::parse(text).unwrap();
            assert_eq!((u.host.as_str(), u.port), (host, port), "{text}");
        }
    }

    #[test]
    fn a_socket_path_longer_than_sun_path_is_refused() {
        // 107 bytes fit (sun_path is 108 with the NUL); 108 do not.
        let fits = format!("/{}", "s".repeat(MAX_SOCKET_PATH - 1));
        let a = Args::parse(&["tenant=acme".to_string(), format!("socket={fits}")]).unwrap();
        assert_eq!(a.socket, PathBuf::from(&fits));
        let long = format!("{fits}x");
        let e = Args::parse(&["tenant=acme".to_string(), format!("socket={long}")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("socket=") && e.contains("108 bytes"), "{e}");
        assert!(e.contains("shorter path"), "{e}");
    }

    #[test]
    fn daemon_user_names_the_daemons_user_for_the_socket() {
        // With the default socket too; the last one given wins, as for other arguments.
        for (args, user) in [
            (vec!["tenant=acme", "daemon_user=nobody"], "nobody"),
            (
                vec![
                    "tenant=acme",
                    "daemon_user=a",
                    "daemon_user=_portcullis-2.x",
                ],
                "_portcullis-2.x",
            ),
        ] {
            let a = Args::parse(&args).unwrap();
            assert_eq!(a.daemon_user.as_deref(), Some(user), "{args:?}");
        }
        for (args, needle) in [
            (
                vec!["tenant=acme", "daemon_user="],
                "daemon_user=: daemon_user= needs",
            ),
            (
                vec!["tenant=acme", "daemon_user"],
                "daemon_user: daemon_user= needs",
            ),
            (vec!["tenant=acme", "daemon_user=a b"], "daemon_user=a b:"),
            (vec!["tenant=acme", "daemon_user=-x"], "daemon_user=-x:"),
            (vec!["tenant=acme", "daemon_user=x/y"], "daemon_user=x/y:"),
            (
                vec![
                    "tenant=acme",
                    "daemon_user=portcullis",
                    "url=https://x",
                    "token_file=/t",
                ],
                "daemon_user= is used only with the socket",
            ),
        ] {
            let e = Args::parse(&args).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        // Named in the list of known arguments.
        let e = Args::parse(&["tenant=acme", "daemon-user=x"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("daemon_user="), "{e}");
    }

    #[test]
    fn mistakes_are_errors_that_name_the_argument() {
        for (args, needle) in [
            (vec!["tenant=acme", "failmode=open"], "failmode"),
            (vec!["tenant=acme", "first_factor=ldap"], "first_factor"),
            (vec!["tenant=acme", "timout=3"], "timout"),
            (vec!["tenant=acme", "timeout=0"], "timeout"),
            (vec!["tenant=acme", "restart_wait=301"], "restart_wait"),
            (vec!["tenant=acme", "restart_wait=-1"], "restart_wait"),
            (vec!["tenant=acme", "socket=relative"], "socket"),
            (vec!["tenant=acme", "url=https://x"], "token_file"),
            (vec!["tenant=acme", "url=http://x", "token_file=/t"], "url"),
            (vec!["tenant=acme", "url=https://", "token_file=/t"], "url"),
            (
                vec!["tenant=acme", "url=https://x:0", "token_file=/t"],
                "port",
            ),
            (
                vec!["tenant=acme", "url=https://u:p@x", "token_file=/t"],
                "url",
            ),
            (
                vec!["tenant=acme", "url=https://x", "token_file=rel"],
                "token_file",
            ),
            (
                vec![
                    "tenant=acme",
                    "url=https://x",
                    "token_file=/t",
                    "ca_file=ca.pem",
                ],
                "ca_file",
            ),
            (vec!["tenant=acme", "token_file=/t"], "token_file"),
            (vec!["tenant=acme", "ca_file=/ca.pem"], "ca_file"),
            (
                vec!["tenant=acme", "socket=/s", "url=https://x", "token_file=/t"],
                "socket=",
            ),
            (vec!["first_factor=stack"], "tenant"),
            (vec!["tenant="], "tenant"),
            (vec!["tenant=acme", "debug=yes"], "debug"),
        ] {
            let e = Args::parse(&args).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
