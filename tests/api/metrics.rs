//! `GET /metrics` as an operator's Prometheus sees it (SPEC §8): the text
//! exposition moves with what the relay did. The recorder is one per test
//! process and tests run in parallel, so counters are compared before and
//! after, filtered by a provider only this test uses.

use std::collections::HashMap;

use crate::helpers::*;
use crate::relay_helpers::*;
use crate::sink::Sink;

/// Samples by `name{labels}` as written (labels sorted by the exporter).
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

async fn scrape(app: &TestApp) -> (HashMap<String, f64>, String) {
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let text = r.text().await.unwrap();
    (parse(&text), text)
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_follow_ingress_processing_and_delivery() {
    let sink = Sink::start().await;
    let config = relay_config(
        "",
        &[endpoint_toml("ep_mx", &sink.url("/mx"), SECRET_1, "")],
        &[],
    )
    .replace("id = \"acme\"\n", "id = \"mx_acme\"\n");
    let app = spawn_with("", &config).await;
    let (before, _) = scrape(&app).await;

    // Accepted and applied, then the same IPN again: a duplicate.
    let body = generic("mx_1", "pay_mx", "Succeed");
    let (code, r) = app.ipn_result("mx_acme", &body).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["events"][0]["outcome"], "applied", "{r}");
    assert_eq!(app.post_ipn("mx_acme", &body).await.status().as_u16(), 200);
    // A bad signature, and a provider nobody configured.
    let bytes = serde_json::to_vec(&generic("mx_2", "pay_mx", "Failed")).unwrap();
    let bad = app
        .post_raw(
            "mx_acme",
            bytes.clone(),
            &[("x-signature".into(), "00".into())],
        )
        .await;
    assert_eq!(bad.status().as_u16(), 401);
    let unknown = app.post_raw("mx_nobody", bytes, &[]).await;
    assert_eq!(unknown.status().as_u16(), 404);

    // The change reaches the sink.
    sink.wait_for("/mx", 1, PATIENCE).await;
    wait_delivery(&app, SHOP_KEY, "", "succeeded", |d| {
        d["state"] == "succeeded"
    })
    .await;

    // The attempt's metrics are counted once its result is recorded, just
    // after the store shows it: scrape until they are there.
    let succeeded = "ipn_relay_deliveries_total{result=\"succeeded\"}";
    let deadline = std::time::Instant::now() + PATIENCE;
    let (after, text) = loop {
        let (after, text) = scrape(&app).await;
        if get(&after, succeeded) > get(&before, succeeded) {
            break (after, text);
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let delta = |k: &str| get(&after, k) - get(&before, k);
    let ingress = |result: &str| {
        delta(&format!(
            "ipn_relay_ingress_total{{provider=\"mx_acme\",result=\"{result}\"}}"
        ))
    };
    assert_eq!(ingress("accepted"), 1.0, "{text}");
    assert_eq!(ingress("duplicate"), 1.0, "{text}");
    assert_eq!(ingress("invalid_signature"), 1.0, "{text}");
    assert!(
        delta("ipn_relay_ingress_total{provider=\"unknown\",result=\"unknown_provider\"}") >= 1.0,
        "{text}"
    );
    // Both acks are in the ack histogram, with buckets.
    assert_eq!(
        delta("ipn_relay_ack_seconds_count{provider=\"mx_acme\"}"),
        2.0,
        "{text}"
    );
    assert_eq!(
        delta("ipn_relay_ack_seconds_bucket{provider=\"mx_acme\",le=\"+Inf\"}"),
        2.0,
        "{text}"
    );
    assert!(get(&after, "ipn_relay_ack_seconds_sum{provider=\"mx_acme\"}") > 0.0);

    assert!(
        delta("ipn_relay_tasks_total{outcome=\"completed\"}") >= 1.0,
        "{text}"
    );
    assert!(
        delta("ipn_relay_events_total{outcome=\"applied\"}") >= 1.0,
        "{text}"
    );
    assert!(
        delta("ipn_relay_deliveries_total{result=\"succeeded\"}") >= 1.0,
        "{text}"
    );
    assert!(delta("ipn_relay_delivery_seconds_count") >= 1.0, "{text}");
    assert!(
        delta("ipn_relay_delivery_attempt_seconds_count") >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("# TYPE ipn_relay_delivery_seconds histogram"),
        "{text}"
    );

    // Gauges are this app's store as of the scrape (only this test scrapes).
    assert_eq!(get(&after, "ipn_relay_inbox_depth"), 0.0, "{text}");
    assert_eq!(get(&after, "ipn_relay_deliveries_pending"), 0.0, "{text}");
    assert_eq!(get(&after, "ipn_relay_deliveries_dead"), 0.0, "{text}");
    assert_eq!(
        get(&after, "ipn_relay_endpoints{state=\"enabled\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        get(&after, "ipn_relay_endpoints{state=\"disabled\"}"),
        0.0,
        "{text}"
    );
    assert!(get(&after, "ipn_relay_store_bytes") > 0.0, "{text}");
    assert!(get(&after, "ipn_relay_free_bytes") > 0.0, "{text}");

    // Endpoints made and disabled through the API move the endpoint gauges.
    let (id, _) = api_endpoint(&app, SHOP_KEY, &sink.url("/mx2")).await;
    let (m, text) = scrape(&app).await;
    assert_eq!(
        get(&m, "ipn_relay_endpoints{state=\"enabled\"}"),
        2.0,
        "{text}"
    );
    let (code, v) = call(
        &app,
        "PATCH",
        &format!("/v1/endpoints/{id}"),
        SHOP_KEY,
        Some(serde_json::json!({"disabled": true})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let (m, text) = scrape(&app).await;
    assert_eq!(
        get(&m, "ipn_relay_endpoints{state=\"enabled\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        get(&m, "ipn_relay_endpoints{state=\"disabled\"}"),
        1.0,
        "{text}"
    );

    // Unauthenticated like /healthz; other methods are 405.
    let r = app.client.post(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
}
