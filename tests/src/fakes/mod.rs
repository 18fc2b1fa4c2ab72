//! Strict local fakes of second-factor providers: HTTPS servers that check requests the way
//! the real services do (path, auth, required fields) and can be told to fail.

pub mod duo;
pub mod ntfy;
pub mod smtp;
pub mod tls;
pub mod twilio;
pub mod webhook;

/// A reply of a fake with a JSON body (`body` as text: a `serde_json::Value` or a string
/// already encoded).
pub fn json_reply(
    status: u16,
    body: impl std::fmt::Display,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_string(body.to_string())
        .with_status_code(status)
        .with_header(
            tiny_http::Header::from_bytes("Content-Type", "application/json").expect("header"),
        )
}
