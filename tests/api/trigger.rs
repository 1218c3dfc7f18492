//! `ipn-relay trigger` against the real binary serving config.example.toml
//! (on port 0, a temp store, JSON logs): each run exits 0 and prints a
//! completed task for the payment id and status asked for.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::crash::{serve_command, spawn_serve};

const BIN: &str = env!("CARGO_BIN_EXE_ipn-relay");

/// config.example.toml with only what a test run must change.
fn example_config(dir: &Path) -> std::path::PathBuf {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml"))
            .unwrap();
    let store = dir.join("store");
    let mut text = example.clone();
    for (from, to) in [
        (
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:0\"".to_string(),
        ),
        ("public_url = \"http://127.0.0.1:8080\"", String::new()),
        ("format = \"pretty\"", "format = \"json\"".to_string()),
        (
            "path = \"./data/ipn-relay\"",
            format!("path = \"{}\"", store.display()),
        ),
    ] {
        assert!(text.contains(from), "config.example.toml lost {from:?}");
        text = text.replacen(from, &to, 1);
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn trigger(config: &Path, port: u16, args: &[&str]) -> Output {
    Command::new(BIN)
        .env_remove("IPN_RELAY_CONFIG")
        .args(["trigger", "--config"])
        .arg(config)
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n--- stderr\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The JSON printed after the `result: 200 OK` line.
fn result(o: &Output) -> Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let (_, rest) = out
        .split_once("result: 200 OK")
        .unwrap_or_else(|| panic!("no result line:\n{}", text(o)));
    let json = rest.split_once('\n').map_or("", |(_, j)| j);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}:\n{}", text(o)))
}

fn assert_completed(o: &Output, payment_id: &str, status: &str) {
    assert!(o.status.success(), "{}", text(o));
    let r = result(o);
    assert_eq!(r["status"], "completed", "{r}");
    let last = r["events"].as_array().and_then(|e| e.last()).cloned();
    let last = last.unwrap_or_else(|| panic!("no events: {r}"));
    assert_eq!(last["payment_id"], payment_id, "{r}");
    assert_eq!(last["status"], status, "{r}");
    assert_eq!(last["outcome"], "applied", "{r}");
}

#[test]
fn trigger_posts_signed_samples_and_prints_the_completed_task() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let (mut child, port) = spawn_serve(serve_command(&config));

    // generic, with the status asked for.
    let o = trigger(
        &config,
        port,
        &[
            "--provider",
            "acme",
            "--payment-id",
            "pay_trigger_1",
            "--status",
            "authorized",
        ],
    );
    assert_completed(&o, "pay_trigger_1", "authorized");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ack: 202 Accepted"),
        "{}",
        text(&o)
    );
    // Then the same payment moves on.
    let o = trigger(
        &config,
        port,
        &["--provider", "acme", "--payment-id", "pay_trigger_1"],
    );
    assert_completed(&o, "pay_trigger_1", "succeeded");

    // stripe: a named sample, a fresh random payment id.
    let o = trigger(
        &config,
        port,
        &[
            "--provider",
            "stripe",
            "--sample",
            "payment_intent.payment_failed",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let pid = result(&o)["events"][0]["payment_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(pid.starts_with("pi_"), "{pid}");
    assert_completed(&o, &pid, "failed");

    // adyen: a two-item batch behind the fixed "[accepted]" ack.
    let o = trigger(
        &config,
        port,
        &[
            "--provider",
            "adyen",
            "--sample",
            "capture",
            "--payment-id",
            "order-trigger-2",
        ],
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("[accepted]"),
        "{}",
        text(&o)
    );
    assert_completed(&o, "order-trigger-2", "succeeded");

    // paymentsos and begateway, by canonical status alone.
    for (provider, status) in [("paymentsos", "refunded"), ("begateway", "authorized")] {
        let pid = format!("pay-{provider}-3");
        let o = trigger(
            &config,
            port,
            &[
                "--provider",
                provider,
                "--payment-id",
                &pid,
                "--status",
                status,
            ],
        );
        assert_completed(&o, &pid, status);
    }

    // `--sample list` lists; an unknown sample fails and lists too.
    let o = trigger(&config, port, &["--provider", "stripe", "--sample", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("charge.refunded") && out.contains("capture"),
        "{out}"
    );
    let o = trigger(&config, port, &["--provider", "stripe", "--sample", "nope"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("payment_intent.succeeded"),
        "{}",
        text(&o)
    );
    // A status the sample cannot produce: non-zero, explained.
    let o = trigger(
        &config,
        port,
        &["--provider", "stripe", "--status", "expired"],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("expired"), "{}", text(&o));

    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn trigger_without_a_running_service_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    // Port 9 (discard) on loopback: nothing listens there.
    let o = trigger(&config, 9, &["--provider", "acme"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("is the service running"), "{}", text(&o));
}

/// A beGateway RSA public key (the private half was thrown away).
const GATEWAY_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAl3ApLX2c+0UBYETefnCk
9MNLi0/pFN2JbxY3ERHI6V7uqU7viz4sAWoIf5NAt1uBGfmHe87KhgXLW2zgUDxn
8e+FOGe/GOHiTaXfnNPRTWfzjUAbykW30ToiWW8qH7lBIYh8/DzVkuSKyZ9SE2wV
AeIO7GDhxeFdVGUm0zuS8vEkmhBuK1pXdJL5S/4Ygv0WTfoQ7W5XeiWTBEe4egR4
W40oW3O8h1fx1zwhtitRsCq05Cbg1LEwY9M4HM2FZK0HOgVvr+ZC5csH3cMWH4V7
cU959InRkWzcEN05JDqtx8jyRi8VympQRuV8xSRHxpdctVYimW0Qu8XEYejgClzG
2wIDAQAB
-----END PUBLIC KEY-----
";

#[test]
fn trigger_refuses_rsa_signing_without_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    std::fs::write(dir.path().join("gw.pem"), GATEWAY_PUBLIC_KEY).unwrap();
    let basic = "username = \"361\"\npassword = \"demo-begateway-secret-key\"";
    let toml = std::fs::read_to_string(&config).unwrap();
    assert!(toml.contains(basic), "config.example.toml lost {basic:?}");
    std::fs::write(&config, toml.replace(basic, "public_key_file = \"gw.pem\"")).unwrap();
    let o = trigger(&config, 9, &["--provider", "begateway"]);
    assert!(!o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("rsa-sha256") && out.contains("private key"),
        "{out}"
    );
    assert!(!out.contains("POST"), "nothing is sent: {out}");
}
