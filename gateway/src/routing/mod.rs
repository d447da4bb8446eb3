//! Where a request goes: public model names to candidate providers, the
//! policy that orders them, fallback and retries (`router`), resuming a
//! stream that broke midway (`resume`), per provider+model circuit breakers
//! (`breaker`), USD per token (`prices`) and a request's size before it runs
//! (`estimate`).

pub mod breaker;
pub mod estimate;
pub mod prices;
mod resume;
pub mod router;

pub use router::Router;
