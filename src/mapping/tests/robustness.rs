//! Hostile bodies: never a panic, always a `MalformedPayload` or a result.

use proptest::prelude::*;
use serde_json::Value;

use crate::mapping::{parse_body, Mapping, NoHeaders, Preset, RawMapping};

const PRESETS: [Preset; 5] = [
    Preset::Generic,
    Preset::Stripe,
    Preset::Adyen,
    Preset::Paymentsos,
    Preset::Begateway,
];

fn all_mappings() -> Vec<Mapping> {
    PRESETS
        .iter()
        .map(|p| Mapping::compile(*p, &RawMapping::default()).unwrap())
        .collect()
}

#[test]
fn deep_nesting_and_invalid_utf8_are_malformed_not_panics() {
    let bodies: [Vec<u8>; 4] = [
        "[".repeat(100_000).into_bytes(),
        "{\"transaction\":".repeat(50_000).into_bytes(),
        b"{\"id\":\"\xc3\x28\"}".to_vec(),
        b"\xff\xfe\x00{}".to_vec(),
    ];
    let headers = vec![(
        "event-type".to_string(),
        "payment.capture.create".to_string(),
    )];
    for body in &bodies {
        for ct in [None, Some("application/x-www-form-urlencoded")] {
            let err = parse_body(ct, body);
            if ct.is_none() || !body.is_ascii() {
                assert_eq!(err.unwrap_err().code(), "malformed_payload");
            }
        }
        for m in all_mappings() {
            assert!(m.event_key(&headers, None, body).starts_with("sha256:"));
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "true",
            "false",
            "succeeded",
            "AUTHORISATION",
            "CAPTURE",
            "successful",
            "refund",
            "payment_intent.succeeded",
            "charge.refunded",
            "2019-06-28T18:03:50+01:00",
            "-12",
            "1e3",
        ])
        .prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    let keys = prop::sample::select(vec![
        "id",
        "data",
        "object",
        "type",
        "status",
        "payment_id",
        "amount",
        "currency",
        "created",
        "notificationItems",
        "NotificationRequestItem",
        "eventCode",
        "success",
        "pspReference",
        "merchantReference",
        "originalReference",
        "eventDate",
        "value",
        "result",
        "transaction",
        "uid",
        "tracking_id",
        "created_at",
        "refunded",
        "payment_intent",
        "latest_charge",
    ]);
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #[test]
    fn parse_and_extract_never_panic_on_arbitrary_bytes(
        body in prop::collection::vec(any::<u8>(), 0..256),
        form in any::<bool>(),
    ) {
        let ct = form.then_some("application/x-www-form-urlencoded");
        let headers = vec![("event-type".to_string(), "payment.authorization.create".to_string())];
        for m in all_mappings() {
            let key = m.event_key(&headers, ct, &body);
            prop_assert!(key.starts_with("id:") || key.starts_with("sha256:"));
            if let Ok(doc) = parse_body(ct, &body) {
                let _ = m.extract(&headers, &doc);
            }
        }
    }

    #[test]
    fn extract_never_panics_on_arbitrary_documents(doc in arb_json()) {
        let body = serde_json::to_vec(&doc).unwrap();
        for m in all_mappings() {
            let _ = m.event_key(&NoHeaders, None, &body);
            if let Ok(events) = m.extract(&NoHeaders, &doc) {
                for e in events {
                    prop_assert!(!e.payment_id.is_empty());
                }
            }
        }
    }
}
