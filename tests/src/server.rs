//! A running `portcullis serve`.

use crate::process::{send_signal, Signal};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the server prints on stdout once a RADIUS socket is bound.
const LISTENING: &str = "radius: listening on ";
/// What the server prints on stdout once the HTTP listener is bound (before the RADIUS line).
const HTTP_LISTENING: &str = "http: listening on ";
/// What the server prints for each accounting listener (before the RADIUS line).
const ACCOUNTING_LISTENING: &str = "radius accounting: listening on ";
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A server process; dropping it stops the process (SIGTERM, then SIGKILL) and, when the
/// test is failing, prints everything the server wrote to stderr.
pub struct Server {
    child: Child,
    /// The bound RADIUS address, from the `radius: listening on ADDR` line.
    pub addr: SocketAddr,
    /// The bound HTTP address, when the config has `[http]`.
    pub http_addr: Option<SocketAddr>,
    /// The first accounting address, when `radius.accounting_listen` is set.
    pub accounting_addr: Option<SocketAddr>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect<R: Read + Send + 'static>(pipe: R, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut chunk = [0u8; 4096];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    })
}

impl Server {
    /// Spawns `cmd serve` (cmd already carries `--config`) and waits for the listening line.
    pub fn start(mut cmd: Command) -> Server {
        cmd.arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let description = format!("{cmd:?}");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = collect(child.stderr.take().expect("stderr piped"), stderr.clone());

        // stdout: hand the first listening address over, keep everything in the buffer.
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let out_pipe = child.stdout.take().expect("stdout piped");
        let out_buf = stdout.clone();
        let stdout_reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(out_pipe);
            let mut line = String::new();
            let mut tx = Some(tx);
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        out_buf.lock().unwrap().extend_from_slice(line.as_bytes());
                        if let Some(pos) = line.find(LISTENING) {
                            let rest = line[pos + LISTENING.len()..].trim();
                            let token = rest.split_whitespace().next().unwrap_or("");
                            if let Ok(addr) = token.parse::<SocketAddr>() {
                                if let Some(tx) = tx.take() {
                                    let _ = tx.send(addr);
                                }
                            }
                        }
                    }
                }
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => break addr,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed without the line: the server is exiting.
                }
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                if exited.is_none() {
                    let _ = child.kill();
                }
                let status = child.wait().ok();
                let _ = stdout_reader.join();
                let _ = stderr_reader.join();
                panic!(
                    "{description} did not print `{LISTENING}ADDR` within {START_TIMEOUT:?} \
                     (exit status: {status:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&stdout.lock().unwrap()),
                    String::from_utf8_lossy(&stderr.lock().unwrap()),
                );
            }
        };
        let printed = String::from_utf8_lossy(&stdout.lock().unwrap()).into_owned();
        let find = |prefix: &str| {
            printed
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|rest| rest.trim().parse().ok())
        };
        let http_addr = find(HTTP_LISTENING);
        let accounting_addr = find(ACCOUNTING_LISTENING);
        Server {
            child,
            addr,
            http_addr,
            accounting_addr,
            stdout,
            stderr,
            readers: vec![stdout_reader, stderr_reader],
        }
    }

    /// Waits for the `pam: listening on PATH` line (a config with a `[pam]` section) and
    /// returns the socket path.
    pub fn wait_for_pam(&self) -> std::path::PathBuf {
        const PAM_LISTENING: &str = "pam: listening on ";
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = self.stdout();
            if let Some(line) = out.lines().find(|l| l.starts_with(PAM_LISTENING)) {
                return std::path::PathBuf::from(line[PAM_LISTENING.len()..].trim());
            }
            assert!(
                Instant::now() < deadline,
                "the server did not print `{PAM_LISTENING}PATH` within {START_TIMEOUT:?}\n--- stdout ---\n{out}\n--- stderr ---\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server printed on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Waits up to `timeout` until the server's stderr contains `text` (its log lines are
    /// collected by a reader thread, a moment after the server wrote them); the stderr.
    pub fn wait_for_stderr(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let err = self.stderr();
            if err.contains(text) || Instant::now() >= deadline {
                return err;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the server printed on stderr so far (its log).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// `GET /metrics` from the HTTP listener (fails the test without `[http]`).
    pub fn metrics(&self) -> String {
        let addr = self
            .http_addr
            .expect("the server has no HTTP listener: add [http] listen = \"127.0.0.1:0\"");
        let (status, body) = crate::http::get(addr, "/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// Send a signal to the server.
    pub fn signal(&self, sig: Signal) {
        let pid = self.child.id();
        if let Err(e) = send_signal(pid, sig) {
            panic!("kill({pid}, {sig:?}) failed: {e}");
        }
    }

    /// SIGHUP, then wait (up to 10 s) until the log says the reload was applied or refused;
    /// returns true when it was applied.
    pub fn reload(&self) -> bool {
        let count = |s: &str, pat: &str| s.matches(pat).count();
        let before = self.stderr();
        let (ok0, err0) = (
            count(&before, "configuration reloaded"),
            count(&before, "configuration reload failed"),
        );
        self.signal(Signal::HUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let now = self.stderr();
            if count(&now, "configuration reloaded") > ok0 {
                return true;
            }
            if count(&now, "configuration reload failed") > err0 {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no reload message within 10 s after SIGHUP\n{}",
            self.stderr()
        );
    }

    /// Wait up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, up to 5 s grace, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = send_signal(self.child.id(), Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let status = self.stop();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        if std::thread::panicking() {
            eprintln!(
                "=== portcullis server {} (exit status {status:?}) stderr ===\n{}\n=== end of server stderr ===",
                self.addr,
                self.stderr()
            );
        }
    }
}
