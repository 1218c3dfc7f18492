//! Online backup (`ipn-relay backup --config FILE --to DIR`): taken from the
//! real binary while IPNs keep arriving and deliveries are pending (the
//! merchant's endpoint is down), the copy opens as a fresh instance with
//! every IPN acknowledged before the backup began, its payment, the API
//! endpoint, and the pending deliveries, which then go out.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipn_relay::config::Settings;
use serde_json::{json, Value};

use crate::crash::{post_signed, serve_command, spawn_serve};
use crate::helpers::*;
use crate::relay_helpers::SECRET_1;
use crate::sink::{Reply, Sink};

fn config(dir: &Path, store: &Path, sink_url: &str) -> std::path::PathBuf {
    let endpoint = format!(
        "\n[[merchants.endpoints]]\nid = \"ep_cfg\"\nurl = \"{sink_url}\"\nsecret = \"{SECRET_1}\"\n\n[[merchants]]\nid = \"shop-2\""
    );
    let body = BASE.replacen("\n[[merchants]]\nid = \"shop-2\"", &endpoint, 1);
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n\
         [storage]\npath = \"{}\"\nmin_free_space = \"1MiB\"\n\
         [delivery]\nallow_private_targets = true\nretry_schedule = [\"1s\"]\n{body}",
        store.display()
    );
    let path = dir.join(format!(
        "config-{}.toml",
        store.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// Events of `pay` in the feed, once there are any (they join it when durable).
async fn feed_count(client: &reqwest::Client, base: &str, pay: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = client
            .get(format!("{base}/v1/events?payment_id={pay}"))
            .bearer_auth(SHOP_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let n = v["data"].as_array().unwrap().len();
        if n > 0 || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ipn_body(i: usize) -> Vec<u8> {
    serde_json::to_vec(&generic(
        &format!("bk_{i}"),
        &format!("bk_pay_{i}"),
        "Succeed",
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_every_acked_ipn_endpoint_and_pending_delivery() {
    let sink = Sink::start().await;
    // The merchant is down: deliveries stay pending (retried every second).
    sink.set("/hook", Reply::status(503));
    let dir = tempfile::tempdir().unwrap();
    let live = config(dir.path(), &dir.path().join("live"), &sink.url("/hook"));
    let settings = Settings::load(&live, &|_| None).unwrap();
    let (mut child, port) = spawn_serve(serve_command(&live));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    // An API endpoint too (down as well).
    let r = client
        .post(format!("{base}/v1/endpoints"))
        .bearer_auth(SHOP_KEY)
        .json(&json!({"url": sink.url("/api"), "description": "from the API"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let api_ep: Value = r.json().await.unwrap();
    sink.set("/api", Reply::status(503));

    // Load: IPNs keep arriving; each records when its ack came.
    let acked: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (acked, stop, client, base, settings) = (
            acked.clone(),
            stop.clone(),
            client.clone(),
            base.clone(),
            settings.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if post_signed(&client, &base, &settings, ipn_body(i))
                    .await
                    .is_some()
                {
                    acked.lock().unwrap().push((i, Instant::now()));
                }
                i += 1;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 100 {
        assert!(Instant::now() < deadline, "load never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The backup, with the real command, while the load goes on.
    let copy = dir.path().join("copy");
    let began = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ipn-relay"))
        .args(["backup", "--config"])
        .arg(&live)
        .arg("--to")
        .arg(&copy)
        .arg("--url")
        .arg(&base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["records"].as_u64().unwrap() > 0, "{report}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    load.await.unwrap();
    let before: Vec<usize> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at < began)
        .map(|(i, _)| *i)
        .collect();
    assert!(before.len() >= 100);
    // A second backup into the same place is refused.
    let again = Command::new(env!("CARGO_BIN_EXE_ipn-relay"))
        .args(["backup", "--config"])
        .arg(&live)
        .arg("--to")
        .arg(&copy)
        .arg("--url")
        .arg(&base)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    child.kill().unwrap();
    let _ = child.wait();

    // Restore: a fresh instance on the copy; the merchant is back up.
    sink.set("/hook", Reply::ok());
    sink.set("/api", Reply::ok());
    let restored = config(dir.path(), &copy, &sink.url("/hook"));
    let (mut child, port) = spawn_serve(serve_command(&restored));
    let base = format!("http://127.0.0.1:{port}");
    let get = |path: String, token: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (code, eps) = get("/v1/endpoints".into(), SHOP_KEY).await;
    assert_eq!(code, 200);
    let ids: Vec<&str> = eps["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&api_ep["id"].as_str().unwrap()), "{eps}");
    assert!(ids.contains(&"ep_cfg"), "{eps}");

    // Every IPN acked before the backup began: applied, and notified to
    // both endpoints once they answer again.
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in &before {
        loop {
            let (code, p) = get(format!("/v1/payments/bk_pay_{i}"), SHOP_KEY).await;
            if code == 200 && p["status"] == "succeeded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "bk_pay_{i} after restore: {code} {p}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for path in ["/hook", "/api"] {
        loop {
            let got: std::collections::HashSet<String> = sink
                .received(path)
                .iter()
                .filter(|r| {
                    r.header("webhook-id").is_some() && r.json["type"] == "payment.succeeded"
                })
                .filter_map(|r| r.json["data"]["payment_id"].as_str().map(String::from))
                .collect();
            let missing: Vec<_> = before
                .iter()
                .filter(|i| !got.contains(&format!("bk_pay_{i}")))
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: not delivered after restore: {missing:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The restored store keeps working: new IPNs are applied and delivered.
    let settings = Settings::load(&restored, &|_| None).unwrap();
    assert!(post_signed(&client, &base, &settings, ipn_body(1_000_000))
        .await
        .is_some());
    sink.wait_for("/hook", 1, Duration::from_secs(20)).await;
    assert_eq!(feed_count(&client, &base, "bk_pay_1000000").await, 1);
    child.kill().unwrap();
    let _ = child.wait();

    // Restarted again, the restored store keeps every event and takes new ones.
    let (mut child, port) = spawn_serve(serve_command(&restored));
    let base = format!("http://127.0.0.1:{port}");
    for i in 2_000_000..2_000_020 {
        assert!(post_signed(&client, &base, &settings, ipn_body(i))
            .await
            .is_some());
    }
    for i in 2_000_000..2_000_020 {
        assert_eq!(
            feed_count(&client, &base, &format!("bk_pay_{i}")).await,
            1,
            "bk_pay_{i}"
        );
    }
    assert_eq!(
        feed_count(&client, &base, "bk_pay_1000000").await,
        1,
        "an event before the restart"
    );
    for i in before.iter().take(20) {
        assert_eq!(
            feed_count(&client, &base, &format!("bk_pay_{i}")).await,
            1,
            "bk_pay_{i} from the backup"
        );
    }
    child.kill().unwrap();
    let _ = child.wait();
}

/// (path, bearer token, body, expected status, expected error code)
type Case = (
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    u16,
    &'static str,
);

#[tokio::test]
async fn backup_and_purge_refuse_bad_input_and_non_admins_in_the_error_shape() {
    let app = spawn_app().await;
    let post = |path: &'static str, token: Option<&'static str>, body: Vec<u8>| {
        let app = &app;
        async move {
            let mut rb = app.client.post(app.url(path)).body(body);
            if let Some(t) = token {
                rb = rb.bearer_auth(t);
            }
            let r = rb.send().await.unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let occupied = tempfile::tempdir().unwrap();
    std::fs::write(occupied.path().join("x"), "x").unwrap();
    let cases: Vec<Case> = vec![
        (
            "/v1/admin/backup",
            None,
            b"{}".to_vec(),
            401,
            "unauthorized",
        ),
        (
            "/v1/admin/backup",
            Some(SHOP_KEY),
            br#"{"to":"/tmp/x"}"#.to_vec(),
            404,
            "not_found",
        ),
        (
            "/v1/admin/backup",
            Some(ADMIN),
            b"{not json".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/admin/backup",
            Some(ADMIN),
            br#"{"to":"/tmp/x","extra":1}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/admin/backup",
            Some(ADMIN),
            br#"{"to":"relative/dir"}"#.to_vec(),
            422,
            "invalid_request",
        ),
        (
            "/v1/admin/backup",
            Some(ADMIN),
            serde_json::to_vec(&json!({"to": occupied.path()})).unwrap(),
            409,
            "conflict",
        ),
        (
            "/v1/admin/backup",
            Some(ADMIN),
            vec![b' '; 70 * 1024],
            413,
            "payload_too_large",
        ),
        ("/v1/admin/purge", None, Vec::new(), 401, "unauthorized"),
        (
            "/v1/admin/purge",
            Some(SHOP_KEY),
            Vec::new(),
            404,
            "not_found",
        ),
    ];
    for (path, token, body, code, err) in cases {
        let (got, v) = post(path, token, body).await;
        assert_eq!(got, code, "{path} {token:?}: {v}");
        assert_eq!(error_code(&v), err, "{path}: {v}");
    }
    // The occupied directory was left as it was.
    assert_eq!(std::fs::read_dir(occupied.path()).unwrap().count(), 1);
}
