//! Cross-merchant leaks and interference that a hostile
//! merchant (or a batch IPN) can reach.

use serde_json::{json, Value};

use crate::helpers::*;

const PROVIDERS: &str = r#"
[admin]
tokens = ["test-admin-token"]

# One provider that reports for two merchants, batching items (like Adyen).
[[providers]]
id = "batch"
merchants = ["shop-a", "shop-b"]
[providers.auth]
secrets = ["batch-secret"]
[providers.mapping]
items = "/items/*"
event_id = "/id"
payment_id = "/payment_id"
status = "/status"
merchant_id = "/merchant"

# A provider that reports for two merchants and names none in its bodies.
[[providers]]
id = "shared"
merchant_id = "shop-a"
merchants = ["shop-a", "shop-b"]
[providers.auth]
secrets = ["shared-secret"]
"#;

/// shop-a and shop-b, for both configs here.
const MERCHANTS: &str = r#"
[[merchants]]
id = "shop-a"
api_keys = ["key-a"]
allowed_return_origins = ["https://a.example.com"]
default_site_url = "https://a.example.com/return"

[[merchants]]
id = "shop-b"
api_keys = ["key-b"]
allowed_return_origins = ["https://b.example.com"]
default_site_url = "https://b.example.com/return"
"#;

fn config() -> String {
    format!("{PROVIDERS}{MERCHANTS}")
}

/// Merchant A reads the `request_id` from its own payment's history and
/// uses it on the (unauthenticated) task API: the result lists merchant
/// B's payment of the same batch.
#[tokio::test]
async fn history_request_id_does_not_reveal_another_merchants_payments() {
    let app = spawn_with("", &config()).await;
    let body = json!({"items": [
        {"id": "i1", "payment_id": "a-order-1", "status": "authorized", "merchant": "shop-a"},
        {"id": "i2", "payment_id": "b-secret-order", "status": "succeeded", "merchant": "shop-b"},
    ]});
    let (code, r) = app.ipn_result("batch", &body).await;
    assert_eq!(code, 200, "{r}");

    // A request about this payment alone keeps its id in the history.
    let own = json!({"items": [
        {"id": "i3", "payment_id": "a-order-2", "status": "authorized", "merchant": "shop-a"},
    ]});
    let (code, r) = app.ipn_result("batch", &own).await;
    assert_eq!(code, 200, "{r}");
    let (code, p) = app.get_auth("/v1/payments/a-order-2", "key-a").await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["history"][0]["request_id"], r["request_id"], "{p}");

    let (code, p) = app.get_auth("/v1/payments/a-order-1", "key-a").await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["history"][0]["status"], "authorized", "{p}");
    let Some(rid) = p["history"][0]["request_id"].as_str() else {
        // Hidden from the merchant; an admin still sees it.
        let (_, p) = app
            .get_auth(
                "/v1/payments/a-order-1?merchant_id=shop-a",
                "test-admin-token",
            )
            .await;
        assert!(p["history"][0]["request_id"].is_string(), "{p}");
        return;
    };
    let (_, task) = app.get_json(&format!("/v1/async/result/{rid}")).await;
    let leaked: Vec<&Value> = task["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["payment_id"] == "b-secret-order")
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leaked.is_empty(),
        "shop-a's key led to shop-b's payment: {task}"
    );
}

/// Merchant B registering an id that merchant A's payment already has (from
/// IPNs of a provider serving both) must not stop A's next IPNs.
#[tokio::test]
async fn another_merchants_registration_does_not_block_an_existing_payment() {
    let app = spawn_with("", &config()).await;
    let (code, r) = app
        .ipn_result("shared", &generic("e1", "pay-1", "pending"))
        .await;
    assert_eq!(code, 200, "{r}");
    let (code, p) = app.get_auth("/v1/payments/pay-1", "key-a").await;
    assert_eq!(code, 200, "{p}");

    // shop-b (hostile or by accident) registers the same id in its namespace.
    let (code, v) = register(&app, "key-b", &json!({"payment_id": "pay-1"})).await;
    assert_eq!(code, 201, "{v}");

    let (code, r) = app
        .ipn_result("shared", &generic("e2", "pay-1", "succeeded"))
        .await;
    assert_eq!(code, 200, "A's follow-up IPN failed: {r}");
    let (_, p) = app.get_auth("/v1/payments/pay-1", "key-a").await;
    assert_eq!(p["status"], "succeeded", "{p}");
}

/// Unix seconds past chrono's range were accepted and then shown (API and
/// webhooks) as the epoch, 1970-01-01.
#[tokio::test]
async fn an_occurred_at_that_cannot_be_shown_is_refused() {
    let app = spawn_with("", &config()).await;
    let mut body = generic("e-far", "pay-far", "pending");
    body["created"] = json!(9_223_372_036_854_775_i64);
    let (code, r) = app.ipn_result("shared", &body).await;
    assert_eq!(code, 422, "{r}");
    assert_eq!(r["code"], "invalid_occurred_at", "{r}");
}

const ADYEN_CONFIG: &str = r#"
[[providers]]
id = "adyen"
preset = "adyen"
merchant_id = "shop-a"
merchants = ["shop-a", "shop-b"]
[providers.auth]
secrets = ["ADYEN_KEY"]
"#;

/// Adyen's HMAC does not cover `additionalData`: a captured item of shop-a,
/// its `metadata.merchant_id` edited to shop-b and re-batched next to the
/// original (so the batch is new), must not land in shop-b's namespace.
#[tokio::test]
async fn a_replayed_adyen_item_cannot_be_moved_to_another_merchant() {
    use crate::presets::ADYEN_HMAC_KEY;
    use crate::presets_adyen_paymentsos::{adyen_item, adyen_sign, post_adyen};
    let app = spawn_with(
        "",
        &format!("{ADYEN_CONFIG}{MERCHANTS}").replace("ADYEN_KEY", ADYEN_HMAC_KEY),
    )
    .await;
    let mut item = adyen_item(
        "AUTHORISATION",
        "8535296650157771",
        None,
        "ad-order-1",
        "2024-06-28T18:03:50+01:00",
    );
    item["additionalData"]["metadata.merchant_id"] = json!("shop-a");
    let genuine = adyen_sign(vec![item]);
    let (code, id, _) = post_adyen(&app, genuine.clone()).await;
    assert_eq!(code, 200);
    app.wait_done(&id).await;
    let (code, p) = app.get_auth("/v1/payments/ad-order-1", "key-a").await;
    assert_eq!((code, &p["status"]), (200, &json!("authorized")), "{p}");

    let mut v: Value = serde_json::from_slice(&genuine).unwrap();
    let original = v["notificationItems"][0].clone();
    v["notificationItems"][0]["NotificationRequestItem"]["additionalData"]
        ["metadata.merchant_id"] = json!("shop-b");
    v["notificationItems"]
        .as_array_mut()
        .unwrap()
        .push(original);
    let (code, id2, _) = post_adyen(&app, serde_json::to_vec(&v).unwrap()).await;
    assert_eq!(code, 200);
    assert_ne!(id2, id);
    assert_eq!(app.wait_done(&id2).await["status"], "completed");

    let (code, b) = app.get_auth("/v1/payments/ad-order-1", "key-b").await;
    assert_eq!(code, 404, "shop-b got shop-a's signed notification: {b}");
    let (_, a) = app.get_auth("/v1/payments/ad-order-1", "key-a").await;
    assert_eq!(a["history"].as_array().map(Vec::len), Some(1), "{a}");
}
