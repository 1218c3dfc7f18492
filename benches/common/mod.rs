//! What the benches share (`mod common;` in `benches/e2e.rs`,
//! `benches/ingest.rs` and `benches/soak.rs`; a folder, so cargo does not
//! take it for a bench of its own): the ipn-relay config text, HMAC signing
//! and posting of IPNs, the reqwest client, an open-loop paced generator, a
//! minimal HTTP/1.1 merchant sink, the bench runtime (`bench-client`) and
//! the server-CPU reading from /proc, plus small helpers (environment
//! numbers, the time base, percentiles, MET/MISS).
//!
//! Each bench uses a part of this, so unused items are allowed here.
#![allow(dead_code)]

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use ipn_relay::app::Application;
use ipn_relay::config::Settings;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// The provider's HMAC secret (`secrets` in [`settings`]).
pub const SECRET: &[u8] = b"bench-secret";
/// The merchant endpoint's Standard Webhooks secret.
pub const ENDPOINT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The bench's own runtime threads: [`server_cpu`] leaves them out.
pub const CLIENT_THREADS: &str = "bench-client";

/// `name` from the environment as a number, else `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The time base of every recorded instant.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `"MET"` or `"MISS"`.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "MET"
    } else {
        "MISS"
    }
}

/// Percentile `p` of sorted µs values, in ms (NaN if empty).
pub fn pct_ms(v: &[u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

/// The merchant endpoint of [`settings`].
pub struct Endpoint<'a> {
    pub id: &'a str,
    pub url: &'a str,
    /// Keys of `[delivery]` beyond the shared ones (one a line).
    pub delivery: &'a str,
    /// Keys of the endpoint beyond `id`, `url` and `secret` (one a line).
    pub extra: &'a str,
}

/// ipn-relay's config for a bench: listening on a free port, 2 workers,
/// `durability = "sync"` in `dir/store`, no ingress rate limit, provider
/// `acme` (HMAC [`SECRET`]) for merchant `shop-1`. `sections`: more
/// top-level tables (e.g. `[retention]`); `statuses`: the lines of
/// `[providers.mapping.statuses]` (none if empty); `endpoint`: the merchant
/// endpoint and the `[delivery]` towards it (private targets allowed).
pub fn settings(
    dir: &std::path::Path,
    sections: &str,
    statuses: &str,
    endpoint: Option<Endpoint<'_>>,
) -> Settings {
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2
[log]
level = "error"
[admin]
tokens = ["bench-admin"]
[storage]
path = "{}"
durability = "sync"
{sections}[ingress]
rate_limit = {{ per_second = 1000000, burst = 1000000 }}
"#,
        dir.join("store").display()
    );
    if let Some(e) = &endpoint {
        text.push_str(&format!(
            r#"[delivery]
allow_private_targets = true
{}max_in_flight = 256
per_endpoint = {{ per_second = 100000, burst = 100000, max_in_flight = 64 }}
"#,
            e.delivery
        ));
    }
    text.push_str(
        r#"[[providers]]
id = "acme"
merchant_id = "shop-1"
[providers.auth]
secrets = ["bench-secret"]
"#,
    );
    if !statuses.is_empty() {
        text.push_str(&format!("[providers.mapping.statuses]\n{statuses}"));
    }
    text.push_str("[[merchants]]\nid = \"shop-1\"\n");
    if let Some(e) = &endpoint {
        text.push_str(&format!(
            "[[merchants.endpoints]]\nid = \"{}\"\nurl = \"{}\"\nsecret = \"{ENDPOINT_SECRET}\"\n{}",
            e.id, e.url, e.extra
        ));
    }
    Settings::parse(&text, dir, &|_| None).expect("bench config")
}

/// ipn-relay running on the current runtime until [`Relay::stop`].
pub struct Relay {
    pub port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Relay {
    pub fn start(settings: Settings) -> Relay {
        let app = Application::build(settings).unwrap();
        let port = app.port();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        Relay {
            port,
            stop,
            running,
        }
    }

    /// `POST /v1/ipn/acme` of this relay.
    pub fn ipn_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/ipn/acme", self.port)
    }

    /// Shut it down; resolves when it has stopped.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.running.await;
    }
}

/// The bench's own runtime: its threads are named [`CLIENT_THREADS`].
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()
        .unwrap()
}

/// The hex HMAC-SHA256 of `body` with [`SECRET`] (the `X-Signature` header).
pub fn sign(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// POST the IPN `body` to `url`, signed.
pub async fn post_ipn(
    client: &reqwest::Client,
    url: &str,
    body: String,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("X-Signature", sign(&body))
        .body(body)
        .send()
        .await
}

/// A client keeping up to `pool` idle connections per host; requests time
/// out after `timeout`.
pub fn client(pool: usize, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .timeout(timeout)
        .tcp_nodelay(true)
        .build()
        .unwrap()
}

/// Open loop: request `n` of `total` is due at `start + n / rate` (start:
/// now + 5 ms) and `send(n, due)` runs in its own task, whatever the
/// earlier ones are doing (at most `max_in_flight` at once; a task waiting
/// for a slot is still due when it was). Returns once every request has
/// been spawned, with the tasks not finished yet.
pub async fn paced<F, Fut>(
    rate: u64,
    total: usize,
    max_in_flight: usize,
    send: F,
) -> tokio::task::JoinSet<()>
where
    F: Fn(usize, Instant) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now() + Duration::from_millis(5);
    let due = |n: usize| start + Duration::from_secs_f64(n as f64 / rate as f64);
    let mut n = 0;
    while n < total {
        tokio::time::sleep_until(due(n).into()).await;
        // Everything due by now (the timer wakes about once per ms).
        let now = Instant::now();
        while n < total && due(n) <= now {
            let (sem, job) = (sem.clone(), send(n, due(n)));
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await;
                job.await;
            });
            n += 1;
        }
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    tasks
}

/// Wait for the tasks left by [`paced`], at most `limit`; then abort the
/// rest (saying how many).
pub async fn join_within(mut tasks: tokio::task::JoinSet<()>, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline.into(), tasks.join_next()).await {
            Ok(_) => {}
            Err(_) => {
                println!("  ({} requests still unanswered; abandoned)", tasks.len());
                tasks.abort_all();
                break;
            }
        }
    }
}

/// Check `done` every `every` until it holds (true) or `deadline` has
/// passed (false).
pub async fn poll_until(
    deadline: Instant,
    every: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// The merchant endpoint: a minimal HTTP/1.1 server on the bench's own
/// runtime (so its CPU is not counted as the relay's). Keep-alive,
/// `content-length` bodies only (what the relay's client sends). Each
/// body goes to `record`, then the answer is `200 ok` if it returned true,
/// else `503 down`. Returns the URL `http://127.0.0.1:<port>{path}`.
pub async fn sink<F>(path: &str, record: F) -> String
where
    F: Fn(&[u8]) -> bool + Send + Sync + 'static,
{
    let record = Arc::new(record);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(sink_conn(stream, record.clone()));
        }
    });
    format!("http://127.0.0.1:{port}{path}")
}

async fn sink_conn<F>(mut s: tokio::net::TcpStream, record: Arc<F>)
where
    F: Fn(&[u8]) -> bool,
{
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
    const DOWN: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\ndown";
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    loop {
        // Parse what is buffered; read more while the request is partial.
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(head)) => {
                    let len = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .and_then(|v| v.trim().parse::<usize>().ok());
                    match len {
                        Some(len) => Some((head, len)),
                        None => return, // chunked or no body: not what the relay sends
                    }
                }
                Ok(httparse::Status::Partial) => None,
                Err(_) => return,
            }
        };
        if let Some((head, len)) = parsed {
            if buf.len() >= head + len {
                let ok = record(&buf[head..head + len]);
                buf.drain(..head + len);
                if s.write_all(if ok { OK } else { DOWN }).await.is_err() {
                    return;
                }
                continue;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

/// CPU time used so far by the servers: every thread of this process but
/// the bench runtime's ([`CLIENT_THREADS`]) and the main thread. Linux only
/// (zero elsewhere); threads that ended are not counted.
pub fn server_cpu() -> Duration {
    let me = std::process::id().to_string();
    let mut ticks = 0u64;
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = t.path();
        if dir.file_name().and_then(|n| n.to_str()) == Some(me.as_str()) {
            continue;
        }
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.starts_with(CLIENT_THREADS) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let t = |i: usize| f.get(i - 3).map_or(0, |v| v.parse::<u64>().unwrap_or(0));
        ticks += t(14) + t(15);
    }
    // USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}
