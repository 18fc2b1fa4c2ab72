//! Benchmark tools for Portcullis: the pieces of `radius-load` (a UDP load generator for
//! RADIUS Access-Requests with TOTP codes) and `bench-users` (users for both servers).

pub mod packet;
pub mod stats;
pub mod totp;
pub mod users;
