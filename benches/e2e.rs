//! End-to-end benchmark: `cargo bench --bench e2e`.
//!
//! Measures the whole relay path, IPN in to merchant notification out:
//! signed IPN → `POST /v1/ipn/acme` → durable ack (`durability = "sync"`) →
//! apply → Standard Webhooks POST to the merchant endpoint. ipn-relay runs
//! in-process from a config text, driven only through its public builder
//! and HTTP API (as in `benches/ingest.rs`). Its one merchant endpoint is a
//! local sink: a minimal HTTP/1.1 server (keep-alive, `content-length`
//! bodies, answers `200` at once) that reads `data.provider_event_id` of
//! each notification and records its first arrival time. Every IPN is a
//! distinct payment with status `Succeed`, so each one is one applied
//! change and one notification; its `/id` names the phase and its index.
//!
//! Three figures, in one run:
//!
//! 1. **steady**: an open-loop paced generator offers `E2E_RATE` IPN/s
//!    (default 1000) for `E2E_SECONDS` (default 20). IPN `n` is due at
//!    `start + n / rate`; each is sent by its own spawned request (a pool of
//!    up to `E2E_MAX_IN_FLIGHT` concurrent requests, default 512, reusing
//!    keep-alive connections), so a slow answer does not lower the offered
//!    rate. Latencies count from the *scheduled* send time (no coordinated
//!    omission): end-to-end = arrival at the sink − scheduled send, ack =
//!    answer received − scheduled send. Reports p50/p99/max end-to-end,
//!    the ack p50/p99, how many notifications are missing after a grace of
//!    `E2E_GRACE_SECONDS` (default 10) past the last send, and the
//!    generator's own lag (actual − scheduled send; if that is large the
//!    load generator, not the relay, was short of CPU). Targets: p99 <=
//!    50 ms, nothing missing.
//! 2. **steps**: the same generator at each rate of `E2E_STEPS` (default
//!    `1000,2000,3000,4000,5000,7000`) for `E2E_STEP_SECONDS` (default 10); a
//!    step passes if every IPN is acked and delivered within the grace and
//!    the end-to-end p99 is under 1 s. Stops at the first step that fails;
//!    reports the best passing rate. Target >= 5000/s.
//! 3. **burst**: `E2E_BURST` IPNs (default 20000) posted as fast as
//!    possible from `E2E_BURST_CONNECTIONS` (default 64) closed-loop
//!    connections; reports the time from the first post until the sink has
//!    all of them (at most `E2E_BURST_TIMEOUT` s, default 120), and the ack
//!    phase's length. No target is set for it; the summary checks that
//!    every one arrived.
//!
//! A 2 s warm-up at 500/s comes first (not reported). Between phases the
//! bench waits (bounded) until the previous phase's notifications stopped
//! arriving, so a backlog does not spill into the next figure.
//! `E2E_PHASES` (default `steady,steps,burst`) picks the phases.
//!
//! Each figure is printed as soon as it is measured; a summary line per
//! figure with its target and MET/MISS ends the run. Nothing waits without
//! a bound: requests time out after 10 s, every wait for notifications
//! has a deadline, and a phase that runs out of time reports what it has.
//!
//! Caveats: the load generator, the sink and ipn-relay share one process
//! and, here, a shared 2-core machine, so the generator and sink take CPU
//! from the relay and the figures are a lower bound of what the relay does
//! alone; runs swing by ±20%. "server CPU" is every thread of this process
//! but the bench's own runtime (`bench-client`: generator and sink) and
//! the main thread, read from /proc (Linux only): the relay's cost, ack +
//! apply + delivery, per IPN and as a share of one core.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::{client, env_num, epoch, pct_ms, post_ipn, server_cpu, verdict, Endpoint, Relay};

const TARGET_STEADY_P99_MS: f64 = 50.0;
const TARGET_STEP_P99_MS: f64 = 1000.0;
const TARGET_RATE: u64 = 5000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Now, in ns since [`epoch`]; never 0 (0 means "not yet").
fn now_ns() -> u64 {
    (epoch().elapsed().as_nanos() as u64).max(1)
}

fn ns_of(t: Instant) -> u64 {
    (t.saturating_duration_since(epoch()).as_nanos() as u64).max(1)
}

fn config(dir: &std::path::Path, sink_url: &str) -> ipn_relay::config::Settings {
    let endpoint = Endpoint {
        id: "ep_bench",
        url: sink_url,
        delivery: "",
        extra: "events = [\"payment.*\"]\n",
    };
    common::settings(dir, "", "Succeed = \"succeeded\"\n", Some(endpoint))
}

/// One phase's IPNs, indexed by `n`: when each was due, answered and
/// delivered (ns since [`epoch`], 0 = not yet).
struct Phase {
    sent: Vec<AtomicU64>,
    started: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
    arrived: Vec<AtomicU64>,
    received: AtomicU64,
    duplicates: AtomicU64,
    ack_failed: AtomicU64,
    /// Why the first failed post failed (status or error), for the report.
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Phase {
    fn new(total: usize) -> Phase {
        let v = || (0..total).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Phase {
            sent: v(),
            started: v(),
            acked: v(),
            arrived: v(),
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            ack_failed: AtomicU64::new(0),
            first_failure: std::sync::Mutex::new(None),
        }
    }

    fn failed(&self, why: String) {
        self.ack_failed.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first_failure.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert(why);
    }

    fn total(&self) -> u64 {
        self.sent.len() as u64
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn arrive(&self, n: usize, at: u64) {
        let Some(slot) = self.arrived.get(n) else {
            return;
        };
        if slot
            .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.received.fetch_add(1, Ordering::Relaxed);
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sorted `to[n] - from[n]` in µs over the IPNs that have both.
    fn deltas_us(&self, from: &[AtomicU64], to: &[AtomicU64]) -> Vec<u64> {
        let mut v: Vec<u64> = from
            .iter()
            .zip(to)
            .filter_map(|(a, b)| {
                let (a, b) = (a.load(Ordering::Relaxed), b.load(Ordering::Relaxed));
                (a != 0 && b != 0).then(|| b.saturating_sub(a) / 1000)
            })
            .collect();
        v.sort_unstable();
        v
    }
}

/// Phases by index: the sink routes each notification to its phase.
#[derive(Default)]
struct Registry {
    phases: RwLock<Vec<Arc<Phase>>>,
    /// Notifications the sink could not attribute to an IPN.
    stray: AtomicU64,
    /// Requests the sink answered (any path).
    requests: AtomicU64,
}

impl Registry {
    fn add(&self, total: usize) -> (u32, Arc<Phase>) {
        let p = Arc::new(Phase::new(total));
        let mut v = self.phases.write().unwrap();
        v.push(p.clone());
        ((v.len() - 1) as u32, p)
    }

    /// A notification body arrived now.
    fn record(&self, body: &[u8]) {
        let at = now_ns();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let id = v["data"]["provider_event_id"].as_str().unwrap_or("");
        // `e2e-<phase>-<n>`
        let mut it = id.strip_prefix("e2e-").unwrap_or("").splitn(2, '-');
        let phase = it.next().and_then(|p| p.parse::<usize>().ok());
        let n = it.next().and_then(|n| n.parse::<usize>().ok());
        match (phase, n) {
            (Some(p), Some(n)) => match self.phases.read().unwrap().get(p) {
                Some(ph) => ph.arrive(n, at),
                None => {
                    self.stray.fetch_add(1, Ordering::Relaxed);
                }
            },
            _ => {
                self.stray.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The merchant endpoint ([`common::sink`]): records every notification,
/// answers `200 ok`.
async fn sink(reg: Arc<Registry>) -> String {
    common::sink("/hooks/e2e", move |body| {
        reg.record(body);
        true
    })
    .await
}

/// An IPN body (signed by [`post_ipn`]): distinct payment, status `Succeed`.
fn ipn(phase: u32, n: usize) -> String {
    let created = chrono::Utc::now().timestamp();
    format!(
        r#"{{"id":"e2e-{phase}-{n}","created":{created},"data":{{"payment_id":"pay-e2e-{phase}-{n}","status":"Succeed","amount":1000,"currency":"EUR"}}}}"#
    )
}

/// POST IPN `n` of `phase`; records when it was answered (2xx) or counts a
/// failure.
async fn post(client: &reqwest::Client, url: &str, id: u32, phase: &Phase, n: usize) {
    let body = ipn(id, n);
    phase.started[n].store(now_ns(), Ordering::Relaxed);
    match post_ipn(client, url, body).await {
        Ok(r) if r.status().is_success() => match r.bytes().await {
            Ok(_) => phase.acked[n].store(now_ns(), Ordering::Relaxed),
            Err(e) => phase.failed(format!("reading the ack: {e}")),
        },
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            phase.failed(format!("{status}: {body}"));
        }
        Err(e) => phase.failed(format!("{e}")),
    }
}

/// A paced phase, then the wait for its notifications (grace after the
/// last answer). Open loop ([`common::paced`]): IPN `n` is due at
/// `start + n / rate` and is sent by its own task, whatever the earlier
/// ones are doing (at most `max_in_flight` at once; a task waiting for a
/// slot still counts from its due time).
async fn paced_phase(
    reg: &Registry,
    url: &str,
    rate: u64,
    secs: u64,
    max_in_flight: usize,
    grace: Duration,
) -> Measured {
    let cpu0 = server_cpu();
    let t0 = Instant::now();
    let total = (rate * secs) as usize;
    let (id, phase) = reg.add(total);
    let client = client(max_in_flight, REQUEST_TIMEOUT);
    let url: Arc<str> = url.into();
    let tasks = common::paced(rate, total, max_in_flight, |n, due| {
        phase.sent[n].store(ns_of(due), Ordering::Relaxed);
        let (client, url, phase) = (client.clone(), url.clone(), phase.clone());
        async move { post(&client, &url, id, &phase, n).await }
    })
    .await;
    // Each request ends within REQUEST_TIMEOUT of starting; bound the wait
    // anyway (queued tasks start late).
    common::join_within(tasks, REQUEST_TIMEOUT * 3).await;
    wait_delivered(&phase, Instant::now() + grace).await;
    Measured::of(&phase, server_cpu().saturating_sub(cpu0), t0.elapsed())
}

/// Closed loop: `conns` connections send IPNs back to back until `total`
/// were sent. Returns when all were answered.
async fn burst(reg: &Registry, url: &str, total: usize, conns: usize) -> (u32, Arc<Phase>) {
    let (id, phase) = reg.add(total);
    let next = Arc::new(AtomicU64::new(0));
    let url: Arc<str> = url.into();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (next, url, phase) = (next.clone(), url.clone(), phase.clone());
        tasks.spawn(async move {
            let client = client(1, REQUEST_TIMEOUT);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                if n >= total {
                    return;
                }
                phase.sent[n].store(now_ns(), Ordering::Relaxed);
                post(&client, &url, id, &phase, n).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    (id, phase)
}

/// Wait until the sink has every notification of `phase` or `deadline`.
async fn wait_delivered(phase: &Phase, deadline: Instant) -> bool {
    common::poll_until(deadline, Duration::from_millis(5), || {
        phase.received() >= phase.total()
    })
    .await
}

/// Let a phase's leftover backlog drain before the next phase: wait until
/// no notification arrived for 2 s (at most `max`).
async fn settle(reg: &Registry, max: Duration) {
    let end = Instant::now() + max;
    let mut last = reg.requests.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = reg.requests.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_secs(2) {
            return;
        }
    }
    println!("  (still receiving notifications after {max:?}; going on)");
}

/// What one paced or burst phase measured.
struct Measured {
    total: u64,
    e2e: Vec<u64>,
    ack: Vec<u64>,
    lag: Vec<u64>,
    missing: u64,
    ack_failed: u64,
    first_failure: Option<String>,
    duplicates: u64,
    cpu: Duration,
    wall: Duration,
}

impl Measured {
    fn of(phase: &Phase, cpu: Duration, wall: Duration) -> Measured {
        Measured {
            total: phase.total(),
            e2e: phase.deltas_us(&phase.sent, &phase.arrived),
            ack: phase.deltas_us(&phase.sent, &phase.acked),
            lag: phase.deltas_us(&phase.sent, &phase.started),
            missing: phase.total() - phase.received().min(phase.total()),
            ack_failed: phase.ack_failed.load(Ordering::Relaxed),
            first_failure: phase
                .first_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            duplicates: phase.duplicates.load(Ordering::Relaxed),
            cpu,
            wall,
        }
    }

    fn p99(&self) -> f64 {
        pct_ms(&self.e2e, 0.99)
    }

    fn print(&self, indent: &str) {
        println!(
            "{indent}end-to-end p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms   ack p50 {:.1} ms  p99 {:.1} ms",
            pct_ms(&self.e2e, 0.5),
            self.p99(),
            pct_ms(&self.e2e, 1.0),
            pct_ms(&self.ack, 0.5),
            pct_ms(&self.ack, 0.99),
        );
        println!(
            "{indent}delivered {}/{}  missing {}  ack failures {}  duplicates {}   generator lag p99 {:.1} ms  max {:.1} ms",
            self.total - self.missing,
            self.total,
            self.missing,
            self.ack_failed,
            self.duplicates,
            pct_ms(&self.lag, 0.99),
            pct_ms(&self.lag, 1.0),
        );
        if let Some(why) = &self.first_failure {
            println!("{indent}first ack failure: {why}");
        }
        let secs = self.wall.as_secs_f64().max(1e-9);
        println!(
            "{indent}server cpu {:.0} us/IPN, {:.0}% of one core",
            self.cpu.as_secs_f64() * 1e6 / self.total.max(1) as f64,
            self.cpu.as_secs_f64() * 100.0 / secs,
        );
    }
}

fn main() {
    let rate = env_num("E2E_RATE", 1000).max(1);
    let secs = env_num("E2E_SECONDS", 20).max(1);
    let step_secs = env_num("E2E_STEP_SECONDS", 10).max(1);
    let grace = Duration::from_secs(env_num("E2E_GRACE_SECONDS", 10));
    let max_in_flight = env_num("E2E_MAX_IN_FLIGHT", 512).max(1) as usize;
    let burst_total = env_num("E2E_BURST", 20000).max(1) as usize;
    let burst_conns = env_num("E2E_BURST_CONNECTIONS", 64).max(1) as usize;
    let burst_timeout = Duration::from_secs(env_num("E2E_BURST_TIMEOUT", 120));
    let steps: Vec<u64> = std::env::var("E2E_STEPS")
        .unwrap_or_else(|_| "1000,2000,3000,4000,5000,7000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&r| r > 0)
        .collect();
    let phases = std::env::var("E2E_PHASES").unwrap_or_else(|_| "steady,steps,burst".into());
    let want = |p: &str| phases.split(',').any(|x| x.trim() == p);

    epoch();
    let rt = common::runtime();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let reg = Arc::new(Registry::default());
        let sink_url = sink(reg.clone()).await;
        let relay = Relay::start(config(dir.path(), &sink_url));
        let url = relay.ipn_url();
        println!(
            "e2e benchmark: ipn-relay (durability sync) -> in-process sink; generator, sink and relay share this process, {} CPUs",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        );
        println!(
            "steady {rate}/s x {secs} s; steps {steps:?} x {step_secs} s; burst {burst_total} over {burst_conns} connections; grace {} s; max in flight {max_in_flight}",
            grace.as_secs()
        );

        // Warm-up: connections, sled, the dispatcher.
        let w = paced_phase(&reg, &url, 500, 2, max_in_flight, grace).await;
        println!(
            "warm-up 500/s x 2 s: delivered {}/{}, p99 {:.1} ms",
            w.total - w.missing,
            w.total,
            w.p99()
        );
        settle(&reg, Duration::from_secs(30)).await;

        let mut summary: Vec<String> = Vec::new();

        if want("steady") {
            println!();
            println!("== 1. steady: {rate} IPN/s open loop for {secs} s ==");
            let m = paced_phase(&reg, &url, rate, secs, max_in_flight, grace).await;
            m.print("  ");
            let p99 = m.p99();
            summary.push(format!(
                "steady {rate}/s x {secs} s: e2e p99 {p99:.1} ms (target <= {TARGET_STEADY_P99_MS} ms: {}), missing {} of {} after {} s grace (target 0: {}), ack p99 {:.1} ms",
                verdict(p99 <= TARGET_STEADY_P99_MS),
                m.missing,
                m.total,
                grace.as_secs(),
                verdict(m.missing == 0),
                pct_ms(&m.ack, 0.99),
            ));
            settle(&reg, Duration::from_secs(60)).await;
        }

        if want("steps") {
            println!();
            println!("== 2. steps: highest rate with every IPN delivered and e2e p99 < 1 s, {step_secs} s per step ==");
            let mut best: Option<u64> = None;
            let mut failed_at: Option<u64> = None;
            for &r in &steps {
                println!("  step {r}/s:");
                let m = paced_phase(&reg, &url, r, step_secs, max_in_flight, grace).await;
                m.print("    ");
                let pass = m.missing == 0 && m.ack_failed == 0 && m.p99() < TARGET_STEP_P99_MS;
                println!("    -> {}", if pass { "pass" } else { "FAIL" });
                if pass {
                    best = Some(r);
                } else {
                    failed_at = Some(r);
                    settle(&reg, Duration::from_secs(60)).await;
                    break;
                }
            }
            let best_txt = best.map_or("none".to_string(), |b| format!("{b}/s"));
            let stop_txt = match failed_at {
                Some(f) => format!("first failing step {f}/s"),
                None => "no step failed (raise E2E_STEPS to find the limit)".to_string(),
            };
            println!("  best passing rate: {best_txt} ({stop_txt})");
            summary.push(format!(
                "highest steady rate: {best_txt} (target >= {TARGET_RATE}/s: {}); {stop_txt}",
                verdict(best.unwrap_or(0) >= TARGET_RATE)
            ));
        }

        if want("burst") {
            println!();
            println!("== 3. burst: {burst_total} IPNs as fast as possible over {burst_conns} connections ==");
            let cpu0 = server_cpu();
            let t0 = Instant::now();
            let (_, phase) = match tokio::time::timeout(
                burst_timeout,
                burst(&reg, &url, burst_total, burst_conns),
            )
            .await
            {
                Ok(p) => p,
                Err(_) => {
                    println!("  posting did not finish within {burst_timeout:?}");
                    let v = reg.phases.read().unwrap();
                    (v.len() as u32 - 1, v[v.len() - 1].clone())
                }
            };
            let posted = t0.elapsed();
            let all = wait_delivered(&phase, t0 + burst_timeout).await;
            let drained = t0.elapsed();
            let m = Measured::of(&phase, server_cpu().saturating_sub(cpu0), drained);
            println!(
                "  posted (all answered) in {:.2} s ({:.0} IPN/s acked)",
                posted.as_secs_f64(),
                (m.total - m.ack_failed) as f64 / posted.as_secs_f64()
            );
            if all {
                println!(
                    "  all {} delivered {:.2} s after the first post ({:.0} IPN/s end to end)",
                    m.total,
                    drained.as_secs_f64(),
                    m.total as f64 / drained.as_secs_f64()
                );
            } else {
                println!(
                    "  NOT all delivered: {} missing after {:.0} s",
                    m.missing,
                    drained.as_secs_f64()
                );
            }
            m.print("  ");
            summary.push(format!(
                "burst {burst_total}: {} in {:.2} s from first post ({:.0} IPN/s; no time target; all delivered: {})",
                if all { "drained" } else { "NOT drained" },
                drained.as_secs_f64(),
                (m.total - m.missing) as f64 / drained.as_secs_f64(),
                verdict(all),
            ));
        }

        let stray = reg.stray.load(Ordering::Relaxed);
        if tokio::time::timeout(Duration::from_secs(30), relay.stop()).await.is_err() {
            println!("(ipn-relay did not shut down within 30 s)");
        }

        println!();
        println!("summary:");
        for s in &summary {
            println!("  {s}");
        }
        if stray > 0 {
            println!("  ({stray} notifications the sink could not attribute)");
        }
    });
    // The relay may leave blocking tasks behind; do not wait long for them.
    rt.shutdown_timeout(Duration::from_secs(5));
}
