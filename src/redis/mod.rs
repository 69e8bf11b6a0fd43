//! Counters shared by several mail hosts, in a Redis or Valkey server
//! (`OVERLIMIT_REDIS`): the address (`url`), the protocol (`resp`), one
//! connection under a deadline (`conn`), and the counters themselves
//! (`counters`).
//!
//! Hand-written on std: the plug-in links this and runs once per recipient,
//! and a Redis crate would add start-up work and size for the handful of
//! commands used here.

pub mod conn;
pub mod counters;
pub mod resp;
pub mod url;

pub use conn::Conn;
pub use url::Server;
