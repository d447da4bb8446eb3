//! What Starling's services share, so that each can stand on it without
//! reaching into another: the gateway (LLM API) today, posting next.
//!
//! - `db`: the SQLite/PostgreSQL pool and the one migration history of the
//!   database (`platform/migrations/`), run when the pool opens.
//! - `keys`: virtual API keys (stored hashed), their scopes, rate limits
//!   and daily budgets, and the in-memory key ring the servers check.
//!
//! It knows nothing about HTTP: each service turns a [`keys::Refusal`] or a
//! missing scope into its own API's error.

pub mod db;
pub mod keys;

pub use db::{Db, DbError};
