//! `GET /openapi.json` stays in sync with what the app routes.
//!
//! Two independent checks, so that neither a hand-kept list nor one
//! heuristic decides:
//!
//! 1. **The source.** `src/http/mod.rs` is read with `include_str!`; every
//!    `web::resource("<path>")` and the `.route(web::<method>()` calls up to
//!    the next resource give the routed (method, path) set, which must equal
//!    the documented one exactly (a route added without a
//!    `#[utoipa::path]`, or a documented operation that is not routed, fails
//!    here, naming it).
//! 2. **The running app.** For every documented path (its `{params}` filled
//!    with a placeholder) and every method of GET, POST, PUT, PATCH, DELETE:
//!    a documented method must reach a handler (not the app's 404
//!    `no such route`, not 405); any other method must be 405 with an
//!    `Allow` that lists exactly the documented methods. This catches a
//!    route that the source parse misread, and a path whose template differs
//!    from the route's.
//!
//! Schema conformance of the responses is schemathesis's job (`scripts/test`).

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

const ROUTES_SRC: &str = include_str!("../../src/http/mod.rs");
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

type Ops = BTreeMap<String, BTreeSet<String>>;

/// (path → methods) as `routes()` declares them.
fn routed() -> Ops {
    let mut ops = Ops::new();
    for chunk in ROUTES_SRC.split("web::resource(\"").skip(1) {
        let path = &chunk[..chunk.find('"').expect("a closing quote")];
        let methods = chunk
            .split(".route(web::")
            .skip(1)
            .map(|r| r[..r.find("()").expect("web::<method>()")].to_string())
            .collect();
        assert!(
            ops.insert(path.to_string(), methods).is_none(),
            "{path} is two resources"
        );
    }
    ops
}

fn documented(doc: &Value) -> Ops {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(path, item)| {
            let methods = METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| m.to_string())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

async fn document(app: &TestApp) -> Value {
    let res = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    res.json().await.unwrap()
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_of_the_source() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let routed = routed();
    assert!(routed.len() > 20, "the source parse found {routed:?}");
    let documented = documented(&doc);
    for (path, methods) in &routed {
        assert_eq!(
            documented.get(path),
            Some(methods),
            "{path}: routed {methods:?}, documented {:?}",
            documented.get(path)
        );
    }
    for (path, methods) in &documented {
        assert!(
            routed.contains_key(path),
            "{path} ({methods:?}) is documented but not routed"
        );
    }
    // The hand-check: as many resources as documented paths, as many routes
    // as documented operations.
    assert_eq!(
        ROUTES_SRC.matches("web::resource(").count(),
        documented.len()
    );
    assert_eq!(
        ROUTES_SRC.matches(".route(web::").count(),
        documented.values().map(BTreeSet::len).sum::<usize>()
    );
}

#[tokio::test]
async fn every_operation_has_a_unique_id_and_documents_its_errors() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let id = op["operationId"].as_str().expect("an operationId");
            assert!(ids.insert(id.to_string()), "{id} twice");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2') || s == "303"),
                "{m} {path}: no success response"
            );
            if op.get("security").is_some() {
                assert!(responses.contains_key("401"), "{m} {path}: no 401");
            }
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // Every response link names an operation that exists.
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let Some(responses) = op.get("responses").and_then(Value::as_object) else {
                continue;
            };
            for link in responses
                .values()
                .filter_map(|r| r.get("links").and_then(Value::as_object))
                .flat_map(|l| l.values())
            {
                let target = link["operationId"].as_str().expect("operationId");
                assert!(ids.contains(target), "a link to {target}");
            }
        }
    }
}

fn fill(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        let j = rest[i..].find('}').unwrap() + i;
        out.push_str(&rest[..i]);
        out.push_str("probe-0");
        rest = &rest[j + 1..];
    }
    out + rest
}

fn allow_set(h: &reqwest::header::HeaderMap) -> BTreeSet<String> {
    h.get("allow")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
        .split(',')
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty())
        .collect()
}

#[tokio::test]
async fn every_documented_operation_is_served_and_other_methods_are_405() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    // The probe tells "no such route" apart from a handler's own 404.
    let res = app
        .client
        .get(format!("{}/v1/no-such-route", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["message"], "no such route");

    for (template, methods) in documented(&doc) {
        let path = fill(&template);
        for m in METHODS {
            let method = Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap();
            let res = app
                .client
                .request(method, format!("{}{path}", app.address))
                .send()
                .await
                .unwrap();
            let status = res.status();
            let headers = res.headers().clone();
            let text = res.text().await.unwrap();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if methods.contains(m) {
                assert!(
                    !(status == 404 && body["error"]["message"] == "no such route"),
                    "{m} {template} is documented but not routed"
                );
                assert_ne!(status, 405, "{m} {template} is documented but 405");
            } else {
                assert_eq!(status, 405, "{m} {template}: not documented, yet {status}");
                assert_eq!(allow_set(&headers), methods, "{m} {template}: Allow");
                assert_eq!(body["error"]["code"], "method_not_allowed");
            }
        }
    }
}
