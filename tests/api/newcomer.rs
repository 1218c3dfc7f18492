//! What trips up a newcomer: `curl --data-binary @ipn.json` (labelled as a
//! form), `sign` output fed to curl as is (`content-type` and PaymentsOS's
//! `event-type` included, `--body -` for stdin; without `event-type`, which
//! the body does not say, PaymentsOS `sign` refuses with one line naming
//! it), and a second instance on the same data dir failing with one clear
//! line.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::crash::{serve_command, spawn_serve, write_config};
use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_ipn-relay");

const POS: &str = r#"
[[providers]]
id = "pos"
preset = "paymentsos"
merchant_id = "shop-1"
[providers.auth]
secrets = ["pos-private-key-7d1f"]
"#;

#[tokio::test]
async fn json_sent_as_a_form_is_read_as_json() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&generic("ev_form", "pay_form", "Succeed")).unwrap();
    let mut h = app.sign("acme", &body, &[]);
    h.push((
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    ));
    let r = app.post_raw("acme", body, &h).await;
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    app.wait_done(&id).await;
    let (code, done) = app.get_json(&format!("/v1/async/result/{id}")).await;
    assert_eq!(code, 200, "{done}");
    assert_eq!(done["events"][0]["payment_id"], "pay_form", "{done}");
}

/// `sign --body -` with `body` on stdin: the printed `Name: value` lines.
fn sign_stdin(config: &std::path::Path, provider: &str, extra: &[&str], body: &[u8]) -> String {
    let o = sign_output(config, provider, extra, body);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// `sign --body -` with `body` on stdin, however it ends.
fn sign_output(
    config: &std::path::Path,
    provider: &str,
    extra: &[&str],
    body: &[u8],
) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.env_remove("IPN_RELAY_CONFIG")
        .args(["sign", "--provider", provider, "--body", "-", "--config"])
        .arg(config);
    for h in extra {
        c.args(["--header", h]);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait_with_output().unwrap()
}

fn header_lines(out: &str) -> Vec<(String, String)> {
    out.lines()
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap_or_else(|| panic!("{l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[tokio::test]
async fn sign_prints_every_header_and_reads_stdin() {
    let config = format!("{BASE}{POS}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config_text(dir.path(), "", &config)).unwrap();

    let body = serde_json::to_vec(&generic("ev_sign", "pay_sign", "Succeed")).unwrap();
    let acme = header_lines(&sign_stdin(&path, "acme", &[], &body));
    assert_eq!(acme[0], ("content-type".into(), "application/json".into()));
    assert!(acme.iter().any(|(k, _)| k == "X-Signature"), "{acme:?}");

    let pos_body = pos_body("pos-ev-1", "pos-pay-1", "auth-1");
    let pos = header_lines(&sign_stdin(
        &path,
        "pos",
        &["event-type: payment.authorization.create"],
        &pos_body,
    ));
    let names: Vec<&str> = pos.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.contains(&"content-type"), "{pos:?}");
    assert!(names.contains(&"event-type"), "{pos:?}");
    assert!(
        names.iter().any(|k| k.eq_ignore_ascii_case("signature")),
        "{pos:?}"
    );

    // Sent exactly as printed (post_raw adds no content-type when given one).
    let app = spawn_in(dir, "", &config).await;
    for (provider, b, h) in [("acme", body, acme), ("pos", pos_body, pos)] {
        let r = app.post_raw(provider, b, &h).await;
        assert_eq!(r.status().as_u16(), 202, "{provider}");
        let id = r.json::<Value>().await.unwrap()["request_id"]
            .as_str()
            .unwrap()
            .to_string();
        app.wait_done(&id).await;
        let (code, done) = app.get_json(&format!("/v1/async/result/{id}")).await;
        assert_eq!(code, 200, "{provider}: {done}");
        assert_eq!(done["status"], "completed", "{provider}: {done}");
    }
}

/// PaymentsOS signs its `event-type` header, and its preset maps statuses
/// by it; the body does not say which it is (authorization, capture, …), so
/// `sign` refuses to guess.
#[test]
fn sign_for_paymentsos_without_event_type_names_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config_text(dir.path(), "", &format!("{BASE}{POS}"))).unwrap();
    let body = pos_body("pos-ev-2", "pos-pay-2", "cap-1");
    for extra in [&[][..], &["content-type: application/json"][..]] {
        let o = sign_output(&path, "pos", extra, &body);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "signed anyway: {extra:?} {err}");
        assert!(
            o.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains("event-type"), "{err}");
        assert!(
            lines[0].contains(r#"--header "event-type: payment.capture.create""#),
            "{err}"
        );
    }
    // Any casing of the header will do.
    let out = sign_stdin(&path, "pos", &["Event-Type: payment.capture.create"], &body);
    assert!(out.contains("event-type: payment.capture.create"), "{out}");
}

#[test]
fn a_second_instance_on_the_same_data_dir_fails_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let (mut first, _port) = spawn_serve(serve_command(&config));

    let mut second = serve_command(&config).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = first.kill();
            panic!("the second instance kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let o = second.wait_with_output().unwrap();
    first.kill().unwrap();
    first.wait().unwrap();

    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!status.success(), "{err}");
    let store = dir.path().join("store");
    let want = format!("another ipn-relay is using {}", store.display());
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(&want), "{err}");
    assert!(!err.contains("could not acquire lock"), "{err}");
}

/// A PaymentsOS notification body (the event type is in its header).
fn pos_body(event: &str, payment: &str, resource: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": event, "created": "2024-06-28T17:03:50.123Z",
        "account_id": "acc", "app_id": "app", "payment_id": payment,
        "data": {"id": resource, "amount": 1500, "currency": "EUR",
                 "result": {"status": "Succeed"}}
    }))
    .unwrap()
}
