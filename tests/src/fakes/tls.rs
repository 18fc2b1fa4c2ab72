//! A throwaway CA and a server certificate (for 127.0.0.1 / localhost unless told other
//! names), made per test, and the HTTPS server the fakes run on.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// PEM material for an HTTPS fake, and the CA file a client must trust.
pub struct TestTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
    pub ca_file: PathBuf,
}

impl TestTls {
    /// A new CA (written to `dir/ca.pem`) and a server certificate signed by it.
    pub fn new(dir: &Path) -> TestTls {
        TestTls::for_names(dir, &["127.0.0.1", "localhost"])
    }

    /// Like [`TestTls::new`], the server certificate naming only `names`.
    pub fn for_names(dir: &Path, names: &[&str]) -> TestTls {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("server params");
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write ca.pem");
        TestTls {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            ca_file,
        }
    }
}

/// The HTTPS server under a fake: a free port (127.0.0.1 unless started with
/// [`HttpsServer::start_on`]), a throwaway CA (written into the fake's directory) and one
/// thread per request, so that a hanging answer does not block the next. Stops accepting
/// when dropped.
pub struct HttpsServer {
    /// The bound address: for a wildcard bind (`0.0.0.0:0`) it is `0.0.0.0:PORT`, so
    /// connect to a concrete address with `addr.port()`.
    pub addr: std::net::SocketAddr,
    /// The CA that signed the server certificate (PEM), for clients to trust.
    pub ca_file: PathBuf,
    server: std::sync::Arc<tiny_http::Server>,
}

impl HttpsServer {
    /// Start serving `handle(request, the server's own address)` on a free 127.0.0.1 port
    /// with a certificate for 127.0.0.1 and localhost; `what` names the fake.
    pub fn start(
        dir: &Path,
        what: &str,
        handle: impl Fn(tiny_http::Request, std::net::SocketAddr) + Send + Sync + 'static,
    ) -> HttpsServer {
        HttpsServer::start_on(
            dir,
            what,
            "127.0.0.1:0",
            &["127.0.0.1", "localhost"],
            handle,
        )
    }

    /// Like [`HttpsServer::start`], bound to `bind` (`"0.0.0.0:0"`, `"127.0.0.1:0"`, ...)
    /// with a certificate naming only `names` (IP addresses or DNS names).
    pub fn start_on(
        dir: &Path,
        what: &str,
        bind: &str,
        names: &[&str],
        handle: impl Fn(tiny_http::Request, std::net::SocketAddr) + Send + Sync + 'static,
    ) -> HttpsServer {
        let tls = TestTls::for_names(dir, names);
        let server = tiny_http::Server::https(
            bind,
            tiny_http::SslConfig {
                certificate: tls.cert_pem.into_bytes(),
                private_key: tls.key_pem.into_bytes(),
            },
        )
        .unwrap_or_else(|e| panic!("start the fake {what} on {bind}: {e}"));
        let addr = server
            .server_addr()
            .to_ip()
            .expect("the fake listens on an IP address");
        let server = std::sync::Arc::new(server);
        let handle = std::sync::Arc::new(handle);
        let incoming = server.clone();
        std::thread::spawn(move || {
            for request in incoming.incoming_requests() {
                let handle = handle.clone();
                std::thread::spawn(move || handle(request, addr));
            }
        });
        HttpsServer {
            addr,
            ca_file: tls.ca_file,
            server,
        }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.server.unblock();
    }
}
