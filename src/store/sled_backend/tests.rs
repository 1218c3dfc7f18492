//! Unit tests of the sled backend's own parts (the conformance suite runs
//! every `Store` verb against it from `store::conformance`).

use super::*;
use crate::store::conformance::relay::{attempt, dlv, listed, of, record};
use crate::store::conformance::NOW;

fn new_ipn(key: &str) -> NewIpn {
    NewIpn {
        request: RawRequest {
            request_id: Uuid::new_v4(),
            provider: "acme".into(),
            received_at: 1_700_000_000_000,
            content_type: None,
            headers: vec![],
            body: key.as_bytes().to_vec(),
            peer: None,
            event_key: key.into(),
        },
        doc: None,
        dedupe_window_ms: 1000,
        item_keys: Vec::new(),
    }
}

/// Accept one IPN; the id it got (the newest of the work handed out:
/// unapplied work of earlier runs is handed out again after a reopen).
async fn accept_one(s: &SledStore, key: &str) -> u64 {
    s.accept(new_ipn(key), 1_700_000_000_000).await.unwrap();
    let work = s.next_work(1000, Duration::from_secs(5)).await.unwrap();
    work.iter().map(|w| w.id.seq).max().unwrap()
}

/// Ids rise across restarts (the writer's count is committed with them).
#[tokio::test]
async fn ids_keep_rising_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let opts = SledOptions { sync: true };
    let mut seen = Vec::new();
    for round in 0..3 {
        let s = reopen(&path, opts);
        for i in 0..3 {
            seen.push(accept_one(&s, &format!("k{round}-{i}")).await);
        }
        s.close();
        drop(s);
    }
    assert!(
        seen.windows(2).all(|w| w[1] > w[0]),
        "ids must rise: {seen:?}"
    );
}

/// A store restored from a backup continues above the backup's last id
/// and keeps rising across restarts.
#[tokio::test]
async fn a_restored_store_hands_out_rising_ids_above_the_backups_floor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        // A floor far above what sled's counter reaches in this test.
        let db = ::sled::open(&path).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(writer::ID_LAST, &(1u64 << 40).to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let opts = SledOptions { sync: true };
    let mut seen = Vec::new();
    for round in 0..3 {
        let s = reopen(&path, opts);
        seen.push(accept_one(&s, &format!("k{round}")).await);
        s.close();
    }
    assert!(seen[0] > 1 << 40, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[1] > w[0]),
        "ids must rise: {seen:?}"
    );
}

#[test]
fn quarantine_values_of_both_layouts_decode() {
    let legacy = LegacyQuarantineRecord {
        provider: "acme".into(),
        received_at: 7,
        reason: "no signature matched".into(),
        peer: None,
        headers: vec![("x-signature".into(), "00".into())],
        body: vec![b'x'; 5000],
    };
    let got = dec_quarantine(&enc(&legacy).unwrap()).unwrap();
    assert_eq!(got.body_len, 5000);
    assert_eq!(got.body_head, vec![b'x'; QuarantineRecord::BODY_HEAD]);
    assert_eq!(got, QuarantineRecord::from(legacy));

    let current = QuarantineRecord::new("acme".into(), 8, "r".into(), None, vec![], b"abc");
    assert_eq!(dec_quarantine(&enc(&current).unwrap()).unwrap(), current);
}

/// Retention read an errored task and its request; before its removals
/// reach the writer, the task is reprocessed. The task changed, so it
/// stays, and so must its request: its new inbox entry needs it.
#[tokio::test]
async fn retention_racing_a_reprocess_keeps_the_request_of_the_reprocessed_task() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(&dir.path().join("store"), SledOptions { sync: true });
    let ipn = new_ipn("raced");
    let id = ipn.request.request_id;
    s.accept(ipn, 1_700_000_000_000).await.unwrap();
    let w = s
        .next_work(10, Duration::from_secs(5))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(s.apply(vec![failed(&w)]).await.unwrap(), [Applied::Done]);
    // What retention's scan read.
    let task = s.trees.tasks.get(id.as_bytes()).unwrap().unwrap();
    let req = s.trees.requests.get(id.as_bytes()).unwrap().unwrap();

    assert_eq!(
        s.reprocess(id, 1_700_000_000_002).await.unwrap(),
        Reprocess::Queued
    );
    let keys = vec![
        (writer::tree::TASKS, id.as_bytes().to_vec(), task),
        (writer::tree::REQUESTS, id.as_bytes().to_vec(), req),
    ];
    let removed = s
        .write(true, |reply| writer::Op::RemoveIf(keys, reply))
        .await
        .unwrap();
    assert_eq!(removed, 0);
    assert!(
        s.request(id).await.unwrap().is_some(),
        "the request is gone"
    );
    assert_eq!(
        s.task(id).await.unwrap().map(|t| t.state),
        Some(TaskState::Processing)
    );
}

/// The plan that ends `w`'s task in error (`unknown_merchant`).
fn failed(w: &Work) -> Plan {
    Plan::Fail {
        work: w.id,
        request: w.request.clone(),
        error: TaskError {
            code: "unknown_merchant".into(),
            message: "m".into(),
        },
        now: 1_700_000_000_001,
    }
}

/// Applying some of the accepted entries keeps the others, which come back
/// (and only they) after a reopen, and the inbox depth counts entries, not
/// records.
#[tokio::test]
async fn applying_part_of_a_rounds_inbox_record_keeps_the_rest_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let opts = SledOptions { sync: true };
    let s = reopen(&path, opts);
    let at = 1_700_000_000_000;
    let a = |k: &str| s.accept(new_ipn(k), at);
    let got = tokio::join!(a("r0"), a("r1"), a("r2"), a("r3"), a("r4"), a("r5"));
    for r in [got.0, got.1, got.2, got.3, got.4, got.5] {
        assert_eq!(r.unwrap(), Accepted::New);
    }
    let work = s.next_work(100, Duration::from_secs(5)).await.unwrap();
    assert_eq!(work.len(), 6);
    let plans: Vec<Plan> = work.iter().step_by(2).map(failed).collect();
    assert_eq!(s.apply(plans.clone()).await.unwrap(), [Applied::Done; 3]);
    assert_eq!(s.apply(plans).await.unwrap(), [Applied::AlreadyDone; 3]);
    assert_eq!(s.stats().await.unwrap().inbox_depth, 3);
    s.close();
    drop(s);

    let s = reopen(&path, opts);
    assert_eq!(s.stats().await.unwrap().inbox_depth, 3);
    let again = s.next_work(100, Duration::from_secs(5)).await.unwrap();
    let want: Vec<WorkId> = work.iter().skip(1).step_by(2).map(|w| w.id).collect();
    assert_eq!(again.iter().map(|w| w.id).collect::<Vec<_>>(), want);
    let plans: Vec<Plan> = again.iter().map(failed).collect();
    assert_eq!(s.apply(plans).await.unwrap(), [Applied::Done; 3]);
    assert_eq!(s.trees.inbox.len(), 0, "the last entry takes its record");
}

/// A store written with one inbox key per request (16-byte values, before
/// records were grouped) hands that work out, applies it once, and counts it.
#[tokio::test]
async fn inbox_entries_written_one_per_key_are_handed_out_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let opts = SledOptions { sync: true };
    let ipn = new_ipn("old");
    let id = ipn.request.request_id;
    {
        let db = ::sled::open(&path).unwrap();
        db.open_tree("requests")
            .unwrap()
            .insert(id.as_bytes(), enc(&ipn.request).unwrap())
            .unwrap();
        db.open_tree("inbox")
            .unwrap()
            .insert(7u64.to_be_bytes(), id.as_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let s = reopen(&path, opts);
    assert_eq!(s.stats().await.unwrap().inbox_depth, 1);
    let work = s.next_work(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(work.len(), 1);
    assert_eq!(
        (work[0].id, work[0].request.request_id),
        (WorkId::single(7), id)
    );
    let plan = failed(&work[0]);
    assert_eq!(s.apply(vec![plan.clone()]).await.unwrap(), [Applied::Done]);
    assert_eq!(s.apply(vec![plan]).await.unwrap(), [Applied::AlreadyDone]);
    assert_eq!(s.stats().await.unwrap().inbox_depth, 0);
    assert_eq!(s.trees.inbox.len(), 0);
    // New work goes above the old entry.
    assert!(accept_one(&s, "new").await > 7);
}

/// One writer round of 130 accepts writes two inbox records (128 entries,
/// then 2), not one key per IPN; the entries come out in seq order.
#[test]
fn a_rounds_accepts_share_inbox_records_of_at_most_128() {
    let dir = tempfile::tempdir().unwrap();
    let db = ::sled::Config::new().path(dir.path()).open().unwrap();
    let trees = Trees::open(&db).unwrap();
    let commit = Arc::new(flush::GroupCommit::start(db.clone(), dir.path(), 0).unwrap());
    let (relay, _rx) = tokio::sync::watch::channel(0u64);
    let mut w = writer::Writer::new(
        trees.clone(),
        commit,
        Arc::new(queue::WorkQueue::new()),
        Arc::new(relay),
        Arc::new(stats::Counters::open(&trees).unwrap()),
        0,
    )
    .unwrap();
    let mut replies = Vec::new();
    let ops = (0..130)
        .map(|i| {
            let ipn = new_ipn(&format!("k{i}"));
            let (tx, rx) = tokio::sync::oneshot::channel();
            replies.push(rx);
            writer::Op::Accept(
                Box::new(writer::AcceptOp {
                    value: enc(&ipn.request).unwrap(),
                    request: Arc::new(ipn.request),
                    doc: None,
                    dedupe_window_ms: 1000,
                    item_keys: Vec::new(),
                    now: 1_700_000_000_000,
                }),
                tx,
            )
        })
        .collect();
    w.round(ops);
    for mut rx in replies {
        assert_eq!(rx.try_recv().unwrap().0.unwrap(), Accepted::New);
    }
    let sizes: Vec<usize> = trees
        .inbox
        .iter()
        .values()
        .map(|v| inbox::count(&v.unwrap()))
        .collect();
    assert_eq!(sizes, [128, 2]);
    let seqs: Vec<u64> = inbox::page(&trees, 0, 1000)
        .unwrap()
        .iter()
        .map(|(w, _)| w.seq)
        .collect();
    assert_eq!(seqs, (1..=130).collect::<Vec<_>>());
}

/// Merchant `m`'s endpoint "all" (created if new) and one applied change
/// of payment `p` at NOW + `dt`, fanned out to it: the event.
async fn delivered(s: &SledStore, m: &str, p: &str, dt: i64) -> EventRecord {
    use crate::store::conformance::relay::{api_ep, create, emit};
    if s.endpoint(m, "all").await.unwrap().is_none() {
        create(s, api_ep(m, "all", &["*"], NOW)).await;
    }
    let key = PaymentKey::new(m, p);
    emit(s, &key, 0, crate::domain::Status::Succeeded, NOW + dt).await
}

/// A merchant's delivery listing reads its own deliveries only (through
/// `deliveries_by_merchant`), not every merchant's: another merchant's
/// record, unreadable here, is never touched.
#[tokio::test]
async fn a_merchants_delivery_listing_reads_only_its_own_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(dir.path(), SledOptions { sync: true });
    let own = delivered(&s, "m1", "p1", 1).await;
    let other = delivered(&s, "m2", "p2", 2).await;
    let ulid = relay_ops::delivery_ulid(&dlv(&other, "all")).unwrap();
    s.trees
        .deliveries
        .insert(ulid, &b"not a delivery record"[..])
        .unwrap();

    let got: Vec<String> = listed(&s, of("m1"))
        .await
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(got, [dlv(&own, "all")]);
    // The record really is unreadable: a listing of every merchant's fails.
    let all = DeliveryFilter {
        limit: 100,
        ..Default::default()
    };
    assert!(s.deliveries(all).await.is_err());
}

/// A store written before the index existed gets it at open: each
/// merchant lists its deliveries as before.
#[tokio::test]
async fn a_store_without_the_merchant_index_builds_it_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SledOptions { sync: true };
    let (a, b) = {
        let s = reopen(dir.path(), opts);
        let a = delivered(&s, "m1", "p1", 1).await;
        let b = delivered(&s, "m2", "p2", 2).await;
        // As an earlier build left it: no index, no mark.
        s.trees.by_merchant.clear().unwrap();
        s.trees.meta.remove(b"by_merchant_built").unwrap();
        assert!(listed(&s, of("m1")).await.is_empty());
        s.close();
        (a, b)
    };
    let s = reopen(dir.path(), opts);
    let ids = |ds: Vec<DeliveryRecord>| ds.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(ids(listed(&s, of("m1")).await), [dlv(&a, "all")]);
    assert_eq!(ids(listed(&s, of("m2")).await), [dlv(&b, "all")]);
}

/// Retention drops a delivery's index entry with it, in the same write.
#[tokio::test]
async fn retention_drops_a_deliverys_merchant_index_entry_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(dir.path(), SledOptions { sync: true });
    let ev = delivered(&s, "m1", "p1", 1).await;
    let id = dlv(&ev, "all");
    record(&s, attempt(&id, NOW + 2, 200, AttemptOutcome::Succeeded)).await;
    assert_eq!(s.trees.by_merchant.len(), 1);
    let r = RetentionMs {
        dedupe_window: 1000,
        events: 1000,
    };
    let p = s.purge_expired(NOW + 10_000, r).await.unwrap();
    assert_eq!(p.deliveries, 1, "{p:?}");
    assert!(listed(&s, of("m1")).await.is_empty());
    assert_eq!(s.trees.by_merchant.len(), 0, "the index entry went too");
}
