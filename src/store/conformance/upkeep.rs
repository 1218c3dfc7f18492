//! Operations: the quarantine, `probe`, `acks_waiting`, `backlog`, retention
//! (`purge_expired`), and the event id scheme.

use super::*;

fn quarantined_request(i: i64) -> QuarantineRecord {
    QuarantineRecord {
        provider: "stripe".into(),
        received_at: NOW + i,
        reason: format!("bad signature #{i}"),
        peer: Some("192.0.2.1".into()),
        headers: vec![("x-signature".into(), format!("v1={i}"))],
        body_head: vec![0xff, i as u8],
        body_len: 2,
        body_sha256: format!("{i:064x}"),
    }
}

fn retention() -> RetentionMs {
    RetentionMs {
        dedupe_window: WINDOW,
        events: EVENTS,
    }
}

/// The quarantine lists newest first, up to `limit`.
pub(super) async fn quarantined_newest_first(b: Backend) {
    let s = b.open().await;
    assert!(s.quarantined(10).await.unwrap().is_empty());
    for i in 0..3 {
        s.quarantine(quarantined_request(i)).await.unwrap();
    }
    let all: Vec<QuarantineRecord> = (0..3).rev().map(quarantined_request).collect();
    assert_eq!(s.quarantined(10).await.unwrap(), all);
    assert_eq!(s.quarantined(2).await.unwrap(), all[..2]);
}

/// Only the last 1000 quarantined requests are kept.
pub(super) async fn quarantine_keeps_last_1000(b: Backend) {
    let s = b.open().await;
    for i in 0..1005 {
        s.quarantine(quarantined_request(i)).await.unwrap();
    }
    let kept = s.quarantined(2000).await.unwrap();
    assert_eq!(kept.len(), 1000);
    assert_eq!(kept[0], quarantined_request(1004));
    assert_eq!(kept[999], quarantined_request(5));
}

/// A healthy store passes the readiness probe (repeatedly) and the probe
/// leaves nothing a caller can see.
pub(super) async fn probe_succeeds_on_healthy_store(b: Backend) {
    let s = b.open().await;
    s.probe(NOW).await.expect("probe");
    s.probe(NOW + 1).await.expect("probe again");
    assert!(s.tasks(None, None, 10).await.unwrap().is_empty());
    assert!(s.quarantined(10).await.unwrap().is_empty());
    assert_no_work(&*s).await;
}

/// No acknowledgement waits on a fresh store, nor once a durable write
/// (the probe) has returned and nothing else is in flight.
pub(super) async fn acks_waiting_false_when_idle(b: Backend) {
    let s = b.open().await;
    assert!(!s.acks_waiting());
    let w = accept_one(&*s, "stripe", "evt_1", NOW).await;
    apply_done(&*s, complete(&w, vec![], NOW + 10)).await;
    s.probe(NOW + 20).await.unwrap();
    assert!(!s.acks_waiting());
}

/// `backlog` counts the accepted requests not yet applied: new ones, not
/// duplicates; an applied or failed one leaves it, a reprocessed one comes
/// back; the count survives a reopen.
pub(super) async fn backlog_counts_unapplied_requests(b: Backend) {
    let s = b.open().await;
    assert_eq!(s.backlog(), 0);
    let first = accept_one(&*s, "stripe", "evt_1", NOW).await;
    let second = accept_one(&*s, "stripe", "evt_2", NOW).await;
    assert_eq!(s.backlog(), 2);
    let dup = s
        .accept(ipn("stripe", "evt_1", NOW + 1), NOW + 1)
        .await
        .unwrap();
    assert!(matches!(dup, Accepted::Duplicate { .. }), "{dup:?}");
    assert_eq!(s.backlog(), 2, "a duplicate waits for nothing");
    apply_done(&*s, complete(&first, vec![], NOW + 10)).await;
    assert_eq!(s.backlog(), 1);
    apply_done(&*s, fail(&second, NOW + 10)).await;
    assert_eq!(s.backlog(), 0);
    let id = second.request.request_id;
    assert_eq!(s.reprocess(id, NOW + 20).await.unwrap(), Reprocess::Queued);
    assert_eq!(s.backlog(), 1);
    settle(&*s).await;
    s.close();
    drop(s);
    let s = b.open().await;
    assert_eq!(s.backlog(), 1, "after a reopen");
}

/// Expired dedupe keys go (the key is new again even under a longer
/// window); live ones stay.
pub(super) async fn purge_drops_expired_dedupe_keys(b: Backend) {
    let s = b.open().await;
    let old = ipn("stripe", "evt_old", NOW);
    s.accept(old, NOW).await.unwrap();
    let fresh = ipn("stripe", "evt_fresh", NOW + WINDOW);
    let fresh_id = fresh.request.request_id;
    s.accept(fresh, NOW + WINDOW).await.unwrap();

    let at = NOW + WINDOW + 1;
    let p = s.purge_expired(at, retention()).await.unwrap();
    assert_eq!(p.dedupe, 1, "{p:?}");
    assert_eq!((p.requests, p.events), (0, 0), "{p:?}");

    let mut again = ipn("stripe", "evt_old", at);
    again.dedupe_window_ms = 10 * WINDOW;
    assert_eq!(s.accept(again, at).await.unwrap(), Accepted::New);
    assert_eq!(
        s.accept(ipn("stripe", "evt_fresh", at), at).await.unwrap(),
        Accepted::Duplicate {
            request_id: fresh_id,
            state: Some(TaskState::Processing)
        }
    );
}

/// Ended tasks past `events` go with their requests; recent ones stay, and
/// a processing request (first attempt or reprocessed) is never dropped.
pub(super) async fn purge_drops_ended_tasks_keeps_processing(b: Backend) {
    let s = b.open().await;
    let done = accept_one(&*s, "stripe", "evt_done", NOW).await;
    apply_done(&*s, complete(&done, vec![], NOW + 10)).await;
    let failed = accept_one(&*s, "stripe", "evt_failed", NOW).await;
    apply_done(&*s, fail(&failed, NOW + 10)).await;
    let waiting = accept_one(&*s, "stripe", "evt_waiting", NOW).await;
    let retried = accept_one(&*s, "stripe", "evt_retried", NOW).await;
    apply_done(&*s, fail(&retried, NOW + 10)).await;
    let rid = retried.request.request_id;
    assert_eq!(s.reprocess(rid, NOW + 20).await.unwrap(), Reprocess::Queued);
    let retried = take(&*s, 1).await.remove(0);
    let recent = accept_one(&*s, "stripe", "evt_recent", NOW + EVENTS).await;
    apply_done(&*s, complete(&recent, vec![], NOW + EVENTS + 10)).await;

    let p = s
        .purge_expired(NOW + EVENTS + 30, retention())
        .await
        .unwrap();
    assert_eq!(p.requests, 2, "{p:?}");
    for w in [&done, &failed] {
        let id = w.request.request_id;
        assert_eq!(s.task(id).await.unwrap(), None, "task {id}");
        assert_eq!(s.request(id).await.unwrap(), None, "request {id}");
    }
    for (w, st) in [
        (&waiting, TaskState::Processing),
        (&retried, TaskState::Processing),
        (&recent, TaskState::Completed),
    ] {
        let id = w.request.request_id;
        assert_eq!(state(&*s, id).await, Some(st), "task {id}");
        assert_eq!(s.request(id).await.unwrap().as_ref(), Some(&*w.request));
    }
    assert_no_work(&*s).await;
    apply_done(&*s, complete(&waiting, vec![], NOW + EVENTS + 40)).await;
    apply_done(&*s, complete(&retried, vec![], NOW + EVENTS + 40)).await;
}

/// Events past `events` leave the feed (and stop being cursors); newer
/// ones stay.
pub(super) async fn purge_drops_expired_events(b: Backend) {
    let s = b.open().await;
    let key = PaymentKey::new("m1", "pay_1");
    let wa = accept_one(&*s, "stripe", "evt_a", NOW).await;
    let ca = change(&wa, 0, &key, 0, Status::Authorized, NOW);
    apply_done(&*s, complete(&wa, vec![ca.clone()], NOW)).await;
    let wb = accept_one(&*s, "stripe", "evt_b", NOW + EVENTS).await;
    let cb = change(&wb, 0, &key, 1, Status::Succeeded, NOW + EVENTS);
    apply_done(&*s, complete(&wb, vec![cb.clone()], NOW + EVENTS)).await;
    settle(&*s).await;

    let p = s
        .purge_expired(NOW + EVENTS + 1, retention())
        .await
        .unwrap();
    assert_eq!(p.events, 1, "{p:?}");
    assert_eq!(feed(&*s, "m1", None, None, 10).await, carried(&[&cb]));
    let gone = ca.event.as_ref().unwrap().event_id.as_str();
    assert_eq!(
        s.events("m1", None, Some(gone), 10).await.unwrap(),
        Err(UnknownCursor)
    );
}

/// Quarantined requests past `events` go; newer ones stay.
pub(super) async fn purge_drops_expired_quarantine(b: Backend) {
    let s = b.open().await;
    s.quarantine(quarantined_request(0)).await.unwrap();
    s.quarantine(quarantined_request(EVENTS)).await.unwrap();
    let p = s
        .purge_expired(NOW + EVENTS + 1, retention())
        .await
        .unwrap();
    assert_eq!(p.quarantine, 1, "{p:?}");
    assert_eq!(
        s.quarantined(10).await.unwrap(),
        [quarantined_request(EVENTS)]
    );
}

/// Event ids depend on (request, item, arrival) only: a replay names its
/// events the same, items of one request differ, and ids sort by arrival.
#[test]
fn event_id_is_deterministic_per_request_and_item() {
    let (r1, r2) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(event_id(r1, 0, NOW), event_id(r1, 0, NOW));
    assert_eq!(event_id(r1, 3, NOW), event_id(r1, 3, NOW));
    let per_item: std::collections::HashSet<String> =
        (0..100).map(|i| event_id(r1, i, NOW)).collect();
    assert_eq!(per_item.len(), 100);
    assert_ne!(event_id(r1, 0, NOW), event_id(r2, 0, NOW));
    assert_ne!(event_id(r1, 0, NOW), event_id(r1, 0, NOW + 1));
    let id = event_id(r1, 0, NOW);
    let ulid =
        ulid::Ulid::from_string(id.strip_prefix("evt_").expect("evt_ prefix")).expect("ulid");
    assert_eq!(ulid.timestamp_ms(), NOW as u64);
    assert!(event_id(r2, 0, NOW) < event_id(r1, 0, NOW + 1));
}
