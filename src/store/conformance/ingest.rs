//! Ingest: `accept` (dedupe), `request`, the task of an accepted request,
//! `next_work`, and `close` + reopen.

use std::time::Instant;

use super::*;

/// Same provider and key within the window: the original request id and
/// its task state, and nothing new stored or handed out.
pub(super) async fn accept_new_then_duplicate(b: Backend) {
    let s = b.open().await;
    let first = ipn("stripe", "evt_1", NOW);
    let id = first.request.request_id;
    assert_eq!(s.accept(first, NOW).await.unwrap(), Accepted::New);

    let again = ipn("stripe", "evt_1", NOW + 1_000);
    let again_id = again.request.request_id;
    assert_eq!(
        s.accept(again, NOW + 1_000).await.unwrap(),
        Accepted::Duplicate {
            request_id: id,
            state: Some(TaskState::Processing)
        }
    );
    assert_eq!(s.request(again_id).await.unwrap(), None);
    assert_eq!(s.task(again_id).await.unwrap(), None);

    let w = take(&*s, 1).await.remove(0);
    assert_eq!(w.request.request_id, id);
    apply_done(&*s, complete(&w, vec![], NOW + 2_000)).await;
    assert_eq!(
        s.accept(ipn("stripe", "evt_1", NOW + 3_000), NOW + 3_000)
            .await
            .unwrap(),
        Accepted::Duplicate {
            request_id: id,
            state: Some(TaskState::Completed)
        }
    );
    assert_no_work(&*s).await;
}

/// Once the window has passed, the key is accepted anew, and later
/// duplicates name the new request.
pub(super) async fn accept_after_window_is_new(b: Backend) {
    let s = b.open().await;
    let a = ipn("stripe", "evt_1", NOW);
    let a_id = a.request.request_id;
    assert_eq!(s.accept(a, NOW).await.unwrap(), Accepted::New);
    let late = NOW + WINDOW - 1;
    assert_eq!(
        s.accept(ipn("stripe", "evt_1", late), late).await.unwrap(),
        Accepted::Duplicate {
            request_id: a_id,
            state: Some(TaskState::Processing)
        }
    );

    let after = NOW + WINDOW + 1;
    let b2 = ipn("stripe", "evt_1", after);
    let b_id = b2.request.request_id;
    assert_eq!(s.accept(b2, after).await.unwrap(), Accepted::New);
    assert_eq!(
        s.accept(ipn("stripe", "evt_1", after + 1), after + 1)
            .await
            .unwrap(),
        Accepted::Duplicate {
            request_id: b_id,
            state: Some(TaskState::Processing)
        }
    );
    let got: Vec<Uuid> = take(&*s, 2)
        .await
        .iter()
        .map(|w| w.request.request_id)
        .collect();
    assert_eq!(got, [a_id, b_id]);
}

/// Dedupe keys are per provider.
pub(super) async fn accept_same_key_other_provider_is_new(b: Backend) {
    let s = b.open().await;
    let a = ipn("stripe", "evt_1", NOW);
    let a_id = a.request.request_id;
    let o = ipn("adyen", "evt_1", NOW + 1);
    let o_id = o.request.request_id;
    assert_eq!(s.accept(a, NOW).await.unwrap(), Accepted::New);
    assert_eq!(s.accept(o, NOW + 1).await.unwrap(), Accepted::New);
    for (provider, id) in [("stripe", a_id), ("adyen", o_id)] {
        assert_eq!(
            s.accept(ipn(provider, "evt_1", NOW + 2), NOW + 2)
                .await
                .unwrap(),
            Accepted::Duplicate {
                request_id: id,
                state: Some(TaskState::Processing)
            },
            "{provider}"
        );
    }
}

/// A batch's item keys name the batch unless another request brought the
/// item first: a single request of an item is then its duplicate, and
/// `event_owner` says who brought each key, while it counts.
pub(super) async fn accept_batch_items_name_their_first_request(b: Backend) {
    let s = b.open().await;
    let mut batch = ipn("adyen", "id:a,b", NOW);
    batch.item_keys = vec!["id:a".into(), "id:b".into()];
    let batch_id = batch.request.request_id;
    assert_eq!(s.accept(batch, NOW).await.unwrap(), Accepted::New);

    let owner = |key: &'static str, at: i64| {
        let s = s.clone();
        async move { s.event_owner("adyen", key, at, WINDOW).await.unwrap() }
    };
    assert_eq!(owner("id:a,b", NOW).await, Some(batch_id));
    assert_eq!(owner("id:b", NOW).await, Some(batch_id));
    assert_eq!(owner("id:c", NOW).await, None);
    assert_eq!(
        s.event_owner("stripe", "id:b", NOW, WINDOW).await.unwrap(),
        None
    );
    assert_eq!(
        s.accept(ipn("adyen", "id:a", NOW + 1), NOW + 1)
            .await
            .unwrap(),
        Accepted::Duplicate {
            request_id: batch_id,
            state: Some(TaskState::Processing)
        }
    );

    // A later batch repeating b: new as a whole, b still names the first.
    let mut later = ipn("adyen", "id:b,c", NOW + 2);
    later.item_keys = vec!["id:b".into(), "id:c".into()];
    let later_id = later.request.request_id;
    assert_eq!(s.accept(later, NOW + 2).await.unwrap(), Accepted::New);
    assert_eq!(owner("id:b", NOW + 2).await, Some(batch_id));
    assert_eq!(owner("id:c", NOW + 2).await, Some(later_id));
    // Past the window a key names nobody.
    assert_eq!(owner("id:b", NOW + WINDOW).await, None);
    assert_eq!(take(&*s, 2).await.len(), 2);
}

/// Right after accept the task exists and is processing; unknown ids are none.
pub(super) async fn accepted_task_is_processing(b: Backend) {
    let s = b.open().await;
    let n = ipn("stripe", "evt_1", NOW);
    let id = n.request.request_id;
    s.accept(n, NOW).await.unwrap();
    let t = s
        .task(id)
        .await
        .unwrap()
        .expect("task of an accepted request");
    assert_eq!(t.request_id, id);
    assert_eq!(t.provider, "stripe");
    assert_eq!(t.state, TaskState::Processing);
    assert_eq!(t.finished_at, None);
    assert!(t.events.is_empty());
    assert_eq!(t.error, None);
    assert!(!t.error_read);

    let unknown = Uuid::new_v4();
    assert_eq!(s.task(unknown).await.unwrap(), None);
    assert_eq!(s.request(unknown).await.unwrap(), None);
}

/// `request()` and the work item give back the request exactly as accepted.
pub(super) async fn request_is_kept_byte_for_byte(b: Backend) {
    let s = b.open().await;
    let mut n = ipn("paymentsos", "evt_bytes", NOW);
    n.request.body = vec![0x00, 0xff, 0xfe, b'\r', b'\n', 0x80, b'{', b'}', 0x00];
    n.request.content_type = Some("application/x-www-form-urlencoded; charset=latin1".into());
    n.request.headers = vec![
        ("x-signature".into(), "t=1,v1=abc".into()),
        ("x-forwarded-for".into(), "198.51.100.7".into()),
        ("x-forwarded-for".into(), "203.0.113.9".into()),
        (
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ),
    ];
    n.request.peer = Some("[2001:db8::1]:443".into());
    let raw = n.request.clone();
    s.accept(n, NOW).await.unwrap();
    assert_eq!(s.request(raw.request_id).await.unwrap(), Some(raw.clone()));
    let w = take(&*s, 1).await.remove(0);
    assert_eq!(*w.request, raw);
}

/// Accepted requests come out oldest first, in limited batches, each once.
pub(super) async fn next_work_oldest_first_each_once(b: Backend) {
    let s = b.open().await;
    let mut accepted = Vec::new();
    for i in 0..5 {
        let n = ipn("stripe", &format!("evt_{i}"), NOW + i);
        accepted.push(n.request.request_id);
        s.accept(n, NOW + i).await.unwrap();
    }
    let first = s.next_work(2, WAIT).await.unwrap();
    assert!(
        !first.is_empty() && first.len() <= 2,
        "limit 2, got {}",
        first.len()
    );
    let mut work = first;
    let rest = 5 - work.len();
    work.extend(take(&*s, rest).await);
    let got: Vec<Uuid> = work.iter().map(|w| w.request.request_id).collect();
    assert_eq!(got, accepted);
    assert!(
        work.windows(2).all(|p| p[0].id < p[1].id),
        "work ids follow arrival"
    );
    assert_no_work(&*s).await;
}

/// With nothing to hand out, `next_work` returns empty after about `wait`.
pub(super) async fn next_work_waits_at_most_wait(b: Backend) {
    let s = b.open().await;
    let wait = Duration::from_millis(200);
    let started = Instant::now();
    let got = tokio::time::timeout(wait + Duration::from_secs(5), s.next_work(10, wait))
        .await
        .expect("next_work overran its wait")
        .unwrap();
    assert!(got.is_empty());
    assert!(started.elapsed() < wait + Duration::from_secs(5));
}

/// A waiting `next_work` returns the request accepted meanwhile.
pub(super) async fn next_work_wakes_on_accept(b: Backend) {
    let s = b.open().await;
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.next_work(10, WAIT).await })
    };
    tokio::task::yield_now().await;
    let n = ipn("stripe", "evt_1", NOW);
    let id = n.request.request_id;
    s.accept(n, NOW).await.unwrap();
    let got = waiter.await.unwrap().unwrap();
    let got: Vec<Uuid> = got.iter().map(|w| w.request.request_id).collect();
    assert_eq!(got, [id]);
}

/// After a restart, work handed out but not applied is handed out again;
/// applied work is not, and its results are kept.
pub(super) async fn reopen_hands_out_unapplied_work_only(b: Backend) {
    let s = b.open().await;
    let key = PaymentKey::new("m1", "pay_1");
    let (done, failed, open) = (
        ipn("stripe", "evt_a", NOW),
        ipn("stripe", "evt_b", NOW + 1),
        ipn("stripe", "evt_c", NOW + 2),
    );
    let ids = [
        done.request.request_id,
        failed.request.request_id,
        open.request.request_id,
    ];
    for (n, at) in [(done, NOW), (failed, NOW + 1), (open, NOW + 2)] {
        s.accept(n, at).await.unwrap();
    }
    let work = take(&*s, 3).await;
    let c = change(&work[0], 0, &key, 0, Status::Authorized, NOW + 10);
    apply_done(&*s, complete(&work[0], vec![c.clone()], NOW + 10)).await;
    apply_done(&*s, fail(&work[1], NOW + 10)).await;
    s.close();
    s.close();
    drop(s);

    let s = b.open().await;
    let again = take(&*s, 1).await;
    assert_eq!(again[0].request.request_id, ids[2]);
    assert_no_work(&*s).await;
    assert_eq!(state(&*s, ids[0]).await, Some(TaskState::Completed));
    assert_eq!(state(&*s, ids[1]).await, Some(TaskState::Error));
    assert_eq!(state(&*s, ids[2]).await, Some(TaskState::Processing));
    assert_eq!(s.payment(&key).await.unwrap().map(|p| p.version), Some(1));
    assert_eq!(
        s.history(&key, 10).await.unwrap(),
        std::slice::from_ref(&c.history)
    );
    assert_eq!(feed(&*s, "m1", None, None, 10).await, carried(&[&c]));

    let c2 = change(&again[0], 0, &key, 1, Status::Succeeded, NOW + 20);
    apply_done(&*s, complete(&again[0], vec![c2], NOW + 20)).await;
    assert_eq!(state(&*s, ids[2]).await, Some(TaskState::Completed));
}

/// `close` can be called twice; a write after it is refused, not lost silently.
pub(super) async fn close_is_idempotent_and_refuses_writes(b: Backend) {
    let s = b.open().await;
    s.accept(ipn("stripe", "evt_1", NOW), NOW).await.unwrap();
    s.close();
    s.close();
    let res = s.accept(ipn("stripe", "evt_2", NOW + 1), NOW + 1).await;
    assert!(
        matches!(res, Err(StoreError::Closed)),
        "accept after close: {res:?}"
    );
}
