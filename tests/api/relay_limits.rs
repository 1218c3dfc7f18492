//! Delivery limits (SPEC §2 `[delivery]`, §6): an endpoint's governor rate
//! (`per_endpoint.per_second` / `burst`, on the service clock, which these
//! tests hold still or move), its `per_endpoint.max_in_flight`, and the
//! global `delivery.max_in_flight`.
//!
//! Concurrency is checked through a lower bound that cannot race: the sink
//! holds each request for [`HELD`], so with one attempt in flight at a time
//! no two requests can arrive closer together than that. A slot is an HTTP
//! request in flight: it is free again once the endpoint answered, while
//! that attempt's result is still being written.

use std::time::Duration;

use ipn_relay::clock::ManualClock;

use crate::helpers::*;
use crate::relay_helpers::*;
use crate::sink::{Reply, Sink};

const HELD: Duration = Duration::from_millis(400);

#[tokio::test]
async fn an_endpoint_gets_its_burst_then_its_rate_on_the_service_clock() {
    let sink = Sink::start().await;
    let clock = ManualClock::starting_now();
    let body = relay_config(
        "per_endpoint = { per_second = 1, burst = 2, max_in_flight = 8 }\n",
        &[endpoint_toml("ep_rate", &sink.url("/rate"), SECRET_1, "")],
        &[],
    );
    let app = spawn_with_clock(&body, &clock).await;
    for i in 0..5 {
        post_status(&app, &format!("rl_{i}"), &format!("pay_rl_{i}"), "Succeed").await;
    }
    // Time stands still: the burst of 2 and nothing more.
    notified(&sink, "/rate", 2, SECRET_1).await;
    assert_quiet(&sink, "/rate", 2).await;
    // One token a second.
    clock.advance(Duration::from_secs(1));
    notified(&sink, "/rate", 3, SECRET_1).await;
    assert_quiet(&sink, "/rate", 3).await;
    clock.advance(Duration::from_secs(2));
    notified(&sink, "/rate", 5, SECRET_1).await;
    // Waiting for a token is not a failed attempt.
    for d in wait_deliveries(&app, SHOP_KEY, "state=succeeded", 5).await {
        assert_eq!(d["attempts"], 1, "{d}");
    }
}

/// Arrival gaps at the sink, in order.
fn gaps(sink: &Sink, paths: &[&str]) -> Vec<Duration> {
    let mut at: Vec<_> = paths
        .iter()
        .flat_map(|p| sink.received(p))
        .map(|r| r.at)
        .collect();
    at.sort();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test]
async fn per_endpoint_max_in_flight_bounds_concurrent_attempts() {
    let sink = Sink::start().await;
    sink.set("/one", Reply::ok().delay(HELD));
    let body = relay_config(
        "per_endpoint = { per_second = 1000, burst = 1000, max_in_flight = 1 }\n",
        &[endpoint_toml("ep_one", &sink.url("/one"), SECRET_1, "")],
        &[],
    );
    let app = spawn_with("", &body).await;
    for i in 0..4 {
        post_status(&app, &format!("mf_{i}"), &format!("pay_mf_{i}"), "Succeed").await;
    }
    notified(&sink, "/one", 4, SECRET_1).await;
    for g in gaps(&sink, &["/one"]) {
        assert!(g >= HELD, "two attempts overlapped: arrivals {g:?} apart");
    }
}

#[tokio::test]
async fn the_global_max_in_flight_bounds_all_endpoints_together() {
    let sink = Sink::start().await;
    sink.set("/a", Reply::ok().delay(HELD));
    sink.set("/b", Reply::ok().delay(HELD));
    let body = relay_config(
        "max_in_flight = 1\nper_endpoint = { per_second = 1000, burst = 1000, max_in_flight = 8 }\n",
        &[
            endpoint_toml("ep_a", &sink.url("/a"), SECRET_1, ""),
            endpoint_toml("ep_b", &sink.url("/b"), SECRET_2, ""),
        ],
        &[],
    );
    let app = spawn_with("", &body).await;
    for i in 0..2 {
        post_status(&app, &format!("gm_{i}"), &format!("pay_gm_{i}"), "Succeed").await;
    }
    notified(&sink, "/a", 2, SECRET_1).await;
    notified(&sink, "/b", 2, SECRET_2).await;
    for g in gaps(&sink, &["/a", "/b"]) {
        assert!(g >= HELD, "two attempts overlapped: arrivals {g:?} apart");
    }
}

/// With one slot, the next payment's notification goes out while the last
/// attempt's result is still unwritten: a failpoint (the real binary)
/// stops the store's writer for 30 s, past this test's deadlines, on the
/// first round that writes an attempt's result. The sink answers after
/// [`ANSWER_AFTER`], by when both IPNs are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_is_free_once_answered_not_once_the_result_is_written() {
    use crate::crash::{post_signed, serve_command, spawn_serve};
    use crate::failpoints::{get, no_core_dumps};
    const ANSWER_AFTER: Duration = Duration::from_secs(2);
    let sink = Sink::start().await;
    sink.set("/slot", Reply::ok().delay(ANSWER_AFTER));
    let dir = tempfile::tempdir().unwrap();
    let config = crate::relay_crash::write_config(dir.path(), &sink.url("/slot"), "5s");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[delivery]\n",
        "[delivery]\nper_endpoint = { per_second = 1000, burst = 1000, max_in_flight = 1 }\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let settings = ipn_relay::config::Settings::load(&config, &|_| None).unwrap();
    let mut cmd = serve_command(&config);
    cmd.env("FAILPOINTS", "store::commit::relay=1*sleep(30000)");
    no_core_dumps(&mut cmd);
    let (mut child, port) = spawn_serve(cmd);
    let base = format!("http://127.0.0.1:{port}");
    let client = crate::relay_crash::client();
    for (ev, pay) in [("slot_a", "pay_slot_a"), ("slot_b", "pay_slot_b")] {
        let body = serde_json::to_vec(&generic(ev, pay, "Succeed")).unwrap();
        assert!(post_signed(&client, &base, &settings, body).await.is_some());
    }
    let got = sink.wait_for("/slot", 2, Duration::from_secs(20)).await;
    let deliveries = get(
        &client,
        format!("{base}/v1/deliveries?limit=10"),
        Some(ADMIN),
    )
    .await;
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(
        got.len(),
        2,
        "the second notification waited for the first one's write"
    );
    let first = got[0].payment_id();
    let held = deliveries["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["payment_id"] == first)
        .unwrap_or_else(|| panic!("no delivery of {first}: {deliveries}"))
        .clone();
    assert_eq!(
        held["state"], "pending",
        "its result is not written yet: {held}"
    );
    assert_eq!(held["attempts"], 0, "{held}");
}
