//! Applying plans (`apply`), error results (`take_error`) and putting
//! errored requests back to work (`reprocess`).

use super::*;

/// A Complete plan ends the task with its events and writes the payment,
/// its history and the event.
pub(super) async fn apply_complete_writes_task_payment_history_event(b: Backend) {
    let s = b.open().await;
    let w = accept_one(&*s, "stripe", "evt_1", NOW).await;
    let key = PaymentKey::new("m1", "pay_1");
    let c = change(&w, 0, &key, 0, Status::Authorized, NOW + 10);
    apply_done(&*s, complete(&w, vec![c.clone()], NOW + 10)).await;

    let t = s.task(w.request.request_id).await.unwrap().expect("task");
    assert_eq!(t.state, TaskState::Completed);
    assert_eq!(t.events, task_events(std::slice::from_ref(&c)));
    assert_eq!(t.finished_at, Some(NOW + 10));
    assert_eq!(t.error, None);

    let p = s.payment(&key).await.unwrap().expect("payment");
    assert_eq!(p.key(), key);
    assert_eq!(p.provider.as_deref(), Some("stripe"));
    assert_eq!(p.state, c.state);
    assert!(!p.registered);
    assert_eq!(p.version, 1);
    assert_eq!((p.created_at, p.updated_at), (NOW + 10, NOW + 10));

    assert_eq!(
        s.history(&key, 10).await.unwrap(),
        std::slice::from_ref(&c.history)
    );
    settle(&*s).await;
    assert_eq!(feed(&*s, "m1", None, None, 10).await, carried(&[&c]));
    assert_no_work(&*s).await;
}

/// A plan applied again (later, or twice in one call) is `AlreadyDone`
/// and writes nothing twice.
pub(super) async fn apply_same_plan_twice_is_already_done(b: Backend) {
    let s = b.open().await;
    let (k1, k2) = (
        PaymentKey::new("m1", "pay_1"),
        PaymentKey::new("m1", "pay_2"),
    );
    let wa = accept_one(&*s, "stripe", "evt_a", NOW).await;
    let ca = change(&wa, 0, &k1, 0, Status::Authorized, NOW + 10);
    let pa = complete(&wa, vec![ca.clone()], NOW + 10);
    apply_done(&*s, pa.clone()).await;
    assert_eq!(s.apply(vec![pa]).await.unwrap(), [Applied::AlreadyDone]);

    let wb = accept_one(&*s, "stripe", "evt_b", NOW + 1).await;
    let cb = change(&wb, 0, &k2, 0, Status::Authorized, NOW + 11);
    let pb = complete(&wb, vec![cb.clone()], NOW + 11);
    assert_eq!(
        s.apply(vec![pb.clone(), pb]).await.unwrap(),
        [Applied::Done, Applied::AlreadyDone]
    );

    for (key, c) in [(&k1, &ca), (&k2, &cb)] {
        assert_eq!(s.payment(key).await.unwrap().map(|p| p.version), Some(1));
        assert_eq!(
            s.history(key, 10).await.unwrap(),
            std::slice::from_ref(&c.history)
        );
    }
    let t = s.task(wb.request.request_id).await.unwrap().expect("task");
    assert_eq!(t.events.len(), 1);
    settle(&*s).await;
    assert_eq!(feed(&*s, "m1", None, None, 10).await, carried(&[&ca, &cb]));
}

/// A plan decided on a payment that moved since is refused whole; decided
/// again on the current version, the same work applies.
pub(super) async fn apply_stale_base_version_conflicts_and_writes_nothing(b: Backend) {
    let s = b.open().await;
    let key = PaymentKey::new("m1", "pay_1");
    let wa = accept_one(&*s, "stripe", "evt_a", NOW).await;
    let ca = change(&wa, 0, &key, 0, Status::Authorized, NOW + 10);
    apply_done(&*s, complete(&wa, vec![ca.clone()], NOW + 10)).await;

    let wb = accept_one(&*s, "stripe", "evt_b", NOW + 1).await;
    let stale = change(&wb, 0, &key, 0, Status::Succeeded, NOW + 11);
    let plan = complete(&wb, vec![stale], NOW + 11);
    assert_eq!(s.apply(vec![plan]).await.unwrap(), [Applied::Conflict]);
    let t = s.task(wb.request.request_id).await.unwrap().expect("task");
    assert_eq!(t.state, TaskState::Processing);
    assert_eq!(t.finished_at, None);
    let p = s.payment(&key).await.unwrap().expect("payment");
    assert_eq!((p.version, p.state.clone()), (1, ca.state.clone()));
    assert_eq!(
        s.history(&key, 10).await.unwrap(),
        std::slice::from_ref(&ca.history)
    );
    settle(&*s).await;
    assert_eq!(feed(&*s, "m1", None, None, 10).await, carried(&[&ca]));

    // A base version ahead of a payment that does not exist is stale too.
    let ghost = PaymentKey::new("m1", "pay_ghost");
    let g = change(&wb, 0, &ghost, 1, Status::Succeeded, NOW + 12);
    let plan = complete(&wb, vec![g], NOW + 12);
    assert_eq!(s.apply(vec![plan]).await.unwrap(), [Applied::Conflict]);
    assert_eq!(s.payment(&ghost).await.unwrap(), None);

    let cb = change(&wb, 0, &key, 1, Status::Succeeded, NOW + 13);
    apply_done(&*s, complete(&wb, vec![cb.clone()], NOW + 13)).await;
    assert_eq!(s.payment(&key).await.unwrap().map(|p| p.version), Some(2));
    assert_eq!(
        s.history(&key, 10).await.unwrap(),
        [ca.history.clone(), cb.history.clone()]
    );
}

/// A duplicate/stale item (no new state, no event) is recorded in the
/// history and counts as a version, but the feed does not show it.
pub(super) async fn apply_change_without_event_records_history_only(b: Backend) {
    let s = b.open().await;
    let key = PaymentKey::new("m1", "pay_1");
    let wa = accept_one(&*s, "stripe", "evt_a", NOW).await;
    let ca = change(&wa, 0, &key, 0, Status::Authorized, NOW + 10);
    apply_done(&*s, complete(&wa, vec![ca.clone()], NOW + 10)).await;

    let wb = accept_one(&*s, "stripe", "evt_b", NOW + 1).await;
    let mut dup = change(&wb, 0, &key, 1, Status::Authorized, NOW + 11);
    dup.state = None;
    dup.event = None;
    dup.history.outcome = Outcome::Duplicate;
    dup.history.sequence = None;
    dup.history.event_id = None;
    apply_done(&*s, complete(&wb, vec![dup.clone()], NOW + 11)).await;

    let p = s.payment(&key).await.unwrap().expect("payment");
    assert_eq!((p.version, p.state), (2, ca.state.clone()));
    assert_eq!(
        s.history(&key, 10).await.unwrap(),
        [ca.history.clone(), dup.history.clone()]
    );
    let t = s.task(wb.request.request_id).await.unwrap().expect("task");
    assert_eq!(t.events, task_events(&[dup]));
    settle(&*s).await;
    assert_eq!(feed(&*s, "m1", None, None, 10).await, carried(&[&ca]));
}

/// Several changes in one plan (two payments; two changes of one payment)
/// apply together, or not at all when one of them is stale.
pub(super) async fn apply_multi_change_plan_is_atomic(b: Backend) {
    let s = b.open().await;
    let (k1, k2, k3) = (
        PaymentKey::new("m1", "pay_1"),
        PaymentKey::new("m1", "pay_2"),
        PaymentKey::new("m1", "pay_3"),
    );
    let wa = accept_one(&*s, "stripe", "evt_a", NOW).await;
    let a = [
        change(&wa, 0, &k1, 0, Status::Authorized, NOW + 10),
        change(&wa, 1, &k2, 0, Status::Authorized, NOW + 10),
    ];
    apply_done(&*s, complete(&wa, a.to_vec(), NOW + 10)).await;
    for k in [&k1, &k2] {
        assert_eq!(s.payment(k).await.unwrap().map(|p| p.version), Some(1));
    }

    let wb = accept_one(&*s, "stripe", "evt_b", NOW + 1).await;
    let bc = [
        change(&wb, 0, &k3, 0, Status::Authorized, NOW + 11),
        change(&wb, 1, &k3, 1, Status::Succeeded, NOW + 11),
    ];
    apply_done(&*s, complete(&wb, bc.to_vec(), NOW + 11)).await;
    let p3 = s.payment(&k3).await.unwrap().expect("payment");
    assert_eq!((p3.version, p3.state.clone()), (2, bc[1].state.clone()));
    let versions: Vec<u64> = s
        .history(&k3, 10)
        .await
        .unwrap()
        .iter()
        .map(|h| h.version)
        .collect();
    assert_eq!(versions, [0, 1]);

    // First change fine, second stale: nothing of the plan is written.
    let wc = accept_one(&*s, "stripe", "evt_c", NOW + 2).await;
    let cc = vec![
        change(&wc, 0, &k1, 1, Status::Succeeded, NOW + 12),
        change(&wc, 1, &k2, 0, Status::Succeeded, NOW + 12),
    ];
    let plan = complete(&wc, cc, NOW + 12);
    assert_eq!(s.apply(vec![plan]).await.unwrap(), [Applied::Conflict]);
    let p1 = s.payment(&k1).await.unwrap().expect("payment");
    assert_eq!((p1.version, p1.state), (1, a[0].state.clone()));
    assert_eq!(s.history(&k1, 10).await.unwrap(), [a[0].history.clone()]);
    assert_eq!(
        state(&*s, wc.request.request_id).await,
        Some(TaskState::Processing)
    );
    settle(&*s).await;
    assert_eq!(
        feed(&*s, "m1", None, None, 10).await,
        carried(&[&a[0], &a[1], &bc[0], &bc[1]])
    );
}

/// Plans of one call apply in order (each sees the ones before it) and
/// get one result each, in order.
pub(super) async fn apply_several_plans_results_in_order(b: Backend) {
    let s = b.open().await;
    let key = PaymentKey::new("m1", "pay_1");
    for (i, k) in ["evt_a", "evt_b", "evt_c", "evt_d"].iter().enumerate() {
        let at = NOW + i as i64;
        assert_eq!(
            s.accept(ipn("stripe", k, at), at).await.unwrap(),
            Accepted::New
        );
    }
    let w = take(&*s, 4).await;
    let ca = change(&w[0], 0, &key, 0, Status::Authorized, NOW + 10);
    let cb = change(&w[1], 0, &key, 0, Status::Succeeded, NOW + 10);
    let cd = change(&w[3], 0, &key, 1, Status::Succeeded, NOW + 10);
    let pa = complete(&w[0], vec![ca.clone()], NOW + 10);
    let plans = vec![
        pa.clone(),
        complete(&w[1], vec![cb], NOW + 10),
        fail(&w[2], NOW + 10),
        complete(&w[3], vec![cd.clone()], NOW + 10),
        pa,
    ];
    use Applied::*;
    assert_eq!(
        s.apply(plans).await.unwrap(),
        [Done, Conflict, Done, Done, AlreadyDone]
    );
    let states = [
        Some(TaskState::Completed),
        Some(TaskState::Processing),
        Some(TaskState::Error),
        Some(TaskState::Completed),
    ];
    for (w, st) in w.iter().zip(states) {
        assert_eq!(state(&*s, w.request.request_id).await, st);
    }
    assert_eq!(s.payment(&key).await.unwrap().map(|p| p.version), Some(2));
    assert_eq!(
        s.history(&key, 10).await.unwrap(),
        [ca.history.clone(), cd.history.clone()]
    );
    settle(&*s).await;
    assert_eq!(feed(&*s, "m1", None, None, 10).await, carried(&[&ca, &cd]));
}

/// A Fail plan ends the task in error; `take_error` hands the error out
/// once, and the task keeps showing it as read.
pub(super) async fn apply_fail_then_take_error_once(b: Backend) {
    let s = b.open().await;
    let w = accept_one(&*s, "stripe", "evt_1", NOW).await;
    let id = w.request.request_id;
    apply_done(&*s, fail(&w, NOW + 10)).await;

    let t = s.task(id).await.unwrap().expect("task");
    assert_eq!(t.state, TaskState::Error);
    assert_eq!(t.error, Some(task_error()));
    assert_eq!(t.finished_at, Some(NOW + 10));
    assert!(!t.error_read);
    assert!(t.events.is_empty());

    let taken = s.take_error(id).await.unwrap().expect("an unread error");
    assert_eq!(taken.request_id, id);
    assert_eq!(taken.state, TaskState::Error);
    assert_eq!(taken.error, Some(task_error()));
    assert_eq!(s.take_error(id).await.unwrap(), None);

    let t = s.task(id).await.unwrap().expect("task");
    assert_eq!(t.state, TaskState::Error);
    assert_eq!(t.error, Some(task_error()));
    assert!(t.error_read);
    assert_no_work(&*s).await;
}

/// `take_error` gives nothing for a processing, completed or unknown task.
pub(super) async fn take_error_only_for_unread_errors(b: Backend) {
    let s = b.open().await;
    let processing = accept_one(&*s, "stripe", "evt_1", NOW).await;
    let completed = accept_one(&*s, "stripe", "evt_2", NOW + 1).await;
    apply_done(&*s, complete(&completed, vec![], NOW + 10)).await;
    for id in [
        processing.request.request_id,
        completed.request.request_id,
        Uuid::new_v4(),
    ] {
        assert_eq!(s.take_error(id).await.unwrap(), None, "{id}");
    }
    assert_eq!(
        state(&*s, processing.request.request_id).await,
        Some(TaskState::Processing)
    );
    assert_eq!(
        state(&*s, completed.request.request_id).await,
        Some(TaskState::Completed)
    );
}

pub(super) async fn reprocess_unknown_is_not_found(b: Backend) {
    let s = b.open().await;
    assert_eq!(
        s.reprocess(Uuid::new_v4(), NOW).await.unwrap(),
        Reprocess::NotFound
    );
}

/// Only errored tasks go back to work.
pub(super) async fn reprocess_only_errored_tasks(b: Backend) {
    let s = b.open().await;
    let processing = accept_one(&*s, "stripe", "evt_1", NOW).await;
    let completed = accept_one(&*s, "stripe", "evt_2", NOW + 1).await;
    apply_done(&*s, complete(&completed, vec![], NOW + 10)).await;
    assert_eq!(
        s.reprocess(processing.request.request_id, NOW + 20)
            .await
            .unwrap(),
        Reprocess::NotInError(TaskState::Processing)
    );
    assert_eq!(
        s.reprocess(completed.request.request_id, NOW + 20)
            .await
            .unwrap(),
        Reprocess::NotInError(TaskState::Completed)
    );
    assert_no_work(&*s).await;
}

/// An errored task is queued again: processing, handed out by `next_work`,
/// and completed by a plan for the new work (the old plan is done).
pub(super) async fn reprocess_errored_task_queues_it_again(b: Backend) {
    let s = b.open().await;
    let w = accept_one(&*s, "stripe", "evt_1", NOW).await;
    let id = w.request.request_id;
    let failed = fail(&w, NOW + 10);
    apply_done(&*s, failed.clone()).await;
    s.take_error(id).await.unwrap().expect("an unread error");
    assert_no_work(&*s).await;

    assert_eq!(s.reprocess(id, NOW + 20).await.unwrap(), Reprocess::Queued);
    let t = s.task(id).await.unwrap().expect("task");
    assert_eq!(t.state, TaskState::Processing);
    assert_eq!((t.error, t.finished_at), (None, None));
    assert!(t.events.is_empty());
    assert_eq!(
        s.reprocess(id, NOW + 21).await.unwrap(),
        Reprocess::NotInError(TaskState::Processing)
    );

    let again = take(&*s, 1).await.remove(0);
    assert_eq!(*again.request, *w.request);
    assert_no_work(&*s).await;
    assert_eq!(s.apply(vec![failed]).await.unwrap(), [Applied::AlreadyDone]);
    assert_eq!(state(&*s, id).await, Some(TaskState::Processing));

    let key = PaymentKey::new("m1", "pay_1");
    let c = change(&again, 0, &key, 0, Status::Authorized, NOW + 30);
    apply_done(&*s, complete(&again, vec![c.clone()], NOW + 30)).await;
    let t = s.task(id).await.unwrap().expect("task");
    assert_eq!(t.state, TaskState::Completed);
    assert_eq!(t.events, task_events(&[c]));
}
