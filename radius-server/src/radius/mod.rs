pub mod cache;
pub mod metrics;
pub mod packet;
pub mod server;
