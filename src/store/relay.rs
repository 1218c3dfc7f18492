//! What the store keeps for the relay half: endpoints, deliveries and their
//! attempts, and the verbs' inputs and outcomes. Timing, signing and the
//! retry rule live in `crate::delivery`; the store applies what was decided.

use serde::{Deserialize, Serialize};

use super::records::EventRecord;

/// Where an endpoint is defined. Config endpoints are read-only through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointSource {
    Config,
    Api,
}

/// What an endpoint wants when a payment's deliveries queue up behind a
/// failing one: every change in order (`fifo`), or only the newest (`latest`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    #[default]
    Fifo,
    Latest,
}

/// A signing secret that still signs until `expires_at` (unix ms) after a rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub secret: String,
    pub expires_at: i64,
}

/// A merchant's webhook endpoint (`endpoints` tree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub id: String,
    pub merchant_id: String,
    pub url: String,
    /// Event-type patterns (`*`, `payment.*`, `payment.succeeded`).
    pub events: Vec<String>,
    pub description: Option<String>,
    pub ordering: Ordering,
    pub disabled: bool,
    /// Why it was disabled (e.g. the endpoint answered 410); None when enabled.
    pub disabled_reason: Option<String>,
    /// `whsec_…`: signs every notification.
    pub secret: String,
    /// The secret before the last rotation, still signing for 24 h.
    pub previous_secret: Option<PreviousSecret>,
    pub source: EndpointSource,
    pub created_at: i64,
    pub updated_at: i64,
}

impl EndpointRecord {
    /// The secrets that sign a notification sent at `now`: the current one,
    /// and the previous one while it has not expired.
    pub fn signing_secrets(&self, now: i64) -> Vec<&str> {
        let mut s = vec![self.secret.as_str()];
        if let Some(p) = &self.previous_secret {
            if now < p.expires_at {
                s.push(p.secret.as_str());
            }
        }
        s
    }
}

/// A change to an API endpoint (`PATCH`, `rotate-secret`, or a 410).
#[derive(Debug, Clone, Default)]
pub struct EndpointUpdate {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<Option<String>>,
    pub ordering: Option<Ordering>,
    /// Some(true) disables (with the reason), Some(false) enables.
    pub disabled: Option<(bool, Option<String>)>,
    /// A new secret; the current one keeps signing until the given time (unix ms).
    pub rotate: Option<(String, i64)>,
    pub now: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Succeeded,
    Dead,
    Superseded,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::Dead => "dead",
            DeliveryState::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        Some(match s {
            "pending" => DeliveryState::Pending,
            "succeeded" => DeliveryState::Succeeded,
            "dead" => DeliveryState::Dead,
            "superseded" => DeliveryState::Superseded,
            _ => return None,
        })
    }
}

/// One event to send to one endpoint (`deliveries` tree). Its id is derived
/// from (event, endpoint, replay round) ([`super::delivery_id`]), so an apply
/// replayed after a crash writes the same delivery, not a second one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub id: String,
    pub endpoint_id: String,
    pub merchant_id: String,
    pub payment_id: String,
    pub sequence: u64,
    /// The change it notifies of; its `event_id` is the `webhook-id`.
    pub event: EventRecord,
    pub state: DeliveryState,
    /// Attempts made, over its whole life.
    pub attempts: u32,
    /// `attempts` when its current run of the retry schedule began (a manual
    /// retry of a dead delivery starts a fresh run).
    pub retry_from: u32,
    /// Unix ms; set while pending (for a delivery waiting its turn: when it
    /// became due or will be).
    pub next_attempt_at: Option<i64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: i64,
    /// Its place in its (endpoint, payment) lane: deliveries go out in this order.
    pub lane_pos: u64,
}

/// One attempt at a delivery (`attempts` tree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub at: i64,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// The first 1 KiB of the response body (lossy UTF-8).
    pub response_body: String,
}

/// What an attempt decided for its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    /// Try again at this time (unix ms).
    Retry {
        at: i64,
    },
    Dead,
    /// The endpoint answered 410: disable it; the delivery stays pending and
    /// goes out when the endpoint is enabled again.
    Gone,
}

/// Result of one attempt, for [`super::Store::record_attempt`].
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub delivery_id: String,
    pub attempt: AttemptRecord,
    pub outcome: AttemptOutcome,
}

/// Filters of `GET /v1/deliveries`; `merchant_id` None = every merchant (admin).
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub merchant_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub state: Option<DeliveryState>,
    pub payment_id: Option<String>,
    pub limit: usize,
}

/// Outcome of [`super::Store::retry_delivery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retried {
    Queued(Box<DeliveryRecord>),
    NotFound,
    NotDead(DeliveryState),
}

/// Deliveries of one endpoint due now, and when its next one is due.
#[derive(Debug, Clone, Default)]
pub struct Due {
    pub deliveries: Vec<DeliveryRecord>,
    /// The earliest `next_attempt_at` (unix ms) among its due-index entries
    /// not returned, if any.
    pub next_at: Option<i64>,
}
