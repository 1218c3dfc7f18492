//! The store conformance suite: what every [`Store`] backend must do, checked
//! through the trait only, so the sled backend and a later PostgreSQL one
//! pass the same checks.
//!
//! Each check is an async function taking a [`Backend`]: a factory whose
//! every [`Backend::open`] opens the *same* fresh storage (a second call,
//! after the first store was closed and dropped, is a restart). The
//! [`conformance_tests!`] macro turns every check into one `#[tokio::test]`
//! for a backend; adding a backend is one invocation of it:
//!
//! ```ignore
//! conformance_tests!(postgres, || Backend::new(/* connect to a fresh schema */));
//! ```
//!
//! Checks choose their own clock (`NOW` onwards): no sleeps, no wall clock.
//! [`apply`](Store::apply) may return before its write is durable and
//! [`events`](Store::events) shows only durable events, so checks call
//! [`settle`] (a [`probe`](Store::probe), i.e. a durable write issued after
//! the applies) before reading the feed.
//!
//! | module | verbs |
//! |---|---|
//! | [`ingest`] | accept, request, task (while processing), next_work, close + reopen |
//! | [`apply`] | apply, take_error, reprocess |
//! | [`reads`] | events, history, payment, register_payment, tasks |
//! | [`upkeep`] | quarantine, quarantined, probe, acks_waiting, backlog, purge_expired, [`event_id`] |
//! | [`relay`] | create/update/delete_endpoint, endpoint(s), sync_config_endpoints, the fan-out in apply, replay, deliveries, relay_changed, stats |
//! | [`relay_stats`] | stats |
//! | [`relay_lanes`] | due_deliveries, record_attempt (lanes, `ordering`, attempt log, 410), delivery, retry_delivery, close + reopen |

mod apply;
mod ingest;
mod reads;
/// Its helpers serve the sled backend's own tests too.
pub(super) mod relay;
mod relay_lanes;
mod relay_stats;
mod upkeep;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::sled_backend::SledOptions;
use super::*;
use crate::domain::{Outcome, PaymentState, Status};

/// Opens one test's storage; see the module doc.
struct Backend {
    open: Box<dyn Fn() -> BoxFuture<'static, Arc<dyn Store>> + Send + Sync>,
}

impl Backend {
    /// `open` must open the same storage every time it is called.
    fn new<F, Fut>(open: F) -> Backend
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Arc<dyn Store>> + Send + 'static,
    {
        Backend {
            open: Box::new(move || Box::pin(open())),
        }
    }

    async fn open(&self) -> Arc<dyn Store> {
        (self.open)().await
    }
}

/// One `#[tokio::test]` per check for a backend: `conformance_tests!(name,
/// factory)`, where `factory()` returns a [`Backend`] over fresh storage.
macro_rules! conformance_tests {
    ($backend:ident, $factory:expr) => {
        conformance_tests!(@tests $backend, $factory;
            ingest::accept_new_then_duplicate,
            ingest::accept_after_window_is_new,
            ingest::accept_same_key_other_provider_is_new,
            ingest::accept_batch_items_name_their_first_request,
            ingest::accepted_task_is_processing,
            ingest::request_is_kept_byte_for_byte,
            ingest::next_work_oldest_first_each_once,
            ingest::next_work_waits_at_most_wait,
            ingest::next_work_wakes_on_accept,
            ingest::reopen_hands_out_unapplied_work_only,
            ingest::close_is_idempotent_and_refuses_writes,
            apply::apply_complete_writes_task_payment_history_event,
            apply::apply_same_plan_twice_is_already_done,
            apply::apply_stale_base_version_conflicts_and_writes_nothing,
            apply::apply_change_without_event_records_history_only,
            apply::apply_multi_change_plan_is_atomic,
            apply::apply_several_plans_results_in_order,
            apply::apply_fail_then_take_error_once,
            apply::take_error_only_for_unread_errors,
            apply::reprocess_unknown_is_not_found,
            apply::reprocess_only_errored_tasks,
            apply::reprocess_errored_task_queues_it_again,
            reads::events_only_the_merchants_own,
            reads::events_in_apply_order,
            reads::events_after_reopen_list_every_applied_event,
            reads::events_after_cursor_resumes_strictly_after,
            reads::events_unknown_cursor_is_refused,
            reads::events_payment_filter_and_limit,
            reads::history_limit_keeps_newest_oldest_first,
            reads::register_created_then_already_registered,
            reads::register_other_merchant_same_id_is_created,
            reads::register_after_ipn_updates_and_keeps_state,
            reads::ipn_after_register_keeps_registration,
            reads::tasks_filter_by_state_and_provider_newest_first,
            upkeep::quarantined_newest_first,
            upkeep::quarantine_keeps_last_1000,
            upkeep::probe_succeeds_on_healthy_store,
            upkeep::acks_waiting_false_when_idle,
            upkeep::backlog_counts_unapplied_requests,
            upkeep::purge_drops_expired_dedupe_keys,
            upkeep::purge_drops_ended_tasks_keeps_processing,
            upkeep::purge_drops_expired_events,
            upkeep::purge_drops_expired_quarantine,
            relay::endpoint_create_get_list_update_delete,
            relay::endpoint_ids_are_per_merchant,
            relay::sync_config_adds_updates_removes_keeps_api_and_410,
            relay::fan_out_one_delivery_per_matching_endpoint,
            relay::fan_out_to_disabled_endpoint_is_pending,
            relay::replay_new_deliveries_of_matching_events,
            relay::deliveries_filters_newest_first,
            relay::relay_changed_moves_after_writes,
            relay_stats::stats_follow_writes_and_survive_reopen,
            relay_lanes::lane_only_head_is_due,
            relay_lanes::lane_success_makes_next_due_at_once,
            relay_lanes::lane_dead_makes_next_due_at_once,
            relay_lanes::lane_retry_blocks_until_its_time,
            relay_lanes::lanes_of_two_payments_are_independent,
            relay_lanes::due_skips_in_flight_and_limits,
            relay_lanes::latest_retry_supersedes_all_but_newest,
            relay_lanes::fifo_retry_supersedes_nothing,
            relay_lanes::record_attempt_logs_and_counts,
            relay_lanes::gone_disables_endpoint_keeps_delivery,
            relay_lanes::retry_delivery_only_dead_ones,
            relay_lanes::restart_keeps_endpoints_and_deliveries,
            relay_lanes::lane_of_one_plan_keeps_order,
            relay_lanes::latest_new_change_behind_failed_head_supersedes_waiting,
        );
    };
    (@tests $backend:ident, $factory:expr; $($module:ident :: $check:ident),* $(,)?) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    let backend: Backend = ($factory)();
                    super::$module::$check(backend).await;
                }
            )*
        }
    };
}

conformance_tests!(sled, || {
    let dir = tempfile::tempdir().expect("tempdir");
    Backend::new(move || {
        let path = dir.path().to_path_buf();
        async move {
            let store = super::sled_backend::reopen(&path, SledOptions { sync: true });
            Arc::new(store) as Arc<dyn Store>
        }
    })
});

// ---- fixtures shared by the checks ----

/// The checks' clock origin (unix ms).
pub(super) const NOW: i64 = 1_700_000_000_000;
/// The dedupe window the checks accept with.
const WINDOW: i64 = 24 * 3_600_000;
/// The events retention the checks purge with.
const EVENTS: i64 = 30 * 24 * 3_600_000;
/// How long a check waits for work it expects to be there.
const WAIT: Duration = Duration::from_secs(10);

/// An IPN of `provider` with dedupe key `key`, received at `at`.
fn ipn(provider: &str, key: &str, at: i64) -> NewIpn {
    NewIpn {
        request: RawRequest {
            request_id: Uuid::new_v4(),
            provider: provider.into(),
            received_at: at,
            content_type: Some("application/json".into()),
            headers: vec![("content-type".into(), "application/json".into())],
            body: format!(r#"{{"id":"{key}"}}"#).into_bytes(),
            peer: Some("192.0.2.1".into()),
            event_key: key.into(),
        },
        doc: None,
        dedupe_window_ms: WINDOW,
        item_keys: Vec::new(),
    }
}

/// Exactly `n` work items (waiting for them), oldest first.
async fn take(s: &dyn Store, n: usize) -> Vec<Work> {
    let mut got = Vec::new();
    while got.len() < n {
        let more = s.next_work(n - got.len(), WAIT).await.expect("next_work");
        assert!(
            !more.is_empty(),
            "expected {n} work items, got {}",
            got.len()
        );
        got.extend(more);
    }
    assert_eq!(got.len(), n, "next_work returned more than its limit");
    got
}

/// No work is left to hand out.
async fn assert_no_work(s: &dyn Store) {
    let more = s
        .next_work(100, Duration::from_millis(50))
        .await
        .expect("next_work");
    let ids: Vec<Uuid> = more.iter().map(|w| w.request.request_id).collect();
    assert!(ids.is_empty(), "unexpected work handed out: {ids:?}");
}

/// Accept an IPN (it must be new) and take its work item.
async fn accept_one(s: &dyn Store, provider: &str, key: &str, at: i64) -> Work {
    let n = ipn(provider, key, at);
    let id = n.request.request_id;
    assert_eq!(s.accept(n, at).await.expect("accept"), Accepted::New);
    let w = take(s, 1).await.remove(0);
    assert_eq!(w.request.request_id, id);
    w
}

/// Item `idx` of `w` moves payment `key` (now at `base_version`) to `status`,
/// with an event.
fn change(
    w: &Work,
    idx: usize,
    key: &PaymentKey,
    base_version: u64,
    status: Status,
    now: i64,
) -> PaymentChange {
    let req = &w.request;
    let id = event_id(req.request_id, idx, req.received_at);
    let sequence = base_version + 1;
    PaymentChange {
        key: key.clone(),
        base_version,
        provider: req.provider.clone(),
        state: Some(PaymentState {
            status,
            sequence,
            authorization_id: Some(format!("auth_{}", key.payment_id)),
            charge_id: None,
            occurred_at: Some(now),
            amount: Some(1000),
            currency: Some("EUR".into()),
        }),
        ipn_site_url: None,
        history: HistoryEntry {
            version: base_version,
            sequence: Some(sequence),
            status,
            outcome: Outcome::Applied,
            occurred_at: Some(now),
            received_at: req.received_at,
            request_id: req.request_id,
            event_id: Some(id.clone()),
            provider_event_id: None,
        },
        event: Some(EventRecord {
            event_id: id,
            payment_id: key.payment_id.clone(),
            merchant_id: key.merchant_id.clone(),
            provider: req.provider.clone(),
            status,
            previous_status: None,
            sequence,
            authorization_id: Some(format!("auth_{}", key.payment_id)),
            charge_id: None,
            amount: Some(1000),
            currency: Some("EUR".into()),
            occurred_at: Some(now),
            created_at: now,
            provider_event_id: None,
            request_id: req.request_id,
        }),
        now,
    }
}

/// The task events a plan with these changes reports.
fn task_events(changes: &[PaymentChange]) -> Vec<TaskEvent> {
    changes
        .iter()
        .map(|c| TaskEvent {
            payment_id: c.key.payment_id.clone(),
            status: c.history.status,
            outcome: c.history.outcome,
            sequence: c.history.sequence,
            event_id: c.history.event_id.clone(),
        })
        .collect()
}

fn complete(w: &Work, changes: Vec<PaymentChange>, now: i64) -> Plan {
    Plan::Complete {
        work: w.id,
        request: w.request.clone(),
        events: task_events(&changes),
        changes,
        now,
    }
}

fn task_error() -> TaskError {
    TaskError {
        code: "unknown_merchant".into(),
        message: "payment \"pay_1\" is not registered".into(),
    }
}

fn fail(w: &Work, now: i64) -> Plan {
    Plan::Fail {
        work: w.id,
        request: w.request.clone(),
        error: task_error(),
        now,
    }
}

/// Apply one plan; it must be done.
async fn apply_done(s: &dyn Store, plan: Plan) {
    assert_eq!(s.apply(vec![plan]).await.expect("apply"), [Applied::Done]);
}

/// The state of a task, if there is one.
async fn state(s: &dyn Store, id: Uuid) -> Option<TaskState> {
    s.task(id).await.expect("task").map(|t| t.state)
}

/// Make every earlier write durable (see the module doc).
async fn settle(s: &dyn Store) {
    s.probe(NOW).await.expect("probe");
}

/// The merchant's feed (the cursor must be known).
async fn feed(
    s: &dyn Store,
    merchant: &str,
    payment: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Vec<EventRecord> {
    s.events(merchant, payment, after, limit)
        .await
        .expect("events")
        .expect("known cursor")
}

fn ids(events: &[EventRecord]) -> Vec<&str> {
    events.iter().map(|e| e.event_id.as_str()).collect()
}

/// The events the changes carry, in order.
fn carried(changes: &[&PaymentChange]) -> Vec<EventRecord> {
    changes.iter().filter_map(|c| c.event.clone()).collect()
}
