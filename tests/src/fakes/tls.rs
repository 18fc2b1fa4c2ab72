//! A throwaway CA and a server certificate for 127.0.0.1 / localhost, made per test.

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
