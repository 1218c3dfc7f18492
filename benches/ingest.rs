//! Ingest benchmark: `cargo bench --bench ingest`.
//!
//! Loads `POST /v1/ipn/acme` with unique HMAC-signed IPNs from 64 concurrent
//! connections and measures three servers in the same run, on the same
//! machine, with the same client:
//!
//! 1. `bare`: an actix handler that reads the body and answers 202;
//! 2. `minimal-durable`: verify the HMAC + one sled insert + wait for a group
//!    flush (`db.flush()` + fdatasync of sled's `db` file), the least a
//!    durable ack can cost; its group commit lives in this file;
//! 3. `ipn-relay`: the application (`durability = "sync"`), driven only
//!    through its public builder and HTTP API.
//!
//! Two regimes run in turn, each loading the three servers one after the
//! other, round by round, comparing medians (a run on a shared 2-core
//! machine swings by ±20%). **burst**: rounds of `BENCH_BURST_SECONDS`,
//! within ipn-relay's 10 s "acks first" hold (processing yields to acks for
//! jobs younger than 10 s), so acks get the CPU and processing drains after.
//! **sustained**: rounds of `BENCH_SECONDS`, long enough that the hold cannot
//! carry the number: past 10 s, acks and processing share the CPU.
//!
//! Per regime it prints each round, then per server the medians of
//! throughput, p50/p99 ack latency and server CPU µs per IPN, and
//! ipn-relay's backlog drain time (end of load until `GET /v1/async/status/
//! {last ack}` is no longer `processing` and `GET /v1/admin/requests?
//! state=processing` is empty) with its end-to-end applied rate. Server CPU
//! is every thread of this process but the load generator's, from /proc; it
//! barely moves when the machine is busy, unlike throughput. For ipn-relay
//! it spans load and drain: the whole cost of an IPN, ack + apply.
//! Last, one summary line per regime (medians over its rounds): ipn-relay's
//! throughput, its ratios to minimal-durable (target >= 0.6x) and to bare,
//! its p99 (target <= 10 ms), drain and CPU, e.g. `sustained (30 s rounds):
//! ipn-relay 9500 IPN/s, ratio vs minimal-durable 0.52x (target >= 0.6x:
//! MISS), vs bare 0.17x, p99 12.10 ms (target <= 10 ms: MISS), drain 3.2 s,
//! cpu 131 us/IPN`. A 1-round regime is one sample: read it as ±20%.
//!
//! Environment: `BENCH_SECONDS` (sustained round, default 30),
//! `BENCH_SUSTAINED_ROUNDS` (default 1), `BENCH_BURST_SECONDS` (default 4),
//! `BENCH_ROUNDS` (burst rounds, default 3); 0 rounds skips a regime.
//! `BENCH_CONNECTIONS` (default 64). `BENCH_ONLY=app`: one `BENCH_SECONDS`
//! round of ipn-relay alone (for profiling).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::fs::File;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use common::{env_num, pct_ms, post_ipn, server_cpu, Relay};
use ipn_relay::auth;
use ipn_relay::config::Settings;
use tokio::sync::watch;

const TARGET_RATIO: f64 = 0.6;
const TARGET_P99_MS: f64 = 10.0;

/// No delivery: IPNs are acknowledged and applied, nothing is notified.
fn config(dir: &std::path::Path) -> Settings {
    common::settings(dir, "", "", None)
}

#[derive(Default)]
struct Stats {
    /// Server CPU time spent on this load (see `server_cpu`).
    cpu: Duration,
    ok: u64,
    failed: u64,
    latencies_us: Vec<u64>,
    elapsed: Duration,
    /// `x-request-id` of the last acknowledged IPN (ipn-relay sends it).
    last_id: Option<String>,
}

impl Stats {
    fn cpu_us_per_req(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.ok.max(1) as f64
    }
    fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        pct_ms(&self.latencies_us, p)
    }
}

/// `conns` connections, each sending unique signed IPNs back to back for
/// `secs`; `run` makes the event and payment ids unique across loads.
async fn load(port: u16, conns: usize, secs: u64, run: &str) -> Stats {
    let counter = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("http://127.0.0.1:{port}/v1/ipn/acme");
    let run: Arc<str> = run.into();
    let mut tasks = Vec::new();
    let cpu0 = server_cpu();
    let start = Instant::now();
    for _ in 0..conns {
        let (counter, stop, url, run) = (counter.clone(), stop.clone(), url.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
            let (mut ok, mut failed, mut lat) = (0u64, 0u64, Vec::with_capacity(65536));
            let mut last = None;
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let body = format!(
                    r#"{{"id":"evt_{run}_{n}","created":1700000000,"data":{{"payment_id":"pay_{run}_{n}","status":"pending","amount":1000,"currency":"EUR"}}}}"#
                );
                let t = Instant::now();
                match post_ipn(&client, &url, body).await {
                    Ok(r) if r.status().is_success() => {
                        let id = r.headers().get("x-request-id").cloned();
                        let _ = r.bytes().await;
                        let done = Instant::now();
                        ok += 1;
                        lat.push((done - t).as_micros() as u64);
                        if let Some(id) = id {
                            last = Some((done, id));
                        }
                    }
                    _ => failed += 1,
                }
            }
            (ok, failed, lat, last)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut s = Stats::default();
    let mut last: Option<(Instant, reqwest::header::HeaderValue)> = None;
    for t in tasks {
        let (ok, failed, lat, l) = t.await.unwrap();
        s.ok += ok;
        s.failed += failed;
        s.latencies_us.extend(lat);
        if l.as_ref().map(|l| l.0) > last.as_ref().map(|l| l.0) {
            last = l;
        }
    }
    s.elapsed = start.elapsed();
    s.cpu = server_cpu().saturating_sub(cpu0);
    s.latencies_us.sort_unstable();
    s.last_id = last.and_then(|(_, id)| id.to_str().ok().map(str::to_owned));
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

/// The reference's group commit. Callers insert into sled, then take a
/// ticket and wait; one thread runs `db.flush()` then fdatasync of the `db`
/// file (sled 0.34's flush ends in `sync_file_range`, which syncs neither
/// the disk cache nor the file size) and then wakes, through a watch
/// channel, every caller whose ticket that flush covered. Callers never
/// flush themselves: many concurrent `flush_async()` deadlock sled 0.34
/// (sled #1308). A failed flush ends the thread: every wait then fails (503).
struct GroupCommit {
    /// Tickets handed out, each taken after its caller's write completed,
    /// so a flush started after reading this covers every ticket up to it.
    written: Arc<AtomicU64>,
    /// `true`: a ticket wants a flush; `false`: final flush, then exit.
    kick: mpsc::Sender<bool>,
    /// Every ticket up to this one is on disk.
    durable: watch::Receiver<u64>,
}

impl GroupCommit {
    fn start(db: sled::Db, file: File) -> GroupCommit {
        let (kick, rx) = mpsc::channel::<bool>();
        let (tx, durable) = watch::channel(0);
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        std::thread::Builder::new()
            .name("bench-min-flush".into())
            .spawn(move || {
                while let Ok(mut more) = rx.recv() {
                    // One flush serves every kick that queued up meanwhile;
                    // their tickets were taken before `written` is read.
                    while let Ok(k) = rx.try_recv() {
                        more &= k;
                    }
                    let target = w.load(Ordering::SeqCst);
                    if target > *tx.borrow() {
                        let res = db.flush().and_then(|_| Ok(file.sync_data()?));
                        if let Err(e) = res {
                            eprintln!("minimal-durable: flush failed: {e}");
                            return;
                        }
                        tx.send_replace(target);
                    }
                    if !more {
                        return;
                    }
                }
            })
            .expect("spawn the reference flusher");
        GroupCommit {
            written,
            kick,
            durable,
        }
    }

    /// Call after the write: resolves once a flush + fdatasync covered it.
    async fn commit(&self) -> Result<(), ()> {
        let ticket = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = self.kick.send(true);
        let mut rx = self.durable.clone();
        rx.wait_for(|&d| d >= ticket).await.map(drop).map_err(drop)
    }

    /// Final flush; resolves when the thread has ended (dropping its sender).
    async fn stop(&self) {
        let _ = self.kick.send(false);
        let mut rx = self.durable.clone();
        while rx.changed().await.is_ok() {}
    }
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
    let file = File::open(path.join("db")).unwrap();
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
                    match m.commit.commit().await {
                        Ok(()) => HttpResponse::Accepted().body(id.to_string()),
                        Err(()) => HttpResponse::ServiceUnavailable().finish(),
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

/// Wait until ipn-relay's processing has caught up; returns how long that
/// took. Public API only: first the async status of the last acknowledged
/// request (`last`), a point lookup, until it is no longer `processing`;
/// then, since four shards apply in parallel and the last ack need not be
/// the last applied, the admin list of requests still processing (a scan,
/// so polled only at the end) until its `data` is empty.
async fn drain(port: u16, last: Option<&str>) -> Duration {
    let start = Instant::now();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    if let Some(id) = last {
        let url = format!("{base}/v1/async/status/{id}");
        while get_json(client.get(&url)).await["status"] == "processing" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let url = format!("{base}/v1/admin/requests?state=processing&limit=1");
    loop {
        let v = get_json(client.get(&url).bearer_auth("bench-admin")).await;
        let empty = v["data"].as_array().map(Vec::is_empty);
        if empty.unwrap_or_else(|| panic!("admin requests: {v}")) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The JSON body of a GET (`null` if the request failed).
async fn get_json(r: reqwest::RequestBuilder) -> serde_json::Value {
    match r.send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

fn report(name: &str, s: &Stats) {
    println!(
        "  {name:<16} {:>9.0} IPN/s   p50 {:>7.2} ms   p99 {:>7.2} ms   cpu {:>5.0} us/IPN   ok {:>7}   failed {}",
        s.rps(),
        s.pct(0.50),
        s.pct(0.99),
        s.cpu_us_per_req(),
        s.ok,
        s.failed
    );
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
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
            "  {name:<16} median {:>9.0} IPN/s   p50 {:>6.2} ms   p99 {:>6.2} ms   cpu {:>5.0} us/IPN   (rounds: {})",
            median(&self.rps),
            median(&self.p50),
            median(&self.p99),
            median(&self.cpu),
            self.rps
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

/// One regime's rounds; the summary line is built from these medians.
#[derive(Default)]
struct Outcome {
    bare: Series,
    min: Series,
    app: Series,
    drains: Vec<f64>,
    applied: Vec<f64>,
}

/// `rounds` interleaved rounds of `secs` per server (bare, minimal-durable,
/// ipn-relay + its drain), then the per-server medians.
/// `ports`: bare, minimal-durable, ipn-relay.
async fn regime(name: &str, ports: [u16; 3], conns: usize, secs: u64, rounds: u64) -> Outcome {
    let [bare, min, app] = ports;
    println!();
    println!("== {name}: {rounds} x {secs} s per server, interleaved ==");
    let mut o = Outcome::default();
    for r in 0..rounds {
        let run = format!("{}{r}", &name[..1]);
        println!("round {}", r + 1);
        let s = load(bare, conns, secs, &run).await;
        report("bare", &s);
        o.bare.add(&s);
        let s = load(min, conns, secs, &run).await;
        report("minimal-durable", &s);
        o.min.add(&s);
        let cpu0 = server_cpu();
        let mut s = load(app, conns, secs, &run).await;
        let drained = drain(app, s.last_id.as_deref()).await;
        s.cpu = server_cpu().saturating_sub(cpu0);
        report("ipn-relay", &s);
        let (d, total) = (drained.as_secs_f64(), (s.elapsed + drained).as_secs_f64());
        println!("  {:<16} backlog drained in {d:.2} s", "");
        o.app.add(&s);
        o.drains.push(d);
        o.applied.push(s.ok as f64 / total);
    }
    println!("{name} medians:");
    o.bare.print("bare");
    o.min.print("minimal-durable");
    o.app.print("ipn-relay");
    println!(
        "  ipn-relay processing: backlog drained {:.2} s after the load stopped; end-to-end {:.0} IPNs/s applied",
        median(&o.drains),
        median(&o.applied)
    );
    o
}

/// The labelled summary line of one regime (medians over its rounds).
fn summary(label: &str, o: &Outcome) {
    let app = median(&o.app.rps);
    let ratio = app / median(&o.min.rps);
    let p99 = median(&o.app.p99);
    let verdict = |met: bool| if met { "met" } else { "MISS" };
    println!(
        "{label} ipn-relay {app:.0} IPN/s, ratio vs minimal-durable {ratio:.2}x (target >= {TARGET_RATIO}x: {}), vs bare {:.2}x, p99 {p99:.2} ms (target <= {TARGET_P99_MS} ms: {}), drain {:.1} s, cpu {:.0} us/IPN",
        verdict(ratio >= TARGET_RATIO),
        app / median(&o.bare.rps),
        verdict(p99 <= TARGET_P99_MS),
        median(&o.drains),
        median(&o.app.cpu),
    );
}

fn main() {
    let sustained_secs = env_num("BENCH_SECONDS", 30).max(1);
    let sustained_rounds = env_num("BENCH_SUSTAINED_ROUNDS", 1);
    let burst_secs = env_num("BENCH_BURST_SECONDS", 4).max(1);
    let burst_rounds = env_num("BENCH_ROUNDS", 3);
    let conns = env_num("BENCH_CONNECTIONS", 64) as usize;
    let rt = common::runtime();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        println!(
            "ingest benchmark: {conns} connections, unique HMAC-signed IPNs, {} CPUs; burst {burst_rounds} x {burst_secs} s, sustained {sustained_rounds} x {sustained_secs} s per server",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        );

        if std::env::var("BENCH_ONLY").as_deref() == Ok("app") {
            // Kept to the end: dropping it would stop ipn-relay.
            let relay = Relay::start(config(dir.path()));
            let port = relay.port;
            let cpu0 = server_cpu();
            let mut s = load(port, conns, sustained_secs, "app").await;
            let drained = drain(port, s.last_id.as_deref()).await;
            s.cpu = server_cpu().saturating_sub(cpu0);
            report("ipn-relay", &s);
            println!("drained in {:.2}s", drained.as_secs_f64());
            return;
        }
        // All three up at once (an idle server costs nothing); the machine's
        // drift then hits each of them alike, round after round.
        let (bare_h, bare_port) = bare().await;
        let (min_h, min_port, m) = minimal(dir.path()).await;
        let relay = Relay::start(config(dir.path()));
        let app_port = relay.port;
        let ports = [bare_port, min_port, app_port];
        load(bare_port, conns, 1, "warm").await;
        load(min_port, conns, 1, "warm").await;
        let s = load(app_port, conns, 1, "warm").await;
        drain(app_port, s.last_id.as_deref()).await;

        let mut results = Vec::new();
        if burst_rounds > 0 {
            let o = regime("burst", ports, conns, burst_secs, burst_rounds).await;
            results.push((format!("burst ({burst_secs} s rounds)"), o));
        }
        if sustained_rounds > 0 {
            let o = regime("sustained", ports, conns, sustained_secs, sustained_rounds).await;
            results.push((format!("sustained ({sustained_secs} s rounds)"), o));
        }
        relay.stop().await;
        bare_h.stop(true).await;
        min_h.stop(true).await;
        m.commit.stop().await;

        println!();
        println!("summary (medians over rounds; cpu = server CPU per IPN, ack + apply):");
        let width = results.iter().map(|(l, _)| l.len() + 1).max().unwrap_or(0);
        for (label, o) in &results {
            summary(&format!("{:<width$}", format!("{label}:")), o);
        }
    });
}
