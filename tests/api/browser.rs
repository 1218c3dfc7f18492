//! A real browser through the 3DS return: headless Chromium follows the 303
//! from `/v1/return/{id}` (after a GET, and after an auto-submitted form POST
//! as an ACS sends it) and lands on the merchant's page.
//!
//! Needs `/usr/bin/chromium` (Debian package `chromium`; `scripts/test`
//! installs it). Missing Chromium fails the test unless
//! `IPN_RELAY_SKIP_BROWSER=1`, which CI (`CI=true`) never honours.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

fn chromium() -> Option<PathBuf> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if std::env::var("IPN_RELAY_SKIP_BROWSER").as_deref() == Ok("1") && !in_ci {
        return None;
    }
    let candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];
    match candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
        Some(p) => Some(p),
        None => panic!(
            "headless Chromium is required for the browser tests but was not found at {candidates:?}; \
             install it (Debian: `apt-get install -y chromium`) or set IPN_RELAY_SKIP_BROWSER=1 to skip"
        ),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A tiny merchant site: `/acs` serves an auto-submitting form that POSTs to
/// the configured action (like an ACS finishing 3DS); anything else echoes
/// its own method and request URI.
struct Merchant {
    port: u16,
    /// Set once the relay's address is known.
    form_action: Arc<OnceLock<String>>,
    /// Every request line seen, e.g. "GET /done?order=7&…".
    seen: Arc<Mutex<Vec<String>>>,
}

impl Merchant {
    fn start() -> Merchant {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let form_action: Arc<OnceLock<String>> = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (fa, sn) = (form_action.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (fa, sn) = (fa.clone(), sn.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &fa, &sn);
                });
            }
        });
        Merchant {
            port,
            form_action,
            seen,
        }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn serve(
    mut stream: TcpStream,
    form_action: &OnceLock<String>,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    if content_length > 0 {
        let mut body = vec![0; content_length];
        std::io::Read::read_exact(&mut reader, &mut body)?;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    seen.lock().unwrap().push(format!("{method} {target}"));
    let body = if target.starts_with("/acs") {
        let action = form_action.get().cloned().unwrap_or_default();
        format!(
            "<!doctype html><html><head><title>ACS</title></head><body>\
             <p>Authenticating…</p>\
             <form id=\"f\" method=\"POST\" action=\"{}\">\
             <input type=\"hidden\" name=\"cres\" value=\"eyJ0cmFuc1N0YXR1cyI6IlkifQ\">\
             <input type=\"hidden\" name=\"threeDSSessionData\" value=\"c2Vzc2lvbg\">\
             </form><script>document.getElementById('f').submit();</script></body></html>",
            html_escape(&action)
        )
    } else {
        format!(
            "<!doctype html><html><head><title>Merchant</title></head><body>\
             <h1>merchant-landing</h1><p id=\"method\">{}</p><p id=\"uri\">{}</p></body></html>",
            html_escape(&method),
            html_escape(&target)
        )
    };
    write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Run headless Chromium on `url` and return the DOM it ends on. Bounded:
/// killed after 30s.
fn dump_dom(chrome: &std::path::Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().join("dom.html");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--no-proxy-server",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=5000", "--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium exited with {status:?}");
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 30s on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(out_path).unwrap()
}

async fn setup(merchant: &Merchant, pay: &str) -> TestApp {
    let body = format!(
        "{BASE}\n[[merchants]]\nid = \"browser-shop\"\napi_keys = [\"browser-key\"]\n\
         allowed_return_origins = [\"{}\"]\n\
         [[providers]]\nid = \"browser-psp\"\nmerchant_id = \"browser-shop\"\n\
         [providers.auth]\nsecrets = [\"browser-secret\"]\n",
        merchant.origin()
    );
    let app = spawn_with("", &body).await;
    let r = app
        .client
        .post(app.url("/v1/payments"))
        .bearer_auth("browser-key")
        .json(&json!({
            "payment_id": pay,
            "merchant_site_url": format!("{}/done?order=7", merchant.origin()),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let (code, res) = app
        .ipn_result(
            "browser-psp",
            &generic(&format!("{pay}_ev"), pay, "succeeded"),
        )
        .await;
    assert_eq!(code, 200, "{res}");
    assert_eq!(res["events"][0]["status"], "succeeded");
    app
}

fn assert_landed(dom: &str, merchant: &Merchant, pay: &str, method: &str) {
    assert!(
        dom.contains("merchant-landing"),
        "the browser did not reach the merchant page; DOM:\n{dom}"
    );
    assert!(dom.contains("/done?order=7"), "{dom}");
    assert!(dom.contains(&format!("payment_id={pay}")), "{dom}");
    assert!(dom.contains("status=succeeded"), "{dom}");
    assert!(
        dom.contains(&format!("<p id=\"method\">{method}</p>")),
        "after a 303 the browser must GET the merchant page: {dom}"
    );
    let seen = merchant.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|l| l.starts_with("GET /done?order=7&")
            && l.contains(&format!("payment_id={pay}"))
            && l.contains("status=succeeded")),
        "merchant never got the redirected GET: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_following_the_return_lands_on_the_merchant_page() {
    let Some(chrome) = chromium() else { return };
    let merchant = Merchant::start();
    let pay = "browser_get_1";
    let app = setup(&merchant, pay).await;
    let url = app.url(&format!("/v1/return/browser-shop/{pay}"));
    let dom = tokio::task::spawn_blocking(move || dump_dom(&chrome, &url))
        .await
        .unwrap();
    assert_landed(&dom, &merchant, pay, "GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_posted_back_by_an_acs_form_lands_on_the_merchant_page() {
    let Some(chrome) = chromium() else { return };
    let merchant = Merchant::start();
    let pay = "browser_post_1";
    let app = setup(&merchant, pay).await;
    merchant
        .form_action
        .set(app.url(&format!("/v1/return/{pay}")))
        .unwrap();
    let start = format!("{}/acs", merchant.origin());
    let dom = tokio::task::spawn_blocking(move || dump_dom(&chrome, &start))
        .await
        .unwrap();
    assert_landed(&dom, &merchant, pay, "GET");
    let seen = merchant.seen.lock().unwrap().clone();
    assert!(seen.iter().any(|l| l == "GET /acs"), "{seen:?}");
}
