//! The Portcullis daemon and admin CLI: RADIUS and PAM front ends, `serve`, admin subcommands.

pub mod cli;
pub mod first_factor;
pub mod http;
pub mod notify;
pub mod pam;
pub mod providers;
pub mod push;
pub mod radius;
pub mod serve;
