//! Crash safety of the whole relay path, with the real binary and a real
//! local sink (SPEC §6 "Durable"):
//!
//! - **Crash points**: the binary runs with one crash point armed
//!   (`FAILPOINTS=<point>=<n>*off->return`): the apply write that also fans
//!   out deliveries, the write of an attempt's result, the moment after an
//!   endpoint answered but before its result is written, and after a commit.
//!   IPNs go in one at a time, each waiting until the sink has its
//!   notification (or the process died), so every point is passed once per
//!   IPN and each n fires.
//! - **kill -9** while deliveries are in flight (the sink is slow) and
//!   pending (they queue behind them).
//! - **SIGTERM** while one is in flight: it finishes, the ones waiting stay
//!   pending, and go out after the restart.
//!
//! After each restart every IPN is posted again (as a provider retries what
//! was not acknowledged), and then: every event the feed shows reached the
//! sink at least once, nothing reached it that the feed does not show
//! (nothing sent that was not applied), every delivery ends `succeeded`,
//! and each payment's notifications first arrived in sequence order.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipn_relay::config::Settings;
use serde_json::Value;

use crate::crash::{post_signed_status, serve_command, spawn_serve};
use crate::exactly_once::attempt;
use crate::failpoints::{get, no_core_dumps, wait_exit};
use crate::helpers::*;
use crate::relay_helpers::SECRET_1;
use crate::sink::{Reply, Sink};

const IPNS: usize = 12;
const PAYMENTS: usize = 4;

/// BASE with `[delivery]` for a loopback sink and one config endpoint of
/// shop-1 (acme's merchant) at `sink_url`.
pub(crate) fn write_config(dir: &Path, sink_url: &str, shutdown: &str) -> PathBuf {
    let endpoint = format!(
        "\n[[merchants.endpoints]]\nid = \"ep_sink\"\nurl = \"{sink_url}\"\nsecret = \"{SECRET_1}\"\n\n[[merchants]]\nid = \"shop-2\""
    );
    let body = BASE.replacen("\n[[merchants]]\nid = \"shop-2\"", &endpoint, 1);
    assert_ne!(body, BASE, "BASE still has shop-2 after shop-1");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"{shutdown}\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n\
         [storage]\npath = \"{}\"\ndurability = \"sync\"\nmin_free_space = \"1MiB\"\n\
         [delivery]\nallow_private_targets = true\nretry_schedule = [\"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\"]\ntimeout = \"10s\"\n{body}",
        dir.join("store").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn known_set() -> Vec<(String, Vec<u8>)> {
    (0..IPNS)
        .map(|i| {
            let event = format!("rc_{i}");
            let pay = format!("rc_pay_{}", i % PAYMENTS);
            let body = attempt(&event, &pay, i / PAYMENTS);
            (event, body)
        })
        .collect()
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// provider event ids (`data.provider_event_id`) the sink has received.
pub(crate) fn received_events(sink: &Sink) -> HashSet<String> {
    sink.received("/hook")
        .iter()
        .filter_map(|r| {
            r.json["data"]["provider_event_id"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_the_apply_and_fan_out_write_delivers_each_applied_change() {
    crash_at("store::commit::apply").await;
}

/// Half-way through writing any round (accept, apply and fan-out, an
/// attempt's result), flushed: rolled back at the next open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_half_way_through_writing_a_round_delivers_each_applied_change() {
    crash_at("store::write::partial").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_an_attempts_result_is_written_delivers_again_with_the_same_id() {
    crash_at("store::commit::relay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_endpoint_answered_delivers_again_with_the_same_id() {
    crash_at("delivery::answered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_commit_delivers_each_applied_change() {
    crash_at("store::committed").await;
}

async fn crash_at(point: &str) {
    for n in [0, 2, 5] {
        scenario(point, n).await;
    }
}

async fn scenario(point: &str, n: u32) {
    let ctx = format!("{point}={n}");
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sink.url("/hook"), "5s");
    let settings = Settings::load(&config, &|_| None).unwrap();
    let client = client();
    let ipns = known_set();

    let mut cmd = serve_command(&config);
    cmd.env("FAILPOINTS", format!("{point}={n}*off->return"));
    no_core_dumps(&mut cmd);
    let (mut child, port) = spawn_serve(cmd);
    let base = format!("http://127.0.0.1:{port}");
    for (event, body) in &ipns {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if post_signed_status(&client, &base, &settings, body.clone())
            .await
            .is_none()
        {
            break;
        }
        // Until the sink has it, or the process is gone.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !received_events(&sink).contains(event) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "{ctx}: {event} never delivered");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let Some(status) = wait_exit(&mut child, Duration::from_secs(10)).await else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{ctx}: the crash point never fired");
    };
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{ctx}: {status:?}");

    restart_and_check(&ctx, &config, &settings, &sink, &ipns).await;
}

/// Restart on `config`, post every IPN again, and check the module's invariants.
async fn restart_and_check(
    ctx: &str,
    config: &Path,
    settings: &Settings,
    sink: &Sink,
    ipns: &[(String, Vec<u8>)],
) {
    let client = client();
    let mut cmd = serve_command(config);
    cmd.env_remove("FAILPOINTS");
    let (mut child, port) = spawn_serve(cmd);
    let base = format!("http://127.0.0.1:{port}");
    for (event, body) in ipns {
        let got = post_signed_status(&client, &base, settings, body.clone()).await;
        assert!(got.is_some(), "{ctx}: re-post of {event} not acknowledged");
    }
    let feed = wait_all_delivered(ctx, &client, &base, sink, ipns.len()).await;
    let received = sink.received("/hook");
    for r in &received {
        r.verify(SECRET_1);
    }
    let sent_ids: HashSet<&str> = received.iter().map(|r| r.webhook_id()).collect();
    let feed_ids: HashSet<&str> = feed.keys().map(String::as_str).collect();
    assert_eq!(
        sent_ids, feed_ids,
        "{ctx}: the sink got exactly the applied events (at least once each)"
    );
    // Each payment's first arrivals come in sequence order, 1, 2, 3 …
    let mut first: HashMap<String, Vec<i64>> = HashMap::new();
    let mut seen = HashSet::new();
    for r in &received {
        if seen.insert(r.webhook_id().to_string()) {
            first
                .entry(r.payment_id().to_string())
                .or_default()
                .push(r.sequence());
        }
    }
    for (pay, seqs) in &first {
        let want: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, &want, "{ctx}: {pay} first arrivals");
    }
    child.kill().unwrap();
    let _ = child.wait();
}

/// Until every IPN's event is in the feed and no delivery is pending;
/// returns the feed by event id. Every delivery must have succeeded.
pub(crate) async fn wait_all_delivered(
    ctx: &str,
    client: &reqwest::Client,
    base: &str,
    sink: &Sink,
    n: usize,
) -> HashMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let feed: Value = get(
            client,
            format!("{base}/v1/events?limit=1000"),
            Some(SHOP_KEY),
        )
        .await;
        let pending: Value = get(
            client,
            format!("{base}/v1/deliveries?state=pending&limit=1000"),
            Some(ADMIN),
        )
        .await;
        let events = feed["data"].as_array().unwrap();
        if events.len() == n
            && pending["data"].as_array().unwrap().is_empty()
            && received_events(sink).len() == n
        {
            let all: Value = get(
                client,
                format!("{base}/v1/deliveries?limit=1000"),
                Some(ADMIN),
            )
            .await;
            let all = all["data"].as_array().unwrap();
            assert_eq!(
                all.len(),
                n,
                "{ctx}: one delivery per applied change: {all:?}"
            );
            for d in all {
                assert_eq!(d["state"], "succeeded", "{ctx}: {d}");
            }
            return events
                .iter()
                .map(|e| (e["event_id"].as_str().unwrap().to_string(), e.clone()))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: not all delivered after 90 s: {} events, pending {pending}",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_deliveries_in_flight_and_pending_delivers_everything_after_restart() {
    let sink = Sink::start().await;
    // Slow: attempts are in flight when the kill comes, and later changes
    // of each payment wait behind them.
    sink.set("/hook", Reply::ok().delay(Duration::from_secs(3)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sink.url("/hook"), "5s");
    let settings = Settings::load(&config, &|_| None).unwrap();
    let client = client();
    let ipns = known_set();
    let (mut child, port) = spawn_serve(serve_command(&config));
    let base = format!("http://127.0.0.1:{port}");
    for (_, body) in &ipns {
        assert!(post_signed_status(&client, &base, &settings, body.clone())
            .await
            .is_some());
    }
    // Kill once the first attempts reached the sink (so they are in flight).
    let deadline = Instant::now() + Duration::from_secs(20);
    while sink.received("/hook").len() < PAYMENTS {
        assert!(Instant::now() < deadline, "no attempt reached the sink");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before: Vec<String> = sink
        .received("/hook")
        .iter()
        .map(|r| r.webhook_id().to_string())
        .collect();
    child.kill().unwrap();
    let _ = child.wait();
    sink.set("/hook", Reply::ok());
    restart_and_check("kill -9", &config, &settings, &sink, &ipns).await;
    // What was in flight was sent again under the same webhook-id.
    let after = sink.received("/hook");
    for id in &before {
        let n = after.iter().filter(|r| r.webhook_id() == id).count();
        assert!(n >= 2, "{id} was in flight at the kill: sent {n} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_attempt_in_flight_finish_and_leaves_the_rest_pending() {
    let sink = Sink::start().await;
    sink.set("/hook", Reply::ok().delay(Duration::from_secs(1)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sink.url("/hook"), "5s");
    let settings = Settings::load(&config, &|_| None).unwrap();
    let client = client();
    // Two changes of one payment: the second waits behind the first.
    let ipns: Vec<(String, Vec<u8>)> = (0..2)
        .map(|i| {
            let event = format!("term_{i}");
            (event.clone(), attempt(&event, "term_pay", i))
        })
        .collect();
    let (mut child, port) = spawn_serve(serve_command(&config));
    let base = format!("http://127.0.0.1:{port}");
    for (_, body) in &ipns {
        assert!(post_signed_status(&client, &base, &settings, body.clone())
            .await
            .is_some());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while sink.received("/hook").is_empty() {
        assert!(Instant::now() < deadline, "the first attempt never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SIGTERM while the first attempt is in flight (the sink holds it 1 s).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child, Duration::from_secs(15))
        .await
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(
        sink.received("/hook").len(),
        1,
        "no new attempt starts once shutdown began"
    );

    sink.set("/hook", Reply::ok());
    let (mut child, port) = spawn_serve(serve_command(&config));
    let base = format!("http://127.0.0.1:{port}");
    let feed = wait_all_delivered("sigterm", &client, &base, &sink, 2).await;
    assert_eq!(feed.len(), 2);
    // The first finished before the exit: recorded, never sent again.
    let got = sink.received("/hook");
    assert_eq!(
        got.len(),
        2,
        "each sent once: {:?}",
        got.iter().map(|r| r.webhook_id()).collect::<Vec<_>>()
    );
    assert_eq!(
        got.iter().map(|r| r.sequence()).collect::<Vec<_>>(),
        vec![1, 2]
    );
    child.kill().unwrap();
    let _ = child.wait();
}
