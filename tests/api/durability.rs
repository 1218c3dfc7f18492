//! Durability of a large body on power loss, read from the system calls.
//!
//! sled 0.34 writes a log message over segment size / 4 (here: an IPN with
//! a ~500 KiB body) to its own file under `<store>/blobs/` and never fsyncs
//! it; the group flush of the store fsyncs new blob files and the blobs
//! directory. `kill -9` cannot show whether that happened (the page cache
//! survives a killed process, not a power loss), so the real binary runs
//! under `strace -f -y` and the log must show: the body's bytes (its
//! marker, and at least its size) written to a file of the store, the body
//! in a file under `blobs/`, that file fsynced (or fdatasynced) after the write
//! and, for a file under `blobs/`, the directory fsynced too, all before
//! the `HTTP/1.1 202` was written to the socket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ipn_relay::config::Settings;
use serde_json::json;

use crate::crash::{post_signed_status, spawn_serve, write_config};
use crate::helpers::*;

const STRACE: &str = "/usr/bin/strace";
/// Starts the big string in the body: letters only, so strace prints it as is.
const MARKER: &str = "DurabilityMarkerQz7Kx";
const BODY_BYTES: usize = 500 * 1024;

/// One system call of the log: the line it started on, the line it ended
/// on (`<unfinished ...>` / `<... resumed>` pairs joined), its text.
struct Call {
    start: usize,
    end: usize,
    name: String,
    /// What `-y` printed for the first argument (`<path>`), if anything.
    fd_path: Option<String>,
    text: String,
    ret: Option<i64>,
}

fn parse(log: &str) -> Vec<Call> {
    let mut pending: HashMap<&str, (usize, String)> = HashMap::new();
    let mut calls = Vec::new();
    for (i, line) in log.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let (start, text) = if rest.starts_with("<... ") {
            let Some((s, head)) = pending.remove(pid) else {
                continue;
            };
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            (s, format!("{head}{tail}"))
        } else if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, (i, head.to_string()));
            continue;
        } else if rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        } else {
            (i, rest.to_string())
        };
        let Some((name, args)) = text.split_once('(') else {
            continue;
        };
        let fd_path = args
            .split_once('<')
            .filter(|(fd, _)| fd.chars().all(|c| c.is_ascii_digit()))
            .and_then(|(_, p)| p.split_once('>'))
            .map(|(p, _)| p.to_string());
        let ret = text
            .rsplit_once(" = ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|r| r.parse().ok());
        calls.push(Call {
            start,
            end: i,
            name: name.to_string(),
            fd_path,
            text,
            ret,
        });
    }
    calls
}

fn is_write(c: &Call) -> bool {
    matches!(
        c.name.as_str(),
        "write" | "pwrite64" | "writev" | "pwritev" | "sendto" | "sendmsg"
    )
}

fn is_sync(c: &Call, path: &str) -> bool {
    matches!(c.name.as_str(), "fsync" | "fdatasync")
        && c.fd_path.as_deref() == Some(path)
        && c.ret == Some(0)
}

/// The pid of the only child of `pid` (the service strace started).
fn child_of(pid: u32) -> i32 {
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let kids: Vec<i32> = list
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(kids.len(), 1, "children of strace: {kids:?}");
    kids[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_is_fsynced_in_its_blob_file_before_the_202() {
    assert!(
        Path::new(STRACE).exists(),
        "{STRACE} is needed (apt-get install strace; .ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let settings = Settings::load(&config, &|_| None).unwrap();
    let trace = dir.path().join("strace.log");
    let mut cmd = Command::new(STRACE);
    cmd.args(["-f", "-y", "-qq", "-s", "1048576", "-o"])
        .arg(&trace)
        .arg("-e")
        .arg(
            "trace=openat,write,pwrite64,writev,pwritev,sendto,sendmsg,\
             fsync,fdatasync,sync_file_range",
        )
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_ipn-relay"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let (mut strace, port) = spawn_serve(cmd);
    let base = format!("http://127.0.0.1:{port}");

    let mut big = String::from(MARKER);
    while big.len() < BODY_BYTES {
        big.push_str("abcdefghijklmnopqrstuvwxyz0123456789");
    }
    let body =
        serde_json::to_vec(&ipn("dur_1", "dur_pay", "Pending", json!({"blob": big}))).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (code, ack) = post_signed_status(&client, &base, &settings, body)
        .await
        .expect("the big IPN is acknowledged");
    assert_eq!(code, 202, "{ack}");

    // Power off: nothing after the 202 counts.
    let service = child_of(strace.id());
    unsafe {
        libc::kill(service, libc::SIGKILL);
    }
    strace.wait().unwrap();
    let log = std::fs::read_to_string(&trace).unwrap();
    let calls = parse(&log);

    let answer = calls
        .iter()
        .find(|c| is_write(c) && c.text.contains("HTTP/1.1 202"))
        .expect("the 202 written to a socket");
    let store: PathBuf = std::fs::canonicalize(dir.path().join("store")).unwrap();
    let store = store.to_str().unwrap();
    // Every file of the store that got the body's bytes before the 202.
    let carriers: Vec<&Call> = calls
        .iter()
        .filter(|c| c.end < answer.start && is_write(c) && c.text.contains(MARKER))
        .filter(|c| c.fd_path.as_deref().is_some_and(|p| p.starts_with(store)))
        .collect();
    assert!(
        !carriers.is_empty(),
        "the body was not written to any file of {store} before the 202"
    );
    let mut blob_files = 0;
    for w in carriers {
        let path = w.fd_path.as_deref().unwrap();
        let written: i64 = calls
            .iter()
            .filter(|c| c.end < answer.start && is_write(c) && c.fd_path.as_deref() == Some(path))
            .filter_map(|c| c.ret)
            .sum();
        assert!(
            written >= BODY_BYTES as i64,
            "{path}: only {written} bytes written before the 202"
        );
        let synced = calls
            .iter()
            .find(|c| is_sync(c, path) && c.start > w.end && c.end < answer.start);
        eprintln!(
            "line {}: {} of the body to {path}; line {}: {:?}; line {}: the 202",
            w.start + 1,
            w.name,
            synced.map_or(0, |c| c.end + 1),
            synced.map(|c| &c.name),
            answer.start + 1
        );
        assert!(
            synced.is_some(),
            "{path} holds the body ({} call on line {}) but was not fsynced before the 202 (line {})",
            w.name,
            w.start + 1,
            answer.start + 1
        );
        let parent = Path::new(path).parent().unwrap();
        if parent.file_name().is_some_and(|n| n == "blobs") {
            blob_files += 1;
            let parent = parent.to_str().unwrap();
            let dir_synced = calls
                .iter()
                .any(|c| is_sync(c, parent) && c.start > w.end && c.end < answer.start);
            assert!(
                dir_synced,
                "{parent} (holding the new {path}) not fsynced before the 202"
            );
        }
    }
    // sled keeps a message this big in a blob file: the case this is about.
    assert!(blob_files > 0, "the body went to no file under blobs/");
}
