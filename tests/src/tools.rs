//! Finding the binary under test and the third-party peers.

use std::path::PathBuf;

/// The `portcullis` binary: `$PORTCULLIS_BIN`, or `<target>/debug/portcullis` next to the
/// test executable (which lives in `<target>/debug/deps/`).
///
/// Panics when it does not exist: the tests do not build it themselves.
pub fn portcullis_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("PORTCULLIS_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "PORTCULLIS_BIN={} does not exist; build it first: cargo build -p portcullis-server",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test>-<hash> -> target/debug/portcullis
    let mut candidates = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        candidates.push(dir.join(format!("portcullis{}", std::env::consts::EXE_SUFFIX)));
    }
    for candidate in &candidates {
        if candidate.is_file() {
            return candidate.clone();
        }
    }
    panic!(
        "the portcullis binary is missing (looked at {:?}); build it first: cargo build -p portcullis-server",
        candidates
    );
}

/// Whether `tool` is an executable file somewhere on `$PATH`.
pub fn find_on_path(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            candidate
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Panics (the test fails, it is never skipped) when `tool` is not on `$PATH`, naming the
/// Debian package that provides it. `scripts/test` installs the peers on a fresh machine.
pub fn require_tool(tool: &str, debian_package: &str) -> PathBuf {
    find_on_path(tool).unwrap_or_else(|| {
        panic!(
            "`{tool}` is not installed; install the Debian package `{debian_package}` \
             (apt-get install {debian_package}) or run scripts/test as root, which installs it"
        )
    })
}

/// Runs `cmd` to completion with `stdin` (or none), capturing stdout and stderr; kills it
/// and fails the test if it takes longer than `timeout`.
pub fn run_with_timeout(
    cmd: std::process::Command,
    stdin: Option<Vec<u8>>,
    timeout: std::time::Duration,
) -> std::process::Output {
    run_with_timeout_after(cmd, stdin, timeout, |_| {})
}

/// [`run_with_timeout`] that calls `started` with the child as soon as it runs, before its
/// input is written.
pub fn run_with_timeout_after(
    mut cmd: std::process::Command,
    stdin: Option<Vec<u8>>,
    timeout: std::time::Duration,
    started: impl FnOnce(&mut std::process::Child),
) -> std::process::Output {
    use std::io::{Read, Write};
    use std::process::Stdio;
    use std::time::Instant;

    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let description = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {description}: {e}"));
    started(&mut child);
    let writer = match (stdin, child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => Some(std::thread::spawn(move || {
            // The child may exit without reading everything; that is its business.
            let _ = pipe.write_all(&bytes);
        })),
        _ => None,
    };
    let mut stdout_pipe = child.stdout.take().expect("stdout piped");
    let mut stderr_pipe = child.stderr.take().expect("stderr piped");
    let stdout_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout_pipe.read_to_end(&mut buf);
        buf
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr_reader.join().unwrap_or_default();
            panic!(
                "{description} did not finish within {timeout:?}; killed it\n--- stderr ---\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    std::process::Output {
        status,
        stdout: stdout_reader.join().unwrap_or_default(),
        stderr: stderr_reader.join().unwrap_or_default(),
    }
}
