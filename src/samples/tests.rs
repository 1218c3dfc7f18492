//! Every sample, once signed, verifies with `auth::verify` and maps through
//! the provider's `Mapping` to the payment id and canonical status asked for.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use super::*;
use crate::config::{ProviderSettings, Settings};

/// Providers like config.example.toml's and tests/api's, one per preset.
const CONFIG: &str = r#"
[[providers]]
id = "acme"
merchant_id = "shop-1"
[providers.auth]
secrets = ["acme-secret", "acme-secret-next"]
[providers.mapping.statuses]
Succeed = "succeeded"
Failed = "failed"
Pending = "pending"

[[providers]]
id = "stripe"
preset = "stripe"
merchant_id = "shop-1"
[providers.auth]
secrets = ["whsec_demo_stripe_endpoint_secret"]

[[providers]]
id = "adyen"
preset = "adyen"
merchant_id = "shop-1"
[providers.auth]
secrets = ["44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"]

[[providers]]
id = "paymentsos"
preset = "paymentsos"
merchant_id = "shop-1"
[providers.auth]
secrets = ["demo-paymentsos-private-key"]

[[providers]]
id = "begateway"
preset = "begateway"
merchant_id = "shop-1"
[providers.auth]
username = "361"
password = "demo-begateway-secret-key"

[[merchants]]
id = "shop-1"
allowed_return_origins = ["https://shop.example.com"]
"#;

const NOW: i64 = 1_719_000_000;

fn settings() -> Settings {
    Settings::parse(CONFIG, std::path::Path::new("."), &|_| None).expect("valid config")
}

/// Sign, check the signature as the service would, and map what was sent.
fn round_trip(p: &ProviderSettings, req: &Request) -> Vec<crate::domain::Candidate> {
    let Wire { headers, body } = sign(&p.auth, req, NOW).unwrap();
    let mut map = HeaderMap::new();
    for (k, v) in &headers {
        map.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    assert_eq!(
        crate::auth::verify(&p.auth, &map, &body, NOW),
        Ok(()),
        "{} {}",
        p.id,
        req.sample
    );
    let lower: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    p.mapping
        .map_request(&lower, Some("application/json"), &body)
        .unwrap()
}

#[test]
fn every_sample_of_every_preset_signs_verifies_and_maps_as_asked() {
    let s = settings();
    for p in &s.providers {
        let all = samples(p.preset);
        assert!(!all.is_empty(), "{}", p.id);
        for sample in all {
            let can = reachable(&p.mapping, sample, "pay_x", NOW);
            assert!(!can.is_empty(), "{} {} maps to nothing", p.id, sample.name);
            for want in can {
                let pid = format!("pay_{}_{}", p.id, sample.name);
                let req = build(&p.mapping, Some(sample.name), &pid, Some(want), NOW).unwrap();
                assert_eq!((req.status, req.sample), (want, sample.name));
                let events = round_trip(p, &req);
                let last = events.last().expect("at least one event");
                assert_eq!(last.payment_id, pid, "{} {}", p.id, sample.name);
                assert_eq!(last.status, want, "{} {}", p.id, sample.name);
                assert!(events.iter().all(|e| e.payment_id == pid));
            }
        }
    }
}

#[test]
fn every_preset_reaches_the_statuses_a_developer_needs() {
    use Status::*;
    let s = settings();
    let needs: &[(&str, &[Status])] = &[
        ("acme", &Status::ALL),
        (
            "stripe",
            &[
                Pending,
                Authorized,
                Succeeded,
                Failed,
                Canceled,
                PartiallyRefunded,
                Refunded,
                ChargedBack,
            ],
        ),
        (
            "adyen",
            &[
                Pending,
                Authorized,
                Succeeded,
                Failed,
                Canceled,
                Expired,
                Refunded,
                ChargedBack,
            ],
        ),
        (
            "paymentsos",
            &[Pending, Authorized, Succeeded, Failed, Canceled, Refunded],
        ),
        (
            "begateway",
            &[
                Pending, Authorized, Succeeded, Failed, Canceled, Expired, Refunded,
            ],
        ),
    ];
    for (id, statuses) in needs {
        let p = s.provider(id).unwrap();
        for want in *statuses {
            // No sample named: the first one that can produce it.
            let req = build(&p.mapping, None, "pay_1", Some(*want), NOW)
                .unwrap_or_else(|e| panic!("{id} {want}: {e}"));
            let last = round_trip(p, &req).pop().unwrap();
            assert_eq!((last.payment_id.as_str(), last.status), ("pay_1", *want));
        }
    }
}

#[test]
fn defaults_are_the_first_sample_and_a_sensible_status() {
    let s = settings();
    for (id, sample, status, native) in [
        ("acme", "payment", Status::Succeeded, "succeeded"),
        (
            "stripe",
            "payment_intent.succeeded",
            Status::Succeeded,
            "payment_intent.succeeded",
        ),
        (
            "adyen",
            "authorisation",
            Status::Authorized,
            "AUTHORISATION:true",
        ),
        (
            "paymentsos",
            "payment.capture.create",
            Status::Succeeded,
            "payment.capture.create:Succeed",
        ),
        (
            "begateway",
            "payment",
            Status::Succeeded,
            "payment:successful",
        ),
    ] {
        let p = s.provider(id).unwrap();
        let req = build(&p.mapping, None, "pay_d", None, NOW).unwrap();
        assert_eq!(
            (req.sample, req.status, req.native.as_str()),
            (sample, status, native)
        );
    }
}

#[test]
fn the_native_value_follows_the_configs_statuses_table() {
    // acme maps "Succeed" to succeeded too, but the canonical name comes first;
    // a config that only knows "Succeed" gets "Succeed".
    let text = CONFIG.replace(
        "Succeed = \"succeeded\"",
        "Succeed = \"succeeded\"\nsucceeded = \"ignore\"",
    );
    let s = Settings::parse(&text, std::path::Path::new("."), &|_| None).unwrap();
    let p = s.provider("acme").unwrap();
    let req = build(&p.mapping, None, "pay_n", Some(Status::Succeeded), NOW).unwrap();
    assert_eq!(req.native, "Succeed");
    assert_eq!(round_trip(p, &req)[0].status, Status::Succeeded);
}

#[test]
fn adyen_capture_is_a_batch_with_a_signature_per_item() {
    let s = settings();
    let p = s.provider("adyen").unwrap();
    let req = build(&p.mapping, Some("capture"), "order-7", None, NOW).unwrap();
    let body = sign(&p.auth, &req, NOW).unwrap().body;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let items = v["notificationItems"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for i in items {
        let sig = &i["NotificationRequestItem"]["additionalData"]["hmacSignature"];
        assert!(sig.as_str().is_some_and(|s| !s.is_empty()), "{i}");
    }
    let evs = round_trip(p, &req);
    let got: Vec<Status> = evs.iter().map(|e| e.status).collect();
    assert_eq!(got, [Status::Authorized, Status::Succeeded]);
}

#[test]
fn paymentsos_sends_its_event_type_header() {
    let s = settings();
    let p = s.provider("paymentsos").unwrap();
    let req = build(&p.mapping, None, "pos-1", Some(Status::Refunded), NOW).unwrap();
    assert_eq!(req.sample, "payment.refund.create");
    assert!(req
        .headers
        .contains(&("event-type".into(), "payment.refund.create".into())));
}

#[test]
fn unknown_samples_and_unreachable_statuses_are_explained() {
    let s = settings();
    let p = s.provider("stripe").unwrap();
    let e = build(&p.mapping, Some("nope"), "pi_1", None, NOW).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("\"nope\"") && msg.contains("payment_intent.payment_failed"),
        "{msg}"
    );
    let e = build(
        &p.mapping,
        Some("payment_intent.succeeded"),
        "pi_1",
        Some(Status::Refunded),
        NOW,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("refunded") && msg.contains("succeeded"),
        "{msg}"
    );
    // Stripe has no sample that expires.
    let e = build(&p.mapping, None, "pi_1", Some(Status::Expired), NOW).unwrap_err();
    assert!(matches!(e, SampleError::Unreachable { .. }), "{e}");
}

#[test]
fn rsa_without_a_private_key_is_refused_clearly() {
    let s = settings();
    let p = s.provider("begateway").unwrap();
    let req = build(&p.mapping, None, "order-1", None, NOW).unwrap();
    let mut auth = p.auth.clone();
    auth.scheme = crate::auth::Scheme::RsaSha256;
    let e = sign(&auth, &req, NOW).unwrap_err();
    assert_eq!(e, SampleError::NeedsPrivateKey);
    assert!(e.to_string().contains("private key"), "{e}");
}

#[test]
fn samples_are_pure_functions_of_their_inputs() {
    let s = settings();
    for p in &s.providers {
        let a = build(&p.mapping, None, "pay_p", None, NOW).unwrap();
        let b = build(&p.mapping, None, "pay_p", None, NOW).unwrap();
        assert_eq!(a, b, "{}", p.id);
        let c = build(&p.mapping, None, "pay_p", None, NOW + 1).unwrap();
        assert_ne!(a.body, c.body, "{}: a later trigger is a new event", p.id);
    }
}
