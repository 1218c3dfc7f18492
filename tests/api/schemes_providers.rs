//! The provider-specific auth schemes over real HTTP, each with accept and
//! reject cases: Stripe, Standard Webhooks, RSA-SHA256, Adyen HMAC and
//! PaymentsOS (the generic `hmac`, `basic` and `none` and the shared helpers
//! are in `schemes.rs`). Signatures are computed here with the hmac/sha2/rsa
//! crates directly, not only with the library's signer.

use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::schemes::{
    accepted, applied, body, config, h, now, rejected, sha256, stored_requests, B64,
};

// ---------------------------------------------------------------- stripe

const STRIPE: &str = r#"
[[providers]]
id = "st"
merchant_id = "shop-1"
[providers.auth]
scheme = "stripe"
secrets = ["whsec_stripe_test_secret"]
tolerance = "5m"
"#;

fn stripe_header(secret: &str, t: i64, b: &[u8]) -> String {
    let ts = t.to_string();
    let sig = hex::encode(sha256(secret.as_bytes(), &[ts.as_bytes(), b".", b]));
    format!("t={ts},v1={sig}")
}

#[tokio::test]
async fn stripe_accepts_a_fresh_signature_and_rejects_wrong_secret_and_stale_time() {
    let app = spawn_with("", &config(STRIPE)).await;
    let secret = "whsec_stripe_test_secret";

    let b = body("evt_1", "pi_1");
    let id = accepted(
        app.post_raw(
            "st",
            b,
            &[h(
                "Stripe-Signature",
                stripe_header(secret, now(), &body("evt_1", "pi_1")),
            )],
        )
        .await,
        "fresh",
    )
    .await;
    applied(&app, &id, "pi_1").await;

    // Several v1 entries (Stripe rotating its secret): one match is enough.
    let b = body("evt_2", "pi_1");
    let good = stripe_header(secret, now(), &b);
    let header = format!("{good},v1={}", "ab".repeat(32));
    accepted(
        app.post_raw("st", b, &[h("Stripe-Signature", header)])
            .await,
        "extra v1",
    )
    .await;

    // The library's signer agrees.
    let b = body("evt_3", "pi_1");
    let hs = app.sign("st", &b, &[]);
    accepted(app.post_raw("st", b, &hs).await, "signer").await;

    let b = body("evt_4", "pi_1");
    let cases = [
        ("wrong secret", stripe_header("whsec_other", now(), &b)),
        ("ten minutes old", stripe_header(secret, now() - 600, &b)),
        ("ten minutes ahead", stripe_header(secret, now() + 600, &b)),
        ("other body", stripe_header(secret, now(), b"{}")),
        ("no timestamp", {
            let full = stripe_header(secret, now(), &b);
            full.split(',').nth(1).unwrap().to_string()
        }),
        ("timestamp swapped after signing", {
            let t = now();
            stripe_header(secret, t - 1, &b).replacen(
                &format!("t={}", t - 1),
                &format!("t={}", t + 1),
                1,
            )
        }),
    ];
    for (what, header) in cases {
        rejected(
            app.post_raw("st", b.clone(), &[h("Stripe-Signature", header)])
                .await,
            what,
        )
        .await;
    }
    rejected(app.post_raw("st", b, &[]).await, "no header").await;
    assert_eq!(stored_requests(&app).await, 3);
}

// ------------------------------------------------------ standard-webhooks

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn standard_headers(id: &str, t: i64, b: &[u8]) -> Vec<(String, String)> {
    let key = B64.decode(WHSEC.strip_prefix("whsec_").unwrap()).unwrap();
    let ts = t.to_string();
    let sig = B64.encode(sha256(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", b]));
    vec![
        h("webhook-id", id),
        h("webhook-timestamp", ts),
        h("webhook-signature", format!("v1,{sig}")),
    ]
}

#[tokio::test]
async fn standard_webhooks_accepts_valid_and_rejects_tampered() {
    let app = spawn_with(
        "",
        &config(&format!(
            r#"
[[providers]]
id = "sw"
merchant_id = "shop-1"
[providers.auth]
scheme = "standard-webhooks"
secrets = ["{WHSEC}"]
"#
        )),
    )
    .await;

    let b = body("ev-sw-1", "pay-sw");
    let id = accepted(
        app.post_raw("sw", b.clone(), &standard_headers("msg_1", now(), &b))
            .await,
        "valid",
    )
    .await;
    applied(&app, &id, "pay-sw").await;

    // Several signatures, space-separated: one valid one is enough.
    let b = body("ev-sw-2", "pay-sw");
    let mut hs = standard_headers("msg_2", now(), &b);
    hs[2].1 = format!("v1,{} {}", B64.encode([0u8; 32]), hs[2].1);
    accepted(app.post_raw("sw", b, &hs).await, "two signatures").await;

    let b = body("ev-sw-3", "pay-sw");
    let hs = app.sign("sw", &b, &[]);
    accepted(app.post_raw("sw", b, &hs).await, "signer").await;

    let b = body("ev-sw-4", "pay-sw");
    let good = standard_headers("msg_4", now(), &b);
    // Body tampered after signing.
    let mut tampered = b.clone();
    let at = tampered.len() - 3;
    tampered[at] ^= 1;
    rejected(app.post_raw("sw", tampered, &good).await, "tampered body").await;
    // Id swapped.
    let mut hs = good.clone();
    hs[0].1 = "msg_other".into();
    rejected(app.post_raw("sw", b.clone(), &hs).await, "other id").await;
    // Timestamp swapped.
    let mut hs = good.clone();
    hs[1].1 = (now() + 1).to_string();
    rejected(app.post_raw("sw", b.clone(), &hs).await, "other timestamp").await;
    // Properly signed, but outside the default 5m tolerance.
    rejected(
        app.post_raw(
            "sw",
            b.clone(),
            &standard_headers("msg_4", now() - 3600, &b),
        )
        .await,
        "an hour old",
    )
    .await;
    // Signed with the whsec string's bytes instead of the decoded key.
    let ts = now().to_string();
    let wrong = B64.encode(sha256(
        WHSEC.as_bytes(),
        &[b"msg_4", b".", ts.as_bytes(), b".", &b],
    ));
    let hs = vec![
        h("webhook-id", "msg_4"),
        h("webhook-timestamp", ts),
        h("webhook-signature", format!("v1,{wrong}")),
    ];
    rejected(app.post_raw("sw", b.clone(), &hs).await, "undecoded key").await;
    // A header missing.
    rejected(
        app.post_raw("sw", b.clone(), &good[1..]).await,
        "no webhook-id",
    )
    .await;
    assert_eq!(stored_requests(&app).await, 3);
}

// ------------------------------------------------------------ rsa-sha256

/// 2048-bit key generation is slow in debug builds: once per test run.
fn rsa_key() -> &'static rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap())
}

#[tokio::test]
async fn rsa_sha256_accepts_the_key_holders_signature_only() {
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use sha2::Digest;

    let key = tokio::task::spawn_blocking(|| rsa_key().clone())
        .await
        .unwrap();
    let pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let app = spawn_with(
        "",
        &config(&format!(
            "[[providers]]\nid = \"bgr\"\npreset = \"generic\"\nmerchant_id = \"shop-1\"\n\
             [providers.auth]\nscheme = \"rsa-sha256\"\npublic_key = \"\"\"\n{pem}\"\"\"\n"
        )),
    )
    .await;

    let b = body("ev-rsa-1", "pay-rsa");
    let sig = ipn_relay::auth::sign_rsa(&key, &b);
    let id = accepted(
        app.post_raw("bgr", b.clone(), &[h("Content-Signature", sig.clone())])
            .await,
        "signed",
    )
    .await;
    applied(&app, &id, "pay-rsa").await;

    // Signed with the rsa crate directly.
    let b2 = body("ev-rsa-2", "pay-rsa");
    let raw = key
        .sign(
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(&b2),
        )
        .unwrap();
    accepted(
        app.post_raw("bgr", b2, &[h("Content-Signature", B64.encode(raw))])
            .await,
        "rsa crate",
    )
    .await;

    let b3 = body("ev-rsa-3", "pay-rsa");
    let mut flipped = B64.decode(&sig).unwrap();
    flipped[10] ^= 0x01;
    for (what, hs) in [
        // A valid signature of another body.
        ("other body", vec![h("Content-Signature", sig.clone())]),
        (
            "flipped bit",
            vec![h("Content-Signature", B64.encode(&flipped))],
        ),
        (
            "truncated",
            vec![h("Content-Signature", sig[..40].to_string())],
        ),
        ("not base64", vec![h("Content-Signature", "!!!")]),
        ("missing", vec![]),
    ] {
        rejected(app.post_raw("bgr", b3.clone(), &hs).await, what).await;
    }
    assert_eq!(stored_requests(&app).await, 2);
}

// ------------------------------------------------------------ adyen-hmac

const ADYEN_KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";

fn adyen_item(psp: &str, reference: &str, value: i64) -> Value {
    let key = hex::decode(ADYEN_KEY).unwrap();
    let signing = format!("{psp}::TestMerchant:{reference}:{value}:EUR:AUTHORISATION:true");
    let sig = B64.encode(sha256(&key, &[signing.as_bytes()]));
    json!({"NotificationRequestItem": {
        "pspReference": psp,
        "merchantAccountCode": "TestMerchant",
        "merchantReference": reference,
        "amount": {"value": value, "currency": "EUR"},
        "eventCode": "AUTHORISATION",
        "success": "true",
        "eventDate": "2024-01-02T03:04:05+01:00",
        "additionalData": {"hmacSignature": sig}
    }})
}

#[tokio::test]
async fn adyen_accepts_a_signed_batch_and_rejects_it_whole_for_one_bad_item() {
    let app = spawn_with(
        "",
        &config(&format!(
            r#"
[[providers]]
id = "ady"
preset = "adyen"
merchant_id = "shop-1"
[providers.auth]
secrets = ["{ADYEN_KEY}"]
"#
        )),
    )
    .await;

    let batch = json!({"live": "false", "notificationItems": [
        adyen_item("PSP0001", "order-1", 1130),
        adyen_item("PSP0002", "order-2", 2500),
    ]});
    let r = app
        .post_raw("ady", serde_json::to_vec(&batch).unwrap(), &[])
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let id = accepted(r, "batch").await;
    assert_eq!(app.wait_done(&id).await["status"], "completed");
    let (code, v) = app.get_json(&format!("/v1/async/result/{id}")).await;
    assert_eq!(code, 200, "{v}");
    let mut payments: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["status"], "authorized", "{v}");
            assert_eq!(e["outcome"], "applied", "{v}");
            e["payment_id"].as_str().unwrap()
        })
        .collect();
    payments.sort_unstable();
    assert_eq!(payments, ["order-1", "order-2"]);

    // One item's signature is wrong (signed over another amount): the whole batch is refused.
    let mut bad_second = adyen_item("PSP0004", "order-4", 999);
    let good_sig = adyen_item("PSP0004", "order-4", 1000)["NotificationRequestItem"]
        ["additionalData"]["hmacSignature"]
        .clone();
    bad_second["NotificationRequestItem"]["additionalData"]["hmacSignature"] = good_sig;
    let bad = json!({"live": "false", "notificationItems": [
        adyen_item("PSP0003", "order-3", 500),
        bad_second,
    ]});
    rejected(
        app.post_raw("ady", serde_json::to_vec(&bad).unwrap(), &[])
            .await,
        "one bad item",
    )
    .await;
    // The same batch with the bad item's signature removed is refused too.
    let mut unsigned = bad.clone();
    unsigned["notificationItems"][1]["NotificationRequestItem"]["additionalData"] = json!({});
    rejected(
        app.post_raw("ady", serde_json::to_vec(&unsigned).unwrap(), &[])
            .await,
        "one unsigned item",
    )
    .await;
    // A batch signed with another key.
    let mut forged = batch.clone();
    forged["notificationItems"][0]["NotificationRequestItem"]["pspReference"] = json!("PSP9999");
    rejected(
        app.post_raw("ady", serde_json::to_vec(&forged).unwrap(), &[])
            .await,
        "edited after signing",
    )
    .await;

    // Nothing of the refused batches was stored or applied.
    assert_eq!(stored_requests(&app).await, 1);
    let (code, _) = app
        .get_auth("/v1/payments/order-3?merchant_id=shop-1", ADMIN)
        .await;
    assert_eq!(code, 404, "order-3 came only in a refused batch");
    let (code, q) = app.get_auth("/v1/admin/quarantine", ADMIN).await;
    assert_eq!(code, 200);
    assert_eq!(q["data"].as_array().unwrap().len(), 3);
}

// ------------------------------------------------------------ paymentsos

#[tokio::test]
async fn paymentsos_signs_event_type_and_body_fields() {
    let app = spawn_with(
        "",
        &config(
            r#"
[[providers]]
id = "pos"
preset = "paymentsos"
merchant_id = "shop-1"
[providers.auth]
secrets = ["pos-private-key"]
"#,
        ),
    )
    .await;
    let body_for = |event: &str| {
        serde_json::to_vec(&json!({
            "id": event, "created": "2024-01-02T03:04:05.678Z",
            "account_id": "acc-1", "app_id": "com.shop.app", "payment_id": "pay-pos",
            "data": {
                "id": "auth-7", "amount": 1250, "currency": "EUR", "reconciliation_id": "rec-3",
                "result": {"status": "Succeed", "category": null},
                "provider_data": {"response_code": "00"}
            }
        }))
        .unwrap()
    };
    // event-type, id, account_id, payment_id, created, app_id, data.id,
    // result.status, result.category (null), result.sub_category (missing),
    // response_code, reconciliation_id, amount, currency.
    let signature = |key: &str, event_type: &str, event: &str| {
        let s = format!(
            "{event_type},{event},acc-1,pay-pos,2024-01-02T03:04:05.678Z,com.shop.app,auth-7,\
             Succeed,,,00,rec-3,1250,EUR"
        );
        format!(
            "sig1={}",
            hex::encode(sha256(key.as_bytes(), &[s.as_bytes()]))
        )
    };
    let et = "payment.authorization.create";

    let b = body_for("evt-pos-1");
    let id = accepted(
        app.post_raw(
            "pos",
            b,
            &[
                h("event-type", et),
                h("signature", signature("pos-private-key", et, "evt-pos-1")),
            ],
        )
        .await,
        "valid",
    )
    .await;
    assert_eq!(app.wait_done(&id).await["status"], "completed");
    let (code, v) = app.get_json(&format!("/v1/async/result/{id}")).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["events"][0]["payment_id"], "pay-pos", "{v}");
    assert_eq!(v["events"][0]["status"], "authorized", "{v}");

    let b = body_for("evt-pos-2");
    let hs = app.sign("pos", &b, &[("event-type", et)]);
    accepted(app.post_raw("pos", b, &hs).await, "signer").await;

    let b = body_for("evt-pos-3");
    let good = signature("pos-private-key", et, "evt-pos-3");
    for (what, hs) in [
        (
            "wrong key",
            vec![
                h("event-type", et),
                h("signature", signature("other-key", et, "evt-pos-3")),
            ],
        ),
        (
            "event type swapped",
            vec![
                h("event-type", "payment.capture.create"),
                h("signature", good.clone()),
            ],
        ),
        ("event type dropped", vec![h("signature", good.clone())]),
        (
            "no sig1= prefix",
            vec![
                h("event-type", et),
                h("signature", good.trim_start_matches("sig1=").to_string()),
            ],
        ),
        ("no signature", vec![h("event-type", et)]),
    ] {
        rejected(app.post_raw("pos", b.clone(), &hs).await, what).await;
    }
    // A signed field changed after signing.
    let mut tampered: Value = serde_json::from_slice(&b).unwrap();
    tampered["data"]["amount"] = json!(1);
    rejected(
        app.post_raw(
            "pos",
            serde_json::to_vec(&tampered).unwrap(),
            &[h("event-type", et), h("signature", good)],
        )
        .await,
        "amount changed",
    )
    .await;
    assert_eq!(stored_requests(&app).await, 2);
}
