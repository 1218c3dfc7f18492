//! Delivery order and isolation (SPEC §6): for one (endpoint, payment) a
//! change is not sent before the previous one succeeded or died, and then
//! goes out at once (no backoff for waiting its turn); `ordering =
//! "latest"` supersedes changes stuck behind a failing delivery; a failing
//! payment or a slow endpoint never holds up others (the one place a time
//! bound is asserted, measured in real time and generous); replay resends
//! in order with the original webhook-ids.

use std::time::{Duration, Instant};

use ipn_relay::clock::{Clock, ManualClock};
use serde_json::json;

use crate::helpers::*;
use crate::relay_helpers::*;
use crate::sink::{Reply, Sink};

/// Past the last step of a `["1h"]` schedule with +20 % jitter.
const PAST_1H: Duration = Duration::from_secs(73 * 60);

fn fifo_config(sink: &Sink, path: &str, schedule: &str, extra: &str) -> String {
    relay_config(
        &format!("retry_schedule = {schedule}\n"),
        &[endpoint_toml("ep_o", &sink.url(path), SECRET_1, extra)],
        &[],
    )
}

#[tokio::test]
async fn the_next_change_waits_for_the_previous_to_succeed_and_then_goes_at_once() {
    let sink = Sink::start().await;
    sink.script("/fifo", vec![Reply::status(500), Reply::ok()]);
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(&fifo_config(&sink, "/fifo", "[\"1h\"]", ""), &clock).await;
    post_status(&app, "fo_1", "pay_fo", "Pending").await;
    notified(&sink, "/fifo", 1, SECRET_1).await;
    post_status(&app, "fo_2", "pay_fo", "Authorized").await;
    post_status(&app, "fo_3", "pay_fo", "Succeed").await;
    assert_quiet(&sink, "/fifo", 1).await;
    // Waiting behind sequence 1 is not a failed attempt.
    let waiting = wait_deliveries(&app, SHOP_KEY, "payment_id=pay_fo", 3).await;
    for d in waiting.iter().filter(|d| d["sequence"] != 1) {
        assert_eq!(d["state"], "pending", "{d}");
        assert_eq!(d["attempts"], 0, "{d}");
    }

    // One clock move: 1 is retried and succeeds, 2 and 3 follow on their own.
    clock.advance(PAST_1H);
    let got = notified(&sink, "/fifo", 4, SECRET_1).await;
    assert_eq!(sequences(&got), vec![1, 1, 2, 3]);
    assert_eq!(got[0].webhook_id(), got[1].webhook_id());
    wait_deliveries(&app, SHOP_KEY, "payment_id=pay_fo&state=succeeded", 3).await;
    let list = deliveries(&app, SHOP_KEY, "payment_id=pay_fo").await;
    let attempts = |n: i64| list.iter().find(|d| d["sequence"] == n).unwrap()["attempts"].clone();
    assert_eq!(
        (attempts(1), attempts(2), attempts(3)),
        (json!(2), json!(1), json!(1))
    );
}

#[tokio::test]
async fn a_dead_delivery_lets_the_next_change_go() {
    let sink = Sink::start().await;
    sink.script(
        "/die",
        vec![Reply::status(500), Reply::status(500), Reply::ok()],
    );
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(&fifo_config(&sink, "/die", "[\"1m\"]", ""), &clock).await;
    post_status(&app, "di_1", "pay_di", "Pending").await;
    notified(&sink, "/die", 1, SECRET_1).await;
    post_status(&app, "di_2", "pay_di", "Succeed").await;
    assert_quiet(&sink, "/die", 1).await;
    clock.advance(Duration::from_secs(73));
    let got = notified(&sink, "/die", 3, SECRET_1).await;
    assert_eq!(sequences(&got), vec![1, 1, 2], "2 only after 1 died");
    wait_delivery(
        &app,
        SHOP_KEY,
        "payment_id=pay_di&state=dead",
        "dead",
        |d| d["sequence"] == 1,
    )
    .await;
    wait_delivery(
        &app,
        SHOP_KEY,
        "payment_id=pay_di&state=succeeded",
        "sent",
        |d| d["sequence"] == 2,
    )
    .await;
}

/// Payment P changes pending → authorized → succeeded while its first
/// delivery fails: the intermediate change is superseded, the newest one
/// is sent, and nothing older arrives after it.
async fn latest_supersedes(config_endpoint: bool) {
    let sink = Sink::start().await;
    sink.script("/latest", vec![Reply::status(500), Reply::ok()]);
    let clock = ManualClock::starting_now();
    let (body, secret) = if config_endpoint {
        (
            fifo_config(
                &sink,
                "/latest",
                "[\"1h\", \"1h\"]",
                "ordering = \"latest\"\n",
            ),
            SECRET_1.to_string(),
        )
    } else {
        (relay_config("", &[], &[]), String::new())
    };
    let app = spawn_with_clock(&body, &clock).await;
    let (ep, secret) = if config_endpoint {
        ("ep_o".to_string(), secret)
    } else {
        let v = create_endpoint(
            &app,
            SHOP_KEY,
            json!({"url": sink.url("/latest"), "ordering": "latest"}),
        )
        .await;
        assert_eq!(v["ordering"], "latest");
        (s(&v["id"]), s(&v["secret"]))
    };
    post_status(&app, "la_1", "pay_la", "Pending").await;
    notified(&sink, "/latest", 1, &secret).await;
    post_status(&app, "la_2", "pay_la", "Authorized").await;
    let newest = post_status(&app, "la_3", "pay_la", "Succeed").await;
    assert_quiet(&sink, "/latest", 1).await;

    clock.advance(PAST_1H);
    let end = Instant::now() + PATIENCE;
    while !sink.received("/latest").iter().any(|r| r.sequence() == 3) {
        assert!(Instant::now() < end, "the newest change never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let q = format!("endpoint_id={ep}&payment_id=pay_la");
    wait_delivery(
        &app,
        SHOP_KEY,
        &format!("{q}&state=succeeded"),
        "sent",
        |d| d["sequence"] == 3,
    )
    .await;
    let sup = wait_delivery(
        &app,
        SHOP_KEY,
        &format!("{q}&state=superseded"),
        "superseded",
        |d| d["sequence"] == 2,
    )
    .await;
    assert!(sup["next_attempt_at"].is_null(), "{sup}");
    let list = deliveries(&app, SHOP_KEY, &q).await;
    let first = list.iter().find(|d| d["sequence"] == 1).unwrap();
    assert!(
        first["state"] == "superseded" || first["state"] == "succeeded",
        "the failed first change is superseded or was retried before the newest: {first}"
    );
    assert_quiet(&sink, "/latest", sink.received("/latest").len()).await;
    let got = notified(&sink, "/latest", 2, &secret).await;
    let last = got.last().unwrap();
    assert_eq!(
        last.webhook_id(),
        newest,
        "the newest change is the last one sent"
    );
    assert_eq!(last.event_type(), "payment.succeeded");
    assert!(
        !got.iter().any(|r| r.sequence() == 2),
        "a superseded change is never sent"
    );
}

#[tokio::test]
async fn latest_ordering_on_a_config_endpoint_sends_only_the_newest_waiting_change() {
    latest_supersedes(true).await;
}

#[tokio::test]
async fn latest_ordering_on_an_api_endpoint_sends_only_the_newest_waiting_change() {
    latest_supersedes(false).await;
}

#[tokio::test]
async fn a_failing_payment_does_not_delay_another_payment_on_the_same_endpoint() {
    let sink = Sink::start().await;
    sink.script_payment(
        "/shared",
        "pay_bad",
        vec![Reply::status(500).delay(Duration::from_secs(3))],
    );
    let app = spawn_with("", &fifo_config(&sink, "/shared", "[\"1h\"]", "")).await;
    post_status(&app, "is_1", "pay_bad", "Pending").await;
    post_status(&app, "is_2", "pay_bad", "Succeed").await;
    sink.wait_for("/shared", 1, PATIENCE).await;

    let t0 = Instant::now();
    post_status(&app, "is_3", "pay_good", "Pending").await;
    post_status(&app, "is_4", "pay_good", "Succeed").await;
    let end = t0 + PATIENCE;
    let good = loop {
        let good: Vec<_> = sink
            .received("/shared")
            .into_iter()
            .filter(|r| r.payment_id() == "pay_good")
            .collect();
        if good.len() == 2 {
            break good;
        }
        assert!(Instant::now() < end, "pay_good not delivered: {good:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        good[1].at - t0 < Duration::from_secs(5),
        "pay_good waited {:?}",
        good[1].at - t0
    );
    assert_eq!(sequences(&good), vec![1, 2]);
    for r in sink.received("/shared") {
        assert_envelope(&r);
        r.verify(SECRET_1);
    }
    let bad = sink
        .received("/shared")
        .into_iter()
        .filter(|r| r.payment_id() == "pay_bad")
        .count();
    assert_eq!(bad, 1, "pay_bad's second change still waits for its first");
}

#[tokio::test]
async fn a_slow_endpoint_does_not_delay_another_endpoint() {
    let sink = Sink::start().await;
    sink.set("/slow", Reply::ok().delay(Duration::from_secs(10)));
    let body = relay_config(
        "",
        &[
            endpoint_toml("ep_slow", &sink.url("/slow"), SECRET_1, ""),
            endpoint_toml("ep_fast", &sink.url("/fast"), SECRET_2, ""),
        ],
        &[],
    );
    let app = spawn_with("", &body).await;
    post_status(&app, "sl_1", "pay_sl_1", "Pending").await;
    sink.wait_for("/slow", 1, PATIENCE).await;
    notified(&sink, "/fast", 1, SECRET_2).await;

    // The slow endpoint is now busy answering; the fast one is not held up.
    let t0 = Instant::now();
    post_status(&app, "sl_2", "pay_sl_2", "Pending").await;
    post_status(&app, "sl_3", "pay_sl_1", "Succeed").await;
    let got = notified(&sink, "/fast", 3, SECRET_2).await;
    for r in &got[1..] {
        assert!(
            r.at - t0 < Duration::from_secs(5),
            "fast endpoint waited {:?}",
            r.at - t0
        );
    }
    for r in sink.received("/slow") {
        assert_envelope(&r);
        r.verify(SECRET_1);
    }
}

/// Replay resends that endpoint's events created in [since, until), in
/// order, with their original webhook-ids; a range with more events than
/// `delivery.replay_max_events` is refused whole.
#[tokio::test]
async fn replay_resends_the_events_in_the_range_with_their_original_ids() {
    let sink = Sink::start().await;
    let clock = ManualClock::starting_now();
    let body = relay_config(
        "replay_max_events = 3\n",
        &[
            endpoint_toml("ep_r", &sink.url("/replay"), SECRET_1, ""),
            endpoint_toml("ep_other", &sink.url("/other"), SECRET_2, ""),
        ],
        &[],
    );
    let app = spawn_with_clock(&body, &clock).await;
    let t0 = clock.now_ms();
    let e1 = post_status(&app, "rp_1", "pay_rp", "Pending").await;
    let e2 = post_status(&app, "rp_2", "pay_rp", "Authorized").await;
    clock.advance(Duration::from_secs(600));
    let t1 = clock.now_ms();
    let e3 = post_status(&app, "rp_3", "pay_rp", "Succeed").await;
    notified(&sink, "/replay", 3, SECRET_1).await;
    notified(&sink, "/other", 3, SECRET_2).await;
    wait_deliveries(&app, SHOP_KEY, "endpoint_id=ep_r&state=succeeded", 3).await;
    clock.advance(Duration::from_secs(60));

    let path = "/v1/endpoints/ep_r/replay";
    let since = rfc3339(t0 - 60_000);
    let (code, v) = call(&app, "POST", path, SHOP_KEY, Some(json!({"since": since}))).await;
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["replayed"], 3, "{v}");
    let got = notified(&sink, "/replay", 6, SECRET_1).await;
    let ids: Vec<&str> = got[3..].iter().map(|r| r.webhook_id()).collect();
    assert_eq!(ids, vec![e1.as_str(), e2.as_str(), e3.as_str()]);
    assert_eq!(sequences(&got[3..]), vec![1, 2, 3]);

    // A range: only what was created inside it.
    let (code, v) = call(
        &app,
        "POST",
        path,
        SHOP_KEY,
        Some(json!({"since": rfc3339(t0 - 60_000), "until": rfc3339(t1 - 60_000)})),
    )
    .await;
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["replayed"], 2, "{v}");
    let got = notified(&sink, "/replay", 8, SECRET_1).await;
    assert_eq!(got[6].webhook_id(), e1);
    assert_eq!(got[7].webhook_id(), e2);
    let (code, v) = call(
        &app,
        "POST",
        path,
        SHOP_KEY,
        Some(json!({"since": rfc3339(t1 - 1000)})),
    )
    .await;
    assert_eq!((code, v["replayed"].clone()), (202, json!(1)), "{v}");
    let got = notified(&sink, "/replay", 9, SECRET_1).await;
    assert_eq!(got[8].webhook_id(), e3);

    // More than `delivery.replay_max_events` match: refused whole, nothing sent.
    post_status(&app, "rp_4", "pay_rp", "Refunded").await;
    notified(&sink, "/replay", 10, SECRET_1).await;
    notified(&sink, "/other", 4, SECRET_2).await;
    let (code, v) = call(&app, "POST", path, SHOP_KEY, Some(json!({"since": since}))).await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(error_code(&v), "invalid_request");
    assert!(v.to_string().contains("replay_max_events"), "{v}");

    // Only the endpoint named was replayed to; a bad `since` is refused.
    assert_quiet(&sink, "/replay", 10).await;
    assert_quiet(&sink, "/other", 4).await;
    let (code, v) = call(
        &app,
        "POST",
        path,
        SHOP_KEY,
        Some(json!({"since": "yesterday"})),
    )
    .await;
    assert!(code == 400 || code == 422, "{code} {v}");
    assert_eq!(error_code(&v), "invalid_request");
}
