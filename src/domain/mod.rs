//! The canonical payment model: statuses with their rank, candidate events
//! produced by mapping, and the pure status rule that turns them into state.

pub mod rule;
mod status;

pub use rule::{decide, reorder, reorder_key, Decision, Outcome, PaymentState};
pub use status::{Status, UnknownStatus};

/// One provider event, mapped but not yet applied: a candidate change for one
/// payment. Produced by [`crate::mapping`], consumed by the status rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    /// The provider's own id for this event (mapped `event_id`), if any.
    pub provider_event_id: Option<String>,
    pub payment_id: String,
    pub status: Status,
    /// Unix milliseconds, when the provider says the change happened.
    pub occurred_at: Option<i64>,
    pub merchant_id: Option<String>,
    pub authorization_id: Option<String>,
    pub charge_id: Option<String>,
    /// Integer minor units.
    pub amount: Option<i64>,
    /// ISO 4217, upper case.
    pub currency: Option<String>,
    pub merchant_site_url: Option<String>,
}
