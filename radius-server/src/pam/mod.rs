//! The PAM front end: the Unix socket that `pam_portcullis.so` talks to.
//!
//! `handler.rs` turns one decoded request into Engine calls and the Engine's step into a
//! response (no I/O); `server.rs` owns the socket: peer uid check, framing with deadlines
//! and size limits, bounded concurrency; `http.rs` is `POST /v1/pam/step` for remote
//! hosts (bearer token per host) on the HTTP(S) listener. The wire format is
//! [`portcullis_core::protocol`].

pub mod handler;
pub mod http;
pub mod server;
