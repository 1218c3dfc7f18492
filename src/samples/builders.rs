//! The sample bodies, one builder per kind of event, shaped like each
//! provider's documented payloads (and the bodies in tests/api/presets.rs).

use serde_json::{json, Value};

use super::{digest, Natives, Sample, Unsigned};
use crate::mapping::Preset;

pub(super) fn samples(preset: Preset) -> &'static [Sample] {
    match preset {
        Preset::Generic => GENERIC,
        Preset::Stripe => STRIPE,
        Preset::Adyen => ADYEN,
        Preset::Paymentsos => PAYMENTSOS,
        Preset::Begateway => BEGATEWAY,
    }
}

fn rfc3339(now: i64) -> String {
    chrono::DateTime::from_timestamp(now, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn body_only(body: Value) -> Unsigned {
    Unsigned {
        body,
        headers: Vec::new(),
    }
}

// ----------------------------------------------------------------- generic

const GENERIC: &[Sample] = &[Sample {
    name: "payment",
    natives: Natives::StatusTable,
    build: generic,
}];

fn generic(payment_id: &str, status: &str, now: i64) -> Unsigned {
    let id = digest(&[payment_id, status, &now.to_string()], 16);
    body_only(json!({
        "id": format!("evt_{id}"),
        "created": now,
        "data": {
            "payment_id": payment_id,
            "status": status,
            "amount": 1000,
            "currency": "EUR",
            "authorization_id": format!("auth_{}", &id[..12]),
        }
    }))
}

// ------------------------------------------------------------------ stripe

macro_rules! stripe_pi {
    ($($name:literal),*) => {
        &[$(Sample { name: $name, natives: Natives::Fixed(&[$name]), build: stripe_intent }),*]
    };
}

const STRIPE_PI: &[Sample] = stripe_pi!(
    "payment_intent.succeeded",
    "payment_intent.created",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.amount_capturable_updated",
    "payment_intent.payment_failed",
    "payment_intent.canceled"
);

const STRIPE: &[Sample] = &[
    STRIPE_PI[0],
    STRIPE_PI[1],
    STRIPE_PI[2],
    STRIPE_PI[3],
    STRIPE_PI[4],
    STRIPE_PI[5],
    STRIPE_PI[6],
    // `:true` a full refund, `:false` a partial one (the charge's `refunded`).
    Sample {
        name: "charge.refunded",
        natives: Natives::Fixed(&["charge.refunded:true", "charge.refunded:false"]),
        build: stripe_refunded,
    },
    Sample {
        name: "charge.dispute.created",
        natives: Natives::Fixed(&["charge.dispute.created"]),
        build: stripe_dispute,
    },
];

fn stripe_event(kind: &str, payment_id: &str, now: i64, object: Value) -> Unsigned {
    let id = digest(&[kind, payment_id, &now.to_string()], 24);
    body_only(json!({
        "id": format!("evt_{id}"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": now,
        "data": {"object": object},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": format!("req_{}", &id[..14]), "idempotency_key": null},
        "type": kind
    }))
}

fn charge_id(payment_id: &str) -> String {
    format!("ch_{}", digest(&["charge", payment_id], 24))
}

/// A PaymentIntent event; the native value is the event type, and the
/// intent's `status` is the one Stripe sends with it.
fn stripe_intent(payment_id: &str, kind: &str, now: i64) -> Unsigned {
    let status = match kind {
        "payment_intent.created" | "payment_intent.payment_failed" => "requires_payment_method",
        "payment_intent.processing" => "processing",
        "payment_intent.requires_action" => "requires_action",
        "payment_intent.amount_capturable_updated" => "requires_capture",
        "payment_intent.canceled" => "canceled",
        _ => "succeeded",
    };
    let error = (kind == "payment_intent.payment_failed").then(|| {
        json!({
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
            "type": "card_error"
        })
    });
    let object = json!({
        "id": payment_id,
        "object": "payment_intent",
        "amount": 2000,
        "amount_capturable": if status == "requires_capture" { 2000 } else { 0 },
        "amount_received": if status == "succeeded" { 2000 } else { 0 },
        "capture_method": "automatic",
        "client_secret": format!("{payment_id}_secret_trigger"),
        "confirmation_method": "automatic",
        "created": now,
        "currency": "eur",
        "customer": null,
        "description": "ipn-relay trigger",
        "last_payment_error": error,
        "latest_charge": charge_id(payment_id),
        "livemode": false,
        "metadata": {"order_id": "trigger"},
        "payment_method": "pm_card_visa",
        "payment_method_types": ["card"],
        "status": status
    });
    stripe_event(kind, payment_id, now, object)
}

fn stripe_refunded(payment_id: &str, native: &str, now: i64) -> Unsigned {
    let full = !native.ends_with(":false");
    let object = json!({
        "id": charge_id(payment_id),
        "object": "charge",
        "amount": 2000,
        "amount_captured": 2000,
        "amount_refunded": if full { 2000 } else { 500 },
        "captured": true,
        "created": now,
        "currency": "eur",
        "paid": true,
        "payment_intent": payment_id,
        "refunded": full,
        "status": "succeeded"
    });
    stripe_event("charge.refunded", payment_id, now, object)
}

fn stripe_dispute(payment_id: &str, _native: &str, now: i64) -> Unsigned {
    let object = json!({
        "id": format!("dp_{}", digest(&["dispute", payment_id], 24)),
        "object": "dispute",
        "amount": 2000,
        "charge": charge_id(payment_id),
        "created": now,
        "currency": "eur",
        "payment_intent": payment_id,
        "reason": "fraudulent",
        "status": "needs_response"
    });
    stripe_event("charge.dispute.created", payment_id, now, object)
}

// ------------------------------------------------------------------- adyen

const ADYEN: &[Sample] = &[
    Sample {
        name: "authorisation",
        natives: Natives::Fixed(&["AUTHORISATION:true", "AUTHORISATION:false"]),
        build: adyen_single,
    },
    // A batch: the AUTHORISATION, then the CAPTURE of it.
    Sample {
        name: "capture",
        natives: Natives::Fixed(&["CAPTURE:true"]),
        build: adyen_after_auth,
    },
    Sample {
        name: "refund",
        natives: Natives::Fixed(&["REFUND:true"]),
        build: adyen_after_auth,
    },
    Sample {
        name: "cancellation",
        natives: Natives::Fixed(&["CANCELLATION:true"]),
        build: adyen_after_auth,
    },
    Sample {
        name: "chargeback",
        natives: Natives::Fixed(&["CHARGEBACK:true"]),
        build: adyen_after_auth,
    },
    Sample {
        name: "pending",
        natives: Natives::Fixed(&["PENDING:true"]),
        build: adyen_single,
    },
    Sample {
        name: "offer_closed",
        natives: Natives::Fixed(&["OFFER_CLOSED:true"]),
        build: adyen_single,
    },
];

/// A 16-digit pspReference.
fn psp(parts: &[&str]) -> String {
    let hex = digest(parts, 15);
    let n = u64::from_str_radix(&hex, 16).unwrap_or_default() % 10u64.pow(15);
    format!("8{n:015}")
}

/// One `NotificationRequestItem` for native `EVENTCODE:success`; the
/// `hmacSignature` is added when signing.
fn adyen_item(payment_id: &str, native: &str, now: i64, original: Option<&str>) -> Value {
    let (code, success) = native.split_once(':').unwrap_or((native, "true"));
    let mut item = json!({
        "additionalData": {
            "authCode": "58747",
            "cardSummary": "1111",
            "expiryDate": "03/2030",
            "paymentMethodVariant": "visa"
        },
        "amount": {"currency": "EUR", "value": 1130},
        "eventCode": code,
        "eventDate": rfc3339(now),
        "merchantAccountCode": "ShopOneECOM",
        "merchantReference": payment_id,
        "operations": ["CANCEL", "CAPTURE", "REFUND"],
        "paymentMethod": "visa",
        "pspReference": psp(&[payment_id, native, &now.to_string()]),
        "reason": if success == "true" { "58747:1111:03/2030" } else { "Refused" },
        "success": success
    });
    if let Some(o) = original {
        item["originalReference"] = json!(o);
    }
    json!({"NotificationRequestItem": item})
}

fn adyen_batch(items: Vec<Value>) -> Unsigned {
    body_only(json!({"live": "false", "notificationItems": items}))
}

fn adyen_single(payment_id: &str, native: &str, now: i64) -> Unsigned {
    adyen_batch(vec![adyen_item(payment_id, native, now, None)])
}

/// Two items: the AUTHORISATION and the modification (`native`) of it.
fn adyen_after_auth(payment_id: &str, native: &str, now: i64) -> Unsigned {
    let auth = adyen_item(payment_id, "AUTHORISATION:true", now, None);
    let original = auth["NotificationRequestItem"]["pspReference"]
        .as_str()
        .map(str::to_owned);
    let modification = adyen_item(payment_id, native, now, original.as_deref());
    adyen_batch(vec![auth, modification])
}

// -------------------------------------------------------------- paymentsos

macro_rules! paymentsos {
    ($($name:literal),*) => {
        &[$(Sample {
            name: $name,
            natives: Natives::Fixed(&[
                concat!($name, ":Succeed"),
                concat!($name, ":Failed"),
                concat!($name, ":Pending"),
            ]),
            build: paymentsos_event,
        }),*]
    };
}

const PAYMENTSOS: &[Sample] = paymentsos!(
    "payment.capture.create",
    "payment.authorization.create",
    "payment.charge.create",
    "payment.void.create",
    "payment.refund.create"
);

/// The event type travels in the `event-type` header, which the signature
/// covers; the outcome is `/data/result/status`.
fn paymentsos_body(event_type: &str, payment_id: &str, result: &str, now: i64) -> Unsigned {
    let id = digest(&[event_type, payment_id, result, &now.to_string()], 32);
    let uuid = |s: &str| {
        format!(
            "{}-{}-4{}-8{}-{}",
            &s[..8],
            &s[8..12],
            &s[13..16],
            &s[17..20],
            &s[20..32]
        )
    };
    let created = chrono::DateTime::from_timestamp(now, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Unsigned {
        body: json!({
            "id": format!("{}-{event_type}", uuid(&id)),
            "created": created,
            "account_id": "9d1e7a84-2b71-4a6d-8d5d-0c5b1b3f2a91",
            "app_id": "com.shop1.checkout",
            "payment_id": payment_id,
            "data": {
                "id": uuid(&digest(&[&id, "resource"], 32)),
                "amount": 1500,
                "currency": "EUR",
                "created": created,
                "reconciliation_id": "23683456",
                "result": {"status": result},
                "provider_data": {
                    "provider_name": "AdyenCSE",
                    "response_code": if result == "Succeed" { "0" } else { "2" },
                    "description": if result == "Succeed" { "Authorised" } else { "Refused" },
                },
                "provider_specific_data": {},
                "additional_details": {"order": "trigger"}
            }
        }),
        headers: vec![
            ("event-type".into(), event_type.into()),
            ("x-payments-os-env".into(), "test".into()),
            ("api-version".into(), "1.3.0".into()),
        ],
    }
}

/// Native value `event.type:Result`, the form the preset's `statuses` table
/// uses (a bare `Result` is a capture).
fn paymentsos_event(payment_id: &str, native: &str, now: i64) -> Unsigned {
    let (event_type, result) = native
        .rsplit_once(':')
        .unwrap_or(("payment.capture.create", native));
    paymentsos_body(event_type, payment_id, result, now)
}

// --------------------------------------------------------------- begateway

macro_rules! begateway {
    ($($name:literal),*) => {
        &[$(Sample {
            name: $name,
            natives: Natives::Fixed(&[
                concat!($name, ":successful"),
                concat!($name, ":failed"),
                concat!($name, ":incomplete"),
                concat!($name, ":expired"),
            ]),
            build: begateway_tx,
        }),*]
    };
}

const BEGATEWAY: &[Sample] = begateway!("payment", "authorization", "capture", "void", "refund");

/// Native value `type:status`, the form the preset's `statuses` table uses
/// (a bare `status` is a payment).
fn begateway_tx(payment_id: &str, native: &str, now: i64) -> Unsigned {
    let (kind, status) = native.split_once(':').unwrap_or(("payment", native));
    let uid = |what: &str| {
        let h = digest(&[payment_id, what, &now.to_string()], 20);
        format!("{}-{}", &h[..10], &h[10..])
    };
    let parent = matches!(kind, "capture" | "void" | "refund").then(|| uid("parent"));
    let message = match status {
        "successful" => "Successfully processed",
        "failed" => "Declined",
        "incomplete" => "Waiting for 3-D Secure",
        _ => "Expired",
    };
    body_only(json!({
        "transaction": {
            "uid": uid(native),
            "parent_uid": parent,
            "status": status,
            "message": message,
            "type": kind,
            "amount": 100,
            "currency": "USD",
            "description": "ipn-relay trigger",
            "tracking_id": payment_id,
            "created_at": rfc3339(now),
            "updated_at": rfc3339(now),
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
            "customer": {"ip": "127.0.0.1", "email": "john@example.com"}
        }
    }))
}
