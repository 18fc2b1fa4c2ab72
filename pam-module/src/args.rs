//! Module arguments (`auth required pam_portcullis.so tenant=acme first_factor=stack ...`).
//! Pure parsing: a typo is an error naming the argument, never a silent default.

use std::path::PathBuf;
use std::time::Duration;

use portcullis_core::protocol::Unenrolled;

/// Where the socket is unless `socket=` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/portcullis/pam.sock";

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

/// What happens when the daemon cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Deny, telling the user the service is unavailable.
    Secure,
    /// Allow on the first factor alone and log it loudly (never with an unchecked password).
    Safe,
}

/// The parsed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub socket: PathBuf,
    pub tenant: String,
    pub first_factor: FirstFactorArg,
    pub unenrolled: Unenrolled,
    pub failmode: FailMode,
    /// Deadline of each exchange with the daemon (connect, send, receive).
    pub timeout: Duration,
    /// Delay after a failed login (pam_fail_delay), in microseconds.
    pub fail_delay_us: u32,
    /// `use_first_pass`: never prompt for the password, take PAM_AUTHTOK.
    pub use_first_pass: bool,
    /// `try_first_pass`: take PAM_AUTHTOK if set, else prompt.
    pub try_first_pass: bool,
    pub debug: bool,
}

/// An argument that cannot be used; the message names it and says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(pub String);

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Args {
    /// Parse the module's arguments.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Args, ArgError> {
        let mut a = Args {
            socket: PathBuf::from(DEFAULT_SOCKET),
            tenant: String::new(),
            first_factor: FirstFactorArg::Portcullis,
            unenrolled: Unenrolled::Deny,
            failmode: FailMode::Secure,
            timeout: Duration::from_secs(10),
            fail_delay_us: 2_000_000,
            use_first_pass: false,
            try_first_pass: false,
            debug: false,
        };
        let err = |m: String| Err(ArgError(m));
        for arg in args {
            let arg = arg.as_ref();
            let (key, value) = match arg.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (arg, None),
            };
            match (key, value) {
                ("socket", Some(v)) if v.starts_with('/') => a.socket = PathBuf::from(v),
                ("socket", _) => return err(format!("socket={}: must be an absolute path", value.unwrap_or(""))),
                ("url", _) | ("token_file", _) => {
                    return err(format!(
                        "{key}=: the HTTPS transport for remote hosts is not available in this version; use socket= with a local portcullis serve"
                    ))
                }
                ("tenant", Some(v)) if !v.is_empty() => a.tenant = v.to_string(),
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
                        "unknown argument '{arg}' (known: socket= tenant= first_factor= unenrolled= failmode= timeout= fail_delay= use_first_pass try_first_pass debug)"
                    ))
                }
            }
        }
        if a.tenant.is_empty() {
            return err("tenant=NAME is required".into());
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
        assert!(!a.debug);
    }

    #[test]
    fn every_argument_is_understood() {
        let a = Args::parse(&[
            "socket=/tmp/p.sock",
            "tenant=acme",
            "first_factor=stack",
            "unenrolled=allow",
            "failmode=safe",
            "timeout=3",
            "fail_delay=0",
            "try_first_pass",
            "use_first_pass",
            "debug",
        ])
        .unwrap();
        assert_eq!(a.socket, PathBuf::from("/tmp/p.sock"));
        assert_eq!(a.first_factor, FirstFactorArg::Stack);
        assert_eq!(a.unenrolled, Unenrolled::Allow);
        assert_eq!(a.failmode, FailMode::Safe);
        assert_eq!(a.timeout, Duration::from_secs(3));
        assert_eq!(a.fail_delay_us, 0);
        assert!(a.try_first_pass && a.use_first_pass && a.debug);
        let a = Args::parse(&["tenant=acme", "unenrolled=enroll", "first_factor=none"]).unwrap();
        assert_eq!(a.unenrolled, Unenrolled::Enroll);
        assert_eq!(a.first_factor, FirstFactorArg::None);
    }

    #[test]
    fn mistakes_are_errors_that_name_the_argument() {
        for (args, needle) in [
            (vec!["tenant=acme", "failmode=open"], "failmode"),
            (vec!["tenant=acme", "first_factor=ldap"], "first_factor"),
            (vec!["tenant=acme", "timout=3"], "timout"),
            (vec!["tenant=acme", "timeout=0"], "timeout"),
            (vec!["tenant=acme", "socket=relative"], "socket"),
            (vec!["tenant=acme", "url=https://x"], "url"),
            (vec!["first_factor=stack"], "tenant"),
            (vec!["tenant="], "tenant"),
            (vec!["tenant=acme", "debug=yes"], "debug"),
        ] {
            let e = Args::parse(&args).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
