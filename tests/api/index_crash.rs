//! A store from a build before the per-merchant delivery index gets the
//! index at its first open, in one atomic write with its mark. The real
//! binary stops on the spot (`FAILPOINTS=store::open::by_merchant=return`,
//! as `kill -9` would) just before that write: the store is left as it was
//! (no index entry, no mark), and the next open builds it, so each
//! merchant lists its deliveries again.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use ipn_relay::config::Settings;

use crate::crash::{post_signed_status, serve_command, spawn_serve};
use crate::exactly_once::attempt;
use crate::failpoints::{get, no_core_dumps, wait_exit};
use crate::relay_crash::{client, received_events, write_config};
use crate::sink::Sink;

const INDEX: &str = "deliveries_by_merchant";
const MARK: &[u8] = b"by_merchant_built";

/// What the index tree and the mark hold, read with sled directly.
fn index_state(store: &Path) -> (usize, bool) {
    let db = sled::open(store).unwrap();
    let n = db.open_tree(INDEX).unwrap().len();
    let marked = db.open_tree("meta").unwrap().get(MARK).unwrap().is_some();
    (n, marked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_building_the_merchant_index_leaves_it_to_the_next_open() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let config = write_config(dir.path(), &sink.url("/hook"), "5s");
    let settings = Settings::load(&config, &|_| None).unwrap();
    let c = client();
    let events: Vec<String> = (0..3).map(|i| format!("idx_{i}")).collect();

    // Three delivered changes, then a clean stop.
    let (mut child, port) = spawn_serve(serve_command(&config));
    let base = format!("http://127.0.0.1:{port}");
    for (i, e) in events.iter().enumerate() {
        let body = attempt(e, &format!("idx_pay_{i}"), 0);
        assert!(post_signed_status(&c, &base, &settings, body)
            .await
            .is_some());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while received_events(&sink).len() < events.len() {
        assert!(Instant::now() < deadline, "not all delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child, Duration::from_secs(20)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "clean stop");

    // As an earlier build left the store: no index, no mark.
    {
        let db = sled::open(&store).unwrap();
        assert!(db.drop_tree(INDEX).unwrap(), "this build wrote the index");
        db.open_tree("meta").unwrap().remove(MARK).unwrap();
        db.flush().unwrap();
    }
    assert_eq!(index_state(&store), (0, false));

    // Stopped just before the build's one write: nothing of it is there.
    let mut cmd = serve_command(&config);
    cmd.env("FAILPOINTS", "store::open::by_merchant=return");
    no_core_dumps(&mut cmd);
    let mut child = cmd.spawn().expect("binary starts");
    let status = wait_exit(&mut child, Duration::from_secs(30)).await;
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let status = status.expect("the crash point fired");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    assert_eq!(index_state(&store), (0, false), "half an index build");

    // The next open builds it whole: the merchant lists every delivery.
    let (mut child, port) = spawn_serve(serve_command(&config));
    let base = format!("http://127.0.0.1:{port}");
    let listed = get(&c, format!("{base}/v1/deliveries"), Some("shop-1-key")).await;
    let got = listed["data"].as_array().unwrap();
    assert_eq!(got.len(), events.len(), "{listed}");
    assert!(got.iter().all(|d| d["state"] == "succeeded"), "{listed}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child, Duration::from_secs(20)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "clean stop");
    assert_eq!(index_state(&store), (events.len(), true));
}
