//! Who called and what it cost: virtual API keys with rate limits and
//! budgets (`keys`), usage records written off the request path (`usage`)
//! through a crash journal (`journal`), the response cache (`cache`), and
//! the SQLite/PostgreSQL pool behind keys and usage (`db`).

pub mod cache;
pub mod db;
pub(crate) mod journal;
pub mod keys;
pub mod usage;
