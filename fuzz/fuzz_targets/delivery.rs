#![no_main]
//! Retry-After, retry verdicts, the SSRF URL check and event-type patterns.

use libfuzzer_sys::fuzz_target;

type Input = (
    String,
    i64,
    Vec<u64>,
    u32,
    Option<u16>,
    f64,
    Vec<String>,
    String,
    String,
);

fuzz_target!(|input: Input| {
    let (retry_after, now_ms, schedule, attempts, status, jitter, patterns, event_type, url) =
        input;
    ipn_relay_fuzz::delivery(
        &retry_after,
        now_ms,
        &schedule,
        attempts,
        status,
        jitter,
        &url,
        &patterns,
        &event_type,
    );
});
