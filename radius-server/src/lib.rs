//! The Portcullis daemon and admin CLI: RADIUS front end, `serve`, admin subcommands.

pub mod cli;
pub mod first_factor;
pub mod providers;
pub mod radius;
pub mod serve;
