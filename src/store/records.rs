//! What the store keeps, one struct per tree value. Encoded with postcard
//! behind a one-byte format version, so a later layout can migrate.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::rule::{Outcome, PaymentState};
use crate::domain::Status;

/// An accepted IPN exactly as it arrived (`requests` tree, kept `retention.events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRequest {
    pub request_id: Uuid,
    pub provider: String,
    /// Unix milliseconds.
    pub received_at: i64,
    pub content_type: Option<String>,
    /// Lower-case names; credentials (`authorization`, `cookie`) are not kept.
    pub headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub peer: Option<String>,
    /// The dedupe key it was accepted under.
    pub event_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Processing,
    Completed,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub payment_id: String,
    pub status: Status,
    pub outcome: Outcome,
    /// Set for applied changes only.
    pub sequence: Option<u64>,
    /// `evt_…` of the applied change; none for duplicates and stale events.
    pub event_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    pub code: String,
    pub message: String,
}

/// The async task of one accepted IPN (`tasks` tree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub request_id: Uuid,
    pub provider: String,
    pub state: TaskState,
    /// Unix ms; results are visible `retention.task_results` from here.
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub events: Vec<TaskEvent>,
    pub error: Option<TaskError>,
    /// An error result is handed out once; after that the async API says unknown.
    pub error_read: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupeRecord {
    pub request_id: Uuid,
    pub seen_at: i64,
}

/// A request that failed authentication (`quarantine` tree, last 1000).
/// Bounded per request (SPEC §4): the body is kept as its length, its
/// SHA-256 and its first [`QuarantineRecord::BODY_HEAD`] bytes only, so
/// unauthenticated traffic cannot fill the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    pub provider: String,
    pub received_at: i64,
    pub reason: String,
    pub peer: Option<String>,
    /// Credentials (`authorization`, `cookie`, …) already dropped.
    pub headers: Vec<(String, String)>,
    /// The first `BODY_HEAD` bytes of the body. (First after `headers`, as
    /// the whole body was before: an old record then fails to decode as
    /// this layout instead of decoding as garbage.)
    #[serde(with = "serde_bytes")]
    pub body_head: Vec<u8>,
    /// Length of the whole body in bytes.
    pub body_len: u64,
    /// SHA-256 of the whole body, lower-case hex.
    pub body_sha256: String,
}

impl QuarantineRecord {
    /// How much of a rejected body is kept: 4 KiB.
    pub const BODY_HEAD: usize = 4096;

    /// A record of `body`, keeping only its head.
    pub fn new(
        provider: String,
        received_at: i64,
        reason: String,
        peer: Option<String>,
        headers: Vec<(String, String)>,
        body: &[u8],
    ) -> QuarantineRecord {
        use sha2::Digest;
        QuarantineRecord {
            provider,
            received_at,
            reason,
            peer,
            headers,
            body_head: body[..body.len().min(Self::BODY_HEAD)].to_vec(),
            body_len: body.len() as u64,
            body_sha256: hex::encode(sha2::Sha256::digest(body)),
        }
    }
}

/// The quarantine layout before bodies were cut to a head (whole body kept);
/// still read, so an upgraded store lists what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyQuarantineRecord {
    pub provider: String,
    pub received_at: i64,
    pub reason: String,
    pub peer: Option<String>,
    pub headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl From<LegacyQuarantineRecord> for QuarantineRecord {
    fn from(r: LegacyQuarantineRecord) -> QuarantineRecord {
        QuarantineRecord::new(
            r.provider,
            r.received_at,
            r.reason,
            r.peer,
            r.headers,
            &r.body,
        )
    }
}

/// A payment of one merchant: (merchant, payment_id) is its identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PaymentKey {
    pub merchant_id: String,
    pub payment_id: String,
}

impl PaymentKey {
    pub fn new(merchant_id: impl Into<String>, payment_id: impl Into<String>) -> Self {
        PaymentKey {
            merchant_id: merchant_id.into(),
            payment_id: payment_id.into(),
        }
    }
}

/// One payment (`payments` tree). Exists from registration or the first IPN.
/// Its history lives under its own keys, so the record stays small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub payment_id: String,
    pub merchant_id: String,
    pub provider: Option<String>,
    /// None until an IPN was applied (registered only).
    pub state: Option<PaymentState>,
    /// Registered through `POST /v1/payments` (not only seen in an IPN).
    pub registered: bool,
    pub registered_site_url: Option<String>,
    pub ipn_site_url: Option<String>,
    /// Merchant metadata from registration, as JSON text.
    pub metadata: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// History entries recorded so far; a plan names the version it was
    /// decided on, and the store refuses it if the payment moved since.
    pub version: u64,
}

impl PaymentRecord {
    pub fn key(&self) -> PaymentKey {
        PaymentKey::new(&self.merchant_id, &self.payment_id)
    }
}

/// One request item as it was applied to a payment (or recorded as
/// duplicate / stale).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Its place in the payment's history: the payment's version before it.
    pub version: u64,
    pub sequence: Option<u64>,
    pub status: Status,
    pub outcome: Outcome,
    pub occurred_at: Option<i64>,
    pub received_at: i64,
    pub request_id: Uuid,
    pub event_id: Option<String>,
    pub provider_event_id: Option<String>,
}

/// One applied change: what merchants are notified of and can poll (`events`).
/// Its `event_id` is derived from the request and the item (see
/// [`super::event_id`]), so a replay after a crash names it the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub event_id: String,
    pub payment_id: String,
    pub merchant_id: String,
    pub provider: String,
    pub status: Status,
    pub previous_status: Option<Status>,
    pub sequence: u64,
    pub authorization_id: Option<String>,
    pub charge_id: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub occurred_at: Option<i64>,
    pub created_at: i64,
    pub provider_event_id: Option<String>,
    pub request_id: Uuid,
}
