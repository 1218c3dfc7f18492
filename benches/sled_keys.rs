//! Why key order matters in sled: `cargo bench --bench sled_keys`.
//!
//! A sled-only model of the store's hot path, measured in one run: each
//! "IPN" writes one ~300-byte value into each of 7 trees, 64 IPNs per
//! transaction, one `flush` per transaction (the group commit). Shapes, by
//! how many of the 7 trees get a random key (UUID v4) instead of the next
//! key in order:
//!
//! - `5 random`: today's hot path. `dedupe` (provider event key),
//!   `requests` and `tasks` (the request id, a random UUID v4: a
//!   capability, SPEC §2), `payments` and `history` (the provider's
//!   payment id) are random; `events` and `event_ids` follow apply order.
//! - `3 random`: the same with request ids in time order (not allowed:
//!   they must be v4), to price that choice.
//! - `0 random`: every tree appended in order.
//! - `3 random + index`: 3 random trees, the other 4 in order, plus an 8th
//!   tree mapping a random id to an in-order key with an 8-byte value (the
//!   way to keep v4 ids while keying the big records in time order).
//!
//! Rounds of `SLED_KEYS_IPNS` IPNs (default 100000) per shape, shapes
//! alternating, `SLED_KEYS_ROUNDS` rounds (default 3); prints process CPU µs
//! per IPN per round, then per shape the median and its ratio to `5
//! random`. CPU, not wall time: it barely moves when the machine is busy.

use std::time::Instant;

use sled::Transactional;
use uuid::Uuid;

const TREES: usize = 8;
const PER_TX: usize = 64;
const VALUE: usize = 300;

#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    random: usize,
    index: bool,
}

const SHAPES: [Shape; 4] = [
    Shape {
        name: "5 random",
        random: 5,
        index: false,
    },
    Shape {
        name: "3 random",
        random: 3,
        index: false,
    },
    Shape {
        name: "0 random",
        random: 0,
        index: false,
    },
    Shape {
        name: "3 random + index",
        random: 3,
        index: true,
    },
];

/// This process's CPU time (user + system), from /proc.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// CPU µs per IPN of one round of `n` IPNs in a fresh store.
fn round(shape: Shape, n: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(Some(1000))
        .open()
        .unwrap();
    let trees: Vec<sled::Tree> = (0..TREES)
        .map(|i| db.open_tree(format!("t{i}")).unwrap())
        .collect();
    let used = if shape.index { TREES } else { 7 };
    let value = vec![7u8; VALUE];
    let mut seq = 0u64;
    let c0 = cpu_secs();
    for _ in 0..n / PER_TX {
        let mut batches: Vec<sled::Batch> = (0..used).map(|_| sled::Batch::default()).collect();
        for _ in 0..PER_TX {
            seq += 1;
            let random = *Uuid::new_v4().as_bytes();
            let ordered = seq.to_be_bytes();
            for (t, b) in batches.iter_mut().enumerate() {
                if t == 7 {
                    b.insert(&random[..], &ordered[..]);
                } else if t < shape.random {
                    b.insert(&random[..], &value[..]);
                } else {
                    b.insert(&ordered[..], &value[..]);
                }
            }
        }
        trees[..used]
            .transaction(|tx| {
                for (t, b) in batches.iter().enumerate() {
                    tx[t].apply_batch(b)?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .unwrap();
        db.flush().unwrap();
    }
    (cpu_secs() - c0) * 1e6 / n as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("SLED_KEYS_IPNS", 100_000);
    let rounds = env("SLED_KEYS_ROUNDS", 3).max(1);
    println!("sled key order: 7 trees x {VALUE}-byte values, {PER_TX} IPNs per transaction + flush, {n} IPNs per round, {rounds} rounds");
    let start = Instant::now();
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); SHAPES.len()];
    for r in 0..rounds {
        for (i, s) in SHAPES.iter().enumerate() {
            let us = round(*s, n);
            println!("  round {r}  {:<18} {us:>7.1} us CPU/IPN", s.name);
            results[i].push(us);
        }
    }
    let base = median(&mut results[0].clone());
    println!("medians ({:.0} s):", start.elapsed().as_secs_f64());
    for (s, v) in SHAPES.iter().zip(results.iter_mut()) {
        let m = median(v);
        println!(
            "  {:<18} {m:>7.1} us CPU/IPN  {:.2}x of '5 random'",
            s.name,
            m / base
        );
    }
}
