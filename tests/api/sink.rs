//! A real merchant endpoint for the relay tests: an actix-web server on
//! 127.0.0.1:0 inside the test process that records every request and
//! answers what the test scripted. The self-tests at the bottom prove the
//! sink itself (reply scripts, delays, recording) with a plain reqwest
//! client, so a relay test failing means the relay, not the sink.
//!
//! API:
//! - [`Sink::start`] binds and serves; [`Sink::url`]`("/hooks/a")` is
//!   `http://127.0.0.1:PORT/hooks/a` ([`Sink::localhost_url`] names it
//!   `localhost` instead).
//! - [`Sink::set`]`(path, Reply)` answers every request to `path` so;
//!   [`Sink::script`]`(path, vec![..])` answers one per request in order,
//!   the last one repeating. Unscripted paths answer `200 ok`.
//! - [`Reply::ok`], [`Reply::status`], `.header(k, v)`, `.body(s)`,
//!   `.delay(d)` (the reply is held back that long after arrival).
//! - [`Sink::script_payment`]`(path, payment_id, vec![..])` scripts only
//!   the requests whose JSON `data.payment_id` is that payment.
//! - Requests are matched and recorded by path (the query is ignored):
//!   [`Sink::received`], [`Sink::wait_for`]`(path, n, deadline)` (panics with
//!   what arrived if fewer than `n` came in time).
//! - [`Received::verify`]`(secret)` checks the Standard Webhooks signature
//!   with the independent `standardwebhooks` crate and panics if it does not
//!   verify (see there for how the timestamp tolerance is handled).

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

/// What the sink answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Option<Duration>,
}

impl Reply {
    /// `200 ok`.
    pub fn ok() -> Reply {
        Reply::status(200).body("ok")
    }

    /// This status, empty body.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.to_string();
        self
    }

    /// Answer only this long after the request arrived.
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = Some(d);
        self
    }
}

/// One request as the sink saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub method: String,
    /// Names lower-case, in arrival order (repeats kept).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the request (headers and body) had arrived.
    pub at: Instant,
    /// The body parsed as JSON (`Null` if it is not JSON).
    pub json: Value,
}

impl Received {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `webhook-id` (panics if absent).
    pub fn webhook_id(&self) -> &str {
        self.header("webhook-id")
            .unwrap_or_else(|| panic!("no webhook-id: {self:?}"))
    }

    pub fn webhook_timestamp(&self) -> i64 {
        self.header("webhook-timestamp")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no numeric webhook-timestamp: {self:?}"))
    }

    /// `data.sequence` of the notification.
    pub fn sequence(&self) -> i64 {
        self.json["data"]["sequence"]
            .as_i64()
            .unwrap_or_else(|| panic!("no data.sequence: {}", self.json))
    }

    /// `data.payment_id` of the notification.
    pub fn payment_id(&self) -> &str {
        self.json["data"]["payment_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no data.payment_id: {}", self.json))
    }

    /// `type` of the notification (`payment.succeeded`, …).
    pub fn event_type(&self) -> &str {
        self.json["type"]
            .as_str()
            .unwrap_or_else(|| panic!("no type: {}", self.json))
    }

    /// The headers as an `http` 1.x map (what `standardwebhooks` takes;
    /// reqwest 0.12 re-exports that crate's type).
    pub fn header_map(&self) -> reqwest::header::HeaderMap {
        let mut m = reqwest::header::HeaderMap::new();
        for (k, v) in &self.headers {
            m.append(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                reqwest::header::HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    /// Does one of the `webhook-signature` entries match `secret`? The
    /// expected signature is computed by `standardwebhooks::Webhook::sign`
    /// over this request's `webhook-id`, `webhook-timestamp` and raw body,
    /// whatever the wall clock says.
    pub fn signed_by(&self, secret: &str) -> bool {
        let wh = standardwebhooks::Webhook::new(secret).expect("a whsec_ base64 secret");
        let expected = wh
            .sign(self.webhook_id(), self.webhook_timestamp(), &self.body)
            .expect("body is UTF-8");
        self.header("webhook-signature")
            .unwrap_or_else(|| panic!("no webhook-signature: {self:?}"))
            .split(' ')
            .any(|s| s == expected)
    }

    /// Panics unless the request verifies with `secret`.
    ///
    /// The signature is always checked ([`Received::signed_by`]). When the
    /// request's timestamp is within the crate's 5-minute tolerance of the
    /// wall clock (always, unless the test moved a `ManualClock` away), the
    /// crate's full `Webhook::verify` must accept it too; after a test moved
    /// the service clock hours ahead the timestamp is the service's "now",
    /// which the crate (reading the wall clock) would refuse as from the
    /// future, so only the signature is checked then.
    pub fn verify(&self, secret: &str) {
        assert!(
            self.signed_by(secret),
            "{} {}: no webhook-signature entry verifies with the secret; headers {:?}",
            self.method,
            self.path,
            self.headers
        );
        let wall = chrono::Utc::now().timestamp();
        if (self.webhook_timestamp() - wall).abs() < 290 {
            let wh = standardwebhooks::Webhook::new(secret).unwrap();
            if let Err(e) = wh.verify(&self.body, &self.header_map()) {
                panic!(
                    "standardwebhooks refuses {} {}: {e}; headers {:?}",
                    self.method, self.path, self.headers
                );
            }
        }
    }

    /// Panics if `secret` verifies the request.
    pub fn refuse(&self, secret: &str) {
        assert!(
            !self.signed_by(secret),
            "{} {} still verifies with a secret that should no longer sign; headers {:?}",
            self.method,
            self.path,
            self.headers
        );
    }
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, VecDeque<Reply>>,
    /// (path, `data.payment_id`) → replies; consulted before `scripts`.
    payment_scripts: HashMap<(String, String), VecDeque<Reply>>,
    received: Vec<Received>,
}

fn next_of(q: Option<&mut VecDeque<Reply>>) -> Option<Reply> {
    match q {
        Some(q) if q.len() > 1 => q.pop_front(),
        Some(q) => q.front().cloned(),
        None => None,
    }
}

impl State {
    fn next_reply(&mut self, path: &str, json: &Value) -> Reply {
        if let Some(p) = json["data"]["payment_id"].as_str() {
            let key = (path.to_string(), p.to_string());
            if let Some(r) = next_of(self.payment_scripts.get_mut(&key)) {
                return r;
            }
        }
        next_of(self.scripts.get_mut(path)).unwrap_or_else(Reply::ok)
    }
}

/// A local HTTP server that plays merchant endpoints.
pub struct Sink {
    pub port: u16,
    state: Arc<Mutex<State>>,
    handle: ServerHandle,
}

impl Sink {
    /// Bind 127.0.0.1:0 and serve in the background.
    pub async fn start() -> Sink {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = TcpListener::bind("127.0.0.1:0").expect("sink binds");
        let port = listener.local_addr().unwrap().port();
        let st = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(st.clone()))
                .app_data(web::PayloadConfig::new(16 << 20))
                .default_service(web::to(handle))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .expect("sink listens")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Sink {
            port,
            state,
            handle,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://localhost:PORT{path}` (a host name that resolves to loopback).
    pub fn localhost_url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.port)
    }

    /// Answer every request to `path` with `reply`.
    pub fn set(&self, path: &str, reply: Reply) {
        self.script(path, vec![reply]);
    }

    /// Answer requests to `path` with these replies in turn; the last repeats.
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        assert!(!replies.is_empty(), "a script needs at least one reply");
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(path.to_string(), replies.into());
    }

    /// Like [`Sink::script`] but only for requests to `path` whose JSON body
    /// has this `data.payment_id` (other payments get the path's replies).
    pub fn script_payment(&self, path: &str, payment_id: &str, replies: Vec<Reply>) {
        assert!(!replies.is_empty(), "a script needs at least one reply");
        self.state
            .lock()
            .unwrap()
            .payment_scripts
            .insert((path.to_string(), payment_id.to_string()), replies.into());
    }

    /// Everything that arrived at `path` so far, oldest first.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.state
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Everything that arrived at any path, oldest first.
    pub fn all_received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Poll until `path` has received at least `n` requests; panics with
    /// what did arrive if `deadline` passes first.
    pub async fn wait_for(&self, path: &str, n: usize, deadline: Duration) -> Vec<Received> {
        let end = Instant::now() + deadline;
        loop {
            let got = self.received(path);
            if got.len() >= n {
                return got;
            }
            if Instant::now() >= end {
                let summary: Vec<String> = got.iter().map(|r| r.json.to_string()).collect();
                panic!(
                    "{path}: expected {n} requests within {deadline:?}, got {}: {summary:#?}",
                    got.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Sends the stop command at once; the returned future only awaits it.
        drop(self.handle.stop(false));
    }
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let path = req.path().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = {
        let mut st = state.lock().unwrap();
        st.received.push(Received {
            path: path.clone(),
            method: req.method().as_str().to_string(),
            headers,
            body: body.to_vec(),
            at: Instant::now(),
            json: json.clone(),
        });
        st.next_reply(&path, &json)
    };
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    let mut resp = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(reply.status).expect("a valid status"),
    );
    for (k, v) in &reply.headers {
        resp.insert_header((k.as_str(), v.as_str()));
    }
    resp.body(reply.body)
}

// ---------------------------------------------------------------------------
// Self-tests: the sink does what the relay tests rely on.

#[tokio::test]
async fn sink_answers_200_ok_by_default_and_records_the_request() {
    let sink = Sink::start().await;
    let r = reqwest::Client::new()
        .post(sink.url("/hooks/a?x=1"))
        .header("X-Custom", "Yes")
        .header("content-type", "application/json")
        .body(r#"{"type":"payment.succeeded"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    let got = sink.wait_for("/hooks/a", 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].header("x-custom"), Some("Yes"));
    assert_eq!(got[0].header("X-CUSTOM"), Some("Yes"));
    assert_eq!(got[0].body, br#"{"type":"payment.succeeded"}"#);
    assert_eq!(got[0].event_type(), "payment.succeeded");
    assert!(sink.received("/hooks/b").is_empty(), "paths are kept apart");
}

#[tokio::test]
async fn a_script_is_answered_in_order_and_its_last_reply_repeats() {
    let sink = Sink::start().await;
    sink.script(
        "/s",
        vec![
            Reply::status(503).header("retry-after", "7"),
            Reply::status(500).body("boom"),
            Reply::ok().body("fine"),
        ],
    );
    sink.set("/other", Reply::status(410));
    let c = reqwest::Client::new();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let r = c.post(sink.url("/s")).body("{}").send().await.unwrap();
        let ra = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        seen.push((r.status().as_u16(), ra, r.text().await.unwrap()));
    }
    assert_eq!(seen[0], (503, Some("7".into()), String::new()));
    assert_eq!(seen[1], (500, None, "boom".into()));
    for s in &seen[2..] {
        assert_eq!(*s, (200, None, "fine".into()));
    }
    let r = c.get(sink.url("/other")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 410);
    assert_eq!(sink.received("/s").len(), 5);
    assert_eq!(sink.all_received().len(), 6);
    assert_eq!(sink.received("/other")[0].method, "GET");
}

#[tokio::test]
async fn a_payment_script_applies_to_that_payment_only() {
    let sink = Sink::start().await;
    sink.script_payment("/p", "pay_bad", vec![Reply::status(500)]);
    let c = reqwest::Client::new();
    let send = |p: &str| {
        c.post(sink.url("/p"))
            .body(format!(r#"{{"data":{{"payment_id":"{p}"}}}}"#))
            .send()
    };
    assert_eq!(send("pay_bad").await.unwrap().status().as_u16(), 500);
    assert_eq!(send("pay_good").await.unwrap().status().as_u16(), 200);
    assert_eq!(send("pay_bad").await.unwrap().status().as_u16(), 500);
    let got = sink.received("/p");
    assert_eq!(got.len(), 3);
    assert_eq!(got[1].payment_id(), "pay_good");
}

#[tokio::test]
async fn a_delayed_reply_is_held_back_but_the_arrival_is_recorded_at_once() {
    let sink = Sink::start().await;
    sink.set("/slow", Reply::ok().delay(Duration::from_millis(1500)));
    let c = reqwest::Client::new();
    let started = Instant::now();
    let slow = tokio::spawn({
        let c = c.clone();
        let u = sink.url("/slow");
        async move { c.post(u).body("{}").send().await.unwrap().status().as_u16() }
    });
    // Recorded while the reply is still held back; another path is not delayed.
    let got = sink.wait_for("/slow", 1, Duration::from_secs(5)).await;
    assert!(!slow.is_finished(), "the reply waits for its delay");
    let r = c.post(sink.url("/fast")).body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        !slow.is_finished(),
        "a fast path does not wait for a slow one"
    );
    assert_eq!(slow.await.unwrap(), 200);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(got[0].at < started + Duration::from_millis(1500));
}

#[tokio::test]
#[should_panic(expected = "expected 2 requests")]
async fn wait_for_panics_with_what_arrived() {
    let sink = Sink::start().await;
    reqwest::Client::new()
        .post(sink.url("/one"))
        .body("{}")
        .send()
        .await
        .unwrap();
    sink.wait_for("/one", 2, Duration::from_millis(300)).await;
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_aXBuLXJlbGF5LXRlc3Qtc2VjcmV0LTAy";

/// Sign with the crate, send, and check `verify` / `refuse` on what arrived.
async fn send_signed(sink: &Sink, path: &str, ts: i64, secrets: &[&str]) -> Received {
    let body = br#"{"type":"payment.pending","data":{"sequence":1}}"#;
    let sig: Vec<String> = secrets
        .iter()
        .map(|s| {
            standardwebhooks::Webhook::new(s)
                .unwrap()
                .sign("evt_1", ts, body)
                .unwrap()
        })
        .collect();
    reqwest::Client::new()
        .post(sink.url(path))
        .header("webhook-id", "evt_1")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig.join(" "))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    sink.wait_for(path, 1, Duration::from_secs(5))
        .await
        .remove(0)
}

#[tokio::test]
async fn verify_accepts_any_listed_signature_and_refuse_rejects_others() {
    let sink = Sink::start().await;
    let now = chrono::Utc::now().timestamp();
    let r = send_signed(&sink, "/two", now, &[SECRET, OTHER_SECRET]).await;
    r.verify(SECRET);
    r.verify(OTHER_SECRET);
    assert_eq!(r.sequence(), 1);
    let r = send_signed(&sink, "/one", now, &[SECRET]).await;
    r.verify(SECRET);
    r.refuse(OTHER_SECRET);
    // A timestamp a day ahead (a test's moved service clock): signature only.
    let r = send_signed(&sink, "/later", now + 86_400, &[SECRET]).await;
    r.verify(SECRET);
}

#[tokio::test]
#[should_panic(expected = "no webhook-signature entry verifies")]
async fn verify_panics_on_a_wrong_secret() {
    let sink = Sink::start().await;
    let now = chrono::Utc::now().timestamp();
    let r = send_signed(&sink, "/x", now, &[OTHER_SECRET]).await;
    r.verify(SECRET);
}
