//! A private OpenLDAP `slapd` (Debian `slapd`) on 127.0.0.1: its own slapd.conf, database,
//! test CA and server certificate, plain+StartTLS and ldaps listeners, loaded with an LDIF
//! through `ldapadd` (Debian `ldap-utils`) so that the memberof overlay fills `memberOf`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::tools::{require_tool, run_with_timeout};

/// The directory's suffix.
pub const SUFFIX: &str = "dc=example,dc=org";
/// The rootdn, used as the service account of the tests.
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PASSWORD: &str = "admin-pw";

/// A running slapd; dropping it stops it (by its process id) and removes its files.
pub struct Slapd {
    child: Option<Child>,
    dir: TempDir,
    /// `ldap://127.0.0.1:PORT` (plain, StartTLS available).
    pub ldap_url: String,
    /// `ldaps://127.0.0.1:PORT`.
    pub ldaps_url: String,
}

/// A free TCP port on 127.0.0.1 (bound, then released for the peer to take).
pub fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// `slapd` is in /usr/sbin, which a non-root PATH may lack.
pub fn sbin_tool(tool: &str, package: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(tool);
    if sbin.is_file() {
        return sbin;
    }
    require_tool(tool, package)
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new(require_tool("openssl", "openssl"));
    cmd.current_dir(dir).args(args);
    let out = run_with_timeout(cmd, None, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a server certificate for 127.0.0.1 / localhost, in `dir`:
/// `ca.pem`, `server.pem`, `server.key`.
pub fn make_test_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Portcullis Test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext.cnf");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

fn wait_for_port(addr: SocketAddr, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "slapd exited ({status}) before listening on {addr}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "slapd did not listen on {addr} within 15s:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Slapd {
    /// Starts slapd with the schema for people and groups and loads `ldif` (entries below
    /// [`SUFFIX`]; the suffix entry itself is added first).
    pub fn start(ldif: &str) -> Slapd {
        let slapd = sbin_tool("slapd", "slapd");
        let ldapadd = require_tool("ldapadd", "ldap-utils");
        let dir = tempfile::Builder::new()
            .prefix("portcullis-slapd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        std::fs::create_dir(d.join("db")).expect("db dir");
        make_test_pki(d);
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             moduleload memberof\n\
             pidfile {d}/slapd.pid\n\
             TLSCACertificateFile {d}/ca.pem\n\
             TLSCertificateFile {d}/server.pem\n\
             TLSCertificateKeyFile {d}/server.key\n\
             database mdb\n\
             maxsize 10485760\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PASSWORD}\n\
             directory {d}/db\n\
             overlay memberof\n\
             access to attrs=userPassword by anonymous auth by self write by * none\n\
             access to * by * read\n",
            d = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).expect("write slapd.conf");
        let port = free_tcp_port();
        let tls_port = free_tcp_port();
        let ldap_url = format!("ldap://127.0.0.1:{port}");
        let ldaps_url = format!("ldaps://127.0.0.1:{tls_port}");
        let log_path = d.join("slapd.log");
        let log = std::fs::File::create(&log_path).expect("slapd.log");
        let mut child = Command::new(&slapd)
            .arg("-d")
            .arg("0")
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-h")
            .arg(format!("{ldap_url}/ {ldaps_url}/"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", slapd.display()));
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            &mut child,
            &log_path,
        );
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], tls_port)),
            &mut child,
            &log_path,
        );
        let base = format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
             dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n"
        );
        std::fs::write(d.join("data.ldif"), format!("{base}{ldif}")).expect("write ldif");
        let mut cmd = Command::new(ldapadd);
        cmd.args([
            "-x",
            "-H",
            &ldap_url,
            "-D",
            ADMIN_DN,
            "-w",
            ADMIN_PASSWORD,
            "-f",
        ])
        .arg(d.join("data.ldif"));
        let out = run_with_timeout(cmd, None, Duration::from_secs(30));
        let slapd = Slapd {
            child: Some(child),
            dir,
            ldap_url,
            ldaps_url,
        };
        assert!(
            out.status.success(),
            "ldapadd failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        slapd
    }

    /// The test CA's certificate (PEM), for `ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Stops slapd now (the directory goes down).
    pub fn stop(&mut self) {
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

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An `inetOrgPerson` entry under ou=people.
pub fn person(uid: &str, password: &str, mail: &str, mobile: &str) -> String {
    format!(
        "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
         mail: {mail}\nmobile: {mobile}\nuserPassword: {password}\n\n"
    )
}

/// A `groupOfNames` under ou=groups with these uids as members.
pub fn group(cn: &str, member_uids: &[&str]) -> String {
    let mut s = format!("dn: cn={cn},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {cn}\n");
    for uid in member_uids {
        s.push_str(&format!("member: uid={uid},ou=people,{SUFFIX}\n"));
    }
    s.push('\n');
    s
}

/// An RFC 2307 `posixGroup` under ou=groups whose `memberUid` values (caseExactIA5Match:
/// compared exactly, unlike uid) are these names.
pub fn posix_group(cn: &str, gid: u32, member_uids: &[&str]) -> String {
    let mut s = format!(
        "dn: cn={cn},ou=groups,{SUFFIX}\nobjectClass: posixGroup\ncn: {cn}\ngidNumber: {gid}\n"
    );
    for uid in member_uids {
        s.push_str(&format!("memberUid: {uid}\n"));
    }
    s.push('\n');
    s
}
