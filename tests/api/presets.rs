//! Provider presets end to end: realistic payloads modelled on each
//! provider's documentation, signed as the provider signs them, posted over
//! HTTP; the outcome checked through the merchant API and the task result.

use base64::Engine as _;
use hmac::Mac;
use serde_json::{json, Value};

use crate::helpers::*;

/// Adyen's HMAC key is shown as hex in its Customer Area.
const ADYEN_HMAC_KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";

fn config() -> String {
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

async fn app() -> TestApp {
    spawn_with("", &config()).await
}

/// POST a signed body with extra headers, expect a fresh ack, wait, return the result.
async fn post_and_wait(
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

async fn payment(app: &TestApp, id: &str) -> Value {
    let (code, v) = app.get_auth(&format!("/v1/payments/{id}"), SHOP_KEY).await;
    assert_eq!(code, 200, "GET payment {id}: {v}");
    v
}

fn one_event(res: &Value) -> &Value {
    let evs = res["events"].as_array().expect("events array");
    assert_eq!(evs.len(), 1, "{res}");
    &evs[0]
}

fn assert_applied(ev: &Value, payment_id: &str, status: &str, sequence: u64) {
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

// ------------------------------------------------------------------- Adyen

fn adyen_item(
    event_code: &str,
    psp: &str,
    original: Option<&str>,
    reference: &str,
    date: &str,
) -> Value {
    let mut item = json!({
        "additionalData": {
            "authCode": "58747",
            "cardSummary": "1111",
            "expiryDate": "03/2030",
            "paymentMethodVariant": "visa"
        },
        "amount": {"currency": "EUR", "value": 1130},
        "eventCode": event_code,
        "eventDate": date,
        "merchantAccountCode": "ShopOneECOM",
        "merchantReference": reference,
        "operations": ["CANCEL", "CAPTURE", "REFUND"],
        "paymentMethod": "visa",
        "pspReference": psp,
        "reason": "58747:1111:03/2030",
        "success": "true"
    });
    if let Some(o) = original {
        item["originalReference"] = json!(o);
    }
    item
}

/// Sign each item as Adyen does: base64 HMAC-SHA256 (hex-decoded key) over
/// `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`.
fn adyen_sign(items: Vec<Value>) -> Vec<u8> {
    let key = hex::decode(ADYEN_HMAC_KEY).unwrap();
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut i| {
            let s = |p: &str| {
                i.pointer(p).map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            };
            let payload = [
                s("/pspReference"),
                s("/originalReference"),
                s("/merchantAccountCode"),
                s("/merchantReference"),
                s("/amount/value"),
                s("/amount/currency"),
                s("/eventCode"),
                s("/success"),
            ]
            .map(Option::unwrap_or_default)
            .join(":");
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
            mac.update(payload.as_bytes());
            let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            i["additionalData"]["hmacSignature"] = json!(sig);
            json!({"NotificationRequestItem": i})
        })
        .collect();
    serde_json::to_vec(&json!({"live": "false", "notificationItems": items})).unwrap()
}

async fn post_adyen(app: &TestApp, body: Vec<u8>) -> (u16, String, String) {
    let r = app.post_raw("adyen", body, &[]).await;
    let code = r.status().as_u16();
    let id = r
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (code, id, r.text().await.unwrap())
}

#[tokio::test]
async fn adyen_batch_authorisation_and_capture_is_one_task_with_two_events() {
    let app = app().await;
    let reference = "order-2024-0001";
    let body = adyen_sign(vec![
        adyen_item(
            "AUTHORISATION",
            "8535296650153317",
            None,
            reference,
            "2024-06-28T18:03:50+01:00",
        ),
        adyen_item(
            "CAPTURE",
            "8835296650159999",
            Some("8535296650153317"),
            reference,
            "2024-06-28T18:05:10+01:00",
        ),
    ]);

    let (code, id, text) = post_adyen(&app, body.clone()).await;
    assert_eq!(code, 200);
    assert_eq!(text, "[accepted]");
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "x-request-id {id:?}");

    let st = app.wait_done(&id).await;
    assert_eq!(st["status"], "completed");
    let (code, res) = app.get_json(&format!("/v1/async/result/{id}")).await;
    assert_eq!(code, 200, "{res}");
    let evs = res["events"].as_array().unwrap();
    assert_eq!(evs.len(), 2, "{res}");
    assert_applied(&evs[0], reference, "authorized", 1);
    assert_applied(&evs[1], reference, "succeeded", 2);

    let p = payment(&app, reference).await;
    assert_eq!(p["status"], "succeeded");
    assert_eq!(p["sequence"], 2);
    assert_eq!(p["authorization_id"], "8535296650153317");
    assert_eq!(p["amount"], 1130);
    assert_eq!(p["currency"], "EUR");
    let h = p["history"].as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert!(h.iter().all(|e| e["request_id"] == id.as_str()));
    assert_eq!(
        h[0]["provider_event_id"],
        "8535296650153317:AUTHORISATION:true"
    );

    // Adyen redelivers until it sees [accepted]: the same notification again
    // is a duplicate with the original request id, and changes nothing.
    let (code2, id2, text2) = post_adyen(&app, body).await;
    assert_eq!(code2, 200);
    assert_eq!(text2, "[accepted]");
    assert_eq!(id2, id, "a redelivery must name the original request");
    let p2 = payment(&app, reference).await;
    assert_eq!(p2["sequence"], 2);
    assert_eq!(p2["history"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn adyen_batch_with_one_forged_item_is_rejected_whole() {
    let app = app().await;
    let good = adyen_sign(vec![adyen_item(
        "AUTHORISATION",
        "8535296650150001",
        None,
        "order-forged",
        "2024-06-28T18:03:50+01:00",
    )]);
    let mut v: Value = serde_json::from_slice(&good).unwrap();
    // Append an item whose signature was made for another amount.
    let mut forged = v["notificationItems"][0].clone();
    forged["NotificationRequestItem"]["eventCode"] = json!("CAPTURE");
    forged["NotificationRequestItem"]["pspReference"] = json!("8835296650150002");
    v["notificationItems"].as_array_mut().unwrap().push(forged);
    let (code, _, _) = post_adyen(&app, serde_json::to_vec(&v).unwrap()).await;
    assert_eq!(code, 401);
    let (code, _) = app.get_auth("/v1/payments/order-forged", SHOP_KEY).await;
    assert_eq!(code, 404);
}

// -------------------------------------------------------------- PaymentsOS

fn paymentsos_body(
    id: &str,
    payment_id: &str,
    created: &str,
    resource_id: &str,
    result_status: &str,
) -> Value {
    json!({
        "id": id,
        "created": created,
        "account_id": "9d1e7a84-2b71-4a6d-8d5d-0c5b1b3f2a91",
        "app_id": "com.shop1.checkout",
        "payment_id": payment_id,
        "data": {
            "id": resource_id,
            "amount": 1500,
            "currency": "EUR",
            "created": created,
            "reconciliation_id": "23683456",
            "result": {"status": result_status},
            "provider_data": {
                "provider_name": "AdyenCSE",
                "response_code": "0",
                "description": "Authorised",
                "transaction_id": "8535296650153317"
            },
            "provider_specific_data": {},
            "additional_details": {"order": "7"}
        }
    })
}

#[tokio::test]
async fn paymentsos_authorization_then_capture() {
    let app = app().await;
    let pay = "2b6c9d3f-5e9a-4b47-9f21-0e8f43b8a111";
    let auth_id = "a1f9b0c2-3d4e-4f56-8a7b-9c0d1e2f3a4b";
    let capture_id = "c7e8d9f0-1a2b-4c3d-8e4f-5a6b7c8d9e0f";

    let auth = paymentsos_body(
        "cf5bc3f7-0001-payment.authorization.create",
        pay,
        "2024-06-28T17:03:50.123Z",
        auth_id,
        "Succeed",
    );
    let res = post_and_wait(
        &app,
        "paymentsos",
        &auth,
        &[
            ("event-type", "payment.authorization.create"),
            ("x-payments-os-env", "test"),
            ("api-version", "1.3.0"),
        ],
    )
    .await;
    assert_applied(one_event(&res), pay, "authorized", 1);
    let p = payment(&app, pay).await;
    assert_eq!(p["status"], "authorized");
    assert_eq!(p["authorization_id"], auth_id);
    assert_eq!(p["amount"], 1500);

    let capture = paymentsos_body(
        "cf5bc3f7-0002-payment.capture.create",
        pay,
        "2024-06-28T17:10:00.000Z",
        capture_id,
        "Succeed",
    );
    let res = post_and_wait(
        &app,
        "paymentsos",
        &capture,
        &[
            ("event-type", "payment.capture.create"),
            ("x-payments-os-env", "test"),
            ("api-version", "1.3.0"),
        ],
    )
    .await;
    assert_applied(one_event(&res), pay, "succeeded", 2);
    let p = payment(&app, pay).await;
    assert_eq!(p["status"], "succeeded");
    assert_eq!(p["sequence"], 2);
    assert_eq!(p["authorization_id"], auth_id);
    assert_eq!(p["charge_id"], capture_id);
}

#[tokio::test]
async fn paymentsos_event_type_is_bound_by_the_signature() {
    let app = app().await;
    let body = paymentsos_body(
        "cf5bc3f7-0003",
        "pos-swap",
        "2024-06-28T17:03:50.123Z",
        "auth-x",
        "Succeed",
    );
    let bytes = serde_json::to_vec(&body).unwrap();
    // Signed as an authorization, sent claiming to be a capture.
    let mut h = app.sign(
        "paymentsos",
        &bytes,
        &[("event-type", "payment.authorization.create")],
    );
    for (k, v) in &mut h {
        if k.eq_ignore_ascii_case("event-type") {
            *v = "payment.capture.create".into();
        }
    }
    let r = app.post_raw("paymentsos", bytes, &h).await;
    assert_eq!(r.status().as_u16(), 401);
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
