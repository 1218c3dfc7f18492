//! Provider presets end to end: realistic payloads modelled on each
//! provider's documentation, signed as the provider signs them, posted over
//! HTTP; the outcome checked through the merchant API and the task result.
//! Here Stripe and beGateway, and the config and helpers that
//! `presets_adyen_paymentsos.rs` shares.

use base64::Engine as _;
use hmac::Mac;
use serde_json::{json, Value};

use crate::helpers::*;

/// Adyen's HMAC key is shown as hex in its Customer Area.
pub(crate) const ADYEN_HMAC_KEY: &str =
    "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";

pub(crate) fn config() -> String {
    r#"
[admin]
tokens = ["test-admin-token"]

[[providers]]
id = "stripe"
preset = "stripe"
merchant_id = "shop-1"
[providers.auth]
secrets = ["whsec_test_stripe_endpoint_secret"]

[[providers]]
id = "adyen"
preset = "adyen"
merchant_id = "shop-1"
[providers.auth]
secrets = ["ADYEN_KEY"]

[[providers]]
id = "paymentsos"
preset = "paymentsos"
merchant_id = "shop-1"
[providers.auth]
secrets = ["pos-private-key-7d1f"]

[[providers]]
id = "begateway"
preset = "begateway"
merchant_id = "shop-1"
[providers.auth]
username = "361"
password = "b8647b68898b084b836474ed8d61ffe117c9a01168d867f24953b776ddcb134d"

[[merchants]]
id = "shop-1"
api_keys = ["shop-1-key"]
allowed_return_origins = ["https://shop.example.com"]
default_site_url = "https://shop.example.com/checkout/return"
"#
    .replace("ADYEN_KEY", ADYEN_HMAC_KEY)
}

pub(crate) async fn app() -> TestApp {
    spawn_with("", &config()).await
}

/// POST a signed body with extra headers, expect a fresh ack, wait, return the result.
pub(crate) async fn post_and_wait(
    app: &TestApp,
    provider: &str,
    body: &Value,
    extra: &[(&str, &str)],
) -> Value {
    let bytes = serde_json::to_vec(body).unwrap();
    let h = app.sign(provider, &bytes, extra);
    let r = app.post_raw(provider, bytes, &h).await;
    assert_eq!(r.status().as_u16(), 202, "{provider} IPN not accepted");
    let ack: Value = r.json().await.unwrap();
    let id = ack["request_id"].as_str().unwrap().to_string();
    let st = app.wait_done(&id).await;
    assert_eq!(st["status"], "completed", "{st}");
    let (code, res) = app.get_json(&format!("/v1/async/result/{id}")).await;
    assert_eq!(code, 200, "task {id} ended in error: {res}");
    res
}

pub(crate) async fn payment(app: &TestApp, id: &str) -> Value {
    let (code, v) = app.get_auth(&format!("/v1/payments/{id}"), SHOP_KEY).await;
    assert_eq!(code, 200, "GET payment {id}: {v}");
    v
}

pub(crate) fn one_event(res: &Value) -> &Value {
    let evs = res["events"].as_array().expect("events array");
    assert_eq!(evs.len(), 1, "{res}");
    &evs[0]
}

pub(crate) fn assert_applied(ev: &Value, payment_id: &str, status: &str, sequence: u64) {
    assert_eq!(ev["payment_id"], payment_id, "{ev}");
    assert_eq!(ev["status"], status, "{ev}");
    assert_eq!(ev["outcome"], "applied", "{ev}");
    assert_eq!(ev["sequence"], sequence, "{ev}");
    assert!(
        ev["event_id"]
            .as_str()
            .is_some_and(|e| e.starts_with("evt_")),
        "applied event without an evt_ id: {ev}"
    );
}

// ------------------------------------------------------------------ Stripe

fn stripe_event(id: &str, kind: &str, created: i64, pi: Value) -> Value {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "data": {"object": pi},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": "req_8QyU3oE0ZF2Eqh", "idempotency_key": "0d9a0bd1-0a3b-4b69-9a6c-1e1d6a1f6a3e"},
        "type": kind
    })
}

fn payment_intent(id: &str, status: &str, latest_charge: &str) -> Value {
    json!({
        "id": id,
        "object": "payment_intent",
        "amount": 2000,
        "amount_capturable": if status == "requires_capture" { 2000 } else { 0 },
        "amount_received": if status == "succeeded" { 2000 } else { 0 },
        "capture_method": "manual",
        "client_secret": format!("{id}_secret_Xk2"),
        "confirmation_method": "automatic",
        "created": 1_719_000_000,
        "currency": "eur",
        "customer": null,
        "description": "Order 7",
        "last_payment_error": null,
        "latest_charge": latest_charge,
        "livemode": false,
        "metadata": {"order_id": "7"},
        "payment_method": "pm_1PXo3Q2eZvKYlo2C",
        "payment_method_types": ["card"],
        "status": status
    })
}

#[tokio::test]
async fn stripe_manual_capture_goes_authorized_then_succeeded() {
    let app = app().await;
    let pi = "pi_3PXo3Q2eZvKYlo2C1aB2cD3e";
    let charge = "ch_3PXo3Q2eZvKYlo2C1Xy9";

    let auth = stripe_event(
        "evt_3PXo3Q2eZvKYlo2C0001",
        "payment_intent.amount_capturable_updated",
        1_719_000_010,
        payment_intent(pi, "requires_capture", charge),
    );
    let res = post_and_wait(&app, "stripe", &auth, &[]).await;
    let ev = one_event(&res);
    assert_applied(ev, pi, "authorized", 1);
    let p = payment(&app, pi).await;
    assert_eq!(p["status"], "authorized");
    assert_eq!(p["sequence"], 1);
    assert_eq!(p["provider"], "stripe");
    assert_eq!(p["merchant_id"], "shop-1");
    assert_eq!(p["amount"], 2000);
    assert_eq!(p["currency"], "EUR");
    assert_eq!(p["charge_id"], charge);

    let captured = stripe_event(
        "evt_3PXo3Q2eZvKYlo2C0002",
        "payment_intent.succeeded",
        1_719_000_100,
        payment_intent(pi, "succeeded", charge),
    );
    let res2 = post_and_wait(&app, "stripe", &captured, &[]).await;
    let ev2 = one_event(&res2);
    assert_applied(ev2, pi, "succeeded", 2);
    assert_ne!(ev2["event_id"], ev["event_id"]);

    let p = payment(&app, pi).await;
    assert_eq!(p["status"], "succeeded");
    assert_eq!(p["sequence"], 2);
    let h = p["history"].as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["status"], "authorized");
    assert_eq!(h[1]["status"], "succeeded");
    assert_eq!(h[1]["event_id"], ev2["event_id"]);
    assert_eq!(h[1]["provider_event_id"], "evt_3PXo3Q2eZvKYlo2C0002");
}

#[tokio::test]
async fn stripe_payment_failed_is_failed() {
    let app = app().await;
    let pi = "pi_3PXfail2eZvKYlo2C0f";
    let mut obj = payment_intent(pi, "requires_payment_method", "ch_3PXfail2eZvKYlo2C");
    obj["last_payment_error"] = json!({
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
        "type": "card_error"
    });
    let ev = stripe_event(
        "evt_3PXfail2eZvKYlo2C0001",
        "payment_intent.payment_failed",
        1_719_000_050,
        obj,
    );
    let res = post_and_wait(&app, "stripe", &ev, &[]).await;
    assert_applied(one_event(&res), pi, "failed", 1);
    let p = payment(&app, pi).await;
    assert_eq!(p["status"], "failed");
    assert_eq!(p["sequence"], 1);
}

#[tokio::test]
async fn stripe_with_a_wrong_signature_is_refused() {
    let app = app().await;
    let ev = stripe_event(
        "evt_forged",
        "payment_intent.succeeded",
        1_719_000_100,
        payment_intent("pi_forged", "succeeded", "ch_forged"),
    );
    let bytes = serde_json::to_vec(&ev).unwrap();
    let now = chrono::Utc::now().timestamp();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"whsec_not_the_secret").unwrap();
    mac.update(format!("{now}.").as_bytes());
    mac.update(&bytes);
    let sig = hex::encode(mac.finalize().into_bytes());
    let r = app
        .post_raw(
            "stripe",
            bytes,
            &[("Stripe-Signature".into(), format!("t={now},v1={sig}"))],
        )
        .await;
    assert_eq!(r.status().as_u16(), 401);
    let (code, _) = app.get_auth("/v1/payments/pi_forged", SHOP_KEY).await;
    assert_eq!(code, 404);
}

// ---------------------------------------------------------------- beGateway

fn begateway_body(uid: &str, tracking: &str, kind: &str, status: &str, message: &str) -> Value {
    json!({
        "transaction": {
            "uid": uid,
            "status": status,
            "message": message,
            "type": kind,
            "amount": 100,
            "currency": "USD",
            "description": "Order 7",
            "tracking_id": tracking,
            "created_at": "2024-06-11T12:42:19Z",
            "updated_at": "2024-06-11T12:42:21Z",
            "language": "en",
            "test": true,
            "payment_method_type": "credit_card",
            "payment": {
                "auth_code": "654321",
                "bank_code": "05",
                "rrn": "999",
                "ref_id": "777888",
                "message": message,
                "gateway_id": 317,
                "billing_descriptor": "TEST GATEWAY BILLING DESCRIPTOR",
                "status": status
            },
            "credit_card": {
                "holder": "John Doe",
                "stamp": "b3e0a1e6b5c5d8b1",
                "brand": "visa",
                "last_4": "0000",
                "first_1": "4",
                "exp_month": 5,
                "exp_year": 2030
            },
            "customer": {"ip": "127.0.0.1", "email": "john@example.com"},
            "billing_address": {"first_name": "John", "last_name": "Doe", "country": "US", "city": "Denver", "zip": "96002", "address": "1st Street"}
        }
    })
}

#[tokio::test]
async fn begateway_successful_and_failed_payments() {
    let app = app().await;
    let ok = begateway_body(
        "4107-310b0da80b",
        "order-bg-1",
        "payment",
        "successful",
        "Successfully processed",
    );
    let res = post_and_wait(&app, "begateway", &ok, &[]).await;
    assert_applied(one_event(&res), "order-bg-1", "succeeded", 1);
    let p = payment(&app, "order-bg-1").await;
    assert_eq!(p["status"], "succeeded");
    assert_eq!(p["charge_id"], "4107-310b0da80b");
    assert_eq!(p["amount"], 100);
    assert_eq!(p["currency"], "USD");

    let failed = begateway_body(
        "4108-bb11dd22ee",
        "order-bg-2",
        "payment",
        "failed",
        "Payment was declined",
    );
    let res = post_and_wait(&app, "begateway", &failed, &[]).await;
    assert_applied(one_event(&res), "order-bg-2", "failed", 1);
    let p = payment(&app, "order-bg-2").await;
    assert_eq!(p["status"], "failed");
}

#[tokio::test]
async fn begateway_with_wrong_basic_credentials_is_refused() {
    let app = app().await;
    let body = serde_json::to_vec(&begateway_body(
        "4109-aa",
        "order-bg-3",
        "payment",
        "successful",
        "ok",
    ))
    .unwrap();
    let creds = base64::engine::general_purpose::STANDARD.encode("361:wrong-secret");
    let r = app
        .post_raw(
            "begateway",
            body,
            &[("Authorization".into(), format!("Basic {creds}"))],
        )
        .await;
    assert_eq!(r.status().as_u16(), 401);
}
