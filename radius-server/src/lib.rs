//! The Portcullis daemon and admin CLI: RADIUS front end, `serve`, admin subcommands.

pub mod cli;
pub mod http;
pub mod radius;
pub mod serve;
