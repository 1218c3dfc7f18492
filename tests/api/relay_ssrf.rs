//! The SSRF guard (SPEC §6, `delivery.allow_private_targets = false`,
//! `https_only`): endpoint URLs that are or resolve to loopback, private,
//! link-local, unique-local, multicast or unspecified addresses (IPv4-mapped
//! IPv6 too) are refused with a 422 naming the reason, on create and on
//! PATCH; and a config endpoint (not vetted at load) pointing at loopback
//! is refused at delivery time: the sink receives nothing and the
//! delivery's last_error says why.

use serde_json::json;

use crate::helpers::*;
use crate::relay_helpers::*;
use crate::sink::Sink;

/// A public address literal (no DNS needed to vet it).
const PUBLIC: &str = "https://93.184.215.14/hooks";

fn guarded(extra: &str, shop1: &[String]) -> String {
    relay_config(
        &format!("allow_private_targets = false\n{extra}"),
        shop1,
        &[],
    )
}

/// Does the message name one of these reasons?
fn names(msg: &str, reasons: &[&str]) -> bool {
    reasons.iter().any(|r| msg.contains(r))
}

const LINK_LOCAL: &[&str] = &["link-local", "link local", "link_local"];
const UNIQUE_LOCAL: &[&str] = &["unique-local", "unique local", "unique_local", "private"];

fn refused_urls(sink: &Sink) -> Vec<(String, &'static [&'static str])> {
    vec![
        ("http://127.0.0.1:9/x".into(), &["loopback"][..]),
        ("http://[::1]/".into(), &["loopback"][..]),
        ("http://[::ffff:127.0.0.1]/".into(), &["loopback"][..]),
        (sink.localhost_url("/x"), &["loopback"][..]),
        ("http://169.254.169.254/latest/meta-data".into(), LINK_LOCAL),
        ("http://[fe80::1]/".into(), LINK_LOCAL),
        ("http://10.0.0.1/".into(), &["private"][..]),
        ("http://192.168.1.10/".into(), &["private"][..]),
        ("http://172.16.0.1/".into(), &["private"][..]),
        ("http://[fd00::1]/".into(), UNIQUE_LOCAL),
        ("http://0.0.0.0/".into(), &["unspecified"][..]),
        ("http://224.0.0.1/".into(), &["multicast"][..]),
    ]
}

#[tokio::test]
async fn creating_an_endpoint_at_a_private_address_is_refused_with_the_reason() {
    let sink = Sink::start().await;
    let app = spawn_with("", &guarded("", &[])).await;
    for (url, reasons) in refused_urls(&sink) {
        let (code, v) = call(
            &app,
            "POST",
            "/v1/endpoints",
            SHOP_KEY,
            Some(json!({"url": url})),
        )
        .await;
        assert_eq!(code, 422, "{url}: {v}");
        assert_eq!(error_code(&v), "invalid_request", "{url}: {v}");
        assert!(
            names(&message(&v), reasons),
            "{url}: message should name {reasons:?}: {v}"
        );
    }
    let (_, list) = app.get_auth("/v1/endpoints", SHOP_KEY).await;
    assert_eq!(list["data"], json!([]), "nothing was created: {list}");
    create_endpoint(&app, SHOP_KEY, json!({"url": PUBLIC})).await;
}

#[tokio::test]
async fn patching_an_endpoint_to_a_private_address_is_refused() {
    let sink = Sink::start().await;
    let app = spawn_with("", &guarded("", &[])).await;
    let v = create_endpoint(&app, SHOP_KEY, json!({"url": PUBLIC})).await;
    let path = format!("/v1/endpoints/{}", s(&v["id"]));
    for (url, reasons) in refused_urls(&sink) {
        let (code, v) = call(&app, "PATCH", &path, SHOP_KEY, Some(json!({"url": url}))).await;
        assert_eq!(code, 422, "{url}: {v}");
        assert_eq!(error_code(&v), "invalid_request", "{url}: {v}");
        assert!(
            names(&message(&v), reasons),
            "{url}: message should name {reasons:?}: {v}"
        );
    }
    let (_, v) = app.get_auth(&path, SHOP_KEY).await;
    assert_eq!(v["url"], PUBLIC, "unchanged: {v}");
}

#[tokio::test]
async fn https_only_refuses_plain_http_endpoints() {
    let app = spawn_with("", &guarded("https_only = true\n", &[])).await;
    let (code, v) = call(
        &app,
        "POST",
        "/v1/endpoints",
        SHOP_KEY,
        Some(json!({"url": "http://93.184.215.14/hooks"})),
    )
    .await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(error_code(&v), "invalid_request");
    assert!(message(&v).contains("https"), "{v}");
    let v = create_endpoint(&app, SHOP_KEY, json!({"url": PUBLIC})).await;
    let (code, v) = call(
        &app,
        "PATCH",
        &format!("/v1/endpoints/{}", s(&v["id"])),
        SHOP_KEY,
        Some(json!({"url": "http://93.184.215.14/other"})),
    )
    .await;
    assert_eq!(code, 422, "{v}");
    assert!(message(&v).contains("https"), "{v}");
}

/// Config endpoints are not vetted at load; the guard refuses them when
/// it connects, by name (`localhost`) and by address literal alike.
#[tokio::test]
async fn a_config_endpoint_on_loopback_is_refused_at_delivery() {
    let sink = Sink::start().await;
    let body = guarded(
        "",
        &[
            endpoint_toml("ep_name", &sink.localhost_url("/by-name"), SECRET_1, ""),
            endpoint_toml("ep_lit", &sink.url("/by-literal"), SECRET_2, ""),
        ],
    );
    let app = spawn_with("", &body).await;
    post_status(&app, "ssrf_1", "pay_ssrf", "Pending").await;
    for ep in ["ep_name", "ep_lit"] {
        let d = wait_delivery(
            &app,
            SHOP_KEY,
            &format!("endpoint_id={ep}"),
            "refused",
            |d| d["last_error"].is_string(),
        )
        .await;
        let err = d["last_error"].as_str().unwrap().to_lowercase();
        assert!(err.contains("refus"), "{ep}: {d}");
        assert!(err.contains("loopback"), "{ep}: {d}");
        assert!(d["last_status"].is_null(), "{ep}: {d}");
        assert_ne!(d["state"], "succeeded", "{d}");
    }
    assert_quiet(&sink, "/by-name", 0).await;
    assert!(sink.all_received().is_empty(), "{:?}", sink.all_received());
}
