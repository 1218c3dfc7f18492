//! When the store cannot write, a provider gets 503 `unavailable` (so it
//! retries) — never a 2xx for a request that is not durable — and, since
//! sled cannot write again after an I/O error, the process exits non-zero
//! for its supervisor to restart it.
//!
//! The failure is real: the binary runs with a file-size limit
//! (`RLIMIT_FSIZE`, SIGXFSZ ignored), so once sled's data file reaches it
//! every write(2) to it fails with EFBIG, exactly like a full disk fails with
//! ENOSPC. No root, no mount, no fault injection inside the app.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Child;

use ipn_relay::config::Settings;
use serde_json::Value;

use crate::crash::{serve_command, spawn_serve};
use crate::helpers::*;

/// Large enough for sled to open and take some writes, small enough to fill fast.
const FILE_LIMIT: u64 = 4 << 20;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_limited(config: &Path) -> (Killed, u16) {
    let mut cmd = serve_command(config);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: FILE_LIMIT,
                rlim_max: FILE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Without this the kernel kills the process instead of failing the write.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let (child, port) = spawn_serve(cmd);
    (Killed(child), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_write_answers_503_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"2s\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n\
             [storage]\npath = \"{}\"\ndurability = \"sync\"\n{BASE}",
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let settings = Settings::load(&config, &|_| None).unwrap();
    let (_child, port) = start_limited(&config);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let sign = |body: &[u8]| {
        let p = settings.provider("acme").unwrap();
        ipn_relay::auth::sign(
            &p.auth,
            &Default::default(),
            body,
            chrono::Utc::now().timestamp(),
        )
        .unwrap()
        .headers
    };

    let pad = "x".repeat(20_000);
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..2000 {
        let mut ipn = generic(&format!("ev_full_{i}"), &format!("pay_full_{i}"), "Succeed");
        ipn["pad"] = Value::String(pad.clone());
        let body = serde_json::to_vec(&ipn).unwrap();
        let mut rb = client
            .post(format!("{base}/v1/ipn/acme"))
            .header("content-type", "application/json")
            .body(body.clone());
        for (k, v) in sign(&body) {
            rb = rb.header(k, v);
        }
        let r = match rb.send().await {
            Ok(r) => r,
            // A background write (an apply) may hit the limit first: the
            // process then stops taking connections on its way out, and
            // this request sees a closed connection instead of its 503.
            Err(e) => {
                refused = Some((i, 0, None, Value::String(e.to_string())));
                break;
            }
        };
        let code = r.status().as_u16();
        if r.status().is_success() {
            let v: Value = r.json().await.unwrap();
            acked.push(v["request_id"].as_str().unwrap().to_string());
            continue;
        }
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let v: Value = r.json().await.unwrap_or(Value::Null);
        refused = Some((i, code, retry, v));
        break;
    }
    let (i, code, retry, v) = refused.expect("the file limit was never hit");
    assert!(
        !acked.is_empty(),
        "the store took writes before it filled up"
    );
    if code == 0 {
        eprintln!("request {i}: connection closed by the exiting service: {v}");
    } else {
        assert_eq!(code, 503, "request {i}: {v}");
        assert_eq!(error_code(&v), "unavailable", "{v}");
        let retry: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!(retry >= 1);
    }

    // sled cannot write again after an I/O error, so the process exits
    // non-zero for its supervisor to restart it (SPEC §8) rather than live
    // on answering 503; until it is gone it acks nothing.
    let mut child = _child;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alive 10 s after the write error"
        );
        let body = serde_json::to_vec(&generic("ev_after", "pay_after", "Succeed")).unwrap();
        let mut rb = client
            .post(format!("{base}/v1/ipn/acme"))
            .header("content-type", "application/json")
            .body(body.clone());
        for (k, v) in sign(&body) {
            rb = rb.header(k, v);
        }
        if let Ok(r) = rb.send().await {
            assert!(!r.status().is_success(), "acked after the write error");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        status.code().is_some_and(|c| c != 0),
        "exit status after the write error: {status:?}"
    );
    eprintln!("acked {} before the first 503", acked.len());

    // Every request that got a 2xx is on disk: after a kill -9 and a restart
    // without the limit, all of them are known and complete.
    drop(child);
    let app = spawn_in(dir, "", BASE).await;
    for id in &acked {
        let status = app.wait_done(id).await;
        assert_eq!(status["status"], "completed", "{id}: {status}");
    }
    // And the store works again once there is room.
    let r = app
        .post_ipn("acme", &generic("ev_room", "pay_room", "Succeed"))
        .await;
    assert_eq!(r.status().as_u16(), 202);
}
