//! Ingest benchmark: `cargo bench --bench ingest`.
//!
//! Loads `POST /v1/ipn/acme` with unique HMAC-signed IPNs from 64 concurrent
//! connections and reports throughput and p50/p99 ack latency for three
//! servers measured in the same run, on the same machine, by the same client:
//!
//! 1. `bare`: an actix handler that reads the body and answers 202;
//! 2. `minimal-durable`: verify the HMAC + one sled insert + wait for the
//!    group-commit flush (+fdatasync) — the least a durable ack can cost;
//! 3. `ipn-relay`: the real application, `durability = "sync"`.
//!
//! The three are loaded in turn for several rounds and the medians are
//! compared, since one run on a shared 2-core machine swings by ±20%. It
//! prints the ratios ipn-relay/bare and ipn-relay/minimal-durable, and how
//! long the processing backlog took to drain after each round.
//! It also prints the servers' CPU time per request (every thread of this
//! process except the load generator's, from /proc), which, unlike
//! throughput, barely moves when the shared machine is busy; for ipn-relay
//! it covers the load and the drain, so it is the whole cost of an IPN.
//! Environment: `BENCH_SECONDS` (default 4), `BENCH_ROUNDS` (default 3),
//! `BENCH_CONNECTIONS` (default 64), `BENCH_ONLY=app` to load only
//! ipn-relay (for profiling).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use hmac::{Hmac, Mac};
use ipn_relay::app::Application;
use ipn_relay::auth;
use ipn_relay::config::Settings;
use ipn_relay::store::flush::GroupCommit;
use sha2::Sha256;

const SECRET: &[u8] = b"bench-secret";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(dir: &std::path::Path) -> Settings {
    let text = format!(
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
[ingress]
rate_limit = {{ per_second = 1000000, burst = 1000000 }}
[[providers]]
id = "acme"
merchant_id = "shop-1"
[providers.auth]
secrets = ["bench-secret"]
[[merchants]]
id = "shop-1"
"#,
        dir.join("store").display()
    );
    Settings::parse(&text, dir, &|_| None).expect("bench config")
}

#[derive(Default)]
struct Stats {
    /// Server CPU time spent on this load (see `server_cpu`).
    cpu: Duration,
    ok: u64,
    failed: u64,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

impl Stats {
    fn cpu_us_per_req(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.ok.max(1) as f64
    }
    fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// CPU time used so far by the servers: every thread of this process but
/// the load generator's runtime (`bench-client`) and the main thread.
/// Linux only (zero elsewhere); threads that ended are not counted.
fn server_cpu() -> Duration {
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
        if comm.starts_with("bench-client") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let t = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += t(14) + t(15);
    }
    // USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

/// 64 connections, each sending unique signed IPNs back to back for `secs`.
async fn load(port: u16, conns: usize, secs: u64, run: &'static str) -> Stats {
    let counter = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("http://127.0.0.1:{port}/v1/ipn/acme");
    let mut tasks = Vec::new();
    let cpu0 = server_cpu();
    let start = Instant::now();
    for _ in 0..conns {
        let (counter, stop, url) = (counter.clone(), stop.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
            let (mut ok, mut failed, mut lat) = (0u64, 0u64, Vec::with_capacity(65536));
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let body = format!(
                    r#"{{"id":"evt_{run}_{n}","created":1700000000,"data":{{"payment_id":"pay_{run}_{n}","status":"pending","amount":1000,"currency":"EUR"}}}}"#
                );
                let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
                mac.update(body.as_bytes());
                let sig = hex::encode(mac.finalize().into_bytes());
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("X-Signature", sig)
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok += 1;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    _ => failed += 1,
                }
            }
            (ok, failed, lat)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut s = Stats::default();
    for t in tasks {
        let (ok, failed, lat) = t.await.unwrap();
        s.ok += ok;
        s.failed += failed;
        s.latencies_us.extend(lat);
    }
    s.elapsed = start.elapsed();
    s.cpu = server_cpu().saturating_sub(cpu0);
    s.latencies_us.sort_unstable();
    s
}

fn bind() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    (l, p)
}

async fn bare() -> (actix_web::dev::ServerHandle, u16) {
    let (l, port) = bind();
    let server = HttpServer::new(|| {
        App::new().route(
            "/v1/ipn/{provider}",
            web::post().to(|_body: web::Bytes| async { HttpResponse::Accepted().finish() }),
        )
    })
    .workers(2)
    .disable_signals()
    .listen(l)
    .unwrap()
    .run();
    let h = server.handle();
    tokio::spawn(server);
    (h, port)
}

struct Minimal {
    auth: auth::AuthConfig,
    db: sled::Db,
    commit: GroupCommit,
}

async fn minimal(dir: &std::path::Path) -> (actix_web::dev::ServerHandle, u16, Arc<Minimal>) {
    let settings = config(dir);
    let path = dir.join("minimal");
    let db = sled::Config::new()
        .path(&path)
        .flush_every_ms(Some(1000))
        .open()
        .unwrap();
    let file = std::fs::File::open(path.join("db")).unwrap();
    let m = Arc::new(Minimal {
        auth: settings.providers[0].auth.clone(),
        commit: GroupCommit::start(db.clone(), file),
        db,
    });
    let (l, port) = bind();
    let state = web::Data::from(m.clone());
    let server = HttpServer::new(move || {
        App::new().app_data(state.clone()).route(
            "/v1/ipn/{provider}",
            web::post().to(
                |req: actix_web::HttpRequest, body: web::Bytes, m: web::Data<Minimal>| async move {
                    let now = chrono::Utc::now().timestamp();
                    if auth::verify(&m.auth, req.headers(), &body, now).is_err() {
                        return HttpResponse::Unauthorized().finish();
                    }
                    let id = uuid::Uuid::new_v4();
                    if m.db.insert(id.as_bytes(), body.as_ref()).is_err() {
                        return HttpResponse::ServiceUnavailable().finish();
                    }
                    match m.commit.wait(m.commit.ticket()).await {
                        Ok(()) => HttpResponse::Accepted().body(id.to_string()),
                        Err(_) => HttpResponse::ServiceUnavailable().finish(),
                    }
                },
            ),
        )
    })
    .workers(2)
    .disable_signals()
    .listen(l)
    .unwrap()
    .run();
    let h = server.handle();
    tokio::spawn(server);
    (h, port, m)
}

/// Wait until no task is processing; returns how long that took.
async fn drain(port: u16) -> Duration {
    let start = Instant::now();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/admin/requests?state=processing&limit=1");
    loop {
        let v: serde_json::Value = client
            .get(&url)
            .bearer_auth("bench-admin")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["data"].as_array().is_some_and(|a| a.is_empty()) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn report(name: &str, s: &Stats) {
    println!(
        "{name:<16} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   cpu {:>5.0} us/req   ok {:>7}   failed {}",
        s.rps(),
        s.pct(0.50),
        s.pct(0.99),
        s.cpu_us_per_req(),
        s.ok,
        s.failed
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Per-round results of one server; medians are what the ratios use.
#[derive(Default)]
struct Series {
    rps: Vec<f64>,
    cpu: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Series {
    fn add(&mut self, s: &Stats) {
        self.rps.push(s.rps());
        self.cpu.push(s.cpu_us_per_req());
        self.p50.push(s.pct(0.50));
        self.p99.push(s.pct(0.99));
    }
    fn print(&self, name: &str) {
        println!(
            "{name:<16} median {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   cpu {:>5.0} us/req   (rounds: {})",
            median(self.rps.clone()),
            median(self.p50.clone()),
            median(self.p99.clone()),
            median(self.cpu.clone()),
            self.rps
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

fn main() {
    let secs = env_num("BENCH_SECONDS", 4);
    let rounds = env_num("BENCH_ROUNDS", 3).max(1);
    let conns = env_num("BENCH_CONNECTIONS", 64) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-client")
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        println!(
            "ingest benchmark: {conns} connections, {rounds} interleaved rounds of {secs}s per server, unique HMAC-signed IPNs, {} CPUs",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        );

        if std::env::var("BENCH_ONLY").as_deref() == Ok("app") {
            let app = Application::build(config(dir.path())).unwrap();
            let port = app.port();
            tokio::spawn(app.run_until(std::future::pending()));
            let cpu0 = server_cpu();
            let mut s = load(port, conns, secs, "app").await;
            let drained = drain(port).await;
            s.cpu = server_cpu().saturating_sub(cpu0);
            report("ipn-relay", &s);
            println!("drained in {:.2}s", drained.as_secs_f64());
            return;
        }
        // All three up at once (an idle server costs nothing); the machine's
        // drift then hits each of them alike, round after round.
        let (bare_h, bare_port) = bare().await;
        let (min_h, min_port, m) = minimal(dir.path()).await;
        let app = Application::build(config(dir.path())).unwrap();
        let app_port = app.port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        load(bare_port, conns, 1, "warm0").await;
        load(min_port, conns, 1, "warm1").await;
        load(app_port, conns, 1, "warm2").await;
        drain(app_port).await;

        let (mut bare_r, mut min_r, mut app_r) = (Series::default(), Series::default(), Series::default());
        let mut drains = Vec::new();
        let mut applied = Vec::new();
        for r in 0..rounds {
            let tag: &'static str = Box::leak(format!("r{r}").into_boxed_str());
            let s = load(bare_port, conns, secs, tag).await;
            report("bare", &s);
            bare_r.add(&s);
            let s = load(min_port, conns, secs, tag).await;
            report("minimal-durable", &s);
            min_r.add(&s);
            let cpu0 = server_cpu();
            let mut s = load(app_port, conns, secs, tag).await;
            let drained = drain(app_port).await;
            s.cpu = server_cpu().saturating_sub(cpu0);
            report("ipn-relay", &s);
            app_r.add(&s);
            drains.push(drained.as_secs_f64());
            applied.push(s.ok as f64 / (s.elapsed + drained).as_secs_f64());
        }
        let _ = tx.send(());
        let _ = running.await;
        bare_h.stop(true).await;
        min_h.stop(true).await;
        m.commit.stop();

        println!();
        bare_r.print("bare");
        min_r.print("minimal-durable");
        app_r.print("ipn-relay");
        println!(
            "ipn-relay processing: backlog drained {:.2}s (median) after the load stopped; end-to-end {:.0} IPNs/s applied",
            median(drains),
            median(applied)
        );
        let (app, bare, min) = (median(app_r.rps.clone()), median(bare_r.rps), median(min_r.rps));
        println!();
        println!("ratio ipn-relay / bare             throughput {:.2}x", app / bare);
        println!("ratio ipn-relay / minimal-durable  throughput {:.2}x   (target >= 0.5x)", app / min);
        let (app_cpu, min_cpu) = (median(app_r.cpu.clone()), median(min_r.cpu.clone()));
        println!(
            "server cpu per request: ipn-relay {app_cpu:.0} us (ack + processing) vs minimal-durable {min_cpu:.0} us: {:.2}x",
            app_cpu / min_cpu
        );
        println!(
            "ipn-relay p99 ack latency {:.2} ms (median of rounds; target <= 10 ms)",
            median(app_r.p99)
        );
    });
}
