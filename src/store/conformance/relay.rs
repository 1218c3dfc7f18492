//! The relay's verbs: endpoints (`create_endpoint` … `delete_endpoint`,
//! `sync_config_endpoints`), the fan-out of an applied event into
//! deliveries, `replay`, the delivery reads and `relay_changed`. Lanes
//! (per-payment order, `due_deliveries`, `ordering = "latest"`),
//! `record_attempt`, `retry_delivery` and a restart are in [`super::relay_lanes`].

use super::*;

// ---- relay fixtures (shared with `relay_lanes`) ----

/// An API endpoint of `merchant` taking `patterns`, created at `at`.
pub(in crate::store) fn api_ep(
    merchant: &str,
    id: &str,
    patterns: &[&str],
    at: i64,
) -> EndpointRecord {
    EndpointRecord {
        id: id.into(),
        merchant_id: merchant.into(),
        url: format!("https://{merchant}.example/hooks/{id}"),
        events: patterns.iter().map(|p| p.to_string()).collect(),
        description: None,
        ordering: Ordering::Fifo,
        disabled: false,
        disabled_reason: None,
        secret: format!("whsec_{merchant}_{id}"),
        previous_secret: None,
        source: EndpointSource::Api,
        created_at: at,
        updated_at: at,
    }
}

/// Create an endpoint (its id must be free).
pub(in crate::store) async fn create(s: &dyn Store, ep: EndpointRecord) {
    assert!(s.create_endpoint(ep).await.expect("create_endpoint"));
}

/// Accept, process and apply one IPN moving `key` (at `base`) to `status`
/// at `at`; the applied event.
pub(in crate::store) async fn emit(
    s: &dyn Store,
    key: &PaymentKey,
    base: u64,
    status: Status,
    at: i64,
) -> EventRecord {
    let dedupe = format!("{}/{}/{base}", key.merchant_id, key.payment_id);
    let w = accept_one(s, "stripe", &dedupe, at).await;
    let c = change(&w, 0, key, base, status, at);
    let ev = c.event.clone().expect("change with an event");
    apply_done(s, complete(&w, vec![c], at)).await;
    ev
}

/// The id of the fan-out's delivery of `ev` to endpoint `ep` (round 0).
pub(in crate::store) fn dlv(ev: &EventRecord, ep: &str) -> String {
    delivery_id(&ev.event_id, &ev.merchant_id, ep, 0, ev.created_at)
}

/// A delivery (it must exist).
pub(super) async fn get(s: &dyn Store, id: &str) -> DeliveryRecord {
    s.delivery(id)
        .await
        .expect("delivery")
        .expect("known delivery")
        .0
}

/// The ids `due_deliveries` hands out (limit 100, nothing in flight), and `next_at`.
pub(super) async fn due(s: &dyn Store, m: &str, ep: &str, now: i64) -> (Vec<String>, Option<i64>) {
    let d = s.due_deliveries(m, ep, now, 100, &[]).await.expect("due");
    (d.deliveries.into_iter().map(|d| d.id).collect(), d.next_at)
}

/// An attempt at `at` answered with `status` (an error unless 2xx).
pub(in crate::store) fn attempt(
    id: &str,
    at: i64,
    status: u16,
    outcome: AttemptOutcome,
) -> AttemptResult {
    AttemptResult {
        delivery_id: id.into(),
        attempt: AttemptRecord {
            at,
            status: Some(status),
            latency_ms: 7,
            error: (!(200..300).contains(&status)).then(|| format!("HTTP {status}")),
            response_body: format!("body {status}"),
        },
        outcome,
    }
}

pub(in crate::store) async fn record(s: &dyn Store, r: AttemptResult) {
    s.record_attempt(r).await.expect("record_attempt");
}

/// Deliveries matching `f` with a limit of 100, newest first.
pub(in crate::store) async fn listed(s: &dyn Store, mut f: DeliveryFilter) -> Vec<DeliveryRecord> {
    if f.limit == 0 {
        f.limit = 100;
    }
    s.deliveries(f).await.expect("deliveries")
}

pub(in crate::store) fn of(merchant: &str) -> DeliveryFilter {
    DeliveryFilter {
        merchant_id: Some(merchant.into()),
        ..Default::default()
    }
}

fn dlv_ids(ds: &[DeliveryRecord]) -> Vec<&str> {
    ds.iter().map(|d| d.id.as_str()).collect()
}

// ---- endpoints ----

/// Create, read, list, update and delete an API endpoint.
pub(super) async fn endpoint_create_get_list_update_delete(b: Backend) {
    let s = b.open().await;
    let (a, c) = (
        api_ep("m1", "ep_a", &["*"], NOW),
        api_ep("m1", "ep_c", &["*"], NOW + 2),
    );
    create(&*s, c.clone()).await;
    create(&*s, a.clone()).await;
    assert_eq!(s.endpoint("m1", "ep_a").await.unwrap(), Some(a.clone()));
    assert_eq!(
        s.endpoints(Some("m1")).await.unwrap(),
        [a.clone(), c.clone()]
    );

    let u = EndpointUpdate {
        url: Some("https://m1.example/new".into()),
        events: Some(vec!["payment.succeeded".into()]),
        description: Some(Some("orders".into())),
        ordering: Some(Ordering::Latest),
        disabled: Some((true, Some("paused".into()))),
        rotate: Some(("whsec_new".into(), NOW + 99)),
        now: NOW + 10,
    };
    let got = s
        .update_endpoint("m1", "ep_a", u)
        .await
        .unwrap()
        .expect("updated");
    let want = EndpointRecord {
        url: "https://m1.example/new".into(),
        events: vec!["payment.succeeded".into()],
        description: Some("orders".into()),
        ordering: Ordering::Latest,
        disabled: true,
        disabled_reason: Some("paused".into()),
        secret: "whsec_new".into(),
        previous_secret: Some(PreviousSecret {
            secret: a.secret.clone(),
            expires_at: NOW + 99,
        }),
        updated_at: NOW + 10,
        ..a.clone()
    };
    assert_eq!(got, want);
    assert_eq!(s.endpoint("m1", "ep_a").await.unwrap(), Some(want.clone()));

    // Enabling clears the reason; fields left out stay as they are.
    let enable = EndpointUpdate {
        disabled: Some((false, None)),
        now: NOW + 11,
        ..Default::default()
    };
    let got = s
        .update_endpoint("m1", "ep_a", enable)
        .await
        .unwrap()
        .expect("updated");
    assert_eq!((got.disabled, got.disabled_reason.clone()), (false, None));
    assert_eq!((got.url, got.updated_at), (want.url.clone(), NOW + 11));

    assert!(s.delete_endpoint("m1", "ep_a").await.unwrap());
    assert_eq!(s.endpoint("m1", "ep_a").await.unwrap(), None);
    assert!(!s.delete_endpoint("m1", "ep_a").await.unwrap());
    assert_eq!(s.endpoints(Some("m1")).await.unwrap(), [c]);
    let nothing = EndpointUpdate {
        now: NOW + 12,
        ..Default::default()
    };
    assert_eq!(
        s.update_endpoint("m1", "ep_a", nothing).await.unwrap(),
        None
    );
}

/// A taken id is refused (the first stays); ids are per merchant, and
/// `endpoints(None)` lists every merchant's, oldest first.
pub(super) async fn endpoint_ids_are_per_merchant(b: Backend) {
    let s = b.open().await;
    let first = api_ep("m1", "ep_1", &["*"], NOW);
    create(&*s, first.clone()).await;
    let taken = api_ep("m1", "ep_1", &["payment.*"], NOW + 1);
    assert!(!s.create_endpoint(taken).await.unwrap());
    assert_eq!(s.endpoint("m1", "ep_1").await.unwrap(), Some(first.clone()));

    assert_eq!(s.endpoint("m2", "ep_1").await.unwrap(), None);
    let u = EndpointUpdate {
        url: Some("https://evil.example".into()),
        now: NOW + 2,
        ..Default::default()
    };
    assert_eq!(s.update_endpoint("m2", "ep_1", u).await.unwrap(), None);
    assert!(!s.delete_endpoint("m2", "ep_1").await.unwrap());
    assert_eq!(s.endpoint("m1", "ep_1").await.unwrap(), Some(first.clone()));

    let other = api_ep("m2", "ep_1", &["*"], NOW + 3);
    create(&*s, other.clone()).await;
    let third = api_ep("m1", "ep_2", &["*"], NOW + 4);
    create(&*s, third.clone()).await;
    assert_eq!(
        s.endpoints(Some("m2")).await.unwrap(),
        std::slice::from_ref(&other)
    );
    assert_eq!(
        s.endpoints(None).await.unwrap(),
        [first.clone(), other, third.clone()]
    );
    assert_eq!(s.endpoints(Some("m1")).await.unwrap(), [first, third]);
    assert_eq!(s.endpoints(Some("m3")).await.unwrap(), []);
}

/// Config endpoints are made exactly the listed ones; API endpoints stay,
/// and a 410's disabled state survives a re-sync.
pub(super) async fn sync_config_adds_updates_removes_keeps_api_and_410(b: Backend) {
    let s = b.open().await;
    let cfg = |id: &str, url: &str| EndpointRecord {
        url: url.into(),
        source: EndpointSource::Config,
        ..api_ep("m1", id, &["*"], NOW)
    };
    let api = api_ep("m1", "api_1", &["*"], NOW + 1);
    create(&*s, api.clone()).await;
    let (a, bb) = (
        cfg("cfg_a", "https://a.example"),
        cfg("cfg_b", "https://b.example"),
    );
    s.sync_config_endpoints(vec![a.clone(), bb.clone()])
        .await
        .unwrap();
    assert_eq!(
        s.endpoints(Some("m1")).await.unwrap(),
        [a.clone(), bb, api.clone()]
    );

    // cfg_a answers 410.
    let ev = emit(
        &*s,
        &PaymentKey::new("m1", "pay_1"),
        0,
        Status::Succeeded,
        NOW + 10,
    )
    .await;
    record(
        &*s,
        attempt(&dlv(&ev, "cfg_a"), NOW + 20, 410, AttemptOutcome::Gone),
    )
    .await;
    let gone = s.endpoint("m1", "cfg_a").await.unwrap().expect("cfg_a");
    assert!(gone.disabled && gone.disabled_reason.is_some());

    let a2 = EndpointRecord {
        updated_at: NOW + 30,
        ..cfg("cfg_a", "https://a2.example")
    };
    let c = EndpointRecord {
        created_at: NOW + 30,
        updated_at: NOW + 30,
        ..cfg("cfg_c", "https://c.example")
    };
    s.sync_config_endpoints(vec![a2, c.clone()]).await.unwrap();
    assert_eq!(s.endpoint("m1", "cfg_b").await.unwrap(), None);
    assert_eq!(s.endpoint("m1", "cfg_c").await.unwrap(), Some(c));
    assert_eq!(s.endpoint("m1", "api_1").await.unwrap(), Some(api));
    let a = s.endpoint("m1", "cfg_a").await.unwrap().expect("cfg_a");
    assert_eq!(a.url, "https://a2.example");
    assert_eq!(a.created_at, NOW);
    assert!(
        a.disabled,
        "a re-sync enabled an endpoint that answered 410"
    );
    assert_eq!(a.disabled_reason, gone.disabled_reason);
    assert_eq!(s.endpoints(Some("m1")).await.unwrap().len(), 3);
}

// ---- fan-out ----

/// One pending delivery per matching endpoint of the event's merchant,
/// named deterministically, due at once.
pub(super) async fn fan_out_one_delivery_per_matching_endpoint(b: Backend) {
    let s = b.open().await;
    for (id, p) in [
        ("all", "*"),
        ("pay", "payment.*"),
        ("ok", "payment.succeeded"),
    ] {
        create(&*s, api_ep("m1", id, &[p], NOW)).await;
    }
    create(&*s, api_ep("m1", "refunds", &["refund.*"], NOW)).await;
    create(&*s, api_ep("m2", "all", &["*"], NOW)).await;

    let ok = emit(
        &*s,
        &PaymentKey::new("m1", "pay_1"),
        0,
        Status::Succeeded,
        NOW + 10,
    )
    .await;
    let failed = emit(
        &*s,
        &PaymentKey::new("m1", "pay_2"),
        0,
        Status::Failed,
        NOW + 20,
    )
    .await;

    let mut got: Vec<(String, String)> = listed(&*s, of("m1"))
        .await
        .into_iter()
        .map(|d| (d.event.event_id, d.endpoint_id))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = [(&ok, "all"), (&ok, "pay"), (&ok, "ok")]
        .into_iter()
        .chain([(&failed, "all"), (&failed, "pay")])
        .map(|(e, ep)| (e.event_id.clone(), ep.to_string()))
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(listed(&*s, of("m2")).await, []);

    let d = get(&*s, &dlv(&ok, "ok")).await;
    let want = DeliveryRecord {
        id: dlv(&ok, "ok"),
        endpoint_id: "ok".into(),
        merchant_id: "m1".into(),
        payment_id: "pay_1".into(),
        sequence: ok.sequence,
        event: ok.clone(),
        state: DeliveryState::Pending,
        attempts: 0,
        retry_from: 0,
        next_attempt_at: Some(NOW + 10),
        last_status: None,
        last_error: None,
        created_at: NOW + 10,
        lane_pos: d.lane_pos,
    };
    assert_eq!(d, want);
    let (ids, _) = due(&*s, "m1", "ok", NOW + 10).await;
    assert_eq!(ids, [dlv(&ok, "ok")]);
    assert_eq!(s.delivery(&dlv(&failed, "ok")).await.unwrap(), None);
}

/// A disabled endpoint still gets its deliveries; they wait, pending.
pub(super) async fn fan_out_to_disabled_endpoint_is_pending(b: Backend) {
    let s = b.open().await;
    let ep = EndpointRecord {
        disabled: true,
        disabled_reason: Some("paused".into()),
        ..api_ep("m1", "ep", &["*"], NOW)
    };
    create(&*s, ep).await;
    let ev = emit(
        &*s,
        &PaymentKey::new("m1", "pay_1"),
        0,
        Status::Succeeded,
        NOW + 10,
    )
    .await;
    let d = get(&*s, &dlv(&ev, "ep")).await;
    assert_eq!(d.state, DeliveryState::Pending);
    assert_eq!(d.next_attempt_at, Some(NOW + 10));
    assert_eq!(dlv_ids(&listed(&*s, of("m1")).await), [dlv(&ev, "ep")]);
}

// ---- replays ----

/// A replay delivers the matching events created in `[since, until]`
/// again, as new deliveries with the original event ids, in feed order.
pub(super) async fn replay_new_deliveries_of_matching_events(b: Backend) {
    let s = b.open().await;
    create(&*s, api_ep("m1", "all", &["*"], NOW)).await;
    let (k1, k2) = (
        PaymentKey::new("m1", "pay_1"),
        PaymentKey::new("m1", "pay_2"),
    );
    let e1 = emit(&*s, &k1, 0, Status::Authorized, NOW + 10).await;
    let e2 = emit(&*s, &k1, 1, Status::Succeeded, NOW + 20).await;
    let e3 = emit(&*s, &k2, 0, Status::Succeeded, NOW + 30).await;
    // Left out: a type the endpoint does not take; after `until`.
    emit(&*s, &k2, 1, Status::Refunded, NOW + 40).await;
    emit(
        &*s,
        &PaymentKey::new("m1", "pay_3"),
        0,
        Status::Succeeded,
        NOW + 41,
    )
    .await;
    create(
        &*s,
        api_ep(
            "m1",
            "late",
            &["payment.succeeded", "payment.authorized"],
            NOW + 50,
        ),
    )
    .await;
    settle(&*s).await;

    let late = DeliveryFilter {
        endpoint_id: Some("late".into()),
        ..of("m1")
    };
    // Over the limit: nothing at all.
    let n = s
        .replay("m1", "late", (NOW + 10, NOW + 40), 2, NOW + 60)
        .await
        .unwrap();
    assert_eq!(n, Some(Replayed::TooMany));
    assert!(listed(&*s, late.clone()).await.is_empty());
    let n = s
        .replay("m1", "late", (NOW + 10, NOW + 40), 3, NOW + 60)
        .await
        .unwrap();
    assert_eq!(n, Some(Replayed::Enqueued(3)));
    let mut got = listed(&*s, late).await;
    got.sort_by_key(|d| d.lane_pos);
    let events: Vec<&str> = got.iter().map(|d| d.event.event_id.as_str()).collect();
    assert_eq!(events, [&e1.event_id, &e2.event_id, &e3.event_id]);
    for (d, ev) in got.iter().zip([&e1, &e2, &e3]) {
        assert_eq!(d.event, *ev);
        assert_ne!(d.id, dlv(ev, "late"));
        assert_eq!((d.state, d.created_at), (DeliveryState::Pending, NOW + 60));
    }
    // The payment's replayed changes go out in order: pay_1's first one first.
    let (due_now, _) = due(&*s, "m1", "late", NOW + 60).await;
    assert_eq!(due_now, [got[0].id.clone(), got[2].id.clone()]);

    // Replaying to an endpoint that had them: new ids, the same events.
    assert_eq!(
        s.replay("m1", "all", (NOW + 20, NOW + 20), 100, NOW + 70)
            .await
            .unwrap(),
        Some(Replayed::Enqueued(1))
    );
    let all = DeliveryFilter {
        endpoint_id: Some("all".into()),
        payment_id: Some("pay_1".into()),
        ..of("m1")
    };
    let again: Vec<DeliveryRecord> = listed(&*s, all)
        .await
        .into_iter()
        .filter(|d| d.event.event_id == e2.event_id)
        .collect();
    assert_eq!(again.len(), 2);
    assert_ne!(again[0].id, again[1].id);

    assert_eq!(
        s.replay("m1", "nope", (NOW, NOW + 99), 100, NOW + 80)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.replay("m2", "all", (NOW, NOW + 99), 100, NOW + 80)
            .await
            .unwrap(),
        None
    );
}

// ---- reads ----

/// Listing filters by merchant, endpoint, state and payment, newest first,
/// at most `limit`.
pub(super) async fn deliveries_filters_newest_first(b: Backend) {
    let s = b.open().await;
    create(&*s, api_ep("m1", "a", &["*"], NOW)).await;
    create(&*s, api_ep("m1", "b", &["*"], NOW)).await;
    create(&*s, api_ep("m2", "a", &["*"], NOW)).await;
    let (k1, k2) = (
        PaymentKey::new("m1", "pay_1"),
        PaymentKey::new("m1", "pay_2"),
    );
    let e1 = emit(&*s, &k1, 0, Status::Authorized, NOW + 10).await;
    let e2 = emit(&*s, &k2, 0, Status::Authorized, NOW + 20).await;
    let e9 = emit(
        &*s,
        &PaymentKey::new("m2", "pay_9"),
        0,
        Status::Authorized,
        NOW + 30,
    )
    .await;
    let e3 = emit(&*s, &k1, 1, Status::Succeeded, NOW + 40).await;
    record(
        &*s,
        attempt(&dlv(&e2, "b"), NOW + 50, 200, AttemptOutcome::Succeeded),
    )
    .await;

    let m1 = listed(&*s, of("m1")).await;
    assert_eq!(m1.len(), 6);
    let times: Vec<i64> = m1.iter().map(|d| d.event.created_at).collect();
    assert_eq!(
        times,
        [NOW + 40, NOW + 40, NOW + 20, NOW + 20, NOW + 10, NOW + 10]
    );
    assert_eq!(listed(&*s, DeliveryFilter::default()).await.len(), 7);

    let a = DeliveryFilter {
        endpoint_id: Some("a".into()),
        ..of("m1")
    };
    let want = [dlv(&e3, "a"), dlv(&e2, "a"), dlv(&e1, "a")];
    assert_eq!(dlv_ids(&listed(&*s, a.clone()).await), want);
    let ok = DeliveryFilter {
        state: Some(DeliveryState::Succeeded),
        ..Default::default()
    };
    assert_eq!(dlv_ids(&listed(&*s, ok).await), [dlv(&e2, "b")]);
    let pay = DeliveryFilter {
        payment_id: Some("pay_1".into()),
        ..a.clone()
    };
    assert_eq!(
        dlv_ids(&listed(&*s, pay).await),
        [dlv(&e3, "a"), dlv(&e1, "a")]
    );
    let first2 = DeliveryFilter { limit: 2, ..a };
    assert_eq!(dlv_ids(&listed(&*s, first2).await), want[..2]);
    let other = DeliveryFilter {
        endpoint_id: Some("a".into()),
        ..of("m2")
    };
    assert_eq!(dlv_ids(&listed(&*s, other).await), [dlv(&e9, "a")]);
}

/// The dispatcher's wake-up moves after an endpoint write and after an
/// apply that fanned out.
pub(super) async fn relay_changed_moves_after_writes(b: Backend) {
    let s = b.open().await;
    let mut rx = s.relay_changed();
    rx.borrow_and_update();
    create(&*s, api_ep("m1", "ep", &["*"], NOW)).await;
    let moved = tokio::time::timeout(WAIT, rx.changed()).await;
    assert!(
        matches!(moved, Ok(Ok(()))),
        "no wake-up after create_endpoint"
    );

    rx.borrow_and_update();
    emit(
        &*s,
        &PaymentKey::new("m1", "pay_1"),
        0,
        Status::Succeeded,
        NOW + 10,
    )
    .await;
    let moved = tokio::time::timeout(WAIT, rx.changed()).await;
    assert!(matches!(moved, Ok(Ok(()))), "no wake-up after a fan-out");
    assert_eq!(listed(&*s, of("m1")).await.len(), 1);
}
