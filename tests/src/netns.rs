//! A private network namespace for tests that need real interfaces (an OpenVPN tun device):
//! created with only `lo` up, deleted on drop together with every process left inside it.
//! Needs root (CAP_SYS_ADMIN) and iproute2.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::tools::require_tool;

/// `ip netns add NAME`; deleted (after killing what still runs in it) on drop.
pub struct NetNs {
    pub name: String,
}

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e}"))
}

impl NetNs {
    /// A fresh namespace named after `prefix`, the process id and a random suffix.
    pub fn new(prefix: &str) -> NetNs {
        require_tool("ip", "iproute2");
        let name = format!(
            "{prefix}-{}-{:x}",
            std::process::id(),
            rand::random::<u16>()
        );
        let out = ip(&["netns", "add", &name]);
        assert!(
            out.status.success(),
            "ip netns add {name} failed (the VPN interop test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = NetNs { name };
        let out = ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        assert!(
            out.status.success(),
            "lo up in {}: {}",
            ns.name,
            String::from_utf8_lossy(&out.stderr)
        );
        ns
    }

    /// `ip netns exec NAME program` (arguments are added by the caller).
    pub fn command(&self, program: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(program.as_ref());
        cmd
    }

    /// Process ids running inside the namespace.
    pub fn pids(&self) -> Vec<u32> {
        String::from_utf8_lossy(&ip(&["netns", "pids", &self.name]).stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Only processes this test started live in its namespace.
        for pid in self.pids() {
            let _ = crate::process::send_signal(pid, crate::process::Signal::KILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let _ = ip(&["netns", "delete", &self.name]);
    }
}
