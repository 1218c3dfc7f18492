//! Crash safety of the relay's API writes, with the real binary and a real
//! local sink: creating, patching and deleting an endpoint, replaying an
//! endpoint's events and retrying a dead delivery are each one atomic write.
//!
//! A first run (no failpoints) prepares the store: one IPN reaches the
//! config endpoint `ep_sink` (the sink answers 200) and an API endpoint
//! (the sink answers 500 until the delivery is dead). Then the
//! binary runs with `FAILPOINTS=store::commit::manage=<n>*off->return`
//! and the five API writes go in order: the n-th stops the process before
//! its write is committed, so its caller gets no answer. After a restart
//! without failpoints, every write that was answered is there, the
//! unanswered one left no trace, and the caller repeating it (as a client
//! whose request failed would) gets it done.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use ipn_relay::config::Settings;
use serde_json::{json, Value};

use crate::crash::{post_signed_status, serve_command, spawn_serve};
use crate::exactly_once::attempt;
use crate::failpoints::{no_core_dumps, wait_exit};
use crate::helpers::*;
use crate::relay_crash::{client, write_config};
use crate::sink::{Reply, Sink};

/// The API writes, in the order they go in; the crash stops the n-th.
const OPS: [&str; 5] = ["create", "patch", "replay", "retry", "delete"];
/// The endpoint "create" makes (nothing is ever sent to it).
const NEW_URL: &str = "http://127.0.0.1:9/unused";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_any_api_write_of_the_relay_leaves_it_whole_or_absent() {
    for n in 0..OPS.len() {
        scenario(n).await;
    }
}

struct Api {
    client: reqwest::Client,
    base: String,
    /// The id of the API endpoint whose delivery is dead.
    dead_ep: String,
}

impl Api {
    /// The answer, or None when the process died before answering.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Option<(u16, Value)> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self
            .client
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(SHOP_KEY);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.ok()?;
        let code = r.status().as_u16();
        Some((code, r.json().await.unwrap_or(Value::Null)))
    }

    async fn get(&self, path: &str) -> Value {
        let (code, v) = self.call("GET", path, None).await.expect("answered");
        assert_eq!(code, 200, "GET {path}: {v}");
        v
    }

    async fn deliveries(&self, query: &str) -> Vec<Value> {
        self.get(&format!("/v1/deliveries?{query}&limit=100")).await["data"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Poll until the deliveries of `query` satisfy `pred` (20 s at most).
    async fn wait(&self, query: &str, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let d = self.deliveries(query).await;
            if pred(&d) {
                return d;
            }
            assert!(Instant::now() < deadline, "{what}: {d:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The endpoints "create" made (ids are the service's to choose).
    async fn created(&self) -> Vec<Value> {
        let all = self.get("/v1/endpoints").await["data"]
            .as_array()
            .unwrap()
            .clone();
        all.into_iter().filter(|e| e["url"] == NEW_URL).collect()
    }

    async fn created_id(&self) -> String {
        let c = self.created().await;
        assert_eq!(c.len(), 1, "{c:?}");
        c[0]["id"].as_str().unwrap().to_string()
    }

    /// The i-th API write; None when the process died before answering.
    async fn op(&self, i: usize, dead_delivery: &str) -> Option<(u16, Value)> {
        match OPS[i] {
            "create" => {
                let body = json!({"url": NEW_URL, "events": ["*"], "description": "first"});
                self.call("POST", "/v1/endpoints", Some(body)).await
            }
            "patch" => {
                let body = json!({"description": "patched"});
                let path = format!("/v1/endpoints/{}", self.created_id().await);
                self.call("PATCH", &path, Some(body)).await
            }
            "replay" => {
                let body = json!({"since": "2000-01-01T00:00:00Z"});
                self.call("POST", "/v1/endpoints/ep_sink/replay", Some(body))
                    .await
            }
            "retry" => {
                let path = format!("/v1/deliveries/{dead_delivery}/retry");
                self.call("POST", &path, None).await
            }
            "delete" => {
                let path = format!("/v1/endpoints/{}", self.created_id().await);
                self.call("DELETE", &path, None).await
            }
            _ => unreachable!(),
        }
    }

    /// Check that write `i` took effect (`done`) or left no trace.
    async fn check(&self, i: usize, done: bool, dead_delivery: &str, ctx: &str) {
        let created = self.created().await;
        match OPS[i] {
            "create" => assert_eq!(created.len(), done as usize, "{ctx}: {created:?}"),
            "patch" => {
                let want = if done { "patched" } else { "first" };
                assert_eq!(created[0]["description"], want, "{ctx}: {created:?}");
            }
            "replay" => {
                let n = self.deliveries("endpoint_id=ep_sink").await.len();
                assert_eq!(n, 1 + done as usize, "{ctx}: ep_sink deliveries");
            }
            "retry" => {
                let q = format!("endpoint_id={}", self.dead_ep);
                if done {
                    self.wait(&q, "retried, then delivered", |d| {
                        d[0]["id"] == dead_delivery && d[0]["state"] == "succeeded"
                    })
                    .await;
                } else {
                    let d = self.get(&format!("/v1/deliveries/{dead_delivery}")).await;
                    assert_eq!(d["state"], "dead", "{ctx}: not retried: {d}");
                }
            }
            "delete" => assert_eq!(created.len(), !done as usize, "{ctx}: {created:?}"),
            _ => unreachable!(),
        }
    }
}

async fn scenario(n: usize) {
    let ctx = format!("store::commit::manage={n} ({})", OPS[n]);
    let sink = Sink::start().await;
    // Dead after its six attempts (the first and five retries); once
    // retried by hand it succeeds.
    let mut replies = vec![Reply::status(500); 6];
    replies.push(Reply::ok());
    sink.script("/dead", replies);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sink.url("/hook"), "5s");
    let settings = Settings::load(&config, &|_| None).unwrap();

    // Prepare: one delivery to ep_sink succeeded, one to the API endpoint dead.
    let (mut child, port) = spawn_serve(serve_command(&config));
    let mut api = Api {
        client: client(),
        base: format!("http://127.0.0.1:{port}"),
        dead_ep: String::new(),
    };
    let body = json!({"url": sink.url("/dead"), "events": ["*"]});
    let (code, v) = api.call("POST", "/v1/endpoints", Some(body)).await.unwrap();
    assert_eq!(code, 201, "{ctx}: {v}");
    api.dead_ep = v["id"].as_str().unwrap().to_string();
    let (code, _) = post_signed_status(
        &api.client,
        &api.base,
        &settings,
        attempt("m_1", "m_pay", 0),
    )
    .await
    .expect("acknowledged");
    assert_eq!(code, 202);
    api.wait("endpoint_id=ep_sink", "delivered to ep_sink", |d| {
        d.len() == 1 && d[0]["state"] == "succeeded"
    })
    .await;
    let dead = api
        .wait(&format!("endpoint_id={}", api.dead_ep), "dead", |d| {
            d.len() == 1 && d[0]["state"] == "dead"
        })
        .await;
    let dead = dead[0]["id"].as_str().unwrap().to_string();
    let _ = child.kill();
    let _ = child.wait();

    // The crash run: writes before the n-th are answered, the n-th is not.
    let mut cmd = serve_command(&config);
    cmd.env(
        "FAILPOINTS",
        format!("store::commit::manage={n}*off->return"),
    );
    no_core_dumps(&mut cmd);
    let (mut child, port) = spawn_serve(cmd);
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        ..api
    };
    for (i, name) in OPS.iter().enumerate().take(n) {
        let (code, v) = api.op(i, &dead).await.expect("answered before the crash");
        assert!(code < 300, "{ctx}: {name} answered {code}: {v}");
    }
    let got = api.op(n, &dead).await;
    let status = wait_exit(&mut child, Duration::from_secs(10)).await;
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("{ctx}: the crash point never fired (answer: {got:?})")
    });
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{ctx}: {status:?}");
    assert!(got.is_none(), "{ctx}: answered before the crash: {got:?}");

    // Restart: answered writes are there, the unanswered one is not; done
    // again, it takes effect.
    let (mut child, port) = spawn_serve(serve_command(&config));
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        ..api
    };
    for i in 0..n {
        api.check(i, true, &dead, &ctx).await;
    }
    api.check(n, false, &dead, &ctx).await;
    let (code, v) = api.op(n, &dead).await.expect("answered after the restart");
    assert!(code < 300, "{ctx}: {} again answered {code}: {v}", OPS[n]);
    api.check(n, true, &dead, &ctx).await;
    let _ = child.kill();
    let _ = child.wait();
}
