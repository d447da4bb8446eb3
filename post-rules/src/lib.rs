//! Post text rules: what a platform accepts as a post, computed exactly as
//! the platform does.
//!
//! - [`x`]: X's weighted length, validity and display ranges (twitter-text
//!   v3: NFC first, weights by code point range, an emoji sequence weighs 2,
//!   every URL 23), with a per-account limit for premium accounts.
//! - [`extract`]: URLs, hashtags, mentions and cashtags as twitter-text
//!   finds them.
//! - [`platform`]: every platform's length rule and limit as data (X,
//!   Bluesky 300 graphemes, Mastodon 500 graphemes, LinkedIn 3,000), one
//!   [`platform::Platform::check`] for the posting service's pre-flight gate.
//!
//! Nothing here allocates models, talks to networks or knows about posts'
//! storage: the engine's post constraint and the posting service both
//! depend on it.

pub mod extract;
pub mod platform;
pub mod x;

pub use platform::{Check, Platform};
pub use x::{XCount, XRules};
