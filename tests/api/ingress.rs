//! What happens before authentication on `POST /v1/ipn/{provider}`: IP
//! allowlists, trusted proxies, per-provider rate limits; and what the
//! provider gets back: fixed acks, the error shape, async durability.

use std::time::Duration;

use ipn_relay::clock::ManualClock;
use serde_json::Value;

use crate::helpers::*;

const MERCHANT: &str = r#"
[[merchants]]
id = "shop-1"
api_keys = ["shop-1-key"]
"#;

fn provider(id: &str, extra: &str) -> String {
    format!(
        "[[providers]]\nid = \"{id}\"\nmerchant_id = \"shop-1\"\n{extra}\n[providers.auth]\nsecrets = [\"{id}-secret\"]\n"
    )
}

fn cfg(top: &str, providers: &[String]) -> String {
    format!(
        "{top}\n[admin]\ntokens = [\"test-admin-token\"]\n{}\n{MERCHANT}",
        providers.concat()
    )
}

fn body(event: &str) -> Vec<u8> {
    serde_json::to_vec(&generic(event, &format!("pay-{event}"), "succeeded")).unwrap()
}

/// POST a correctly signed body with extra headers.
async fn post(app: &TestApp, p: &str, event: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let b = body(event);
    let mut hs = app.sign(p, &b, &[]);
    hs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    app.post_raw(p, b, &hs).await
}

/// `{"error":{"code","message"}}` and nothing else; returns the code.
fn error_shape(v: &Value) -> String {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    assert_eq!(obj.len(), 1, "{v}");
    let e = v["error"].as_object().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(e.len(), 2, "{v}");
    assert!(
        !e["message"]
            .as_str()
            .expect("message is a string")
            .is_empty(),
        "{v}"
    );
    e["code"].as_str().expect("code is a string").to_string()
}

async fn expect_error(r: reqwest::Response, status: u16, code: &str) -> reqwest::header::HeaderMap {
    let got = r.status().as_u16();
    let headers = r.headers().clone();
    let ct = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{v}");
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    assert_eq!(error_shape(&v), code);
    headers
}

#[tokio::test]
async fn allowed_ips_refuse_other_addresses_before_authentication() {
    let app = spawn_with(
        "",
        &cfg(
            "",
            &[
                provider("walled", "allowed_ips = [\"192.0.2.0/24\", \"::1\"]"),
                provider("local", "allowed_ips = [\"127.0.0.0/8\"]"),
            ],
        ),
    )
    .await;
    // Correctly signed, but from loopback.
    expect_error(post(&app, "walled", "w1", &[]).await, 403, "forbidden").await;
    // Unsigned from a refused address: 403, not 401 (the address is checked first).
    expect_error(
        app.post_raw("walled", body("w2"), &[]).await,
        403,
        "forbidden",
    )
    .await;
    // Loopback inside the allowed network.
    assert_eq!(post(&app, "local", "l1", &[]).await.status().as_u16(), 202);
    expect_error(
        app.post_raw("local", body("l2"), &[]).await,
        401,
        "invalid_signature",
    )
    .await;
    // Refused requests are not quarantined as bad signatures nor stored.
    let (_, reqs) = app.get_auth("/v1/admin/requests", ADMIN).await;
    assert_eq!(reqs["data"].as_array().unwrap().len(), 1);
    let (_, q) = app.get_auth("/v1/admin/quarantine", ADMIN).await;
    assert_eq!(
        q["data"].as_array().unwrap().len(),
        1,
        "only the unsigned l2"
    );
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
    let behind = spawn_with(
        "",
        &cfg(
            "[ingress]\ntrusted_proxies = [\"127.0.0.1/32\"]",
            &[provider("p", "allowed_ips = [\"203.0.113.7\"]")],
        ),
    )
    .await;
    let r = post(&behind, "p", "x1", &[("X-Forwarded-For", "203.0.113.7")]).await;
    assert_eq!(r.status().as_u16(), 202);
    // A chain through another trusted hop still finds the client.
    let r = post(
        &behind,
        "p",
        "x2",
        &[("X-Forwarded-For", "203.0.113.7, 127.0.0.1")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 202);
    expect_error(
        post(&behind, "p", "x3", &[("X-Forwarded-For", "198.51.100.1")]).await,
        403,
        "forbidden",
    )
    .await;
    // A client cannot smuggle an allowed address in front of its own.
    expect_error(
        post(
            &behind,
            "p",
            "x4",
            &[("X-Forwarded-For", "203.0.113.7, 198.51.100.1")],
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    // No header: the client is the proxy itself, which is not allowed.
    expect_error(post(&behind, "p", "x5", &[]).await, 403, "forbidden").await;

    // Without trusted_proxies the header is ignored in both directions.
    let direct = spawn_with(
        "",
        &cfg(
            "",
            &[
                provider("p", "allowed_ips = [\"203.0.113.7\"]"),
                provider("lo", "allowed_ips = [\"127.0.0.1\"]"),
            ],
        ),
    )
    .await;
    expect_error(
        post(&direct, "p", "d1", &[("X-Forwarded-For", "203.0.113.7")]).await,
        403,
        "forbidden",
    )
    .await;
    let r = post(&direct, "lo", "d2", &[("X-Forwarded-For", "198.51.100.1")]).await;
    assert_eq!(r.status().as_u16(), 202);
}

#[tokio::test]
async fn rate_limit_is_per_provider_and_says_when_to_retry() {
    // The buckets run on the service clock, which this test moves.
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(
        &cfg(
            "[ingress]\nrate_limit = { per_second = 1, burst = 2 }",
            &[provider("busy", ""), provider("calm", "")],
        ),
        &clock,
    )
    .await;
    // Burst 2 at 1/s, time standing still: exactly 2 pass.
    assert_eq!(post(&app, "busy", "r0", &[]).await.status().as_u16(), 202);
    assert_eq!(post(&app, "busy", "r1", &[]).await.status().as_u16(), 202);
    let limited = post(&app, "busy", "r2", &[]).await;
    let headers = expect_error(limited, 429, "rate_limited").await;
    let retry: u64 = headers
        .get("retry-after")
        .expect("Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is an integer number of seconds");
    assert_eq!(retry, 1, "one token a second");

    // Another provider has its own bucket.
    assert_eq!(post(&app, "calm", "c1", &[]).await.status().as_u16(), 202);
    assert_eq!(post(&app, "calm", "c2", &[]).await.status().as_u16(), 202);

    // Still limited until Retry-After has passed; then one more gets through.
    clock.advance(Duration::from_millis(500));
    expect_error(post(&app, "busy", "early", &[]).await, 429, "rate_limited").await;
    clock.advance(Duration::from_millis(500));
    assert_eq!(
        post(&app, "busy", "after-wait", &[])
            .await
            .status()
            .as_u16(),
        202
    );
    expect_error(post(&app, "busy", "again", &[]).await, 429, "rate_limited").await;
}

#[tokio::test]
async fn a_fixed_ack_is_sent_verbatim_also_for_duplicates() {
    let app = spawn_with(
        "",
        &cfg(
            "",
            &[provider(
                "fixed",
                r#"ack = { status = 200, body = "[accepted]", content_type = "text/plain" }"#,
            )],
        ),
    )
    .await;
    let mut ids = Vec::new();
    for round in ["first", "duplicate"] {
        let r = post(&app, "fixed", "f1", &[]).await;
        assert_eq!(r.status().as_u16(), 200, "{round}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/plain"), "{round}: {ct}");
        ids.push(
            r.headers()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap().to_string()),
        );
        assert_eq!(r.text().await.unwrap(), "[accepted]", "{round}");
    }
    // The task exists and completes like any other; the duplicate names it.
    let (_, reqs) = app.get_auth("/v1/admin/requests", ADMIN).await;
    let items = reqs["data"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let id = items[0]["request_id"].as_str().unwrap();
    for got in ids.iter().flatten() {
        assert_eq!(got, id);
    }
    assert_eq!(app.wait_done(id).await["status"], "completed");
}

#[tokio::test]
async fn the_adyen_preset_acks_accepted_by_default() {
    let key = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
    let app = spawn_with(
        "",
        &format!(
            "[[providers]]\nid = \"adyen\"\npreset = \"adyen\"\nmerchant_id = \"shop-1\"\n\
             [providers.auth]\nsecrets = [\"{key}\"]\n{MERCHANT}"
        ),
    )
    .await;
    let unsigned = serde_json::json!({"live": "false", "notificationItems": [{"NotificationRequestItem": {
        "pspReference": "PSPD1", "merchantAccountCode": "M", "merchantReference": "order-d1",
        "amount": {"value": 100, "currency": "EUR"}, "eventCode": "AUTHORISATION", "success": "true"
    }}]});
    let signed = app.sign("adyen", &serde_json::to_vec(&unsigned).unwrap(), &[]);
    assert!(signed.is_empty(), "adyen signs inside the body");
    // The library's signer puts hmacSignature into each item.
    let p = app.settings.provider("adyen").unwrap();
    let s = ipn_relay::auth::sign(
        &p.auth,
        &Default::default(),
        &serde_json::to_vec(&unsigned).unwrap(),
        0,
    )
    .unwrap();
    let b = s.body.expect("adyen rewrites the body");
    for round in ["first", "duplicate"] {
        let r = app.post_raw("adyen", b.clone(), &[]).await;
        assert_eq!(r.status().as_u16(), 200, "{round}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/plain"), "{ct}");
        assert_eq!(r.text().await.unwrap(), "[accepted]", "{round}");
    }
    // Errors are still the JSON error shape, not "[accepted]".
    expect_error(
        app.post_raw("adyen", serde_json::to_vec(&unsigned).unwrap(), &[])
            .await,
        401,
        "invalid_signature",
    )
    .await;
}

#[tokio::test]
async fn every_error_has_the_error_shape_and_the_specs_code() {
    let app = spawn_with(
        "max_body_bytes = 2048",
        &cfg(
            "[ingress]\nrate_limit = { per_second = 1, burst = 1 }",
            &[
                provider("acme", ""),
                provider("walled", "allowed_ips = [\"192.0.2.1\"]"),
                provider("limited", ""),
            ],
        ),
    )
    .await;
    expect_error(
        app.post_raw("nobody", body("e1"), &[]).await,
        404,
        "unknown_provider",
    )
    .await;
    expect_error(post(&app, "walled", "e2", &[]).await, 403, "forbidden").await;
    expect_error(
        app.post_raw("acme", vec![b'x'; 4096], &[]).await,
        413,
        "payload_too_large",
    )
    .await;
    // Neither the 413 nor the 401 spent acme's single token: the provider's
    // bucket is charged by authenticated requests only.
    expect_error(
        app.post_raw("acme", body("e3"), &[]).await,
        401,
        "invalid_signature",
    )
    .await;
    assert_eq!(
        post(&app, "acme", "e3-signed", &[]).await.status().as_u16(),
        202
    );
    let mut n = 0;
    let r = loop {
        let r = post(&app, "limited", &format!("e4-{n}"), &[]).await;
        if r.status().as_u16() != 202 {
            break r;
        }
        n += 1;
        assert!(n < 20, "never rate limited");
    };
    expect_error(r, 429, "rate_limited").await;

    // Operator and merchant APIs.
    let get = |path: &str, token: Option<&str>| {
        let mut rb = app.client.get(app.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send()
    };
    expect_error(
        get("/v1/admin/requests", None).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    expect_error(
        get("/v1/admin/requests", Some("wrong")).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    expect_error(
        get("/v1/admin/requests?state=bogus", Some(ADMIN))
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        get("/v1/admin/requests?limit=-1", Some(ADMIN))
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    expect_error(get("/no/such/route", None).await.unwrap(), 404, "not_found").await;
    let r = app
        .client
        .post(app.url(&format!(
            "/v1/admin/requests/{}/reprocess",
            uuid::Uuid::new_v4()
        )))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "not_found").await;
}

#[tokio::test]
async fn async_durability_still_acks_and_completes() {
    let app = spawn_with("", &format!("durability = \"async\"\n{BASE}")).await;
    assert_eq!(
        app.settings.storage.durability,
        ipn_relay::config::Durability::Async
    );
    let mut ids = Vec::new();
    for i in 0..20 {
        let r = app
            .post_ipn(
                "acme",
                &generic(&format!("ev-a{i}"), &format!("pay-a{}", i % 3), "Succeed"),
            )
            .await;
        assert_eq!(r.status().as_u16(), 202);
        let v: Value = r.json().await.unwrap();
        ids.push(v["request_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        assert_eq!(app.wait_done(id).await["status"], "completed");
        let (code, v) = app.get_json(&format!("/v1/async/result/{id}")).await;
        assert_eq!(code, 200);
        assert_eq!(v["events"].as_array().unwrap().len(), 1, "{v}");
    }
    // And a duplicate still gets the original id.
    let r = app
        .post_ipn("acme", &generic("ev-a0", "pay-a0", "Succeed"))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["request_id"], ids[0].as_str());
    // Acked requests survive a restart.
    let dir = app.stop().await;
    let app = spawn_in(dir, "", &format!("durability = \"async\"\n{BASE}")).await;
    let (_, reqs) = app.get_auth("/v1/admin/requests", ADMIN).await;
    assert_eq!(reqs["data"].as_array().unwrap().len(), 20);
}
