//! Reads: straight from the trees, without a lock. A round being written
//! may be seen half-way for the moment it takes (what that can look like:
//! [`super::commit`]); a crash never leaves one half-way.

use super::*;

pub(super) fn payment(t: &Trees, key: &PaymentKey) -> Result<Option<PaymentRecord>, StoreError> {
    t.payments
        .get(payment_key(key))?
        .map(|b| dec(&b))
        .transpose()
}

pub(super) fn history(
    t: &Trees,
    key: &PaymentKey,
    limit: usize,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let mut prefix = payment_key(key);
    prefix.push(0);
    let mut out: Vec<HistoryEntry> = t
        .history
        .scan_prefix(&prefix)
        .values()
        .rev()
        .take(limit)
        .map(|v| dec(&v?))
        .collect::<Result<_, _>>()?;
    out.reverse();
    Ok(out)
}

/// Events of a merchant after `after`, with their feed positions (committed,
/// not necessarily durable yet: the caller waits for those).
pub(super) fn events(
    t: &Trees,
    merchant_id: &str,
    payment_id: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Result<Result<Vec<(u64, EventRecord)>, UnknownCursor>, StoreError> {
    let prefix = joined(merchant_id, &[]);
    let start = match after {
        None => prefix.clone(),
        Some(a) => {
            let Some(ulid) = event_ulid(a) else {
                return Ok(Err(UnknownCursor));
            };
            let Some(pos) = t.event_ids.get(ulid)? else {
                return Ok(Err(UnknownCursor));
            };
            let pos = u64_key(&pos)?;
            // The cursor must be one of this merchant's events.
            let Some(v) = t.events.get(joined(merchant_id, &pos.to_be_bytes()))? else {
                return Ok(Err(UnknownCursor));
            };
            let ev: EventRecord = dec(&v)?;
            if ev.event_id != a {
                return Ok(Err(UnknownCursor));
            }
            match pos.checked_add(1) {
                Some(next) => joined(merchant_id, &next.to_be_bytes()),
                None => return Ok(Ok(Vec::new())),
            }
        }
    };
    let mut out = Vec::new();
    for r in t.events.range(start..) {
        let (k, v) = r?;
        if !k.starts_with(&prefix) || out.len() >= limit {
            break;
        }
        let ev: EventRecord = dec(&v)?;
        if payment_id.is_none_or(|p| p == ev.payment_id) {
            out.push((u64_key(&k)?, ev));
        }
    }
    Ok(Ok(out))
}

pub(super) fn request(t: &Trees, id: Uuid) -> Result<Option<RawRequest>, StoreError> {
    t.requests.get(id.as_bytes())?.map(|b| dec(&b)).transpose()
}

pub(super) fn event_owner(
    t: &Trees,
    provider: &str,
    event_key: &str,
    now: i64,
    window_ms: i64,
) -> Result<Option<Uuid>, StoreError> {
    let Some(b) = t.dedupe.get(joined(provider, event_key.as_bytes()))? else {
        return Ok(None);
    };
    let d: DedupeRecord = dec(&b)?;
    let live = now.saturating_sub(d.seen_at) < window_ms
        && t.requests.contains_key(d.request_id.as_bytes())?;
    Ok(live.then_some(d.request_id))
}

pub(super) fn task(t: &Trees, id: Uuid) -> Result<Option<TaskRecord>, StoreError> {
    if let Some(b) = t.tasks.get(id.as_bytes())? {
        return Ok(Some(dec(&b)?));
    }
    Ok(request(t, id)?.map(|r| processing_task(&r)))
}

pub(super) fn tasks(
    t: &Trees,
    state: Option<TaskState>,
    provider: Option<&str>,
    limit: usize,
) -> Result<Vec<TaskRecord>, StoreError> {
    let wanted = |t: &TaskRecord| {
        state.is_none_or(|s| s == t.state) && provider.is_none_or(|p| p == t.provider)
    };
    let mut out = Vec::new();
    // Every processing task has its inbox entry (accept and reprocess write
    // both at once), so those come from the inbox, newest first, without
    // reading every task ever kept.
    if state.is_none_or(|s| s == TaskState::Processing) {
        for e in inbox::newest_first(t) {
            let (_, id) = e?;
            if let Some(task) = task(t, id)? {
                if wanted(&task) {
                    out.push(task);
                }
            }
            if state.is_some() && out.len() >= limit {
                break;
            }
        }
    }
    if state != Some(TaskState::Processing) {
        for r in t.tasks.iter() {
            let task: TaskRecord = dec(&r?.1)?;
            // Processing ones came from the inbox above.
            if task.state != TaskState::Processing && wanted(&task) {
                out.push(task);
            }
        }
    }
    // A request applied between the two scans shows up in both: keep the
    // later read (the ended task).
    let mut seen = std::collections::HashSet::new();
    out.reverse();
    out.retain(|t| seen.insert(t.request_id));
    out.sort_by_key(|t| std::cmp::Reverse(t.created_at));
    out.truncate(limit);
    Ok(out)
}

pub(super) fn quarantined(t: &Trees, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError> {
    t.quarantine
        .iter()
        .values()
        .rev()
        .take(limit)
        .map(|v| dec_quarantine(&v?))
        .collect()
}
