//! Where a request goes: public model names to candidate providers, the
//! policy that orders them, fallback and retries (`router`), per
//! provider+model circuit breakers (`breaker`) and USD per token (`prices`).

pub mod breaker;
pub mod prices;
pub mod router;

pub use router::Router;
