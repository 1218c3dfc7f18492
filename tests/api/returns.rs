//! Browser return after 3DS (SPEC §7): `GET|POST /v1/return/{id}` → 303 to
//! the merchant's page with the payment's outcome, never anywhere else.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use hmac::Mac;
use serde_json::{json, Value};
use url::Url;

use ipn_relay::clock::ManualClock;

use crate::helpers::*;

pub(crate) async fn applied(app: &TestApp, body: &Value) {
    let (code, r) = app.ipn_result("acme", body).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["events"][0]["outcome"], "applied", "{r}");
}

/// GET the return URL; assert the 303 and its headers; the Location.
pub(crate) async fn follow(app: &TestApp, id: &str) -> Url {
    let r = app
        .client
        .get(app.url(&format!("/v1/return/{id}")))
        .send()
        .await
        .unwrap();
    location(r)
}

fn location(r: reqwest::Response) -> Url {
    assert_eq!(r.status().as_u16(), 303, "expected See Other");
    let h = r.headers();
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["referrer-policy"], "no-referrer");
    Url::parse(h["location"].to_str().unwrap()).expect("absolute Location")
}

fn query(u: &Url) -> HashMap<String, String> {
    u.query_pairs().into_owned().collect()
}

fn without_query(u: &Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    u.to_string()
}

#[tokio::test]
async fn get_and_post_returns_redirect_to_the_registered_url_with_the_outcome() {
    let app = spawn_app().await;
    let (code, v) = register(
        &app,
        SHOP_KEY,
        &json!({"payment_id": "ret_1", "merchant_site_url": "https://shop.example.com/pay/done?order=42&lang=de"}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    applied(
        &app,
        &ipn(
            "r_1",
            "ret_1",
            "Succeed",
            json!({"authorization_id": "au_ret_1"}),
        ),
    )
    .await;

    let loc = follow(&app, "ret_1").await;
    assert_eq!(without_query(&loc), "https://shop.example.com/pay/done");
    let q = query(&loc);
    assert_eq!(q["order"], "42");
    assert_eq!(q["lang"], "de");
    assert_eq!(q["payment_id"], "ret_1");
    assert_eq!(q["status"], "succeeded");
    assert_eq!(q["authorization_id"], "au_ret_1");
    assert!(!q.contains_key("ts") && !q.contains_key("signature"));

    // An ACS posts the browser back with a form.
    let r = app
        .client
        .post(app.url("/v1/return/ret_1"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("cres=eyJ0aHJlZURTU2VydmVyVHJhbnNJRCI6IjFhMmIzYyIsInRyYW5zU3RhdHVzIjoiWSJ9&threeDSSessionData=c2Vzc2lvbg")
        .send()
        .await
        .unwrap();
    let loc2 = location(r);
    assert_eq!(loc2, loc);
}

#[tokio::test]
async fn a_charge_id_is_passed_when_that_is_what_is_known() {
    let app = spawn_app().await;
    applied(
        &app,
        &ipn("c_1", "ret_c", "Succeed", json!({"charge_id": "ch_ret"})),
    )
    .await;
    let q = query(&follow(&app, "ret_c").await);
    assert_eq!(q["charge_id"], "ch_ret");
    assert!(!q.contains_key("authorization_id"));
}

#[tokio::test]
async fn the_target_falls_back_registered_then_ipn_then_default() {
    let app = spawn_app().await;
    let reg = "https://shop.example.com/registered";
    let from_ipn = "https://shop.example.com/from-ipn?x=1";
    let default = "https://shop.example.com/checkout/return";

    // Registered wins over the IPN's URL.
    register(
        &app,
        SHOP_KEY,
        &json!({"payment_id": "fb_1", "merchant_site_url": reg}),
    )
    .await;
    applied(
        &app,
        &ipn(
            "f_1",
            "fb_1",
            "Succeed",
            json!({"merchant_site_url": from_ipn}),
        ),
    )
    .await;
    assert_eq!(without_query(&follow(&app, "fb_1").await), reg);

    // No registration: the IPN's URL, its query kept.
    applied(
        &app,
        &ipn(
            "f_2",
            "fb_2",
            "Succeed",
            json!({"merchant_site_url": from_ipn}),
        ),
    )
    .await;
    let loc = follow(&app, "fb_2").await;
    assert_eq!(without_query(&loc), "https://shop.example.com/from-ipn");
    assert_eq!(query(&loc)["x"], "1");

    // Neither: the merchant default.
    applied(&app, &ipn("f_3", "fb_3", "Succeed", json!({}))).await;
    assert_eq!(without_query(&follow(&app, "fb_3").await), default);

    // An IPN URL on a foreign origin is never used.
    for (i, evil) in [
        "https://evil.example/phish",
        "https://shop.example.com.evil.example/",
        "https://shop.example.com@evil.example/",
        "javascript:alert(document.cookie)",
        "//evil.example/x",
        "http://shop.example.com/downgraded",
    ]
    .into_iter()
    .enumerate()
    {
        let pay = format!("fb_evil_{i}");
        applied(
            &app,
            &ipn(
                &format!("f_e{i}"),
                &pay,
                "Succeed",
                json!({"merchant_site_url": evil}),
            ),
        )
        .await;
        let loc = follow(&app, &pay).await;
        assert_eq!(without_query(&loc), default, "{evil}");
        assert_eq!(loc.host_str(), Some("shop.example.com"));
    }
}

#[tokio::test]
async fn no_valid_url_is_a_422_page_and_an_unknown_payment_a_404_page() {
    let app = spawn_app().await;
    // shop-2 has no default_site_url.
    register(&app, OTHER_KEY, &json!({"payment_id": "nourl"})).await;
    let r = app
        .client
        .get(app.url("/v1/return/nourl"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.headers().get("location").is_none());
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.text().await.unwrap().to_lowercase().contains("<html"));

    for id in ["never-registered", "<script>alert(1)</script>"] {
        let r = app
            .client
            .get(app.url(&format!("/v1/return/{}", urlencode(id))))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{id}");
        assert!(r.headers().get("location").is_none());
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert_eq!(r.headers()["referrer-policy"], "no-referrer");
        let body = r.text().await.unwrap();
        assert!(!body.contains("<script>"), "reflected markup: {body}");
    }
    let r = app
        .client
        .post(app.url("/v1/return/never-registered"))
        .form(&[("cres", "abc")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

pub(crate) fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[tokio::test]
async fn open_redirect_targets_are_refused_at_registration() {
    let app = spawn_app().await;
    for bad in [
        "//evil.example",
        "//evil.example/done",
        "https://shop.example.com.evil.example/",
        "https://shop.example.com@evil.example/",
        "https://evil.example/?next=https://shop.example.com/",
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "http://shop.example.com/",
        "https://shop.example.com:8443/",
        "/relative/path",
        "",
    ] {
        let (code, v) = register(
            &app,
            SHOP_KEY,
            &json!({"payment_id": "or_1", "merchant_site_url": bad}),
        )
        .await;
        assert_eq!(code, 422, "{bad:?} was accepted: {v}");
    }
    let (code, _) = app.get_auth("/v1/payments/or_1", SHOP_KEY).await;
    assert_eq!(code, 404);
}

fn wait_config(wait: &str) -> String {
    format!("[returns]\nwait_for_final = \"{wait}\"\n{BASE}")
}

async fn pending(app: &TestApp, pay: &str) {
    applied(
        app,
        &ipn(
            &format!("{pay}_p"),
            pay,
            "Pending",
            json!({"authorization_id": "au_w"}),
        ),
    )
    .await;
}

/// A browser returning now; the response arrives when the service answers.
fn browser_return(app: &TestApp, pay: &str) -> tokio::task::JoinHandle<reqwest::Response> {
    let url = app.url(&format!("/v1/return/{pay}"));
    let client = app.client.clone();
    tokio::spawn(async move { client.get(url).send().await.unwrap() })
}

/// The service's clock stands still, so a held return is never released by
/// time: it is answered when the final IPN lands, whenever that is.
#[tokio::test]
async fn wait_for_final_holds_a_pending_return_until_the_outcome_is_known() {
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(&wait_config("5s"), &clock).await;
    pending(&app, "wait_1").await;
    let browser = browser_return(&app, "wait_1");
    // Held: no answer while the payment is pending (the clock does not move).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !browser.is_finished(),
        "a pending return was answered before its outcome"
    );
    let r = app
        .post_ipn(
            "acme",
            &ipn(
                "wait_1_s",
                "wait_1",
                "Succeed",
                json!({"authorization_id": "au_w"}),
            ),
        )
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let loc = location(browser.await.unwrap());
    let q = query(&loc);
    assert_eq!(q["status"], "succeeded", "{loc}");
    assert_eq!(q["authorization_id"], "au_w");
}

/// Once `wait_for_final` has passed on the service's clock, a still
/// pending payment is returned as pending.
#[tokio::test]
async fn a_held_return_goes_on_as_pending_when_the_wait_is_over() {
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(&wait_config("5s"), &clock).await;
    pending(&app, "wait_2").await;
    let browser = browser_return(&app, "wait_2");
    // The wait starts when the request arrives: move the clock past it
    // until the answer comes (a few turns at most).
    for _ in 0..200 {
        if browser.is_finished() {
            break;
        }
        clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(browser.is_finished(), "the held return was never released");
    let loc = location(browser.await.unwrap());
    assert_eq!(query(&loc)["status"], "pending", "{loc}");
}

#[tokio::test]
async fn without_wait_for_final_a_pending_return_says_pending() {
    let app = spawn_with("", &wait_config("0s")).await;
    pending(&app, "wait_0").await;
    let loc = location(browser_return(&app, "wait_0").await.unwrap());
    assert_eq!(query(&loc)["status"], "pending", "{loc}");
}

#[tokio::test]
async fn a_return_secret_signs_the_added_parameters() {
    let secret = "rs_9f8e7d6c5b4a";
    let body = BASE.replace(
        "default_site_url = \"https://shop.example.com/checkout/return\"",
        &format!("default_site_url = \"https://shop.example.com/checkout/return\"\nreturn_secret = \"{secret}\""),
    );
    assert_ne!(body, BASE);
    let app = spawn_with("", &body).await;
    register(
        &app,
        SHOP_KEY,
        &json!({"payment_id": "sig 1é", "merchant_site_url": "https://shop.example.com/done?order=7"}),
    )
    .await;
    applied(
        &app,
        &ipn(
            "s_1",
            "sig 1é",
            "Succeed",
            json!({"authorization_id": "au+1&x=2"}),
        ),
    )
    .await;
    let before = chrono::Utc::now().timestamp();
    let loc = follow(&app, &urlencode("sig 1é")).await;
    let after = chrono::Utc::now().timestamp();
    let q = query(&loc);
    assert_eq!(q["order"], "7");
    assert_eq!(q["payment_id"], "sig 1é");
    assert_eq!(q["authorization_id"], "au+1&x=2");
    let ts: i64 = q["ts"].parse().expect("ts is unix seconds");
    assert!((before..=after).contains(&ts), "ts {ts} not now");

    // base64url (no padding) HMAC-SHA256 over the other added parameters,
    // `ts` included, sorted by name, as k=v&k=v, RFC 3986-encoded exactly as
    // they are written in the Location.
    let canonical = format!(
        "authorization_id=au%2B1%26x%3D2&payment_id=sig%201%C3%A9&status=succeeded&ts={ts}"
    );
    let raw_query = loc.query().expect("a query");
    assert!(
        raw_query.starts_with(&format!("order=7&{canonical}&signature=")),
        "{loc}"
    );
    eprintln!("signed return URL: {loc}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(canonical.as_bytes());
    let want = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    assert_eq!(q["signature"], want);
    assert!(
        !q["signature"].contains('=')
            && !q["signature"].contains('+')
            && !q["signature"].contains('/')
    );

    // shop-2 has no secret: no signature there.
    register(
        &app,
        OTHER_KEY,
        &json!({"payment_id": "nosig", "merchant_site_url": "https://two.example.com/r"}),
    )
    .await;
    let q2 = query(&follow(&app, "nosig").await);
    assert_eq!(q2["status"], "pending");
    assert!(!q2.contains_key("signature") && !q2.contains_key("ts"));
}
