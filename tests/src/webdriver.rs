//! Headless Chromium driven through ChromeDriver's W3C WebDriver HTTP API (Debian packages
//! `chromium` and `chromium-driver`). Everything stays on loopback: chromedriver listens on
//! a free 127.0.0.1 port, Chromium runs with its own temporary profile and with background
//! networking, component updates and sync off. Every exchange has a deadline.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::request_full;
use crate::tools::require_tool;

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Deadline of one WebDriver command (a page load included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium session; closed (and chromedriver killed) on drop.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Browser {
    /// Start chromedriver and a headless Chromium session. Fails the test (never skips)
    /// when either is missing.
    pub fn start() -> Browser {
        let chromium = require_tool("chromium", "chromium");
        let chromedriver = require_tool("chromedriver", "chromium-driver");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                let (_, v) = b.call("GET", "/status", None);
                if v["value"]["ready"].as_bool() == Some(true) {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready on {addr} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let user_data = format!("--user-data-dir={}", b._profile.path().display());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--no-first-run", user_data]
            }
        }}});
        let (status, v) = b.call("POST", "/session", Some(caps));
        assert_eq!(status, 200, "cannot create a Chromium session: {v}");
        b.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"))
            .to_string();
        let (status, v) = b.cmd(
            "POST",
            "/timeouts",
            Some(json!({"pageLoad": 20000, "script": 5000, "implicit": 3000})),
        );
        assert_eq!(status, 200, "timeouts: {v}");
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|v| v.to_string());
        let r = request_full(
            self.addr,
            method,
            path,
            &[("Content-Type", "application/json; charset=utf-8")],
            body.as_deref().map(str::as_bytes),
            COMMAND_TIMEOUT,
        );
        let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        (r.status, v)
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.cmd(method, path, body);
        assert_eq!(status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    /// Load `url` and wait for it.
    pub fn goto(&self, url: &str) {
        self.ok("POST", "/url", Some(json!({ "url": url })));
    }

    /// The current page's HTML.
    pub fn source(&self) -> String {
        self.ok("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.ok("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element matching CSS `selector` (waits up to the implicit timeout), if any.
    pub fn try_find(&self, selector: &str) -> Option<String> {
        let (status, v) = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": selector})),
        );
        (status == 200)
            .then(|| v["value"][ELEMENT].as_str().map(str::to_string))
            .flatten()
    }

    /// Like [`Browser::try_find`], failing the test with the page when there is none.
    pub fn find(&self, selector: &str) -> String {
        self.try_find(selector).unwrap_or_else(|| {
            let (status, v) = self.cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": selector})),
            );
            panic!(
                "no element '{selector}' on {} ({status}: {v}):\n{}",
                self.url(),
                self.source()
            )
        })
    }

    /// Every element matching `selector`.
    pub fn find_all(&self, selector: &str) -> Vec<String> {
        let v = self.ok(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": selector})),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The rendered text of element `id`.
    pub fn element_text(&self, id: &str) -> String {
        self.ok("GET", &format!("/element/{id}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The rendered text of the element matching `selector`.
    pub fn text(&self, selector: &str) -> String {
        self.element_text(&self.find(selector))
    }

    /// Type `text` into the field matching `selector`.
    pub fn type_into(&self, selector: &str, text: &str) {
        let id = self.find(selector);
        self.ok("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.ok(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Click the element matching `selector` (a submit button: the next page loads).
    pub fn click(&self, selector: &str) {
        let id = self.find(selector);
        self.ok("POST", &format!("/element/{id}/click"), Some(json!({})));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let (addr, path) = (self.addr, format!("/session/{}", self.session));
            // A driver that died must not turn a failing test into an abort.
            let _ = std::panic::catch_unwind(move || {
                request_full(addr, "DELETE", &path, &[], None, Duration::from_secs(10))
            });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
