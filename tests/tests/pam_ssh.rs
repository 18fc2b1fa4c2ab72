//! A real SSH login through the module: Debian's sshd on 127.0.0.1 (its own config, host
//! key and port, PAM under pam_wrapper so /etc/pam.d is untouched) with keyboard-
//! interactive authentication, and the OpenSSH client driven by `expect` answering the
//! password and code prompts. Needs root (sshd switches to the logged-in user).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use portcullis_tests::pam::{system_file, under_pam_wrapper, PamWrapperTurn};
use portcullis_tests::tools::{require_tool, run_with_timeout, run_with_timeout_after};
use portcullis_tests::{describe, require_root, PamFixture};

/// The Portcullis user who logs in: sshd needs a system account of that name, and root is
/// the one every machine has.
const SSH_USER: &str = "root";
const SSH_PASSWORD: &str = "ssh password for the test";

/// `sshd -D -e` of this test; killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    log: mpsc::Receiver<String>,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn sshd_binary() -> PathBuf {
    for candidate in ["/usr/sbin/sshd", "/sbin/sshd"] {
        if Path::new(candidate).is_file() {
            return PathBuf::from(candidate);
        }
    }
    require_tool("sshd", "openssh-server")
}

fn start_sshd(f: &PamFixture) -> Sshd {
    require_root("the SSH login test");
    let sshd = sshd_binary();
    let keygen = require_tool("ssh-keygen", "openssh-client");
    let dir = f.env.dir().join("sshd");
    std::fs::create_dir_all(&dir).unwrap();
    let host_key = dir.join("host_ed25519");
    let out = run_with_timeout(
        {
            let mut c = Command::new(keygen);
            c.args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&host_key);
            c
        },
        None,
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "ssh-keygen: {}", describe(&out));
    // sshd's privilege separation directory (the package creates it only at boot).
    std::fs::create_dir_all("/run/sshd").unwrap();

    f.service(
        "sshd",
        &format!(
            "{}account required {}\nsession required {}\npassword required {}\n",
            f.module_line("first_factor=portcullis"),
            system_file("pam_permit.so", "libpam-modules").display(),
            system_file("pam_permit.so", "libpam-modules").display(),
            system_file("pam_deny.so", "libpam-modules").display(),
        ),
    );
    let port = free_port();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
             UsePAM yes\nKbdInteractiveAuthentication yes\nPasswordAuthentication no\n\
             PubkeyAuthentication no\nAuthenticationMethods keyboard-interactive\n\
             PermitRootLogin yes\nStrictModes no\nPrintMotd no\nLogLevel VERBOSE\n",
            host_key.display(),
            dir.join("sshd.pid").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(sshd);
    cmd.arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    under_pam_wrapper(&mut cmd, &f.service_dir);
    let mut child = cmd.spawn().expect("start sshd");
    let stderr = child.stderr.take().expect("sshd stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut sshd = Sshd {
        child,
        port,
        log: rx,
    };
    let mut seen = Vec::new();
    loop {
        match sshd.log.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.contains("Server listening on") => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = sshd.child.kill();
                panic!("sshd did not start listening:\n{}", seen.join("\n"));
            }
        }
    }
    sshd
}

/// The expect script: log in as SSH_USER, answer "Password:" and the code prompt with
/// `$PW` and each of `$CODES` (space separated, one per code prompt), run `$REMOTE_CMD`.
/// A code `now` is computed by oathtool from `$SECRET` when its prompt appears: on a
/// loaded machine the key exchange and the password can take long enough that a code
/// computed before `ssh` started is two steps old by the time it is typed.
const LOGIN_EXP: &str = r#"
set timeout 20
spawn ssh -F /dev/null -p $env(PORT) -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o PreferredAuthentications=keyboard-interactive -o PubkeyAuthentication=no -o NumberOfPasswordPrompts=1 $env(SSH_USER)@127.0.0.1 $env(REMOTE_CMD)
expect {
  "Password:" { send -- "$env(PW)\r" }
  timeout { puts "EXPECT: no password prompt"; exit 10 }
  eof { puts "EXPECT: closed before the password prompt"; exit 11 }
}
foreach code [split $env(CODES) " "] {
  expect {
    "Verification code (app): " {
      if {$code eq "now"} { set code [exec oathtool --totp -b $env(SECRET)] }
      send -- "$code\r"
    }
    timeout { puts "EXPECT: no code prompt"; exit 12 }
    eof { puts "EXPECT: closed before the code prompt"; exit 13 }
  }
}
expect {
  eof {}
  timeout { puts "EXPECT: no end"; exit 14 }
}
catch wait result
exit [lindex $result 3]
"#;

fn ssh_login(f: &PamFixture, sshd: &Sshd, codes: &[String]) -> std::process::Output {
    let expect = require_tool("expect", "expect");
    require_tool("ssh", "openssh-client");
    let script = f.env.dir().join("login.exp");
    std::fs::write(&script, LOGIN_EXP).unwrap();
    let mut cmd = Command::new(expect);
    cmd.arg(&script)
        .env("PORT", sshd.port.to_string())
        .env("SSH_USER", SSH_USER)
        .env("PW", SSH_PASSWORD)
        .env("CODES", codes.join(" "))
        .env("SECRET", &f.secret)
        .env(
            "REMOTE_CMD",
            "echo portcullis-ssh-ok user=$(id -un) factor=$PORTCULLIS_FACTOR",
        );
    // sshd's session process runs PAM under pam_wrapper: one at a time (see PamWrapperTurn).
    let turn = PamWrapperTurn::take();
    let sshd_pid = sshd.child.id();
    run_with_timeout_after(cmd, None, Duration::from_secs(60), move |child| {
        turn.until_copied(child, sshd_pid)
    })
}

fn fixture() -> PamFixture {
    let f = PamFixture::new();
    f.env.add_user("acme", SSH_USER, SSH_PASSWORD);
    let secret = f.secret.clone();
    let factor = f.env.enroll_totp("acme", SSH_USER, Some(&secret));
    assert_eq!(factor.state, "confirmed");
    f
}

#[test]
fn ssh_login_with_password_and_code_runs_the_command() {
    let f = fixture();
    let sshd = start_sshd(&f);
    require_tool("oathtool", "oathtool");
    let out = ssh_login(&f, &sshd, &["now".to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rec = f.last_audit(SSH_USER);
    assert!(out.status.success(), "{}\naudit: {rec}", describe(&out));
    assert!(
        text.contains(&format!("portcullis-ssh-ok user={SSH_USER} factor=totp")),
        "{}\naudit: {rec}",
        describe(&out)
    );
    assert_eq!(rec["result"], "accept", "{rec}");
    assert_eq!(rec["client"], "sshd", "{rec}");
    assert_eq!(rec["source"], "127.0.0.1", "{rec}");
}

#[test]
fn ssh_login_with_a_wrong_code_is_refused() {
    let f = fixture();
    let sshd = start_sshd(&f);
    let wrong = f.wrong_code();
    let out = ssh_login(&f, &sshd, &[wrong.clone(), wrong.clone(), wrong]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        !text.contains("portcullis-ssh-ok user=root"),
        "{}",
        describe(&out)
    );
    assert!(text.contains("Wrong code, try again"), "{}", describe(&out));
    assert!(text.contains("Permission denied"), "{}", describe(&out));
    assert_eq!(f.last_audit(SSH_USER)["result"], "reject");
}
