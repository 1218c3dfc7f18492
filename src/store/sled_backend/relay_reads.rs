//! The relay's reads: endpoints, the due index, deliveries and attempts,
//! and the events a replay picks.

use super::relay_ops::{delivery_ulid, endpoint_key, endpoint_prefix};
use super::*;

pub(super) fn endpoint(
    t: &Trees,
    merchant: &str,
    id: &str,
) -> Result<Option<EndpointRecord>, StoreError> {
    t.endpoints
        .get(endpoint_key(merchant, id))?
        .map(|v| dec(&v))
        .transpose()
}

pub(super) fn endpoints(
    t: &Trees,
    merchant: Option<&str>,
) -> Result<Vec<EndpointRecord>, StoreError> {
    let prefix = merchant.map(|m| joined(m, &[])).unwrap_or_default();
    let mut out: Vec<EndpointRecord> = t
        .endpoints
        .scan_prefix(prefix)
        .values()
        .map(|v| dec(&v?))
        .collect::<Result<_, _>>()?;
    out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(out)
}

pub(super) fn due(
    t: &Trees,
    merchant: &str,
    endpoint: &str,
    now: i64,
    limit: usize,
    skip: &[String],
) -> Result<Due, StoreError> {
    let prefix = endpoint_prefix(merchant, endpoint);
    let mut out = Due::default();
    for kv in t.due.scan_prefix(&prefix) {
        let (k, _) = kv?;
        let rest = &k[prefix.len()..];
        if rest.len() != 24 {
            return Err(StoreError::Codec("due key".into()));
        }
        let at = u64_key(&rest[..8])? as i64;
        let ulid = &rest[8..];
        let id = format!(
            "dlv_{}",
            ulid::Ulid(u128::from_be_bytes(
                ulid.try_into()
                    .map_err(|_| StoreError::Codec("due key".into()))?
            ))
        );
        if skip.contains(&id) {
            continue;
        }
        if at > now || out.deliveries.len() >= limit {
            out.next_at = Some(at);
            break;
        }
        if let Some(v) = t.deliveries.get(ulid)? {
            out.deliveries.push(dec(&v)?);
        }
    }
    Ok(out)
}

pub(super) fn deliveries(t: &Trees, f: &DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError> {
    let rest = |d: &DeliveryRecord| {
        f.endpoint_id.as_ref().is_none_or(|e| *e == d.endpoint_id)
            && f.payment_id.as_ref().is_none_or(|p| *p == d.payment_id)
            && f.state.is_none_or(|s| s == d.state)
    };
    // A merchant's listing reads its own deliveries only.
    if let Some(m) = &f.merchant_id {
        return super::by_merchant::deliveries(t, m, f.limit, rest);
    }
    let mut out = Vec::new();
    for v in t.deliveries.iter().values().rev() {
        let d: DeliveryRecord = dec(&v?)?;
        if rest(&d) {
            out.push(d);
            if out.len() >= f.limit {
                break;
            }
        }
    }
    Ok(out)
}

pub(super) fn delivery(
    t: &Trees,
    id: &str,
) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>, StoreError> {
    let Ok(ulid) = delivery_ulid(id) else {
        return Ok(None);
    };
    let Some(v) = t.deliveries.get(ulid)? else {
        return Ok(None);
    };
    let d: DeliveryRecord = dec(&v)?;
    let attempts = t
        .attempts
        .scan_prefix(ulid)
        .values()
        .map(|v| dec(&v?))
        .collect::<Result<_, _>>()?;
    Ok(Some((d, attempts)))
}

/// The feed keys of the merchant's events created in `[since, until]` whose
/// type `patterns` take, in feed order; None when more than `limit` match.
pub(super) fn replay_picks(
    t: &Trees,
    merchant: &str,
    patterns: &[String],
    (since, until): (i64, i64),
    limit: usize,
) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
    let mut out = Vec::new();
    for kv in t.events.scan_prefix(joined(merchant, &[])) {
        let (k, v) = kv?;
        let ev: EventRecord = dec(&v)?;
        if ev.created_at < since
            || ev.created_at > until
            || !crate::delivery::patterns::matches(
                patterns,
                &crate::delivery::patterns::event_type(ev.status),
            )
        {
            continue;
        }
        if out.len() == limit {
            return Ok(None);
        }
        out.push(k.to_vec());
    }
    Ok(Some(out))
}
