//! Counts behind [`Store::stats`], kept without scanning per scrape.
//!
//! Counted once at open (one pass over `inbox`, `deliveries`, `endpoints`),
//! then adjusted per round by the writer: before the commit, [`Delta::of`]
//! compares each staged key of those trees with what the tree holds (the
//! round's before-images, read once for its undo record too,
//! [`super::commit::before_images`]; the writer is the only one writing,
//! so the tree is the state before the round; inbox records count their
//! entries), and after the commit succeeded the delta is added. Whatever verb
//! staged the change (accept, apply, reprocess, attempts, retries, replay,
//! endpoint changes, retention), the counts follow the stored records.

use std::sync::atomic::{AtomicI64, Ordering};

use super::writer::{Stage, DELIVERIES, ENDPOINTS, INBOX};
use super::*;

/// The live counts (shared by the writer and the store's readers).
#[derive(Debug, Default)]
pub(super) struct Counters {
    inbox: AtomicI64,
    pending: AtomicI64,
    dead: AtomicI64,
    enabled: AtomicI64,
    disabled: AtomicI64,
}

/// What one round changes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Delta {
    inbox: i64,
    pending: i64,
    dead: i64,
    enabled: i64,
    disabled: i64,
}

impl Counters {
    /// Count what the trees hold (at open).
    pub(super) fn open(t: &Trees) -> Result<Counters, StoreError> {
        let c = Counters::default();
        c.inbox
            .store(super::inbox::len(t)? as i64, Ordering::Relaxed);
        let mut d = Delta::default();
        for v in t.deliveries.iter().values() {
            d.delivery(&v?, 1);
        }
        for v in t.endpoints.iter().values() {
            d.endpoint(&v?, 1);
        }
        c.add(d);
        Ok(c)
    }

    /// Add a committed round's changes.
    pub(super) fn add(&self, d: Delta) {
        if d == Delta::default() {
            return;
        }
        self.inbox.fetch_add(d.inbox, Ordering::Relaxed);
        self.pending.fetch_add(d.pending, Ordering::Relaxed);
        self.dead.fetch_add(d.dead, Ordering::Relaxed);
        self.enabled.fetch_add(d.enabled, Ordering::Relaxed);
        self.disabled.fetch_add(d.disabled, Ordering::Relaxed);
    }

    /// Requests waiting to be applied, as of the last committed round.
    pub(super) fn inbox_depth(&self) -> u64 {
        self.inbox.load(Ordering::Relaxed).max(0) as u64
    }

    pub(super) fn snapshot(&self, store_bytes: u64) -> StoreStats {
        let get = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0) as u64;
        StoreStats {
            inbox_depth: get(&self.inbox),
            deliveries_pending: get(&self.pending),
            deliveries_dead: get(&self.dead),
            endpoints_enabled: get(&self.enabled),
            endpoints_disabled: get(&self.disabled),
            store_bytes,
        }
    }
}

impl Delta {
    /// What committing `stage` changes in the counts, from the values its
    /// keys hold now (`befores`, [`super::commit::before_images`]).
    pub(super) fn of(stage: &Stage, befores: &super::commit::Befores) -> Delta {
        let mut d = Delta::default();
        for ((_, new), old) in stage.staged(INBOX).zip(&befores[INBOX]) {
            let had = old.as_ref().map_or(0, |v| super::inbox::count(v));
            let has = new.as_ref().map_or(0, |v| super::inbox::count(v));
            d.inbox += has as i64 - had as i64;
        }
        for (tree, f) in [
            (DELIVERIES, Delta::delivery as fn(&mut Delta, &[u8], i64)),
            (ENDPOINTS, Delta::endpoint),
        ] {
            for ((_, new), old) in stage.staged(tree).zip(&befores[tree]) {
                if let Some(old) = old {
                    f(&mut d, old, -1);
                }
                if let Some(new) = new {
                    f(&mut d, new, 1);
                }
            }
        }
        d
    }

    /// Count (`sign` 1) or uncount (-1) a delivery record.
    fn delivery(&mut self, v: &[u8], sign: i64) {
        match dec::<DeliveryRecord>(v).map(|r| r.state) {
            Ok(DeliveryState::Pending) => self.pending += sign,
            Ok(DeliveryState::Dead) => self.dead += sign,
            _ => {}
        }
    }

    fn endpoint(&mut self, v: &[u8], sign: i64) {
        match dec::<EndpointRecord>(v).map(|e| e.disabled) {
            Ok(true) => self.disabled += sign,
            Ok(false) => self.enabled += sign,
            Err(_) => {}
        }
    }
}
