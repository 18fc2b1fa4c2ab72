//! Portcullis core: the Engine and everything it decides (first and second factor, guards,
//! audit), the store, the config schema and secret handling.
//!
//! The front ends (RADIUS server, PAM socket) translate between their protocol and the
//! Engine's steps; they decide nothing themselves.

pub mod admin;
pub mod clock;
pub mod codes;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod external;
pub mod first_factor;
pub mod hotp;
pub mod model;
pub mod password;
pub mod policy;
pub mod secrets;
pub mod store;
pub mod totp;
