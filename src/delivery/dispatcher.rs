//! The dispatcher: due lane heads → signed POSTs → each attempt's result
//! and the delivery's next state in one store write.
//!
//! [`Dispatcher::step`] is one pass over the enabled endpoints: for each
//! one with room (`per_endpoint.max_in_flight`, its governor rate, the
//! global `delivery.max_in_flight`) it takes due heads from the store and
//! starts one task per attempt. A slow endpoint only fills its own slots,
//! and a payment in retries only holds its own lane, so nobody waits for
//! them. A slot is an HTTP request in flight: it is freed when the answer
//! is read, while the attempt's result is still being written; until that
//! write commits the delivery stays out of the next `due` read (at most
//! [`UNRECORDED_PER_SLOT`] × the endpoint's slots wait so), so its lane's
//! next delivery cannot go before it.
//!
//! The loop ([`run`]) calls `step` whenever the store says deliveries or
//! endpoints changed, an attempt ended, or the next due time came (it
//! re-checks at least every [`TICK`], so a test's manual clock is noticed).
//! Memory holds only the attempts in flight or being recorded; the store
//! is the truth, so after a crash the next start sends every pending
//! delivery again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{retry, signing, ssrf};
use crate::clock::Clock;
use crate::config::Settings;
use crate::http::limits::{self, DirectLimiter};
use crate::store::{
    AttemptOutcome, AttemptRecord, AttemptResult, DeliveryRecord, EndpointRecord, Store,
};

/// The longest the loop sleeps without looking at the clock again.
pub const TICK: Duration = Duration::from_millis(50);
/// The shortest the loop sleeps when it found due work it had no room for.
const MIN_WAIT: Duration = Duration::from_millis(5);
/// How much of a response body an attempt keeps.
const BODY_KEPT: usize = 1024;
/// Answered attempts whose result is still being written, per slot of the
/// endpoint, at most: a bound on what one `due` read skips.
pub const UNRECORDED_PER_SLOT: usize = 4;

type EndpointKey = (String, String);

/// One endpoint's attempts: requests in flight, and every delivery
/// started and not yet recorded (those in flight included).
#[derive(Default)]
struct Flight {
    sending: usize,
    unrecorded: HashSet<String>,
}

type Flights = Arc<Mutex<HashMap<EndpointKey, Flight>>>;

/// An attempt's slot: the endpoint's count and a global permit, given
/// back when dropped (the answer read, or the task ended early).
struct Slot {
    flights: Flights,
    key: EndpointKey,
    _permit: tokio::sync::OwnedSemaphorePermit,
    ended: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut f = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = f.get_mut(&self.key) {
            f.sending = f.sending.saturating_sub(1);
        }
        self.ended.notify_one();
    }
}

pub struct Dispatcher {
    store: Arc<dyn Store>,
    settings: Arc<Settings>,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    policy: ssrf::Policy,
    global: Arc<Semaphore>,
    in_flight: Flights,
    limiters: Mutex<HashMap<EndpointKey, Arc<DirectLimiter>>>,
    /// Woken when an attempt ended.
    ended: Arc<Notify>,
    tasks: JoinSet<()>,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, settings: Arc<Settings>, clock: Arc<dyn Clock>) -> Self {
        let d = &settings.delivery;
        let policy = ssrf::Policy {
            allow_private: d.allow_private_targets,
            https_only: d.https_only,
        };
        Dispatcher {
            client: ssrf::client(d.timeout, policy),
            global: Arc::new(Semaphore::new(d.max_in_flight)),
            policy,
            store,
            clock,
            in_flight: Arc::default(),
            limiters: Mutex::default(),
            ended: Arc::default(),
            tasks: JoinSet::new(),
            settings,
        }
    }

    fn limiter(&self, key: &EndpointKey) -> Arc<DirectLimiter> {
        let mut l = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        l.entry(key.clone())
            .or_insert_with(|| {
                Arc::new(limits::direct(
                    self.settings.delivery.per_endpoint_rate,
                    &self.clock,
                ))
            })
            .clone()
    }

    /// One pass: start every attempt that is due and has room. Returns when
    /// the next known delivery is due (unix ms), if any.
    pub async fn step(&mut self) -> Result<Option<i64>, crate::store::StoreError> {
        while self.tasks.try_join_next().is_some() {}
        let endpoints = self.store.endpoints(None).await?;
        let now = self.clock.now_ms();
        let mut next: Option<i64> = None;
        let per_endpoint = self.settings.delivery.per_endpoint_in_flight;
        for ep in endpoints.into_iter().filter(|e| !e.disabled) {
            let key = (ep.merchant_id.clone(), ep.id.clone());
            let (busy, sending): (Vec<String>, usize) = {
                let f = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                f.get(&key).map_or_else(Default::default, |f| {
                    (f.unrecorded.iter().cloned().collect(), f.sending)
                })
            };
            let room = per_endpoint
                .saturating_sub(sending)
                .min((per_endpoint * UNRECORDED_PER_SLOT).saturating_sub(busy.len()))
                .min(self.global.available_permits());
            if room == 0 {
                continue;
            }
            let due = self
                .store
                .due_deliveries(&ep.merchant_id, &ep.id, now, room, &busy)
                .await?;
            if let Some(at) = due.next_at {
                next = Some(next.map_or(at, |n: i64| n.min(at)));
            }
            if due.deliveries.is_empty() {
                continue;
            }
            // The endpoint as of now, read after the due heads: the list above
            // may predate a rotation, PATCH or 410 that committed while
            // `due_deliveries` waited for its flush.
            let ep = match self.store.endpoint(&ep.merchant_id, &ep.id).await? {
                Some(ep) if !ep.disabled => Arc::new(ep),
                _ => continue,
            };
            let limiter = self.limiter(&key);
            for d in due.deliveries {
                if limiter.check().is_err() {
                    // Over its rate: try again on the next tick.
                    next = Some(now);
                    break;
                }
                let Ok(permit) = self.global.clone().try_acquire_owned() else {
                    break;
                };
                {
                    let mut f = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                    let f = f.entry(key.clone()).or_default();
                    f.sending += 1;
                    f.unrecorded.insert(d.id.clone());
                }
                let slot = Slot {
                    flights: self.in_flight.clone(),
                    key: key.clone(),
                    _permit: permit,
                    ended: self.ended.clone(),
                };
                let attempt = Attempt {
                    store: self.store.clone(),
                    clock: self.clock.clone(),
                    client: self.client.clone(),
                    policy: self.policy,
                    schedule: self.settings.delivery.retry_schedule.clone(),
                    endpoint: ep.clone(),
                    delivery: d,
                };
                let (in_flight, ended, key) =
                    (self.in_flight.clone(), self.ended.clone(), key.clone());
                self.tasks.spawn(async move {
                    let id = attempt.delivery.id.clone();
                    attempt.run(slot).await;
                    if let Some(f) = in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_mut(&key)
                    {
                        f.unrecorded.remove(&id);
                    }
                    ended.notify_one();
                });
            }
        }
        Ok(next)
    }

    /// Stop taking new attempts; let those in flight finish within `grace`
    /// (the rest stay pending in the store and go out after a restart).
    pub async fn drain(&mut self, grace: Duration) {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("deliveries still in flight at shutdown; they stay pending");
            self.tasks.abort_all();
        }
    }
}

/// Run until `token` is cancelled, then drain (`server.shutdown_timeout`).
pub async fn run(
    store: Arc<dyn Store>,
    settings: Arc<Settings>,
    clock: Arc<dyn Clock>,
    token: CancellationToken,
) {
    let mut changed = store.relay_changed();
    let grace = settings.server.shutdown_timeout;
    let mut d = Dispatcher::new(store, settings, clock.clone());
    let ended = d.ended.clone();
    while !token.is_cancelled() {
        // Test-only: a worker that dies (see `tests/api/workers.rs`).
        fail::fail_point!("delivery::dispatcher::step");
        let next = match d.step().await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "dispatcher could not read the store");
                None
            }
        };
        // Something due but no room (slots full, rate spent): an ended
        // attempt or a store change wakes the loop; otherwise look again
        // after MIN_WAIT, never spinning.
        let wait = next
            .map(|at| {
                Duration::from_millis((at - clock.now_ms()).clamp(0, 50) as u64).max(MIN_WAIT)
            })
            .unwrap_or(TICK)
            .min(TICK);
        tokio::select! {
            _ = token.cancelled() => break,
            _ = changed.changed() => {}
            _ = ended.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    d.drain(grace).await;
}

/// One attempt at one delivery.
struct Attempt {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    policy: ssrf::Policy,
    schedule: Vec<Duration>,
    endpoint: Arc<EndpointRecord>,
    delivery: DeliveryRecord,
}

/// What came back from the endpoint.
struct Response {
    status: Option<u16>,
    retry_after: Option<Duration>,
    error: Option<String>,
    body: String,
}

impl Attempt {
    /// Send, free `slot` once answered, then record the result.
    async fn run(self, slot: Slot) {
        let at = self.clock.now_ms();
        let started = Instant::now();
        let resp = self.send(at).await;
        let attempt_took = started.elapsed();
        drop(slot);
        let latency_ms = attempt_took.as_millis() as u64;
        crash_point("delivery::answered");
        let attempts = self.delivery.attempts - self.delivery.retry_from + 1;
        let jitter = retry::jitter(&mut rand::thread_rng());
        let outcome = match retry::verdict(
            &self.schedule,
            attempts,
            resp.status,
            resp.retry_after,
            jitter,
        ) {
            retry::Verdict::Succeeded => AttemptOutcome::Succeeded,
            retry::Verdict::Gone => AttemptOutcome::Gone,
            retry::Verdict::Dead => AttemptOutcome::Dead,
            retry::Verdict::Retry { after } => AttemptOutcome::Retry {
                // From the attempt's start: a pure function of the attempt.
                at: at + after.as_millis() as i64,
            },
        };
        let result_label = match outcome {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Retry { .. } => "failed",
            AttemptOutcome::Dead => "dead",
            AttemptOutcome::Gone => "gone",
        };
        tracing::info!(
            request_id = %self.delivery.event.request_id,
            delivery_id = %self.delivery.id,
            endpoint_id = %self.endpoint.id,
            payment_id = %self.delivery.payment_id,
            event_id = %self.delivery.event.event_id,
            status = ?resp.status,
            error = ?resp.error,
            outcome = ?outcome,
            result = result_label,
            latency_ms,
            "delivery attempt"
        );
        let result = AttemptResult {
            delivery_id: self.delivery.id.clone(),
            attempt: AttemptRecord {
                at,
                status: resp.status,
                latency_ms,
                error: resp.error,
                response_body: resp.body,
            },
            outcome,
        };
        match self.store.record_attempt(result).await {
            Ok(()) => {
                // From the change being applied (its event's creation) to the 2xx.
                let applied_for = (result_label == "succeeded").then(|| {
                    Duration::from_millis(
                        (self.clock.now_ms() - self.delivery.event.created_at).max(0) as u64,
                    )
                });
                crate::metrics::delivery(result_label, attempt_took, applied_for);
            }
            // Still pending in the store: it goes out again.
            Err(e) => {
                tracing::error!(error = %e, delivery_id = %self.delivery.id, "could not record an attempt")
            }
        }
    }

    async fn send(&self, at: i64) -> Response {
        let fail = |error: String| Response {
            status: None,
            retry_after: None,
            error: Some(error),
            body: String::new(),
        };
        let url = match url::Url::parse(&self.endpoint.url) {
            Ok(u) => u,
            Err(e) => return fail(format!("bad endpoint url: {e}")),
        };
        if let Err(why) = ssrf::check_url(&url, self.policy) {
            return fail(format!("target refused: {why}"));
        }
        let body = signing::payload(&self.delivery.event);
        let ts = at.div_euclid(1000);
        let msg_id = &self.delivery.event.event_id;
        let signature = match signing::signature_header(
            &self.endpoint.signing_secrets(at),
            msg_id,
            ts,
            &body,
        ) {
            Ok(s) => s,
            Err(e) => return fail(format!("cannot sign: {e}")),
        };
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", msg_id.as_str())
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let mut r = match sent {
            Ok(r) => r,
            Err(e) => return fail(ssrf::describe(&e)),
        };
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::parse_retry_after(v, at));
        let mut kept = Vec::new();
        while kept.len() < BODY_KEPT {
            match r.chunk().await {
                Ok(Some(c)) => kept.extend_from_slice(&c[..c.len().min(BODY_KEPT - kept.len())]),
                _ => break,
            }
        }
        let error = match status {
            200..=299 => None,
            300..=399 => Some(format!("HTTP {status}: redirects are not followed")),
            _ => Some(format!("HTTP {status}")),
        };
        Response {
            status: Some(status),
            retry_after,
            error,
            body: String::from_utf8_lossy(&kept).into_owned(),
        }
    }
}

/// A test-only crash point (see `store::sled_backend::crash_point`).
fn crash_point(name: &str) {
    let _ = name;
    fail::fail_point!(name, |_| {
        std::process::abort();
    });
}
