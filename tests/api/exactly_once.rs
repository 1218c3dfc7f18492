//! Exactly-once application across a crash: `kill -9` the real binary while
//! it ingests and processes unique IPNs for a few payments, restart it, post
//! again every IPN that got no 2xx before the kill (as the provider would),
//! let the work finish, then read each payment's history. Every IPN sent is
//! applied exactly once and sequences are 1..n.
//!
//! Every IPN is an unsuccessful end (failed / canceled / expired) naming its
//! own authorization with the same occurred_at ([`attempt`]), so by the
//! status rule each one is a new attempt and must apply: a skipped IPN would
//! show up as a missing history entry, a doubly applied one as a repeat or a
//! gap.
//!
//! A kill tests something only if it interrupted work: an IPN acknowledged
//! before it whose application was not yet durable. That is read after the
//! restart, where no race can hide it: an event's `created_at` is when the
//! plan applying it was decided, so an event of an IPN acknowledged before
//! the kill, created after the restart began, was applied by the restarted
//! process. (Counting `processing` tasks right after the restart is not
//! robust: the restarted process may drain them before the first query.)
//! A kill that interrupted nothing is not a pass: load resumes on the
//! restarted process and it is killed again, up to [`MAX_KILLS`] times.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipn_relay::config::Settings;
use serde_json::{json, Value};

use crate::crash::{post_signed, start, write_config, Proc};
use crate::helpers::*;

const PAYMENTS: usize = 4;
const STATUSES: [&str; 3] = ["Failed", "canceled", "expired"];
/// Acks to collect before each kill.
const ACKS_PER_KILL: usize = 400;
const MAX_KILLS: usize = 4;

/// The body of IPN `event_id`: the `i`-th unsuccessful end of payment `pay`,
/// naming its own authorization, so that it is a new attempt and applies.
pub(crate) fn attempt(event_id: &str, pay: &str, i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": event_id,
        "created": 1_700_000_000,
        "data": {
            "payment_id": pay,
            "status": STATUSES[i % STATUSES.len()],
            "authorization_id": format!("au_{event_id}"),
            "amount": 1000,
            "currency": "eur"
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_processing_neither_repeats_nor_skips_an_ipn() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    kill_9_under_load(&config).await;
}

/// With a reorder window, the last second of acknowledged IPNs is certainly
/// still held in memory (not applied) when the process dies, and batches are
/// being applied in bursts: the restart must finish exactly that work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_held_reorder_batches_neither_repeats_nor_skips_an_ipn() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let text = std::fs::read_to_string(&config).unwrap();
    let held = text.replacen(
        "id = \"acme\"\nmerchant_id = \"shop-1\"\n",
        "id = \"acme\"\nmerchant_id = \"shop-1\"\nreorder_window = \"1s\"\n",
        1,
    );
    assert_ne!(held, text, "BASE changed shape: acme provider not found");
    std::fs::write(&config, held).unwrap();
    kill_9_under_load(&config).await;
}

/// What one load round sent: (request_id, payment) of each IPN with a 2xx,
/// (body, payment) of each without one.
struct Round {
    acked: Vec<(String, String)>,
    unacked: Vec<(Vec<u8>, String)>,
}

/// Post unique IPNs from 12 workers until [`ACKS_PER_KILL`] were
/// acknowledged, then `kill -9` the process.
async fn load_then_kill(
    proc: &mut Proc,
    settings: &Settings,
    client: &reqwest::Client,
    round: usize,
) -> Round {
    let base = format!("http://127.0.0.1:{}", proc.port);
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut load = Vec::new();
    for worker in 0..12 {
        let (client, base, acked, settings) = (
            client.clone(),
            base.clone(),
            acked.clone(),
            settings.clone(),
        );
        load.push(tokio::spawn(async move {
            for i in 0.. {
                let pay = format!("eo_pay_{}", (worker + i) % PAYMENTS);
                let body = attempt(&format!("eo_{round}_{worker}_{i}"), &pay, i);
                // A kill mid-answer is not an ack: the provider will retry.
                let Some(v) = post_signed(&client, &base, &settings, body.clone()).await else {
                    return (body, pay);
                };
                let id = v["request_id"].as_str().unwrap().to_string();
                acked.lock().unwrap().push((id, pay));
            }
            unreachable!()
        }));
    }
    // Let processing run alongside ingest for a while, then pull the plug.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < ACKS_PER_KILL && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proc.child.kill().unwrap(); // SIGKILL
    proc.child.wait().unwrap();
    let mut unacked = Vec::new();
    for l in load {
        unacked.push(l.await.unwrap());
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= ACKS_PER_KILL,
        "only {} acks before the kill",
        acked.len()
    );
    Round { acked, unacked }
}

async fn get_json(client: &reqwest::Client, url: String) -> Value {
    client
        .get(url)
        .bearer_auth(SHOP_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Wait until each task completed; its event's (event_id, sequence).
async fn completed(
    client: &reqwest::Client,
    base: &str,
    ids: &[(String, String)],
) -> HashMap<String, (String, u64)> {
    let mut out = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    for (id, pay) in ids {
        loop {
            let r = client
                .get(format!("{base}/v1/async/result/{id}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "{id} lost or failed");
            let v: Value = r.json().await.unwrap();
            if v["status"] == "completed" {
                let ev = &v["events"][0];
                assert_eq!(ev["payment_id"], pay.as_str(), "{v}");
                assert_eq!(ev["outcome"], "applied", "{v}");
                let event_id = ev["event_id"].as_str().unwrap().to_string();
                out.insert(id.clone(), (event_id, ev["sequence"].as_u64().unwrap()));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never completed after restart"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    out
}

/// `created_at` (unix ms) of every event of the test's payments, once the
/// feed shows each of `wanted`: a completed task's events join the feed
/// when its write is durable (the next group flush, within ms).
async fn created_at<'a>(
    client: &reqwest::Client,
    base: &str,
    wanted: impl Iterator<Item = &'a String> + Clone,
) -> HashMap<String, i64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut out = HashMap::new();
        for k in 0..PAYMENTS {
            let url = format!("{base}/v1/events?payment_id=eo_pay_{k}&limit=1000");
            let evs = get_json(client, url).await;
            assert_eq!(evs["has_more"], false);
            for e in evs["data"].as_array().unwrap() {
                let at = chrono::DateTime::parse_from_rfc3339(e["created_at"].as_str().unwrap())
                    .unwrap()
                    .timestamp_millis();
                out.insert(e["event_id"].as_str().unwrap().to_string(), at);
            }
        }
        let missing = wanted.clone().filter(|id| !out.contains_key(*id)).count();
        if missing == 0 {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} events of completed tasks not in the feed after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn kill_9_under_load(config: &Path) {
    let settings = Settings::load(config, &|_| None).unwrap();
    let client = reqwest::Client::new();
    let mut proc = start(config);
    // (request_id, payment) of every IPN sent, and its event.
    let mut sent: Vec<(String, String)> = Vec::new();
    let mut result: HashMap<String, (String, u64)> = HashMap::new();
    let mut kills = 0;
    loop {
        assert!(
            kills < MAX_KILLS,
            "none of {MAX_KILLS} kills interrupted acknowledged work: nothing was tested"
        );
        let round = load_then_kill(&mut proc, &settings, &client, kills).await;
        kills += 1;
        let restart_at = chrono::Utc::now().timestamp_millis();
        proc = start(config);
        let base = format!("http://127.0.0.1:{}", proc.port);

        // The provider retries every IPN that got no 2xx (one per worker).
        let mut retried = Vec::new();
        for (body, pay) in &round.unacked {
            let v = post_signed(&client, &base, &settings, body.clone())
                .await
                .expect("a retried IPN is acknowledged");
            retried.push((v["request_id"].as_str().unwrap().to_string(), pay.clone()));
        }
        // All acknowledged work completes after the restart, each as applied.
        result.extend(completed(&client, &base, &round.acked).await);
        result.extend(completed(&client, &base, &retried).await);

        // Acked before the kill, applied by the restarted process.
        let created = created_at(&client, &base, result.values().map(|(e, _)| e)).await;
        let interrupted = round
            .acked
            .iter()
            .filter(|(id, _)| created[&result[id].0] >= restart_at)
            .count();
        eprintln!(
            "kill {kills}: {} acked, {} retried; {interrupted} acked IPNs applied after the restart",
            round.acked.len(),
            retried.len()
        );
        sent.extend(round.acked);
        sent.extend(retried);
        if interrupted > 0 {
            break;
        }
    }
    let base = format!("http://127.0.0.1:{}", proc.port);

    let sent_ids: HashSet<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(sent_ids.len(), sent.len(), "two IPNs share a request_id");
    let mut seen = 0;
    for k in 0..PAYMENTS {
        let pay = format!("eo_pay_{k}");
        let p = get_json(&client, format!("{base}/v1/payments/{pay}")).await;
        let history = p["history"].as_array().expect("history");
        let mut ids = HashSet::new();
        let mut seqs = Vec::new();
        for h in history {
            let rid = h["request_id"].as_str().unwrap();
            assert!(ids.insert(rid), "request {rid} recorded twice for {pay}");
            assert!(sent_ids.contains(rid), "{pay}: entry of no IPN sent: {h}");
            assert_eq!(h["outcome"], "applied", "{pay}: {h}");
            let seq = h["sequence"].as_u64().unwrap();
            assert_eq!(
                result[rid].1, seq,
                "task result and history disagree for {rid}"
            );
            seqs.push(seq);
        }
        seqs.sort_unstable();
        let n = seqs.len() as u64;
        assert_eq!(
            seqs,
            (1..=n).collect::<Vec<_>>(),
            "{pay}: sequences not 1..n"
        );
        assert_eq!(p["sequence"], n, "{pay}");
        for (id, q) in &sent {
            if *q == pay {
                assert!(
                    ids.contains(id.as_str()),
                    "IPN {id} (acked or retried) missing from {pay} history"
                );
                seen += 1;
            }
        }
        // Merchants polling events see the same n changes, once each.
        let evs = get_json(
            &client,
            format!("{base}/v1/events?payment_id={pay}&limit=1000"),
        )
        .await;
        let ev_seqs: Vec<u64> = evs["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["sequence"].as_u64().unwrap())
            .collect();
        assert_eq!(ev_seqs, (1..=n).collect::<Vec<_>>(), "{pay}: polled events");
    }
    assert_eq!(seen, sent.len());

    proc.child.kill().unwrap();
    let _ = proc.child.wait();
}
