//! From ready requests to [`Plan`]s: resolve each event's merchant (SPEC
//! §3), read the payment, run the pure status rule, and say what to write.
//! The store applies the plans; it refuses one decided on a payment that
//! moved meanwhile, and the caller decides that one again.

use std::collections::{HashMap, HashSet};

use super::schedule::Pending;
use super::task_error;
use crate::config::{ProviderSettings, Settings};
use crate::domain::rule::decide;
use crate::domain::Candidate;
use crate::mapping::item_key;
use crate::store::{
    event_id, EventRecord, HistoryEntry, PaymentChange, PaymentKey, PaymentRecord, Plan,
    RawRequest, Store, StoreError, TaskError, TaskEvent,
};

/// Payments read or changed by the plans of one batch, so that a later
/// request of the batch sees what an earlier one will have written.
#[derive(Default)]
pub struct Seen {
    payments: HashMap<PaymentKey, Option<PaymentRecord>>,
}

impl Seen {
    async fn get(
        &mut self,
        store: &dyn Store,
        key: &PaymentKey,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        if let Some(r) = self.payments.get(key) {
            return Ok(r.clone());
        }
        let r = store.payment(key).await?;
        self.payments.insert(key.clone(), r.clone());
        Ok(r)
    }
}

/// The merchant an event of `provider` belongs to (SPEC §3):
/// 1. the mapped `merchant_id`, which must be one the provider serves;
/// 2. else the one merchant among the provider's whose payment of this id
///    moved on this provider's IPNs; else the one that has it registered
///    (naming this provider or none) or moved (two: `ambiguous_payment`);
/// 3. else the provider's `merchant_id`.
pub async fn resolve_merchant(
    store: &dyn Store,
    seen: &mut Seen,
    provider: &ProviderSettings,
    c: &Candidate,
) -> Result<Result<String, TaskError>, StoreError> {
    if let Some(m) = &c.merchant_id {
        if provider.serves(m) {
            return Ok(Ok(m.clone()));
        }
        return Ok(Err(task_error(
            "merchant_not_allowed",
            format!(
                "payment {:?}: provider {:?} does not report for merchant {m:?}",
                c.payment_id, provider.id
            ),
        )));
    }
    let mut known = Vec::new();
    // Merchants whose payment already moved on this provider's IPNs: a
    // follow-up IPN goes where the earlier ones went, whatever another
    // merchant registered later in its own namespace (else any merchant of
    // the provider could stall another's payment by registering its id).
    let mut moved = Vec::new();
    for m in &provider.merchants {
        let key = PaymentKey::new(m, &c.payment_id);
        if let Some(r) = seen.get(store, &key).await? {
            let ours = r.provider.as_deref().is_none_or(|p| p == provider.id);
            if ours && (r.registered || r.state.is_some()) {
                known.push(m.clone());
            }
            if ours && r.state.is_some() {
                moved.push(m.clone());
            }
        }
    }
    if moved.len() == 1 {
        return Ok(Ok(moved.remove(0)));
    }
    match known.len() {
        1 => return Ok(Ok(known.remove(0))),
        0 => {}
        _ => {
            return Ok(Err(task_error(
                "ambiguous_payment",
                format!(
                    "payment {:?} is registered by several merchants of provider {:?} ({}) and the IPN names none",
                    c.payment_id,
                    provider.id,
                    known.join(", ")
                ),
            )))
        }
    }
    Ok(match &provider.merchant_id {
        Some(m) => Ok(m.clone()),
        None => Err(task_error(
            "unknown_merchant",
            format!(
                "payment {:?} is not registered, the IPN names no merchant and provider {:?} has no merchant_id",
                c.payment_id, provider.id
            ),
        )),
    })
}

/// The items of a request to plan, each with its place in the request (its
/// event id derives from it). A batch's item that another request brought
/// first (a provider's replay, or a captured item re-batched with unsigned
/// fields edited), or that repeats an earlier item of the batch, is skipped
/// as a duplicate IPN is: it yields nothing. A request of one item is its
/// own dedupe key, so it needs no lookup.
async fn fresh_items<'c>(
    store: &dyn Store,
    req: &RawRequest,
    candidates: &'c [Candidate],
    now: i64,
    window_ms: i64,
) -> Result<Vec<(usize, &'c Candidate)>, StoreError> {
    let mut out = Vec::with_capacity(candidates.len());
    let mut ids = HashSet::new();
    for (idx, c) in candidates.iter().enumerate() {
        if let Some(id) = c.provider_event_id.as_deref() {
            if req.event_key.strip_prefix("id:") != Some(id) {
                if !ids.insert(id) {
                    continue;
                }
                let owner = store
                    .event_owner(&req.provider, &item_key(id), now, window_ms)
                    .await?;
                if owner.is_some_and(|o| o != req.request_id) {
                    tracing::info!(request_id = %req.request_id, provider_event_id = id,
                        "batch item already seen in another request: skipped");
                    continue;
                }
            }
        }
        out.push((idx, c));
    }
    Ok(out)
}

/// The plan for one ready request.
pub async fn plan_one(
    store: &dyn Store,
    settings: &Settings,
    seen: &mut Seen,
    p: &Pending,
    now: i64,
) -> Result<Plan, StoreError> {
    let req = &p.work.request;
    let fail = |error: TaskError| Plan::Fail {
        work: p.work.id,
        request: req.clone(),
        error,
        now,
    };
    let candidates = match &p.prepared {
        Ok(c) => c,
        Err(e) => return Ok(fail(e.clone())),
    };
    let Some(provider) = settings.provider(&req.provider) else {
        return Ok(fail(task_error(
            "unknown_provider",
            format!("provider {:?} is no longer configured", req.provider),
        )));
    };
    let window = settings.retention.dedupe_window.as_millis() as i64;
    let candidates = fresh_items(store, req, candidates, now, window).await?;
    // Every merchant first, so a refusal leaves nothing behind.
    let mut keys = Vec::with_capacity(candidates.len());
    for (_, c) in &candidates {
        match resolve_merchant(store, seen, provider, c).await? {
            Ok(m) => keys.push(PaymentKey::new(m, &c.payment_id)),
            Err(e) => return Ok(fail(e)),
        }
    }
    let mut changes = Vec::with_capacity(candidates.len());
    let mut events = Vec::with_capacity(candidates.len());
    for ((idx, c), key) in candidates.into_iter().zip(keys) {
        let current = seen.get(store, &key).await?;
        let base_version = current.as_ref().map_or(0, |r| r.version);
        let decision = decide(current.as_ref().and_then(|r| r.state.as_ref()), c);
        let event = decision.next.as_ref().map(|next| EventRecord {
            event_id: event_id(req.request_id, idx, req.received_at),
            payment_id: c.payment_id.clone(),
            merchant_id: key.merchant_id.clone(),
            provider: req.provider.clone(),
            status: next.status,
            previous_status: decision.previous_status,
            sequence: next.sequence,
            authorization_id: next.authorization_id.clone(),
            charge_id: next.charge_id.clone(),
            amount: next.amount,
            currency: next.currency.clone(),
            occurred_at: c.occurred_at,
            created_at: now,
            provider_event_id: c.provider_event_id.clone(),
            request_id: req.request_id,
        });
        let history = HistoryEntry {
            version: base_version,
            sequence: decision.next.as_ref().map(|n| n.sequence),
            status: c.status,
            outcome: decision.outcome,
            occurred_at: c.occurred_at,
            received_at: req.received_at,
            request_id: req.request_id,
            event_id: event.as_ref().map(|e| e.event_id.clone()),
            provider_event_id: c.provider_event_id.clone(),
        };
        events.push(TaskEvent {
            payment_id: c.payment_id.clone(),
            status: c.status,
            outcome: decision.outcome,
            sequence: history.sequence,
            event_id: history.event_id.clone(),
        });
        // What the store will hold after this change, for later ones.
        let mut next = current.unwrap_or_else(|| PaymentRecord {
            payment_id: key.payment_id.clone(),
            merchant_id: key.merchant_id.clone(),
            provider: Some(req.provider.clone()),
            state: None,
            registered: false,
            registered_site_url: None,
            ipn_site_url: None,
            metadata: None,
            created_at: now,
            updated_at: now,
            version: 0,
        });
        if let Some(s) = &decision.next {
            next.state = Some(s.clone());
            next.provider.get_or_insert_with(|| req.provider.clone());
        }
        next.version += 1;
        seen.payments.insert(key.clone(), Some(next));
        changes.push(PaymentChange {
            key,
            base_version,
            provider: req.provider.clone(),
            state: decision.next,
            ipn_site_url: c.merchant_site_url.clone(),
            history,
            event,
            now,
        });
    }
    Ok(Plan::Complete {
        work: p.work.id,
        request: req.clone(),
        events,
        changes,
        now,
    })
}
