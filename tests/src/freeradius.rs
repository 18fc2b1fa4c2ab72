//! A private FreeRADIUS (Debian `freeradius`) as the upstream RADIUS server: a copy of
//! /etc/freeradius/3.0 with one virtual server on its own 127.0.0.1 port, `files` + `pap`,
//! one client (127.0.0.1), users from a `files` authorize text, and Message-Authenticator
//! in every reply (FreeRADIUS 3.2.1 only adds it when told to).

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::radclient::radclient;
use crate::slapd::sbin_tool;

/// A running FreeRADIUS; dropping it stops it by its process id.
pub struct FreeRadius {
    child: Option<Child>,
    dir: TempDir,
    pub addr: SocketAddr,
    pub secret: String,
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    s.local_addr().expect("local_addr").port()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()))
    {
        let entry = entry.expect("dir entry");
        let src = entry.path();
        let dst = to.join(entry.file_name());
        // Follow symlinks (mods-enabled -> mods-available).
        let meta = std::fs::metadata(&src);
        match meta {
            Ok(m) if m.is_dir() => copy_dir(&src, &dst),
            Ok(_) => {
                std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
            }
            Err(_) => {} // a dangling link
        }
    }
}

impl FreeRadius {
    /// Starts FreeRADIUS with `users` as the `files` module's authorize file, e.g.
    /// `bob Cleartext-Password := "pw"\n\tClass := 0x01, Filter-Id := "f"\n`.
    pub fn start(users: &str) -> FreeRadius {
        let bin = sbin_tool("freeradius", "freeradius");
        let system = Path::new("/etc/freeradius/3.0");
        assert!(
            system.join("radiusd.conf").is_file(),
            "/etc/freeradius/3.0 is missing; install the Debian package `freeradius`"
        );
        let dir = tempfile::Builder::new()
            .prefix("portcullis-freeradius-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let raddb = d.join("raddb");
        copy_dir(system, &raddb);
        // Only the modules this server uses: others (eap) want certificates and more.
        std::fs::remove_dir_all(raddb.join("mods-enabled")).expect("rm mods-enabled");
        std::fs::create_dir(raddb.join("mods-enabled")).expect("mkdir mods-enabled");
        for m in ["pap", "files", "always"] {
            std::fs::copy(
                raddb.join("mods-available").join(m),
                raddb.join("mods-enabled").join(m),
            )
            .expect("enable module");
        }
        std::fs::remove_dir_all(raddb.join("sites-enabled")).expect("rm sites-enabled");
        std::fs::create_dir(raddb.join("sites-enabled")).expect("mkdir sites-enabled");
        let port = free_udp_port();
        std::fs::write(
            raddb.join("sites-enabled").join("upstream"),
            format!(
                "server upstream {{\n\
                 \tlisten {{\n\t\ttype = auth\n\t\tipaddr = 127.0.0.1\n\t\tport = {port}\n\t}}\n\
                 \tauthorize {{\n\t\tfiles\n\t\tpap\n\t}}\n\
                 \tauthenticate {{\n\t\tAuth-Type PAP {{\n\t\t\tpap\n\t\t}}\n\t}}\n\
                 \tpost-auth {{\n\
                 \t\tupdate reply {{\n\t\t\tMessage-Authenticator := 0x00\n\t\t}}\n\
                 \t\tPost-Auth-Type REJECT {{\n\t\t\tupdate reply {{\n\t\t\t\tMessage-Authenticator := 0x00\n\t\t\t}}\n\t\t}}\n\
                 \t}}\n}}\n"
            ),
        )
        .expect("write site");
        let secret = "upstream-secret".to_string();
        std::fs::write(
            raddb.join("clients.conf"),
            format!(
                "client portcullis {{\n\tipaddr = 127.0.0.1\n\tsecret = {secret}\n\trequire_message_authenticator = yes\n}}\n"
            ),
        )
        .expect("write clients.conf");
        std::fs::write(raddb.join("mods-config/files/authorize"), users).expect("write users");
        let conf_path = raddb.join("radiusd.conf");
        let conf = std::fs::read_to_string(&conf_path).expect("read radiusd.conf");
        let d_str = d.display().to_string();
        let conf: String = conf
            .lines()
            .map(|line| {
                let t = line.trim_start();
                if t.starts_with("raddbdir = ") {
                    format!("raddbdir = {}", raddb.display())
                } else if t.starts_with("run_dir = ") {
                    format!("run_dir = {d_str}")
                } else if t.starts_with("logdir = ") {
                    format!("logdir = {d_str}")
                } else if t.starts_with("user = ") || t.starts_with("group = ") {
                    // Stay the user we are: the private directory is ours alone.
                    format!("#{t}")
                } else if t.starts_with("reject_delay = ") {
                    "reject_delay = 0".into()
                } else if t.starts_with("max_requests = ") {
                    "max_requests = 1024".into()
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&conf_path, conf).expect("write radiusd.conf");
        let log_path = d.join("freeradius.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let child = Command::new(&bin)
            .arg("-f")
            .arg("-l")
            .arg("stdout")
            .arg("-d")
            .arg(&raddb)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut fr = FreeRadius {
            child: Some(child),
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            secret,
        };
        fr.wait_ready(&log_path);
        fr
    }

    /// Ready = a Status-Server-free probe: an Access-Request for an unknown user gets an answer.
    fn wait_ready(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "freeradius exited ({status}):\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
            }
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("Ready to process requests") {
                let probe = radclient(
                    self.addr,
                    &self.secret,
                    &[("User-Name", "probe".into()), ("User-Password", "x".into())],
                    true,
                );
                if !probe.is_no_reply() {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!("freeradius did not get ready within 20s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The directory holding the private config (for debugging output).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for FreeRadius {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = crate::process::send_signal(child.id(), crate::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
