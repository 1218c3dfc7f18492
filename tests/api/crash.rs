//! Crash safety with a real process: `kill -9` under concurrent load, restart,
//! and every request that got a 2xx is still known; every one that did not
//! is posted again (as the provider would) and ends up there exactly once;
//! SIGTERM exits cleanly.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipn_relay::config::Settings;
use serde_json::Value;

use crate::helpers::*;

pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) port: u16,
}

pub(crate) fn write_config(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n\
         [storage]\npath = \"{}\"\ndurability = \"sync\"\nmin_free_space = \"1MiB\"\n{BASE}",
        dir.join("store").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `ipn-relay serve --config <config>` with stderr piped for [`spawn_serve`].
pub(crate) fn serve_command(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ipn-relay"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Spawn a prepared `serve` command and read the bound port from its JSON
/// start-up log line (stderr keeps being drained afterwards).
pub(crate) fn spawn_serve(mut cmd: Command) -> (Child, u16) {
    let mut child = cmd.spawn().expect("binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["message"] == "ipn-relay listening" {
                        let _ = tx.send(v["port"].as_u64().unwrap() as u16);
                        sent = true;
                    }
                }
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("service reports its port");
    (child, port)
}

/// POST a signed IPN to provider `acme` of a running binary: the ack's JSON
/// on a 2xx, None on anything else (a refused connection, a kill mid-answer).
pub(crate) async fn post_signed(
    client: &reqwest::Client,
    base: &str,
    settings: &Settings,
    body: Vec<u8>,
) -> Option<Value> {
    post_signed_status(client, base, settings, body)
        .await
        .map(|(_, v)| v)
}

/// [`post_signed`] with the 2xx status code (202 new, 200 duplicate).
pub(crate) async fn post_signed_status(
    client: &reqwest::Client,
    base: &str,
    settings: &Settings,
    body: Vec<u8>,
) -> Option<(u16, Value)> {
    let mut rb = client
        .post(format!("{base}/v1/ipn/acme"))
        .header("content-type", "application/json")
        .body(body.clone());
    for (k, v) in sign(settings, &body) {
        rb = rb.header(k, v);
    }
    match rb.send().await {
        Ok(r) if r.status().is_success() => {
            let code = r.status().as_u16();
            Some((code, r.json().await.ok()?))
        }
        _ => None,
    }
}

/// Start the binary on `config`.
pub(crate) fn start(config: &Path) -> Proc {
    let (child, port) = spawn_serve(serve_command(config));
    Proc { child, port }
}

pub(crate) fn sign(settings: &Settings, body: &[u8]) -> Vec<(String, String)> {
    let p = settings.provider("acme").unwrap();
    let map = actix_web::http::header::HeaderMap::new();
    ipn_relay::auth::sign(&p.auth, &map, body, chrono::Utc::now().timestamp())
        .unwrap()
        .headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_requests_survive_kill_9_and_resume_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let settings = Settings::load(&config, &|_| None).unwrap();
    let proc = start(&config);
    let base = format!("http://127.0.0.1:{}", proc.port);
    let client = reqwest::Client::new();

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut load = Vec::new();
    for worker in 0..16 {
        let (client, base, acked, settings) = (
            client.clone(),
            base.clone(),
            acked.clone(),
            settings.clone(),
        );
        load.push(tokio::spawn(async move {
            for i in 0.. {
                let pay = format!("pay_{worker}_{}", i % 5);
                let body = serde_json::to_vec(&generic(
                    &format!("ev_{worker}_{i}"),
                    &pay,
                    ["Pending", "Authorized", "Succeed"][i % 3],
                ))
                .unwrap();
                // A kill mid-answer is not an ack: the provider will retry.
                let Some(v) = post_signed(&client, &base, &settings, body.clone()).await else {
                    return (body, pay);
                };
                acked
                    .lock()
                    .unwrap()
                    .push(v["request_id"].as_str().unwrap().to_string());
            }
            unreachable!()
        }));
    }
    // Let real load build up, then pull the plug.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut proc = proc;
    proc.child.kill().unwrap(); // SIGKILL
    proc.child.wait().unwrap();
    let mut unacked = Vec::new();
    for l in load {
        unacked.push(l.await.unwrap());
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 300,
        "only {} acks before the kill",
        acked.len()
    );

    let mut proc = start(&config);
    let base = format!("http://127.0.0.1:{}", proc.port);
    for id in &acked {
        let r = client
            .get(format!("{base}/v1/async/status/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            200,
            "acked request {id} unknown after kill -9"
        );
    }
    // The provider retries what got no 2xx (one IPN per worker): each is
    // acknowledged now, and posting it once more is a duplicate of it.
    let mut retried = Vec::new();
    for (body, pay) in &unacked {
        let v = post_signed(&client, &base, &settings, body.clone())
            .await
            .expect("a retried IPN is acknowledged");
        let id = v["request_id"].as_str().unwrap().to_string();
        let again = post_signed_status(&client, &base, &settings, body.clone())
            .await
            .expect("a duplicate is acknowledged");
        assert_eq!(again.0, 200, "{}", again.1);
        assert_eq!(again.1["request_id"], id.as_str(), "{}", again.1);
        retried.push((id, pay.clone()));
    }
    // Work that was acked but unprocessed resumes by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in acked.iter().chain(retried.iter().map(|(id, _)| id)) {
        loop {
            let v: Value = client
                .get(format!("{base}/v1/async/status/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["status"] == "completed" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never completed after restart"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Each retried IPN is in its payment's history exactly once.
    for (id, pay) in &retried {
        let p: Value = client
            .get(format!("{base}/v1/payments/{pay}"))
            .bearer_auth(SHOP_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let entries = p["history"]
            .as_array()
            .expect("history")
            .iter()
            .filter(|h| h["request_id"] == id.as_str())
            .count();
        assert_eq!(
            entries, 1,
            "retried {id} in {pay} history {entries} times: {p}"
        );
    }

    // SIGTERM: graceful, exit 0, well within shutdown_timeout.
    let started = Instant::now();
    unsafe {
        libc::kill(proc.child.id() as i32, libc::SIGTERM);
    }
    let status = loop {
        if let Some(s) = proc.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status after SIGTERM: {status:?}");

    // And it comes back with everything after a clean stop too.
    let mut proc = start(&config);
    let base = format!("http://127.0.0.1:{}", proc.port);
    let r = client
        .get(format!("{base}/v1/async/status/{}", acked[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    proc.child.kill().unwrap();
    let _ = proc.child.wait();
}
