//! The status rule (SPEC §3): how one candidate event changes a payment's
//! state. Pure; the processor applies it in arrival order (or in
//! [`reorder_key`] order inside a reorder window).
//!
//! The invariant it protects: a merchant never sees a payment go backwards.
//! Rank only rises, except for a *new attempt* (a different authorization or
//! charge) after a failed, canceled or expired one.

use super::{Candidate, Status};

/// What the relay knows about one payment after the last applied event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PaymentState {
    pub status: Status,
    /// Per-payment sequence of applied changes: 1, 2, 3 … without gaps.
    pub sequence: u64,
    pub authorization_id: Option<String>,
    pub charge_id: Option<String>,
    /// Unix milliseconds.
    pub occurred_at: Option<i64>,
    /// Integer minor units.
    pub amount: Option<i64>,
    pub currency: Option<String>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A real change: new state, relayed to merchants.
    Applied,
    /// Same status and transaction as now: recorded, not relayed.
    Duplicate,
    /// Would move the payment backwards (or sideways): recorded, not relayed.
    Stale,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// The payment's status before this event (`None` for a new payment).
    pub previous_status: Option<Status>,
    /// The new state; `Some` iff `outcome == Applied`.
    pub next: Option<PaymentState>,
}

/// Decide what `ev` does to a payment currently in `current`.
pub fn decide(current: Option<&PaymentState>, ev: &Candidate) -> Decision {
    let Some(cur) = current else {
        return applied(None, PaymentState::first(ev));
    };
    let previous_status = Some(cur.status);
    if ev.status == cur.status && same_transaction(cur, ev) {
        return Decision {
            outcome: Outcome::Duplicate,
            previous_status,
            next: None,
        };
    }
    if ev.status.rank() > cur.status.rank() {
        return applied(previous_status, cur.merged(ev));
    }
    if is_new_attempt(cur, ev) {
        return applied(previous_status, cur.new_attempt(ev));
    }
    Decision {
        outcome: Outcome::Stale,
        previous_status,
        next: None,
    }
}

/// Sort key for events of one payment batched by a reorder window:
/// `(occurred_at, rank)`, unknown `occurred_at` last. Use a stable sort so
/// ties keep arrival order (see [`reorder`]).
pub fn reorder_key(ev: &Candidate) -> (i64, u8) {
    (ev.occurred_at.unwrap_or(i64::MAX), ev.status.rank())
}

/// Stable-sort a batch of one payment's events by [`reorder_key`].
pub fn reorder(events: &mut [Candidate]) {
    events.sort_by_key(reorder_key);
}

impl PaymentState {
    /// The state of a payment whose first event is `ev`.
    pub fn first(ev: &Candidate) -> PaymentState {
        PaymentState {
            status: ev.status,
            sequence: 1,
            authorization_id: ev.authorization_id.clone(),
            charge_id: ev.charge_id.clone(),
            occurred_at: ev.occurred_at,
            amount: ev.amount,
            currency: ev.currency.clone(),
        }
    }

    /// Same transaction, rank rises: the event's values win where present.
    fn merged(&self, ev: &Candidate) -> PaymentState {
        PaymentState {
            status: ev.status,
            // Saturating: a payment will never see 2^64 changes, and decide must not panic.
            sequence: self.sequence.saturating_add(1),
            authorization_id: ev
                .authorization_id
                .clone()
                .or_else(|| self.authorization_id.clone()),
            charge_id: ev.charge_id.clone().or_else(|| self.charge_id.clone()),
            occurred_at: ev.occurred_at.or(self.occurred_at),
            amount: ev.amount.or(self.amount),
            currency: ev.currency.clone().or_else(|| self.currency.clone()),
        }
    }

    /// A new attempt: the old attempt's ids must not leak into the new one.
    fn new_attempt(&self, ev: &Candidate) -> PaymentState {
        PaymentState {
            authorization_id: ev.authorization_id.clone(),
            charge_id: ev.charge_id.clone(),
            ..self.merged(ev)
        }
    }
}

fn applied(previous_status: Option<Status>, next: PaymentState) -> Decision {
    Decision {
        outcome: Outcome::Applied,
        previous_status,
        next: Some(next),
    }
}

/// Ids known on both sides agree; a `None` on either side does not conflict.
fn same_transaction(cur: &PaymentState, ev: &Candidate) -> bool {
    fn agree(a: &Option<String>, b: &Option<String>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
    agree(&cur.authorization_id, &ev.authorization_id) && agree(&cur.charge_id, &ev.charge_id)
}

/// The event carries an id for a field that differs from the state's value
/// (a state `None` counting as different).
fn names_different_transaction(cur: &PaymentState, ev: &Candidate) -> bool {
    fn differs(state: &Option<String>, event: &Option<String>) -> bool {
        event.is_some() && event != state
    }
    differs(&cur.authorization_id, &ev.authorization_id) || differs(&cur.charge_id, &ev.charge_id)
}

fn is_new_attempt(cur: &PaymentState, ev: &Candidate) -> bool {
    let not_earlier = match (cur.occurred_at, ev.occurred_at) {
        (Some(then), Some(now)) => now >= then,
        _ => true,
    };
    cur.status.is_unsuccessful_end() && names_different_transaction(cur, ev) && not_earlier
}

#[cfg(test)]
mod tests;
