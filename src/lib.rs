//! ipn-relay: verify, store, order and relay payment-provider IPNs.
//!
//! ```text
//! provider ─POST /v1/ipn/{p}─▶ ingress ──(sled: inbox + task, fsync)──▶ 202 ack
//!                                  │ wake-up
//!                                  ▼
//!                          processor: parse → map → status rule
//!                                  │   (one sled transaction: payment state,
//!                                  │    event, history, task result)
//!                                  ▼
//!                          payments API / events polling / 3DS return
//! ```
//!
//! Module map:
//! - [`auth`]: provider signature schemes (pure; time passed in).
//! - [`mapping`]: body parsing, selectors, presets → [`domain::Candidate`]s (pure).
//! - [`domain`]: canonical statuses, the status rule (pure).

pub mod auth;
pub mod domain;
pub mod mapping;
