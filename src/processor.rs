//! Inbox → applied state.
//!
//! The step is [`prepare`] (map a stored request, pure) then
//! `apply_prepared` (end it in the store, replay-safe). The loop around it
//! ([`run`]) rebuilds its work from the store's inbox on start, so a crash
//! loses nothing acknowledged; what it takes from memory (the handoff) is
//! only a copy of what the inbox holds.
//!
//! Ordering: one scanner reads the inbox in arrival order and hands each
//! request to a shard chosen by its (first) payment id. A shard applies its
//! requests one at a time, so events of one payment apply in arrival order
//! while different payments proceed in parallel. A batch (Adyen) naming
//! several payments goes to its first payment's shard; the per-payment lock
//! still keeps each payment consistent.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{ProviderSettings, Settings};
use crate::domain::rule::reorder_key;
use crate::domain::Candidate;
use crate::store::{
    Completion, InboxCursor, PaymentRecord, RawRequest, Store, StoreError, TaskError, WorkItem,
};

/// Payments are spread over this many workers; each applies its requests
/// one request at a time, in arrival order.
const SHARDS: usize = 4;

/// Unix milliseconds now. Only loops call this; steps take `now` as input.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn task_error(code: &str, message: impl Into<String>) -> TaskError {
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

/// Which merchant an event belongs to: the payment's (registered or from an
/// earlier IPN) first, then the one the mapping names, then the provider's default.
pub fn resolve_merchant(
    settings: &Settings,
    provider: Option<&ProviderSettings>,
    existing: Option<&PaymentRecord>,
    c: &Candidate,
) -> Result<String, TaskError> {
    if let Some(r) = existing {
        return Ok(r.merchant_id.clone());
    }
    if let Some(m) = &c.merchant_id {
        return match settings.merchant(m) {
            Some(_) => Ok(m.clone()),
            None => Err(task_error(
                "unknown_merchant",
                format!(
                    "payment {:?}: merchant {m:?} named by the IPN is not configured",
                    c.payment_id
                ),
            )),
        };
    }
    if let Some(m) = provider.and_then(|p| p.merchant_id.clone()) {
        return Ok(m);
    }
    Err(task_error(
        "unknown_merchant",
        format!(
            "payment {:?} is not registered, the IPN names no merchant and the provider has no merchant_id",
            c.payment_id
        ),
    ))
}

/// The step: end one mapped inbox entry (completed or error) in the store.
fn apply_prepared(
    store: &Store,
    settings: &Settings,
    seq: u64,
    req: &RawRequest,
    prepared: Result<Vec<Candidate>, TaskError>,
    fresh: bool,
    now: i64,
) -> Result<Completion, StoreError> {
    match prepared {
        Err(e) => {
            store.fail(seq, Some(req), e.clone(), now)?;
            Ok(Completion::Failed(e))
        }
        Ok(candidates) => {
            let provider = settings.provider(&req.provider);
            let item = WorkItem {
                seq,
                request_id: req.request_id,
                request: req,
                candidates: &candidates,
                fresh,
            };
            store.complete(
                &item,
                &|existing, c| resolve_merchant(settings, provider, existing, c),
                now,
            )
        }
    }
}

/// Inbox entries the scanner reads at once.
const PAGE: usize = 256;

/// Memory for jobs taken from the inbox and not yet done, in units of about
/// 1 KiB (64 MiB); see [`in_flight_cost`].
const IN_FLIGHT_UNITS: usize = 65_536;

/// A job's share of `IN_FLIGHT_UNITS`: its body, about five times over when
/// it is also held parsed, plus one for the rest.
fn in_flight_cost(request: &RawRequest, parsed: bool) -> u32 {
    let bytes = request.body.len() * if parsed { 6 } else { 1 };
    (1 + bytes / 1024).min(IN_FLIGHT_UNITS) as u32
}

struct Job {
    seq: u64,
    request: Arc<RawRequest>,
    /// First attempt at a request this process accepted
    /// (`Pending::first_attempt`): no replay checks needed.
    fresh: bool,
    /// Its share of `IN_FLIGHT_UNITS`, given back when the job is dropped.
    _slot: Option<OwnedSemaphorePermit>,
    reorder_window: Duration,
    prepared: Result<Vec<Candidate>, TaskError>,
}

impl Job {
    fn payment(&self) -> Option<&str> {
        self.prepared
            .as_ref()
            .ok()?
            .first()
            .map(|c| c.payment_id.as_str())
    }
}

/// The processor loop: scanner + shards, until `shutdown`.
pub async fn run(
    store: Arc<Store>,
    settings: Arc<Settings>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut shards = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..SHARDS {
        let (tx, rx) = mpsc::unbounded_channel();
        shards.push(tx);
        handles.push(tokio::spawn(shard(
            store.clone(),
            settings.clone(),
            rx,
            shutdown.clone(),
        )));
    }
    // A cursor is enough: the store commits inbox entries in seq order
    // (`inbox_order`), so none can appear behind it.
    let mut cursor = InboxCursor::default();
    // Jobs between here and done are in memory: bounded, the rest waits in
    // the inbox.
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_UNITS));
    'scan: loop {
        let work = match store.pending(&mut cursor, PAGE) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the inbox; retrying");
                Vec::new()
            }
        };
        let full_page = work.len() == PAGE;
        for p in work {
            let (seq, request_id) = (p.seq, p.request_id);
            let fresh = p.first_attempt;
            let (request, doc) = match p.held {
                Some(f) => (Ok(Some(f.request)), f.doc),
                None => (store.request(request_id).map(|r| r.map(Arc::new)), None),
            };
            let job = match request {
                Ok(Some(request)) => Job {
                    seq,
                    fresh,
                    _slot: tokio::select! {
                        _ = shutdown.cancelled() => break 'scan,
                        s = in_flight.clone().acquire_many_owned(in_flight_cost(&request, doc.is_some())) => s.ok(),
                    },
                    reorder_window: settings
                        .provider(&request.provider)
                        .map(|p| p.reorder_window)
                        .unwrap_or_default(),
                    prepared: prepare(&settings, &request, doc.as_deref()),
                    request,
                },
                Ok(None) => {
                    // Never fully stored (a crash before its ack): drop the entry.
                    if let Err(e) = store.fail(
                        seq,
                        None,
                        task_error("internal", "raw request missing"),
                        now_ms(),
                    ) {
                        tracing::error!(error = %e, "cannot drop an orphan inbox entry");
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, %request_id, "cannot read a stored request; will retry");
                    cursor.rewind(seq);
                    break;
                }
            };
            let mut h = DefaultHasher::new();
            job.payment().unwrap_or_default().hash(&mut h);
            let _ = shards[(h.finish() as usize) % SHARDS].send(job);
        }
        if full_page {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    drop(shards);
    for h in handles {
        let _ = h.await;
    }
}

/// Most jobs a shard takes off its queue at once.
const BATCH: usize = 64;

async fn shard(
    store: Arc<Store>,
    settings: Arc<Settings>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    shutdown: CancellationToken,
) {
    // Reorder window: jobs of a payment wait here until the first one's deadline.
    let mut held: HashMap<String, (i64, Vec<Job>)> = HashMap::new();
    loop {
        let next_deadline = held.values().map(|(d, _)| *d).min();
        let sleep = match next_deadline {
            Some(d) => Duration::from_millis(d.saturating_sub(now_ms()).max(0) as u64),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            job = rx.recv() => {
                let Some(job) = job else { return };
                let mut ready = Vec::new();
                route(job, &mut held, &mut ready);
                while ready.len() < BATCH {
                    match rx.try_recv() {
                        Ok(job) => route(job, &mut held, &mut ready),
                        Err(_) => break,
                    }
                }
                apply(&store, &settings, ready, &shutdown).await;
            }
            _ = tokio::time::sleep(sleep) => {
                let now = now_ms();
                let due: Vec<String> = held.iter().filter(|(_, (d, _))| *d <= now).map(|(k, _)| k.clone()).collect();
                for p in due {
                    let Some((_, mut jobs)) = held.remove(&p) else { continue };
                    jobs.sort_by_key(|j| j.prepared.as_ref().ok().and_then(|c| c.first()).map(reorder_key));
                    apply(&store, &settings, jobs, &shutdown).await;
                }
            }
        }
    }
}

/// Hold a job for its payment's reorder window, or queue it to apply now.
fn route(job: Job, held: &mut HashMap<String, (i64, Vec<Job>)>, ready: &mut Vec<Job>) {
    match job.payment().map(str::to_owned) {
        Some(p) if !job.reorder_window.is_zero() || held.contains_key(&p) => {
            let deadline = job.request.received_at + job.reorder_window.as_millis() as i64;
            held.entry(p)
                .or_insert_with(|| (deadline, Vec::new()))
                .1
                .push(job);
        }
        _ => ready.push(job),
    }
}

/// Apply jobs one by one, in order. Store errors are retried with backoff
/// (a job stays in the inbox until done, so a restart would pick it up too).
async fn apply(store: &Store, settings: &Settings, jobs: Vec<Job>, shutdown: &CancellationToken) {
    for job in jobs {
        if !yield_to_acks(store, &job, shutdown).await {
            return;
        }
        let mut backoff = Duration::from_millis(50);
        let mut fresh = job.fresh;
        loop {
            let prepared = job.prepared.clone();
            match apply_prepared(
                store,
                settings,
                job.seq,
                &job.request,
                prepared,
                fresh,
                now_ms(),
            ) {
                Ok(c) => {
                    log_completion(job.request.request_id, &c);
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, request_id = %job.request.request_id, "applying an IPN failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    // The failed attempt may have written part of the job.
                    fresh = false;
                }
            }
        }
    }
}

/// How long processing may hold back for acknowledgements (see `yield_to_acks`).
const ACKS_FIRST_LIMIT: Duration = Duration::from_secs(10);

/// Acks first: while IPN acknowledgements wait for their flush, hold this
/// job back, until it is `ACKS_FIRST_LIMIT` old. A saturating burst of up to
/// that long is acknowledged at the rate of ingest alone and applied right
/// after it; a longer one settles at the rate both share. Processing is
/// replayable and its lag is seconds; a provider that waits for its ack
/// retries and adds load. False when shutting down.
async fn yield_to_acks(store: &Store, job: &Job, shutdown: &CancellationToken) -> bool {
    while hold_for_acks(store.acks_waiting(), job.request.received_at, now_ms()) {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
    }
    true
}

/// The acks-first rule (pure): hold a job received at `received_at` back now?
fn hold_for_acks(acks_waiting: bool, received_at: i64, now: i64) -> bool {
    let age = now.saturating_sub(received_at);
    acks_waiting && (0..ACKS_FIRST_LIMIT.as_millis() as i64).contains(&age)
}

fn log_completion(request_id: Uuid, c: &Completion) {
    match c {
        Completion::Failed(e) => {
            tracing::warn!(%request_id, code = %e.code, message = %e.message, "IPN task ended in error")
        }
        Completion::Completed(evs) => {
            tracing::debug!(%request_id, events = evs.len(), "IPN applied")
        }
        Completion::AlreadyDone => {}
    }
}

/// Retention loop: purge what is past `retention.*` every few minutes.
pub async fn janitor(store: Arc<Store>, settings: Arc<Settings>, shutdown: CancellationToken) {
    let r = crate::store::RetentionMs {
        dedupe_window: settings.retention.dedupe_window.as_millis() as i64,
        events: settings.retention.events.as_millis() as i64,
    };
    loop {
        match store.purge_expired(now_ms(), r) {
            Ok(p) if p != Default::default() => tracing::info!(?p, "retention purge"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention purge failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(300)) => {}
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
        assert!(!hold_for_acks(false, t, t));
        // Acks waiting: hold back a young job...
        assert!(hold_for_acks(true, t, t));
        assert!(hold_for_acks(true, t, t + limit - 1));
        // ...but never past the limit, so a burst cannot starve processing.
        assert!(!hold_for_acks(true, t, t + limit));
        assert!(!hold_for_acks(true, t, t + 10 * limit));
        // A request received long ago (replayed after a restart, reprocessed) is not held.
        assert!(!hold_for_acks(true, 0, t));
        // Nor is one from "the future" (the clock stepped back): no unbounded wait.
        assert!(!hold_for_acks(true, t + 5, t));
    }
}
