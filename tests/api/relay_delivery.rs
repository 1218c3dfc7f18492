//! Outbound notifications as the merchant's endpoint sees them (SPEC §6):
//! the Standard Webhooks envelope and body, one notification per applied
//! change to each endpoint whose event patterns match, the deliveries API
//! (§5), and what the relay does with each kind of answer — 2xx, 5xx
//! retried on the schedule until dead and then retried by hand,
//! `Retry-After`, 410 disabling the endpoint, redirects not followed,
//! timeouts. Retries are made due by moving the service clock.

use std::time::Duration;

use ipn_relay::clock::{Clock, ManualClock};
use serde_json::json;

use crate::helpers::*;
use crate::relay_helpers::*;
use crate::sink::{Reply, Sink};

fn one_endpoint(sink: &Sink, path: &str, delivery: &str) -> String {
    relay_config(
        delivery,
        &[endpoint_toml("ep_1", &sink.url(path), SECRET_1, "")],
        &[],
    )
}

#[tokio::test]
async fn each_applied_change_is_one_signed_standard_webhook() {
    let sink = Sink::start().await;
    let app = spawn_with("", &one_endpoint(&sink, "/hook", "")).await;
    let e1 = post_status(&app, "env_1", "pay_env", "Pending").await;
    let e2 = post_status(&app, "env_2", "pay_env", "Succeed").await;
    // A duplicate status is not a change: nothing is sent for it.
    let (_, dup) = app
        .ipn_result("acme", &generic("env_3", "pay_env", "Succeed"))
        .await;
    assert_eq!(dup["events"][0]["outcome"], "duplicate", "{dup}");

    let got = notified(&sink, "/hook", 2, SECRET_1).await;
    assert_eq!(sequences(&got), vec![1, 2]);
    assert_eq!(got[0].webhook_id(), e1);
    assert_eq!(got[1].webhook_id(), e2);
    let d = &got[1].json["data"];
    assert_eq!(got[1].json["type"], "payment.succeeded");
    assert_eq!(d["payment_id"], "pay_env");
    assert_eq!(d["merchant_id"], "shop-1");
    assert_eq!(d["provider"], "acme");
    assert_eq!(d["status"], "succeeded");
    assert_eq!(d["previous_status"], "pending");
    assert_eq!(d["amount"], 1000);
    assert_eq!(d["provider_event_id"], "env_2");
    assert_eq!(got[0].json["type"], "payment.pending");
    assert!(
        got[0].json["data"]["previous_status"].is_null(),
        "{}",
        got[0].json
    );
    rfc3339_ms(&got[1].json["timestamp"]);

    // The webhook-id is the event id the merchant API shows.
    let (_, ev) = app
        .get_auth("/v1/events?payment_id=pay_env", SHOP_KEY)
        .await;
    let ids: Vec<&str> = ev["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![e1.as_str(), e2.as_str()], "{ev}");
    let (_, p) = app.get_auth("/v1/payments/pay_env", SHOP_KEY).await;
    assert!(p["history"].to_string().contains(&e2), "{p}");

    // Listed as deliveries, one per change, succeeded on the first try.
    let list = wait_deliveries(&app, SHOP_KEY, "payment_id=pay_env&state=succeeded", 2).await;
    assert_eq!(list.len(), 2, "{list:#?}");
    for dl in &list {
        assert!(dl["id"].as_str().unwrap().starts_with("dlv_"), "{dl}");
        assert_eq!(dl["endpoint_id"], "ep_1");
        assert_eq!(dl["merchant_id"], "shop-1");
        assert_eq!(dl["payment_id"], "pay_env");
        assert_eq!(dl["attempts"], 1);
        assert_eq!(dl["last_status"], 200);
        assert!(dl["last_error"].is_null(), "{dl}");
        assert!(dl["next_attempt_at"].is_null(), "{dl}");
        rfc3339_ms(&dl["created_at"]);
    }
    let by_seq = |n: i64| list.iter().find(|d| d["sequence"] == n).unwrap().clone();
    assert_eq!(by_seq(1)["event_id"], e1.as_str());
    assert_eq!(by_seq(2)["event_id"], e2.as_str());
    let one = delivery(&app, SHOP_KEY, by_seq(2)["id"].as_str().unwrap()).await;
    let log = one["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 1, "{one}");
    assert_eq!(log[0]["status"], 200);
    assert_eq!(log[0]["response_body"], "ok");
    assert!(log[0]["latency_ms"].is_number(), "{one}");
    rfc3339_ms(&log[0]["at"]);
}

#[tokio::test]
async fn an_endpoint_receives_only_the_event_types_it_subscribed_to() {
    let sink = Sink::start().await;
    let body = relay_config(
        "",
        &[
            endpoint_toml("ep_all", &sink.url("/all"), SECRET_1, "events = [\"*\"]\n"),
            endpoint_toml(
                "ep_pay",
                &sink.url("/pay"),
                SECRET_2,
                "events = [\"payment.*\"]\n",
            ),
            endpoint_toml(
                "ep_ok",
                &sink.url("/ok"),
                SECRET_3,
                "events = [\"payment.succeeded\"]\n",
            ),
        ],
        &[],
    );
    let app = spawn_with("", &body).await;
    post_status(&app, "pat_1", "pay_pat", "Pending").await;
    post_status(&app, "pat_2", "pay_pat", "Authorized").await;
    post_status(&app, "pat_3", "pay_pat", "Succeed").await;
    for (path, secret) in [("/all", SECRET_1), ("/pay", SECRET_2)] {
        let got = notified(&sink, path, 3, secret).await;
        assert_eq!(sequences(&got), vec![1, 2, 3], "{path}");
    }
    let got = notified(&sink, "/ok", 1, SECRET_3).await;
    assert_eq!(got[0].event_type(), "payment.succeeded");
    assert_eq!(got[0].sequence(), 3);
    // Nothing was even queued for the types it does not want.
    assert_eq!(
        deliveries(&app, SHOP_KEY, "endpoint_id=ep_ok").await.len(),
        1
    );
    assert_eq!(sink.received("/ok").len(), 1);
}

/// schedule ["1m", "1h"]: each retry waits for its step (±20 %) on the
/// service clock; after the last one the delivery is dead, keeps its log,
/// and a manual retry sends it again with the same webhook-id.
#[tokio::test]
async fn failures_are_retried_on_the_schedule_then_dead_then_retryable_by_hand() {
    let sink = Sink::start().await;
    sink.set("/fail", Reply::status(500).body("nope"));
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(
        &one_endpoint(&sink, "/fail", "retry_schedule = [\"1m\", \"1h\"]\n"),
        &clock,
    )
    .await;
    let evt = post_status(&app, "sch_1", "pay_sch", "Pending").await;
    notified(&sink, "/fail", 1, SECRET_1).await;
    let d = wait_delivery(&app, SHOP_KEY, "payment_id=pay_sch", "attempted", |d| {
        d["attempts"] == 1
    })
    .await;
    assert_eq!(d["state"], "pending");
    assert_eq!(d["last_status"], 500);
    let next = rfc3339_ms(&d["next_attempt_at"]) - clock.now_ms();
    assert!(
        (47_000..=73_000).contains(&next),
        "1m ±20 %: next in {next} ms"
    );

    clock.advance(Duration::from_secs(47));
    assert_quiet(&sink, "/fail", 1).await;
    clock.advance(Duration::from_secs(26));
    notified(&sink, "/fail", 2, SECRET_1).await;
    clock.advance(Duration::from_secs(47 * 60));
    assert_quiet(&sink, "/fail", 2).await;
    clock.advance(Duration::from_secs(26 * 60));
    let got = notified(&sink, "/fail", 3, SECRET_1).await;
    assert!(
        got.iter().all(|r| r.webhook_id() == evt),
        "same webhook-id on every try"
    );

    let dead = wait_delivery(&app, SHOP_KEY, "state=dead", "dead", |d| {
        d["payment_id"] == "pay_sch"
    })
    .await;
    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["last_status"], 500);
    assert!(dead["next_attempt_at"].is_null(), "{dead}");
    let id = s(&dead["id"]);
    let full = delivery(&app, SHOP_KEY, &id).await;
    let log = full["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 3, "{full}");
    assert!(
        log.iter()
            .all(|a| a["status"] == 500 && a["response_body"] == "nope"),
        "{full}"
    );
    clock.advance(Duration::from_secs(24 * 3600));
    assert_quiet(&sink, "/fail", 3).await;

    // By hand: 202 with the delivery pending again; it goes out, and succeeds.
    sink.set("/fail", Reply::ok());
    let (code, v) = call(
        &app,
        "POST",
        &format!("/v1/deliveries/{id}/retry"),
        SHOP_KEY,
        None,
    )
    .await;
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["state"], "pending");
    let got = notified(&sink, "/fail", 4, SECRET_1).await;
    assert_eq!(got[3].webhook_id(), evt);
    wait_delivery(&app, SHOP_KEY, "state=succeeded", "succeeded", |d| {
        d["id"] == id.as_str()
    })
    .await;
    // Only a dead delivery can be retried by hand.
    let (code, v) = call(
        &app,
        "POST",
        &format!("/v1/deliveries/{id}/retry"),
        SHOP_KEY,
        None,
    )
    .await;
    assert_eq!(code, 409, "{v}");
    assert_eq!(sink.received("/fail").len(), 4);
}

#[tokio::test]
async fn the_attempt_log_keeps_the_first_kib_of_the_answer() {
    let sink = Sink::start().await;
    let long = "abcdefghij".repeat(300);
    sink.set("/long", Reply::status(500).body(&long));
    let app = spawn_with("", &one_endpoint(&sink, "/long", "")).await;
    post_status(&app, "kib_1", "pay_kib", "Pending").await;
    notified(&sink, "/long", 1, SECRET_1).await;
    let d = wait_delivery(&app, SHOP_KEY, "payment_id=pay_kib", "attempted", |d| {
        d["attempts"] == 1
    })
    .await;
    let full = delivery(&app, SHOP_KEY, d["id"].as_str().unwrap()).await;
    let body = full["attempt_log"][0]["response_body"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(body, long[..1024], "the first 1 KiB");
}

/// 429/503 `Retry-After: 2` is honoured instead of a one-hour step.
#[tokio::test]
async fn retry_after_on_503_and_429_replaces_the_schedule_step() {
    for status in [503, 429] {
        let sink = Sink::start().await;
        sink.script(
            "/ra",
            vec![
                Reply::status(status).header("retry-after", "2"),
                Reply::ok(),
            ],
        );
        let clock = ManualClock::starting_now();
        let app = spawn_with_clock(
            &one_endpoint(&sink, "/ra", "retry_schedule = [\"1h\", \"1h\"]\n"),
            &clock,
        )
        .await;
        post_status(&app, "ra_1", "pay_ra", "Pending").await;
        notified(&sink, "/ra", 1, SECRET_1).await;
        let d = wait_delivery(&app, SHOP_KEY, "payment_id=pay_ra", "attempted", |d| {
            d["attempts"] == 1
        })
        .await;
        assert_eq!(d["last_status"], status);
        assert_quiet(&sink, "/ra", 1).await;
        clock.advance(Duration::from_secs(3));
        let got = notified(&sink, "/ra", 2, SECRET_1).await;
        assert_eq!(got[0].webhook_id(), got[1].webhook_id());
        wait_delivery(
            &app,
            SHOP_KEY,
            "payment_id=pay_ra&state=succeeded",
            "succeeded",
            |_| true,
        )
        .await;
    }
}

/// 410 Gone: the endpoint is disabled (with a reason) and sent nothing
/// more; re-enabling it sends what is pending.
#[tokio::test]
async fn gone_disables_the_endpoint_until_it_is_re_enabled() {
    let sink = Sink::start().await;
    sink.script("/gone", vec![Reply::status(410), Reply::ok()]);
    let app = spawn_with("", &relay_config("", &[], &[])).await;
    let (id, secret) = api_endpoint(&app, SHOP_KEY, &sink.url("/gone")).await;
    post_status(&app, "gone_1", "pay_gone_a", "Pending").await;
    notified(&sink, "/gone", 1, &secret).await;
    let ep = wait_endpoint(&app, SHOP_KEY, &id, "disabled", |e| e["disabled"] == true).await;
    assert!(ep["disabled_reason"].is_string(), "{ep}");

    post_status(&app, "gone_2", "pay_gone_b", "Pending").await;
    assert_quiet(&sink, "/gone", 1).await;
    wait_delivery(
        &app,
        SHOP_KEY,
        "payment_id=pay_gone_b&state=pending",
        "pending",
        |_| true,
    )
    .await;

    let (code, v) = call(
        &app,
        "PATCH",
        &format!("/v1/endpoints/{id}"),
        SHOP_KEY,
        Some(json!({"disabled": false})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["disabled"], false);
    let end = std::time::Instant::now() + PATIENCE;
    while !sink
        .received("/gone")
        .iter()
        .any(|r| r.payment_id() == "pay_gone_b")
    {
        assert!(
            std::time::Instant::now() < end,
            "pay_gone_b never delivered after re-enabling"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in sink.received("/gone") {
        assert_envelope(&r);
        r.verify(&secret);
    }
    wait_delivery(
        &app,
        SHOP_KEY,
        "payment_id=pay_gone_b&state=succeeded",
        "succeeded",
        |_| true,
    )
    .await;
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let sink = Sink::start().await;
    sink.set(
        "/moved",
        Reply::status(302).header("location", &sink.url("/target")),
    );
    let app = spawn_with("", &one_endpoint(&sink, "/moved", "")).await;
    post_status(&app, "rd_1", "pay_rd", "Pending").await;
    notified(&sink, "/moved", 1, SECRET_1).await;
    let d = wait_delivery(&app, SHOP_KEY, "payment_id=pay_rd", "attempted", |d| {
        d["attempts"] == 1
    })
    .await;
    assert_eq!(d["state"], "pending", "{d}");
    assert_eq!(d["last_status"], 302);
    assert!(d["next_attempt_at"].is_string(), "to be retried: {d}");
    assert_quiet(&sink, "/target", 0).await;
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_a_failed_attempt() {
    let sink = Sink::start().await;
    sink.set("/slow", Reply::ok().delay(Duration::from_secs(5)));
    let app = spawn_with("", &one_endpoint(&sink, "/slow", "timeout = \"1s\"\n")).await;
    post_status(&app, "to_1", "pay_to", "Pending").await;
    notified(&sink, "/slow", 1, SECRET_1).await;
    let d = wait_delivery(&app, SHOP_KEY, "payment_id=pay_to", "timed out", |d| {
        d["attempts"] == 1
    })
    .await;
    assert_eq!(d["state"], "pending", "{d}");
    assert!(d["last_status"].is_null(), "{d}");
    let err = d["last_error"].as_str().unwrap_or_default().to_lowercase();
    assert!(err.contains("timeout") || err.contains("timed out"), "{d}");
}
