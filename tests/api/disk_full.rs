//! A real full disk (SPEC §8): the binary runs with its store on a small
//! tmpfs that the test fills with a ballast file and frees again.
//!
//! - With `storage.min_free_space` above what is left, ingest and `/readyz`
//!   answer 503 before sled meets ENOSPC, and the service takes IPNs again
//!   as soon as the ballast is gone; nothing acknowledged is lost.
//! - With the check off (`"0"`) sled itself hits ENOSPC, which it cannot
//!   recover from in-process: the service must then exit non-zero (or take
//!   IPNs again), never stay alive answering 503.
//!
//! Needs root (it mounts a tmpfs); the guard unmounts it, also on failure.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use ipn_relay::config::Settings;
use serde_json::Value;

use crate::crash::{post_signed, serve_command, sign, spawn_serve};
use crate::helpers::*;

/// A tmpfs of `size` mounted on a fresh temp dir; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let target = CString::new(dir.path().as_os_str().as_bytes()).unwrap();
        let opts = CString::new(format!("size={size},mode=0700")).unwrap();
        // SAFETY: NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting a tmpfs (these tests run as root): {}",
            std::io::Error::last_os_error()
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Free bytes, measured here rather than with the code under test.
    fn available(&self) -> u64 {
        let path = CString::new(self.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated path; `st` is written by the call.
        unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(path.as_ptr(), &mut st), 0);
            st.f_bavail as u64 * st.f_frsize as u64
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.dir.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: as in `mount`; MNT_DETACH so a busy mount still goes.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Kills the child on drop (declared after the [`Tmpfs`], so dropped first).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(dir: &Path, store: &Path, min_free: &str) -> PathBuf {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"2s\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n\
         [storage]\npath = \"{}\"\ndurability = \"sync\"\nmin_free_space = \"{min_free}\"\n{BASE}",
        store.display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Write `bytes` of ballast (or until the filesystem is full if `None`).
fn fill(path: &Path, bytes: Option<u64>) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 1 << 20];
    let mut left = bytes.unwrap_or(u64::MAX);
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        match f.write(&chunk[..n]) {
            Ok(0) => break,
            Ok(w) => left -= w as u64,
            Err(e) if bytes.is_none() && e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("writing ballast: {e}"),
        }
    }
    let _ = f.sync_all();
}

/// POST a signed IPN: (status, Retry-After, body JSON); None if no answer.
async fn post(
    client: &reqwest::Client,
    base: &str,
    settings: &Settings,
    body: &[u8],
) -> Option<(u16, Option<String>, Value)> {
    let mut rb = client
        .post(format!("{base}/v1/ipn/acme"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in sign(settings, body) {
        rb = rb.header(k, v);
    }
    let r = rb.send().await.ok()?;
    let code = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    Some((code, retry, r.json().await.unwrap_or(Value::Null)))
}

async fn readyz(client: &reqwest::Client, base: &str) -> Option<u16> {
    let r = client.get(format!("{base}/readyz")).send().await.ok()?;
    Some(r.status().as_u16())
}

/// Every id ends `completed` (polled: the processor may still be at it).
async fn all_completed(client: &reqwest::Client, base: &str, ids: &[String]) {
    for id in ids {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = client
                .get(format!("{base}/v1/async/status/{id}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "acked request {id} unknown");
            let v: Value = r.json().await.unwrap();
            if v["status"] == "completed" {
                break;
            }
            assert!(Instant::now() < deadline, "{id} never completed: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn ipn(name: &str, pad: usize) -> Vec<u8> {
    let mut v = generic(&format!("ev_{name}"), &format!("pay_{name}"), "Succeed");
    if pad > 0 {
        v["pad"] = Value::String("x".repeat(pad));
    }
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_free_space_refuses_with_503_and_recovers_once_space_is_freed() {
    let tmpfs = Tmpfs::mount("64m");
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &tmpfs.path().join("store"), "16MiB");
    let settings = Settings::load(&config, &|_| None).unwrap();
    let (child, port) = spawn_serve(serve_command(&config));
    let mut child = Killed(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let mut acked = Vec::new();
    for i in 0..20 {
        let v = post_signed(&client, &base, &settings, ipn(&format!("pre_{i}"), 0))
            .await
            .expect("acked while there is room");
        acked.push(v["request_id"].as_str().unwrap().to_string());
    }
    assert_eq!(readyz(&client, &base).await, Some(200));

    // Leave 8 MiB: below the 16 MiB threshold, plenty for sled.
    let ballast = tmpfs.path().join("ballast");
    fill(&ballast, Some(tmpfs.available().saturating_sub(8 << 20)));
    assert!(tmpfs.available() < 16 << 20);

    // Within the re-check interval the service notices and refuses.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut n = 0;
    let (code, retry, v) = loop {
        n += 1;
        let got = post(&client, &base, &settings, &ipn(&format!("low_{n}"), 0))
            .await
            .expect("the service answers");
        match got.0 {
            202 => acked.push(got.2["request_id"].as_str().unwrap().to_string()),
            _ => break got,
        }
        assert!(Instant::now() < deadline, "still acking with the disk low");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let refused = ipn(&format!("low_{n}"), 0);
    assert_eq!(code, 503, "{v}");
    assert_eq!(error_code(&v), "unavailable", "{v}");
    assert!(retry.expect("Retry-After").parse::<u64>().unwrap() >= 1);
    assert_eq!(readyz(&client, &base).await, Some(503));
    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The event is not stored: it was refused before the store saw it.
    let again = post(&client, &base, &settings, &refused).await.unwrap();
    assert_eq!(again.0, 503);

    // Free the space: the refused IPN, retried, is acknowledged as new
    // (202, not a 200 duplicate) within 10 s.
    std::fs::remove_file(&ballast).unwrap();
    let started = Instant::now();
    let v = loop {
        match post(&client, &base, &settings, &refused).await {
            Some((202, _, v)) => break v,
            other => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "still refusing 10 s after space was freed: {other:?}"
                );
                assert!(child.0.try_wait().unwrap().is_none(), "the service exited");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "accepting again {:?} after the ballast went",
        started.elapsed()
    );
    acked.push(v["request_id"].as_str().unwrap().to_string());
    assert_eq!(readyz(&client, &base).await, Some(200));
    all_completed(&client, &base, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_in_sled_never_leaves_a_live_service_answering_503() {
    let tmpfs = Tmpfs::mount("64m");
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &tmpfs.path().join("store"), "0");
    let settings = Settings::load(&config, &|_| None).unwrap();
    let (child, port) = spawn_serve(serve_command(&config));
    let mut child = Killed(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let mut acked = Vec::new();
    for i in 0..10 {
        let v = post_signed(&client, &base, &settings, ipn(&format!("pre_{i}"), 0))
            .await
            .expect("acked while there is room");
        acked.push(v["request_id"].as_str().unwrap().to_string());
    }
    let ballast = tmpfs.path().join("ballast");
    fill(&ballast, None);

    // Write until sled meets ENOSPC (its preallocated room runs out).
    let mut refused = None;
    for i in 0..4000 {
        match post(
            &client,
            &base,
            &settings,
            &ipn(&format!("full_{i}"), 20_000),
        )
        .await
        {
            Some((202, _, v)) => acked.push(v["request_id"].as_str().unwrap().to_string()),
            other => {
                refused = Some(other);
                break;
            }
        }
    }
    let refused = refused.expect("the disk never filled up");
    if let Some((code, _, v)) = &refused {
        assert_eq!(*code, 503, "{v}");
        assert_eq!(error_code(v), "unavailable", "{v}");
    }

    std::fs::remove_file(&ballast).unwrap();
    let started = Instant::now();
    let outcome = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break Err(status);
        }
        if let Some((202, _, _)) = post(&client, &base, &settings, &ipn("after", 0)).await {
            break Ok(());
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "alive and refusing 10 s after space was freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    match outcome {
        Ok(()) => eprintln!("recovered in-process after {:?}", started.elapsed()),
        Err(status) => {
            assert!(
                status.code().is_some_and(|c| c != 0),
                "exited, but not with a non-zero exit code: {status:?} (signal {:?})",
                status.signal()
            );
            eprintln!("exited with {status:?} after the write error");
            // The supervisor restarts it: everything acked is there, and it
            // takes IPNs again.
            drop(child);
            let (c, port) = spawn_serve(serve_command(&config));
            let _restarted = Killed(c);
            let base = format!("http://127.0.0.1:{port}");
            let v = post_signed(&client, &base, &settings, ipn("restarted", 0))
                .await
                .expect("acked after the restart");
            acked.push(v["request_id"].as_str().unwrap().to_string());
            all_completed(&client, &base, &acked).await;
            return;
        }
    }
    all_completed(&client, &base, &acked).await;
    drop(child);
}
