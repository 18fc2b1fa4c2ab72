//! A strict SMTP sink: TLS from the first byte (port-465 style) or STARTTLS, AUTH PLAIN or
//! LOGIN required before MAIL, messages recorded. It refuses mail before TLS and AUTH, as a
//! submission server does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::tls::TestTls;

/// How the sink speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkTls {
    Implicit,
    Starttls,
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// The running sink.
pub struct SmtpSink {
    pub addr: SocketAddr,
    pub ca_file: PathBuf,
    pub username: String,
    pub password: String,
    /// The password in force (see [`SmtpSink::rotate_password`]).
    current_password: Arc<Mutex<String>>,
    mails: Arc<Mutex<Vec<Mail>>>,
    refusals: Arc<Mutex<Vec<String>>>,
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

impl SmtpSink {
    /// Start on a free 127.0.0.1 port; the CA to trust is written into `dir`.
    pub fn start(dir: &Path, mode: SinkTls) -> SmtpSink {
        let tls = TestTls::new(dir);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(tls.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(tls.key_der.clone())),
            )
            .expect("server certificate");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the SMTP sink");
        let addr = listener.local_addr().expect("address");
        let mails = Arc::new(Mutex::new(Vec::new()));
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let (username, password) = (
            "mfa@example.com".to_string(),
            "smtp-secret-password".to_string(),
        );
        let current_password = Arc::new(Mutex::new(password.clone()));
        {
            let (mails, refusals) = (mails.clone(), refusals.clone());
            let (u, current) = (username.clone(), current_password.clone());
            thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    let (config, mails, refusals) =
                        (config.clone(), mails.clone(), refusals.clone());
                    let (u, p) = (u.clone(), current.lock().unwrap().clone());
                    thread::spawn(move || {
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                        // I/O errors (a client hanging up after a refusal) are not protocol
                        // refusals; those are recorded where they happen.
                        let _ = session(conn, mode, config, &u, &p, &mails, &refusals);
                    });
                }
            });
        }
        SmtpSink {
            addr,
            ca_file: tls.ca_file,
            username,
            password,
            current_password,
            mails,
            refusals,
        }
    }

    /// The account's password is changed: from the next connection on only `password`
    /// logs in.
    pub fn rotate_password(&self, password: &str) {
        *self.current_password.lock().unwrap() = password.to_string();
    }

    /// Messages received.
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// What the sink refused.
    pub fn refusals(&self) -> Vec<String> {
        self.refusals.lock().unwrap().clone()
    }

    /// The 6-digit code in the last message's body.
    pub fn last_code(&self) -> String {
        let mails = self.mails();
        let data = &mails.last().expect("the SMTP sink received no mail").data;
        let body = data.split("\r\n\r\n").nth(1).unwrap_or(data);
        body.split(|c: char| !c.is_ascii_digit())
            .find(|w| w.len() == 6)
            .expect("a 6-digit code in the mail")
            .to_string()
    }
}

fn tls_wrap(
    conn: TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<Box<dyn Stream>> {
    let server = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    Ok(Box::new(rustls::StreamOwned::new(server, conn)))
}

fn b64(s: &str) -> String {
    data_encoding::BASE64
        .decode(s.trim().as_bytes())
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default()
}

fn session(
    conn: TcpStream,
    mode: SinkTls,
    config: Arc<rustls::ServerConfig>,
    user: &str,
    pass: &str,
    mails: &Mutex<Vec<Mail>>,
    refusals: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    // For STARTTLS the same socket is wrapped later; lines are read byte by byte, so no
    // buffered bytes are lost in between.
    let mut plain = Some(conn.try_clone()?);
    let mut stream: Box<dyn Stream> = match mode {
        SinkTls::Implicit => tls_wrap(conn, config.clone())?,
        SinkTls::Starttls => Box::new(conn),
    };
    let mut secure = mode == SinkTls::Implicit;
    let mut authed = false;
    let (mut from, mut to) = (String::new(), Vec::new());
    write!(stream, "220 sink.test ESMTP\r\n")?;
    stream.flush()?;
    loop {
        let line = read_line(&mut stream)?;
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            if secure {
                "250-sink.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n".into()
            } else {
                "250-sink.test\r\n250 STARTTLS\r\n".into()
            }
        } else if upper == "STARTTLS" && !secure {
            write!(stream, "220 go ahead\r\n")?;
            stream.flush()?;
            let Some(raw) = plain.take() else {
                return Err(std::io::Error::other("STARTTLS twice"));
            };
            stream = tls_wrap(raw, config.clone())?;
            secure = true;
            continue;
        } else if upper.starts_with("AUTH PLAIN") {
            let arg = line[10..].trim().to_string();
            let arg = if arg.is_empty() {
                write!(stream, "334 \r\n")?;
                stream.flush()?;
                read_line(&mut stream)?
            } else {
                arg
            };
            let decoded = b64(&arg);
            let parts: Vec<&str> = decoded.split('\0').collect();
            if secure && parts.len() == 3 && parts[1] == user && parts[2] == pass {
                authed = true;
                "235 ok\r\n".into()
            } else {
                refusals.lock().unwrap().push("wrong credentials".into());
                "535 authentication failed\r\n".into()
            }
        } else if upper.starts_with("AUTH LOGIN") {
            write!(stream, "334 VXNlcm5hbWU6\r\n")?;
            stream.flush()?;
            let u = b64(&read_line(&mut stream)?);
            write!(stream, "334 UGFzc3dvcmQ6\r\n")?;
            stream.flush()?;
            let p = b64(&read_line(&mut stream)?);
            if secure && u == user && p == pass {
                authed = true;
                "235 ok\r\n".into()
            } else {
                refusals.lock().unwrap().push("wrong credentials".into());
                "535 authentication failed\r\n".into()
            }
        } else if upper.starts_with("MAIL FROM:") {
            if !secure || !authed {
                refusals
                    .lock()
                    .unwrap()
                    .push("MAIL before TLS and AUTH".into());
                "530 authentication required\r\n".into()
            } else {
                from = line[10..].trim().to_string();
                to.clear();
                "250 ok\r\n".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            to.push(line[8..].trim().to_string());
            "250 ok\r\n".into()
        } else if upper == "DATA" {
            write!(stream, "354 end with .\r\n")?;
            stream.flush()?;
            let mut data = String::new();
            loop {
                let l = read_line(&mut stream)?;
                if l == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                data.push_str("\r\n");
            }
            mails.lock().unwrap().push(Mail {
                from: from.clone(),
                to: to.clone(),
                data,
            });
            "250 queued\r\n".into()
        } else if upper == "QUIT" {
            write!(stream, "221 bye\r\n")?;
            stream.flush()?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            "250 ok\r\n".into()
        } else {
            "502 not implemented\r\n".into()
        };
        stream.write_all(reply.as_bytes())?;
        stream.flush()?;
    }
}

fn read_line(stream: &mut Box<dyn Stream>) -> std::io::Result<String> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "client left",
            ));
        }
        if byte[0] == b'\n' {
            break;
        }
        out.push(byte[0]);
        if out.len() > 100_000 {
            return Err(std::io::Error::other("line too long"));
        }
    }
    let s = String::from_utf8_lossy(&out)
        .trim_end_matches('\r')
        .to_string();
    Ok(s)
}
