//! A wrong method on a known route is 405 with `Allow` (SPEC §8), in the one
//! JSON error shape; an unknown route stays 404.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

/// Every route of `src/http/mod.rs::routes`, a concrete path, and what it allows.
const ROUTES: &[(&str, &[&str])] = &[
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/v1/ipn/acme", &["POST"]),
    (
        "/v1/async/status/8a0d6f0c-3b7e-4f43-9a67-0a4d1d6f5a11",
        &["GET"],
    ),
    (
        "/v1/async/result/8a0d6f0c-3b7e-4f43-9a67-0a4d1d6f5a11",
        &["GET"],
    ),
    ("/v1/admin/requests", &["GET"]),
    (
        "/v1/admin/requests/8a0d6f0c-3b7e-4f43-9a67-0a4d1d6f5a11/reprocess",
        &["POST"],
    ),
    ("/v1/admin/quarantine", &["GET"]),
    ("/v1/payments", &["POST"]),
    ("/v1/payments/pay-1", &["GET"]),
    ("/v1/events", &["GET"]),
    ("/v1/return/shop-1/pay-1", &["GET", "POST"]),
    ("/v1/return/pay-1", &["GET", "POST"]),
];

fn allow_set(h: &reqwest::header::HeaderMap) -> Vec<String> {
    let mut v: Vec<String> = h
        .get("allow")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
        .split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_wrong_method_on_every_known_route_is_405_with_allow() {
    let app = spawn_app().await;
    for (path, allowed) in ROUTES {
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ] {
            if allowed.contains(&method.as_str()) {
                continue;
            }
            let r = app
                .client
                .request(method.clone(), app.url(path))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let allow = allow_set(r.headers());
            let v: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(status, 405, "{method} {path}: {v}");
            let mut want: Vec<String> = allowed.iter().map(|m| m.to_string()).collect();
            want.sort();
            assert_eq!(allow, want, "{method} {path}");
            assert_eq!(error_code(&v), "method_not_allowed", "{method} {path}: {v}");
            assert!(v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
        }
    }
}

#[tokio::test]
async fn the_examples_and_unknown_routes() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/v1/ipn/acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = app
        .client
        .delete(app.url("/v1/payments"))
        .bearer_auth(SHOP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    // The right method still works, and an unknown path is still 404.
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    for (m, path) in [(Method::GET, "/no/such/route"), (Method::DELETE, "/v1/ipn")] {
        let r = app.client.request(m, app.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
        assert!(r.headers().get("allow").is_none());
        let v: Value = r.json().await.unwrap();
        assert_eq!(error_code(&v), "not_found");
    }
}
