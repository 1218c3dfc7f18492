//! Provider auth schemes over real HTTP, each with accept and reject cases:
//! here `hmac`, `basic` and `none`, and the helpers that
//! `schemes_providers.rs` (Stripe, Standard Webhooks, RSA-SHA256, Adyen,
//! PaymentsOS) shares. Signatures are computed with the hmac/sha2/rsa crates
//! directly (not only with the library's signer), so a bug shared by the
//! signer and the verifier cannot hide.

use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde_json::Value;

use crate::helpers::*;

pub(crate) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `[admin]` first, then the given providers, then the merchant they name.
pub(crate) fn config(providers: &str) -> String {
    format!(
        r#"
[admin]
tokens = ["test-admin-token"]
{providers}
[[merchants]]
id = "shop-1"
api_keys = ["shop-1-key"]
"#
    )
}

fn mac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = <M as KeyInit>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

pub(crate) fn sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    mac::<Hmac<sha2::Sha256>>(key, parts)
}

pub(crate) fn h(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

pub(crate) fn body(event: &str, payment: &str) -> Vec<u8> {
    serde_json::to_vec(&generic(event, payment, "succeeded")).unwrap()
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The request was accepted (2xx); returns its request id.
pub(crate) async fn accepted(r: reqwest::Response, what: &str) -> String {
    let code = r.status().as_u16();
    let header_id = r
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let text = r.text().await.unwrap();
    assert!(
        (200..300).contains(&code),
        "{what}: expected acceptance, got {code} {text}"
    );
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v["request_id"].is_string() => v["request_id"].as_str().unwrap().to_string(),
        _ => header_id.expect("fixed acks carry X-Request-Id"),
    }
}

/// The request was refused with 401 `invalid_signature`.
pub(crate) async fn rejected(r: reqwest::Response, what: &str) {
    let code = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(code, 401, "{what}: {v}");
    assert_eq!(error_code(&v), "invalid_signature", "{what}: {v}");
    assert!(
        !v["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{what}: {v}"
    );
}

/// The task completed and applied an event for `payment`.
pub(crate) async fn applied(app: &TestApp, id: &str, payment: &str) {
    assert_eq!(app.wait_done(id).await["status"], "completed");
    let (code, v) = app.get_json(&format!("/v1/async/result/{id}")).await;
    assert_eq!(code, 200, "{v}");
    let events = v["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["payment_id"] == payment && e["outcome"] == "applied"),
        "{v}"
    );
}

pub(crate) async fn stored_requests(app: &TestApp) -> usize {
    let (code, v) = app.get_auth("/v1/admin/requests", ADMIN).await;
    assert_eq!(code, 200);
    v["data"].as_array().unwrap().len()
}

// ------------------------------------------------------------------ hmac

#[tokio::test]
async fn hmac_every_algorithm_and_encoding_accepts_right_and_rejects_wrong() {
    let algs = ["sha1", "sha256", "sha512"];
    let encs = ["hex", "base64"];
    let mut providers = String::new();
    for a in algs {
        for e in encs {
            providers.push_str(&format!(
                "[[providers]]\nid = \"h-{a}-{e}\"\nmerchant_id = \"shop-1\"\n[providers.auth]\n\
                 scheme = \"hmac\"\nalgorithm = \"{a}\"\nencoding = \"{e}\"\nheader = \"X-Sig\"\n\
                 secrets = [\"key-{a}-{e}\"]\n"
            ));
        }
    }
    let app = spawn_with("", &config(&providers)).await;

    let digest = |a: &str, key: &[u8], b: &[u8]| match a {
        "sha1" => mac::<Hmac<sha1::Sha1>>(key, &[b]),
        "sha256" => mac::<Hmac<sha2::Sha256>>(key, &[b]),
        "sha512" => mac::<Hmac<sha2::Sha512>>(key, &[b]),
        _ => unreachable!(),
    };
    let encode = |e: &str, d: &[u8]| match e {
        "hex" => hex::encode(d),
        _ => B64.encode(d),
    };

    for a in algs {
        for e in encs {
            let p = format!("h-{a}-{e}");
            let key = format!("key-{a}-{e}");
            // Hand-computed signature.
            let b = body(&format!("ev-{p}-1"), &format!("pay-{p}"));
            let sig = encode(e, &digest(a, key.as_bytes(), &b));
            let id = accepted(app.post_raw(&p, b, &[h("X-Sig", sig)]).await, &p).await;
            applied(&app, &id, &format!("pay-{p}")).await;

            // The library's signer agrees.
            let b = body(&format!("ev-{p}-2"), &format!("pay-{p}"));
            let hs = app.sign(&p, &b, &[]);
            accepted(app.post_raw(&p, b, &hs).await, &p).await;

            let b = body(&format!("ev-{p}-3"), &format!("pay-{p}"));
            // Wrong key.
            let sig = encode(e, &digest(a, b"not-the-key", &b));
            rejected(
                app.post_raw(&p, b.clone(), &[h("X-Sig", sig)]).await,
                &format!("{p} wrong key"),
            )
            .await;
            // Right key, wrong algorithm.
            let other = if a == "sha256" { "sha512" } else { "sha256" };
            let sig = encode(e, &digest(other, key.as_bytes(), &b));
            rejected(
                app.post_raw(&p, b.clone(), &[h("X-Sig", sig)]).await,
                &format!("{p} signed with {other}"),
            )
            .await;
            // Right signature, other encoding.
            let other_enc = if e == "hex" { "base64" } else { "hex" };
            let sig = encode(other_enc, &digest(a, key.as_bytes(), &b));
            rejected(
                app.post_raw(&p, b.clone(), &[h("X-Sig", sig)]).await,
                &format!("{p} encoded as {other_enc}"),
            )
            .await;
            // Right signature over a different body.
            let sig = encode(e, &digest(a, key.as_bytes(), b"{}"));
            rejected(
                app.post_raw(&p, b.clone(), &[h("X-Sig", sig)]).await,
                &format!("{p} other body"),
            )
            .await;
            // Missing header.
            rejected(app.post_raw(&p, b, &[]).await, &format!("{p} unsigned")).await;
        }
    }
    // Only the 12 good requests were stored.
    assert_eq!(stored_requests(&app).await, 12);
}

#[tokio::test]
async fn hmac_with_a_prefix_needs_the_prefix() {
    let app = spawn_with(
        "",
        &config(
            r#"
[[providers]]
id = "gh"
merchant_id = "shop-1"
[providers.auth]
scheme = "hmac"
header = "X-Hub-Signature-256"
prefix = "sha256="
secrets = ["gh-secret"]
"#,
        ),
    )
    .await;
    let b = body("ev-gh-1", "pay-gh");
    let sig = hex::encode(sha256(b"gh-secret", &[&b]));
    let id = accepted(
        app.post_raw(
            "gh",
            b,
            &[h("X-Hub-Signature-256", format!("sha256={sig}"))],
        )
        .await,
        "prefixed",
    )
    .await;
    applied(&app, &id, "pay-gh").await;

    let b = body("ev-gh-2", "pay-gh");
    let hs = app.sign("gh", &b, &[]);
    assert!(hs[0].1.starts_with("sha256="), "{hs:?}");
    accepted(app.post_raw("gh", b, &hs).await, "signer").await;

    let b = body("ev-gh-3", "pay-gh");
    let sig = hex::encode(sha256(b"gh-secret", &[&b]));
    for (what, value) in [
        ("no prefix", sig.clone()),
        ("other prefix", format!("sha1={sig}")),
        ("prefix, wrong key", {
            format!("sha256={}", hex::encode(sha256(b"wrong", &[&b])))
        }),
        ("prefix only", "sha256=".to_string()),
    ] {
        rejected(
            app.post_raw("gh", b.clone(), &[h("X-Hub-Signature-256", value)])
                .await,
            what,
        )
        .await;
    }
    assert_eq!(stored_requests(&app).await, 2);
}

// ----------------------------------------------------------------- basic

#[tokio::test]
async fn basic_checks_username_and_password() {
    let app = spawn_with(
        "",
        &config(
            r#"
[[providers]]
id = "bg"
merchant_id = "shop-1"
[providers.auth]
scheme = "basic"
username = "361"
password = "bg-secret-key"
"#,
        ),
    )
    .await;
    let basic = |u: &str, p: &str| {
        h(
            "Authorization",
            format!("Basic {}", B64.encode(format!("{u}:{p}"))),
        )
    };

    let b = body("ev-bg-1", "pay-bg");
    let id = accepted(
        app.post_raw("bg", b, &[basic("361", "bg-secret-key")])
            .await,
        "right",
    )
    .await;
    applied(&app, &id, "pay-bg").await;
    // Scheme name is case-insensitive.
    let b = body("ev-bg-2", "pay-bg");
    let creds = B64.encode("361:bg-secret-key");
    accepted(
        app.post_raw("bg", b, &[h("Authorization", format!("basic {creds}"))])
            .await,
        "lowercase scheme",
    )
    .await;

    let b = body("ev-bg-3", "pay-bg");
    for (what, hs) in [
        ("wrong password", vec![basic("361", "bg-secret-kez")]),
        ("wrong user", vec![basic("362", "bg-secret-key")]),
        ("password prefix", vec![basic("361", "bg-secret")]),
        ("empty password", vec![basic("361", "")]),
        ("missing header", vec![]),
        (
            "bearer instead",
            vec![h("Authorization", "Bearer bg-secret-key")],
        ),
        ("not base64", vec![h("Authorization", "Basic %%%")]),
    ] {
        rejected(app.post_raw("bg", b.clone(), &hs).await, what).await;
    }
    assert_eq!(stored_requests(&app).await, 2);
}

// ------------------------------------------------------------------ none

#[tokio::test]
async fn none_is_accepted_only_from_allowed_addresses() {
    let app = spawn_with(
        "",
        &config(
            r#"
[[providers]]
id = "open-local"
merchant_id = "shop-1"
allowed_ips = ["127.0.0.1"]
[providers.auth]
scheme = "none"

[[providers]]
id = "open-elsewhere"
merchant_id = "shop-1"
allowed_ips = ["10.0.0.0/8", "2001:db8::/32"]
[providers.auth]
scheme = "none"
"#,
        ),
    )
    .await;
    let id = accepted(
        app.post_raw("open-local", body("ev-none-1", "pay-none"), &[])
            .await,
        "loopback allowed",
    )
    .await;
    applied(&app, &id, "pay-none").await;

    let r = app
        .post_raw("open-elsewhere", body("ev-none-2", "pay-none-2"), &[])
        .await;
    assert_eq!(r.status().as_u16(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(error_code(&v), "forbidden");
    assert_eq!(stored_requests(&app).await, 1);
}
