//! Spawn the real application and talk to it like a provider, a merchant
//! or an operator would.

#![allow(dead_code)]

use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;

use ipn_relay::app::Application;
use ipn_relay::clock::{Clock, ManualClock, SystemClock};
use ipn_relay::config::Settings;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;

pub const ADMIN: &str = "test-admin-token";
pub const SHOP_KEY: &str = "shop-1-key";
pub const OTHER_KEY: &str = "shop-2-key";

/// Providers and merchants most tests share; `[server]` and `[storage]` are
/// added by [`spawn_with`].
pub const BASE: &str = r#"
[admin]
tokens = ["test-admin-token"]

[[providers]]
id = "acme"
merchant_id = "shop-1"
[providers.auth]
secrets = ["acme-secret", "acme-secret-next"]
[providers.mapping.statuses]
Succeed = "succeeded"
Failed = "failed"
Pending = "pending"
Authorized = "authorized"
Refunded = "refunded"

[[providers]]
id = "nomerchant"
merchants = ["shop-1", "shop-2"]
[providers.auth]
secrets = ["nm-secret"]

[[merchants]]
id = "shop-1"
api_keys = ["shop-1-key"]
allowed_return_origins = ["https://shop.example.com"]
default_site_url = "https://shop.example.com/checkout/return"

[[merchants]]
id = "shop-2"
api_keys = ["shop-2-key"]
allowed_return_origins = ["https://two.example.com"]
"#;

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// `min_free_space` is 1 MiB so that a shared machine's free disk cannot
/// decide a test (the disk-full tests set their own).
pub fn config_text(dir: &std::path::Path, server_extra: &str, body: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}\n[log]\nlevel = \"warn\"\n[storage]\npath = \"{}\"\nmin_free_space = \"1MiB\"\n{body}",
        dir.join("store").display()
    )
}

/// The app on BASE.
pub async fn spawn_app() -> TestApp {
    spawn_with("", BASE).await
}

/// The app on `body` (providers, merchants, …) with `server_extra` lines in `[server]`.
pub async fn spawn_with(server_extra: &str, body: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    spawn_in(dir, server_extra, body).await
}

/// Spawn on an existing directory (restarts keep the store).
pub async fn spawn_in(dir: TempDir, server_extra: &str, body: &str) -> TestApp {
    spawn_clocked(dir, server_extra, body, Arc::new(SystemClock)).await
}

/// [`spawn_with`] on a clock the test moves.
pub async fn spawn_with_clock(body: &str, clock: &ManualClock) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    spawn_clocked(dir, "", body, Arc::new(clock.clone())).await
}

async fn spawn_clocked(
    dir: TempDir,
    server_extra: &str,
    body: &str,
    clock: Arc<dyn Clock>,
) -> TestApp {
    let text = config_text(dir.path(), server_extra, body);
    let settings = Settings::parse(&text, dir.path(), &|_| None).expect("test config is valid");
    let app = Application::build_with_clock(settings.clone(), clock).expect("app builds");
    let port = app.port();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        settings,
        dir,
        stop: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    /// Graceful stop (as on SIGTERM); returns the directory for a restart.
    pub async fn stop(mut self) -> TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Headers `provider` would send for `body`, signed with its first secret.
    pub fn sign(
        &self,
        provider: &str,
        body: &[u8],
        extra: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let p = self
            .settings
            .provider(provider)
            .expect("provider in config");
        let mut map = HeaderMap::new();
        for (k, v) in extra {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let now = chrono::Utc::now().timestamp();
        let signed = ipn_relay::auth::sign(&p.auth, &map, body, now).expect("signable");
        let mut h: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        h.extend(signed.headers);
        h
    }

    /// POST raw bytes to /v1/ipn/{provider} with these headers.
    pub async fn post_raw(
        &self,
        provider: &str,
        body: Vec<u8>,
        headers: &[(String, String)],
    ) -> reqwest::Response {
        let mut rb = self
            .client
            .post(self.url(&format!("/v1/ipn/{provider}")))
            .body(body);
        let mut has_ct = false;
        for (k, v) in headers {
            has_ct |= k.eq_ignore_ascii_case("content-type");
            rb = rb.header(k.as_str(), v.as_str());
        }
        if !has_ct {
            rb = rb.header("content-type", "application/json");
        }
        rb.send().await.expect("request sent")
    }

    /// Sign and POST a JSON body.
    pub async fn post_ipn(&self, provider: &str, body: &Value) -> reqwest::Response {
        let bytes = serde_json::to_vec(body).unwrap();
        let h = self.sign(provider, &bytes, &[]);
        self.post_raw(provider, bytes, &h).await
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Poll the status URL until the task is no longer processing.
    pub async fn wait_done(&self, request_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (code, v) = self
                .get_json(&format!("/v1/async/status/{request_id}"))
                .await;
            if code != 200 || v["status"] != "processing" {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {request_id} still processing"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POST a signed IPN, expect an ack, wait for its task, return its result.
    pub async fn ipn_result(&self, provider: &str, body: &Value) -> (u16, Value) {
        let r = self.post_ipn(provider, body).await;
        assert!(r.status().is_success(), "IPN not accepted: {}", r.status());
        let ack: Value = r.json().await.unwrap();
        let id = ack["request_id"].as_str().unwrap().to_string();
        self.wait_done(&id).await;
        self.get_json(&format!("/v1/async/result/{id}")).await
    }
}

/// `POST /v1/payments` with a Bearer key.
pub async fn register(app: &TestApp, key: &str, body: &Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/v1/payments"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// [`generic`] with extra fields merged into `data`.
pub fn ipn(event_id: &str, payment_id: &str, status: &str, extra: Value) -> Value {
    let mut v = generic(event_id, payment_id, status);
    if let Value::Object(m) = extra {
        for (k, x) in m {
            v["data"][k] = x;
        }
    }
    v
}

/// A generic-preset IPN body.
pub fn generic(event_id: &str, payment_id: &str, status: &str) -> Value {
    serde_json::json!({
        "id": event_id,
        "created": 1_700_000_000,
        "data": {"payment_id": payment_id, "status": status, "amount": 1000, "currency": "eur"}
    })
}

pub fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}
