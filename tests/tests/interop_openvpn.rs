//! Interop: OpenVPN 2.6 with openvpn-auth-radius (radiusplugin 2.1), a VPN concentrator that
//! cannot show a challenge and sends no Message-Authenticator, in `append` mode: the user
//! types `password,code` as the VPN password.
//!
//! radiusplugin also sends an Accounting-Request (start) at client-connect and refuses the
//! connection without an Accounting-Response: Portcullis's accounting listener
//! (`radius.accounting_listen`, port 1813) acknowledges it.
//!
//! Everything (Portcullis on port 1812, the OpenVPN server with its tun device, the OpenVPN
//! client) runs inside a network namespace the test creates and deletes; the tunnel
//! addresses exist only there.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portcullis_tests::netns::NetNs;
use portcullis_tests::{
    oathtool_totp, portcullis_bin, random_base32_secret, require_tool, wrong_totp, Algorithm,
    ClientSpec, Mode, Server, TestEnv,
};

const PLUGIN: &str = "/usr/lib/openvpn/radiusplugin.so";
const SECRET: &str = "s3cret-ovpn";

/// A process started in the namespace, killed (SIGKILL after a grace period: the OpenVPN
/// server ignores SIGTERM while the plugin's helper lives) on drop.
struct Proc {
    child: Child,
}

impl Proc {
    fn start(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc { child }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = portcullis_tests::process::send_signal(
            self.child.id(),
            portcullis_tests::process::Signal::TERM,
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && self.running() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Wait until `path` contains one of `needles`; returns which, or None at the deadline.
fn wait_for(path: &Path, needles: &[&str], timeout: Duration) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let text = read(path);
        if let Some(i) = needles.iter().position(|n| text.contains(n)) {
            return Some(i);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

struct Vpn {
    dir: PathBuf,
}

impl Vpn {
    /// Self-signed server certificate, server/plugin/client configs in `dir`.
    fn write(dir: &Path) -> Vpn {
        let out = Command::new(require_tool("openssl", "openssl"))
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=portcullis-test-vpn",
                "-keyout",
            ])
            .arg(dir.join("srv.key"))
            .arg("-out")
            .arg(dir.join("srv.crt"))
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let d = dir.display();
        std::fs::write(
            dir.join("server.conf"),
            format!(
                "dev tun\nproto udp4\nlocal 127.0.0.1\nport 1194\ntopology subnet\n\
                 server 10.99.0.0 255.255.255.0\nca {d}/srv.crt\ncert {d}/srv.crt\nkey {d}/srv.key\n\
                 dh none\nverify-client-cert none\nusername-as-common-name\n\
                 plugin {PLUGIN} {d}/radiusplugin.cnf\nstatus {d}/status.log 1\nstatus-version 1\n\
                 log {d}/server.log\nverb 4\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("radiusplugin.cnf"),
            format!(
                "NAS-Identifier=openvpn-test\nService-Type=5\nFramed-Protocol=1\nNAS-Port-Type=5\n\
                 NAS-IP-Address=127.0.0.1\nOpenVPNConfig={d}/server.conf\nsubnet=255.255.255.0\n\
                 overwriteccfiles=true\nnonfatalaccounting=true\n\
                 server\n{{\n\tacctport=1813\n\tauthport=1812\n\tname=127.0.0.1\n\tretry=1\n\twait=3\n\tsharedsecret={SECRET}\n}}\n"
            ),
        )
        .unwrap();
        Vpn {
            dir: dir.to_path_buf(),
        }
    }

    /// Client config for one attempt with `password`; returns its log path.
    fn client(&self, name: &str, user: &str, password: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.display();
        let creds = self.dir.join(format!("{name}.creds"));
        std::fs::write(&creds, format!("{user}\n{password}\n")).unwrap();
        let log = self.dir.join(format!("{name}.log"));
        let conf = self.dir.join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!(
                "client\ndev tun\nproto udp4\nremote 127.0.0.1 1194\nnobind\nca {d}/srv.crt\n\
                 auth-user-pass {}\nauth-retry none\nconnect-retry-max 2\nlog {}\nverb 3\n",
                creds.display(),
                log.display()
            ),
        )
        .unwrap();
        (conf, log)
    }
}

#[test]
fn openvpn_with_radiusplugin_logs_in_with_password_comma_code_in_append_mode() {
    require_tool("openvpn", "openvpn");
    require_tool("oathtool", "oathtool");
    assert!(
        Path::new(PLUGIN).is_file(),
        "{PLUGIN} not found; install the Debian package openvpn-auth-radius"
    );
    let mut nas = ClientSpec::new(Mode::Append);
    nas.name = "openvpn".into();
    nas.secret = SECRET.into();
    // radiusplugin 2.1 sends no Message-Authenticator.
    nas.require_message_authenticator = false;
    let env = TestEnv::new(vec![nas]);
    // The plugin truncates ports past 4 digits: fixed ports, free inside the namespace.
    let text = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:1812\"]\naccounting_listen = [\"127.0.0.1:1813\"]",
    );
    std::fs::write(env.config_path(), text).unwrap();
    env.add_tenant("acme");
    env.add_user("acme", "alice", "correct horse");
    let totp = random_base32_secret();
    env.enroll_totp("acme", "alice", Some(&totp));

    let ns = NetNs::new("pc-ovpn");
    let mut cmd = ns.command(portcullis_bin());
    cmd.arg("--config").arg(env.config_path());
    let server = Server::start(cmd);
    assert_eq!(server.addr.port(), 1812);

    let vpn = Vpn::write(env.dir());
    let mut ovpn = ns.command(require_tool("openvpn", "openvpn"));
    ovpn.arg("--config").arg(vpn.dir.join("server.conf"));
    let _vpn_server = Proc::start(ovpn);
    let server_log = vpn.dir.join("server.log");
    assert!(
        wait_for(
            &server_log,
            &["Initialization Sequence Completed"],
            Duration::from_secs(20)
        )
        .is_some(),
        "the OpenVPN server did not start:\n{}",
        read(&server_log)
    );

    let describe = |log: &Path| {
        format!(
            "--- client log ---\n{}\n--- OpenVPN server log ---\n{}\n--- portcullis ---\n{}",
            read(log),
            read(&server_log),
            server.stderr()
        )
    };
    let outcomes = ["Initialization Sequence Completed", "AUTH_FAILED"];

    // A wrong code: the VPN refuses the login.
    let wrong = format!("correct horse,{}", wrong_totp(&totp, 6, Algorithm::Sha1));
    let (conf, log) = vpn.client("wrong", "alice", &wrong);
    let mut c = ns.command(require_tool("openvpn", "openvpn"));
    c.arg("--config").arg(&conf);
    let client = Proc::start(c);
    let got = wait_for(&log, &outcomes, Duration::from_secs(30));
    drop(client);
    assert_eq!(got, Some(1), "wrong code must fail\n{}", describe(&log));

    // The right code after the delimiter: the tunnel comes up.
    let right = format!(
        "correct horse,{}",
        oathtool_totp(&totp, 6, Algorithm::Sha1, 0)
    );
    let (conf, log) = vpn.client("right", "alice", &right);
    let mut c = ns.command(require_tool("openvpn", "openvpn"));
    c.arg("--config").arg(&conf);
    let client = Proc::start(c);
    let got = wait_for(&log, &outcomes, Duration::from_secs(30));
    drop(client);
    assert_eq!(
        got,
        Some(0),
        "password,code must log in\n{}",
        describe(&log)
    );
    assert!(
        server
            .wait_for_stderr("password and totp ok", std::time::Duration::from_secs(5))
            .contains("password and totp ok"),
        "{}",
        describe(&log)
    );
}
