//! Soak: `cargo bench --bench soak` (default 10 minutes; `SOAK_SECONDS`).
//!
//! ipn-relay runs in-process (public builder + HTTP API only) with short
//! retention ages (`retention.events = "2m"`, `dedupe_window = "1m"`, so the
//! janitor runs every 6 s) and a retry schedule of seconds. A paced open-loop
//! generator offers `SOAK_RATE` signed IPNs a second (default 1000) for
//! `SOAK_SECONDS`; IPN n is a new failed attempt (its own authorization) of
//! payment n % `SOAK_PAYMENTS` (default 500), so every IPN is one applied
//! change with the next `sequence` of its payment. The merchant sink (a
//! minimal HTTP/1.1 server in this process) alternates `SOAK_UP` seconds up
//! (200) and `SOAK_DOWN` seconds down (503), starting up.
//!
//! It reports, and writes to `target/soak/` (`soak.csv`, `soak.png`):
//! - **lost**: acknowledged IPNs whose notification never arrived (after a
//!   grace of up to `SOAK_GRACE` s, default 120, past the last send);
//! - **out of order**: per payment, first arrivals whose `sequence` is not
//!   above the one before (the relay's per-payment order);
//! - **lag after each recovery**: from the sink coming back up until every
//!   IPN acknowledged before that moment had arrived;
//! - **RSS** of this process (generator and sink included) and the **store
//!   size** on disk, every second, as numbers (min/max/last per minute) and
//!   as a chart drawn with `plotters` (DejaVu Sans from
//!   /usr/share/fonts/truetype/dejavu for labels, if present).
//!
//! Not part of the test suite: it takes `SOAK_SECONDS` plus the grace.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{env_num, epoch, post_ipn, verdict, Endpoint, Relay};

/// ms since [`epoch`]; never 0 (0 = not yet).
fn now_ms() -> u64 {
    (epoch().elapsed().as_millis() as u64).max(1)
}

fn config(dir: &std::path::Path, sink_url: &str) -> ipn_relay::config::Settings {
    let retention = r#"[retention]
task_results = "1m"
dedupe_window = "1m"
events = "2m"
"#;
    let endpoint = Endpoint {
        id: "ep_soak",
        url: sink_url,
        delivery: r#"timeout = "5s"
retry_schedule = ["1s", "2s", "4s", "5s", "5s", "5s", "5s", "5s", "5s", "5s", "5s", "5s", "5s", "5s", "5s", "5s"]
"#,
        extra: "",
    };
    common::settings(dir, retention, "Failed = \"failed\"\n", Some(endpoint))
}

/// Per IPN: when it was acknowledged and first arrived at the sink (ms).
struct Book {
    acked: Vec<AtomicU64>,
    arrived: Vec<AtomicU64>,
    /// payment → sequences in first-arrival order.
    order: Mutex<HashMap<u64, Vec<u64>>>,
    up: AtomicBool,
    notifications: AtomicU64,
}

impl Book {
    fn new(total: usize) -> Book {
        Book {
            acked: (0..total).map(|_| AtomicU64::new(0)).collect(),
            arrived: (0..total).map(|_| AtomicU64::new(0)).collect(),
            order: Mutex::default(),
            up: AtomicBool::new(true),
            notifications: AtomicU64::new(0),
        }
    }

    /// A notification arrived; true = answer 200.
    fn record(&self, body: &[u8]) -> bool {
        self.notifications.fetch_add(1, Ordering::Relaxed);
        if !self.up.load(Ordering::Relaxed) {
            return false;
        }
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let n = v["data"]["provider_event_id"]
            .as_str()
            .and_then(|s| s.strip_prefix("soak-"))
            .and_then(|s| s.parse::<usize>().ok());
        let pay = v["data"]["payment_id"]
            .as_str()
            .and_then(|s| s.strip_prefix("pay-"))
            .and_then(|s| s.parse::<u64>().ok());
        let seq = v["data"]["sequence"].as_u64();
        if let (Some(n), Some(pay), Some(seq)) = (n, pay, seq) {
            if n < self.arrived.len()
                && self.arrived[n]
                    .compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.order.lock().unwrap().entry(pay).or_default().push(seq);
            }
        }
        true
    }
}

/// The merchant endpoint ([`common::sink`]): `200 ok` while the book says
/// up, else `503 down`.
async fn sink(book: Arc<Book>) -> String {
    common::sink("/hooks/soak", move |body| book.record(body)).await
}

fn ipn(n: usize, payments: u64) -> String {
    let created = chrono::Utc::now().timestamp();
    let pay = n as u64 % payments;
    format!(
        r#"{{"id":"soak-{n}","created":{created},"data":{{"payment_id":"pay-{pay}","status":"Failed","authorization_id":"au-{n}","amount":1000,"currency":"EUR"}}}}"#
    )
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// One sample a second: (t s, rss bytes, store bytes, backlog = acked − arrived, sink up).
type Sample = (f64, u64, u64, u64, bool);

fn main() {
    let rate = env_num("SOAK_RATE", 1000).max(1);
    let secs = env_num("SOAK_SECONDS", 600).max(1);
    let payments = env_num("SOAK_PAYMENTS", 500).max(1);
    let up_s = env_num("SOAK_UP", 30).max(1);
    let down_s = env_num("SOAK_DOWN", 30).max(1);
    let grace = env_num("SOAK_GRACE", 120);
    let total = (rate * secs) as usize;
    epoch();
    let rt = common::runtime();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        let book = Arc::new(Book::new(total));
        let sink_url = sink(book.clone()).await;
        let relay = Relay::start(config(dir.path(), &sink_url));
        let url: Arc<str> = relay.ipn_url().into();
        println!(
            "soak: {rate} IPN/s for {secs} s over {payments} payments; sink {up_s} s up / {down_s} s down; retention events 2m, dedupe 1m"
        );

        // The sink's schedule and the samples, every second.
        let start = now_ms();
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let recoveries: Arc<Mutex<Vec<u64>>> = Arc::default();
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (book, samples, recoveries, done, store_dir) = (
                book.clone(),
                samples.clone(),
                recoveries.clone(),
                done.clone(),
                store_dir.clone(),
            );
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                while !done.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let t = now_ms() - start;
                    let phase = (t / 1000) % (up_s + down_s);
                    let up = phase < up_s || t / 1000 >= secs;
                    if up && !book.up.swap(true, Ordering::Relaxed) {
                        recoveries.lock().unwrap().push(now_ms());
                    }
                    if !up {
                        book.up.store(false, Ordering::Relaxed);
                    }
                    let acked = book.acked.iter().filter(|a| a.load(Ordering::Relaxed) > 0).count();
                    let arrived = book.arrived.iter().filter(|a| a.load(Ordering::Relaxed) > 0).count();
                    samples.lock().unwrap().push((
                        t as f64 / 1000.0,
                        rss_bytes(),
                        dir_bytes(&store_dir),
                        acked.saturating_sub(arrived) as u64,
                        up,
                    ));
                }
            })
        };

        // The open-loop generator ([`common::paced`]).
        let client = common::client(512, Duration::from_secs(10));
        let failed = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let mut tasks = common::paced(rate, total, 512, |n, _| {
            let (client, url, book, failed) =
                (client.clone(), url.clone(), book.clone(), failed.clone());
            async move {
                let ok = match post_ipn(&client, &url, ipn(n, payments)).await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    book.acked[n].store(now_ms(), Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
        while tasks.join_next().await.is_some() {}
        println!("sent {total} in {:.1} s; {} not acknowledged", t0.elapsed().as_secs_f64(), failed.load(Ordering::Relaxed));

        // Grace: until every acked IPN arrived.
        let deadline = Instant::now() + Duration::from_secs(grace);
        common::poll_until(deadline, Duration::from_millis(200), || {
            (0..total).all(|n| {
                book.acked[n].load(Ordering::Relaxed) == 0
                    || book.arrived[n].load(Ordering::Relaxed) > 0
            })
        })
        .await;
        done.store(true, Ordering::Relaxed);
        let _ = sampler.await;
        relay.stop().await;

        report(&book, &samples.lock().unwrap(), &recoveries.lock().unwrap());
    });
}

fn report(book: &Book, samples: &[Sample], recoveries: &[u64]) {
    let total = book.acked.len();
    let acked: Vec<usize> = (0..total)
        .filter(|&n| book.acked[n].load(Ordering::Relaxed) > 0)
        .collect();
    let lost = acked
        .iter()
        .filter(|&&n| book.arrived[n].load(Ordering::Relaxed) == 0)
        .count();
    let mut out_of_order = 0;
    for seqs in book.order.lock().unwrap().values() {
        out_of_order += seqs.windows(2).filter(|w| w[1] <= w[0]).count();
    }
    println!("\nacknowledged {} of {total}; lost {lost}; out of order per payment {out_of_order}; notifications received {}", acked.len(), book.notifications.load(Ordering::Relaxed));
    println!("lag after each recovery (sink back up -> everything acked before it delivered):");
    let mut lags = Vec::new();
    for &r in recoveries {
        let last = acked
            .iter()
            .filter(|&&n| book.acked[n].load(Ordering::Relaxed) < r)
            .map(|&n| book.arrived[n].load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        let lag = if last == 0 {
            f64::NAN
        } else {
            last.saturating_sub(r) as f64 / 1000.0
        };
        lags.push(lag);
        println!(
            "  recovery at {:>6.1} s: lag {lag:.2} s",
            (r - samples.first().map_or(0.0, |s| s.0) as u64) as f64 / 1000.0
        );
    }
    println!("per minute: rss MiB (min/max/last), store MiB (min/max/last), backlog max");
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for (m, chunk) in samples.chunks(60).enumerate() {
        let rss: Vec<u64> = chunk.iter().map(|s| s.1).collect();
        let st: Vec<u64> = chunk.iter().map(|s| s.2).collect();
        println!(
            "  min {m:>2}: rss {:.0}/{:.0}/{:.0}  store {:.1}/{:.1}/{:.1}  backlog {}",
            mib(*rss.iter().min().unwrap_or(&0)),
            mib(*rss.iter().max().unwrap_or(&0)),
            mib(*rss.last().unwrap_or(&0)),
            mib(*st.iter().min().unwrap_or(&0)),
            mib(*st.iter().max().unwrap_or(&0)),
            mib(*st.last().unwrap_or(&0)),
            chunk.iter().map(|s| s.3).max().unwrap_or(0)
        );
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/soak");
    std::fs::create_dir_all(&out).unwrap();
    let mut csv = String::from("t_s,rss_bytes,store_bytes,backlog,sink_up\n");
    for s in samples {
        csv.push_str(&format!(
            "{:.1},{},{},{},{}\n",
            s.0, s.1, s.2, s.3, s.4 as u8
        ));
    }
    std::fs::write(out.join("soak.csv"), csv).unwrap();
    match chart(&out.join("soak.png"), samples) {
        Ok(()) => println!("chart: {}", out.join("soak.png").display()),
        Err(e) => println!("chart not drawn: {e}"),
    }
    println!(
        "\nsummary: lost {lost} (target 0: {}), out of order {out_of_order} (target 0: {}), max lag after recovery {:.2} s",
        verdict(lost == 0),
        verdict(out_of_order == 0),
        lags.iter().cloned().fold(0.0, f64::max)
    );
}

fn chart(path: &std::path::Path, samples: &[Sample]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "cannot load the font")?;
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(450);
    let t_max = samples.last().map_or(1.0, |s| s.0).max(1.0);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let y_max = samples
        .iter()
        .map(|s| mib(s.1).max(mib(s.2)))
        .fold(1.0, f64::max)
        * 1.1;
    let mut c = ChartBuilder::on(&top)
        .caption("ipn-relay soak: memory and store size", ("sans-serif", 22))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)?;
    c.configure_mesh().x_desc("seconds").y_desc("MiB").draw()?;
    for (i, s) in samples.iter().enumerate() {
        if !s.4 {
            let next = samples.get(i + 1).map_or(s.0 + 1.0, |n| n.0);
            c.draw_series(std::iter::once(Rectangle::new(
                [(s.0, 0.0), (next, y_max)],
                RGBColor(255, 225, 225).filled(),
            )))?;
        }
    }
    c.draw_series(LineSeries::new(
        samples.iter().map(|s| (s.0, mib(s.1))),
        &BLUE,
    ))?
    .label("RSS (process)")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    c.draw_series(LineSeries::new(
        samples.iter().map(|s| (s.0, mib(s.2))),
        &RED,
    ))?
    .label("store on disk")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    c.configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    let b_max = samples.iter().map(|s| s.3).max().unwrap_or(1).max(1) as f64 * 1.1;
    let mut c = ChartBuilder::on(&bottom)
        .caption(
            "backlog: acknowledged, not yet delivered (pink: sink down)",
            ("sans-serif", 22),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..t_max, 0.0..b_max)?;
    c.configure_mesh().x_desc("seconds").y_desc("IPNs").draw()?;
    for (i, s) in samples.iter().enumerate() {
        if !s.4 {
            let next = samples.get(i + 1).map_or(s.0 + 1.0, |n| n.0);
            c.draw_series(std::iter::once(Rectangle::new(
                [(s.0, 0.0), (next, b_max)],
                RGBColor(255, 225, 225).filled(),
            )))?;
        }
    }
    c.draw_series(LineSeries::new(
        samples.iter().map(|s| (s.0, s.3 as f64)),
        &BLACK,
    ))?;
    root.present()?;
    Ok(())
}
