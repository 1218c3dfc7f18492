//! Retention (SPEC §2 `[retention]`): under steady load, with short ages on
//! a clock the test moves, raw IPNs, task results, events, history,
//! deliveries with their attempts, and dedupe keys are purged at their ages,
//! so what the store holds levels off instead of growing with the traffic.
//! `POST /v1/admin/purge` runs the janitor's pass now.

use std::time::Duration;

use ipn_relay::clock::ManualClock;

use crate::helpers::*;
use crate::relay_helpers::*;
use crate::sink::Sink;

const PER_ROUND: usize = 40;
const ROUNDS: usize = 9;
/// Each round moves the clock this far; `events` keeps 3 rounds.
const ROUND: Duration = Duration::from_secs(20 * 60);

async fn count(app: &TestApp, path: &str, token: &str) -> usize {
    let (code, v) = app.get_auth(path, token).await;
    assert_eq!(code, 200, "{path}: {v}");
    let n = v["data"].as_array().unwrap().len();
    assert!(n < 1000, "{path}: a page is full, the count is cut");
    n
}

/// What the store holds, as a user reads it: requests (with their task
/// results), events, deliveries, and one long-lived payment's history.
async fn held(app: &TestApp) -> [usize; 4] {
    let (_, p) = app.get_auth("/v1/payments/pay_long", SHOP_KEY).await;
    [
        count(app, "/v1/admin/requests?state=completed&limit=1000", ADMIN).await,
        count(app, "/v1/events?limit=1000", SHOP_KEY).await,
        count(app, "/v1/deliveries?limit=1000", ADMIN).await,
        p["history"].as_array().map_or(0, Vec::len),
    ]
}

#[tokio::test]
async fn under_steady_load_what_the_store_holds_levels_off() {
    let sink = Sink::start().await;
    let clock = ManualClock::starting_now();
    // A failed attempt would wait for the test's clock (1 h retry), so give
    // a machine short of CPU a long attempt timeout (it failed once under
    // three CPU hogs beside the whole suite).
    let body = relay_config(
        "timeout = \"60s\"\n",
        &[endpoint_toml("ep_ret", &sink.url("/ret"), SECRET_1, "")],
        &[],
    )
    .replace(
        "[delivery]",
        "[retention]\ntask_results = \"1h\"\ndedupe_window = \"40m\"\nevents = \"1h\"\n\n[delivery]",
    );
    let app = spawn_with_clock(&body, &clock).await;
    let mut sizes = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..PER_ROUND {
            // Most IPNs are new payments; one payment gets a change a round.
            let (pay, status) = if i == 0 {
                ("pay_long".to_string(), "Failed")
            } else {
                (format!("pay_{round}_{i}"), "Succeed")
            };
            let mut ipn = generic(&format!("ret_{round}_{i}"), &pay, status);
            if i == 0 {
                // A new failed attempt each round: every one applies.
                ipn["data"]["authorization_id"] = format!("au_{round}").into();
            }
            let (code, r) = app.ipn_result("acme", &ipn).await;
            assert_eq!(code, 200, "{r}");
            assert_eq!(r["events"][0]["outcome"], "applied", "round {round}: {r}");
        }
        notified(&sink, "/ret", (round + 1) * PER_ROUND, SECRET_1).await;
        wait_deliveries(&app, ADMIN, "state=succeeded&limit=1000", 1).await;
        clock.advance(ROUND);
        let r = app
            .client
            .post(app.url("/v1/admin/purge"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        sizes.push(held(&app).await);
    }
    eprintln!("held per round [requests, events, deliveries, history]: {sizes:?}");
    // Ages of 1 h at 20 min a round: at most 3 rounds' worth are kept…
    for (round, s) in sizes.iter().enumerate() {
        for (what, n) in ["requests", "events", "deliveries"].iter().zip(&s[..3]) {
            assert!(
                *n <= 3 * PER_ROUND,
                "round {round}: {n} {what} held: {sizes:?}"
            );
        }
        assert!(
            s[3] <= 3,
            "round {round}: history of {} entries: {sizes:?}",
            s[3]
        );
    }
    // …and from then on the same amount each round: level, not growing.
    let steady = &sizes[3..];
    assert!(
        steady.windows(2).all(|w| w[0] == w[1]),
        "not level: {sizes:?}"
    );
    // Dedupe keys go at `dedupe_window` (40 min), before their request:
    // an IPN of 20 min ago is still a duplicate, one of 40 min ago is new.
    let again = |round: usize| {
        let body = generic(
            &format!("ret_{round}_5"),
            &format!("pay_{round}_5"),
            "Succeed",
        );
        let app = &app;
        async move { app.post_ipn("acme", &body).await.status().as_u16() }
    };
    assert_eq!(again(ROUNDS - 1).await, 200, "20 min old: a duplicate");
    assert_eq!(again(ROUNDS - 2).await, 202, "40 min old: new again");
}
