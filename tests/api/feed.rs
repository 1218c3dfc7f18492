//! The events feed reads its writes: once a task result names an event, the
//! feed lists it, even while the group flush that makes it durable is still
//! running (the feed lists durable events only, so it waits for that flush).
//!
//! The real binary runs with the `store::flushed` point armed to sleep
//! (`FAILPOINTS=store::flushed=sleep(600)`): every group flush takes 600 ms
//! more, so the feed is read well inside the flush of the write that
//! completed the task. Without the wait it would list nothing.

use std::time::{Duration, Instant};

use ipn_relay::config::Settings;

use crate::crash::{post_signed_status, serve_command, spawn_serve, write_config};
use crate::failpoints::get;
use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_named_by_a_task_result_is_in_the_feed_during_a_slow_flush() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let settings = Settings::load(&config, &|_| None).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut cmd = serve_command(&config);
    cmd.env("FAILPOINTS", "store::flushed=sleep(600)");
    let (mut child, port) = spawn_serve(cmd);
    let base = format!("http://127.0.0.1:{port}");

    for (n, status) in ["Pending", "Succeed"].into_iter().enumerate() {
        let body = serde_json::to_vec(&generic(&format!("feed_{n}"), "pay_feed", status)).unwrap();
        let posted = Instant::now();
        let (code, ack) = post_signed_status(&client, &base, &settings, body)
            .await
            .expect("acknowledged");
        assert_eq!(code, 202, "{ack}");
        // The ack waits for its flush (durability = sync): at least the
        // armed sleep, or the failpoint is not armed and this test shows
        // nothing (a lower bound set by the test itself, not a timing race).
        assert!(
            posted.elapsed() >= Duration::from_millis(600),
            "the slowed flush did not happen: build with --features failpoints"
        );
        let id = ack["request_id"].as_str().unwrap();

        // The task result as soon as it shows: the write that completed it
        // is committed, its flush has just begun.
        let deadline = Instant::now() + Duration::from_secs(20);
        let result = loop {
            let r = get(&client, format!("{base}/v1/async/result/{id}"), None).await;
            if r["status"] != "processing" {
                break r;
            }
            assert!(Instant::now() < deadline, "{id} still processing");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(result["status"], "completed", "{result}");
        let named = result["events"][0]["event_id"]
            .as_str()
            .unwrap()
            .to_string();

        let started = Instant::now();
        let url = format!("{base}/v1/events?payment_id=pay_feed");
        let feed = get(&client, url, Some(SHOP_KEY)).await;
        let waited = started.elapsed();
        let ids: Vec<&str> = feed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), n + 1, "{feed}");
        assert_eq!(
            ids[n], named,
            "the feed lists the event the task named: {feed}"
        );
        // Not a timing assertion: shows the read did overlap the flush (the
        // test is only worth anything if it did).
        eprintln!("feed read waited {waited:?} for the flush");
    }
    let _ = child.kill();
    let _ = child.wait();
}
