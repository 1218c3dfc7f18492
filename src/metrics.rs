//! Prometheus metrics (`GET /metrics`, SPEC §8).
//!
//! One recorder per process ([`install`], idempotent: the tests build many
//! applications in one process); counters and histograms are recorded where
//! things happen, the gauges are set from [`crate::store::Store::stats`] and
//! free space when scraped ([`render`]).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::StoreStats;

pub const INGRESS: &str = "ipn_relay_ingress_total";
pub const ACK: &str = "ipn_relay_ack_seconds";
pub const TASKS: &str = "ipn_relay_tasks_total";
pub const EVENTS: &str = "ipn_relay_events_total";
pub const DELIVERIES: &str = "ipn_relay_deliveries_total";
pub const DELIVERY: &str = "ipn_relay_delivery_seconds";
pub const ATTEMPT: &str = "ipn_relay_delivery_attempt_seconds";
pub const INBOX_DEPTH: &str = "ipn_relay_inbox_depth";
pub const PENDING: &str = "ipn_relay_deliveries_pending";
pub const DEAD: &str = "ipn_relay_deliveries_dead";
pub const ENDPOINTS: &str = "ipn_relay_endpoints";
pub const STORE_BYTES: &str = "ipn_relay_store_bytes";
pub const FREE_BYTES: &str = "ipn_relay_free_bytes";

/// Latency buckets (seconds): an ack takes milliseconds, a delivery after
/// retries can take hours.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0, 21600.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("buckets are not empty");
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                // Somebody else's recorder is global: render our own (empty).
                Err(e) => {
                    tracing::warn!(error = %e, "a metrics recorder is installed already");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            describe();
            let upkeep = handle.clone();
            // Drains histogram samples even when nobody scrapes.
            let _ = std::thread::Builder::new()
                .name("ipn-relay-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                });
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(INGRESS, "IPNs received, by provider and result");
    describe_histogram!(
        ACK,
        Unit::Seconds,
        "Request start to acknowledgement ready (accepted and duplicate IPNs)"
    );
    describe_counter!(TASKS, "Processed requests by outcome (completed, error)");
    describe_counter!(
        EVENTS,
        "Decided events by outcome (applied, duplicate, stale)"
    );
    describe_counter!(
        DELIVERIES,
        "Delivery attempts by result (succeeded, failed, dead, gone)"
    );
    describe_histogram!(
        DELIVERY,
        Unit::Seconds,
        "Change applied to its 2xx at the merchant endpoint"
    );
    describe_histogram!(
        ATTEMPT,
        Unit::Seconds,
        "One delivery attempt's HTTP latency"
    );
    describe_gauge!(INBOX_DEPTH, "Accepted IPNs not applied yet");
    describe_gauge!(PENDING, "Deliveries waiting to succeed");
    describe_gauge!(DEAD, "Deliveries that gave up (retry them by hand)");
    describe_gauge!(ENDPOINTS, "Merchant endpoints by state");
    describe_gauge!(STORE_BYTES, Unit::Bytes, "Store size on disk");
    describe_gauge!(
        FREE_BYTES,
        Unit::Bytes,
        "Free space on the store's filesystem"
    );
}

/// Set the gauges and render the text exposition.
pub fn render(handle: &PrometheusHandle, s: &StoreStats, free_bytes: Option<u64>) -> String {
    gauge!(INBOX_DEPTH).set(s.inbox_depth as f64);
    gauge!(PENDING).set(s.deliveries_pending as f64);
    gauge!(DEAD).set(s.deliveries_dead as f64);
    gauge!(ENDPOINTS, "state" => "enabled").set(s.endpoints_enabled as f64);
    gauge!(ENDPOINTS, "state" => "disabled").set(s.endpoints_disabled as f64);
    gauge!(STORE_BYTES).set(s.store_bytes as f64);
    if let Some(b) = free_bytes {
        gauge!(FREE_BYTES).set(b as f64);
    }
    handle.render()
}

/// One IPN at the ingress; `provider` is a configured id or "unknown".
pub fn ingress(provider: &str, result: &'static str, ack: Option<Duration>) {
    counter!(INGRESS, "provider" => provider.to_string(), "result" => result).increment(1);
    if let Some(d) = ack {
        histogram!(ACK, "provider" => provider.to_string()).record(d.as_secs_f64());
    }
}

pub fn task(outcome: &'static str) {
    counter!(TASKS, "outcome" => outcome).increment(1);
}

pub fn event(outcome: crate::domain::Outcome) {
    counter!(EVENTS, "outcome" => outcome_label(outcome)).increment(1);
}

pub fn outcome_label(o: crate::domain::Outcome) -> &'static str {
    use crate::domain::Outcome;
    match o {
        Outcome::Applied => "applied",
        Outcome::Duplicate => "duplicate",
        Outcome::Stale => "stale",
    }
}

/// One recorded attempt; `applied_for`: change applied → 2xx (successes).
pub fn delivery(result: &'static str, attempt: Duration, applied_for: Option<Duration>) {
    counter!(DELIVERIES, "result" => result).increment(1);
    histogram!(ATTEMPT).record(attempt.as_secs_f64());
    if let Some(d) = applied_for {
        histogram!(DELIVERY).record(d.as_secs_f64());
    }
}
