//! Merchant-scoped payments (SPEC §3, §5, §7): a payment is (merchant,
//! `payment_id`); a provider reports only for the merchants in its
//! `merchants`; registrations, reads, the events feed and the 3DS return
//! never cross merchants.

use serde_json::{json, Value};
use url::Url;

use crate::helpers::*;

const KEY_A: &str = "key-a";
const KEY_B: &str = "key-b";
const KEY_C: &str = "key-c";

/// Parses with today's config keys: `prov-a` reports for shop-a, `prov-b`
/// for shop-b (`merchants` defaults to `[merchant_id]`).
const TENANTS: &str = r#"
[admin]
tokens = ["test-admin-token"]

[[providers]]
id = "prov-a"
merchant_id = "shop-a"
[providers.auth]
secrets = ["prov-a-secret"]

[[providers]]
id = "prov-b"
merchant_id = "shop-b"
[providers.auth]
secrets = ["prov-b-secret"]

[[merchants]]
id = "shop-a"
api_keys = ["key-a"]
allowed_return_origins = ["https://a.example.com"]
default_site_url = "https://a.example.com/return"

[[merchants]]
id = "shop-b"
api_keys = ["key-b"]
allowed_return_origins = ["https://b.example.com"]
default_site_url = "https://b.example.com/return"

[[merchants]]
id = "shop-c"
api_keys = ["key-c"]
allowed_return_origins = ["https://c.example.com"]
default_site_url = "https://c.example.com/return"
"#;

/// `multi` reports for shop-a and shop-b, has no default merchant, and
/// reads the merchant from `/data/merchant`. Needs the new `merchants` key.
const MULTI: &str = r#"
[[providers]]
id = "multi"
merchants = ["shop-a", "shop-b"]
[providers.auth]
secrets = ["multi-secret"]
[providers.mapping]
merchant_id = "/data/merchant"
"#;

fn multi_config() -> String {
    format!("{TENANTS}{MULTI}")
}

async fn tenants() -> TestApp {
    spawn_with("", TENANTS).await
}

/// A signed IPN that must complete with one applied event.
async fn applied(app: &TestApp, provider: &str, body: &Value) -> Value {
    let (code, r) = app.ipn_result(provider, body).await;
    assert_eq!(code, 200, "{provider}: {r}");
    assert_eq!(r["events"][0]["outcome"], "applied", "{provider}: {r}");
    r
}

async fn payment(app: &TestApp, key: &str, id: &str) -> (u16, Value) {
    app.get_auth(&format!("/v1/payments/{id}"), key).await
}

/// The feed for `query` as it is now.
async fn events_once(app: &TestApp, key: &str, query: &str) -> Vec<Value> {
    let (code, v) = app.get_auth(&format!("/v1/events?{query}"), key).await;
    assert_eq!(code, 200, "{query}: {v}");
    v["data"].as_array().unwrap().clone()
}

/// The feed for `query`, once it shows something: applied events join it
/// when their write is durable, a few ms after the task result says applied.
async fn events(app: &TestApp, key: &str, query: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let data = events_once(app, key, query).await;
        if !data.is_empty() || std::time::Instant::now() >= deadline {
            return data;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn get_return(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).send().await.unwrap()
}

async fn post_return(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .form(&[("cres", "eyJ0cmFuc1N0YXR1cyI6IlkifQ")])
        .send()
        .await
        .unwrap()
}

/// The 303's Location.
fn redirect(r: &reqwest::Response) -> Url {
    assert_eq!(
        r.status().as_u16(),
        303,
        "expected See Other from {}",
        r.url()
    );
    Url::parse(r.headers()["location"].to_str().unwrap()).expect("absolute Location")
}

/// The small HTML error page: this status, no Location.
async fn error_page(r: reqwest::Response, status: u16) {
    let url = r.url().to_string();
    assert_eq!(r.status().as_u16(), status, "{url}");
    assert!(r.headers().get("location").is_none(), "{url} redirected");
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/html"), "{url}: content-type {ct}");
    assert!(r.text().await.unwrap().to_lowercase().contains("<html"));
}

fn param(u: &Url, name: &str) -> Option<String> {
    u.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn a_registration_by_another_merchant_cannot_squat_a_providers_payment() {
    let app = tenants().await;
    let (code, v) = register(
        &app,
        KEY_B,
        &json!({"payment_id": "pay-1", "merchant_site_url": "https://b.example.com/squat"}),
    )
    .await;
    assert_eq!(code, 201, "{v}");

    // prov-a reports only for shop-a: the IPN is shop-a's payment.
    applied(
        &app,
        "prov-a",
        &ipn(
            "a-1",
            "pay-1",
            "succeeded",
            json!({"authorization_id": "au-a-1", "amount": 4242}),
        ),
    )
    .await;

    let (code, a) = payment(&app, KEY_A, "pay-1").await;
    assert_eq!(code, 200, "shop-a's payment must exist: {a}");
    assert_eq!(a["merchant_id"], "shop-a");
    assert_eq!(a["status"], "succeeded");
    assert_eq!(a["authorization_id"], "au-a-1");
    assert_eq!(a["amount"], 4242);

    let (code, b) = payment(&app, KEY_B, "pay-1").await;
    assert_eq!(code, 200, "shop-b keeps its registration: {b}");
    assert_eq!(b["merchant_id"], "shop-b");
    assert!(b["status"].is_null(), "shop-b sees shop-a's outcome: {b}");
    assert!(b["authorization_id"].is_null(), "{b}");
    assert!(b["amount"].is_null(), "{b}");
    assert_eq!(b["history"].as_array().map(Vec::len), Some(0), "{b}");
    assert!(!b.to_string().contains("au-a-1") && !b.to_string().contains("4242"));

    let loc = redirect(&get_return(&app, "/v1/return/shop-a/pay-1").await);
    assert_eq!(loc.host_str(), Some("a.example.com"), "{loc}");
    assert_eq!(param(&loc, "status").as_deref(), Some("succeeded"));
    assert_eq!(param(&loc, "authorization_id").as_deref(), Some("au-a-1"));
}

#[tokio::test]
async fn the_same_id_in_another_merchant_is_its_own_payment() {
    let app = tenants().await;
    let (code, v) = register(&app, KEY_A, &json!({"payment_id": "pay-2"})).await;
    assert_eq!(code, 201, "{v}");
    let (code, v) = register(
        &app,
        KEY_B,
        &json!({"payment_id": "pay-2", "merchant_site_url": "https://b.example.com/two"}),
    )
    .await;
    assert_eq!(code, 201, "another merchant's id is invisible: {v}");
    assert_eq!(v["merchant_id"], "shop-b");

    for key in [KEY_A, KEY_B] {
        let (code, v) = register(&app, key, &json!({"payment_id": "pay-2"})).await;
        assert_eq!(code, 409, "{key} registering pay-2 again: {v}");
    }
    let (_, a) = payment(&app, KEY_A, "pay-2").await;
    assert_eq!(a["merchant_id"], "shop-a", "{a}");
    assert!(a["merchant_site_url"].is_null(), "shop-b's URL leaked: {a}");
    let (_, b) = payment(&app, KEY_B, "pay-2").await;
    assert_eq!(b["merchant_id"], "shop-b", "{b}");
    assert_eq!(b["merchant_site_url"], "https://b.example.com/two");
}

#[tokio::test]
async fn a_provider_never_changes_a_payment_of_a_merchant_it_does_not_serve() {
    let app = tenants().await;
    register(&app, KEY_A, &json!({"payment_id": "pay-3"})).await;
    applied(&app, "prov-a", &generic("a-3", "pay-3", "succeeded")).await;
    let (_, before) = payment(&app, KEY_A, "pay-3").await;
    assert_eq!(before["sequence"], 1, "{before}");

    // prov-b reports for shop-b only.
    let (code, r) = app
        .ipn_result("prov-b", &generic("b-3", "pay-3", "refunded"))
        .await;

    let (_, after) = payment(&app, KEY_A, "pay-3").await;
    assert_eq!(
        after["status"], "succeeded",
        "prov-b changed shop-a: {after}"
    );
    assert_eq!(after["sequence"], before["sequence"], "{after}");
    assert_eq!(
        after["history"].as_array().unwrap().len(),
        before["history"].as_array().unwrap().len(),
        "{after}"
    );
    assert_eq!(events(&app, KEY_A, "payment_id=pay-3").await.len(), 1);
    if code == 200 {
        let (code, b) = payment(&app, KEY_B, "pay-3").await;
        assert_eq!(code, 200, "the applied IPN is shop-b's: {r} {b}");
        assert_eq!(b["merchant_id"], "shop-b");
        assert_eq!(b["status"], "refunded");
    } else {
        assert_eq!(code, 422, "{r}");
    }
}

#[tokio::test]
async fn an_ipn_naming_a_merchant_the_provider_does_not_serve_is_merchant_not_allowed() {
    // Today's config: prov-a's `merchants` defaults to [shop-a].
    let app = tenants().await;
    let (code, v) = app
        .ipn_result(
            "prov-a",
            &ipn("a-na", "pay-na", "succeeded", json!({"merchant": "shop-b"})),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["code"], "merchant_not_allowed", "{v}");
    let (code, b) = payment(&app, KEY_B, "pay-na").await;
    assert_eq!(code, 404, "{b}");
    assert!(events_once(&app, KEY_B, "").await.is_empty());
}

#[tokio::test]
async fn a_multi_merchant_provider_naming_a_merchant_outside_its_list_is_refused() {
    let app = spawn_with("", &multi_config()).await;
    let (code, v) = register(&app, KEY_C, &json!({"payment_id": "pay-c"})).await;
    assert_eq!(code, 201, "{v}");
    let (code, v) = app
        .ipn_result(
            "multi",
            &ipn("m-c", "pay-c", "succeeded", json!({"merchant": "shop-c"})),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["code"], "merchant_not_allowed", "{v}");

    let (code, c) = payment(&app, KEY_C, "pay-c").await;
    assert_eq!(code, 200, "{c}");
    assert!(c["status"].is_null(), "{c}");
    assert_eq!(c["history"].as_array().map(Vec::len), Some(0), "{c}");
    assert!(events_once(&app, ADMIN, "merchant_id=shop-c")
        .await
        .is_empty());
}

#[tokio::test]
async fn a_multi_merchant_provider_resolves_by_registration_and_refuses_ambiguity() {
    let app = spawn_with("", &multi_config()).await;
    for key in [KEY_A, KEY_B] {
        let (code, v) = register(&app, key, &json!({"payment_id": "pay-4"})).await;
        assert_eq!(code, 201, "{key}: {v}");
    }
    let (code, v) = app
        .ipn_result("multi", &generic("m-4", "pay-4", "succeeded"))
        .await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["code"], "ambiguous_payment", "{v}");
    for key in [KEY_A, KEY_B] {
        let (_, p) = payment(&app, key, "pay-4").await;
        assert!(p["status"].is_null(), "{key}: {p}");
    }
    // Naming the merchant settles it.
    applied(
        &app,
        "multi",
        &ipn("m-4b", "pay-4", "succeeded", json!({"merchant": "shop-b"})),
    )
    .await;
    let (_, b) = payment(&app, KEY_B, "pay-4").await;
    assert_eq!(b["status"], "succeeded", "{b}");
    let (_, a) = payment(&app, KEY_A, "pay-4").await;
    assert!(a["status"].is_null(), "{a}");

    // Only shop-a registered pay-5: it is shop-a's.
    register(&app, KEY_A, &json!({"payment_id": "pay-5"})).await;
    applied(&app, "multi", &generic("m-5", "pay-5", "succeeded")).await;
    let (code, a) = payment(&app, KEY_A, "pay-5").await;
    assert_eq!(code, 200, "{a}");
    assert_eq!(a["status"], "succeeded");
    let (code, _) = payment(&app, KEY_B, "pay-5").await;
    assert_eq!(code, 404);

    // A registration naming another provider does not count for multi.
    let (code, v) = register(
        &app,
        KEY_B,
        &json!({"payment_id": "pay-5b", "provider": "prov-b"}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    register(&app, KEY_A, &json!({"payment_id": "pay-5b"})).await;
    applied(&app, "multi", &generic("m-5b", "pay-5b", "succeeded")).await;
    let (_, a) = payment(&app, KEY_A, "pay-5b").await;
    assert_eq!(a["status"], "succeeded", "{a}");
    let (_, b) = payment(&app, KEY_B, "pay-5b").await;
    assert!(b["status"].is_null(), "{b}");
}

#[tokio::test]
async fn registering_with_a_provider_that_does_not_serve_the_merchant_is_422() {
    let app = tenants().await;
    let (code, v) = register(
        &app,
        KEY_A,
        &json!({"payment_id": "pay-6p", "provider": "prov-b"}),
    )
    .await;
    assert_eq!(code, 422, "prov-b does not report for shop-a: {v}");
    assert!(v["error"]["code"].is_string(), "{v}");
    let (code, _) = payment(&app, KEY_A, "pay-6p").await;
    assert_eq!(code, 404, "a refused registration stores nothing");

    let (code, v) = register(
        &app,
        KEY_A,
        &json!({"payment_id": "pay-6p", "provider": "prov-a"}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["provider"], "prov-a");
}

#[tokio::test]
async fn events_and_admin_reads_are_scoped_to_one_merchant() {
    let app = tenants().await;
    applied(&app, "prov-a", &generic("a-6", "pay-6", "pending")).await;
    applied(&app, "prov-b", &generic("b-6", "pay-6", "succeeded")).await;

    let a = events(&app, KEY_A, "").await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["merchant_id"], "shop-a");
    assert_eq!(a[0]["provider"], "prov-a");
    assert_eq!(a[0]["status"], "pending");
    assert_eq!(a[0]["sequence"], 1);

    let b = events(&app, KEY_B, "payment_id=pay-6").await;
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["merchant_id"], "shop-b");
    assert_eq!(b[0]["provider"], "prov-b");
    assert_eq!(b[0]["status"], "succeeded");
    assert_eq!(b[0]["sequence"], 1);
    assert_eq!(events(&app, ADMIN, "merchant_id=shop-b").await, b);
    assert_eq!(events(&app, ADMIN, "merchant_id=shop-a").await, a);
    // Another merchant's event id is no cursor: a 400, not a page of events.
    let (code, v) = app
        .get_auth(
            &format!("/v1/events?after={}", a[0]["event_id"].as_str().unwrap()),
            KEY_B,
        )
        .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(error_code(&v), "invalid_request");

    let (code, p) = app
        .get_auth("/v1/payments/pay-6?merchant_id=shop-b", ADMIN)
        .await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["merchant_id"], "shop-b");
    assert_eq!(p["status"], "succeeded");
    let (_, p) = app
        .get_auth("/v1/payments/pay-6?merchant_id=shop-a", ADMIN)
        .await;
    assert_eq!(p["status"], "pending", "{p}");
    assert_eq!(p["history"].as_array().unwrap().len(), 1, "{p}");
}

#[tokio::test]
async fn the_long_return_form_redirects_to_that_merchants_page() {
    let app = tenants().await;
    register(
        &app,
        KEY_A,
        &json!({"payment_id": "pay-7", "merchant_site_url": "https://a.example.com/done?o=1"}),
    )
    .await;
    register(&app, KEY_B, &json!({"payment_id": "pay-7"})).await;
    applied(
        &app,
        "prov-a",
        &ipn("a-7", "pay-7", "succeeded", json!({"charge_id": "ch-a-7"})),
    )
    .await;

    for r in [
        get_return(&app, "/v1/return/shop-a/pay-7").await,
        post_return(&app, "/v1/return/shop-a/pay-7").await,
    ] {
        let loc = redirect(&r);
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(r.headers()["referrer-policy"], "no-referrer");
        assert_eq!(loc.host_str(), Some("a.example.com"), "{loc}");
        assert_eq!(loc.path(), "/done");
        assert_eq!(param(&loc, "o").as_deref(), Some("1"));
        assert_eq!(param(&loc, "payment_id").as_deref(), Some("pay-7"));
        assert_eq!(param(&loc, "status").as_deref(), Some("succeeded"));
        assert_eq!(param(&loc, "charge_id").as_deref(), Some("ch-a-7"));
    }
    for r in [
        get_return(&app, "/v1/return/shop-b/pay-7").await,
        post_return(&app, "/v1/return/shop-b/pay-7").await,
    ] {
        let loc = redirect(&r);
        assert_eq!(loc.host_str(), Some("b.example.com"), "{loc}");
        assert_eq!(param(&loc, "status").as_deref(), Some("pending"));
        assert_eq!(param(&loc, "charge_id"), None, "shop-a's charge: {loc}");
    }
}

#[tokio::test]
async fn the_short_return_form_works_only_while_one_merchant_has_the_id() {
    let app = tenants().await;
    register(&app, KEY_A, &json!({"payment_id": "pay-8"})).await;
    for r in [
        get_return(&app, "/v1/return/pay-8").await,
        post_return(&app, "/v1/return/pay-8").await,
    ] {
        let loc = redirect(&r);
        assert_eq!(loc.host_str(), Some("a.example.com"), "{loc}");
    }

    let (code, v) = register(&app, KEY_B, &json!({"payment_id": "pay-8"})).await;
    assert_eq!(code, 201, "{v}");
    error_page(get_return(&app, "/v1/return/pay-8").await, 404).await;
    error_page(post_return(&app, "/v1/return/pay-8").await, 404).await;
    // The long form still tells them apart.
    let loc = redirect(&get_return(&app, "/v1/return/shop-b/pay-8").await);
    assert_eq!(loc.host_str(), Some("b.example.com"), "{loc}");
}

#[tokio::test]
async fn the_long_return_form_404s_for_an_unknown_merchant_or_payment() {
    let app = tenants().await;
    register(&app, KEY_A, &json!({"payment_id": "pay-9"})).await;
    for path in [
        "/v1/return/shop-zz/pay-9",
        "/v1/return/shop-b/pay-9",
        "/v1/return/shop-a/pay-nope",
    ] {
        error_page(get_return(&app, path).await, 404).await;
        error_page(post_return(&app, path).await, 404).await;
    }
    // Control: the known pair redirects.
    redirect(&get_return(&app, "/v1/return/shop-a/pay-9").await);
}

fn parse(body: &str) -> Result<ipn_relay::config::Settings, String> {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), "", body);
    ipn_relay::config::Settings::parse(&text, dir.path(), &|_| None).map_err(|e| e.to_string())
}

#[test]
fn a_provider_may_list_the_merchants_it_reports_for() {
    parse(&multi_config()).expect("multi's merchants list is valid");
    let with_default = format!(
        "{TENANTS}\n[[providers]]\nid = \"prov-ab\"\nmerchant_id = \"shop-a\"\n\
         merchants = [\"shop-a\", \"shop-b\"]\n[providers.auth]\nsecrets = [\"s\"]\n"
    );
    parse(&with_default).expect("merchant_id inside merchants is valid");
}

#[test]
fn a_providers_merchants_list_is_validated_and_the_error_names_the_provider() {
    for (id, lines) in [
        ("prov-empty", "merchant_id = \"shop-a\"\nmerchants = []"),
        ("prov-empty-nodefault", "merchants = []"),
        ("prov-stranger", "merchants = [\"nope\"]"),
        (
            "prov-split",
            "merchant_id = \"shop-c\"\nmerchants = [\"shop-a\", \"shop-b\"]",
        ),
    ] {
        let body = format!(
            "{TENANTS}\n[[providers]]\nid = \"{id}\"\n{lines}\n[providers.auth]\nsecrets = [\"s\"]\n"
        );
        let err = match parse(&body) {
            Ok(_) => panic!("{id}: config accepted"),
            Err(e) => e,
        };
        assert!(err.contains(id), "{id}: error does not name it: {err}");
        assert!(err.contains("merchant"), "{id}: {err}");
    }
}
