//! A strict fake of Twilio Programmable Messaging (`POST /2010-04-01/Accounts/{sid}/Messages.json`).
//!
//! It checks what Twilio checks: method, path with the account SID, HTTP Basic
//! `AccountSid:AuthToken`, a form body with `To` (E.164), one of `From` /
//! `MessagingServiceSid`, and `Body` (at most 1600 characters); it answers 201 with a message
//! JSON, or Twilio's error JSON. It can be told to fail (5xx, 4xx, 429, timeout, malformed).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::json_reply as json_response;
use super::tls::HttpsServer;

/// How the fake answers the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Normal,
    ServerError,
    RateLimited,
    /// Never answers within any sane timeout.
    Hang,
    /// 201 with a body that is not JSON.
    Malformed,
}

/// One message the fake accepted.
#[derive(Debug, Clone)]
pub struct Sms {
    pub to: String,
    pub body: String,
}

#[derive(Default)]
struct State {
    messages: Vec<Sms>,
    refusals: Vec<String>,
    behaviour: Option<Behaviour>,
    /// The auth token in force, once rotated ([`FakeTwilio::rotate_auth_token`]).
    rotated_token: Option<String>,
}

/// The running fake. Stops when dropped.
pub struct FakeTwilio {
    pub addr: SocketAddr,
    pub account_sid: String,
    pub auth_token: String,
    pub ca_file: PathBuf,
    state: Arc<Mutex<State>>,
    _server: HttpsServer,
}

impl FakeTwilio {
    /// Start on a free 127.0.0.1 port; the CA to trust is written into `dir`.
    pub fn start(dir: &Path) -> FakeTwilio {
        let state = Arc::new(Mutex::new(State::default()));
        let account_sid = "AC0123456789abcdef0123456789abcdef".to_string();
        let auth_token = "fake-auth-token-0123456789".to_string();
        let (s, sid, token) = (state.clone(), account_sid.clone(), auth_token.clone());
        let server = HttpsServer::start(dir, "Twilio", move |request, _| {
            handle(request, &s, &sid, &token)
        });
        FakeTwilio {
            addr: server.addr,
            account_sid,
            auth_token,
            ca_file: server.ca_file.clone(),
            state,
            _server: server,
        }
    }

    /// The `base_url` to configure.
    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// How to answer from now on.
    pub fn set_behaviour(&self, b: Behaviour) {
        self.state.lock().unwrap().behaviour = Some(b);
    }

    /// The account's auth token is rotated (as in Twilio's console): from now on only
    /// `token` is accepted.
    pub fn rotate_auth_token(&self, token: &str) {
        self.state.lock().unwrap().rotated_token = Some(token.to_string());
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> Vec<Sms> {
        self.state.lock().unwrap().messages.clone()
    }

    /// Requests refused for breaking the API's rules (wrong auth, missing fields...).
    pub fn refusals(&self) -> Vec<String> {
        self.state.lock().unwrap().refusals.clone()
    }

    /// The digits of the last message's body: the code.
    pub fn last_code(&self) -> String {
        let msgs = self.messages();
        let last = msgs.last().expect("the fake Twilio received no message");
        last.body.chars().filter(|c| c.is_ascii_digit()).collect()
    }
}

fn twilio_error(
    status: u16,
    code: u32,
    message: &str,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    json_response(
        status,
        serde_json::json!({
            "code": code, "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status
        })
        .to_string(),
    )
}

fn parse_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn handle(mut request: tiny_http::Request, state: &Mutex<State>, sid: &str, token: &str) {
    let (behaviour, rotated) = {
        let s = state.lock().unwrap();
        (
            s.behaviour.unwrap_or(Behaviour::Normal),
            s.rotated_token.clone(),
        )
    };
    let token = rotated.as_deref().unwrap_or(token);
    let refuse = |state: &Mutex<State>, why: String| {
        state.lock().unwrap().refusals.push(why);
    };
    let response = (|| {
        match behaviour {
            Behaviour::Hang => {
                thread::sleep(Duration::from_secs(30));
                return twilio_error(503, 20503, "too late");
            }
            Behaviour::ServerError => return twilio_error(503, 20503, "Service Unavailable"),
            Behaviour::RateLimited => return twilio_error(429, 20429, "Too Many Requests"),
            Behaviour::Malformed | Behaviour::Normal => {}
        }
        let expected_path = format!("/2010-04-01/Accounts/{sid}/Messages.json");
        if request.url() != expected_path {
            refuse(state, format!("unknown path {}", request.url()));
            return twilio_error(404, 20404, "The requested resource was not found");
        }
        if request.method() != &tiny_http::Method::Post {
            refuse(state, format!("method {}", request.method()));
            return twilio_error(405, 20004, "Method not allowed");
        }
        let header = |name: &str| {
            request
                .headers()
                .iter()
                .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                .map(|h| h.value.as_str().to_string())
        };
        let expected_auth = format!(
            "Basic {}",
            data_encoding::BASE64.encode(format!("{sid}:{token}").as_bytes())
        );
        if header("Authorization").as_deref() != Some(expected_auth.as_str()) {
            refuse(state, "wrong or missing HTTP Basic credentials".into());
            return twilio_error(401, 20003, "Authenticate");
        }
        if !header("Content-Type")
            .unwrap_or_default()
            .starts_with("application/x-www-form-urlencoded")
        {
            refuse(state, "body is not form-encoded".into());
            return twilio_error(400, 21200, "Invalid request body");
        }
        let mut body = String::new();
        if std::io::Read::read_to_string(request.as_reader(), &mut body).is_err() {
            return twilio_error(400, 21200, "Invalid request body");
        }
        let form = parse_form(&body);
        let to = form.get("To").cloned().unwrap_or_default();
        let e164 = to.starts_with('+')
            && to.len() >= 8
            && to.len() <= 16
            && to[1..].bytes().all(|b| b.is_ascii_digit());
        if !e164 {
            refuse(state, format!("To '{to}' is not E.164"));
            return twilio_error(400, 21211, "The 'To' number is not a valid phone number.");
        }
        if form.contains_key("From") == form.contains_key("MessagingServiceSid") {
            refuse(
                state,
                "need exactly one of From / MessagingServiceSid".into(),
            );
            return twilio_error(
                400,
                21603,
                "A 'From' or 'MessagingServiceSid' parameter is required",
            );
        }
        let text = form.get("Body").cloned().unwrap_or_default();
        if text.is_empty() || text.chars().count() > 1600 {
            refuse(state, "Body missing or over 1600 characters".into());
            return twilio_error(400, 21602, "Message body is required.");
        }
        if behaviour == Behaviour::Malformed {
            return json_response(201, "<html>not json</html>");
        }
        let n = {
            let mut s = state.lock().unwrap();
            s.messages.push(Sms {
                to: to.clone(),
                body: text.clone(),
            });
            s.messages.len()
        };
        json_response(
            201,
            serde_json::json!({
                "sid": format!("SM{n:032x}"), "status": "queued", "to": to,
                "from": form.get("From"), "body": text, "error_code": null, "error_message": null,
                "date_created": "Mon, 23 Nov 2026 12:00:00 +0000"
            })
            .to_string(),
        )
    })();
    let _ = request.respond(response);
}
