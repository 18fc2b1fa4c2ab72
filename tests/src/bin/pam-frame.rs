//! `pam-frame SOCKET`: sends standard input as one PAM step-protocol frame (4-byte
//! big-endian length + body) and prints the body of the reply frame on standard output.
//! The tests run it under another uid (setpriv) to check that the daemon refuses peers
//! not in `pam.allowed_uids`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: pam-frame SOCKET < request.json");
        return ExitCode::from(2);
    };
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut body) {
        eprintln!("pam-frame: reading stdin: {e}");
        return ExitCode::from(2);
    }
    match exchange(&path, &body) {
        Ok(reply) => {
            let _ = std::io::stdout().write_all(&reply);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pam-frame: {e}");
            ExitCode::FAILURE
        }
    }
}

fn exchange(path: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    // A daemon that refuses the peer answers at once and hangs up, possibly before the
    // request is written: a failed write is not the end, the reply may be waiting.
    let _ = s
        .write_all(&len.to_be_bytes())
        .and_then(|()| s.write_all(body));
    let mut header = [0u8; 4];
    s.read_exact(&mut header)?;
    let mut reply = vec![0u8; u32::from_be_bytes(header) as usize];
    s.read_exact(&mut reply)?;
    Ok(reply)
}
