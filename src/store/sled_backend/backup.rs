//! Online backup: the writer copies every tree into a new sled store at a
//! given path while it takes no other operation, so the copy is one
//! consistent state (every acknowledged IPN before it, none half-written),
//! then flushes and fsyncs it. The copy is itself a store directory:
//! restoring is pointing `storage.path` at it (or copying it there).
//!
//! The copy's `meta` carries the last id the store handed out (including
//! ids of the round in progress), so the restored store continues above it.

use std::path::Path;

use super::writer::{ID_LAST, TREES};
use super::*;

/// The tree names, in [`Trees::all`] order.
pub(super) const NAMES: [&str; TREES] = [
    "requests",
    "tasks",
    "inbox",
    "dedupe",
    "quarantine",
    "payments",
    "history",
    "events",
    "event_ids",
    "meta",
    "endpoints",
    "deliveries",
    "lanes",
    "due",
    "attempts",
    "deliveries_by_merchant",
];

const BATCH: usize = 4096;

pub(super) fn copy(
    trees: &[::sled::Tree; TREES],
    to: &Path,
    id_last: u64,
) -> Result<Backup, StoreError> {
    if to.exists()
        && std::fs::read_dir(to)
            .map_err(|e| StoreError::Io(format!("{}: {e}", to.display())))?
            .next()
            .is_some()
    {
        return Err(StoreError::Io(format!(
            "{} exists and is not empty",
            to.display()
        )));
    }
    let started = std::time::Instant::now();
    let db = ::sled::Config::new()
        .path(to)
        .open()
        .map_err(|e| StoreError::Io(format!("{}: {e}", to.display())))?;
    let mut out = Backup::default();
    for (tree, name) in trees.iter().zip(NAMES) {
        let dst = db.open_tree(name)?;
        let mut batch = ::sled::Batch::default();
        let mut n = 0;
        for kv in tree.iter() {
            let (k, v) = kv?;
            out.bytes += (k.len() + v.len()) as u64;
            batch.insert(k, v);
            n += 1;
            out.records += 1;
            if n == BATCH {
                dst.apply_batch(std::mem::take(&mut batch))?;
                n = 0;
            }
        }
        dst.apply_batch(batch)?;
        if name == "meta" {
            dst.insert(ID_LAST, &id_last.to_be_bytes())?;
        }
    }
    db.flush()?;
    drop(db);
    sync_tree(to)?;
    out.took_ms = started.elapsed().as_millis() as u64;
    Ok(out)
}

/// fsync every file under `dir` and the directories themselves.
fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    let io = |e: std::io::Error| StoreError::Io(format!("syncing the backup: {e}"));
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.is_dir() {
            sync_tree(&p)?;
        } else {
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io)
}
