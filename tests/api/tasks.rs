//! The async task API's retention, and the operator API: who may call it,
//! listing filters, the bounded quarantine, and reprocessing after a config fix.

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use ipn_relay::clock::ManualClock;

use crate::helpers::*;

async fn accept(app: &TestApp, body: &Value) -> String {
    let r = app.post_ipn("acme", body).await;
    assert_eq!(r.status().as_u16(), 202);
    let v: Value = r.json().await.unwrap();
    v["request_id"].as_str().unwrap().to_string()
}

async fn post_as(app: &TestApp, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut rb = app.client.post(app.url(path));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

fn ids(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data: {v}"))
        .iter()
        .map(|i| i["request_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn task_results_expire_after_retention() {
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(
        &format!("[retention]\ntask_results = \"1h\"\n{BASE}"),
        &clock,
    )
    .await;
    let id = accept(&app, &generic("ev_ret", "pay_ret", "Succeed")).await;
    app.wait_done(&id).await;
    // Up to the end of the window the task and its result are there...
    clock.advance(Duration::from_secs(3600) - Duration::from_millis(1));
    let (code, v) = app.get_json(&format!("/v1/async/status/{id}")).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "completed");
    let (code, _) = app.get_json(&format!("/v1/async/result/{id}")).await;
    assert_eq!(code, 200);
    // ...and from its end on, both say unknown.
    clock.advance(Duration::from_millis(1));
    let (code, v) = app.get_json(&format!("/v1/async/status/{id}")).await;
    assert_eq!(code, 404, "{v}");
    assert_eq!(v["status"], "unknown");
    assert_eq!(v["request_id"], id.as_str());
    let (code, v) = app.get_json(&format!("/v1/async/result/{id}")).await;
    assert_eq!(code, 404);
    assert_eq!(v["status"], "unknown");
    // Operators still see the stored request (retention.events is 30d).
    let (_, reqs) = app.get_auth("/v1/admin/requests", ADMIN).await;
    assert_eq!(ids(&reqs), [id]);
    // A duplicate within the dedupe window is still a duplicate.
    let r = app
        .post_ipn("acme", &generic("ev_ret", "pay_ret", "Succeed"))
        .await;
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn the_admin_api_is_for_admin_tokens_only() {
    let app = spawn_app().await;
    let id = accept(&app, &generic("ev_adm", "pay_adm", "NoSuchStatus")).await;
    app.wait_done(&id).await;

    for path in ["/v1/admin/requests", "/v1/admin/quarantine"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(error_code(&v), "unauthorized");
        for token in ["", "nope", "test-admin-token-x", "Test-Admin-Token"] {
            let (code, _) = app.get_auth(path, token).await;
            assert_eq!(code, 401, "{path} with {token:?}");
        }
        // A merchant key does not even learn the endpoint exists.
        let (code, v) = app.get_auth(path, SHOP_KEY).await;
        assert_eq!(code, 404, "{path}");
        assert_eq!(error_code(&v), "not_found");
        let (code, v) = app.get_auth(path, ADMIN).await;
        assert_eq!(code, 200, "{path}");
        assert!(v["data"].is_array());
    }
    let reprocess = format!("/v1/admin/requests/{id}/reprocess");
    assert_eq!(post_as(&app, &reprocess, None).await.0, 401);
    assert_eq!(post_as(&app, &reprocess, Some(SHOP_KEY)).await.0, 404);
    assert_eq!(post_as(&app, &reprocess, Some(OTHER_KEY)).await.0, 404);
    // A Basic header with the admin token is not a Bearer token.
    let r = app
        .client
        .get(app.url("/v1/admin/requests"))
        .basic_auth(ADMIN, Some(ADMIN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // None of the refused calls reprocessed it.
    let (_, v) = app.get_auth("/v1/admin/requests?state=error", ADMIN).await;
    assert_eq!(ids(&v), [id.as_str()]);
    assert_eq!(post_as(&app, &reprocess, Some(ADMIN)).await.0, 202);
}

#[tokio::test]
async fn admin_requests_filter_by_state_and_provider() {
    let app = spawn_app().await;
    let ok = accept(&app, &generic("ev_f1", "pay_f1", "Succeed")).await;
    let unmapped = accept(&app, &generic("ev_f2", "pay_f2", "Exploded")).await;
    let r = app
        .post_ipn("nomerchant", &generic("ev_f3", "pay_f3", "succeeded"))
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let orphan = r.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in [&ok, &unmapped, &orphan] {
        app.wait_done(id).await;
    }

    let list = |q: &'static str| {
        let app = &app;
        async move {
            let (code, v) = app.get_auth(&format!("/v1/admin/requests{q}"), ADMIN).await;
            assert_eq!(code, 200, "{q}: {v}");
            v
        }
    };
    let all = list("").await;
    let mut got = ids(&all);
    got.sort();
    let mut want = vec![ok.clone(), unmapped.clone(), orphan.clone()];
    want.sort();
    assert_eq!(got, want);

    let errors = list("?state=error").await;
    let mut got = ids(&errors);
    got.sort();
    let mut want = vec![unmapped.clone(), orphan.clone()];
    want.sort();
    assert_eq!(got, want);
    for item in errors["data"].as_array().unwrap() {
        assert_eq!(item["state"], "error");
        let code = item["error"]["code"].as_str().unwrap();
        if item["request_id"] == unmapped.as_str() {
            assert_eq!(code, "unmapped_status");
        } else {
            assert_eq!(code, "unknown_merchant");
        }
    }
    assert_eq!(ids(&list("?state=completed").await), [ok.as_str()]);
    assert!(ids(&list("?state=processing").await).is_empty());
    assert_eq!(
        ids(&list("?state=error&provider=acme").await),
        [unmapped.as_str()]
    );
    assert_eq!(ids(&list("?provider=nomerchant").await), [orphan.as_str()]);
    assert_eq!(
        ids(&list("?state=completed&provider=nomerchant").await).len(),
        0
    );
    assert!(ids(&list("?provider=nobody").await).is_empty());

    for bad in ["bogus", "ERROR", "", "error,completed"] {
        let (code, v) = app
            .get_auth(&format!("/v1/admin/requests?state={bad}"), ADMIN)
            .await;
        assert_eq!(code, 400, "state={bad}: {v}");
        assert_eq!(error_code(&v), "invalid_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quarantine_keeps_the_newest_1000() {
    let app = spawn_with(
        "",
        &format!("[ingress]\nunauthenticated_rate_limit = {{ per_second = 100000, burst = 100000 }}\n{BASE}"),
    )
    .await;
    let bad = |tag: String| {
        let client = app.client.clone();
        let url = app.url("/v1/ipn/acme");
        async move {
            let r = client
                .post(url)
                .header("X-Signature", "00")
                .body(tag)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 401);
        }
    };
    // The oldest five, one after another.
    for i in 0..5 {
        bad(format!("old-{i}")).await;
    }
    // A thousand at once.
    let mut workers = Vec::new();
    for w in 0..20 {
        let reqs: Vec<_> = (0..50).map(|i| bad(format!("mid-{w}-{i}"))).collect();
        workers.push(tokio::spawn(async move {
            for r in reqs {
                r.await;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    // The newest.
    bad("newest".into()).await;

    let (code, q) = app.get_auth("/v1/admin/quarantine?limit=1000", ADMIN).await;
    assert_eq!(code, 200);
    let bodies: Vec<String> = q["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let b = base64::engine::general_purpose::STANDARD
                .decode(i["body_head_base64"].as_str().unwrap())
                .unwrap();
            String::from_utf8(b).unwrap()
        })
        .collect();
    assert_eq!(bodies.len(), 1000);
    assert_eq!(bodies[0], "newest", "newest first");
    assert!(
        bodies.iter().all(|b| !b.starts_with("old-")),
        "the oldest were dropped"
    );
    let distinct: std::collections::HashSet<_> = bodies.iter().collect();
    assert_eq!(distinct.len(), 1000);
    let item = &q["data"][0];
    assert_eq!(item["provider"], "acme");
    assert!(!item["reason"].as_str().unwrap().is_empty());
    // Asking for more does not find more.
    let (code, q) = app.get_auth("/v1/admin/quarantine?limit=5000", ADMIN).await;
    assert_eq!(code, 200);
    assert!(q["data"].as_array().unwrap().len() <= 1000);

    // Still bounded after a restart.
    let dir = app.stop().await;
    let app = spawn_in(dir, "", BASE).await;
    bad_after_restart(&app).await;
    let (_, q) = app.get_auth("/v1/admin/quarantine?limit=1000", ADMIN).await;
    let items = q["data"].as_array().unwrap();
    assert_eq!(items.len(), 1000);
    let first = base64::engine::general_purpose::STANDARD
        .decode(items[0]["body_head_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(first, b"after-restart");
}

async fn bad_after_restart(app: &TestApp) {
    let r = app
        .post_raw(
            "acme",
            b"after-restart".to_vec(),
            &[("X-Signature".into(), "00".into())],
        )
        .await;
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn an_unmapped_status_is_reprocessed_after_the_config_is_fixed() {
    let app = spawn_app().await;
    let id = accept(&app, &generic("ev_cap", "pay_cap", "Captured")).await;
    assert_eq!(app.wait_done(&id).await["status"], "completed");
    let result = format!("/v1/async/result/{id}");
    let (code, v) = app.get_json(&result).await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["code"], "unmapped_status");
    assert_eq!(v["request_id"], id.as_str());
    assert!(v["message"].as_str().unwrap().contains("Captured"), "{v}");
    assert_eq!(
        app.get_json(&result).await.0,
        404,
        "error results are read once"
    );

    // Reprocessing without a fix fails the same way, and the error can be read again.
    let reprocess = format!("/v1/admin/requests/{id}/reprocess");
    let (code, v) = post_as(&app, &reprocess, Some(ADMIN)).await;
    assert_eq!(code, 202, "{v}");
    app.wait_done(&id).await;
    let (code, v) = app.get_json(&result).await;
    assert_eq!((code, v["code"].as_str()), (422, Some("unmapped_status")));

    // The operator teaches the config the new status and restarts.
    let dir = app.stop().await;
    let fixed = BASE.replace(
        "Refunded = \"refunded\"",
        "Refunded = \"refunded\"\nCaptured = \"succeeded\"",
    );
    assert_ne!(fixed, BASE);
    let app = spawn_in(dir, "", &fixed).await;
    let (_, v) = app.get_auth("/v1/admin/requests?state=error", ADMIN).await;
    assert_eq!(
        ids(&v),
        [id.as_str()],
        "the errored request survived the restart"
    );

    let (code, v) = post_as(&app, &reprocess, Some(ADMIN)).await;
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["request_id"], id.as_str());
    assert_eq!(v["status"], "processing");
    assert_eq!(v["status_url"], app.url(&format!("/v1/async/status/{id}")));
    assert_eq!(app.wait_done(&id).await["status"], "completed");
    let (code, v) = app.get_json(&result).await;
    assert_eq!(code, 200, "{v}");
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{v}");
    assert_eq!(events[0]["payment_id"], "pay_cap");
    assert_eq!(events[0]["status"], "succeeded");
    assert_eq!(events[0]["outcome"], "applied");
    let (code, p) = app.get_auth("/v1/payments/pay_cap", SHOP_KEY).await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["status"], "succeeded", "{p}");

    // A completed request cannot be reprocessed; unknown ids are 404.
    let (code, v) = post_as(&app, &reprocess, Some(ADMIN)).await;
    assert_eq!(code, 409, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("completed"));
    for other in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".into()] {
        let (code, v) = post_as(
            &app,
            &format!("/v1/admin/requests/{other}/reprocess"),
            Some(ADMIN),
        )
        .await;
        assert_eq!(code, 404, "{other}: {v}");
        assert_eq!(error_code(&v), "not_found");
    }
    // The payment has exactly one applied change.
    let (_, v) = app.get_auth("/v1/admin/requests", ADMIN).await;
    assert_eq!(ids(&v).len(), 1);
}
