pub mod accounting;
pub mod cache;
pub mod clients;
pub mod metrics;
pub mod packet;
pub mod server;
pub mod warnings;
