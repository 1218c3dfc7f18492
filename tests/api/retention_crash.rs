//! Crash safety of retention's removals, with the real binary. The janitor
//! drops what is past `retention.*` in writer rounds of "remove if still
//! this value", each one atomic write; here the binary runs with
//! `FAILPOINTS=store::commit::retention=<n>*off->return`, so it stops on the
//! spot (as `kill -9` would) before the n-th such write is committed.
//!
//! Retention is short and on the system clock: `events` and `dedupe_window`
//! are [`AGE`], so the janitor runs every tenth of it; `task_results` is an hour,
//! so the async API shows a task for as long as it is stored. A first batch
//! of IPNs (two changes to each payment, and one IPN that ends in error:
//! an unmapped status), then half an age later a second (one more change to
//! each payment, one more error). The first batch expiring is what makes the
//! janitor write: its rounds (dedupe keys, then tasks with their requests,
//! then events, then history) are the first to pass the crash point, so
//! each n below stops the process for certain. A process still running
//! long after the first batch expired, or one that died otherwise than by
//! the abort, fails the test.
//!
//! After a restart without failpoints, as a user reads it:
//!
//! - every IPN's task and raw request are both there or both gone: the
//!   status API never says `processing` (a request without its task), and
//!   reprocessing (404 once the request is gone, 409 for a completed one
//!   that is kept, 202 for one in error) agrees with the status read before
//!   and after it;
//! - nothing unexpired was removed: an IPN the test can prove younger than
//!   [`AGE`] (first posted less than that before the reads ended) still has
//!   its status, its request, its result, its history entry in the payment
//!   and its event in the feed, and one in error posted again is a
//!   duplicate of itself (its dedupe key is kept);
//! - each payment keeps every change (`sequence`), and its history and the
//!   events feed hold only IPNs that were sent, each once;
//! - retention then completes: every task, request, event and history
//!   entry goes (polled with a generous deadline), the payments stay.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::time::{Duration, Instant};

use ipn_relay::config::Settings;
use serde_json::Value;

use crate::crash::{post_signed_status, serve_command, spawn_serve, write_config};
use crate::exactly_once::attempt;
use crate::failpoints::{get, no_core_dumps, settle, wait_exit, wait_idle};
use crate::helpers::*;
use crate::relay_crash::client;

const POINT: &str = "store::commit::retention";
/// `retention.events` and `retention.dedupe_window`.
const AGE: Duration = Duration::from_secs(12);
const PAYMENTS: usize = 3;
/// Headroom for the store's millisecond timestamps in [`fresh`].
const MARGIN: Duration = Duration::from_millis(250);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_first_retention_write_keeps_each_ipn_whole_or_gone() {
    scenario(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_second_retention_write_keeps_each_ipn_whole_or_gone() {
    scenario(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_third_retention_write_keeps_each_ipn_whole_or_gone() {
    scenario(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_fourth_retention_write_keeps_each_ipn_whole_or_gone() {
    scenario(3).await;
}

struct Ipn {
    event: String,
    /// None: an unmapped status, the task ends in error.
    pay: Option<String>,
    body: Vec<u8>,
    /// Taken before its first post: its dedupe key is no older.
    posted: Instant,
    /// Taken before its first post or its reprocessing: its task, request,
    /// history entry and event are no older.
    born: Instant,
    id: Option<String>,
    /// Its applied change (event_id, sequence), from its result.
    applied: Option<(String, u64)>,
}

impl Ipn {
    fn new(event: String, pay: Option<String>, body: Vec<u8>) -> Ipn {
        Ipn {
            event,
            pay,
            body,
            posted: Instant::now(),
            born: Instant::now(),
            id: None,
            applied: None,
        }
    }

    fn id(&self) -> &str {
        self.id.as_deref().expect("acknowledged")
    }
}

fn pay_id(k: usize) -> String {
    format!("rc_pay_{k}")
}

/// Changes `attempts` of each payment, then one IPN that ends in error.
fn batch(name: &str, attempts: std::ops::Range<usize>) -> Vec<Ipn> {
    let mut v = Vec::new();
    for k in 0..PAYMENTS {
        for i in attempts.clone() {
            let event = format!("rc_{name}_{k}_{i}");
            v.push(Ipn::new(
                event.clone(),
                Some(pay_id(k)),
                attempt(&event, &pay_id(k), i),
            ));
        }
    }
    let event = format!("rc_{name}_err");
    let body = generic(&event, &format!("rc_pay_{name}_err"), "Exploded");
    v.push(Ipn::new(event, None, serde_json::to_vec(&body).unwrap()));
    v
}

/// Certainly younger than the retention age at `t`: what is no older than
/// `born` may not be gone yet.
fn fresh(born: Instant, t: Instant) -> bool {
    t.duration_since(born) + MARGIN < AGE
}

/// GET `{base}/v1/async/{what}/{id}`: Some(body) on 200, None on 404.
async fn task_get(c: &reqwest::Client, base: &str, what: &str, id: &str) -> Option<Value> {
    let r = c
        .get(format!("{base}/v1/async/{what}/{id}"))
        .send()
        .await
        .unwrap();
    match r.status().as_u16() {
        200 => Some(r.json().await.unwrap()),
        404 => None,
        code => panic!("{what} of {id}: {code}"),
    }
}

/// The status API: Some("processing" | "completed"), None when unknown (404).
async fn status(c: &reqwest::Client, base: &str, id: &str) -> Option<String> {
    let v = task_get(c, base, "status", id).await?;
    Some(v["status"].as_str().unwrap().into())
}

/// [`status`] once it is no longer `processing` (20 s at most).
async fn ended(c: &reqwest::Client, base: &str, id: &str, ctx: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(c, base, id).await;
        if s.as_deref() != Some("processing") {
            return s;
        }
        assert!(Instant::now() < deadline, "{ctx}: {id} still processing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Payment `k` as its merchant reads it.
async fn payment(c: &reqwest::Client, base: &str, k: usize) -> Value {
    let url = format!("{base}/v1/payments/{}", pay_id(k));
    get(c, url, Some(SHOP_KEY)).await
}

/// The task result of a completed IPN, None when unknown (404).
async fn result(c: &reqwest::Client, base: &str, id: &str) -> Option<Value> {
    task_get(c, base, "result", id).await
}

/// `POST /v1/admin/requests/{id}/reprocess`: 404 when the request is gone,
/// 409 when it is kept and not in error, 202 when it was in error.
async fn reprocess(c: &reqwest::Client, base: &str, id: &str) -> u16 {
    c.post(format!("{base}/v1/admin/requests/{id}/reprocess"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Post each IPN not yet acknowledged, until the process is gone; then wait
/// for the acknowledged ones to end.
async fn post_all(
    c: &reqwest::Client,
    base: &str,
    settings: &Settings,
    child: &mut Child,
    ipns: &mut [Ipn],
    ctx: &str,
) {
    let mut ids = Vec::new();
    for s in ipns.iter_mut().filter(|s| s.id.is_none()) {
        if child.try_wait().unwrap().is_some() {
            break; // the rest is posted after the restart
        }
        s.born = Instant::now();
        s.posted = s.born;
        if let Some((code, v)) = post_signed_status(c, base, settings, s.body.clone()).await {
            assert_eq!(code, 202, "{ctx}: first post of {}: {v}", s.event);
            let id = v["request_id"].as_str().unwrap().to_string();
            ids.push(id.clone());
            s.id = Some(id);
        }
    }
    settle(c, base, child, &ids).await;
}

async fn scenario(n: u32) {
    let ctx = format!("{POINT}={n}");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    let age = format!("\"{}s\"", AGE.as_secs());
    text.push_str(&format!(
        "\n[retention]\ntask_results = \"1h\"\ndedupe_window = {age}\nevents = {age}\n"
    ));
    std::fs::write(&config, text).unwrap();
    let settings = Settings::load(&config, &|_| None).unwrap();
    assert_eq!(ipn_relay::processor::janitor_every(&settings), AGE / 10);
    let c = client();
    let mut ipns = batch("old", 0..2);
    let young = ipns.len();
    ipns.extend(batch("young", 2..3));

    // The crash run.
    let mut cmd = serve_command(&config);
    cmd.env("FAILPOINTS", format!("{POINT}={n}*off->return"));
    no_core_dumps(&mut cmd);
    let (mut child, port) = spawn_serve(cmd);
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    post_all(&c, &base, &settings, &mut child, &mut ipns[..young], &ctx).await;
    tokio::time::sleep_until((started + AGE / 2).into()).await;
    post_all(&c, &base, &settings, &mut child, &mut ipns[young..], &ctx).await;
    // The first batch expires at AGE, the janitor writes within a second.
    let Some(status_at_exit) = wait_exit(&mut child, 3 * AGE + Duration::from_secs(30)).await
    else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{ctx}: the crash point never fired: the process outlived the retention age");
    };
    assert_eq!(
        status_at_exit.signal(),
        Some(libc::SIGABRT),
        "{ctx}: the process did not die by the crash point: {status_at_exit:?}"
    );
    let acked = ipns.iter().filter(|s| s.id.is_some()).count();
    eprintln!("{ctx}: {acked}/{} acked before the abort", ipns.len());

    // Restart without failpoints; the provider retries what was not acked.
    let mut cmd = serve_command(&config);
    cmd.env_remove("FAILPOINTS");
    let (mut child, port) = spawn_serve(cmd);
    let base = format!("http://127.0.0.1:{port}");
    for s in ipns.iter_mut().filter(|s| s.id.is_none()) {
        let (code, v) = post_signed_status(&c, &base, &settings, s.body.clone())
            .await
            .unwrap_or_else(|| panic!("{ctx}: re-post of {} not acknowledged", s.event));
        // 202: new; 200: the crashed process had stored it unanswered.
        assert!(code == 202 || code == 200, "{ctx}: {}: {code} {v}", s.event);
        s.id = Some(v["request_id"].as_str().unwrap().to_string());
    }
    wait_idle(&c, &base).await;

    let mut fresh_checked = 0;
    let mut reposted = Vec::new();
    for s in ipns.iter_mut() {
        let id = s.id().to_string();
        let ev = s.event.clone();
        let before = status(&c, &base, &id).await;
        let asked = Instant::now();
        let code = reprocess(&c, &base, &id).await;
        let kept = if s.pay.is_some() { 409 } else { 202 };
        assert!(
            code == kept || code == 404,
            "{ctx}: {ev}: reprocess answered {code} (status before: {before:?})"
        );
        if code == 202 {
            s.born = asked; // a new task, as young as this
        }
        let after = if code == 202 {
            ended(&c, &base, &id, &ctx).await
        } else {
            status(&c, &base, &id).await
        };
        for st in [&before, &after] {
            assert_ne!(
                st.as_deref(),
                Some("processing"),
                "{ctx}: {ev}: processing forever (its request without its task)"
            );
        }
        if before.is_none() {
            assert_eq!(code, 404, "{ctx}: {ev}: task gone, request kept");
        }
        if code == 404 {
            assert_eq!(after, None, "{ctx}: {ev}: request gone, task kept");
        }
        let mut got = None;
        if s.pay.is_some() && after.is_some() {
            if let Some(r) = result(&c, &base, &id).await {
                assert_eq!(r["status"], "completed", "{ctx}: {ev}: {r}");
                let e = &r["events"][0];
                assert_eq!(
                    (&e["outcome"], &e["payment_id"]),
                    (&Value::from("applied"), &Value::from(s.pay.as_deref())),
                    "{ctx}: {ev}: {r}"
                );
                got = Some((
                    e["event_id"].as_str().unwrap().to_string(),
                    e["sequence"].as_u64().unwrap(),
                ));
                s.applied = got.clone();
            }
        }
        // The error IPN posted again: a duplicate while its request is
        // kept; once gone, a new request (harmless: it ends in error too).
        let mut again = None;
        if s.pay.is_none() {
            let posted = Instant::now();
            let (code, v) = post_signed_status(&c, &base, &settings, s.body.clone())
                .await
                .expect("acknowledged");
            let new = v["request_id"].as_str().unwrap().to_string();
            again = Some((code, new.clone()));
            if code == 202 {
                let mut r = Ipn::new(ev.clone(), None, s.body.clone());
                (r.posted, r.born, r.id) = (posted, posted, Some(new));
                reposted.push(r);
            }
        }
        let now = Instant::now();
        if let (Some(a), true) = (&again, fresh(s.posted, now)) {
            let whole = format!("{ctx}: {ev} is younger than the dedupe window");
            assert_eq!(a, &(200, id.clone()), "{whole}: dedupe key gone");
        }
        if fresh(s.born, now) {
            // A reprocessed IPN is born again; only a payment's change
            // shows that retention itself kept what was young.
            fresh_checked += usize::from(s.pay.is_some());
            let whole = format!("{ctx}: {ev} is younger than retention");
            assert!(before.is_some() && after.is_some(), "{whole}: task gone");
            assert_eq!(code, kept, "{whole}: request gone");
            if s.pay.is_some() {
                assert!(got.is_some(), "{whole}: result gone");
            }
        }
    }
    eprintln!("{ctx}: {fresh_checked} payment changes provably unexpired at their checks");
    assert!(
        fresh_checked > 0,
        "{ctx}: no payment change could be proved younger than {AGE:?} when read \
         (the machine was too slow for this run to check that nothing unexpired is lost)"
    );
    for r in &reposted {
        assert!(
            ended(&c, &base, r.id(), &ctx).await.is_some(),
            "{ctx}: {} gone at once",
            r.event
        );
    }
    ipns.extend(reposted);

    // Payments and the feed: only IPNs sent, each once; everything
    // unexpired is there; every change is counted.
    let feed = get(&c, format!("{base}/v1/events?limit=1000"), Some(SHOP_KEY)).await;
    let mut payments = Vec::new();
    for k in 0..PAYMENTS {
        let p = payment(&c, &base, k).await;
        payments.push(p);
    }
    let read = Instant::now();
    let by_event: HashMap<&str, &Ipn> = ipns
        .iter()
        .filter(|s| s.pay.is_some())
        .map(|s| (s.event.as_str(), s))
        .collect();
    assert_eq!(feed["has_more"], false, "{ctx}");
    let mut in_feed = HashMap::new();
    for e in feed["data"].as_array().unwrap() {
        let pev = e["provider_event_id"].as_str().unwrap();
        assert!(
            by_event.contains_key(pev),
            "{ctx}: event of no IPN sent: {e}"
        );
        assert!(
            in_feed.insert(pev, e.clone()).is_none(),
            "{ctx}: {pev} twice in the feed"
        );
    }
    for (k, p) in payments.iter().enumerate() {
        let pay = pay_id(k);
        let sent: Vec<&Ipn> = ipns
            .iter()
            .filter(|s| s.pay.as_deref() == Some(&pay))
            .collect();
        assert_eq!(p["sequence"], sent.len(), "{ctx}: {pay}: changes lost");
        let mut seen = HashSet::new();
        for h in p["history"].as_array().expect("history") {
            let pev = h["provider_event_id"].as_str().unwrap();
            let s = sent
                .iter()
                .find(|s| s.event == pev)
                .unwrap_or_else(|| panic!("{ctx}: {pay}: history of no IPN sent: {h}"));
            assert!(seen.insert(pev), "{ctx}: {pay}: {pev} twice in history");
            assert_eq!(h["request_id"], s.id(), "{ctx}: {h}");
            if let Some((event_id, seq)) = &s.applied {
                assert_eq!(
                    (&h["event_id"], &h["sequence"]),
                    (&Value::from(event_id.as_str()), &Value::from(*seq)),
                    "{ctx}: result vs history: {h}"
                );
            }
        }
        for s in sent.iter().filter(|s| fresh(s.born, read)) {
            let whole = format!("{ctx}: {} is younger than retention", s.event);
            assert!(seen.contains(s.event.as_str()), "{whole}: history gone");
            let e = in_feed
                .get(s.event.as_str())
                .unwrap_or_else(|| panic!("{whole}: event gone from the feed"));
            let (event_id, seq) = s.applied.as_ref().expect("its result was read");
            assert_eq!(
                (&e["event_id"], &e["sequence"], &e["payment_id"]),
                (
                    &Value::from(event_id.as_str()),
                    &Value::from(*seq),
                    &Value::from(pay.as_str())
                ),
                "{whole}: result vs feed: {e}"
            );
        }
    }

    // Retention completes after the restart.
    let deadline = Instant::now() + 3 * AGE + Duration::from_secs(60);
    loop {
        let mut left = Vec::new();
        for s in &ipns {
            match status(&c, &base, s.id()).await.as_deref() {
                None => {}
                Some("processing") => panic!("{ctx}: {} processing again", s.event),
                Some(_) => left.push(format!("task {}", s.event)),
            }
        }
        let feed = get(&c, format!("{base}/v1/events?limit=1000"), Some(SHOP_KEY)).await;
        left.extend(
            feed["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| format!("event {}", e["provider_event_id"])),
        );
        let tasks = get(
            &c,
            format!("{base}/v1/admin/requests?limit=1000"),
            Some(ADMIN),
        )
        .await;
        left.extend(
            tasks["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| format!("listed request {}", t["request_id"])),
        );
        for k in 0..PAYMENTS {
            let p = payment(&c, &base, k).await;
            let h = p["history"].as_array().unwrap();
            left.extend(
                h.iter()
                    .map(|h| format!("history {}", h["provider_event_id"])),
            );
            // The payment itself stays, with every change counted.
            assert_eq!(p["sequence"], 3, "{ctx}: {}: {p}", pay_id(k));
        }
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: retention did not finish after the restart: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    child.kill().unwrap();
    let _ = child.wait();
}
