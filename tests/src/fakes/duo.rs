//! A strict fake of the Duo Auth API v2: every request must carry a Date within 300 s of
//! the fake's clock and a valid v2 signature (HMAC-SHA512 over the canonical string) in
//! HTTP Basic `ikey:signature`; otherwise 401, as Duo answers. Users by name:
//! `alice` (push, phone, sms, passcode `123456`), `bypass` (preauth allow), `locked`
//! (preauth deny), `newbie` (preauth enroll). It can be told to fail.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use hmac::{Hmac, Mac};

use super::json_reply as reply;
use super::tls::HttpsServer;

/// The passcode `alice` can use.
pub const PASSCODE: &str = "123456";

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuoBehaviour {
    Normal,
    ServerError,
    Malformed,
    /// 429 for the next N requests, then normal.
    RateLimited(u32),
    /// 429 to every request, for as long as it is set.
    AlwaysRateLimited,
    /// HTTP 200 with a failure envelope (`stat` FAIL, code 40002) to signed requests.
    StatFail,
    /// HTTP 403 with an HTML body (a proxy or WAF in front of Duo), to every request.
    HtmlForbidden,
}

#[derive(Default)]
struct State {
    behaviour: Option<DuoBehaviour>,
    push_allows: bool,
    clock_offset: i64,
    refusals: Vec<String>,
    calls: Vec<(String, HashMap<String, String>)>,
}

/// The running fake.
pub struct FakeDuo {
    pub addr: SocketAddr,
    pub ikey: String,
    pub skey: String,
    pub ca_file: PathBuf,
    state: Arc<Mutex<State>>,
    _server: HttpsServer,
}

impl FakeDuo {
    /// Start on a free 127.0.0.1 port; the CA to trust is written into `dir`.
    pub fn start(dir: &Path) -> FakeDuo {
        let state = Arc::new(Mutex::new(State {
            push_allows: true,
            ..State::default()
        }));
        let (ikey, skey) = (
            "DIWJ8X6AEYOR5OMC6TQ1".to_string(),
            "Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep".to_string(),
        );
        let (s, i, k) = (state.clone(), ikey.clone(), skey.clone());
        let server = HttpsServer::start(dir, "Duo", move |request, addr| {
            handle(request, &s, &i, &k, &format!("127.0.0.1:{}", addr.port()))
        });
        FakeDuo {
            addr: server.addr,
            ikey,
            skey,
            ca_file: server.ca_file.clone(),
            state,
            _server: server,
        }
    }

    /// `api_host` for the config.
    pub fn api_host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    pub fn set_behaviour(&self, b: DuoBehaviour) {
        self.state.lock().unwrap().behaviour = Some(b);
    }

    /// Whether a push is approved.
    pub fn set_push_allows(&self, yes: bool) {
        self.state.lock().unwrap().push_allows = yes;
    }

    /// Move the fake's clock (to test Date skew).
    pub fn set_clock_offset(&self, secs: i64) {
        self.state.lock().unwrap().clock_offset = secs;
    }

    pub fn refusals(&self) -> Vec<String> {
        self.state.lock().unwrap().refusals.clone()
    }

    /// (path, params) of every accepted call.
    pub fn calls(&self) -> Vec<(String, HashMap<String, String>)> {
        self.state.lock().unwrap().calls.clone()
    }
}

fn fail(status: u16, code: u32, message: &str) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    reply(
        status,
        serde_json::json!({"stat": "FAIL", "code": code, "message": message}),
    )
}

fn ok(v: serde_json::Value) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    reply(200, serde_json::json!({"stat": "OK", "response": v}))
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(x) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
            {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Seconds since the epoch of `Tue, 21 Aug 2012 17:29:18 -0000`.
fn parse_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "-0000" && parts[5] != "+0000" {
        return None;
    }
    let day: i64 = parts[1].parse().ok()?;
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months.iter().position(|m| *m == parts[2])? as i64 + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<i64> = parts[4].split(':').filter_map(|x| x.parse().ok()).collect();
    if hms.len() != 3 {
        return None;
    }
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

fn handle(
    mut request: tiny_http::Request,
    state: &Mutex<State>,
    ikey: &str,
    skey: &str,
    host: &str,
) {
    let refuse = |why: String| state.lock().unwrap().refusals.push(why);
    let (behaviour, offset) = {
        let mut s = state.lock().unwrap();
        let b = s.behaviour.unwrap_or(DuoBehaviour::Normal);
        if let DuoBehaviour::RateLimited(n) = b {
            s.behaviour = Some(if n > 1 {
                DuoBehaviour::RateLimited(n - 1)
            } else {
                DuoBehaviour::Normal
            });
        }
        (b, s.clock_offset)
    };
    let response = (|| {
        match behaviour {
            DuoBehaviour::ServerError => return fail(503, 50301, "Service Unavailable"),
            DuoBehaviour::RateLimited(_) | DuoBehaviour::AlwaysRateLimited => {
                return fail(429, 42901, "Too Many Requests")
            }
            DuoBehaviour::HtmlForbidden => {
                return tiny_http::Response::from_string("<html><body>403 Forbidden</body></html>")
                    .with_status_code(403)
                    .with_header(
                        tiny_http::Header::from_bytes("Content-Type", "text/html").expect("header"),
                    )
            }
            DuoBehaviour::Malformed | DuoBehaviour::StatFail | DuoBehaviour::Normal => {}
        }
        let header = |name: &str| {
            request
                .headers()
                .iter()
                .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                .map(|h| h.value.as_str().to_string())
        };
        let authorization = header("Authorization");
        let Some(date) = header("Date") else {
            refuse("missing Date".into());
            return fail(401, 40102, "Missing request credentials");
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + offset;
        match parse_date(&date) {
            Some(t) if (t - now).abs() <= 300 => {}
            _ => {
                refuse(format!("Date '{date}' is skewed or malformed"));
                return fail(401, 40105, "Request has expired");
            }
        }
        let mut body = String::new();
        let _ = std::io::Read::read_to_string(request.as_reader(), &mut body);
        let params: Vec<(String, String)> = body
            .split('&')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect();
        let mut canon_params: Vec<(String, String)> =
            params.iter().map(|(k, v)| (encode(k), encode(v))).collect();
        canon_params.sort();
        let canon = format!(
            "{date}\n{}\n{}\n{}\n{}",
            request.method().as_str().to_ascii_uppercase(),
            host,
            request.url(),
            canon_params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        );
        let mut mac = <Hmac<sha2::Sha512> as Mac>::new_from_slice(skey.as_bytes()).unwrap();
        mac.update(canon.as_bytes());
        let sig = data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes());
        let expected = format!(
            "Basic {}",
            data_encoding::BASE64.encode(format!("{ikey}:{sig}").as_bytes())
        );
        if authorization.as_deref() != Some(expected.as_str()) {
            refuse("invalid signature".into());
            return fail(401, 40103, "Invalid signature in request credentials");
        }
        if behaviour == DuoBehaviour::StatFail {
            return fail(200, 40002, "Invalid request parameters");
        }
        if behaviour == DuoBehaviour::Malformed {
            return reply(
                200,
                serde_json::json!({"stat": "OK", "response": {"unexpected": true}}),
            );
        }
        let p: HashMap<String, String> = params.into_iter().collect();
        let user = p.get("username").cloned().unwrap_or_default();
        let path = request.url().to_string();
        state.lock().unwrap().calls.push((path.clone(), p.clone()));
        match path.as_str() {
            "/auth/v2/preauth" => match user.as_str() {
                "alice" => ok(serde_json::json!({
                    "result": "auth", "status_msg": "Account is active",
                    "devices": [{"device": "DPFZRS9FB0D46QFTM891", "type": "phone", "number": "XXX-XXX-0100",
                                 "name": "", "display_name": "iOS (XXX-XXX-0100)",
                                 "capabilities": ["auto", "push", "sms", "phone", "mobile_otp"]}]
                })),
                "bypass" => ok(
                    serde_json::json!({"result": "allow", "status_msg": "Allowing unknown user"}),
                ),
                "locked" => ok(
                    serde_json::json!({"result": "deny", "status_msg": "Your account is disabled"}),
                ),
                "newbie" => ok(
                    serde_json::json!({"result": "enroll", "status_msg": "Enroll an authentication device to proceed",
                                                  "enroll_portal_url": "https://api-xxxxxxxx.duosecurity.com/portal?12345"}),
                ),
                _ => fail(400, 40002, "Invalid request parameters"),
            },
            "/auth/v2/auth" => {
                let factor = p.get("factor").map(String::as_str).unwrap_or("");
                match factor {
                    "passcode" if p.get("passcode").map(String::as_str) == Some(PASSCODE) => ok(
                        serde_json::json!({"result": "allow", "status": "allow", "status_msg": "Success. Logging you in..."}),
                    ),
                    "passcode" => ok(
                        serde_json::json!({"result": "deny", "status": "deny", "status_msg": "Incorrect passcode. Please try again."}),
                    ),
                    "push" => {
                        thread::sleep(Duration::from_millis(200));
                        if state.lock().unwrap().push_allows {
                            ok(
                                serde_json::json!({"result": "allow", "status": "allow", "status_msg": "Success. Logging you in..."}),
                            )
                        } else {
                            ok(
                                serde_json::json!({"result": "deny", "status": "deny", "status_msg": "Login request denied."}),
                            )
                        }
                    }
                    "phone" => ok(
                        serde_json::json!({"result": "allow", "status": "allow", "status_msg": "Success. Logging you in..."}),
                    ),
                    "sms" => ok(
                        serde_json::json!({"result": "deny", "status": "sent", "status_msg": "New SMS passcodes sent."}),
                    ),
                    _ => fail(400, 40002, "Invalid request parameters"),
                }
            }
            _ => fail(404, 40401, "Resource not found"),
        }
    })();
    let _ = request.respond(response);
}
