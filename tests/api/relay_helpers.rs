//! Shared pieces of the outbound-relay tests (SPEC §2 `[delivery]`,
//! `[[merchants.endpoints]]`, §5 endpoints and deliveries, §6): a config
//! with sink endpoints, posting status changes, the endpoints and
//! deliveries API, and waiting for notifications that are checked against
//! the Standard Webhooks envelope and signature.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;
use crate::sink::{Received, Sink};

/// Endpoint secrets for config endpoints (`whsec_` + base64 of 24 bytes).
pub const SECRET_1: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const SECRET_2: &str = "whsec_aXBuLXJlbGF5LXRlc3Qtc2VjcmV0LTAy";
pub const SECRET_3: &str = "whsec_aXBuLXJlbGF5LXRlc3Qtc2VjcmV0LTAz";

/// How long any "this should happen" poll waits.
pub const PATIENCE: Duration = Duration::from_secs(20);
/// How long a "nothing more arrives" check watches (the dispatcher looks
/// for due work at least every ~100 ms).
pub const HOLD: Duration = Duration::from_millis(1200);

/// One `[[merchants.endpoints]]` table.
pub fn endpoint_toml(id: &str, url: &str, secret: &str, extra: &str) -> String {
    let events = if extra.contains("events") {
        ""
    } else {
        "events = [\"payment.*\"]\n"
    };
    format!(
        "\n[[merchants.endpoints]]\nid = \"{id}\"\nurl = \"{url}\"\nsecret = \"{secret}\"\n{events}{extra}\n"
    )
}

/// A full config body: admin token; provider `acme` reporting for shop-1
/// and `acme2` for shop-2 (same statuses as BASE); `[delivery]` with
/// `delivery` lines, plus `allow_private_targets = true` (loopback sinks)
/// and `retry_schedule = ["1h", "1h"]` unless `delivery` sets them; then
/// merchants shop-1 and shop-2 (keys SHOP_KEY and OTHER_KEY) followed by
/// their endpoint tables (from [`endpoint_toml`]).
pub fn relay_config(delivery: &str, shop1: &[String], shop2: &[String]) -> String {
    let mut d = String::from("[delivery]\n");
    if !delivery.contains("allow_private_targets") {
        d.push_str("allow_private_targets = true\n");
    }
    if !delivery.contains("retry_schedule") {
        d.push_str("retry_schedule = [\"1h\", \"1h\"]\n");
    }
    d.push_str(delivery);
    format!(
        r#"
[admin]
tokens = ["test-admin-token"]

{d}

[[providers]]
id = "acme"
merchant_id = "shop-1"
[providers.auth]
secrets = ["acme-secret"]
[providers.mapping.statuses]
Succeed = "succeeded"
Failed = "failed"
Pending = "pending"
Authorized = "authorized"
Refunded = "refunded"

[[providers]]
id = "acme2"
merchant_id = "shop-2"
[providers.auth]
secrets = ["acme2-secret"]
[providers.mapping.statuses]
Succeed = "succeeded"
Failed = "failed"
Pending = "pending"
Authorized = "authorized"
Refunded = "refunded"

[[merchants]]
id = "shop-1"
api_keys = ["shop-1-key"]
allowed_return_origins = ["https://shop.example.com"]
{}
[[merchants]]
id = "shop-2"
api_keys = ["shop-2-key"]
allowed_return_origins = ["https://two.example.com"]
{}
"#,
        shop1.concat(),
        shop2.concat()
    )
}

/// A signed IPN from `provider` (`acme` → shop-1, `acme2` → shop-2) that
/// must be applied; returns the change's `evt_…` event id.
pub async fn change(
    app: &TestApp,
    provider: &str,
    ipn_id: &str,
    payment_id: &str,
    status: &str,
) -> String {
    let (code, r) = app
        .ipn_result(provider, &generic(ipn_id, payment_id, status))
        .await;
    assert_eq!(code, 200, "{ipn_id}: {r}");
    assert_eq!(r["events"][0]["outcome"], "applied", "{ipn_id}: {r}");
    let id = r["events"][0]["event_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("evt_"), "{r}");
    id
}

/// [`change`] for shop-1 (provider `acme`).
pub async fn post_status(app: &TestApp, ipn_id: &str, payment_id: &str, status: &str) -> String {
    change(app, "acme", ipn_id, payment_id, status).await
}

/// Send `method path` with a Bearer `key` and an optional JSON body.
pub async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = app.client.request(m, app.url(path)).bearer_auth(key);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let code = r.status().as_u16();
    assert!(code < 500, "{method} {path}: {code}");
    (code, r.json().await.unwrap_or(Value::Null))
}

/// Send raw bytes as `application/json` (malformed-body tests).
pub async fn call_raw(
    app: &TestApp,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let r = app
        .client
        .request(m, app.url(path))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    assert!(code < 500, "{method} {path}: {code}");
    (code, r.json().await.unwrap_or(Value::Null))
}

/// `POST /v1/endpoints` that must be 201; returns the endpoint (with its secret).
pub async fn create_endpoint(app: &TestApp, key: &str, body: Value) -> Value {
    let (code, v) = call(app, "POST", "/v1/endpoints", key, Some(body.clone())).await;
    assert_eq!(code, 201, "{body}: {v}");
    v
}

/// An API endpoint at `url` receiving everything; returns (id, secret).
pub async fn api_endpoint(app: &TestApp, key: &str, url: &str) -> (String, String) {
    let v = create_endpoint(app, key, json!({"url": url, "events": ["*"]})).await;
    (s(&v["id"]), s(&v["secret"]))
}

pub fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
        .to_string()
}

/// `GET /v1/endpoints/{id}` that must be 200.
pub async fn get_endpoint(app: &TestApp, key: &str, id: &str) -> Value {
    let (code, v) = app.get_auth(&format!("/v1/endpoints/{id}"), key).await;
    assert_eq!(code, 200, "{id}: {v}");
    v
}

/// `GET /v1/deliveries?{query}` that must be 200; its `data`.
pub async fn deliveries(app: &TestApp, key: &str, query: &str) -> Vec<Value> {
    let (code, v) = app.get_auth(&format!("/v1/deliveries?{query}"), key).await;
    assert_eq!(code, 200, "{query}: {v}");
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array: {v}"))
        .clone()
}

/// `GET /v1/deliveries/{id}` that must be 200.
pub async fn delivery(app: &TestApp, key: &str, id: &str) -> Value {
    let (code, v) = app.get_auth(&format!("/v1/deliveries/{id}"), key).await;
    assert_eq!(code, 200, "{id}: {v}");
    v
}

/// Poll `GET /v1/deliveries?{query}` until one delivery satisfies `pred`;
/// returns it. Panics with the last listing after [`PATIENCE`].
pub async fn wait_delivery(
    app: &TestApp,
    key: &str,
    query: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let end = Instant::now() + PATIENCE;
    loop {
        let list = deliveries(app, key, query).await;
        if let Some(d) = list.iter().find(|d| pred(d)) {
            return d.clone();
        }
        assert!(
            Instant::now() < end,
            "no delivery ({query}) became {what}: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Poll `GET /v1/deliveries?{query}` until it lists at least `n`.
pub async fn wait_deliveries(app: &TestApp, key: &str, query: &str, n: usize) -> Vec<Value> {
    let end = Instant::now() + PATIENCE;
    loop {
        let list = deliveries(app, key, query).await;
        if list.len() >= n {
            return list;
        }
        assert!(
            Instant::now() < end,
            "({query}) never listed {n}: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Poll `GET /v1/endpoints/{id}` until `pred` holds.
pub async fn wait_endpoint(
    app: &TestApp,
    key: &str,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let end = Instant::now() + PATIENCE;
    loop {
        let v = get_endpoint(app, key, id).await;
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < end, "endpoint {id} never {what}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What every notification must look like (SPEC §6): POST, JSON,
/// `user-agent: ipn-relay/…`, `webhook-id` = `data.event_id` = `evt_…`,
/// a numeric `webhook-timestamp`, `type` = `payment.<data.status>`.
pub fn assert_envelope(r: &Received) {
    assert_eq!(r.method, "POST", "{r:?}");
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let ua = r.header("user-agent").unwrap_or_default();
    assert!(ua.starts_with("ipn-relay/"), "user-agent {ua}");
    let id = r.webhook_id();
    assert!(id.starts_with("evt_"), "webhook-id {id}");
    assert_eq!(r.json["data"]["event_id"], id, "{}", r.json);
    r.webhook_timestamp();
    let status = r.json["data"]["status"].as_str().unwrap_or_default();
    assert_eq!(r.event_type(), format!("payment.{status}"), "{}", r.json);
    assert!(r.json["timestamp"].is_string(), "{}", r.json);
}

/// Wait until `path` has received `n` notifications; every one is checked
/// with [`assert_envelope`] and must verify with `secret`.
pub async fn notified(sink: &Sink, path: &str, n: usize, secret: &str) -> Vec<Received> {
    let got = sink.wait_for(path, n, PATIENCE).await;
    for r in &got {
        assert_envelope(r);
        r.verify(secret);
    }
    got
}

/// Watch `path` for [`HOLD`]: it must still have exactly `n` requests.
/// (The one kind of check that has to wait: that something does NOT happen.)
pub async fn assert_quiet(sink: &Sink, path: &str, n: usize) {
    let end = Instant::now() + HOLD;
    while Instant::now() < end {
        let got = sink.received(path);
        assert!(
            got.len() <= n,
            "{path}: expected no more than {n} requests, got {}: {:#?}",
            got.len(),
            got.iter().map(|r| r.json.to_string()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sink.received(path).len(), n, "{path}");
}

/// `data.sequence` of each request, in arrival order.
pub fn sequences(got: &[Received]) -> Vec<i64> {
    got.iter().map(|r| r.sequence()).collect()
}

/// Parse an RFC 3339 timestamp into unix milliseconds.
pub fn rfc3339_ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .unwrap_or_else(|e| panic!("{v} is not RFC 3339: {e}"))
        .timestamp_millis()
}

/// Unix milliseconds as RFC 3339 (for `replay`'s `since` / `until`).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Lower-cased `error.message` of an error body.
pub fn message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message: {v}"))
        .to_lowercase()
}
