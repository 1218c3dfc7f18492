//! Deterministic crash tests: the real binary with one store crash point
//! armed (`FAILPOINTS=<point>=<n>*off->return`: the point passes n times and
//! aborts the process the n+1-th time, as `kill -9` would), for each crash
//! point of the store and several n.
//!
//! The IPNs go in waves: a wave posts one IPN to each payment at once, then
//! waits until the wave's acknowledged tasks left `processing` (or the
//! process died). So every wave commits at least one round of accepts and
//! one of applies, and waits for at least one group flush: [`WAVES`] waves
//! pass every crash point at least [`WAVES`] times, so each n in [`PASSES`]
//! is certain to fire. A process still alive after the last wave, or one
//! that died otherwise than by the abort, fails the test.
//!
//! Then the binary starts again without failpoints on the same store, every
//! IPN that was not acknowledged is posted again (a provider retries), and
//! so is every acknowledged one (it must answer 200 duplicate with its
//! original request_id). Once nothing is processing, every IPN is applied
//! exactly once ([`assert_each_applied_once`]). Each IPN is an unsuccessful
//! end naming its own authorization, so every one is a new attempt and must
//! apply (see `exactly_once.rs`): a lost one shows as a missing history
//! entry, a doubled one as a repeat or a gap in the sequences.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use ipn_relay::config::Settings;
use serde_json::Value;

use crate::crash::{post_signed_status, serve_command, spawn_serve, write_config};
use crate::exactly_once::attempt;
use crate::helpers::*;

const PAYMENTS: usize = 5;
/// One IPN per payment per wave: 40 IPNs.
const WAVES: usize = 8;
/// Passages before the abort; each is below [`WAVES`].
const PASSES: [u32; 4] = [0, 1, 3, 7];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_committing_accepts_loses_no_acked_ipn_and_applies_each_once() {
    crash_at("store::commit::accept").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_committing_applies_neither_repeats_nor_skips_an_ipn() {
    crash_at("store::commit::apply").await;
}

/// The stop leaves a round half-written on disk (its undo record and half
/// of its writes, flushed); the next open rolls it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_half_way_through_writing_a_round_rolls_it_back_and_applies_each_ipn_once() {
    crash_at("store::write::partial").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_commit_before_answering_applies_each_ipn_once() {
    crash_at("store::committed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_flush_before_answering_applies_each_ipn_once() {
    crash_at("store::flushed").await;
}

/// One IPN of the known set, and the request_id it ended up with.
struct Sent {
    event: String,
    pay: String,
    body: Vec<u8>,
    /// The request_id of the 2xx before the crash, if there was one.
    acked: Option<String>,
    /// The request_id after the restart (the acked one, or the re-post's).
    final_id: Option<String>,
}

fn known_set() -> Vec<Sent> {
    (0..WAVES * PAYMENTS)
        .map(|i| {
            let event = format!("fp_{i}");
            let pay = format!("fp_pay_{}", i % PAYMENTS);
            Sent {
                body: attempt(&event, &pay, i / PAYMENTS),
                event,
                pay,
                acked: None,
                final_id: None,
            }
        })
        .collect()
}

async fn crash_at(point: &str) {
    for n in PASSES {
        let started = Instant::now();
        scenario(point, n).await;
        eprintln!("{point}={n}: {:?}", started.elapsed());
    }
}

/// A crash leaves no core file behind.
pub(crate) fn no_core_dumps(cmd: &mut Command) {
    // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let off = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &off) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub(crate) async fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Until each of `ids` has left `processing`, or the process is gone.
pub(crate) async fn settle(
    client: &reqwest::Client,
    base: &str,
    child: &mut Child,
    ids: &[String],
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in ids {
        loop {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            let status = match client
                .get(format!("{base}/v1/async/status/{id}"))
                .send()
                .await
            {
                Ok(r) => r.json::<Value>().await.ok(),
                Err(_) => None,
            };
            if status.is_some_and(|v| v["status"] != "processing") {
                break;
            }
            assert!(Instant::now() < deadline, "{id} still processing");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn scenario(point: &str, n: u32) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let settings = Settings::load(&config, &|_| None).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut ipns = known_set();

    let mut cmd = serve_command(&config);
    cmd.env("FAILPOINTS", format!("{point}={n}*off->return"));
    no_core_dumps(&mut cmd);
    let (mut child, port) = spawn_serve(cmd);
    let base = format!("http://127.0.0.1:{port}");
    for wave in ipns.chunks_mut(PAYMENTS) {
        if child.try_wait().unwrap().is_some() {
            break; // the rest is "not acknowledged": posted after the restart
        }
        let posts: Vec<_> = wave
            .iter()
            .map(|s| {
                let (client, base, settings, body) = (
                    client.clone(),
                    base.clone(),
                    settings.clone(),
                    s.body.clone(),
                );
                tokio::spawn(
                    async move { post_signed_status(&client, &base, &settings, body).await },
                )
            })
            .collect();
        let mut ids = Vec::new();
        for (s, p) in wave.iter_mut().zip(posts) {
            if let Some((code, v)) = p.await.unwrap() {
                assert_eq!(code, 202, "{point}={n}: first post of {}: {v}", s.event);
                let id = v["request_id"].as_str().unwrap().to_string();
                ids.push(id.clone());
                s.acked = Some(id);
            }
        }
        settle(&client, &base, &mut child, &ids).await;
    }
    let Some(status) = wait_exit(&mut child, Duration::from_secs(10)).await else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{point}={n}: the crash point never fired; the process outlived all IPNs");
    };
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "{point}={n}: the process did not die by the crash point: {status:?}"
    );
    let acked = ipns.iter().filter(|s| s.acked.is_some()).count();

    // Restart without failpoints; the provider retries what was not acked.
    let mut cmd = serve_command(&config);
    cmd.env_remove("FAILPOINTS");
    let (mut child, port) = spawn_serve(cmd);
    let base = format!("http://127.0.0.1:{port}");
    let reposts: Vec<_> = ipns
        .iter()
        .map(|s| {
            let (client, base, settings, body) = (
                client.clone(),
                base.clone(),
                settings.clone(),
                s.body.clone(),
            );
            tokio::spawn(async move { post_signed_status(&client, &base, &settings, body).await })
        })
        .collect();
    for (s, p) in ipns.iter_mut().zip(reposts) {
        let (code, v) = p
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{point}={n}: re-post of {} not acknowledged", s.event));
        let id = v["request_id"].as_str().unwrap().to_string();
        if let Some(first) = &s.acked {
            assert_eq!(
                (code, id.as_str()),
                (200, first.as_str()),
                "{point}={n}: an acked IPN posted again must be a duplicate of itself: {} {v}",
                s.event
            );
        } else {
            // 202: new; 200: the crashed process had stored it unanswered.
            assert!(
                code == 202 || code == 200,
                "{point}={n}: {} {code}",
                s.event
            );
        }
        s.final_id = Some(id);
    }
    wait_idle(&client, &base).await;
    assert_each_applied_once(&client, &base, &ipns, &format!("{point}={n}")).await;
    eprintln!("{point}={n}: {acked}/{} acked before the abort", ipns.len());
    child.kill().unwrap();
    let _ = child.wait();
}

/// Until `GET /v1/admin/requests?state=processing` lists nothing.
pub(crate) async fn wait_idle(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = client
            .get(format!("{base}/v1/admin/requests?state=processing"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["data"].as_array().expect("task list").is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still processing: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// GET `url` (with a Bearer `token`), which must answer 200; its JSON.
pub(crate) async fn get(client: &reqwest::Client, url: String, token: Option<&str>) -> Value {
    let mut rb = client.get(url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.url());
    r.json().await.unwrap()
}

/// Every IPN applied exactly once: its task completed naming one applied
/// event that shows in the feed (within a flush); each payment's history holds each of its
/// IPNs once, with sequences 1..n; and every event in the feed is the one
/// of exactly one history entry (nothing applied twice, no phantom).
async fn assert_each_applied_once(client: &reqwest::Client, base: &str, ipns: &[Sent], ctx: &str) {
    // provider event id -> (task result's event_id, sequence)
    let mut results: HashMap<&str, (String, u64)> = HashMap::new();
    for s in ipns {
        let id = s.final_id.as_deref().unwrap();
        let v = get(client, format!("{base}/v1/async/result/{id}"), None).await;
        assert_eq!(v["status"], "completed", "{ctx}: {}: {v}", s.event);
        let evs = v["events"].as_array().unwrap();
        assert_eq!(evs.len(), 1, "{ctx}: {}: {v}", s.event);
        let ev = &evs[0];
        assert_eq!(ev["payment_id"], s.pay.as_str(), "{ctx}: {v}");
        assert_eq!(ev["outcome"], "applied", "{ctx}: {v}");
        let event_id = ev["event_id"].as_str().unwrap().to_string();
        results.insert(&s.event, (event_id, ev["sequence"].as_u64().unwrap()));
    }

    // A task result shows once its apply is committed; its events join the
    // feed once that write is durable (the next group flush, within ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let feed = get(
            client,
            format!("{base}/v1/events?limit=1000"),
            Some(SHOP_KEY),
        )
        .await;
        assert_eq!(feed["has_more"], false, "{ctx}");
        let mut events: HashMap<String, Value> = HashMap::new();
        for e in feed["data"].as_array().unwrap() {
            let id = e["event_id"].as_str().unwrap().to_string();
            assert!(
                events.insert(id, e.clone()).is_none(),
                "{ctx}: event twice in the feed: {e}"
            );
        }
        let missing: Vec<_> = results
            .iter()
            .filter(|(_, (id, _))| !events.contains_key(id))
            .collect();
        if missing.is_empty() {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: completed tasks name events not in /v1/events after 10 s: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let mut in_history = HashSet::new();
    for k in 0..PAYMENTS {
        let pay = format!("fp_pay_{k}");
        let sent: HashMap<&str, &Sent> = ipns
            .iter()
            .filter(|s| s.pay == pay)
            .map(|s| (s.event.as_str(), s))
            .collect();
        let p = get(client, format!("{base}/v1/payments/{pay}"), Some(SHOP_KEY)).await;
        let mut seen = HashSet::new();
        let mut seqs = Vec::new();
        for h in p["history"].as_array().expect("history") {
            let pev = h["provider_event_id"].as_str().unwrap();
            assert!(seen.insert(pev), "{ctx}: {pev} applied twice to {pay}");
            let s = sent
                .get(pev)
                .unwrap_or_else(|| panic!("{ctx}: {pay}: history entry of no IPN sent: {h}"));
            assert_eq!(h["outcome"], "applied", "{ctx}: {h}");
            assert_eq!(
                h["request_id"],
                s.final_id.as_deref().unwrap(),
                "{ctx}: {h}"
            );
            let seq = h["sequence"].as_u64().unwrap();
            let (event_id, result_seq) = &results[pev];
            assert_eq!(
                h["event_id"],
                event_id.as_str(),
                "{ctx}: result vs history: {h}"
            );
            assert_eq!(*result_seq, seq, "{ctx}: result vs history: {h}");
            let e = &events[event_id];
            assert_eq!(
                (&e["payment_id"], &e["sequence"], &e["provider_event_id"]),
                (
                    &Value::from(pay.as_str()),
                    &Value::from(seq),
                    &Value::from(pev)
                ),
                "{ctx}: event vs history: {e} {h}"
            );
            in_history.insert(event_id.clone());
            seqs.push(seq);
        }
        let missing: Vec<_> = sent.keys().filter(|e| !seen.contains(*e)).collect();
        assert!(
            missing.is_empty(),
            "{ctx}: {pay}: never applied: {missing:?}"
        );
        seqs.sort_unstable();
        let n = seqs.len() as u64;
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "{ctx}: {pay}: sequences");
        assert_eq!(p["sequence"], n, "{ctx}: {pay}");
    }
    let phantoms: Vec<_> = events.keys().filter(|e| !in_history.contains(*e)).collect();
    assert!(
        phantoms.is_empty(),
        "{ctx}: events without history: {phantoms:?}"
    );
    assert_eq!(events.len(), ipns.len(), "{ctx}: events in the feed");
}
