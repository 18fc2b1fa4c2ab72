//! Portcullis core: the Engine and everything it decides (first and second factor, guards,
//! audit), the store, the config schema and secret handling.
//!
//! The front ends (RADIUS server, PAM socket) translate between their protocol and the
//! Engine's steps; they decide nothing themselves.
//!
//! Features: `engine` (default) is everything above; `protocol` is the PAM step protocol
//! alone (types and framing), which is all the PAM module links.

#[cfg(feature = "engine")]
pub mod admin;
#[cfg(feature = "engine")]
pub mod clock;
#[cfg(feature = "engine")]
pub mod codes;
#[cfg(feature = "engine")]
pub mod config;
#[cfg(feature = "engine")]
pub mod delivery;
#[cfg(feature = "engine")]
pub mod engine;
#[cfg(feature = "engine")]
pub mod external;
#[cfg(feature = "engine")]
pub mod first_factor;
#[cfg(feature = "engine")]
pub mod hosts;
#[cfg(feature = "engine")]
pub mod hotp;
#[cfg(feature = "engine")]
pub mod model;
#[cfg(feature = "engine")]
pub mod password;
#[cfg(feature = "engine")]
pub mod policy;
#[cfg(feature = "protocol")]
pub mod protocol;
#[cfg(feature = "engine")]
pub mod push;
#[cfg(feature = "engine")]
pub mod reply;
#[cfg(feature = "engine")]
pub mod secrets;
#[cfg(feature = "engine")]
pub mod sha512_crypt;
#[cfg(feature = "engine")]
pub mod store;
#[cfg(feature = "engine")]
pub mod totp;
