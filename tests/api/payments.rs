//! Merchant API (SPEC §5): registering payments, reading them with their
//! history, polling events; who may see what; which merchant an IPN's
//! payment belongs to.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn registering_a_payment_checks_the_return_origin_and_ownership() {
    let app = spawn_app().await;
    let (code, v) = register(
        &app,
        SHOP_KEY,
        &json!({
            "payment_id": "reg_1",
            "merchant_site_url": "https://shop.example.com/pay/done?order=42",
            "provider": "acme",
            "metadata": {"order": 42}
        }),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["payment_id"], "reg_1");
    assert_eq!(v["merchant_id"], "shop-1");
    assert_eq!(v["provider"], "acme");
    assert!(v["status"].is_null(), "no IPN yet: {v}");

    // Not an allowed origin: 422 in the one error shape.
    let (code, v) = register(
        &app,
        SHOP_KEY,
        &json!({"payment_id": "reg_2", "merchant_site_url": "https://elsewhere.example/done"}),
    )
    .await;
    assert_eq!(code, 422, "{v}");
    assert!(v["error"]["code"].is_string(), "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("allowed_return_origins"));
    let (code, _) = app.get_auth("/v1/payments/reg_2", SHOP_KEY).await;
    assert_eq!(code, 404, "a refused registration stores nothing");

    // The same merchant again: 409, nothing changed.
    let (code, v) = register(
        &app,
        SHOP_KEY,
        &json!({"payment_id": "reg_1", "merchant_site_url": "https://shop.example.com/pay/again"}),
    )
    .await;
    assert_eq!(code, 409, "{v}");
    assert_eq!(error_code(&v), "conflict");

    // Another merchant's id of the same name is its own payment.
    let (code, v) = register(&app, OTHER_KEY, &json!({"payment_id": "reg_1"})).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["merchant_id"], "shop-2");
    let (_, p) = app.get_auth("/v1/payments/reg_1", SHOP_KEY).await;
    assert_eq!(p["merchant_id"], "shop-1");
    assert_ne!(p["merchant_site_url"], "https://shop.example.com/pay/again");
}

#[tokio::test]
async fn get_payment_shows_state_and_history() {
    let app = spawn_app().await;
    let (_, r1) = app
        .ipn_result(
            "acme",
            &ipn(
                "g_1",
                "get_1",
                "Authorized",
                json!({"authorization_id": "au_77"}),
            ),
        )
        .await;
    let (_, r2) = app
        .ipn_result(
            "acme",
            &ipn("g_2", "get_1", "Succeed", json!({"charge_id": "ch_88"})),
        )
        .await;
    let (_, r3) = app
        .ipn_result("acme", &ipn("g_3", "get_1", "Pending", json!({})))
        .await;
    let (code, p) = app.get_auth("/v1/payments/get_1", SHOP_KEY).await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["payment_id"], "get_1");
    assert_eq!(p["merchant_id"], "shop-1");
    assert_eq!(p["provider"], "acme");
    assert_eq!(p["status"], "succeeded");
    assert_eq!(p["sequence"], 2);
    assert_eq!(p["authorization_id"], "au_77");
    assert_eq!(p["charge_id"], "ch_88");
    assert_eq!(p["amount"], 1000);
    assert_eq!(p["currency"], "EUR");
    assert!(chrono::DateTime::parse_from_rfc3339(p["updated_at"].as_str().unwrap()).is_ok());

    let h = p["history"].as_array().unwrap();
    assert_eq!(h.len(), 3);
    let rows: Vec<(Value, &str, &str)> = h
        .iter()
        .map(|e| {
            (
                e["sequence"].clone(),
                e["status"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (json!(1), "authorized", "applied"),
            (json!(2), "succeeded", "applied"),
            (Value::Null, "pending", "stale"),
        ]
    );
    for (e, r) in h.iter().zip([&r1, &r2, &r3]) {
        assert_eq!(e["request_id"], r["request_id"]);
        // created 1_700_000_000 in the generic body.
        assert_eq!(
            chrono::DateTime::parse_from_rfc3339(e["occurred_at"].as_str().unwrap())
                .unwrap()
                .timestamp(),
            1_700_000_000
        );
        assert!(chrono::DateTime::parse_from_rfc3339(e["received_at"].as_str().unwrap()).is_ok());
    }
}

#[tokio::test]
async fn merchants_only_see_their_own_payments_and_need_a_key() {
    let app = spawn_app().await;
    app.ipn_result("acme", &generic("a_1", "own_1", "Succeed"))
        .await;

    let (code, v) = app.get_auth("/v1/payments/own_1", OTHER_KEY).await;
    assert_eq!(code, 404, "another merchant's payment is a 404: {v}");
    assert_eq!(error_code(&v), "not_found");
    let (code2, v2) = app.get_auth("/v1/payments/never_existed", OTHER_KEY).await;
    assert_eq!(code2, 404);
    assert_eq!(
        v, v2,
        "indistinguishable from a payment that does not exist"
    );

    let (code, v) = app.get_json("/v1/payments/own_1").await;
    assert_eq!(code, 401);
    assert_eq!(error_code(&v), "unauthorized");
    let (code, v) = app.get_auth("/v1/payments/own_1", "wrong-key").await;
    assert_eq!(code, 401);
    assert_eq!(error_code(&v), "unauthorized");
    let r = app
        .client
        .get(app.url("/v1/payments/own_1"))
        .header("authorization", format!("Basic {SHOP_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = app
        .client
        .post(app.url("/v1/payments"))
        .json(&json!({"payment_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (code, _) = app.get_json("/v1/events").await;
    assert_eq!(code, 401);

    // Admins act for a named merchant.
    let (code, v) = app
        .get_auth("/v1/payments/own_1?merchant_id=shop-1", ADMIN)
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "succeeded");
    let (code, _) = app
        .get_auth("/v1/payments/own_1?merchant_id=shop-2", ADMIN)
        .await;
    assert_eq!(code, 404);
    let (code, v) = app.get_auth("/v1/payments/own_1", ADMIN).await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(error_code(&v), "invalid_request");
    // The feed shows an applied event once its write is durable (ms later).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (code, v) = app.get_auth("/v1/events?merchant_id=shop-1", ADMIN).await;
        assert_eq!(code, 200);
        let n = v["data"].as_array().unwrap().len();
        if n == 1 || std::time::Instant::now() >= deadline {
            assert_eq!(n, 1, "{v}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // A merchant key cannot widen its scope with ?merchant_id=.
    let (code, _) = app
        .get_auth("/v1/payments/own_1?merchant_id=shop-1", OTHER_KEY)
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn events_are_oldest_first_and_paginate_with_after_and_limit() {
    let app = spawn_app().await;
    let mut expected = Vec::new();
    for (i, (pay, st)) in [
        ("ev_a", "Pending"),
        ("ev_b", "Pending"),
        ("ev_a", "Succeed"),
        ("ev_b", "Failed"),
        ("ev_a", "Refunded"),
    ]
    .into_iter()
    .enumerate()
    {
        let (_, r) = app
            .ipn_result("acme", &generic(&format!("e_{i}"), pay, st))
            .await;
        assert_eq!(r["events"][0]["outcome"], "applied");
        expected.push(r["events"][0]["event_id"].as_str().unwrap().to_string());
    }
    // Another merchant's event never shows up.
    app.ipn_result(
        "nomerchant",
        &ipn(
            "e_other",
            "ev_other",
            "succeeded",
            json!({"merchant": "shop-2"}),
        ),
    )
    .await;

    let (code, all) = app.get_auth("/v1/events", SHOP_KEY).await;
    assert_eq!(code, 200);
    let ids: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, expected, "oldest first, only shop-1's");
    let first = &all["data"][0];
    assert_eq!(first["type"], "payment.pending");
    assert_eq!(first["payment_id"], "ev_a");
    assert_eq!(first["merchant_id"], "shop-1");
    assert_eq!(first["provider"], "acme");
    assert_eq!(first["sequence"], 1);
    assert_eq!(first["provider_event_id"], "e_0");
    assert_eq!(all["data"][2]["previous_status"], "pending");

    // Page through two at a time.
    let mut paged = Vec::new();
    let mut after = String::new();
    for _ in 0..10 {
        let q = if after.is_empty() {
            "/v1/events?limit=2".to_string()
        } else {
            format!("/v1/events?limit=2&after={after}")
        };
        let (code, page) = app.get_auth(&q, SHOP_KEY).await;
        assert_eq!(code, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        if data.is_empty() {
            break;
        }
        for e in data {
            paged.push(e["event_id"].as_str().unwrap().to_string());
        }
        after = paged.last().unwrap().clone();
    }
    assert_eq!(paged, expected);
    let (_, tail) = app
        .get_auth(&format!("/v1/events?after={}", expected[4]), SHOP_KEY)
        .await;
    assert_eq!(tail["data"].as_array().unwrap().len(), 0);

    // Filter by payment.
    let (_, only_b) = app.get_auth("/v1/events?payment_id=ev_b", SHOP_KEY).await;
    let b: Vec<(&str, u64)> = only_b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["status"].as_str().unwrap(),
                e["sequence"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(b, [("pending", 1), ("failed", 2)]);

    // Bad input.
    for q in [
        "after=not-an-event",
        "after=evt_zzz",
        "limit=0",
        "limit=abc",
    ] {
        let (code, v) = app.get_auth(&format!("/v1/events?{q}"), SHOP_KEY).await;
        assert_eq!(code, 400, "{q}: {v}");
        assert_eq!(error_code(&v), "invalid_request", "{q}");
    }
}

#[tokio::test]
async fn a_registered_payment_resolves_among_the_providers_merchants() {
    let app = spawn_app().await;
    let (code, _) = register(&app, OTHER_KEY, &json!({"payment_id": "mine_2"})).await;
    assert_eq!(code, 201);
    // nomerchant reports for shop-1 and shop-2 and has no default: the
    // registration says whose payment it is.
    let (code, r) = app
        .ipn_result("nomerchant", &generic("r_1", "mine_2", "succeeded"))
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["events"][0]["outcome"], "applied");

    let (code, p) = app.get_auth("/v1/payments/mine_2", OTHER_KEY).await;
    assert_eq!(code, 200);
    assert_eq!(p["merchant_id"], "shop-2");
    assert_eq!(p["status"], "succeeded");
    let (code, _) = app.get_auth("/v1/payments/mine_2", SHOP_KEY).await;
    assert_eq!(code, 404);
    let (_, e2) = app.get_auth("/v1/events", OTHER_KEY).await;
    assert_eq!(e2["data"].as_array().unwrap().len(), 1);
    assert_eq!(e2["data"][0]["merchant_id"], "shop-2");
    let (_, e1) = app.get_auth("/v1/events", SHOP_KEY).await;
    assert_eq!(e1["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn an_ipn_whose_merchant_cannot_be_resolved_ends_in_unknown_merchant_once() {
    let app = spawn_app().await;
    // No registration, no merchant in the IPN, provider without merchant_id.
    let (code, v) = app
        .ipn_result("nomerchant", &generic("u_1", "orphan_1", "succeeded"))
        .await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["code"], "unknown_merchant");
    let id = v["request_id"].as_str().unwrap().to_string();
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    let (code, again) = app.get_json(&format!("/v1/async/result/{id}")).await;
    assert_eq!(code, 404, "an error result is handed out once: {again}");
    assert_eq!(again["status"], "unknown");
    let (code, _) = app.get_json(&format!("/v1/async/status/{id}")).await;
    assert_eq!(code, 404);
    // Nothing was created.
    let (code, _) = app
        .get_auth("/v1/payments/orphan_1?merchant_id=shop-1", ADMIN)
        .await;
    assert_eq!(code, 404);
    let (code, _) = app
        .get_auth("/v1/payments/orphan_1?merchant_id=shop-2", ADMIN)
        .await;
    assert_eq!(code, 404);

    // Naming a merchant the provider does not report for (here: one that is
    // not configured) is refused, even where the provider has a default.
    for provider in ["nomerchant", "acme"] {
        let (code, v) = app
            .ipn_result(
                provider,
                &ipn(
                    &format!("u_2_{provider}"),
                    &format!("orphan_2_{provider}"),
                    "succeeded",
                    json!({"merchant": "shop-404"}),
                ),
            )
            .await;
        assert_eq!(code, 422, "{provider}: {v}");
        assert_eq!(v["code"], "merchant_not_allowed", "{provider}");
    }

    // Naming a configured merchant works without a provider default.
    let (code, v) = app
        .ipn_result(
            "nomerchant",
            &ipn("u_3", "named_3", "succeeded", json!({"merchant": "shop-2"})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let (code, p) = app.get_auth("/v1/payments/named_3", OTHER_KEY).await;
    assert_eq!(code, 200);
    assert_eq!(p["merchant_id"], "shop-2");

    // A registered payment resolves on a provider without merchant_id too.
    register(&app, SHOP_KEY, &json!({"payment_id": "reg_nm"})).await;
    let (code, v) = app
        .ipn_result("nomerchant", &generic("u_4", "reg_nm", "succeeded"))
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["events"][0]["outcome"], "applied");
}
