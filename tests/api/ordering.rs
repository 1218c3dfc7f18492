//! The status rule end to end (SPEC §3): a payment never goes backwards,
//! repeats are duplicates, new attempts after a failure apply, sequences are
//! gapless, a reorder window sorts by occurred_at, and concurrency keeps all
//! of that true.

use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};

use crate::helpers::*;

fn ipn(event_id: &str, payment_id: &str, status: &str, created: i64, auth: Option<&str>) -> Value {
    let mut v = json!({
        "id": event_id,
        "created": created,
        "data": {"payment_id": payment_id, "status": status, "amount": 1000, "currency": "eur"}
    });
    if let Some(a) = auth {
        v["data"]["authorization_id"] = json!(a);
    }
    v
}

fn rank(status: &str) -> u8 {
    match status {
        "pending" => 1,
        "authorized" => 2,
        "succeeded" | "failed" | "canceled" | "expired" => 3,
        "partially_refunded" => 4,
        "refunded" => 5,
        "charged_back" => 6,
        other => panic!("not a canonical status: {other}"),
    }
}

/// The single event of a completed task.
async fn result_event(app: &TestApp, body: &Value) -> Value {
    let (code, res) = app.ipn_result("acme", body).await;
    assert_eq!(code, 200, "{res}");
    assert_eq!(res["status"], "completed", "{res}");
    let evs = res["events"].as_array().unwrap();
    assert_eq!(evs.len(), 1, "{res}");
    evs[0].clone()
}

async fn payment(app: &TestApp, id: &str) -> Value {
    let (code, v) = app.get_auth(&format!("/v1/payments/{id}"), SHOP_KEY).await;
    assert_eq!(code, 200, "{v}");
    v
}

/// Applied history entries have sequences 1..n in order, and ranks never fall.
fn assert_gapless_and_monotonic(p: &Value) -> usize {
    let applied: Vec<&Value> = p["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["outcome"] == "applied")
        .collect();
    let mut seqs: Vec<u64> = applied
        .iter()
        .map(|h| {
            h["sequence"]
                .as_u64()
                .expect("applied entries carry a sequence")
        })
        .collect();
    seqs.sort_unstable();
    let want: Vec<u64> = (1..=applied.len() as u64).collect();
    assert_eq!(seqs, want, "applied sequences are not 1..n: {p}");
    let mut by_seq = applied.clone();
    by_seq.sort_by_key(|h| h["sequence"].as_u64());
    for w in by_seq.windows(2) {
        let (a, b) = (
            rank(w[0]["status"].as_str().unwrap()),
            rank(w[1]["status"].as_str().unwrap()),
        );
        assert!(
            a <= b,
            "rank fell from {} to {}: {p}",
            w[0]["status"],
            w[1]["status"]
        );
    }
    for h in p["history"].as_array().unwrap() {
        if h["outcome"] != "applied" {
            assert!(
                h["sequence"].is_null(),
                "non-applied entry with a sequence: {h}"
            );
        }
    }
    if let Some(last) = by_seq.last() {
        assert_eq!(p["status"], last["status"], "{p}");
        assert_eq!(p["sequence"], applied.len() as u64, "{p}");
    }
    applied.len()
}

#[tokio::test]
async fn late_lower_ranked_events_are_stale_and_the_payment_stays_succeeded() {
    let app = spawn_app().await;
    let s = result_event(
        &app,
        &ipn("o_s", "pay_late", "Succeed", 1_700_000_300, Some("au_1")),
    )
    .await;
    assert_eq!(s["outcome"], "applied");
    assert_eq!(s["sequence"], 1);

    for (eid, st, at) in [
        ("o_p", "Pending", 1_700_000_100),
        ("o_a", "Authorized", 1_700_000_200),
    ] {
        let ev = result_event(&app, &ipn(eid, "pay_late", st, at, Some("au_1"))).await;
        assert_eq!(ev["outcome"], "stale", "{ev}");
        assert!(ev["sequence"].is_null(), "{ev}");
        assert!(
            ev["event_id"].is_null(),
            "a stale event is not relayed: {ev}"
        );
    }

    let p = payment(&app, "pay_late").await;
    assert_eq!(p["status"], "succeeded");
    assert_eq!(p["sequence"], 1);
    let h = p["history"].as_array().unwrap();
    assert_eq!(h.len(), 3);
    let outcomes: Vec<(&str, &str)> = h
        .iter()
        .map(|e| {
            (
                e["status"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("succeeded", "applied"),
            ("pending", "stale"),
            ("authorized", "stale")
        ]
    );
    assert_eq!(h[0]["sequence"], 1);
    assert!(h[1]["sequence"].is_null() && h[2]["sequence"].is_null());

    // Merchants only ever saw the one change.
    let (_, evs) = app
        .get_auth("/v1/events?payment_id=pay_late", SHOP_KEY)
        .await;
    let data = evs["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["status"], "succeeded");
}

#[tokio::test]
async fn same_status_and_transaction_with_a_new_event_id_is_a_duplicate() {
    let app = spawn_app().await;
    let a = result_event(
        &app,
        &ipn("d_1", "pay_d", "Authorized", 1_700_000_000, Some("au_d")),
    )
    .await;
    assert_eq!(a["outcome"], "applied");
    let b = result_event(
        &app,
        &ipn("d_2", "pay_d", "Authorized", 1_700_000_005, Some("au_d")),
    )
    .await;
    assert_eq!(b["outcome"], "duplicate", "{b}");
    assert!(b["sequence"].is_null());
    assert!(b["event_id"].is_null());
    // A different rank-3 outcome for the same transaction after success is stale.
    let c = result_event(
        &app,
        &ipn("d_3", "pay_d", "Succeed", 1_700_000_010, Some("au_d")),
    )
    .await;
    assert_eq!(c["outcome"], "applied");
    assert_eq!(c["sequence"], 2);
    let f = result_event(
        &app,
        &ipn("d_4", "pay_d", "Failed", 1_700_000_020, Some("au_d")),
    )
    .await;
    assert_eq!(f["outcome"], "stale", "{f}");

    let p = payment(&app, "pay_d").await;
    assert_eq!(p["status"], "succeeded");
    assert_eq!(p["sequence"], 2);
    let outcomes: Vec<&str> = p["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["applied", "duplicate", "applied", "stale"]);
}

#[tokio::test]
async fn a_new_attempt_after_failure_applies_with_the_next_sequence() {
    let app = spawn_app().await;
    let p1 = result_event(
        &app,
        &ipn("n_1", "pay_n", "Pending", 1_700_000_000, Some("au_first")),
    )
    .await;
    assert_eq!(p1["sequence"], 1);
    let f = result_event(
        &app,
        &ipn("n_2", "pay_n", "Failed", 1_700_000_060, Some("au_first")),
    )
    .await;
    assert_eq!(
        (f["outcome"].as_str(), f["sequence"].as_u64()),
        (Some("applied"), Some(2))
    );

    // A different authorization that claims to be older than the failure: stale.
    let old = result_event(
        &app,
        &ipn("n_old", "pay_n", "Pending", 1_700_000_030, Some("au_older")),
    )
    .await;
    assert_eq!(old["outcome"], "stale", "{old}");
    // The same authorization going back to pending: stale.
    let same = result_event(
        &app,
        &ipn(
            "n_same",
            "pay_n",
            "Pending",
            1_700_000_090,
            Some("au_first"),
        ),
    )
    .await;
    assert_eq!(same["outcome"], "stale", "{same}");

    // The customer retries with another card: a new attempt, not earlier.
    let retry = result_event(
        &app,
        &ipn("n_3", "pay_n", "Pending", 1_700_000_120, Some("au_second")),
    )
    .await;
    assert_eq!(retry["outcome"], "applied", "{retry}");
    assert_eq!(retry["sequence"], 3);
    let ok = result_event(
        &app,
        &ipn("n_4", "pay_n", "Succeed", 1_700_000_180, Some("au_second")),
    )
    .await;
    assert_eq!(ok["outcome"], "applied");
    assert_eq!(ok["sequence"], 4);

    let p = payment(&app, "pay_n").await;
    assert_eq!(p["status"], "succeeded");
    assert_eq!(p["sequence"], 4);
    assert_eq!(p["authorization_id"], "au_second");
    let seqs: Vec<Value> = p["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].clone())
        .collect();
    assert_eq!(
        seqs,
        [
            json!(1),
            json!(2),
            Value::Null,
            Value::Null,
            json!(3),
            json!(4)
        ]
    );

    // Events as merchants poll them: gapless, with previous_status.
    let (_, evs) = app.get_auth("/v1/events?payment_id=pay_n", SHOP_KEY).await;
    let data = evs["data"].as_array().unwrap();
    let got: Vec<(u64, &str, Value)> = data
        .iter()
        .map(|e| {
            (
                e["sequence"].as_u64().unwrap(),
                e["status"].as_str().unwrap(),
                e["previous_status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "pending", Value::Null),
            (2, "failed", json!("pending")),
            (3, "pending", json!("failed")),
            (4, "succeeded", json!("pending")),
        ]
    );
}

fn with_reorder_window(window: &str) -> String {
    format!(
        "{BASE}\n[[providers]]\nid = \"slow\"\nmerchant_id = \"shop-1\"\nreorder_window = \"{window}\"\n\
         [providers.auth]\nsecrets = [\"slow-secret\"]\n[providers.mapping.statuses]\nSucceed = \"succeeded\"\nPending = \"pending\"\n"
    )
}

#[tokio::test]
async fn a_reorder_window_applies_events_in_occurred_at_order() {
    let app = spawn_with("", &with_reorder_window("2s")).await;
    let late = ipn("rw_s", "pay_rw", "Succeed", 1_700_000_200, None);
    let early = ipn("rw_p", "pay_rw", "Pending", 1_700_000_100, None);
    // Succeeded arrives first, the earlier pending right after.
    let r1 = app.post_ipn("slow", &late).await;
    assert_eq!(r1.status().as_u16(), 202);
    let r2 = app.post_ipn("slow", &early).await;
    assert_eq!(r2.status().as_u16(), 202);
    let id1 = r1.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let id2 = r2.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    app.wait_done(&id1).await;
    app.wait_done(&id2).await;
    let (_, res1) = app.get_json(&format!("/v1/async/result/{id1}")).await;
    let (_, res2) = app.get_json(&format!("/v1/async/result/{id2}")).await;
    let (s, p) = (&res1["events"][0], &res2["events"][0]);
    assert_eq!(p["status"], "pending");
    assert_eq!(
        p["outcome"], "applied",
        "pending was held and sorted first: {p}"
    );
    assert_eq!(p["sequence"], 1);
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["outcome"], "applied", "{s}");
    assert_eq!(s["sequence"], 2);

    let pay = payment(&app, "pay_rw").await;
    assert_eq!(pay["status"], "succeeded");
    assert_eq!(pay["sequence"], 2);
    assert_gapless_and_monotonic(&pay);
}

#[tokio::test]
async fn without_a_reorder_window_the_late_pending_is_stale() {
    // The control for the test above: same events, no window.
    let app = spawn_with("", &with_reorder_window("0s")).await;
    let (_, r1) = app
        .ipn_result(
            "slow",
            &ipn("nw_s", "pay_nw", "Succeed", 1_700_000_200, None),
        )
        .await;
    let (_, r2) = app
        .ipn_result(
            "slow",
            &ipn("nw_p", "pay_nw", "Pending", 1_700_000_100, None),
        )
        .await;
    assert_eq!(r1["events"][0]["outcome"], "applied");
    assert_eq!(r1["events"][0]["sequence"], 1);
    assert_eq!(r2["events"][0]["outcome"], "stale");
}

const RANDOM_STATUSES: [&str; 8] = [
    "Pending",
    "Authorized",
    "Succeed",
    "Failed",
    "canceled",
    "partially_refunded",
    "Refunded",
    "charged_back",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ipns_for_one_payment_keep_sequences_gapless_and_ranks_rising() {
    let app = std::sync::Arc::new(spawn_app().await);
    let mut rng = rand::thread_rng();
    let bodies: Vec<Value> = (0..20)
        .map(|i| {
            let st = RANDOM_STATUSES[rng.gen_range(0..RANDOM_STATUSES.len())];
            // One transaction throughout, so only rank rises can apply.
            ipn(
                &format!("c_{i}"),
                "pay_conc",
                st,
                1_700_000_000 + i,
                Some("au_c"),
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for b in bodies {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let r = app.post_ipn("acme", &b).await;
            assert_eq!(r.status().as_u16(), 202);
            let v: Value = r.json().await.unwrap();
            v["request_id"].as_str().unwrap().to_string()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let mut applied_in_results = 0;
    for id in &ids {
        let st = app.wait_done(id).await;
        assert_eq!(st["status"], "completed");
        let (code, res) = app.get_json(&format!("/v1/async/result/{id}")).await;
        assert_eq!(code, 200, "{res}");
        if res["events"][0]["outcome"] == "applied" {
            applied_in_results += 1;
        }
    }
    let p = payment(&app, "pay_conc").await;
    assert_eq!(p["history"].as_array().unwrap().len(), 20, "{p}");
    let mut hist_ids: Vec<&str> = p["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["request_id"].as_str().unwrap())
        .collect();
    hist_ids.sort_unstable();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(hist_ids, want, "every request recorded exactly once");
    let n = assert_gapless_and_monotonic(&p);
    assert!(n >= 1);
    assert_eq!(n, applied_in_results);

    // The polled events tell the same story.
    let (_, evs) = app
        .get_auth("/v1/events?payment_id=pay_conc", SHOP_KEY)
        .await;
    let seqs: Vec<u64> = evs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>());
}

/// Many accepts at once commit their inbox entries in racing order; a task
/// left "processing" here means the processor lost an acknowledged IPN
/// (it used to: an inbox cursor skipped entries committed behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ipns_for_different_payments_all_complete() {
    let app = std::sync::Arc::new(spawn_app().await);
    let mut tasks = Vec::new();
    for i in 0..150 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let pay = format!("pay_many_{i}");
            let (code, res) = app
                .ipn_result(
                    "acme",
                    &ipn(&format!("m_{i}"), &pay, "Succeed", 1_700_000_000, None),
                )
                .await;
            assert_eq!(code, 200, "{res}");
            assert_eq!(res["events"][0]["payment_id"], pay.as_str());
            assert_eq!(res["events"][0]["outcome"], "applied");
            assert_eq!(res["events"][0]["sequence"], 1);
            pay
        }));
    }
    let deadline = Duration::from_secs(60);
    for t in tasks {
        let pay = tokio::time::timeout(deadline, t)
            .await
            .expect("all complete")
            .unwrap();
        let p = payment(&app, &pay).await;
        assert_eq!(p["status"], "succeeded");
        assert_eq!(p["sequence"], 1);
    }
}
