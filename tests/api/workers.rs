//! A background worker that dies (the processor, the dispatcher) takes the
//! process down with a non-zero exit, so its supervisor restarts it: the
//! service is never left alive with nothing applying IPNs or delivering
//! them (SPEC §8: recover or exit, never alive and broken forever).
//!
//! The death is real: a test-only failpoint makes the worker's loop panic
//! (`FAILPOINTS=<point>=<action>`): the processor's on its first pass with
//! work to apply, the dispatcher's on its second pass (its first runs at
//! start-up, before the port is known).

use std::time::Duration;

use ipn_relay::config::Settings;

use crate::crash::{post_signed, serve_command, spawn_serve, write_config};
use crate::failpoints::wait_exit;

async fn dies_and_exits_non_zero(point: &str, action: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let settings = Settings::load(&config, &|_| None).unwrap();
    let mut cmd = serve_command(&config);
    cmd.env("FAILPOINTS", format!("{point}={action}"));
    // A backtrace of the panic, symbolized from a debug binary, takes tens
    // of seconds on a loaded machine: not what this test is about.
    cmd.env("RUST_BACKTRACE", "0");
    let (mut child, port) = spawn_serve(cmd);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    // Work for the processor (its loop panics on the pass that would apply it).
    let body = crate::helpers::generic("ev_w", "pay_w", "Succeed");
    let _ = post_signed(
        &client,
        &base,
        &settings,
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    let status = wait_exit(&mut child, Duration::from_secs(20)).await;
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let status = status.unwrap_or_else(|| panic!("{point} died but the process kept running"));
    assert_eq!(
        status.code(),
        Some(1),
        "{point}: an orderly non-zero exit, not a signal: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_processor_exits_the_process_non_zero() {
    dies_and_exits_non_zero("processor::apply", "panic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_dispatcher_exits_the_process_non_zero() {
    dies_and_exits_non_zero("delivery::dispatcher::step", "1*off->panic").await;
}
