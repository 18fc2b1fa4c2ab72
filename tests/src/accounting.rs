//! A minimal RADIUS accounting server (RFC 2866) for NAS software that will not go on
//! without one: it answers every Accounting-Request with an empty Accounting-Response.
//! Portcullis itself does not do accounting.
//!
//! It runs on a thread that joins a test's network namespace (setns affects only the
//! calling thread), so it can listen on the same loopback as the NAS inside it.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use md5::{Digest, Md5};

/// A running responder; stopped on drop.
pub struct AccountingResponder {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl AccountingResponder {
    /// Listen on 127.0.0.1:`port` inside the namespace `netns` (by name, from `ip netns`).
    pub fn start(netns: &str, port: u16, secret: &str) -> AccountingResponder {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (ns_path, secret) = (format!("/run/netns/{netns}"), secret.as_bytes().to_vec());
        let (stop2, answered2) = (stop.clone(), answered.clone());
        let thread = std::thread::spawn(move || {
            let sock = match enter_and_bind(&ns_path, port) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut buf = [0u8; 4096];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, src)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                // Accounting-Request (4) only.
                if n < 20 || buf[0] != 4 {
                    continue;
                }
                let mut reply = vec![5, buf[1], 0, 20];
                let mut h = Md5::new();
                h.update(&reply);
                h.update(&buf[4..20]);
                h.update(&secret);
                reply.extend_from_slice(&h.finalize());
                if sock.send_to(&reply, src).is_ok() {
                    answered2.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("accounting responder: {e}"),
            Err(e) => panic!("accounting responder did not start: {e}"),
        }
        AccountingResponder {
            stop,
            answered,
            thread: Some(thread),
        }
    }

    /// Accounting-Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

fn enter_and_bind(ns_path: &str, port: u16) -> Result<UdpSocket, String> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(ns_path).map_err(|e| format!("open {ns_path}: {e}"))?;
    // SAFETY: setns(2) with a valid namespace fd; it changes only this thread's namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!(
            "setns({ns_path}): {}",
            std::io::Error::last_os_error()
        ));
    }
    let sock =
        UdpSocket::bind(("127.0.0.1", port)).map_err(|e| format!("bind 127.0.0.1:{port}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    Ok(sock)
}

impl Drop for AccountingResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
