//! ipn-relay: verify, store, order and relay payment-provider IPNs.
//!
//! ```text
//! provider ─POST /v1/ipn/{p}─▶ ingress: checks ─▶ store.accept: one atomic write
//!                                  │              (dedupe, request, inbox) + fsync ─▶ 202 ack
//!                                  │ store.next_work (arrival order)
//!                                  ▼
//!                  processor: map → schedule (per-payment order) → status rule
//!                                  │   store.apply(plans): one atomic write per batch
//!                                  │   (payment state, history, events, deliveries,
//!                                  │    task results, inbox removal)
//!                                  ▼
//!                          payments API / events polling / 3DS return
//!                                  │
//!                  dispatcher: due lane heads per endpoint → signed POST
//!                                  │   store.record_attempt: one atomic write
//!                                  ▼
//!                          merchant endpoints
//! ```
//!
//! Module map:
//! - [`auth`]: provider signature schemes (pure; time passed in).
//! - [`mapping`]: body parsing, selectors, presets → [`domain::Candidate`]s (pure).
//! - [`domain`]: canonical statuses, the status rule (pure).
//! - [`returns`]: the 3DS return URL (pure).
//! - [`samples`]: realistic signed sample IPNs per preset (pure).
//! - [`trigger`]: `ipn-relay trigger` (post a sample, poll its task) and
//!   `ipn-relay backup` (ask the running service for an online backup).
//! - [`config`]: typed, validated settings; secrets redacted.
//! - [`clock`]: "now" as an input (system clock, or a test's manual clock).
//! - [`store`]: the `Store` interface (domain verbs, one atomic write each) and
//!   its sled backend, the only code that knows sled.
//! - [`processor`]: accepted work → plans → applied state, per-payment order.
//! - [`delivery`]: patterns, retry timing, signing (pure), the SSRF guard and
//!   the dispatcher: applied changes → merchant endpoints.
//! - [`http`]: thin actix handlers and the one error shape.
//! - [`metrics`]: the Prometheus recorder and the metric names (`GET /metrics`).
//! - [`telemetry`]: the log subscriber (pretty or flat JSON).
//! - [`app`]: builds store + workers + server on a listener (main and tests).

pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod http;
pub mod mapping;
pub mod metrics;
pub mod processor;
pub mod returns;
pub mod samples;
pub mod store;
pub mod telemetry;
pub mod trigger;
