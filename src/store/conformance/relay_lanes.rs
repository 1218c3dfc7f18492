//! Lanes: a payment's deliveries to one endpoint go out one at a time, in
//! order (`due_deliveries`, `record_attempt`), and `ordering = "latest"`
//! supersedes the changes waiting behind a failing one.

use super::relay::{api_ep, attempt, create, dlv, due, emit, get, record};
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
