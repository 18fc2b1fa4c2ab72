//! A provider's `ca_file`: the private CA certificate(s) its HTTPS or SMTP client trusts
//! besides the public ones. reqwest and lettre take whatever PEM blocks a file holds and
//! silently trust nothing when it holds none, which would leave every TLS call to fail
//! later; so the file is read here, once for every provider, and a file without a usable
//! certificate is a setup error naming the setting and the path.

use std::path::Path;

use anyhow::{bail, Result};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::CertificateDer;

/// What a `ca_file` must hold, for the end of every error about one.
const EXPECTED: &str = "point it at the CA certificate(s) in PEM form";

/// The certificates of the `ca_file` at `path`, which the setting `key` (for example
/// `tenants.acme.sms.ca_file`) names: one or more PEM `CERTIFICATE` blocks, each an X.509
/// certificate that can be a trust anchor. Other blocks (a private key) are skipped, but a
/// file with no certificate, a malformed or truncated block, or a certificate that does
/// not parse is an error. The file's content is never part of an error.
pub(crate) fn ca_certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let shown = path.display();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => bail!("{key}: cannot read {shown}: {e}; {EXPECTED}"),
    };
    let certs = match CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>() {
        Ok(certs) => certs,
        Err(e) => bail!(
            "{key}: {shown} holds no PEM certificate ({}); {EXPECTED}",
            pem_problem(&e)
        ),
    };
    if certs.is_empty() {
        bail!("{key}: {shown} holds no PEM certificate; {EXPECTED}");
    }
    // reqwest and lettre parse them only when the client is built, with a vague error.
    let mut roots = rustls::RootCertStore::empty();
    for (n, cert) in certs.iter().enumerate() {
        if let Err(e) = roots.add(cert.clone()) {
            bail!(
                "{key}: certificate {} of {shown} is not a usable X.509 certificate ({e}); {EXPECTED}",
                n + 1
            );
        }
    }
    Ok(certs)
}

/// Why the PEM parser gave up, without the file's bytes that some of its errors carry.
fn pem_problem(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line: truncated?",
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64",
        pem::Error::SectionTooLarge => "a PEM block is too large",
        _ => "the PEM is malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA certificate (openssl, self-signed, P-256), for the happy path.
    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBmjCCAUGgAwIBAgIUDNymDXLRMCLg9dobxWu/bNXF/DwwCgYIKoZIzj0EAwIw
IjEgMB4GA1UEAwwXcG9ydGN1bGxpcyB1bml0LXRlc3QgQ0EwIBcNMjYxMjAxMjAw
MjU5WhgPMjEyNjExMDcyMDAyNTlaMCIxIDAeBgNVBAMMF3BvcnRjdWxsaXMgdW5p
dC10ZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE5btxXJtfSjPxM/L6
CxzaLWDWY43camvr5PIHgLAnp3AORhleFxMBaSOqCEHE0nj6VSs7JNGBQasaoCgZ
9qvg26NTMFEwHQYDVR0OBBYEFEBnKiOmfhxL1S2A12kmeUqNaHgsMB8GA1UdIwQY
MBaAFEBnKiOmfhxL1S2A12kmeUqNaHgsMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZI
zj0EAwIDRwAwRAIgXpYLwVPZadQpHeW/9mTF/hqE5rZdhnO2CpxwBqmfq0wCICOI
v7uisXpYJz085s2+x4BSe4ULpfo//hS/ejS6kpgN
-----END CERTIFICATE-----
";
    /// A throwaway Ed25519 private key: a PEM file, but no certificate.
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIEYQMJLIu6t+OAofOpM1NUJpktaUY1ajc5Ff7WAhIx+q
-----END PRIVATE KEY-----
";

    fn check(content: &[u8]) -> Result<usize, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, content).map_err(|e| e.to_string())?;
        ca_certificates("tenants.acme.sms.ca_file", &path)
            .map(|c| c.len())
            .map_err(|e| {
                let text = format!("{e:#}");
                assert!(
                    text.starts_with("tenants.acme.sms.ca_file: ")
                        && text.contains(&path.display().to_string())
                        && text.ends_with(EXPECTED),
                    "{text}"
                );
                text
            })
    }

    #[test]
    fn a_file_without_a_usable_certificate_is_refused_naming_key_and_path() {
        let truncated = &CA[..CA.len() / 2];
        let bad_der = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        for (what, content) in [
            ("empty", ""),
            ("garbage", "s3cr3t-never-shown\nnot a certificate\n"),
            ("a private key only", KEY),
            ("a truncated PEM", truncated),
            ("a block that is no certificate", bad_der),
        ] {
            let text = check(content.as_bytes()).expect_err(what);
            assert!(!text.contains("s3cr3t"), "{what}: {text}");
            assert!(
                !text.contains("MIIB") && !text.contains("MC4C"),
                "{what}: {text}"
            );
        }
        let text = check(b"").expect_err("empty");
        assert!(text.contains("holds no PEM certificate;"), "{text}");
    }

    #[test]
    fn a_pem_bundle_is_read_whole_and_other_blocks_are_skipped() {
        assert_eq!(check(CA.as_bytes()), Ok(1));
        let bundle = format!("# corporate CAs\n{CA}\n{CA}");
        assert_eq!(check(bundle.as_bytes()), Ok(2));
        assert_eq!(check(format!("{KEY}{CA}").as_bytes()), Ok(1));
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let text = ca_certificates(
            "tenants.acme.push.ca_file",
            Path::new("/nonexistent/ca.pem"),
        )
        .map(|_| ())
        .expect_err("missing file");
        let text = format!("{text:#}");
        assert!(
            text.starts_with("tenants.acme.push.ca_file: cannot read /nonexistent/ca.pem"),
            "{text}"
        );
    }
}
