//! Failed authentications cannot starve a provider (SPEC §4): they are
//! charged to the source address's `ingress.unauthenticated_rate_limit`
//! bucket, never to the provider's `rate_limit`, and a source over its bucket
//! is refused with 429 before its signature is even checked. The buckets run
//! on the service clock, which these tests hold still or move.
//!
//! The "authentication failed" log line is throttled per provider (at most
//! `LogThrottle::PER_SECOND` a second, the next one logged carrying the
//! `suppressed` count): checked in the real binary's JSON log under a flood.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipn_relay::clock::ManualClock;
use ipn_relay::config::Settings;
use ipn_relay::http::limits::LogThrottle;
use serde_json::Value;

use crate::crash::{post_signed, serve_command};
use crate::helpers::*;
use crate::logs::{json, Logged};
use crate::relay_helpers::PATIENCE;

const PROXY: &str = "[ingress]\ntrusted_proxies = [\"127.0.0.1/32\"]\n";
/// The provider's own address (behind the trusted proxy).
const PROVIDER_IP: &str = "203.0.113.7";

/// An unsigned IPN for acme from `source`.
async fn unsigned(app: &TestApp, source: &str, i: usize) -> reqwest::Response {
    let body = serde_json::to_vec(&generic(&format!("bad-{i}"), "pay-x", "Succeed")).unwrap();
    app.post_raw(
        "acme",
        body,
        &[
            ("X-Signature".into(), "00".repeat(32)),
            ("X-Forwarded-For".into(), source.into()),
        ],
    )
    .await
}

/// A correctly signed IPN for acme from `source`.
async fn signed(app: &TestApp, source: &str, event: &str) -> reqwest::Response {
    let body = serde_json::to_vec(&generic(event, &format!("pay-{event}"), "Succeed")).unwrap();
    let mut h = app.sign("acme", &body, &[]);
    h.push(("X-Forwarded-For".into(), source.into()));
    app.post_raw("acme", body, &h).await
}

/// Post unsigned from `source` until a 429; returns (401s before it, the 429).
async fn fail_until_limited(app: &TestApp, source: &str) -> (usize, reqwest::Response) {
    let mut refused = 0;
    loop {
        let r = unsigned(app, source, refused).await;
        match r.status().as_u16() {
            401 => refused += 1,
            429 => return (refused, r),
            other => panic!("unexpected {other}"),
        }
        assert!(refused < 500, "{source} never limited");
    }
}

#[tokio::test]
async fn failed_authentications_do_not_spend_the_providers_rate_limit() {
    let app = spawn_with(
        "",
        &format!("[ingress]\nrate_limit = {{ per_second = 1, burst = 40 }}\ntrusted_proxies = [\"127.0.0.1/32\"]\n{BASE}"),
    )
    .await;
    for i in 0..80 {
        let code = unsigned(&app, "198.51.100.9", i).await.status().as_u16();
        assert!(code == 401 || code == 429, "unsigned {i}: {code}");
    }
    for i in 0..5 {
        let r = signed(&app, PROVIDER_IP, &format!("ok-{i}")).await;
        assert_eq!(r.status().as_u16(), 202, "signed {i} after the flood");
    }
}

#[tokio::test]
async fn a_failing_source_gets_429_over_its_burst_while_signed_traffic_flows() {
    // Defaults: 10/s, burst 50.
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(&format!("{PROXY}{BASE}"), &clock).await;
    let (refused, limited) = fail_until_limited(&app, "198.51.100.66").await;
    // The 50 failures the burst allows, and the one that found it empty.
    assert_eq!(refused, 51, "the burst of 50 is answered 401");
    let retry: u64 = limited
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("whole seconds");
    assert_eq!(retry, 1, "10 tokens a second");
    let v: Value = limited.json().await.unwrap();
    assert_eq!(error_code(&v), "rate_limited");

    // The attacker keeps going; the provider's signed IPNs keep being accepted.
    for i in 0..20 {
        let code = unsigned(&app, "198.51.100.66", 1000 + i)
            .await
            .status()
            .as_u16();
        assert!(code == 429 || code == 401, "attacker {i}: {code}");
        let r = signed(&app, PROVIDER_IP, &format!("flow-{i}")).await;
        assert_eq!(r.status().as_u16(), 202, "signed {i}");
    }
    // Requests refused with 429 were not verified, so not quarantined.
    let (_, q) = app.get_auth("/v1/admin/quarantine?limit=1000", ADMIN).await;
    let kept = q["data"].as_array().unwrap().len();
    assert!(kept < refused + 21, "{kept} quarantined, {refused} 401s");
}

#[tokio::test]
async fn each_forwarded_source_has_its_own_bucket() {
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(&format!("{PROXY}{BASE}"), &clock).await;
    let (_, limited) = fail_until_limited(&app, "198.51.100.1").await;
    assert_eq!(limited.status().as_u16(), 429);
    // Another client behind the same proxy is not limited by the first one.
    for i in 0..10 {
        let r = unsigned(&app, "198.51.100.2", i).await;
        assert_eq!(r.status().as_u16(), 401, "second source, try {i}");
    }
    // Nor is the proxy's own address.
    let body = serde_json::to_vec(&generic("own", "pay-own", "Succeed")).unwrap();
    let r = app
        .post_raw("acme", body, &[("X-Signature".into(), "00".into())])
        .await;
    assert_eq!(r.status().as_u16(), 401);
    // Still limited: the first source.
    assert_eq!(
        unsigned(&app, "198.51.100.1", 99).await.status().as_u16(),
        429
    );
    // A token a tenth of a second later (10/s): it is let through again,
    // and, as with the burst, the failure that finds the bucket empty is
    // the last one answered 401.
    clock.advance(Duration::from_millis(100));
    for i in 100..102 {
        let r = unsigned(&app, "198.51.100.1", i).await;
        assert_eq!(r.status().as_u16(), 401, "after the refill, try {i}");
    }
    assert_eq!(
        unsigned(&app, "198.51.100.1", 102).await.status().as_u16(),
        429
    );
}

/// The binary's JSON log at `info`, and a per-source limit so high that
/// every request of a flood from one address is verified (and fails).
fn flood_config(dir: &Path) -> PathBuf {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n\
         [storage]\npath = \"{}\"\nmin_free_space = \"1MiB\"\n\
         [ingress]\nunauthenticated_rate_limit = {{ per_second = 100000, burst = 100000 }}\n{BASE}",
        dir.join("store").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const REJECTED: &str = "IPN rejected: authentication failed";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_signatures_logs_a_few_lines_a_second_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let config = flood_config(dir.path());
    let settings = Settings::load(&config, &|_| None).unwrap();
    let app = Logged::start(serve_command(&config));
    let port = app.port().await;
    let url = format!("http://127.0.0.1:{port}/v1/ipn/acme");
    let client = reqwest::Client::new();
    let bad = |i: usize| {
        let body = serde_json::to_vec(&generic(&format!("flood-{i}"), "pay-flood", "Succeed"));
        client
            .post(&url)
            .header("content-type", "application/json")
            .header("X-Signature", "00".repeat(32))
            .body(body.unwrap())
            .send()
    };
    let rejections = || -> Vec<serde_json::Map<String, Value>> {
        app.all()
            .iter()
            .filter_map(|l| json(l))
            .filter(|m| m["message"] == REJECTED && m["provider"] == "acme")
            .collect()
    };
    let reports_suppressed =
        |lines: &[serde_json::Map<String, Value>]| lines.iter().any(|m| m["suppressed"] != 0);

    let started = Instant::now();
    let mut sent = 0;
    while sent < 300 || !reports_suppressed(&rejections()) {
        // What was left out is reported by the first line of a later second:
        // after the 300, keep failing (as an attacker would) until one shows.
        if sent >= 300 && started.elapsed() > PATIENCE {
            break;
        }
        let r = bad(sent).await.expect("request sent");
        assert_eq!(r.status().as_u16(), 401, "bad signature {sent}");
        sent += 1;
    }
    let elapsed = started.elapsed();

    // A rejection's line is written before its 401, so once the line of a
    // later request has been read, so have all of theirs.
    let body = serde_json::to_vec(&generic("after-flood", "pay-after", "Succeed")).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let ack = post_signed(&client, &base, &settings, body)
        .await
        .expect("a signed IPN is still acknowledged");
    let rid = ack["request_id"].as_str().unwrap().to_string();
    app.wait_line("for the signed IPN after the flood", |l| {
        l.contains(&rid) && l.contains("IPN accepted")
    })
    .await;

    let lines = rejections();
    // Windows of one second start at least a second apart: over `elapsed`
    // at most secs + 1 of them; one more for slack.
    let per_second = u64::from(LogThrottle::PER_SECOND);
    let bound = per_second * (elapsed.as_secs() + 2);
    assert!(
        lines.len() as u64 <= bound,
        "{} {REJECTED:?} lines for {sent} failures in {elapsed:?} (at most {bound})",
        lines.len()
    );
    assert!(!lines.is_empty(), "no {REJECTED:?} line at all");
    let suppressed: Vec<u64> = lines
        .iter()
        .map(|m| m["suppressed"].as_u64().unwrap_or_else(|| panic!("{m:?}")))
        .collect();
    assert!(
        suppressed.iter().any(|&n| n > 0),
        "no line says how many were left out: {suppressed:?}"
    );
    // Each failure is either a line or counted in a later one (the last
    // window's suppressed ones are not reported yet).
    let accounted = lines.len() as u64 + suppressed.iter().sum::<u64>();
    assert!(accounted <= sent as u64, "{accounted} > {sent} sent");
    for m in &lines {
        assert_eq!(m["peer"], "127.0.0.1", "{m:?}");
        assert!(m["reason"].as_str().is_some_and(|r| !r.is_empty()), "{m:?}");
    }
}
