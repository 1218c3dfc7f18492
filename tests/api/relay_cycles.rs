//! Repeated `kill -9` of the real binary under concurrent ingest and
//! delivery (SPEC §6 "Durable"): five cycles on one store, each starting the
//! service, posting IPNs from several tasks (each IPN a new applied change
//! of one of ten payments) while a local sink takes the notifications (half
//! the payments slowly, so attempts are in flight), then SIGKILL after a
//! seeded 300–1500 ms. Then one more start, every IPN that never got a 2xx
//! is posted again (as a provider retries), and once nothing is processing
//! or pending: every acknowledged IPN's change is in the feed and reached
//! the sink (by webhook-id), nothing reached the sink that the feed does not
//! show, and each payment's first arrivals are in sequence order 1, 2, 3, …

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipn_relay::config::Settings;

use crate::crash::{post_signed_status, serve_command, spawn_serve};
use crate::exactly_once::attempt;
use crate::relay_crash::{client, received_events, wait_all_delivered, write_config};
use crate::relay_helpers::SECRET_1;
use crate::sink::{Reply, Sink};

const CYCLES: usize = 5;
const PAYMENTS: usize = 10;
const POSTERS: usize = 4;
/// New IPNs each cycle may post at most (indices run on across cycles).
const PER_CYCLE: usize = 160;
/// Kill times come from this seed: the same run every time.
const SEED: u64 = 0x1b5_c7c1_e5ee_d001;

/// IPN `k`: event `cy_k`, the `k / PAYMENTS`-th new attempt of payment
/// `cy_pay_{k % PAYMENTS}`.
fn ipn(k: usize) -> (String, Vec<u8>) {
    let event = format!("cy_{k}");
    let pay = format!("cy_pay_{}", k % PAYMENTS);
    let body = attempt(&event, &pay, k / PAYMENTS);
    (event, body)
}

/// splitmix64.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Default)]
struct Ledger {
    /// Posted at least once.
    attempted: BTreeSet<usize>,
    /// Got a 2xx at least once.
    acked: BTreeSet<usize>,
}

/// Start the binary on the store; the store reopened if it comes up ready.
async fn start(
    config: &std::path::Path,
    client: &reqwest::Client,
) -> (std::process::Child, String) {
    let (child, port) = spawn_serve(serve_command(config));
    let base = format!("http://127.0.0.1:{port}");
    let r = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "not ready after reopening the store"
    );
    (child, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_kill_9_cycles_under_ingest_and_delivery_lose_and_reorder_nothing() {
    let sink = Sink::start().await;
    for p in (0..PAYMENTS).step_by(2) {
        sink.script_payment(
            "/hook",
            &format!("cy_pay_{p}"),
            vec![Reply::ok().delay(Duration::from_millis(50))],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sink.url("/hook"), "5s");
    // A roomier endpoint rate than the default 50/s, so the run stays short.
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "timeout = \"10s\"\n",
        "timeout = \"10s\"\nper_endpoint = { per_second = 1000, burst = 1000, max_in_flight = 8 }\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let settings = Settings::load(&config, &|_| None).unwrap();
    let client = client();
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let next_ipn = Arc::new(AtomicUsize::new(0));
    let mut rng = SEED;

    for cycle in 0..CYCLES {
        let (mut child, base) = start(&config, &client).await;
        let kill_after = Duration::from_millis(300 + next(&mut rng) % 1201);
        // Spread each poster's share over the cycle (posts take time too),
        // so posts are still going when the kill comes.
        let pause = kill_after / (PER_CYCLE / POSTERS) as u32;
        let limit = (cycle + 1) * PER_CYCLE;
        let stop = Arc::new(AtomicBool::new(false));
        let acked_before = ledger.lock().unwrap().acked.len();
        let sent_before = sink.received("/hook").len();
        let mut posters = Vec::new();
        for _ in 0..POSTERS {
            let (client, base, settings) = (client.clone(), base.clone(), settings.clone());
            let (ledger, next_ipn, stop) = (ledger.clone(), next_ipn.clone(), stop.clone());
            posters.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let k = next_ipn.fetch_add(1, Ordering::SeqCst);
                    if k >= limit {
                        next_ipn.fetch_sub(1, Ordering::SeqCst);
                        break;
                    }
                    ledger.lock().unwrap().attempted.insert(k);
                    let (_, body) = ipn(k);
                    // A kill mid-answer is not an ack: the provider retries later.
                    if post_signed_status(&client, &base, &settings, body)
                        .await
                        .is_some()
                    {
                        ledger.lock().unwrap().acked.insert(k);
                    }
                    tokio::time::sleep(pause).await;
                }
            }));
        }
        tokio::time::sleep(kill_after).await;
        stop.store(true, Ordering::SeqCst);
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        for p in posters {
            p.await.unwrap();
        }
        let l = ledger.lock().unwrap();
        let sent = sink.received("/hook").len();
        eprintln!(
            "cycle {cycle}: killed after {kill_after:?}; {} posted, {} acked (+{}), sink {} (+{})",
            l.attempted.len(),
            l.acked.len(),
            l.acked.len() - acked_before,
            sent,
            sent - sent_before
        );
        assert!(
            l.acked.len() > acked_before,
            "cycle {cycle}: no IPN was acknowledged before the kill"
        );
    }
    assert!(
        !sink.received("/hook").is_empty(),
        "no delivery went out while the cycles ran"
    );

    // Once more; the provider retries whatever never got a 2xx.
    let (mut child, base) = start(&config, &client).await;
    let (attempted, acked) = {
        let l = ledger.lock().unwrap();
        (l.attempted.clone(), l.acked.clone())
    };
    for &k in attempted.difference(&acked) {
        let (event, body) = ipn(k);
        let got = post_signed_status(&client, &base, &settings, body).await;
        assert!(got.is_some(), "re-post of {event} not acknowledged");
    }
    let feed = wait_all_delivered("cycles", &client, &base, &sink, attempted.len()).await;

    let received = sink.received("/hook");
    for r in &received {
        r.verify(SECRET_1);
    }
    let sent_ids: HashSet<&str> = received.iter().map(|r| r.webhook_id()).collect();
    // provider event id → feed event id
    let by_provider: HashMap<&str, &str> = feed
        .iter()
        .map(|(id, e)| (e["provider_event_id"].as_str().unwrap(), id.as_str()))
        .collect();
    for &k in &acked {
        let (event, _) = ipn(k);
        let id = by_provider
            .get(event.as_str())
            .unwrap_or_else(|| panic!("acknowledged {event} is not in the feed"));
        assert!(
            sent_ids.contains(id),
            "{event} ({id}) never reached the sink"
        );
    }
    for id in &sent_ids {
        assert!(
            feed.contains_key(*id),
            "{id} reached the sink but is not in the feed"
        );
    }
    assert_eq!(
        received_events(&sink).len(),
        attempted.len(),
        "every posted IPN's change reached the sink"
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
    assert_eq!(first.len(), PAYMENTS, "every payment was notified");
    for (pay, seqs) in &first {
        let want: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, &want, "{pay}: first arrivals out of sequence order");
    }
    eprintln!(
        "after {CYCLES} kills: {} IPNs ({} acked before a kill), {} notifications for {} changes",
        attempted.len(),
        acked.len(),
        received.len(),
        sent_ids.len()
    );
    child.kill().unwrap();
    let _ = child.wait();
}
