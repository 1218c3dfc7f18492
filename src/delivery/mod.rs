//! The relay half: applied changes → signed notifications to merchant
//! endpoints (SPEC §6).
//!
//! - [`patterns`]: endpoint event-type patterns (pure).
//! - [`retry`]: the retry schedule with jitter, `Retry-After` (pure).
//! - [`signing`]: Standard Webhooks signatures, secrets and the payload (pure).
//! - [`ssrf`]: the SSRF guard: address classification, a vetting resolver,
//!   the delivery HTTP client.
//! - [`dispatcher`]: due deliveries → attempts → recorded outcomes.

pub mod dispatcher;
pub mod patterns;
pub mod retry;
pub mod signing;
pub mod ssrf;
