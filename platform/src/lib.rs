//! What Starling's services share, so that each can stand on it without
//! reaching into another: the gateway (LLM API) today, posting next.
//!
//! - `db`: the SQLite/PostgreSQL pool and the one migration history of the
//!   database (`platform/migrations/`), run when the pool opens.
//! - `keys`: virtual API keys (stored hashed), their scopes, rate limits
//!   and daily budgets, and the in-memory key ring the servers check.
//! - `auth`: the key check as a middleware layer every service puts in
//!   front of its guarded routes, and the [`auth::Caller`] it hands them.
//!
//! Each service turns a refusal or a missing scope into its own API's error.

pub mod auth;
pub mod db;
pub mod keys;

pub use db::{Db, DbError};
