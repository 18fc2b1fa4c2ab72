//! pam_radius_auth (libpam-radius-auth) driven by pamtester under pam_wrapper: a real PAM
//! host asking our RADIUS server, without touching /etc/pam.d.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::pam::run_under_pam_wrapper;
use crate::tools::require_tool;

/// Directories where Debian installs PAM modules and pam_wrapper.
const LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib",
    "/usr/lib",
];

fn find_lib(rel: &str, package: &str) -> PathBuf {
    LIB_DIRS
        .iter()
        .map(|d| Path::new(d).join(rel))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{rel} not found; install the Debian package `{package}` (apt-get install {package})")
        })
}

/// A PAM service `portcullis-radius` whose only auth module is pam_radius_auth pointing at
/// `server` with `secret`.
pub struct PamRadius {
    dir: tempfile::TempDir,
    pamtester: PathBuf,
    wrapper: PathBuf,
}

/// The service name used in the private pam.d.
pub const SERVICE: &str = "portcullis-radius";

impl PamRadius {
    /// Writes the service file and pam_radius.conf into a temporary directory.
    pub fn new(server: SocketAddr, secret: &str) -> PamRadius {
        let pamtester = require_tool("pamtester", "pamtester");
        let wrapper = find_lib("libpam_wrapper.so", "libpam-wrapper");
        let module = find_lib("security/pam_radius_auth.so", "libpam-radius-auth");
        let dir = tempfile::Builder::new()
            .prefix("portcullis-pam-radius-")
            .tempdir()
            .expect("temp dir");
        let conf = dir.path().join("pam_radius.conf");
        // server[:port] secret timeout(s)
        std::fs::write(&conf, format!("{server} {secret} 3\n")).expect("write pam_radius.conf");
        let pamd = dir.path().join("pam.d");
        std::fs::create_dir(&pamd).expect("mkdir pam.d");
        std::fs::write(
            pamd.join(SERVICE),
            format!(
                "auth required {} conf={} debug\naccount required pam_permit.so\n",
                module.display(),
                conf.display()
            ),
        )
        .expect("write service file");
        PamRadius {
            dir,
            pamtester,
            wrapper,
        }
    }

    /// `pamtester portcullis-radius USER authenticate`, answering the prompts with `answers`
    /// (one per line, in order).
    pub fn authenticate(&self, user: &str, answers: &[&str]) -> Output {
        let mut cmd = Command::new(&self.pamtester);
        cmd.args(["-v", SERVICE, user, "authenticate"])
            .env("LD_PRELOAD", &self.wrapper)
            .env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", self.dir.path().join("pam.d"));
        let input: String = answers.iter().map(|a| format!("{a}\n")).collect();
        run_under_pam_wrapper(cmd, Some(input.into_bytes()), Duration::from_secs(30))
    }
}
