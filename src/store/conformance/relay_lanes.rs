//! Lanes: a payment's deliveries to one endpoint go out one at a time, in
//! order (`due_deliveries`, `record_attempt`), and `ordering = "latest"`
//! supersedes the changes waiting behind a failing one; what an attempt
//! records (its log, a 410), `retry_delivery`, and lanes across a restart.

use super::relay::{api_ep, attempt, create, dlv, due, emit, get, listed, of, record};
use super::*;

/// Endpoint `m1`/`ep` (`*`, with `ordering`) and `n` changes of `pay_1`,
/// 10 ms apart from `NOW + 10`; their delivery ids, oldest first.
async fn lane(s: &dyn Store, ordering: Ordering, n: u64) -> Vec<String> {
    let ep = EndpointRecord {
        ordering,
        ..api_ep("m1", "ep", &["*"], NOW)
    };
    create(s, ep).await;
    let key = PaymentKey::new("m1", "pay_1");
    let mut ids = Vec::new();
    for i in 0..n {
        let at = NOW + 10 * (i as i64 + 1);
        ids.push(dlv(&emit(s, &key, i, Status::Authorized, at).await, "ep"));
    }
    ids
}

/// Only the lane's head is due; the next one waits, with no due time.
pub(super) async fn lane_only_head_is_due(b: Backend) {
    let s = b.open().await;
    let ids = lane(&*s, Ordering::Fifo, 2).await;
    assert_eq!(
        due(&*s, "m1", "ep", NOW + 100).await,
        (vec![ids[0].clone()], None)
    );
    let next = get(&*s, &ids[1]).await;
    assert_eq!(
        (next.state, next.next_attempt_at),
        (DeliveryState::Pending, None)
    );
}

/// A success makes the next one due at once (at the attempt's time).
pub(super) async fn lane_success_makes_next_due_at_once(b: Backend) {
    let s = b.open().await;
    let ids = lane(&*s, Ordering::Fifo, 2).await;
    let t = NOW + 500;
    record(&*s, attempt(&ids[0], t, 200, AttemptOutcome::Succeeded)).await;
    assert_eq!(get(&*s, &ids[0]).await.state, DeliveryState::Succeeded);
    assert_eq!(get(&*s, &ids[1]).await.next_attempt_at, Some(t));
    assert_eq!(due(&*s, "m1", "ep", t - 1).await, (vec![], Some(t)));
    assert_eq!(due(&*s, "m1", "ep", t).await, (vec![ids[1].clone()], None));
}

/// A death advances the lane just the same.
pub(super) async fn lane_dead_makes_next_due_at_once(b: Backend) {
    let s = b.open().await;
    let ids = lane(&*s, Ordering::Fifo, 3).await;
    let t = NOW + 500;
    record(&*s, attempt(&ids[0], t, 500, AttemptOutcome::Dead)).await;
    assert_eq!(get(&*s, &ids[0]).await.state, DeliveryState::Dead);
    assert_eq!(get(&*s, &ids[1]).await.next_attempt_at, Some(t));
    assert_eq!(get(&*s, &ids[2]).await.next_attempt_at, None);
    assert_eq!(due(&*s, "m1", "ep", t).await, (vec![ids[1].clone()], None));
}

/// A retry keeps the lane blocked until its time; then the same head goes.
pub(super) async fn lane_retry_blocks_until_its_time(b: Backend) {
    let s = b.open().await;
    let ids = lane(&*s, Ordering::Fifo, 2).await;
    let at = NOW + 5_000;
    record(
        &*s,
        attempt(&ids[0], NOW + 500, 503, AttemptOutcome::Retry { at }),
    )
    .await;
    assert_eq!(due(&*s, "m1", "ep", at - 1).await, (vec![], Some(at)));
    assert_eq!(due(&*s, "m1", "ep", at).await, (vec![ids[0].clone()], None));
    assert_eq!(get(&*s, &ids[0]).await.next_attempt_at, Some(at));
    assert_eq!(get(&*s, &ids[1]).await.next_attempt_at, None);
}

/// Two payments' lanes do not wait for each other; heads come oldest due first.
pub(super) async fn lanes_of_two_payments_are_independent(b: Backend) {
    let s = b.open().await;
    let ids = lane(&*s, Ordering::Fifo, 2).await;
    let other = emit(
        &*s,
        &PaymentKey::new("m1", "pay_2"),
        0,
        Status::Authorized,
        NOW + 30,
    )
    .await;
    let other = dlv(&other, "ep");
    let (due_now, _) = due(&*s, "m1", "ep", NOW + 100).await;
    assert_eq!(due_now, [ids[0].clone(), other.clone()]);

    let at = NOW + 5_000;
    record(
        &*s,
        attempt(&ids[0], NOW + 100, 500, AttemptOutcome::Retry { at }),
    )
    .await;
    assert_eq!(
        due(&*s, "m1", "ep", NOW + 100).await,
        (vec![other.clone()], Some(at))
    );
    record(
        &*s,
        attempt(&other, NOW + 101, 200, AttemptOutcome::Succeeded),
    )
    .await;
    assert_eq!(due(&*s, "m1", "ep", NOW + 101).await, (vec![], Some(at)));
}

/// `skip` leaves out deliveries in flight; `limit` caps the heads, and
/// `next_at` tells when the first one left out is due.
pub(super) async fn due_skips_in_flight_and_limits(b: Backend) {
    let s = b.open().await;
    let first = lane(&*s, Ordering::Fifo, 1).await.remove(0);
    let mut heads = vec![first];
    for (i, p) in ["pay_2", "pay_3"].into_iter().enumerate() {
        let at = NOW + 20 + i as i64;
        let ev = emit(&*s, &PaymentKey::new("m1", p), 0, Status::Authorized, at).await;
        heads.push(dlv(&ev, "ep"));
    }
    let ids = |d: Due| -> Vec<String> { d.deliveries.into_iter().map(|d| d.id).collect() };
    let skip = [heads[0].clone()];
    let d = s
        .due_deliveries("m1", "ep", NOW + 100, 10, &skip)
        .await
        .unwrap();
    assert_eq!(ids(d), heads[1..]);
    let d = s
        .due_deliveries("m1", "ep", NOW + 100, 1, &[])
        .await
        .unwrap();
    assert_eq!(d.next_at, Some(NOW + 20));
    assert_eq!(ids(d), heads[..1]);
    let d = s
        .due_deliveries("m1", "ep", NOW + 100, 10, &heads)
        .await
        .unwrap();
    assert!(d.deliveries.is_empty());
    assert_eq!(
        s.due_deliveries("m1", "other", NOW + 100, 10, &[])
            .await
            .unwrap()
            .next_at,
        None
    );
}

/// `latest`: a head that fails while newer changes wait is superseded with
/// all of them but the newest, which goes next, at the retry time.
pub(super) async fn latest_retry_supersedes_all_but_newest(b: Backend) {
    let s = b.open().await;
    let ids = lane(&*s, Ordering::Latest, 3).await;
    let at = NOW + 5_000;
    record(
        &*s,
        attempt(&ids[0], NOW + 500, 500, AttemptOutcome::Retry { at }),
    )
    .await;

    let (head, log) = s.delivery(&ids[0]).await.unwrap().expect("head");
    assert_eq!(
        (head.state, head.attempts, log.len()),
        (DeliveryState::Superseded, 1, 1)
    );
    assert_eq!(head.next_attempt_at, None);
    let middle = get(&*s, &ids[1]).await;
    assert_eq!(
        (middle.state, middle.next_attempt_at),
        (DeliveryState::Superseded, None)
    );
    let newest = get(&*s, &ids[2]).await;
    assert_eq!(
        (newest.state, newest.next_attempt_at),
        (DeliveryState::Pending, Some(at))
    );
    assert_eq!(due(&*s, "m1", "ep", at - 1).await, (vec![], Some(at)));
    assert_eq!(due(&*s, "m1", "ep", at).await, (vec![ids[2].clone()], None));
}

/// `fifo`: the same failure supersedes nothing; the head is retried first.
pub(super) async fn fifo_retry_supersedes_nothing(b: Backend) {
    let s = b.open().await;
    let ids = lane(&*s, Ordering::Fifo, 3).await;
    let at = NOW + 5_000;
    record(
        &*s,
        attempt(&ids[0], NOW + 500, 500, AttemptOutcome::Retry { at }),
    )
    .await;
    for id in &ids {
        assert_eq!(get(&*s, id).await.state, DeliveryState::Pending);
    }
    assert_eq!(due(&*s, "m1", "ep", at).await, (vec![ids[0].clone()], None));
    record(&*s, attempt(&ids[0], at, 200, AttemptOutcome::Succeeded)).await;
    assert_eq!(due(&*s, "m1", "ep", at).await, (vec![ids[1].clone()], None));
}

// ---- attempts ----

/// Attempts are logged in order; the delivery counts them and keeps the
/// last status and error; once it ended, an attempt changes nothing.
pub(super) async fn record_attempt_logs_and_counts(b: Backend) {
    let s = b.open().await;
    create(&*s, api_ep("m1", "ep", &["*"], NOW)).await;
    let ev = emit(
        &*s,
        &PaymentKey::new("m1", "pay_1"),
        0,
        Status::Succeeded,
        NOW + 10,
    )
    .await;
    let id = dlv(&ev, "ep");
    let tries = [
        attempt(&id, NOW + 20, 500, AttemptOutcome::Retry { at: NOW + 30 }),
        attempt(&id, NOW + 30, 503, AttemptOutcome::Retry { at: NOW + 40 }),
    ];
    for t in &tries {
        record(&*s, t.clone()).await;
    }
    let (d, log) = s.delivery(&id).await.unwrap().expect("delivery");
    assert_eq!(log, [tries[0].attempt.clone(), tries[1].attempt.clone()]);
    assert_eq!((d.attempts, d.state), (2, DeliveryState::Pending));
    assert_eq!(d.last_status, Some(503));
    assert_eq!(d.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(d.next_attempt_at, Some(NOW + 40));

    let ok = attempt(&id, NOW + 40, 200, AttemptOutcome::Succeeded);
    record(&*s, ok.clone()).await;
    let (d, log) = s.delivery(&id).await.unwrap().expect("delivery");
    assert_eq!((d.attempts, d.state), (3, DeliveryState::Succeeded));
    assert_eq!((d.last_status, d.last_error.clone()), (Some(200), None));
    assert_eq!(d.next_attempt_at, None);
    assert_eq!(log.last(), Some(&ok.attempt));

    record(&*s, attempt(&id, NOW + 50, 500, AttemptOutcome::Dead)).await;
    let (again, log2) = s.delivery(&id).await.unwrap().expect("delivery");
    assert_eq!((again, log2), (d, log));
    assert_eq!(due(&*s, "m1", "ep", NOW + 1_000).await, (vec![], None));
}

/// A 410 disables the endpoint; the delivery stays pending and due, to go
/// out once the endpoint is enabled again.
pub(super) async fn gone_disables_endpoint_keeps_delivery(b: Backend) {
    let s = b.open().await;
    create(&*s, api_ep("m1", "ep", &["*"], NOW)).await;
    let ev = emit(
        &*s,
        &PaymentKey::new("m1", "pay_1"),
        0,
        Status::Succeeded,
        NOW + 10,
    )
    .await;
    let id = dlv(&ev, "ep");
    record(&*s, attempt(&id, NOW + 20, 410, AttemptOutcome::Gone)).await;

    let ep = s.endpoint("m1", "ep").await.unwrap().expect("endpoint");
    assert!(ep.disabled);
    assert!(ep.disabled_reason.is_some());
    let d = get(&*s, &id).await;
    assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 1));
    assert_eq!(d.last_status, Some(410));
    assert_eq!(due(&*s, "m1", "ep", NOW + 20).await.0, [id]);
}

// ---- manual retries ----

/// Only a dead delivery of the merchant is retried: back to pending, due,
/// on a fresh run of the schedule.
pub(super) async fn retry_delivery_only_dead_ones(b: Backend) {
    let s = b.open().await;
    create(&*s, api_ep("m1", "ep", &["*"], NOW)).await;
    let e1 = emit(
        &*s,
        &PaymentKey::new("m1", "pay_1"),
        0,
        Status::Succeeded,
        NOW + 10,
    )
    .await;
    let e2 = emit(
        &*s,
        &PaymentKey::new("m1", "pay_2"),
        0,
        Status::Succeeded,
        NOW + 11,
    )
    .await;
    let e3 = emit(
        &*s,
        &PaymentKey::new("m1", "pay_3"),
        0,
        Status::Succeeded,
        NOW + 12,
    )
    .await;
    let (pending, ok, dead) = (dlv(&e1, "ep"), dlv(&e2, "ep"), dlv(&e3, "ep"));
    record(&*s, attempt(&ok, NOW + 20, 200, AttemptOutcome::Succeeded)).await;
    record(&*s, attempt(&dead, NOW + 20, 500, AttemptOutcome::Dead)).await;

    let unknown = delivery_id(&e1.event_id, "m1", "nope", 0, e1.created_at);
    for id in ["dlv_bogus", unknown.as_str()] {
        let r = s.retry_delivery(None, id, NOW + 30).await.unwrap();
        assert_eq!(r, Retried::NotFound);
    }
    let r = s.retry_delivery(Some("m2"), &dead, NOW + 30).await.unwrap();
    assert_eq!(r, Retried::NotFound);
    let r = s
        .retry_delivery(Some("m1"), &pending, NOW + 30)
        .await
        .unwrap();
    assert_eq!(r, Retried::NotDead(DeliveryState::Pending));
    let r = s.retry_delivery(None, &ok, NOW + 30).await.unwrap();
    assert_eq!(r, Retried::NotDead(DeliveryState::Succeeded));
    assert_eq!(get(&*s, &dead).await.state, DeliveryState::Dead);

    let Retried::Queued(q) = s.retry_delivery(Some("m1"), &dead, NOW + 30).await.unwrap() else {
        panic!("a dead delivery is retried");
    };
    assert_eq!(q.id, dead);
    assert_eq!(q.state, DeliveryState::Pending);
    assert_eq!((q.attempts, q.retry_from), (1, 1));
    assert_eq!(q.next_attempt_at, Some(NOW + 30));
    assert_eq!(get(&*s, &dead).await, *q);
    let (due_now, _) = due(&*s, "m1", "ep", NOW + 30).await;
    assert_eq!(due_now, [pending, dead]);
}

// ---- restart ----

/// Endpoints and pending deliveries survive a restart; the lane's head is
/// due after it, and its order holds.
pub(super) async fn restart_keeps_endpoints_and_deliveries(b: Backend) {
    let s = b.open().await;
    let ep = api_ep("m1", "ep", &["*"], NOW);
    create(&*s, ep.clone()).await;
    let key = PaymentKey::new("m1", "pay_1");
    let e1 = emit(&*s, &key, 0, Status::Authorized, NOW + 10).await;
    let e2 = emit(&*s, &key, 1, Status::Succeeded, NOW + 20).await;
    let before = listed(&*s, of("m1")).await;
    s.close();
    drop(s);

    let s = b.open().await;
    assert_eq!(s.endpoints(None).await.unwrap(), [ep]);
    assert_eq!(listed(&*s, of("m1")).await, before);
    let (d1, d2) = (dlv(&e1, "ep"), dlv(&e2, "ep"));
    assert_eq!(
        due(&*s, "m1", "ep", NOW + 100).await,
        (vec![d1.clone()], None)
    );
    record(&*s, attempt(&d1, NOW + 100, 200, AttemptOutcome::Succeeded)).await;
    assert_eq!(due(&*s, "m1", "ep", NOW + 100).await.0, [d2]);
}

/// Two changes of one payment in one plan queue in order: one head.
pub(super) async fn lane_of_one_plan_keeps_order(b: Backend) {
    let s = b.open().await;
    create(&*s, api_ep("m1", "ep", &["*"], NOW)).await;
    let key = PaymentKey::new("m1", "pay_1");
    let w = accept_one(&*s, "stripe", "evt_1", NOW + 10).await;
    let c1 = change(&w, 0, &key, 0, Status::Authorized, NOW + 10);
    let c2 = change(&w, 1, &key, 1, Status::Succeeded, NOW + 10);
    let ids: Vec<String> = [&c1, &c2]
        .map(|c| dlv(c.event.as_ref().expect("event"), "ep"))
        .into();
    apply_done(&*s, complete(&w, vec![c1, c2], NOW + 10)).await;
    assert_eq!(
        due(&*s, "m1", "ep", NOW + 10).await,
        (vec![ids[0].clone()], None)
    );
    assert_eq!(get(&*s, &ids[1]).await.next_attempt_at, None);
    record(
        &*s,
        attempt(&ids[0], NOW + 20, 200, AttemptOutcome::Succeeded),
    )
    .await;
    assert_eq!(due(&*s, "m1", "ep", NOW + 20).await.0, [ids[1].clone()]);
}

/// `latest`: a change arriving behind a head that failed supersedes the
/// ones waiting between them; the head keeps its retry.
pub(super) async fn latest_new_change_behind_failed_head_supersedes_waiting(b: Backend) {
    let s = b.open().await;
    let mut ids = lane(&*s, Ordering::Latest, 1).await;
    let at = NOW + 5_000;
    record(
        &*s,
        attempt(&ids[0], NOW + 15, 500, AttemptOutcome::Retry { at }),
    )
    .await;
    let key = PaymentKey::new("m1", "pay_1");
    for (base, t) in [(1, NOW + 20), (2, NOW + 30)] {
        ids.push(dlv(
            &emit(&*s, &key, base, Status::Authorized, t).await,
            "ep",
        ));
    }
    // The head waits for its retry (not in flight): it and the change behind
    // it are superseded; only the newest goes, at the head's retry time.
    assert_eq!(get(&*s, &ids[0]).await.state, DeliveryState::Superseded);
    assert_eq!(get(&*s, &ids[1]).await.state, DeliveryState::Superseded);
    let newest = get(&*s, &ids[2]).await;
    assert_eq!(newest.state, DeliveryState::Pending);
    assert_eq!(newest.next_attempt_at, Some(at));
    assert_eq!(due(&*s, "m1", "ep", at - 1).await, (vec![], Some(at)));
    assert_eq!(due(&*s, "m1", "ep", at).await, (vec![ids[2].clone()], None));
}
