//! TLS to PostgreSQL with rustls (ring provider), with libpq's meaning of the URL's
//! `sslmode` and `sslrootcert` parameters:
//!
//! | `sslmode` | TLS | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never | – |
//! | `prefer` (default) | if the server offers it, else plain | not checked (with `sslrootcert`: chain checked, as `verify-ca`) |
//! | `require` | always | not checked (with `sslrootcert`: chain checked, as `verify-ca`) |
//! | `verify-ca` | always | signed by `sslrootcert` |
//! | `verify-full` | always | signed by `sslrootcert` and naming the URL's host |
//!
//! The driver knows only `disable`, `prefer` and `require` and no `sslrootcert`: both
//! parameters are taken out of the URL here ([`parse_url`]) and become a driver mode plus
//! the certificate verifier of the connector ([`PgTls`]).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;

/// libpq's `sslmode` values that this build supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl PgSslMode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported; use sslmode=prefer (TLS when the server \
                     offers it) or sslmode=disable"
                        .into(),
                )
            }
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                ))
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// The TLS part of a store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTlsParams {
    pub mode: PgSslMode,
    /// `sslrootcert`: PEM file of the CA(s) the server's certificate must chain to.
    pub root_cert: Option<PathBuf>,
}

/// Parses a `postgres://` URL: the driver's settings (with the driver's TLS mode set) and
/// the TLS parameters. The error says what to change; it never holds the password.
pub fn parse_url(url: &str) -> Result<(tokio_postgres::Config, PgTlsParams), String> {
    // Read as the driver reads it: the user and password run up to the first '@' (they may
    // hold '?' and '/'), the host from there to the first '/' or '?', the query after it.
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let host_start = url[scheme_end..]
        .find('@')
        .map_or(scheme_end, |i| scheme_end + i + 1);
    let query_start = url[host_start..]
        .find('?')
        .map_or(url.len(), |i| host_start + i);
    if url[host_start..query_start].contains('@') {
        return Err(
            "there is an '@' after the user and password: the driver ends the \
                    password at the first '@', so write each '@' of the user or password \
                    as %40"
                .into(),
        );
    }
    let (base, query) = match url[host_start..].find('?') {
        Some(i) => (&url[..host_start + i], Some(&url[host_start + i + 1..])),
        None => (url, None),
    };
    let mut mode = None;
    let mut root_cert = None;
    let mut rest = Vec::new();
    for kv in query.into_iter().flat_map(|q| q.split('&')) {
        match kv.split_once('=') {
            Some(("sslmode", v)) => mode = Some(PgSslMode::parse(&percent_decode(v))?),
            Some(("sslrootcert", v)) => {
                let path = percent_decode(v);
                if path == "system" {
                    return Err(
                        "sslrootcert=system is not supported; give the path of a PEM \
                                file with the CA certificate that signed the server's"
                            .into(),
                    );
                }
                root_cert = Some(PathBuf::from(path));
            }
            Some((k @ ("sslcert" | "sslkey" | "sslpassword" | "sslcrl"), _)) => {
                return Err(format!(
                    "{k} is not supported (no client certificates or CRLs); \
                     authenticate with a password in the URL"
                ))
            }
            _ if kv.is_empty() => {}
            _ => rest.push(kv),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    // The driver's messages name the option, never its value.
    let mut config = tokio_postgres::Config::from_str(&url).map_err(|e| e.to_string())?;
    let mode = mode.unwrap_or(PgSslMode::Prefer);
    if matches!(mode, PgSslMode::VerifyCa | PgSslMode::VerifyFull) && root_cert.is_none() {
        return Err(format!(
            "sslmode={} needs sslrootcert=/path/to/root.crt (a PEM file with the CA \
             certificate that signed the server's)",
            mode.as_str()
        ));
    }
    config.ssl_mode(match mode {
        PgSslMode::Disable => SslMode::Disable,
        PgSslMode::Prefer => SslMode::Prefer,
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull => SslMode::Require,
    });
    Ok((config, PgTlsParams { mode, root_cert }))
}

/// `%XX` escapes of a URL query value.
pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The connector for a store's connections (also used, and never called, with `disable`).
#[derive(Clone)]
pub struct PgTls {
    config: Arc<ClientConfig>,
}

impl PgTls {
    /// The client TLS settings for `params`; reads `sslrootcert`.
    pub fn new(params: &PgTlsParams) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match &params.root_cert {
            None => Arc::new(NoVerification(provider.clone())),
            Some(path) => {
                let roots = Arc::new(read_roots(path)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| format!("sslrootcert={}: {e}", path.display()))?;
                if params.mode == PgSslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS settings: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

/// Whether the TLS settings of the `postgres://` URL `url` can be made, reading and parsing
/// its `sslrootcert` as a connection would (`config check`); the error names the parameter.
pub fn check_url_tls(url: &str) -> Result<(), String> {
    let (_, params) = parse_url(url)?;
    PgTls::new(&params).map(|_| ())
}

fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("sslrootcert={shown}: cannot read: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("sslrootcert={shown}: not a PEM file: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert={shown}: not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "sslrootcert={shown}: holds no certificate (expected PEM, BEGIN CERTIFICATE)"
        ));
    }
    Ok(roots)
}

/// `require`/`prefer` without `sslrootcert`: encrypted, the peer not authenticated (as
/// libpq). The handshake's signatures are still checked.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to `sslrootcert`; the host name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name: a name error means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl MakeTlsConnect<Socket> for PgTls {
    type Stream = PgTlsStream;
    type TlsConnect = PgTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<PgTlsConnect> {
        let name = ServerName::try_from(domain.to_string()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("host '{domain}' is not a name or address TLS can check"),
            )
        })?;
        Ok(PgTlsConnect {
            config: self.config.clone(),
            name,
        })
    }
}

/// One handshake (made by [`PgTls`] per connection).
pub struct PgTlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsConnect<Socket> for PgTlsConnect {
    type Stream = PgTlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            connector
                .connect(self.name, stream)
                .await
                .map(|s| PgTlsStream(Box::new(s)))
        })
    }
}

/// A connection to PostgreSQL inside TLS.
pub struct PgTlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl TlsStream for PgTlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| server_end_point(cert))
            .map(ChannelBinding::tls_server_end_point)
            .unwrap_or_else(ChannelBinding::none)
    }
}

/// RFC 5929 `tls-server-end-point`: the certificate's hash under its signature's hash
/// (SHA-256 for MD5 and SHA-1). None for other signatures (e.g. Ed25519, RSA-PSS): SCRAM
/// then runs without channel binding.
fn server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    let (_, body, _) = der_tlv(cert)?;
    let (_, _tbs, after_tbs) = der_tlv(body)?;
    let (_, alg, _) = der_tlv(after_tbs)?;
    let (tag, oid, _) = der_tlv(alg)?;
    if tag != 0x06 {
        return None;
    }
    // 1.2.840.113549.1.1.{4,5,11,12,13}: md5/sha1/sha256/sha384/sha512 WithRSAEncryption
    // 1.2.840.10045.4.1, 1.2.840.10045.4.3.{2,3,4}: ecdsa-with-SHA1/256/384/512
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    let bits = match oid {
        o if o == ECDSA_SHA1 => 256,
        [p @ .., last] if p == RSA => match last {
            4 | 5 | 11 => 256,
            12 => 384,
            13 => 512,
            _ => return None,
        },
        [p @ .., last] if p == ECDSA => match last {
            2 => 256,
            3 => 384,
            4 => 512,
            _ => return None,
        },
        _ => return None,
    };
    Some(match bits {
        256 => sha2::Sha256::digest(cert).to_vec(),
        384 => sha2::Sha384::digest(cert).to_vec(),
        _ => sha2::Sha512::digest(cert).to_vec(),
    })
}

/// One DER element: (tag, contents, what follows it).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

impl AsyncRead for PgTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PgTlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url() {
        let (c, p) =
            parse_url("postgres://u:pw@db:5432/p?sslmode=verify-full&sslrootcert=/etc/ca%20x.pem")
                .unwrap();
        assert_eq!(p.mode, PgSslMode::VerifyFull);
        assert_eq!(p.root_cert, Some(PathBuf::from("/etc/ca x.pem")));
        assert_eq!(c.get_ssl_mode(), SslMode::Require);
        assert_eq!(c.get_dbname(), Some("p"));
        let (c, p) = parse_url("postgres://u:pw@db/p?application_name=x").unwrap();
        assert_eq!(p.mode, PgSslMode::Prefer);
        assert_eq!(c.get_ssl_mode(), SslMode::Prefer);
        assert_eq!(c.get_application_name(), Some("x"));
        let (c, _) = parse_url("postgres://u:pw@db/p?sslmode=disable").unwrap();
        assert_eq!(c.get_ssl_mode(), SslMode::Disable);
        let (c, p) = parse_url("postgresql://u:pw@db/p?sslmode=require").unwrap();
        assert_eq!((c.get_ssl_mode(), p.root_cert), (SslMode::Require, None));
    }

    /// The driver takes everything up to the first '@' for the user and password: a '?'
    /// in the password does not start the query (its `sslmode` still counts), and an '@'
    /// after the first one is refused with what to write instead.
    #[test]
    fn the_url_is_split_where_the_driver_splits_it() {
        let (c, p) = parse_url("postgres://u:Ab?9/x#y@db:5433/p?sslmode=require").unwrap();
        assert_eq!(c.get_password(), Some(&b"Ab?9/x#y"[..]));
        assert_eq!(c.get_user(), Some("u"));
        assert_eq!(c.get_dbname(), Some("p"));
        assert_eq!(c.get_ports(), [5433]);
        assert_eq!(p.mode, PgSslMode::Require);
        let e = parse_url("postgres://u:s3cr@t@db/p").unwrap_err();
        assert!(e.contains("%40"), "{e}");
        assert!(!e.contains("s3cr"), "{e}");
        let (c, _) = parse_url("postgres://u:s3cr%40t@db/p").unwrap();
        assert_eq!(c.get_password(), Some(&b"s3cr@t"[..]));
    }

    #[test]
    fn unsupported_tls_settings_say_what_to_use() {
        for (url, says) in [
            (
                "postgres://u:s3cr3t@db/p?sslmode=sometimes",
                "not one of disable",
            ),
            ("postgres://u:s3cr3t@db/p?sslmode=allow", "sslmode=prefer"),
            (
                "postgres://u:s3cr3t@db/p?sslmode=verify-full",
                "needs sslrootcert",
            ),
            (
                "postgres://u:s3cr3t@db/p?sslmode=verify-ca",
                "needs sslrootcert",
            ),
            (
                "postgres://u:s3cr3t@db/p?sslcert=/c.pem",
                "sslcert is not supported",
            ),
            (
                "postgres://u:s3cr3t@db/p?sslrootcert=system",
                "give the path",
            ),
        ] {
            let e = parse_url(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
        let missing = PgTlsParams {
            mode: PgSslMode::VerifyFull,
            root_cert: Some("/nonexistent/ca.pem".into()),
        };
        let e = PgTls::new(&missing).err().unwrap();
        assert!(
            e.contains("sslrootcert=/nonexistent/ca.pem: cannot read"),
            "{e}"
        );
    }

    #[test]
    fn der_elements_are_read_without_panicking() {
        assert_eq!(
            der_tlv(&[0x30, 0x01, 0x05, 0x09]),
            Some((0x30, &[5u8][..], &[9u8][..]))
        );
        assert_eq!(der_tlv(&[0x30, 0x82, 0x00]), None);
        assert_eq!(der_tlv(&[0x30, 0x05, 0x00]), None);
        assert_eq!(server_end_point(&[0x30, 0x00]), None);
    }
}
