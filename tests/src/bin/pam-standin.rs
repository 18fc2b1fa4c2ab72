//! `pam-standin SOCKET`: a stand-in for `portcullis serve` that makes the Unix socket
//! SOCKET and answers every PAM step request on it with Accept, until it is killed. It
//! prints `ready` on standard output once it listens, and `request` for each request it
//! read. The tests run it under another uid (setpriv) to check that the PAM module trusts
//! only the uids it should behind its socket (`SO_PEERCRED` names whoever made it).

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::process::ExitCode;

use portcullis_core::protocol::{self, Response, ResponseStep};

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: pam-standin SOCKET");
        return ExitCode::from(2);
    };
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pam-standin: bind {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    say("ready");
    let accept = Response::new(ResponseStep::Accept {
        factors: vec!["standin".into()],
    });
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        // A module that refuses the peer closes the connection without a request.
        if protocol::read_frame(&mut conn).is_ok() {
            say("request");
            let _ = protocol::write_frame(&mut conn, &accept);
        }
    }
    ExitCode::SUCCESS
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
