//! The real binary: `check-config` (valid, invalid, secrets redacted),
//! `IPN_RELAY_CONFIG`, `*_env` secrets, and `sign` against a running app.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ipn_relay::config::Settings;
use serde_json::Value;

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_ipn-relay");

/// Every secret value in config.example.toml.
const EXAMPLE_SECRETS: [&str; 8] = [
    "acme-secret",
    "whsec_demo_stripe_endpoint_secret",
    "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056",
    "demo-paymentsos-private-key",
    "demo-begateway-secret-key",
    "shop-1-key",
    "dev-admin-token",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example() -> PathBuf {
    repo().join("config.example.toml")
}

/// The binary with a clean environment for the variables these tests use.
fn cmd() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("IPN_RELAY_CONFIG")
        .env_remove("IPN_TEST_MISSING_VAR")
        .env_remove("IPN_TEST_ACME_SECRET")
        .current_dir(repo());
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn assert_no_secrets(out: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!out.contains(s), "secret {s:?} leaked in:\n{out}");
    }
}

#[test]
fn check_config_accepts_the_example_and_prints_no_secret() {
    let o = cmd()
        .args(["check-config", "--config"])
        .arg(example())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("config OK"), "{out}");
    for p in ["acme", "stripe", "adyen", "paymentsos", "begateway"] {
        assert!(out.contains(&format!("provider {p}:")), "{out}");
    }
    assert!(out.contains("merchant shop-1"), "{out}");
    assert!(out.contains("127.0.0.1:8080"), "{out}");
    assert!(
        out.contains("ingress.unauthenticated_rate_limit = 10/s burst 50 per source address"),
        "{out}"
    );
    assert_no_secrets(&out, &EXAMPLE_SECRETS);
    assert_no_secrets(&err, &EXAMPLE_SECRETS);
}

#[test]
fn ipn_relay_config_names_the_file_when_config_is_not_given() {
    let o = cmd()
        .arg("check-config")
        .env("IPN_RELAY_CONFIG", example())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("config OK"), "{out}");
    // Neither given: a usage error, not a silent default.
    let o = cmd().arg("check-config").output().unwrap();
    assert!(!o.status.success());
    let (_, err) = text(&o);
    assert!(err.contains("--config"), "{err}");
}

#[test]
fn the_example_parses_and_its_debug_form_has_no_secret() {
    let s = Settings::load(&example(), &|_| None).expect("config.example.toml is valid");
    assert_eq!(s.providers.len(), 5);
    assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
    assert_no_secrets(&format!("{s:?}"), &EXAMPLE_SECRETS);
    assert_no_secrets(&format!("{s:#?}"), &EXAMPLE_SECRETS);
    assert_no_secrets(&ipn_relay::config::describe(&s), &EXAMPLE_SECRETS);
    // The secrets are really loaded (the test above would pass on an empty config).
    let acme = s.provider("acme").unwrap();
    assert_eq!(acme.auth.secrets.len(), 1);
    use secrecy::ExposeSecret;
    assert_eq!(acme.auth.secrets[0].expose_secret(), "acme-secret");
}

const LEAKY: &str = "leaky-secret-do-not-print";

/// A minimal valid config with `extra` appended (and one secret in it).
fn with(extra: &str) -> String {
    format!("[admin]\ntokens = [\"{LEAKY}\"]\n{extra}\n")
}

const MERCHANT: &str = r#"
[[merchants]]
id = "shop-1"
allowed_return_origins = ["https://shop.example.com"]
"#;

#[test]
fn bad_configs_fail_with_a_message_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key",
            with("[server]\nlistne = \"127.0.0.1:1\""),
            vec!["listne"],
        ),
        (
            "unknown table",
            with("[sever]\nlisten = \"127.0.0.1:1\""),
            vec!["sever"],
        ),
        (
            "bad duration",
            with("[server]\nshutdown_timeout = \"5 parsecs\""),
            vec!["shutdown_timeout", "parsecs"],
        ),
        (
            "an unauthenticated rate limit of zero",
            with("[ingress]\nunauthenticated_rate_limit = { per_second = 10, burst = 0 }"),
            vec!["ingress.unauthenticated_rate_limit", "burst"],
        ),
        (
            "none without allowed_ips",
            with("[[providers]]\nid = \"open\"\n[providers.auth]\nscheme = \"none\""),
            vec!["providers \"open\" (line 3) auth.scheme", "allowed_ips"],
        ),
        (
            "secrets_env unset",
            with("[[providers]]\nid = \"acme\"\n[providers.auth]\nsecrets_env = \"IPN_TEST_MISSING_VAR\""),
            vec![
                "providers \"acme\" (line 3) auth.secrets_env",
                "IPN_TEST_MISSING_VAR",
            ],
        ),
        (
            "merchant_id naming no merchant",
            with(&format!(
                "[[providers]]\nid = \"acme\"\nmerchant_id = \"shop-9\"\n[providers.auth]\nsecrets = [\"{LEAKY}\"]\n{MERCHANT}"
            )),
            vec!["providers \"acme\" (line 3) merchant_id", "shop-9"],
        ),
        (
            "default_site_url outside allowed origins",
            with("[[merchants]]\nid = \"shop-1\"\nallowed_return_origins = [\"https://shop.example.com\"]\ndefault_site_url = \"https://evil.example.net/return\""),
            vec![
                "merchants \"shop-1\" (line 3) default_site_url",
                "evil.example.net",
            ],
        ),
        (
            "duplicate provider ids",
            with(&format!(
                "[[providers]]\nid = \"acme\"\nmerchant_id = \"shop-1\"\n[providers.auth]\nsecrets = [\"{LEAKY}\"]\n\
                 [[providers]]\nid = \"acme\"\nmerchant_id = \"shop-1\"\n[providers.auth]\nsecrets = [\"{LEAKY}\"]\n{MERCHANT}"
            )),
            vec![
                "providers \"acme\" (line 8): duplicate id",
                "first defined as providers \"acme\" (line 3)",
            ],
        ),
        (
            "a secret given as a string instead of a list",
            format!("[[providers]]\nid = \"acme\"\n[providers.auth]\nsecrets = \"{LEAKY}\""),
            vec!["secrets"],
        ),
        (
            "a password of the wrong type",
            format!("[admin]\ntokens = [\"{LEAKY}\"]\n[[providers]]\nid = \"b\"\n[providers.auth]\nscheme = \"basic\"\nusername = \"u\"\npassword = [\"{LEAKY}\"]"),
            vec!["password"],
        ),
    ];
    for (i, (what, config, needles)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, config).unwrap();
        let o = cmd()
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{what}: accepted\n{out}");
        assert_ne!(o.status.code(), None, "{what}: killed by a signal");
        assert!(!out.contains("config OK"), "{what}: {out}");
        for n in needles {
            assert!(err.contains(n), "{what}: {n:?} not in {err:?}");
        }
        assert_no_secrets(&format!("{out}{err}"), &[LEAKY]);
        // `serve` refuses the same file before binding anything.
        let o = cmd()
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{what}: serve started");
        let (out, err) = text(&o);
        assert_no_secrets(&format!("{out}{err}"), &[LEAKY]);
    }

    // A file that does not exist.
    let missing = dir.path().join("nope.toml");
    let o = cmd()
        .args(["check-config", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let (_, err) = text(&o);
    assert!(err.contains("nope.toml"), "{err}");
    assert_eq!(
        err.matches("No such file").count(),
        1,
        "the cause is said once: {err}"
    );
}

#[test]
fn a_secret_from_the_environment_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.toml");
    let secret = "env-provided-acme-secret";
    std::fs::write(
        &path,
        format!(
            "[admin]\ntokens_env = \"IPN_TEST_ADMIN\"\n[[providers]]\nid = \"acme\"\nmerchant_id = \"shop-1\"\n\
             [providers.auth]\nsecrets_env = \"IPN_TEST_ACME_SECRET\"\n{MERCHANT}"
        ),
    )
    .unwrap();
    let o = cmd()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("IPN_TEST_ACME_SECRET", secret)
        .env("IPN_TEST_ADMIN", "env-admin-token")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("provider acme:"), "{out}");
    assert_no_secrets(&format!("{out}{err}"), &[secret, "env-admin-token"]);

    // And the secret is what `sign` signs with.
    let body = dir.path().join("body.json");
    std::fs::write(&body, b"{\"id\":\"x\"}").unwrap();
    let o = cmd()
        .args(["sign", "--provider", "acme", "--config"])
        .arg(&path)
        .arg("--body")
        .arg(&body)
        .env("IPN_TEST_ACME_SECRET", secret)
        .env("IPN_TEST_ADMIN", "env-admin-token")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(b"{\"id\":\"x\"}");
    let want = hex::encode(mac.finalize().into_bytes());
    assert_eq!(
        out.trim(),
        format!("content-type: application/json\nX-Signature: {want}")
    );

    // Unset, the same file is refused.
    let o = cmd()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("IPN_TEST_ADMIN", "env-admin-token")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).1.contains("IPN_TEST_ACME_SECRET"));
}

/// `Name: value` lines printed by `sign`.
fn headers_from(out: &str) -> Vec<(String, String)> {
    out.lines()
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("not a header: {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[tokio::test]
async fn sign_prints_headers_a_running_app_accepts() {
    let extra = r#"
[[providers]]
id = "st"
merchant_id = "shop-1"
[providers.auth]
scheme = "stripe"
secrets = ["whsec_cli_secret"]
"#;
    let config = format!("{BASE}{extra}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config_text(dir.path(), "", &config)).unwrap();
    let sign = |provider: &str, body: &Path| {
        let o = cmd()
            .args(["sign", "--provider", provider, "--config"])
            .arg(&path)
            .arg("--body")
            .arg(body)
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        headers_from(&out)
    };
    let body = serde_json::to_vec(&generic("ev_cli", "pay_cli", "Succeed")).unwrap();
    let body_path = dir.path().join("ipn.json");
    std::fs::write(&body_path, &body).unwrap();
    let acme = sign("acme", &body_path);
    let names = |h: &[(String, String)]| h.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(names(&acme), ["content-type", "X-Signature"], "{acme:?}");
    assert_eq!(acme[0].1, "application/json");
    let stripe = sign("st", &body_path);
    assert_eq!(names(&stripe), ["content-type", "Stripe-Signature"]);

    let o = cmd()
        .args(["sign", "--provider", "nobody", "--config"])
        .arg(&path)
        .arg("--body")
        .arg(&body_path)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).1.contains("nobody"));

    let app = spawn_in(dir, "", &config).await;
    let r = app.post_raw("acme", body.clone(), &acme).await;
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.wait_done(&id).await["status"], "completed");
    // The stripe signature (with a fresh timestamp) is accepted too.
    let r = app.post_raw("st", body.clone(), &stripe).await;
    assert_eq!(r.status().as_u16(), 202);
    // The printed headers are bound to that body.
    let mut other = body.clone();
    other.push(b' ');
    let r = app.post_raw("acme", other, &acme).await;
    assert_eq!(r.status().as_u16(), 401);
}

#[test]
fn serve_warns_at_start_up_about_a_provider_without_authentication() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n[storage]\npath = \"{}\"\n\
         [[providers]]\nid = \"lan\"\nmerchant_id = \"m\"\nallowed_ips = [\"10.0.0.0/8\"]\n\
         [providers.auth]\nscheme = \"none\"\n\
         [[providers]]\nid = \"signed\"\nmerchant_id = \"m\"\n[providers.auth]\nsecrets = [\"s\"]\n\
         [[merchants]]\nid = \"m\"\n",
        dir.path().join("store").display()
    );
    std::fs::write(&config, text).unwrap();
    let mut child = cmd()
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut warnings = Vec::new();
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the service starts");
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["level"] == "WARN" {
            warnings.push(v.clone());
        }
        if v["message"] == "ipn-relay listening" {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let unauthenticated: Vec<_> = warnings
        .iter()
        .filter(|w| {
            w["message"]
                .as_str()
                .unwrap_or("")
                .contains("without authentication")
        })
        .collect();
    assert_eq!(unauthenticated.len(), 1, "warnings: {warnings:?}");
    assert_eq!(unauthenticated[0]["provider"], "lan");
}
