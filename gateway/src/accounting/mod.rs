//! What requests cost: usage records written off the request path
//! (`usage`) through a crash journal (`journal`), and the response cache
//! (`cache`). Keys, their limits and budgets, and the database are
//! `platform`'s, shared with posting.

pub mod cache;
pub(crate) mod journal;
pub mod usage;
