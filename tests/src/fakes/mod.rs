//! Strict local fakes of second-factor providers: HTTPS servers that check requests the way
//! the real services do (path, auth, required fields) and can be told to fail.

pub mod duo;
pub mod ntfy;
pub mod smtp;
pub mod tls;
pub mod twilio;
pub mod webhook;
