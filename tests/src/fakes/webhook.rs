//! A strict fake of a push webhook receiver: the HTTPS endpoint a webhook factor was
//! enrolled with, which the daemon POSTs JSON to.
//!
//! It checks what a careful receiver checks: the method (`POST`), a JSON `Content-Type`, a
//! body that is a JSON object of one of the daemon's two shapes (`"type": "message"` with
//! string `title` and `message`; `"type": "push"` with string `title`, `message`, `user`,
//! `client`, `source`, `token`, numeric `time`, boolean `number_matching` and `https://`
//! `page_url`, `approve_url`, `deny_url`), and, when it was given a secret, the
//! `X-Portcullis-Signature: sha256=HEX` header against HMAC-SHA256 of the raw body. A
//! request breaking a rule is answered 400 and recorded in [`FakeWebhook::refusals`]; an
//! accepted one is answered 200 `{"ok":true}` and recorded in [`FakeWebhook::requests`].
//! Every request that arrives, whatever its fate, counts in [`FakeWebhook::hits`]. It can be
//! told to fail (503) or to redirect.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::json_reply as respond;
use super::tls::HttpsServer;

/// The header carrying the body's signature.
const SIGNATURE_HEADER: &str = "X-Portcullis-Signature";

/// How the fake answers the next requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Checks the request; answers 200 `{"ok":true}` or 400.
    Normal,
    /// Answers 503 without checking or recording the request.
    ServerError,
    /// Answers `status` with `Location: location`, without checking or recording the
    /// request (it still counts in [`FakeWebhook::hits`]).
    Redirect { status: u16, location: String },
}

/// One accepted request.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request target (path and query) as sent.
    pub path: String,
    /// The JSON body.
    pub body: Value,
    /// The `Host` header, if any.
    pub host: Option<String>,
    /// The client's address.
    pub peer: SocketAddr,
}

#[derive(Default)]
struct State {
    hits: usize,
    requests: Vec<Received>,
    refusals: Vec<String>,
    behaviour: Option<Behaviour>,
}

/// The running fake. Stops when dropped.
pub struct FakeWebhook {
    /// The bound address (`0.0.0.0:PORT` for a wildcard bind).
    pub addr: SocketAddr,
    /// The CA to trust (the daemon's `[tenants.X.push] ca_file`).
    pub ca_file: PathBuf,
    state: Arc<Mutex<State>>,
    _server: HttpsServer,
}

impl FakeWebhook {
    /// Start on a free 127.0.0.1 port with a certificate for 127.0.0.1 and localhost; the
    /// CA to trust is written into `dir`. With `secret`, every request must be signed with
    /// it; without, a signature header is ignored.
    pub fn start(dir: &Path, secret: Option<&str>) -> FakeWebhook {
        FakeWebhook::start_on(dir, secret, "127.0.0.1:0", &["127.0.0.1", "localhost"])
    }

    /// Like [`FakeWebhook::start`], bound to `bind` (`"0.0.0.0:0"`, ...) with a
    /// certificate naming only `names`.
    pub fn start_on(dir: &Path, secret: Option<&str>, bind: &str, names: &[&str]) -> FakeWebhook {
        let state = Arc::new(Mutex::new(State::default()));
        let secret = secret.map(|s| s.as_bytes().to_vec());
        let s = state.clone();
        let server = HttpsServer::start_on(dir, "webhook", bind, names, move |request, _| {
            handle(request, &s, secret.as_deref())
        });
        FakeWebhook {
            addr: server.addr,
            ca_file: server.ca_file.clone(),
            state,
            _server: server,
        }
    }

    /// `https://127.0.0.1:PORT{path}`: a webhook URL to enrol.
    pub fn url(&self, path: &str) -> String {
        self.url_for("127.0.0.1", path)
    }

    /// `https://{host}:PORT{path}`: a webhook URL naming `host` (which the certificate
    /// must name for the daemon to accept it).
    pub fn url_for(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.addr.port())
    }

    /// How to answer from now on.
    pub fn set_behaviour(&self, b: Behaviour) {
        self.state.lock().unwrap().behaviour = Some(b);
    }

    /// Requests accepted so far.
    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests refused for breaking the rules, each with the reason.
    pub fn refusals(&self) -> Vec<String> {
        self.state.lock().unwrap().refusals.clone()
    }

    /// Every request that arrived: accepted, refused, failed or redirected.
    pub fn hits(&self) -> usize {
        self.state.lock().unwrap().hits
    }

    /// Wait up to `timeout` until `n` requests were accepted.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let end = Instant::now() + timeout;
        loop {
            let r = self.requests();
            if r.len() >= n || Instant::now() >= end {
                return r;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The digits of the last accepted `"type": "message"` body's `message` (an enrolment
    /// code).
    pub fn last_code(&self) -> String {
        let r = self.requests();
        let last = r
            .iter()
            .rev()
            .find(|r| r.body["type"] == "message")
            .expect("the fake webhook received no message");
        last.body["message"]
            .as_str()
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect()
    }
}

/// `sha256=HEX` of HMAC-SHA256(key, body), as the daemon signs.
fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(body);
    format!(
        "sha256={}",
        data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes())
    )
}

/// The values of every header called `name`.
fn headers(request: &tiny_http::Request, name: &'static str) -> Vec<String> {
    request
        .headers()
        .iter()
        .filter(|h| h.field.equiv(name))
        .map(|h| h.value.as_str().to_string())
        .collect()
}

/// Why a webhook body is not one the daemon sends, if it is not.
fn check_body(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or("the body is not a JSON object")?;
    let string = |k: &str| match o.get(k) {
        Some(Value::String(_)) => Ok(()),
        Some(other) => Err(format!("'{k}' is not a string: {other}")),
        None => Err(format!("no '{k}'")),
    };
    match o.get("type").and_then(Value::as_str) {
        Some("message") => {
            string("title")?;
            string("message")
        }
        Some("push") => {
            for k in [
                "title",
                "message",
                "user",
                "client",
                "source",
                "page_url",
                "approve_url",
                "deny_url",
                "token",
            ] {
                string(k)?;
            }
            match o.get("time") {
                Some(Value::Number(_)) => {}
                Some(other) => return Err(format!("'time' is not a number: {other}")),
                None => return Err("no 'time'".into()),
            }
            match o.get("number_matching") {
                Some(Value::Bool(_)) => {}
                Some(other) => return Err(format!("'number_matching' is not a bool: {other}")),
                None => return Err("no 'number_matching'".into()),
            }
            for k in ["page_url", "approve_url", "deny_url"] {
                let url = o[k].as_str().unwrap_or("");
                if !url.starts_with("https://") {
                    return Err(format!("'{k}' is not an https:// URL: '{url}'"));
                }
            }
            Ok(())
        }
        Some(other) => Err(format!("unknown type '{other}'")),
        None => Err(format!(
            "no string 'type': {}",
            o.get("type").unwrap_or(&Value::Null)
        )),
    }
}

fn handle(mut request: tiny_http::Request, state: &Mutex<State>, secret: Option<&[u8]>) {
    let behaviour = {
        let mut st = state.lock().unwrap();
        st.hits += 1;
        st.behaviour.clone().unwrap_or(Behaviour::Normal)
    };
    let refuse = |why: String| {
        state.lock().unwrap().refusals.push(why.clone());
        respond(400, json!({"ok": false, "error": why}))
    };
    let response = (|| {
        match behaviour {
            Behaviour::ServerError => return respond(503, json!({"ok": false})),
            Behaviour::Redirect { status, location } => {
                return respond(status, json!({"ok": false})).with_header(
                    tiny_http::Header::from_bytes("Location", location.as_bytes())
                        .expect("Location header"),
                )
            }
            Behaviour::Normal => {}
        }
        let path = request.url().to_string();
        if request.method() != &tiny_http::Method::Post {
            return refuse(format!("{} {path}: not POST", request.method()));
        }
        let types = headers(&request, "Content-Type");
        let json_type = |t: &str| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        };
        if types.len() != 1 || !json_type(&types[0]) {
            return refuse(format!(
                "{path}: Content-Type {types:?} is not application/json"
            ));
        }
        let signatures = headers(&request, SIGNATURE_HEADER);
        let host = headers(&request, "Host").into_iter().next();
        let peer = request
            .remote_addr()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut raw = Vec::new();
        if let Err(e) = request.as_reader().read_to_end(&mut raw) {
            return refuse(format!("{path}: unreadable body: {e}"));
        }
        if let Some(key) = secret {
            let want = sign(key, &raw);
            match signatures.as_slice() {
                [] => return refuse(format!("{path}: no {SIGNATURE_HEADER}")),
                [got] if *got == want => {}
                [got] => {
                    return refuse(format!(
                        "{path}: wrong {SIGNATURE_HEADER} '{got}' (expected '{want}')"
                    ))
                }
                _ => return refuse(format!("{path}: {SIGNATURE_HEADER} sent more than once")),
            }
        }
        let body: Value = match serde_json::from_slice(&raw) {
            Ok(v) => v,
            Err(e) => return refuse(format!("{path}: body is not JSON: {e}")),
        };
        if let Err(why) = check_body(&body) {
            return refuse(format!("{path}: {why}"));
        }
        state.lock().unwrap().requests.push(Received {
            path,
            body,
            host,
            peer,
        });
        respond(200, json!({"ok": true}))
    })();
    let _ = request.respond(response);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::io::{Read, Write};

    /// A reply: status, headers (names lower-cased) and body.
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    /// `POST path` over HTTPS to the fake (trusting its CA), with `headers` and `body`.
    fn post(fake: &FakeWebhook, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&fake.ca_file).expect("read the CA") {
            roots.add(cert.expect("CA PEM")).expect("add the CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
        let tcp = std::net::TcpStream::connect(fake.addr).expect("connect to the fake");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            fake.addr.port(),
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes()).unwrap();
        tls.write_all(body).unwrap();
        tls.flush().unwrap();
        let mut raw = Vec::new();
        match tls.read_to_end(&mut raw) {
            Ok(_) => {}
            // The server may close without close_notify once it has answered.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => panic!("reading the reply: {e}"),
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP reply");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
            })
            .collect();
        Reply {
            status,
            headers,
            body: body.to_string(),
        }
    }

    const JSON: (&str, &str) = ("Content-Type", "application/json");

    fn push_body() -> Value {
        json!({
            "type": "push", "title": "Sign in?", "message": "alice on vpn", "user": "alice",
            "client": "vpn", "source": "10.0.0.1", "time": 1_700_000_000,
            "page_url": "https://mfa.example/v1/push/ab?t=tok",
            "approve_url": "https://mfa.example/v1/push/ab/approve",
            "deny_url": "https://mfa.example/v1/push/ab/deny",
            "token": "tok", "number_matching": true,
        })
    }

    #[test]
    fn signed_message_is_accepted_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeWebhook::start(dir.path(), Some("s3cret"));
        let body = serde_json::to_vec(
            &json!({"type": "message", "title": "Code", "message": "Your code: 123-456"}),
        )
        .unwrap();
        let sig = sign(b"s3cret", &body);
        let r = post(&fake, "/hook/a", &[JSON, (SIGNATURE_HEADER, &sig)], &body);
        assert_eq!((r.status, r.body.as_str()), (200, r#"{"ok":true}"#));
        assert_eq!(fake.refusals(), Vec::<String>::new());
        let got = fake.wait_for(1, Duration::from_secs(1));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path, "/hook/a");
        assert_eq!(got[0].body["title"], "Code");
        assert_eq!(
            got[0].host.as_deref(),
            Some(format!("127.0.0.1:{}", fake.addr.port()).as_str())
        );
        assert!(got[0].peer.ip().is_loopback());
        assert_eq!(fake.last_code(), "123456");
        assert_eq!(fake.hits(), 1);
    }

    #[test]
    fn the_signature_is_the_daemons() {
        // RFC 4231 test case 2, as in radius-server's push sender.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn wrong_or_missing_signature_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeWebhook::start(dir.path(), Some("s3cret"));
        let body = serde_json::to_vec(&push_body()).unwrap();
        let wrong = sign(b"other", &body);
        let r = post(&fake, "/h", &[JSON, (SIGNATURE_HEADER, &wrong)], &body);
        assert_eq!(r.status, 400);
        let r = post(&fake, "/h", &[JSON], &body);
        assert_eq!(r.status, 400);
        let refusals = fake.refusals();
        assert_eq!(refusals.len(), 2, "{refusals:?}");
        assert!(
            refusals[0].contains("wrong X-Portcullis-Signature"),
            "{refusals:?}"
        );
        assert!(
            refusals[1].contains("no X-Portcullis-Signature"),
            "{refusals:?}"
        );
        assert!(fake.requests().is_empty());
        assert_eq!(fake.hits(), 2);
        // The right one passes.
        let right = sign(b"s3cret", &body);
        let r = post(&fake, "/h", &[JSON, (SIGNATURE_HEADER, &right)], &body);
        assert_eq!(r.status, 200, "{:?}", fake.refusals());
        assert_eq!(fake.requests()[0].body, push_body());
    }

    #[test]
    fn without_a_secret_a_signature_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeWebhook::start(dir.path(), None);
        let body = serde_json::to_vec(&push_body()).unwrap();
        let r = post(&fake, "/h", &[JSON, (SIGNATURE_HEADER, "sha256=00")], &body);
        assert_eq!(r.status, 200, "{:?}", fake.refusals());
        let r = post(&fake, "/h", &[JSON], &body);
        assert_eq!(r.status, 200, "{:?}", fake.refusals());
        assert_eq!(fake.requests().len(), 2);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeWebhook::start(dir.path(), None);
        let mut no_token = push_body();
        no_token.as_object_mut().unwrap().remove("token");
        let mut http_url = push_body();
        http_url["approve_url"] = json!("http://mfa.example/approve");
        let mut string_time = push_body();
        string_time["time"] = json!("1");
        let cases = [
            (no_token, "no 'token'"),
            (http_url, "'approve_url' is not an https:// URL"),
            (string_time, "'time' is not a number"),
            (json!({"type": "message", "title": "t"}), "no 'message'"),
            (json!({"type": "other"}), "unknown type 'other'"),
            (json!([1]), "not a JSON object"),
        ];
        for (body, why) in &cases {
            let r = post(&fake, "/h", &[JSON], &serde_json::to_vec(body).unwrap());
            assert_eq!(r.status, 400, "{body}");
            let last = fake.refusals().pop().unwrap();
            assert!(last.contains(why), "{last} should say {why}");
        }
        let r = post(&fake, "/h", &[("Content-Type", "text/plain")], b"{}");
        assert_eq!(r.status, 400);
        assert!(fake.refusals().pop().unwrap().contains("Content-Type"));
        assert!(fake.requests().is_empty());
        assert_eq!(fake.hits(), cases.len() + 1);
    }

    #[test]
    fn redirect_answers_the_location_and_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeWebhook::start(dir.path(), None);
        fake.set_behaviour(Behaviour::Redirect {
            status: 307,
            location: "https://169.254.169.254/latest/meta-data/".into(),
        });
        let body = serde_json::to_vec(&push_body()).unwrap();
        let r = post(&fake, "/h", &[JSON], &body);
        assert_eq!(r.status, 307);
        let location = r
            .headers
            .iter()
            .find(|(k, _)| k == "location")
            .map(|(_, v)| v.as_str());
        assert_eq!(location, Some("https://169.254.169.254/latest/meta-data/"));
        assert!(fake.requests().is_empty());
        assert!(fake.refusals().is_empty());
        assert_eq!(fake.hits(), 1);
        fake.set_behaviour(Behaviour::ServerError);
        assert_eq!(post(&fake, "/h", &[JSON], &body).status, 503);
        assert_eq!(fake.hits(), 2);
        fake.set_behaviour(Behaviour::Normal);
        assert_eq!(post(&fake, "/h", &[JSON], &body).status, 200);
        assert_eq!(fake.requests().len(), 1);
    }

    #[test]
    fn start_on_a_wildcard_names_the_port() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeWebhook::start_on(dir.path(), None, "0.0.0.0:0", &["127.0.0.1"]);
        assert!(fake.addr.ip().is_unspecified());
        assert_eq!(
            fake.url_for("127.0.0.1", "/x"),
            format!("https://127.0.0.1:{}/x", fake.addr.port())
        );
        assert_eq!(fake.url("/x"), fake.url_for("127.0.0.1", "/x"));
    }
}
