//! `verify` must return, never panic, whatever a client sends.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::test_support::{cfg, rsa_key};
use super::{verify, Algorithm, AuthConfig, Encoding, Scheme};

const SCHEMES: [Scheme; 8] = [
    Scheme::Hmac,
    Scheme::Stripe,
    Scheme::StandardWebhooks,
    Scheme::Basic,
    Scheme::AdyenHmac,
    Scheme::Paymentsos,
    Scheme::RsaSha256,
    Scheme::None,
];

/// Every header any scheme reads.
const NAMES: [&str; 8] = [
    "x-signature",
    "stripe-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "authorization",
    "signature",
    "content-signature",
];

fn config(scheme: Scheme, secret_kind: u8, encoding: Encoding, prefix: &str) -> AuthConfig {
    // Valid for the scheme, or deliberately not (non-hex for adyen, non-base64
    // for standard-webhooks), to exercise the misconfiguration paths too.
    let secret = match secret_kind % 3 {
        0 => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        1 => "44782DEF547AAA06C910C43932B1EB0C",
        _ => "",
    };
    let mut c = cfg(scheme, &[secret, "second"]);
    c.algorithm = Algorithm::Sha512;
    c.encoding = encoding;
    c.prefix = prefix.into();
    c.username = Some("user".into());
    c.public_key = Some(rsa_key().to_public_key());
    c
}

/// Header values: arbitrary bytes (including obs-text and non-UTF-8), and
/// near-miss structured values that reach deeper into the parsers.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "[ -~]{0,120}".prop_map(String::into_bytes),
        (any::<i64>(), "[0-9a-fA-F]{0,140}", "[ -~]{0,20}")
            .prop_map(|(t, h, x)| format!("t={t},v1={h},{x}").into_bytes()),
        ("[A-Za-z0-9+/=]{0,100}", "[ -~]{0,10}")
            .prop_map(|(b, v)| format!("v1,{b} {v},{b}").into_bytes()),
        "[A-Za-z0-9+/=]{0,100}".prop_map(|b| format!("Basic {b}").into_bytes()),
        "[0-9a-fA-F]{0,140}".prop_map(|h| format!("sig1={h}").into_bytes()),
        "-?[0-9]{0,25}".prop_map(String::into_bytes),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..400),
        "[ -~]{0,200}".prop_map(String::into_bytes),
        // JSON-shaped bodies with wrong types in the places schemes look at.
        (
            prop_oneof![Just("[]"), Just("{}"), Just("null"), Just("1"), Just(r#"[{"NotificationRequestItem":{}}]"#), Just(r#"[{"NotificationRequestItem":{"additionalData":{"hmacSignature":"AA=="},"amount":[1]}}]"#), Just(r#"[{"NotificationRequestItem":{"additionalData":7}}]"#), Just(r#"[7, {}]"#)],
            prop_oneof![Just("null"), Just("{}"), Just("[1,2]"), Just("1e400"), Just("-0"), Just(r#"{"result":{"status":{}}}"#), Just(r#""x""#)],
        )
            .prop_map(|(items, data)| {
                format!(r#"{{"notificationItems":{items},"id":{data},"data":{data}}}"#).into_bytes()
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn verify_never_panics(
        scheme in proptest::sample::select(SCHEMES.to_vec()),
        secret_kind in any::<u8>(),
        base64 in any::<bool>(),
        prefix in prop_oneof![Just(""), Just("sha256="), Just("é")],
        values in proptest::collection::vec(proptest::option::of(header_value()), NAMES.len()),
        body in body(),
        now in any::<i64>(),
        tolerance in any::<u64>(),
    ) {
        let enc = if base64 { Encoding::Base64 } else { Encoding::Hex };
        let mut c = config(scheme, secret_kind, enc, prefix);
        c.tolerance = std::time::Duration::from_secs(tolerance);
        let mut h = HeaderMap::new();
        for (name, value) in NAMES.iter().zip(values) {
            // Bytes that cannot be a header value never reach us from actix.
            if let Some(v) = value.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
        let _ = verify(&c, &h, &body, now);
        let _ = super::sign(&c, &h, &body, now);
    }
}
