//! Provider presets end to end for Adyen (signed notification batches) and
//! PaymentsOS (signed event type and body fields): realistic payloads
//! modelled on each provider's documentation, signed as the provider signs
//! them, posted over HTTP; the outcome checked through the merchant API and
//! the task result. The config and helpers are in `presets.rs`.

use base64::Engine as _;
use hmac::Mac;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::presets::{app, assert_applied, one_event, payment, post_and_wait, ADYEN_HMAC_KEY};

// ------------------------------------------------------------------- Adyen

pub(crate) fn adyen_item(
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
pub(crate) fn adyen_sign(items: Vec<Value>) -> Vec<u8> {
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

pub(crate) async fn post_adyen(app: &TestApp, body: Vec<u8>) -> (u16, String, String) {
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

/// Adyen signs eight fields of an item, not `additionalData`: a captured
/// CANCEL_OR_REFUND whose `modification.action` is edited from `cancel` to
/// `refund`, re-batched (so the batch's dedupe key is new), must not turn a
/// canceled payment into a refunded one. A replayed item is skipped; a new
/// item of the same batch still applies.
#[tokio::test]
async fn adyen_item_replayed_in_a_new_batch_with_unsigned_fields_edited_changes_nothing() {
    let app = app().await;
    let (reference, auth) = ("order-replayed", "8535296650154444");
    let date = "2024-06-28T18:03:50+01:00";
    let body = adyen_sign(vec![adyen_item(
        "AUTHORISATION",
        auth,
        None,
        reference,
        date,
    )]);
    let (code, id, _) = post_adyen(&app, body).await;
    assert_eq!(code, 200);
    app.wait_done(&id).await;
    let mut cancel = adyen_item(
        "CANCEL_OR_REFUND",
        "8835296650154445",
        Some(auth),
        reference,
        date,
    );
    cancel["additionalData"]["modification.action"] = json!("cancel");
    let (code, id, _) = post_adyen(&app, adyen_sign(vec![cancel.clone()])).await;
    assert_eq!(code, 200);
    app.wait_done(&id).await;
    let before = payment(&app, reference).await;
    assert_eq!(before["status"], "canceled", "{before}");

    // The captured item, its unsigned action edited (its signature still
    // verifies), next to a genuine new item of another payment.
    let mut edited = adyen_sign(vec![cancel.clone()]);
    let mut v: Value = serde_json::from_slice(&edited).unwrap();
    v["notificationItems"][0]["NotificationRequestItem"]["additionalData"]["modification.action"] =
        json!("refund");
    let fresh = adyen_sign(vec![adyen_item(
        "AUTHORISATION",
        "8535296650155555",
        None,
        "order-fresh",
        date,
    )]);
    let fresh: Value = serde_json::from_slice(&fresh).unwrap();
    v["notificationItems"]
        .as_array_mut()
        .unwrap()
        .push(fresh["notificationItems"][0].clone());
    edited = serde_json::to_vec(&v).unwrap();
    let (code, id2, _) = post_adyen(&app, edited).await;
    assert_eq!(code, 200);
    assert_ne!(id2, id, "a new batch, not a duplicate of the cancel");
    assert_eq!(app.wait_done(&id2).await["status"], "completed");
    let (_, res) = app.get_json(&format!("/v1/async/result/{id2}")).await;
    assert_applied(one_event(&res), "order-fresh", "authorized", 1);

    let after = payment(&app, reference).await;
    assert_eq!(after["status"], "canceled", "{after}");
    assert_eq!(after["sequence"], before["sequence"], "{after}");
    assert_eq!(after["history"], before["history"], "{after}");
    assert_eq!(payment(&app, "order-fresh").await["status"], "authorized");
}

/// Each item of a batch is deduped on its own key: an item that came in a
/// batch, posted again alone, is a duplicate naming the batch's request.
#[tokio::test]
async fn adyen_item_of_an_earlier_batch_posted_alone_is_a_duplicate() {
    let app = app().await;
    let date = "2024-06-28T18:03:50+01:00";
    let a = adyen_item("AUTHORISATION", "8535296650156661", None, "order-b1", date);
    let b = adyen_item("AUTHORISATION", "8535296650156662", None, "order-b2", date);
    let (code, batch_id, _) = post_adyen(&app, adyen_sign(vec![a, b.clone()])).await;
    assert_eq!(code, 200);
    app.wait_done(&batch_id).await;
    let (code, id, text) = post_adyen(&app, adyen_sign(vec![b])).await;
    assert_eq!((code, text.as_str()), (200, "[accepted]"));
    assert_eq!(id, batch_id, "the item's own request is the batch");
    let p = payment(&app, "order-b2").await;
    assert_eq!(p["history"].as_array().unwrap().len(), 1, "{p}");
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
