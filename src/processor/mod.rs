//! Inbox → applied state.
//!
//! The loop ([`run`]) takes accepted requests from the store in arrival
//! order, maps each one (pure: [`prepare`]), lets the [`schedule`] say which
//! may apply now (per-payment order, reorder windows), decides each event
//! with the pure status rule ([`plan`]), and hands the store one batch of
//! plans, which it applies in one atomic write. Nothing here is kept across
//! a restart: the store hands out again whatever was not applied.

pub mod plan;
pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::{Candidate, Outcome};
use crate::store::{Applied, Plan, RawRequest, Store, StoreError, TaskError, Work};
use plan::{plan_one, Seen};
use schedule::{Pending, Schedule};

/// What the loop needs besides the store and the settings.
#[derive(Clone)]
pub struct Context {
    pub clock: Arc<dyn Clock>,
    /// Bumped after every applied batch (held 3DS returns wait on it).
    pub applied: Arc<tokio::sync::watch::Sender<u64>>,
}

pub(crate) fn task_error(code: &str, message: impl Into<String>) -> TaskError {
    TaskError {
        code: code.to_string(),
        message: message.into(),
    }
}

/// Map a stored request to candidate events (pure).
///
/// `doc`: the body as the ingest already parsed it, if at hand.
pub fn prepare(
    settings: &Settings,
    req: &RawRequest,
    doc: Option<&serde_json::Value>,
) -> Result<Vec<Candidate>, TaskError> {
    let provider = settings.provider(&req.provider).ok_or_else(|| {
        task_error(
            "unknown_provider",
            format!("provider {:?} is no longer configured", req.provider),
        )
    })?;
    let candidates = match doc {
        Some(doc) => provider.mapping.extract(&req.headers, doc),
        None => provider
            .mapping
            .map_request(&req.headers, req.content_type.as_deref(), &req.body),
    }
    .map_err(|e| task_error(e.code(), e.to_string()))?;
    for c in &candidates {
        let ok = !c.payment_id.is_empty()
            && c.payment_id.len() <= 200
            && !c.payment_id.chars().any(char::is_control);
        if !ok {
            return Err(task_error(
                "invalid_payment_id",
                "payment_id must be 1-200 characters without control characters",
            ));
        }
    }
    Ok(candidates)
}

/// Requests the loop takes from the store at once, and most it keeps
/// waiting in the schedule (the rest waits in the store).
const PAGE: usize = 256;
const MAX_WAITING: usize = 2048;
/// Most requests planned and applied in one store write. Under steady load
/// a batch is what arrived during the last apply (tens); only a backlog
/// (after the acks-first hold, or a burst) fills it. Large enough that a
/// backlog drains while acks go on: with 32, one apply per writer round
/// could not outpace a saturating ingest, and the backlog of a 30 s
/// saturating run took 10–15 s to drain after it (README, Performance).
const BATCH: usize = 256;

/// The processor loop, until `shutdown`.
pub async fn run(
    store: Arc<dyn Store>,
    settings: Arc<Settings>,
    cx: Context,
    shutdown: CancellationToken,
) {
    let mut sched = Schedule::default();
    let mut more_ready = false;
    let now_ms = || cx.clock.now_ms();
    loop {
        let now = now_ms();
        let wait = if more_ready {
            Duration::ZERO
        } else {
            match sched.next_deadline() {
                Some(d) => Duration::from_millis(d.saturating_sub(now).clamp(0, 1000) as u64),
                None => Duration::from_secs(1),
            }
        };
        if sched.len() < MAX_WAITING {
            let work = tokio::select! {
                _ = shutdown.cancelled() => break,
                w = store.next_work(PAGE, wait) => w,
            };
            match work {
                Ok(work) => {
                    for w in work {
                        sched.push(pending(&settings, w));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the inbox; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        } else if !more_ready {
            tokio::time::sleep(wait).await;
        }
        let ready = sched.take_ready(now_ms(), BATCH);
        more_ready = ready.len() >= BATCH;
        if ready.is_empty() {
            continue;
        }
        let oldest = ready.iter().map(|p| p.work.request.received_at).min();
        if !yield_to_acks(&*store, &*cx.clock, oldest.unwrap_or(0), &shutdown).await {
            break;
        }
        // Test-only: a worker that dies (see `tests/api/workers.rs`).
        fail::fail_point!("processor::apply");
        if !apply_ready(&*store, &settings, &*cx.clock, ready, &shutdown).await {
            break;
        }
        cx.applied.send_modify(|n| *n = n.wrapping_add(1));
    }
}

fn pending(settings: &Settings, w: Work) -> Pending {
    let window_ms = settings
        .provider(&w.request.provider)
        .map_or(0, |p| p.reorder_window.as_millis() as i64);
    let prepared = prepare(settings, &w.request, w.doc.as_deref());
    Pending::new(w, prepared, window_ms)
}

/// Plan and apply ready requests, in order, deciding again any the store
/// refused as stale. Store errors are retried with backoff (nothing of a
/// failed write is kept, and the work stays in the store's inbox). False
/// when shutting down first.
async fn apply_ready(
    store: &dyn Store,
    settings: &Settings,
    clock: &dyn Clock,
    mut ready: Vec<Pending>,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Duration::from_millis(50);
    while !ready.is_empty() {
        let now = clock.now_ms();
        let attempt = async {
            let mut seen = Seen::default();
            let mut plans = Vec::with_capacity(ready.len());
            for p in &ready {
                plans.push(plan_one(store, settings, &mut seen, p, now).await?);
            }
            let summary: Vec<_> = plans
                .iter()
                .zip(&ready)
                .map(|(plan, p)| summary(plan, &p.work.request.provider))
                .collect();
            let results = store.apply(plans).await?;
            Ok::<_, StoreError>((results, summary))
        };
        match attempt.await {
            Ok((results, summary)) => {
                let mut again = Vec::new();
                for ((p, r), s) in ready.into_iter().zip(results).zip(summary) {
                    match r {
                        Applied::Conflict => again.push(p),
                        Applied::Done => log_done(p.work.request.request_id, s),
                        Applied::AlreadyDone => {}
                    }
                }
                ready = again;
            }
            Err(e) => {
                tracing::error!(error = %e, "applying IPNs failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    true
}

/// What a plan did, for its log line and the metrics: the provider and
/// the (payment, outcome) of each event, or the task's error.
struct Summary {
    provider: String,
    result: Result<Vec<(String, Outcome)>, TaskError>,
}

fn summary(p: &Plan, provider: &str) -> Summary {
    let result = match p {
        Plan::Complete { events, .. } => Ok(events
            .iter()
            .map(|e| (e.payment_id.clone(), e.outcome))
            .collect()),
        Plan::Fail { error, .. } => Err(error.clone()),
    };
    Summary {
        provider: provider.to_string(),
        result,
    }
}

/// The applied line (one per request) and its counts.
fn log_done(request_id: Uuid, s: Summary) {
    match s.result {
        Err(e) => {
            crate::metrics::task("error");
            tracing::warn!(%request_id, provider = %s.provider, code = %e.code, message = %e.message, "IPN task ended in error")
        }
        Ok(events) => {
            crate::metrics::task("completed");
            for (_, o) in &events {
                crate::metrics::event(*o);
            }
            let payment_id = events
                .iter()
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>()
                .join(",");
            let outcomes = events
                .iter()
                .map(|(_, o)| crate::metrics::outcome_label(*o))
                .collect::<Vec<_>>()
                .join(",");
            tracing::info!(%request_id, provider = %s.provider, %payment_id, events = events.len(), %outcomes, "IPN applied")
        }
    }
}

/// How long processing may hold back for acknowledgements (see `yield_to_acks`).
const ACKS_FIRST_LIMIT: Duration = Duration::from_secs(10);

/// Below this many requests waiting to be applied, processing keeps up and
/// never holds back (steady load is applied, and relayed, at once).
const HOLD_BACKLOG: usize = 512;

/// Acks first: when processing has fallen behind (at least `HOLD_BACKLOG`
/// requests in the store's inbox, [`Store::backlog`]: a burst) and IPN
/// acknowledgements wait for their flush, hold this job back, until it is
/// `ACKS_FIRST_LIMIT` old. A saturating
/// burst of up to that long is acknowledged at the rate of ingest alone and
/// applied right after it; a longer one settles at the rate both share.
/// Processing is replayable and its lag is seconds; a provider that waits
/// for its ack retries and adds load. False when shutting down.
async fn yield_to_acks(
    store: &dyn Store,
    clock: &dyn Clock,
    received_at: i64,
    shutdown: &CancellationToken,
) -> bool {
    // The store's count, not this loop's: with batches as large as a page,
    // what waits here stays under `HOLD_BACKLOG` however far behind the
    // inbox is.
    while hold_for_acks(
        store.acks_waiting(),
        store.backlog() as usize,
        received_at,
        clock.now_ms(),
    ) {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
    }
    true
}

/// The acks-first rule (pure): hold a job received at `received_at` back now?
fn hold_for_acks(acks_waiting: bool, backlog: usize, received_at: i64, now: i64) -> bool {
    let age = now.saturating_sub(received_at);
    acks_waiting
        && backlog >= HOLD_BACKLOG
        && (0..ACKS_FIRST_LIMIT.as_millis() as i64).contains(&age)
}

/// Retention loop: purge what is past `retention.*` every few minutes.
/// How often the janitor runs: a tenth of the shortest retention age,
/// between 1 s and 5 min.
pub fn janitor_every(settings: &Settings) -> Duration {
    let shortest = settings
        .retention
        .dedupe_window
        .min(settings.retention.events);
    (shortest / 10).clamp(Duration::from_secs(1), Duration::from_secs(300))
}

pub async fn janitor(
    store: Arc<dyn Store>,
    settings: Arc<Settings>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let r = crate::store::RetentionMs::of(&settings.retention);
    loop {
        match store.purge_expired(clock.now_ms(), r).await {
            Ok(p) if p != Default::default() => tracing::info!(?p, "retention purge"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention purge failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(janitor_every(&settings)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_first_holds_processing_only_while_acks_wait_and_only_so_long() {
        let limit = ACKS_FIRST_LIMIT.as_millis() as i64;
        let t = 1_700_000_000_000;
        // Nobody waiting for an ack: process at once.
        assert!(!hold_for_acks(false, HOLD_BACKLOG, t, t));
        // Processing keeps up (a short backlog): never held, however busy acks are.
        assert!(!hold_for_acks(true, HOLD_BACKLOG - 1, t, t));
        assert!(!hold_for_acks(true, 0, t, t));
        // Acks waiting: hold back a young job...
        assert!(hold_for_acks(true, HOLD_BACKLOG, t, t));
        assert!(hold_for_acks(true, HOLD_BACKLOG, t, t + limit - 1));
        // ...but never past the limit, so a burst cannot starve processing.
        assert!(!hold_for_acks(true, HOLD_BACKLOG, t, t + limit));
        assert!(!hold_for_acks(true, HOLD_BACKLOG, t, t + 10 * limit));
        // A request received long ago (replayed after a restart, reprocessed) is not held.
        assert!(!hold_for_acks(true, HOLD_BACKLOG, 0, t));
        // Nor is one from "the future" (the clock stepped back): no unbounded wait.
        assert!(!hold_for_acks(true, HOLD_BACKLOG, t + 5, t));
    }
}
