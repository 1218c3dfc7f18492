//! One realistic payload pair per preset, shaped like the providers' docs.

use serde_json::json;

use crate::domain::{Candidate, Status};
use crate::mapping::{parse_body, Mapping, NoHeaders, Preset, RawMapping};

fn mapping(preset: Preset) -> Mapping {
    Mapping::compile(preset, &RawMapping::default()).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn stripe_event(id: &str, kind: &str, object: serde_json::Value) -> String {
    json!({
        "id": id, "object": "event", "api_version": "2024-06-20", "created": 1_700_000_100,
        "livemode": false, "pending_webhooks": 1,
        "request": {"id": "req_8vQ2", "idempotency_key": "5d6e"},
        "type": kind, "data": {"object": object}
    })
    .to_string()
}

#[test]
fn stripe_payment_intent_succeeded_and_payment_failed() {
    let m = mapping(Preset::Stripe);
    let succeeded = stripe_event(
        "evt_3OaSucc",
        "payment_intent.succeeded",
        json!({"id": "pi_3OaX", "object": "payment_intent", "amount": 2000, "amount_received": 2000,
            "currency": "usd", "status": "succeeded", "latest_charge": "ch_3OaY", "capture_method": "automatic",
            "metadata": {"merchant_id": "shop-1", "merchant_site_url": "https://shop.example.com/r"}}),
    );
    let doc = parse_body(
        Some("application/json; charset=utf-8"),
        succeeded.as_bytes(),
    )
    .unwrap();
    let events = m.extract(&NoHeaders, &doc).unwrap();
    assert_eq!(
        events,
        vec![Candidate {
            provider_event_id: Some("evt_3OaSucc".into()),
            payment_id: "pi_3OaX".into(),
            status: Status::Succeeded,
            occurred_at: Some(1_700_000_100_000),
            merchant_id: Some("shop-1".into()),
            authorization_id: None,
            charge_id: Some("ch_3OaY".into()),
            amount: Some(2000),
            currency: Some("USD".into()),
            merchant_site_url: Some("https://shop.example.com/r".into()),
        }]
    );
    assert_eq!(
        m.event_key(&NoHeaders, None, succeeded.as_bytes()),
        "id:evt_3OaSucc"
    );

    let failed = stripe_event(
        "evt_3OaFail",
        "payment_intent.payment_failed",
        json!({"id": "pi_3OaX", "object": "payment_intent", "amount": 2000, "currency": "usd",
            "status": "requires_payment_method", "latest_charge": "ch_3OaZ", "metadata": {},
            "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds"}}),
    );
    let doc = parse_body(None, failed.as_bytes()).unwrap();
    let ev = &m.extract(&NoHeaders, &doc).unwrap()[0];
    assert_eq!(
        (ev.status, ev.charge_id.as_deref()),
        (Status::Failed, Some("ch_3OaZ"))
    );
    assert_eq!(ev.merchant_id, None);
    assert_eq!(
        m.map_request(&NoHeaders, None, failed.as_bytes()).unwrap()[0],
        *ev
    );
}

#[test]
fn stripe_charges_disputes_and_unknown_events() {
    let m = mapping(Preset::Stripe);
    let run = |kind: &str, object: serde_json::Value| {
        let body = stripe_event("evt_1", kind, object);
        m.extract(&NoHeaders, &parse_body(None, body.as_bytes()).unwrap())
    };
    let charge = |refunded: bool| {
        json!({"id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount": 500,
            "amount_refunded": if refunded { 500 } else { 100 }, "refunded": refunded,
            "currency": "eur", "status": "succeeded"})
    };
    let full = &run("charge.refunded", charge(true)).unwrap()[0];
    assert_eq!(
        (full.status, full.payment_id.as_str()),
        (Status::Refunded, "pi_1")
    );
    assert_eq!(
        full.charge_id.as_deref(),
        Some("ch_1"),
        "a charge object's id is the charge id"
    );
    let partial = &run("charge.refunded", charge(false)).unwrap()[0];
    assert_eq!(partial.status, Status::PartiallyRefunded);
    assert!(run("charge.succeeded", charge(false)).unwrap().is_empty());

    let dispute = json!({"id": "dp_1", "object": "dispute", "charge": "ch_1", "payment_intent": "pi_1",
        "amount": 500, "currency": "eur", "status": "needs_response", "reason": "fraudulent"});
    let cb = &run("charge.dispute.created", dispute).unwrap()[0];
    assert_eq!(
        (cb.status, cb.charge_id.as_deref(), cb.payment_id.as_str()),
        (Status::ChargedBack, Some("ch_1"), "pi_1")
    );

    let pi = json!({"id": "pi_2", "object": "payment_intent", "status": "requires_capture"});
    assert_eq!(
        run("payment_intent.some_new_event", pi).unwrap()[0].status,
        Status::Authorized
    );
    let customer = json!({"id": "cus_1", "object": "customer"});
    assert_eq!(
        run("customer.created", customer).unwrap_err(),
        crate::mapping::MapError::UnmappedStatus("customer.created".into())
    );
}

const ADYEN_BATCH: &str = r#"{
  "live": "false",
  "notificationItems": [
    {"NotificationRequestItem": {
      "additionalData": {"authCode": "58747", "cardSummary": "1111", "expiryDate": "8/2018",
        "metadata.merchant_id": "shop-1"},
      "amount": {"currency": "EUR", "value": 1130},
      "eventCode": "AUTHORISATION",
      "eventDate": "2019-06-28T18:03:50+01:00",
      "merchantAccountCode": "YOUR_MERCHANT_ACCOUNT",
      "merchantReference": "order-8313842560770001",
      "operations": ["CANCEL", "CAPTURE", "REFUND"],
      "paymentMethod": "visa",
      "pspReference": "8313842560770001",
      "reason": "58747:1111:12/2012",
      "success": "true"}},
    {"NotificationRequestItem": {
      "amount": {"currency": "EUR", "value": 1130},
      "eventCode": "CAPTURE",
      "eventDate": "2019-06-28T18:05:10+01:00",
      "merchantAccountCode": "YOUR_MERCHANT_ACCOUNT",
      "merchantReference": "order-8313842560770001",
      "originalReference": "8313842560770001",
      "paymentMethod": "visa",
      "pspReference": "8825408195409505",
      "reason": "",
      "success": "true"}}
  ]
}"#;

#[test]
fn adyen_batch_yields_one_event_per_item() {
    let m = mapping(Preset::Adyen);
    let doc = parse_body(Some("application/json"), ADYEN_BATCH.as_bytes()).unwrap();
    let events = m.extract(&NoHeaders, &doc).unwrap();
    assert_eq!(events.len(), 2);
    let (auth, capture) = (&events[0], &events[1]);
    assert_eq!(auth.status, Status::Authorized);
    assert_eq!(auth.payment_id, "order-8313842560770001");
    assert_eq!(
        auth.provider_event_id.as_deref(),
        Some("8313842560770001:AUTHORISATION:true")
    );
    assert_eq!(auth.authorization_id.as_deref(), Some("8313842560770001"));
    assert_eq!(auth.occurred_at, Some(1_561_741_430_000));
    assert_eq!(
        (auth.amount, auth.currency.as_deref()),
        (Some(1130), Some("EUR"))
    );
    assert_eq!(auth.merchant_id.as_deref(), Some("shop-1"));
    assert_eq!(capture.status, Status::Succeeded);
    assert_eq!(
        capture.authorization_id.as_deref(),
        Some("8313842560770001"),
        "originalReference"
    );
    assert_eq!(capture.charge_id, None);
    assert_eq!(
        m.event_key(&NoHeaders, Some("application/json"), ADYEN_BATCH.as_bytes()),
        "id:8313842560770001:AUTHORISATION:true,8825408195409505:CAPTURE:true"
    );
}

#[test]
fn adyen_failed_modifications_and_reports_are_ignored() {
    let m = mapping(Preset::Adyen);
    let item = |code: &str, success: &str, extra: serde_json::Value| {
        let mut it = json!({"eventCode": code, "success": success, "pspReference": "P2",
            "originalReference": "P1", "merchantReference": "order-1"});
        it.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"live": "false", "notificationItems": [{"NotificationRequestItem": it}]})
    };
    for (code, success) in [
        ("REFUND", "false"),
        ("CAPTURE", "false"),
        ("CANCELLATION", "false"),
        ("REPORT_AVAILABLE", "true"),
    ] {
        assert!(
            m.extract(&NoHeaders, &item(code, success, json!({})))
                .unwrap()
                .is_empty(),
            "{code}"
        );
    }
    let declined = &m
        .extract(
            &NoHeaders,
            &item("AUTHORISATION", "false", json!({"originalReference": null})),
        )
        .unwrap()[0];
    assert_eq!(
        (declined.status, declined.authorization_id.as_deref()),
        (Status::Failed, Some("P2"))
    );
    let cor = item(
        "CANCEL_OR_REFUND",
        "true",
        json!({"additionalData": {"modification.action": "refund"}}),
    );
    assert_eq!(
        m.extract(&NoHeaders, &cor).unwrap()[0].status,
        Status::Refunded
    );
    let cb = &m
        .extract(&NoHeaders, &item("CHARGEBACK", "true", json!({})))
        .unwrap()[0];
    assert_eq!(
        (cb.status, cb.authorization_id.as_deref()),
        (Status::ChargedBack, Some("P1"))
    );
}

fn paymentsos_body(kind_id: &str, status: &str) -> String {
    json!({
        "id": format!("{kind_id}-webhook"),
        "created": "2018-10-03T04:58:59.497Z",
        "account_id": "3b1a2f40-0000-4c49-8a23-000000000000",
        "app_id": "com.zooz.docapp",
        "payment_id": "cb1c3c8c-9d76-4d64-bf9b-1b0a7a6d0e6d",
        "data": {
            "id": kind_id,
            "amount": 2000,
            "created": "2018-10-03T04:58:58.000Z",
            "result": {"status": status, "category": if status == "Failed" { "payment_method_declined" } else { "" }},
            "provider_data": {"provider_name": "PayU", "response_code": "00", "description": "Approved"},
            "reconciliation_id": "23434534534"
        }
    })
    .to_string()
}

#[test]
fn paymentsos_authorization_then_capture() {
    let m = mapping(Preset::Paymentsos);
    let auth_headers = headers(&[
        ("event-type", "payment.authorization.create"),
        ("x-payments-os-env", "test"),
        ("signature", "sig1=4ec8b0e34e"),
    ]);
    let body = paymentsos_body("e5ba3fe4-auth", "Succeed");
    let doc = parse_body(Some("application/json"), body.as_bytes()).unwrap();
    let auth = &m.extract(&auth_headers, &doc).unwrap()[0];
    assert_eq!(auth.status, Status::Authorized);
    assert_eq!(auth.payment_id, "cb1c3c8c-9d76-4d64-bf9b-1b0a7a6d0e6d");
    assert_eq!(auth.authorization_id.as_deref(), Some("e5ba3fe4-auth"));
    assert_eq!(auth.charge_id, None);
    assert_eq!(auth.occurred_at, Some(1_538_542_739_497));
    assert_eq!(auth.amount, Some(2000));
    assert_eq!(
        m.event_key(&auth_headers, None, body.as_bytes()),
        "id:e5ba3fe4-auth-webhook"
    );

    let capture_headers = headers(&[("event-type", "payment.capture.create")]);
    let doc = parse_body(None, paymentsos_body("77a1-capture", "Succeed").as_bytes()).unwrap();
    let capture = &m.extract(&capture_headers, &doc).unwrap()[0];
    assert_eq!(
        (capture.status, capture.charge_id.as_deref()),
        (Status::Succeeded, Some("77a1-capture"))
    );
    assert_eq!(capture.authorization_id, None);

    let failed_capture =
        parse_body(None, paymentsos_body("77a2-capture", "Failed").as_bytes()).unwrap();
    assert!(m
        .extract(&capture_headers, &failed_capture)
        .unwrap()
        .is_empty());
    // Without the header the status cannot be mapped.
    assert_eq!(
        m.extract(&NoHeaders, &doc).unwrap_err(),
        crate::mapping::MapError::UnmappedStatus(":Succeed".into())
    );
}

fn begateway_body(uid: &str, kind: &str, status: &str, parent: Option<&str>) -> String {
    let mut tx = json!({
        "uid": uid, "status": status, "type": kind, "amount": 1490, "currency": "BYN",
        "description": "Order #1234", "tracking_id": "order-1234", "test": true,
        "created_at": "2024-03-01T10:15:30Z", "updated_at": "2024-03-01T10:15:33Z",
        "message": if status == "successful" { "Successfully processed" } else { "Insufficient funds" },
        "payment": {"auth_code": "654321", "bank_code": "05", "rrn": "999", "ref_id": "777888", "gateway_id": 1},
        "credit_card": {"holder": "John Doe", "stamp": "b3e", "brand": "visa", "last_4": "0000", "first_1": "4"},
        "customer": {"ip": "127.0.0.1", "email": "john@example.com"}
    });
    if let Some(p) = parent {
        tx["parent_uid"] = json!(p);
    }
    json!({"transaction": tx}).to_string()
}

#[test]
fn begateway_successful_and_failed_payments() {
    let m = mapping(Preset::Begateway);
    let ok = begateway_body("1-310b0da80b", "payment", "successful", None);
    let ev = &m
        .extract(&NoHeaders, &parse_body(None, ok.as_bytes()).unwrap())
        .unwrap()[0];
    assert_eq!(ev.status, Status::Succeeded);
    assert_eq!(ev.payment_id, "order-1234");
    assert_eq!(ev.charge_id.as_deref(), Some("1-310b0da80b"));
    assert_eq!(
        ev.provider_event_id.as_deref(),
        Some("1-310b0da80b:successful")
    );
    assert_eq!(
        (ev.amount, ev.currency.as_deref(), ev.occurred_at),
        (Some(1490), Some("BYN"), Some(1_709_288_130_000))
    );

    let failed = begateway_body("2-0fe8a1", "payment", "failed", None);
    let ev = &m
        .extract(&NoHeaders, &parse_body(None, failed.as_bytes()).unwrap())
        .unwrap()[0];
    assert_eq!(
        (ev.status, ev.charge_id.as_deref()),
        (Status::Failed, Some("2-0fe8a1"))
    );
    assert_eq!(
        m.event_key(&NoHeaders, None, failed.as_bytes()),
        "id:2-0fe8a1:failed"
    );
}

#[test]
fn begateway_modifications_point_at_their_parent() {
    let m = mapping(Preset::Begateway);
    let run = |body: String| {
        m.extract(&NoHeaders, &parse_body(None, body.as_bytes()).unwrap())
            .unwrap()
    };
    let auth = &run(begateway_body("a-1", "authorization", "successful", None))[0];
    assert_eq!(
        (auth.status, auth.authorization_id.as_deref()),
        (Status::Authorized, Some("a-1"))
    );
    let capture = &run(begateway_body("c-1", "capture", "successful", Some("a-1")))[0];
    assert_eq!(
        (
            capture.authorization_id.as_deref(),
            capture.charge_id.as_deref()
        ),
        (Some("a-1"), Some("c-1"))
    );
    let void = &run(begateway_body("v-1", "void", "successful", Some("a-1")))[0];
    assert_eq!(
        (void.status, void.authorization_id.as_deref()),
        (Status::Canceled, Some("a-1"))
    );
    let refund = &run(begateway_body("r-1", "refund", "successful", Some("c-1")))[0];
    assert_eq!(
        (refund.status, refund.charge_id.as_deref()),
        (Status::Refunded, Some("c-1"))
    );
    assert!(run(begateway_body("r-2", "refund", "failed", Some("c-1"))).is_empty());
}
