//! Webhook endpoints as a merchant manages them (SPEC §5, §2
//! `[[merchants.endpoints]]`): create / list / read / update / delete
//! through the API, the secret shown on create and rotate only, config
//! endpoints read-only, API endpoints surviving a restart, requests that
//! are refused with the right status and error code (never a 5xx), and
//! secret rotation signing with both secrets for 24 h.

use std::time::Duration;

use ipn_relay::clock::ManualClock;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::relay_helpers::*;
use crate::sink::Sink;

/// A `whsec_` secret that decodes to 24 bytes.
fn assert_secret(v: &Value) {
    use base64::Engine;
    let s = v.as_str().unwrap_or_else(|| panic!("no secret: {v}"));
    let b64 = s.strip_prefix("whsec_").unwrap_or_else(|| panic!("{s}"));
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(key.len(), 24, "{s}");
}

fn config_with_one(sink: &Sink) -> String {
    relay_config(
        "",
        &[endpoint_toml(
            "ep_cfg",
            &sink.url("/cfg"),
            SECRET_1,
            "description = \"orders\"\n",
        )],
        &[],
    )
}

#[tokio::test]
async fn an_endpoint_is_created_listed_read_updated_and_deleted() {
    let sink = Sink::start().await;
    let app = spawn_with("", &config_with_one(&sink)).await;

    let v = create_endpoint(
        &app,
        SHOP_KEY,
        json!({"url": sink.url("/api"), "events": ["payment.succeeded"], "description": "crm"}),
    )
    .await;
    let id = s(&v["id"]);
    assert!(id.starts_with("ep_"), "{v}");
    assert_secret(&v["secret"]);
    assert_eq!(v["url"], sink.url("/api"));
    assert_eq!(v["events"], json!(["payment.succeeded"]));
    assert_eq!(v["description"], "crm");
    assert_eq!(v["ordering"], "fifo", "fifo is the default");
    assert_eq!(v["disabled"], false);
    assert_eq!(v["merchant_id"], "shop-1");
    assert_eq!(v["source"], "api");
    assert!(
        v["created_at"].is_string() && v["updated_at"].is_string(),
        "{v}"
    );

    // Listed next to the config endpoint; no secret anywhere after create.
    let (code, list) = app.get_auth("/v1/endpoints", SHOP_KEY).await;
    assert_eq!(code, 200, "{list}");
    let data = list["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(
        ids.contains(&"ep_cfg") && ids.contains(&id.as_str()),
        "{list}"
    );
    assert!(
        !list.to_string().contains("whsec_"),
        "a secret in the list: {list}"
    );
    let cfg = data.iter().find(|e| e["id"] == "ep_cfg").unwrap();
    assert_eq!(cfg["source"], "config");
    assert_eq!(cfg["url"], sink.url("/cfg"));
    assert_eq!(cfg["description"], "orders");
    let got = get_endpoint(&app, SHOP_KEY, &id).await;
    assert!(got.get("secret").is_none(), "{got}");
    assert_eq!(got["url"], sink.url("/api"));

    // PATCH changes what it names and keeps the rest.
    let (code, p) = call(
        &app,
        "PATCH",
        &format!("/v1/endpoints/{id}"),
        SHOP_KEY,
        Some(json!({"events": ["payment.*"], "description": "crm v2", "ordering": "latest"})),
    )
    .await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["events"], json!(["payment.*"]));
    assert_eq!(p["description"], "crm v2");
    assert_eq!(p["ordering"], "latest");
    assert_eq!(p["url"], sink.url("/api"));
    assert!(p.get("secret").is_none(), "{p}");
    assert_eq!(
        get_endpoint(&app, SHOP_KEY, &id).await["description"],
        "crm v2"
    );

    // DELETE: 204, then gone.
    let (code, _) = call(
        &app,
        "DELETE",
        &format!("/v1/endpoints/{id}"),
        SHOP_KEY,
        None,
    )
    .await;
    assert_eq!(code, 204);
    let (code, v) = app.get_auth(&format!("/v1/endpoints/{id}"), SHOP_KEY).await;
    assert_eq!(code, 404, "{v}");
    assert_eq!(error_code(&v), "not_found");
    let (_, list) = app.get_auth("/v1/endpoints", SHOP_KEY).await;
    assert!(!list.to_string().contains(&id), "{list}");
}

#[tokio::test]
async fn an_api_endpoint_receives_notifications_signed_with_its_secret() {
    let sink = Sink::start().await;
    let app = spawn_with("", &relay_config("", &[], &[])).await;
    let (_, secret) = api_endpoint(&app, SHOP_KEY, &sink.url("/api")).await;
    let evt = post_status(&app, "ae_1", "pay_ae", "Pending").await;
    let got = notified(&sink, "/api", 1, &secret).await;
    assert_eq!(got[0].webhook_id(), evt);
    got[0].refuse(SECRET_1);
}

#[tokio::test]
async fn a_deleted_endpoint_receives_nothing_more() {
    let sink = Sink::start().await;
    let app = spawn_with("", &relay_config("", &[], &[])).await;
    let (id, secret) = api_endpoint(&app, SHOP_KEY, &sink.url("/del")).await;
    post_status(&app, "de_1", "pay_de", "Pending").await;
    notified(&sink, "/del", 1, &secret).await;
    let (code, _) = call(
        &app,
        "DELETE",
        &format!("/v1/endpoints/{id}"),
        SHOP_KEY,
        None,
    )
    .await;
    assert_eq!(code, 204);
    post_status(&app, "de_2", "pay_de", "Succeed").await;
    assert_quiet(&sink, "/del", 1).await;
}

#[tokio::test]
async fn config_endpoints_are_read_only_through_the_api() {
    let sink = Sink::start().await;
    let app = spawn_with("", &config_with_one(&sink)).await;
    let v = get_endpoint(&app, SHOP_KEY, "ep_cfg").await;
    assert_eq!(v["source"], "config");
    assert!(v.get("secret").is_none(), "{v}");
    for (method, path, body) in [
        (
            "PATCH",
            "/v1/endpoints/ep_cfg",
            Some(json!({"description": "x"})),
        ),
        ("DELETE", "/v1/endpoints/ep_cfg", None),
        ("POST", "/v1/endpoints/ep_cfg/rotate-secret", None),
    ] {
        let (code, v) = call(&app, method, path, SHOP_KEY, body).await;
        assert_eq!(code, 409, "{method} {path}: {v}");
        assert_eq!(error_code(&v), "conflict", "{v}");
        assert!(message(&v).contains("config"), "{method} {path}: {v}");
    }
    let v = get_endpoint(&app, SHOP_KEY, "ep_cfg").await;
    assert_eq!(v["description"], "orders", "unchanged");
    // And it still delivers with the configured secret.
    post_status(&app, "ro_1", "pay_ro", "Pending").await;
    notified(&sink, "/cfg", 1, SECRET_1).await;
}

#[tokio::test]
async fn api_endpoints_survive_a_restart_with_their_secret() {
    let sink = Sink::start().await;
    let body = relay_config("", &[], &[]);
    let app = spawn_with("", &body).await;
    let (id, secret) = api_endpoint(&app, SHOP_KEY, &sink.url("/kept")).await;
    let dir = app.stop().await;
    let app = spawn_in(dir, "", &body).await;
    let v = get_endpoint(&app, SHOP_KEY, &id).await;
    assert_eq!(v["url"], sink.url("/kept"));
    assert_eq!(v["source"], "api");
    post_status(&app, "rs_1", "pay_rs", "Pending").await;
    notified(&sink, "/kept", 1, &secret).await;
}

#[tokio::test]
async fn malformed_endpoint_requests_are_400_and_invalid_ones_422() {
    let app = spawn_with("", &relay_config("", &[], &[])).await;
    let ok_url = "http://127.0.0.1:9/hook";
    for raw in [
        "{not json".to_string(),
        json!({"url": ok_url, "colour": "red"}).to_string(),
        json!({"url": 5}).to_string(),
        json!({"url": ok_url, "events": "payment.*"}).to_string(),
        json!({"url": ok_url, "description": ["x"]}).to_string(),
        json!({"url": ok_url, "ordering": 1}).to_string(),
    ] {
        let (code, v) = call_raw(&app, "POST", "/v1/endpoints", SHOP_KEY, &raw).await;
        assert_eq!(code, 400, "{raw}: {v}");
        assert_eq!(error_code(&v), "invalid_request", "{raw}: {v}");
    }
    for body in [
        json!({"url": "not a url"}),
        json!({"url": "ftp://127.0.0.1/hook"}),
        json!({"url": "file:///etc/passwd"}),
        json!({"url": ok_url, "events": ["payment.Succeeded"]}),
        json!({"url": ok_url, "events": ["pay*"]}),
        json!({"url": ok_url, "events": [""]}),
        json!({"url": ok_url, "ordering": "random"}),
    ] {
        let (code, v) = call(&app, "POST", "/v1/endpoints", SHOP_KEY, Some(body.clone())).await;
        assert_eq!(code, 422, "{body}: {v}");
        assert_eq!(error_code(&v), "invalid_request", "{body}: {v}");
        assert!(!message(&v).is_empty(), "{v}");
    }
    for events in [
        json!(["*"]),
        json!(["payment.*"]),
        json!(["payment.succeeded"]),
    ] {
        create_endpoint(&app, SHOP_KEY, json!({"url": ok_url, "events": events})).await;
    }
    // The same checks on PATCH.
    let (id, _) = api_endpoint(&app, SHOP_KEY, ok_url).await;
    let path = format!("/v1/endpoints/{id}");
    let (code, v) = call_raw(&app, "PATCH", &path, SHOP_KEY, "{\"url\":").await;
    assert_eq!((code, error_code(&v)), (400, "invalid_request"), "{v}");
    let (code, v) = call(
        &app,
        "PATCH",
        &path,
        SHOP_KEY,
        Some(json!({"secret": "whsec_x"})),
    )
    .await;
    assert_eq!((code, error_code(&v)), (400, "invalid_request"), "{v}");
    for body in [
        json!({"url": "gopher://127.0.0.1/"}),
        json!({"events": ["nope*"]}),
        json!({"ordering": "lifo"}),
    ] {
        let (code, v) = call(&app, "PATCH", &path, SHOP_KEY, Some(body.clone())).await;
        assert_eq!(
            (code, error_code(&v)),
            (422, "invalid_request"),
            "{body}: {v}"
        );
    }
    assert_eq!(
        get_endpoint(&app, SHOP_KEY, &id).await["url"],
        ok_url,
        "unchanged"
    );
}

#[tokio::test]
async fn an_oversized_body_is_413_and_a_missing_or_unknown_key_401() {
    let app = spawn_with("", &relay_config("", &[], &[])).await;
    let big = json!({"url": "http://127.0.0.1:9/hook", "description": "x".repeat(70 * 1024)});
    let (code, v) = call(&app, "POST", "/v1/endpoints", SHOP_KEY, Some(big)).await;
    assert_eq!(code, 413, "{v}");
    let (_, list) = app.get_auth("/v1/endpoints", SHOP_KEY).await;
    assert_eq!(list["data"], json!([]), "nothing created");

    for (method, path) in [
        ("GET", "/v1/endpoints"),
        ("POST", "/v1/endpoints"),
        ("GET", "/v1/endpoints/ep_x"),
        ("PATCH", "/v1/endpoints/ep_x"),
        ("DELETE", "/v1/endpoints/ep_x"),
        ("POST", "/v1/endpoints/ep_x/rotate-secret"),
        ("POST", "/v1/endpoints/ep_x/replay"),
        ("GET", "/v1/deliveries"),
        ("GET", "/v1/deliveries/dlv_x"),
        ("POST", "/v1/deliveries/dlv_x/retry"),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = app
            .client
            .request(m, app.url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{method} {path} without a key");
        let (code, v) = call(&app, method, path, "no-such-key", Some(json!({}))).await;
        assert_eq!(code, 401, "{method} {path} with an unknown key: {v}");
        assert_eq!(error_code(&v), "unauthorized", "{v}");
    }
}

#[tokio::test]
async fn unknown_endpoint_and_delivery_ids_are_404() {
    let app = spawn_with("", &relay_config("", &[], &[])).await;
    for (method, path, body) in [
        ("GET", "/v1/endpoints/ep_nope", None),
        (
            "PATCH",
            "/v1/endpoints/ep_nope",
            Some(json!({"description": "x"})),
        ),
        ("DELETE", "/v1/endpoints/ep_nope", None),
        ("POST", "/v1/endpoints/ep_nope/rotate-secret", None),
        (
            "POST",
            "/v1/endpoints/ep_nope/replay",
            Some(json!({"since": "2020-01-01T00:00:00Z"})),
        ),
        ("GET", "/v1/deliveries/dlv_nope", None),
        ("POST", "/v1/deliveries/dlv_nope/retry", None),
    ] {
        let (code, v) = call(&app, method, path, SHOP_KEY, body).await;
        assert_eq!(code, 404, "{method} {path}: {v}");
        assert_eq!(error_code(&v), "not_found", "{v}");
    }
}

/// After a rotation every notification carries two signatures, the new
/// secret's and the old one's; 24 h later (service clock) only the new.
#[tokio::test]
async fn a_rotated_secret_signs_alongside_the_old_one_for_24_hours() {
    let sink = Sink::start().await;
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(&relay_config("", &[], &[]), &clock).await;
    let (id, old) = api_endpoint(&app, SHOP_KEY, &sink.url("/rot")).await;
    let (code, v) = call(
        &app,
        "POST",
        &format!("/v1/endpoints/{id}/rotate-secret"),
        SHOP_KEY,
        None,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_secret(&v["secret"]);
    let new = s(&v["secret"]);
    assert_ne!(new, old);
    assert!(get_endpoint(&app, SHOP_KEY, &id)
        .await
        .get("secret")
        .is_none());

    post_status(&app, "rot_1", "pay_rot", "Pending").await;
    let got = notified(&sink, "/rot", 1, &new).await;
    got[0].verify(&old);
    let sigs = got[0].header("webhook-signature").unwrap();
    assert_eq!(sigs.split(' ').count(), 2, "two signatures: {sigs}");

    clock.advance(Duration::from_secs(24 * 3600 + 60));
    post_status(&app, "rot_2", "pay_rot", "Succeed").await;
    let got = notified(&sink, "/rot", 2, &new).await;
    got[1].refuse(&old);
}
