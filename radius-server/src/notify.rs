//! systemd's readiness protocol (`sd_notify`, `Type=notify`): the daemon tells the service
//! manager when it serves (`READY=1`), when it reloads (`RELOADING=1`, then `READY=1`) and
//! when it stops (`STOPPING=1`), as datagrams on the socket named by `$NOTIFY_SOCKET` (a
//! path, or `@name` for the abstract namespace). Without that variable (not started by
//! systemd) nothing is sent. With readiness, units ordered after portcullis start once it
//! answers, and `systemctl reload` right after a start waits until it serves.

use std::os::unix::net::UnixDatagram;

/// Where the service manager listens, if it does.
pub struct Notifier {
    target: Option<String>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; taken out of the environment so that no child inherits it.
    pub fn from_env() -> Self {
        let target = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty());
        if target.is_some() {
            // Called first thing in `serve::run`, before any other thread exists.
            std::env::remove_var("NOTIFY_SOCKET");
        }
        Self { target }
    }

    /// Sends `state` (`READY=1`, ...); a failure is logged once per call and otherwise
    /// ignored (the daemon serves whether or not the manager heard).
    pub fn send(&self, state: &str) {
        let Some(target) = &self.target else {
            return;
        };
        if let Err(e) = send_to(target, state) {
            tracing::warn!(socket = %target, error = %e, "cannot tell systemd ({state})");
        }
    }
}

/// `RELOADING=1` with the time of the reload on CLOCK_MONOTONIC, as systemd asks of a
/// reload's start (`MONOTONIC_USEC`, required by `Type=notify-reload`).
pub fn reloading() -> String {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = u128::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
        + u128::try_from(now.tv_nsec).unwrap_or(0) / 1_000;
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

fn send_to(target: &str, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_reach_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some(path.display().to_string()),
        };
        n.send("READY=1\nSTATUS=serving");
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("portcullis-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_listener = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier {
            target: Some(format!("@{name}")),
        };
        n.send("STOPPING=1");
        let len = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
        // Not under systemd: nothing to do, no error.
        Notifier { target: None }.send("READY=1");
    }
}
