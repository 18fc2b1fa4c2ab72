//! The PAM front end: the Unix socket that `pam_portcullis.so` talks to.
//!
//! `handler.rs` turns one decoded request into Engine calls and the Engine's step into a
//! response (no I/O); `server.rs` owns the socket: peer uid check, framing with deadlines
//! and size limits, bounded concurrency. The wire format is
//! [`portcullis_core::protocol`].

pub mod handler;
pub mod server;
