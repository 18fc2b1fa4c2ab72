//! Signals and identity for the harness, without `unsafe`: the project keeps `unsafe` to
//! the PAM module's FFI boundary, so the harness goes through `rustix`'s safe wrappers.

pub use rustix::process::Signal;

/// Sends `signal` to the process `pid` (a child the test started). A pid that does not fit
/// or names no process is an error, which callers that only clean up may ignore.
pub fn send_signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    let raw = i32::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    let pid = rustix::process::Pid::from_raw(raw)
        .ok_or_else(|| std::io::Error::other("pid 0 names no single process"))?;
    rustix::process::kill_process(pid, signal).map_err(std::io::Error::from)
}

/// Whether the tests run as root (the effective user id is 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `wrapper` (a shell, `unshare`, ...) with `inner`'s program and arguments appended and
/// `inner`'s environment changes (set and removed variables) applied: `inner` run through
/// `wrapper`, which ends by exec-ing its arguments.
pub fn run_through(
    mut wrapper: std::process::Command,
    inner: &std::process::Command,
) -> std::process::Command {
    wrapper.arg(inner.get_program()).args(inner.get_args());
    for (key, value) in inner.get_envs() {
        match value {
            Some(v) => wrapper.env(key, v),
            None => wrapper.env_remove(key),
        };
    }
    wrapper
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_reach_a_child_and_pid_zero_is_refused() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        send_signal(child.id(), Signal::TERM).expect("signal the child");
        let status = child.wait().expect("wait for the child");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(send_signal(0, Signal::TERM).is_err());
    }
}
