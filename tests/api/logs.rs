//! Logs an operator can follow, from the real binary: with `log.format =
//! "json"` one IPN's request id leads to its ingest, apply and delivery
//! lines, each one flat JSON object without build-machine paths; the
//! pretty format writes no colour codes into a pipe.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipn_relay::config::Settings;
use serde_json::Value;

use crate::crash::{post_signed, serve_command};
use crate::helpers::*;
use crate::relay_helpers::{PATIENCE, SECRET_1};
use crate::sink::Sink;

fn write_config(dir: &Path, format: &str, sink_url: &str) -> PathBuf {
    let endpoint = format!(
        "\n[[merchants.endpoints]]\nid = \"ep_log\"\nurl = \"{sink_url}\"\nsecret = \"{SECRET_1}\"\n\n[[merchants]]\nid = \"shop-2\""
    );
    let body = BASE.replacen("\n[[merchants]]\nid = \"shop-2\"", &endpoint, 1);
    assert_ne!(body, BASE, "BASE still has shop-2 after shop-1");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n[log]\nformat = \"{format}\"\nlevel = \"info\"\n\
         [storage]\npath = \"{}\"\nmin_free_space = \"1MiB\"\n\
         [delivery]\nallow_private_targets = true\n{body}",
        dir.join("store").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The binary with every stderr line kept (also used by `unauthenticated.rs`).
pub(crate) struct Logged {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    pub(crate) fn start(mut cmd: Command) -> Logged {
        let mut child = cmd.spawn().expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line);
            }
        });
        Logged { child, lines }
    }

    /// Wait until a line satisfies `pred`; returns it.
    pub(crate) async fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + PATIENCE;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(
                Instant::now() < end,
                "no log line {what}: {:#?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The port from the JSON "ipn-relay listening" line, once it is logged.
    pub(crate) async fn port(&self) -> u16 {
        let listening = self
            .wait_line("ipn-relay listening", |l| {
                json(l).is_some_and(|m| m["message"] == "ipn-relay listening")
            })
            .await;
        json(&listening).unwrap()["port"].as_u64().unwrap() as u16
    }

    pub(crate) fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A log line as one JSON object, or None.
pub(crate) fn json(line: &str) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_follows_one_ipn_from_ingest_to_delivery() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "json", &sink.url("/hook"));
    let settings = Settings::load(&config, &|_| None).unwrap();
    let app = Logged::start(serve_command(&config));
    let base = format!("http://127.0.0.1:{}", app.port().await);

    let body = serde_json::to_vec(&generic("log_1", "pay_log", "Succeed")).unwrap();
    let ack = post_signed(&reqwest::Client::new(), &base, &settings, body)
        .await
        .expect("IPN acknowledged");
    let rid = ack["request_id"].as_str().unwrap().to_string();
    sink.wait_for("/hook", 1, PATIENCE).await;
    app.wait_line("for the delivery attempt", |l| {
        l.contains(&rid) && l.contains("delivery attempt")
    })
    .await;

    let mine: Vec<serde_json::Map<String, Value>> = app
        .all()
        .iter()
        .filter(|l| l.contains(&rid))
        .map(|l| json(l).unwrap_or_else(|| panic!("not one JSON object: {l}")))
        .collect();
    let find = |msg: &str| {
        mine.iter()
            .find(|m| m["message"] == msg && m["request_id"] == rid.as_str())
            .unwrap_or_else(|| panic!("no {msg:?} line with request_id {rid}: {mine:#?}"))
    };
    let ingest = find("IPN accepted");
    assert_eq!(ingest["provider"], "acme", "{ingest:?}");
    let applied = find("IPN applied");
    assert_eq!(applied["payment_id"], "pay_log", "{applied:?}");
    let attempt = find("delivery attempt");
    assert_eq!(attempt["endpoint_id"], "ep_log", "{attempt:?}");
    assert_eq!(attempt["payment_id"], "pay_log", "{attempt:?}");
    assert!(
        attempt["delivery_id"]
            .as_str()
            .is_some_and(|d| d.starts_with("dlv_")),
        "{attempt:?}"
    );
    for m in &mine {
        assert!(
            m.values().all(|v| !v.is_object() && !v.is_array()),
            "not flat: {m:?}"
        );
        assert!(
            !m.keys()
                .any(|k| k.contains("file") || k.contains("line") || k.starts_with("log.")),
            "source paths in the log: {m:?}"
        );
        assert!(
            m.contains_key("timestamp") && m.contains_key("level"),
            "{m:?}"
        );
    }
    // Every line is JSON, not only this IPN's.
    for l in app.all() {
        assert!(json(&l).is_some(), "not JSON: {l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretty_log_into_a_pipe_has_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "pretty", "http://127.0.0.1:9/hook");
    let app = Logged::start(serve_command(&config));
    app.wait_line("ipn-relay listening", |l| l.contains("ipn-relay listening"))
        .await;
    let all = app.all().join("\n");
    assert!(!all.contains("\x1b["), "ANSI codes in a piped log: {all:?}");
    assert!(all.contains("INFO"), "{all}");
}
