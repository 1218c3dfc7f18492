//! `stats`: the counts behind `/metrics`, kept as writes commit.

use super::relay::{api_ep, attempt, create, dlv, emit, record};
use super::*;

/// `stats` counts the inbox, pending and dead deliveries and endpoints by
/// state as writes commit, and counts the same after a reopen.
pub(super) async fn stats_follow_writes_and_survive_reopen(b: Backend) {
    let s = b.open().await;
    let zero = s.stats().await.unwrap();
    assert_eq!(
        zero.inbox_depth + zero.deliveries_pending + zero.deliveries_dead,
        0
    );
    assert_eq!((zero.endpoints_enabled, zero.endpoints_disabled), (0, 0));

    create(&*s, api_ep("m1", "on", &["*"], NOW)).await;
    let off = EndpointRecord {
        disabled: true,
        disabled_reason: Some("paused".into()),
        ..api_ep("m1", "off", &["*"], NOW)
    };
    create(&*s, off).await;
    // `emit` accepts and applies an IPN: in the inbox, then out of it.
    let ev = emit(
        &*s,
        &PaymentKey::new("m1", "pay_1"),
        0,
        Status::Succeeded,
        NOW + 10,
    )
    .await;
    assert_eq!(s.stats().await.unwrap().inbox_depth, 0);
    s.accept(ipn("stripe", "st_1", NOW), NOW).await.unwrap();
    s.accept(ipn("stripe", "st_2", NOW), NOW).await.unwrap();
    // A duplicate adds nothing.
    s.accept(ipn("stripe", "st_1", NOW), NOW).await.unwrap();
    assert_eq!(s.stats().await.unwrap().inbox_depth, 2);

    let st = s.stats().await.unwrap();
    assert_eq!(st.inbox_depth, 2, "{st:?}");
    assert_eq!(
        (st.endpoints_enabled, st.endpoints_disabled),
        (1, 1),
        "{st:?}"
    );
    assert_eq!(
        (st.deliveries_pending, st.deliveries_dead),
        (2, 0),
        "{st:?}"
    );
    assert!(st.store_bytes > 0, "{st:?}");

    record(
        &*s,
        attempt(&dlv(&ev, "on"), NOW + 20, 500, AttemptOutcome::Dead),
    )
    .await;
    let st = s.stats().await.unwrap();
    assert_eq!(
        (st.deliveries_pending, st.deliveries_dead),
        (1, 1),
        "{st:?}"
    );

    s.close();
    drop(s);
    let s = b.open().await;
    let again = s.stats().await.unwrap();
    assert_eq!(
        (
            again.inbox_depth,
            again.deliveries_pending,
            again.deliveries_dead
        ),
        (st.inbox_depth, st.deliveries_pending, st.deliveries_dead)
    );
    assert_eq!((again.endpoints_enabled, again.endpoints_disabled), (1, 1));
}
