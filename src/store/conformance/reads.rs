//! Reads and registration: the event feed (`events`), `history`,
//! `payment`, `register_payment` and the admin task listing (`tasks`).

use super::*;

/// Accept and apply one request whose items are `items` (payment key, base
/// version, status), at `at`; the changes it applied.
async fn ipn_applied(
    s: &dyn Store,
    key: &str,
    at: i64,
    items: &[(&PaymentKey, u64, Status)],
) -> Vec<PaymentChange> {
    let w = accept_one(s, "stripe", key, at).await;
    let changes: Vec<PaymentChange> = items
        .iter()
        .enumerate()
        .map(|(idx, (k, base, st))| change(&w, idx, k, *base, *st, at + 10))
        .collect();
    apply_done(s, complete(&w, changes.clone(), at + 10)).await;
    changes
}

/// A merchant's feed holds its own events only, even for a payment id
/// another merchant uses too.
pub(super) async fn events_only_the_merchants_own(b: Backend) {
    let s = b.open().await;
    let (m1p1, m2p1, m1p2) = (
        PaymentKey::new("m1", "pay_1"),
        PaymentKey::new("m2", "pay_1"),
        PaymentKey::new("m1", "pay_2"),
    );
    let e1 = ipn_applied(&*s, "evt_1", NOW, &[(&m1p1, 0, Status::Authorized)]).await;
    let e2 = ipn_applied(&*s, "evt_2", NOW + 1, &[(&m2p1, 0, Status::Authorized)]).await;
    let e3 = ipn_applied(&*s, "evt_3", NOW + 2, &[(&m1p2, 0, Status::Succeeded)]).await;
    settle(&*s).await;
    assert_eq!(
        feed(&*s, "m1", None, None, 10).await,
        carried(&[&e1[0], &e3[0]])
    );
    assert_eq!(feed(&*s, "m2", None, None, 10).await, carried(&[&e2[0]]));
    assert!(feed(&*s, "m3", None, None, 10).await.is_empty());
}

/// The feed follows apply order, not arrival order nor event-id order.
pub(super) async fn events_in_apply_order(b: Backend) {
    let s = b.open().await;
    let (k1, k2) = (
        PaymentKey::new("m1", "pay_1"),
        PaymentKey::new("m1", "pay_2"),
    );
    for (k, at) in [("evt_early", NOW), ("evt_late", NOW + 60_000)] {
        assert_eq!(
            s.accept(ipn("stripe", k, at), at).await.unwrap(),
            Accepted::New
        );
    }
    let w = take(&*s, 2).await;
    let late = [
        change(&w[1], 0, &k1, 0, Status::Authorized, NOW + 70_000),
        change(&w[1], 1, &k2, 0, Status::Authorized, NOW + 70_000),
    ];
    let early = change(&w[0], 0, &k1, 1, Status::Succeeded, NOW + 80_000);
    apply_done(&*s, complete(&w[1], late.to_vec(), NOW + 70_000)).await;
    apply_done(&*s, complete(&w[0], vec![early.clone()], NOW + 80_000)).await;
    settle(&*s).await;
    let got = feed(&*s, "m1", None, None, 10).await;
    assert_eq!(got, carried(&[&late[0], &late[1], &early]));
    assert!(
        got[2].event_id < got[0].event_id,
        "ids sort by arrival; the feed must not"
    );
}

/// After a reopen the feed lists every event applied before, at once,
/// also when the last one applied has the lowest event id.
pub(super) async fn events_after_reopen_list_every_applied_event(b: Backend) {
    let s = b.open().await;
    let key = PaymentKey::new("m1", "pay_1");
    for (k, at) in [("evt_early", NOW), ("evt_late", NOW + 60_000)] {
        s.accept(ipn("stripe", k, at), at).await.unwrap();
    }
    let w = take(&*s, 2).await;
    let late = change(&w[1], 0, &key, 0, Status::Authorized, NOW + 70_000);
    let early = change(&w[0], 0, &key, 1, Status::Succeeded, NOW + 80_000);
    apply_done(&*s, complete(&w[1], vec![late.clone()], NOW + 70_000)).await;
    apply_done(&*s, complete(&w[0], vec![early.clone()], NOW + 80_000)).await;
    settle(&*s).await;
    s.close();
    drop(s);

    let s = b.open().await;
    let got = feed(&*s, "m1", None, None, 10).await;
    assert_eq!(got, carried(&[&late, &early]));
    assert!(
        got[1].event_id < got[0].event_id,
        "the last applied sorts first by id"
    );
}

/// `after` resumes strictly after the cursor, also once more events came.
pub(super) async fn events_after_cursor_resumes_strictly_after(b: Backend) {
    let s = b.open().await;
    let key = PaymentKey::new("m1", "pay_1");
    let mut all = Vec::new();
    for (i, st) in [Status::Pending, Status::Authorized, Status::Succeeded]
        .into_iter()
        .enumerate()
    {
        let at = NOW + i as i64 * 100;
        let k = format!("evt_{i}");
        all.extend(ipn_applied(&*s, &k, at, &[(&key, i as u64, st)]).await);
    }
    settle(&*s).await;
    let evs = carried(&all.iter().collect::<Vec<_>>());
    let e = ids(&evs);
    let after = |c: usize| feed(&*s, "m1", None, Some(e[c]), 10);
    assert_eq!(ids(&after(0).await), e[1..]);
    assert_eq!(ids(&after(1).await), e[2..]);
    assert!(after(2).await.is_empty());

    let more = ipn_applied(&*s, "evt_3", NOW + 300, &[(&key, 3, Status::Refunded)]).await;
    settle(&*s).await;
    assert_eq!(after(2).await, carried(&[&more[0]]));
}

/// A cursor that names no event of this merchant is refused, not read as
/// "from the start".
pub(super) async fn events_unknown_cursor_is_refused(b: Backend) {
    let s = b.open().await;
    let (m1, m2) = (
        PaymentKey::new("m1", "pay_1"),
        PaymentKey::new("m2", "pay_1"),
    );
    let e1 = ipn_applied(&*s, "evt_1", NOW, &[(&m1, 0, Status::Authorized)]).await;
    let e2 = ipn_applied(&*s, "evt_2", NOW + 1, &[(&m2, 0, Status::Authorized)]).await;
    settle(&*s).await;
    let id1 = e1[0].event.as_ref().unwrap().event_id.clone();
    let id2 = e2[0].event.as_ref().unwrap().event_id.clone();
    let never = event_id(Uuid::new_v4(), 0, NOW);
    for cursor in [
        never.as_str(),
        "evt_garbage",
        "not-an-event",
        "",
        id2.as_str(),
    ] {
        assert_eq!(
            s.events("m1", None, Some(cursor), 10).await.unwrap(),
            Err(UnknownCursor),
            "cursor {cursor:?}"
        );
    }
    assert!(feed(&*s, "m2", None, Some(&id2), 10).await.is_empty());
    assert_eq!(
        s.events("m2", None, Some(&id1), 10).await.unwrap(),
        Err(UnknownCursor)
    );
}

/// `payment_id` keeps one payment's events; `limit` counts what is returned.
pub(super) async fn events_payment_filter_and_limit(b: Backend) {
    let s = b.open().await;
    let (p1, p2) = (
        PaymentKey::new("m1", "pay_1"),
        PaymentKey::new("m1", "pay_2"),
    );
    let items = [
        (&p1, 0, Status::Pending),
        (&p2, 0, Status::Pending),
        (&p1, 1, Status::Authorized),
        (&p2, 1, Status::Authorized),
        (&p1, 2, Status::Succeeded),
    ];
    let c = ipn_applied(&*s, "evt_1", NOW, &items).await;
    settle(&*s).await;
    let evs = carried(&c.iter().collect::<Vec<_>>());
    let e = ids(&evs);
    let got = |p, after, limit| feed(&*s, "m1", p, after, limit);
    assert_eq!(ids(&got(Some("pay_1"), None, 10).await), [e[0], e[2], e[4]]);
    assert_eq!(ids(&got(Some("pay_2"), None, 10).await), [e[1], e[3]]);
    assert_eq!(ids(&got(None, None, 2).await), [e[0], e[1]]);
    assert_eq!(ids(&got(Some("pay_1"), None, 2).await), [e[0], e[2]]);
    assert_eq!(ids(&got(Some("pay_1"), Some(e[2]), 10).await), [e[4]]);
    assert_eq!(ids(&got(Some("pay_1"), Some(e[1]), 10).await), [e[2], e[4]]);
    assert_eq!(ids(&got(None, Some(e[0]), 1).await), [e[1]]);
    assert!(got(Some("pay_9"), None, 10).await.is_empty());
    assert!(got(None, None, 0).await.is_empty());
}

/// `history` with a limit keeps the newest entries, oldest first; it is
/// per merchant and payment.
pub(super) async fn history_limit_keeps_newest_oldest_first(b: Backend) {
    let s = b.open().await;
    let key = PaymentKey::new("m1", "pay_1");
    let st = Status::Authorized;
    let items: Vec<_> = (0..5).map(|v| (&key, v, st)).collect();
    let c = ipn_applied(&*s, "evt_1", NOW, &items).await;
    let all: Vec<HistoryEntry> = c.iter().map(|c| c.history.clone()).collect();
    assert_eq!(s.history(&key, 100).await.unwrap(), all);
    assert_eq!(s.history(&key, 2).await.unwrap(), all[3..]);
    assert_eq!(s.history(&key, 1).await.unwrap(), all[4..]);
    let other = PaymentKey::new("m2", "pay_1");
    assert!(s.history(&other, 10).await.unwrap().is_empty());
    let unknown = PaymentKey::new("m1", "pay_9");
    assert!(s.history(&unknown, 10).await.unwrap().is_empty());
}

fn registration(key: &PaymentKey, metadata: &str, now: i64) -> Registration {
    Registration {
        key: key.clone(),
        provider: Some("stripe".into()),
        site_url: Some("https://shop.example/ipn".into()),
        metadata: Some(metadata.into()),
        now,
    }
}

/// A first registration creates the record; a second one changes nothing.
pub(super) async fn register_created_then_already_registered(b: Backend) {
    let s = b.open().await;
    let key = PaymentKey::new("m1", "pay_1");
    let Registered::Created(rec) = s
        .register_payment(registration(&key, r#"{"order":1}"#, NOW))
        .await
        .unwrap()
    else {
        panic!("first registration must create");
    };
    assert_eq!(rec.key(), key);
    assert!(rec.registered);
    assert_eq!(rec.state, None);
    assert_eq!(rec.version, 0);
    assert_eq!(rec.provider.as_deref(), Some("stripe"));
    assert_eq!(
        rec.registered_site_url.as_deref(),
        Some("https://shop.example/ipn")
    );
    assert_eq!(rec.metadata.as_deref(), Some(r#"{"order":1}"#));
    assert_eq!(rec.created_at, NOW);
    assert_eq!(s.payment(&key).await.unwrap(), Some(rec.clone()));

    let again = registration(&key, r#"{"order":2}"#, NOW + 1);
    assert_eq!(
        s.register_payment(again).await.unwrap(),
        Registered::AlreadyRegistered
    );
    assert_eq!(s.payment(&key).await.unwrap(), Some(rec));
}

/// The same payment id under another merchant is another payment.
pub(super) async fn register_other_merchant_same_id_is_created(b: Backend) {
    let s = b.open().await;
    for m in ["m1", "m2"] {
        let key = PaymentKey::new(m, "pay_1");
        match s
            .register_payment(registration(&key, m, NOW))
            .await
            .unwrap()
        {
            Registered::Created(rec) => assert_eq!(rec.key(), key),
            other => panic!("{m}: {other:?}"),
        }
        let rec = s.payment(&key).await.unwrap().expect("payment");
        assert_eq!(rec.metadata.as_deref(), Some(m));
    }
}

/// Registering a payment an IPN created marks it registered and keeps its
/// state and version.
pub(super) async fn register_after_ipn_updates_and_keeps_state(b: Backend) {
    let s = b.open().await;
    let key = PaymentKey::new("m1", "pay_1");
    let c = ipn_applied(&*s, "evt_1", NOW, &[(&key, 0, Status::Authorized)]).await;
    let reg = registration(&key, r#"{"order":1}"#, NOW + 100);
    let Registered::Updated(rec) = s.register_payment(reg).await.unwrap() else {
        panic!("registering an IPN-created payment must update it");
    };
    assert!(rec.registered);
    assert_eq!(rec.state, c[0].state);
    assert_eq!(rec.version, 1);
    assert_eq!(rec.metadata.as_deref(), Some(r#"{"order":1}"#));
    assert_eq!(
        rec.registered_site_url.as_deref(),
        Some("https://shop.example/ipn")
    );
    assert_eq!(s.payment(&key).await.unwrap(), Some(rec));
    assert_eq!(s.history(&key, 10).await.unwrap(), [c[0].history.clone()]);
    let again = registration(&key, "{}", NOW + 200);
    assert_eq!(
        s.register_payment(again).await.unwrap(),
        Registered::AlreadyRegistered
    );
}

/// An IPN on a registered payment keeps the registration.
pub(super) async fn ipn_after_register_keeps_registration(b: Backend) {
    let s = b.open().await;
    let key = PaymentKey::new("m1", "pay_1");
    let reg = registration(&key, r#"{"order":1}"#, NOW);
    assert!(matches!(
        s.register_payment(reg).await.unwrap(),
        Registered::Created(_)
    ));
    let c = ipn_applied(&*s, "evt_1", NOW + 1, &[(&key, 0, Status::Authorized)]).await;
    let rec = s.payment(&key).await.unwrap().expect("payment");
    assert!(rec.registered);
    assert_eq!(rec.metadata.as_deref(), Some(r#"{"order":1}"#));
    assert_eq!(
        rec.registered_site_url.as_deref(),
        Some("https://shop.example/ipn")
    );
    assert_eq!((rec.state, rec.version), (c[0].state.clone(), 1));
}

/// `tasks` filters by state and provider, lists newest first (processing
/// ones included) and keeps `limit`.
pub(super) async fn tasks_filter_by_state_and_provider_newest_first(b: Backend) {
    let s = b.open().await;
    let mut id = Vec::new();
    for (i, p) in ["stripe", "adyen", "stripe", "stripe"].iter().enumerate() {
        let n = ipn(p, &format!("evt_{i}"), NOW + i as i64 * 1_000);
        id.push(n.request.request_id);
        s.accept(n, NOW + i as i64 * 1_000).await.unwrap();
    }
    let w = take(&*s, 4).await;
    apply_done(&*s, complete(&w[0], vec![], NOW + 10_000)).await;
    apply_done(&*s, fail(&w[2], NOW + 10_000)).await;

    let list = |state, provider, limit| {
        let s = s.clone();
        async move {
            let got = s.tasks(state, provider, limit).await.unwrap();
            got.iter().map(|t| t.request_id).collect::<Vec<_>>()
        }
    };
    use TaskState::*;
    assert_eq!(list(None, None, 10).await, [id[3], id[2], id[1], id[0]]);
    assert_eq!(list(Some(Processing), None, 10).await, [id[3], id[1]]);
    assert_eq!(list(Some(Completed), None, 10).await, [id[0]]);
    assert_eq!(list(Some(Error), None, 10).await, [id[2]]);
    assert_eq!(list(None, Some("stripe"), 10).await, [id[3], id[2], id[0]]);
    assert_eq!(list(Some(Processing), Some("stripe"), 10).await, [id[3]]);
    assert!(list(Some(Error), Some("adyen"), 10).await.is_empty());
    assert_eq!(list(None, None, 2).await, [id[3], id[2]]);
    let states: Vec<TaskState> = s
        .tasks(None, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|t| t.state)
        .collect();
    assert_eq!(states, [Processing, Error, Processing, Completed]);
}
