//! POST /v1/ipn/{provider}: checks, durable ack, dedupe, bad input.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn a_signed_ipn_is_acknowledged_with_task_urls() {
    let app = spawn_app().await;
    let r = app
        .post_ipn("acme", &generic("ev_1", "pay_1", "Succeed"))
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let ack: Value = r.json().await.unwrap();
    assert_eq!(ack["status"], "processing");
    let id = ack["request_id"].as_str().unwrap();
    let uuid = uuid::Uuid::parse_str(id).unwrap();
    assert_eq!(uuid.get_version_num(), 4);
    assert_eq!(
        ack["status_url"],
        app.url(&format!("/v1/async/status/{id}"))
    );
    assert_eq!(
        ack["response_url"],
        app.url(&format!("/v1/async/result/{id}"))
    );

    let status = app.wait_done(id).await;
    assert_eq!(status["status"], "completed");
    assert_eq!(status["response_url"], ack["response_url"]);
}

#[tokio::test]
async fn unknown_provider_is_404_with_the_error_shape() {
    let app = spawn_app().await;
    let h = app.sign("acme", b"{}", &[]);
    let r = app.post_raw("nobody", b"{}".to_vec(), &h).await;
    assert_eq!(r.status().as_u16(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(error_code(&v), "unknown_provider");
    assert!(v["error"]["message"].as_str().unwrap().contains("nobody"));
}

#[tokio::test]
async fn wrong_missing_and_malformed_signatures_are_401_and_quarantined() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&generic("ev_q", "pay_q", "Succeed")).unwrap();
    let cases: Vec<Vec<(String, String)>> = vec![
        vec![],
        vec![("X-Signature".into(), "00".repeat(32))],
        vec![("X-Signature".into(), "not hex at all".into())],
        vec![("X-Signature".into(), String::new())],
    ];
    for h in &cases {
        let r = app.post_raw("acme", body.clone(), h).await;
        assert_eq!(r.status().as_u16(), 401, "headers {h:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(error_code(&v), "invalid_signature");
    }
    // A signature over a different body does not verify this one.
    let other = app.sign("acme", b"{\"other\":1}", &[]);
    assert_eq!(
        app.post_raw("acme", body.clone(), &other)
            .await
            .status()
            .as_u16(),
        401
    );

    let (code, q) = app.get_auth("/v1/admin/quarantine", ADMIN).await;
    assert_eq!(code, 200);
    let items = q["data"].as_array().unwrap();
    assert_eq!(items.len(), cases.len() + 1);
    assert!(items.iter().all(|i| i["provider"] == "acme"));
    // Nothing was accepted: no task exists.
    let (_, reqs) = app.get_auth("/v1/admin/requests", ADMIN).await;
    assert_eq!(reqs["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_rotated_secret_is_accepted_too() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&generic("ev_r", "pay_r", "Succeed")).unwrap();
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"acme-secret-next").unwrap();
    mac.update(&body);
    let sig = hex::encode(mac.finalize().into_bytes());
    let r = app
        .post_raw("acme", body, &[("X-Signature".into(), sig)])
        .await;
    assert_eq!(r.status().as_u16(), 202);
}

#[tokio::test]
async fn oversized_bodies_are_413_before_authentication() {
    let app = spawn_with("max_body_bytes = 1024", BASE).await;
    let big = vec![b'a'; 2048];
    let h = app.sign("acme", &big, &[]);
    let r = app.post_raw("acme", big, &h).await;
    assert_eq!(r.status().as_u16(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(error_code(&v), "payload_too_large");
    // A body just at the limit is fine.
    let ok = serde_json::to_vec(&json!({"id": "x", "pad": "a".repeat(900)})).unwrap();
    assert!(ok.len() <= 1024);
    let h = app.sign("acme", &ok, &[]);
    assert_eq!(app.post_raw("acme", ok, &h).await.status().as_u16(), 202);
}

#[tokio::test]
async fn a_duplicate_ipn_gets_200_and_the_original_request_id() {
    let app = spawn_app().await;
    let body = generic("ev_dup", "pay_dup", "Succeed");
    let first: Value = app.post_ipn("acme", &body).await.json().await.unwrap();
    let id = first["request_id"].as_str().unwrap().to_string();
    app.wait_done(&id).await;
    let r = app.post_ipn("acme", &body).await;
    assert_eq!(r.status().as_u16(), 200);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["request_id"], id.as_str());
    assert_eq!(again["status"], "completed");
    // Same event id, different bytes: still the same provider event.
    let mut changed = body.clone();
    changed["extra"] = json!("field");
    let r = app.post_ipn("acme", &changed).await;
    assert_eq!(r.status().as_u16(), 200);
    // Only one task exists.
    let (_, reqs) = app.get_auth("/v1/admin/requests", ADMIN).await;
    assert_eq!(reqs["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn identical_ipns_at_once_yield_one_task() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&generic("ev_race", "pay_race", "Succeed")).unwrap();
    let h = app.sign("acme", &body, &[]);
    let mut handles = Vec::new();
    for _ in 0..16 {
        let client = app.client.clone();
        let url = app.url("/v1/ipn/acme");
        let (body, h) = (body.clone(), h.clone());
        handles.push(tokio::spawn(async move {
            let mut rb = client
                .post(url)
                .body(body)
                .header("content-type", "application/json");
            for (k, v) in &h {
                rb = rb.header(k.as_str(), v.as_str());
            }
            let r = rb.send().await.unwrap();
            let code = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (code, v["request_id"].as_str().unwrap().to_string())
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for h in handles {
        let (code, id) = h.await.unwrap();
        assert!(code == 202 || code == 200, "{code}");
        created += usize::from(code == 202);
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1, "every answer names the same request");
    assert_eq!(created, 1, "exactly one 202");
    let (_, reqs) = app.get_auth("/v1/admin/requests", ADMIN).await;
    assert_eq!(reqs["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_authentic_body_that_is_not_json_or_form_ends_in_malformed_payload_once() {
    let app = spawn_app().await;
    let body = b"\xff\xfe not json, not a form \x00".to_vec();
    let h = app.sign("acme", &body, &[]);
    let r = app
        .post_raw(
            "acme",
            body,
            &[
                h[0].clone(),
                ("content-type".into(), "application/octet-stream".into()),
            ],
        )
        .await;
    assert_eq!(
        r.status().as_u16(),
        202,
        "authentic bodies are stored and acked"
    );
    let ack: Value = r.json().await.unwrap();
    let id = ack["request_id"].as_str().unwrap();
    assert_eq!(app.wait_done(id).await["status"], "completed");

    let (code, v) = app.get_json(&format!("/v1/async/result/{id}")).await;
    assert_eq!(code, 422);
    assert_eq!(v["code"], "malformed_payload");
    assert_eq!(v["request_id"], id);
    assert!(!v["message"].as_str().unwrap().is_empty());
    // Returned exactly once; afterwards the task is unknown to the async API...
    let (code, v) = app.get_json(&format!("/v1/async/result/{id}")).await;
    assert_eq!((code, v["status"].as_str()), (404, Some("unknown")));
    let (code, _) = app.get_json(&format!("/v1/async/status/{id}")).await;
    assert_eq!(code, 404);
    // ...but operators still see it.
    let (_, reqs) = app.get_auth("/v1/admin/requests?state=error", ADMIN).await;
    let items = reqs["data"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["request_id"], id);
    assert_eq!(items[0]["error"]["code"], "malformed_payload");
}

#[tokio::test]
async fn unknown_and_garbage_request_ids_are_404_unknown() {
    let app = spawn_app().await;
    for id in [
        uuid::Uuid::new_v4().to_string(),
        "not-a-uuid".into(),
        "%2e%2e%2fetc".into(),
    ] {
        for kind in ["status", "result"] {
            let (code, v) = app.get_json(&format!("/v1/async/{kind}/{id}")).await;
            assert_eq!(code, 404, "{kind}/{id}");
            assert_eq!(v["status"], "unknown");
        }
    }
}

#[tokio::test]
async fn hostile_input_never_yields_a_5xx() {
    let app = spawn_app().await;
    let deep = "[".repeat(100_000);
    let bodies: Vec<Vec<u8>> = vec![
        deep.into_bytes(),
        b"\xc3\x28\xa0\xa1".to_vec(),
        b"".to_vec(),
        b"a=1&b=%ZZ&&&=".to_vec(),
        b"{\"id\": 1e999999, \"data\": {\"payment_id\": [], \"status\": {}}}".to_vec(),
        vec![0u8; 4096],
    ];
    for body in bodies {
        for ct in [
            "application/json",
            "application/x-www-form-urlencoded",
            "image/png",
            "text/plain; charset=utf-16",
        ] {
            let h = app.sign("acme", &body, &[]);
            let mut hs = h.clone();
            hs.push(("content-type".into(), ct.into()));
            let r = app.post_raw("acme", body.clone(), &hs).await;
            assert!(
                r.status().is_success(),
                "authentic body must be accepted: {}",
                r.status()
            );
            let ack: Value = r.json().await.unwrap();
            let id = ack["request_id"].as_str().unwrap();
            app.wait_done(id).await;
            let (code, _) = app.get_json(&format!("/v1/async/result/{id}")).await;
            assert!(code < 500, "result {code}");
        }
    }
    for path in [
        "/v1/ipn/..%2f..%2fetc%2fpasswd",
        "/v1/ipn/%00",
        "/v1/ipn/acme/extra",
        "/v1/ipn/",
        "/v1/ipn/a%20b",
        "/nothing/here",
    ] {
        let r = app
            .client
            .post(app.url(path))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
    }
    // The service is still healthy.
    assert_eq!(app.get_json("/healthz").await.0, 200);
    assert_eq!(app.get_json("/readyz").await.0, 200);
}
