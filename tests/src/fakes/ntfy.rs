//! A strict fake of an ntfy server's JSON publish API (`POST /` with a JSON message).
//!
//! It checks what ntfy checks: the method and path, the access token
//! (`Authorization: Bearer tk_...`) when one is set, a JSON body with a valid `topic`
//! (1-64 of `[-_A-Za-z0-9]`), `message`, a `priority` of 1-5 when given, at most three
//! `actions`, each `view`/`http`/`broadcast` with a `label` and (view/http) a `url`. It
//! answers 200 with the message JSON (id, time, topic), or ntfy's error JSON. It can be told
//! to fail (5xx, hang).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use super::json_reply as respond;
use super::tls::HttpsServer;

/// How the fake answers the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Normal,
    ServerError,
    /// Never answers within any sane timeout.
    Hang,
}

#[derive(Default)]
struct State {
    messages: Vec<Value>,
    refusals: Vec<String>,
    behaviour: Option<Behaviour>,
}

/// The running fake. Stops when dropped.
pub struct FakeNtfy {
    pub addr: SocketAddr,
    pub token: String,
    pub ca_file: PathBuf,
    state: Arc<Mutex<State>>,
    _server: HttpsServer,
}

impl FakeNtfy {
    /// Start on a free 127.0.0.1 port; the CA to trust is written into `dir`.
    pub fn start(dir: &Path) -> FakeNtfy {
        let state = Arc::new(Mutex::new(State::default()));
        let token = "tk_fakentfytoken0123456789abcd".to_string();
        let (s, t) = (state.clone(), token.clone());
        let server = HttpsServer::start(dir, "ntfy", move |request, _| handle(request, &s, &t));
        FakeNtfy {
            addr: server.addr,
            token,
            ca_file: server.ca_file.clone(),
            state,
            _server: server,
        }
    }

    /// The `ntfy_url` to configure.
    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// The `[tenants.NAME.push]` section for this fake.
    pub fn config(&self, tenant: &str, extra: &str) -> String {
        format!(
            "\n[tenants.{tenant}.push]\nntfy_url = \"{}\"\nntfy_token = \"{}\"\nca_file = \"{}\"\ntimeout = \"2s\"\n{extra}\n",
            self.base_url(),
            self.token,
            self.ca_file.display()
        )
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        self.state.lock().unwrap().behaviour = Some(b);
    }

    /// Messages published so far (the JSON bodies).
    pub fn messages(&self) -> Vec<Value> {
        self.state.lock().unwrap().messages.clone()
    }

    /// Requests refused for breaking the API's rules.
    pub fn refusals(&self) -> Vec<String> {
        self.state.lock().unwrap().refusals.clone()
    }

    /// Wait up to `timeout` until `n` messages were published.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let end = std::time::Instant::now() + timeout;
        loop {
            let m = self.messages();
            if m.len() >= n || std::time::Instant::now() >= end {
                return m;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The digits of the last message's text (an enrolment code).
    pub fn last_code(&self) -> String {
        let m = self.messages();
        let last = m.last().expect("the fake ntfy received no message");
        last["message"]
            .as_str()
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect()
    }
}

fn ntfy_error(
    status: u16,
    code: u32,
    error: &str,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    respond(
        status,
        json!({"code": code, "http": status, "error": error, "link": "https://ntfy.sh/docs/publish/"}),
    )
}

/// Why a publish body is not one ntfy takes, if it is not.
fn check_body(v: &Value) -> Result<(), String> {
    let topic = v["topic"].as_str().ok_or("no topic")?;
    if topic.is_empty()
        || topic.len() > 64
        || !topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("invalid topic '{topic}'"));
    }
    if !v["message"].is_string() {
        return Err("no message".into());
    }
    if let Some(p) = v.get("priority") {
        if !p.as_u64().is_some_and(|p| (1..=5).contains(&p)) {
            return Err(format!("invalid priority {p}"));
        }
    }
    if let Some(actions) = v.get("actions") {
        let list = actions.as_array().ok_or("actions is not a list")?;
        if list.len() > 3 {
            return Err("more than 3 actions".into());
        }
        for a in list {
            let kind = a["action"].as_str().unwrap_or("");
            if !["view", "http", "broadcast"].contains(&kind) {
                return Err(format!("unknown action '{kind}'"));
            }
            if a["label"].as_str().is_none_or(str::is_empty) {
                return Err("action without label".into());
            }
            if kind != "broadcast" && a["url"].as_str().is_none_or(str::is_empty) {
                return Err("action without url".into());
            }
        }
    }
    Ok(())
}

fn handle(mut request: tiny_http::Request, state: &Mutex<State>, token: &str) {
    let behaviour = state.lock().unwrap().behaviour.unwrap_or(Behaviour::Normal);
    let refuse = |why: String| state.lock().unwrap().refusals.push(why);
    let response = (|| {
        match behaviour {
            Behaviour::Hang => {
                thread::sleep(Duration::from_secs(30));
                return ntfy_error(503, 50301, "too late");
            }
            Behaviour::ServerError => return ntfy_error(500, 50001, "internal server error"),
            Behaviour::Normal => {}
        }
        if request.method() != &tiny_http::Method::Post || request.url() != "/" {
            refuse(format!("{} {}", request.method(), request.url()));
            return ntfy_error(404, 40401, "page not found");
        }
        let auth = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("Authorization"))
            .map(|h| h.value.as_str().to_string());
        if auth.as_deref() != Some(&format!("Bearer {token}")) {
            refuse(format!("bad authorization {auth:?}"));
            return ntfy_error(401, 40101, "unauthorized");
        }
        let mut body = String::new();
        if request.as_reader().read_to_string(&mut body).is_err() {
            refuse("unreadable body".into());
            return ntfy_error(400, 40000, "bad request");
        }
        let v: Value = match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(e) => {
                refuse(format!("not JSON: {e}"));
                return ntfy_error(
                    400,
                    40024,
                    "invalid request: request body must be message JSON",
                );
            }
        };
        if let Err(why) = check_body(&v) {
            refuse(why.clone());
            return ntfy_error(400, 40000, &why);
        }
        let topic = v["topic"].clone();
        state.lock().unwrap().messages.push(v);
        respond(
            200,
            json!({"id": "fakeid", "time": 1, "event": "message", "topic": topic}),
        )
    })();
    let _ = request.respond(response);
}
