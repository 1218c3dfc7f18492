//! Merchant isolation of the relay (SPEC §5, §6): a merchant's endpoints
//! receive only its own payments' changes; another merchant's endpoint or
//! delivery is a 404 for every verb (never a 403 that leaks existence) and
//! never shows in its lists; an admin token sees every merchant's deliveries.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::relay_helpers::*;
use crate::sink::Sink;

struct Two {
    sink: Sink,
    app: TestApp,
    /// shop-1's API endpoint (its config one is `ep_one`).
    api_ep: String,
    api_secret: String,
    /// A delivery of shop-1's.
    dlv: String,
}

/// shop-1 has a config endpoint `ep_one` (/one) and an API one (/one-api);
/// shop-2 a config endpoint `ep_two` (/two). Each merchant's payment has
/// been delivered to its own endpoints.
async fn two_merchants() -> Two {
    let sink = Sink::start().await;
    let body = relay_config(
        "",
        &[endpoint_toml("ep_one", &sink.url("/one"), SECRET_1, "")],
        &[endpoint_toml("ep_two", &sink.url("/two"), SECRET_2, "")],
    );
    let app = spawn_with("", &body).await;
    let (api_ep, api_secret) = api_endpoint(&app, SHOP_KEY, &sink.url("/one-api")).await;
    post_status(&app, "t1_1", "pay_shared_id", "Pending").await;
    change(&app, "acme2", "t2_1", "pay_shared_id", "Succeed").await;
    notified(&sink, "/one", 1, SECRET_1).await;
    notified(&sink, "/one-api", 1, &api_secret).await;
    notified(&sink, "/two", 1, SECRET_2).await;
    let d = wait_delivery(&app, SHOP_KEY, "endpoint_id=ep_one", "sent", |d| {
        d["state"] == "succeeded"
    })
    .await;
    wait_delivery(&app, OTHER_KEY, "endpoint_id=ep_two", "sent", |d| {
        d["state"] == "succeeded"
    })
    .await;
    Two {
        sink,
        app,
        api_ep,
        api_secret,
        dlv: s(&d["id"]),
    }
}

#[tokio::test]
async fn a_merchants_endpoints_receive_only_its_own_payments() {
    let t = two_merchants().await;
    for (path, merchant, status) in [
        ("/one", "shop-1", "pending"),
        ("/one-api", "shop-1", "pending"),
        ("/two", "shop-2", "succeeded"),
    ] {
        let got = t.sink.received(path);
        assert_eq!(got.len(), 1, "{path}");
        assert_eq!(got[0].json["data"]["merchant_id"], merchant, "{path}");
        assert_eq!(got[0].json["data"]["status"], status, "{path}");
    }
    // More changes for shop-1 only: shop-2's endpoint stays quiet.
    post_status(&t.app, "t1_2", "pay_shared_id", "Succeed").await;
    post_status(&t.app, "t1_3", "pay_other", "Pending").await;
    notified(&t.sink, "/one", 3, SECRET_1).await;
    assert_quiet(&t.sink, "/two", 1).await;
}

#[tokio::test]
async fn another_merchants_endpoints_and_deliveries_are_404_for_every_verb() {
    let t = two_merchants().await;
    let since = json!({"since": "2000-01-01T00:00:00Z"});
    for ep in ["ep_one", t.api_ep.as_str()] {
        for (method, path, body) in [
            ("GET", format!("/v1/endpoints/{ep}"), None),
            (
                "PATCH",
                format!("/v1/endpoints/{ep}"),
                Some(json!({"description": "mine now"})),
            ),
            (
                "PATCH",
                format!("/v1/endpoints/{ep}"),
                Some(json!({"disabled": true})),
            ),
            ("POST", format!("/v1/endpoints/{ep}/rotate-secret"), None),
            (
                "POST",
                format!("/v1/endpoints/{ep}/replay"),
                Some(since.clone()),
            ),
            ("DELETE", format!("/v1/endpoints/{ep}"), None),
        ] {
            let (code, v) = call(&t.app, method, &path, OTHER_KEY, body).await;
            assert_eq!(code, 404, "{method} {path} as shop-2: {v}");
            assert_eq!(error_code(&v), "not_found", "{v}");
        }
    }
    for (method, path) in [
        ("GET", format!("/v1/deliveries/{}", t.dlv)),
        ("POST", format!("/v1/deliveries/{}/retry", t.dlv)),
    ] {
        let (code, v) = call(&t.app, method, &path, OTHER_KEY, None).await;
        assert_eq!(code, 404, "{method} {path} as shop-2: {v}");
        assert_eq!(error_code(&v), "not_found", "{v}");
    }
    // Nothing changed for shop-1: both endpoints still there, still enabled,
    // nothing re-sent.
    for ep in ["ep_one", t.api_ep.as_str()] {
        let v = get_endpoint(&t.app, SHOP_KEY, ep).await;
        assert_eq!(v["disabled"], false, "{v}");
        assert_ne!(v["description"], "mine now", "{v}");
    }
    assert_quiet(&t.sink, "/one", 1).await;
    post_status(&t.app, "t1_4", "pay_after", "Pending").await;
    notified(&t.sink, "/one-api", 2, &t.api_secret).await;
}

/// Lists are the caller's own; an admin (no merchant_id) sees all.
#[tokio::test]
async fn lists_show_only_the_callers_own_and_an_admin_sees_all() {
    let t = two_merchants().await;
    let (code, v) = t.app.get_auth("/v1/endpoints", OTHER_KEY).await;
    assert_eq!(code, 200, "{v}");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["ep_two"], "{v}");

    let mine = deliveries(&t.app, OTHER_KEY, "").await;
    assert!(!mine.is_empty());
    assert!(
        mine.iter()
            .all(|d| d["merchant_id"] == "shop-2" && d["endpoint_id"] == "ep_two"),
        "{mine:#?}"
    );
    let by_payment = deliveries(&t.app, OTHER_KEY, "payment_id=pay_shared_id").await;
    assert!(
        by_payment.iter().all(|d| d["merchant_id"] == "shop-2"),
        "{by_payment:#?}"
    );
    let (code, v) = t
        .app
        .get_auth("/v1/deliveries?endpoint_id=ep_one", OTHER_KEY)
        .await;
    assert!(
        code == 404 || (code == 200 && v["data"] == json!([])),
        "shop-1's endpoint filter shows shop-2 nothing: {code} {v}"
    );

    let all = deliveries(&t.app, ADMIN, "").await;
    let merchants = |l: &[Value], m: &str| l.iter().filter(|d| d["merchant_id"] == m).count();
    assert!(merchants(&all, "shop-1") >= 2, "{all:#?}");
    assert!(merchants(&all, "shop-2") >= 1, "{all:#?}");
    let (code, d) = t
        .app
        .get_auth(&format!("/v1/deliveries/{}", t.dlv), ADMIN)
        .await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(d["merchant_id"], "shop-1");
}
