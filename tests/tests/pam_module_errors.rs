//! Setup errors of the PAM module are not outages: a `socket=` that is not a socket, or a
//! path too long to be one, refuses the login with PAM_SERVICE_ERR even with
//! `failmode=safe`, while a daemon that is merely down still falls under `failmode=`.

use portcullis_tests::{describe, pam_module_path, PamFixture};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Service `name`: the module alone, first factor checked by the stack, failmode=safe,
/// asking the daemon at `socket`.
fn safe_service(f: &PamFixture, name: &str, socket: &str) {
    f.service(
        name,
        &format!(
            "auth required {} socket={socket} tenant={} first_factor=stack failmode=safe fail_delay=0\n",
            pam_module_path().display(),
            f.tenant
        ),
    );
}

#[test]
fn a_socket_path_that_is_not_a_socket_is_refused_even_with_failmode_safe() {
    let f = PamFixture::with_config("", false);
    let file = f.env.dir().join("not-a-socket");
    std::fs::write(&file, b"").unwrap();
    safe_service(&f, "file", &file.display().to_string());
    let out = f.pamtester_logged("file", "alice", "");
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(!err.contains("WITHOUT a second factor"), "{err}");
    // Syslog says what to fix; PAM gets PAM_SERVICE_ERR, which pam_faillock does not count.
    assert!(
        err.contains("is a regular file, not a socket") && err.contains("setup error"),
        "{err}"
    );
    assert!(err.contains("Error in service module"), "{err}");
}

#[test]
fn a_socket_path_too_long_for_sun_path_is_refused_as_a_typo() {
    let f = PamFixture::with_config("", false);
    let long = format!("{}/{}.sock", f.env.dir().display(), "s".repeat(120));
    safe_service(&f, "long", &long);
    let out = f.pamtester_logged("long", "alice", "");
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(!err.contains("WITHOUT a second factor"), "{err}");
    assert!(
        err.contains("refusing every login") && err.contains("shorter path"),
        "{err}"
    );
}

#[test]
fn a_socket_that_does_not_exist_is_an_outage_and_failmode_safe_applies() {
    // The daemon is down and its socket gone: an outage, unlike the setup errors above.
    let f = PamFixture::with_config("", false);
    safe_service(&f, "down", &f.socket.display().to_string());
    let out = f.pamtester_logged("down", "alice", "");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("WITHOUT a second factor"),
        "{}",
        describe(&out)
    );
}
