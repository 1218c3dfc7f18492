//! Dropping what retention no longer keeps, without holding up the writer:
//! the trees are scanned here (off the hot path, by the janitor), and
//! expired keys go to the writer in chunks as "remove if still this value",
//! so a key an IPN renewed (or a delivery that changed) meanwhile stays.
//!
//! `retention.dedupe_window` drops dedupe keys; `retention.events` drops
//! finished raw IPNs with their task records, events, history entries,
//! quarantine entries, and deliveries that left their lane (succeeded, dead,
//! superseded) with their attempts. The `deliveries` tree is in time order
//! (ULIDs of the event's creation), so its scan stops at the first young one.
//! Unprocessed requests and pending deliveries are never dropped.

use ::sled::IVec;

use super::writer::tree;
use super::*;

/// Keys sent to the writer at once.
const CHUNK: usize = 1000;

impl SledStore {
    async fn remove_if(&self, keys: &mut Vec<(usize, Vec<u8>, IVec)>) -> Result<usize, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let batch = std::mem::take(keys);
        self.write(false, |reply| writer::Op::RemoveIf(batch, reply))
            .await
    }

    pub(super) async fn purge(&self, now: i64, r: RetentionMs) -> Result<Purged, StoreError> {
        let mut p = Purged::default();
        let mut keys = Vec::new();
        for kv in self.trees.dedupe.iter() {
            let (k, v) = kv?;
            let d: DedupeRecord = dec(&v)?;
            if now - d.seen_at >= r.dedupe_window {
                keys.push((tree::DEDUPE, k.to_vec(), v));
            }
            if keys.len() >= CHUNK {
                p.dedupe += self.remove_if(&mut keys).await?;
            }
        }
        p.dedupe += self.remove_if(&mut keys).await?;
        // Only ended tasks have records; unprocessed requests are never dropped.
        for kv in self.trees.tasks.iter() {
            let (k, v) = kv?;
            let t: TaskRecord = dec(&v)?;
            if t.state != TaskState::Processing && now - t.created_at >= r.events {
                // The task first: the writer drops a request only once its
                // task is gone (see `remove_if`).
                keys.push((tree::TASKS, k.to_vec(), v));
                if let Some(req) = self.trees.requests.get(&k)? {
                    keys.push((tree::REQUESTS, k.to_vec(), req));
                }
                p.requests += 1;
            }
            if keys.len() >= CHUNK {
                self.remove_if(&mut keys).await?;
            }
        }
        self.remove_if(&mut keys).await?;
        for kv in self.trees.quarantine.iter() {
            let (k, v) = kv?;
            let q = dec_quarantine(&v)?;
            if now - q.received_at >= r.events {
                keys.push((tree::QUARANTINE, k.to_vec(), v));
            }
            if keys.len() >= CHUNK {
                p.quarantine += self.remove_if(&mut keys).await?;
            }
        }
        p.quarantine += self.remove_if(&mut keys).await?;
        for kv in self.trees.events.iter() {
            let (k, v) = kv?;
            let e: EventRecord = dec(&v)?;
            if now - e.created_at >= r.events {
                if let Some(u) = event_ulid(&e.event_id) {
                    if let Some(pos) = self.trees.event_ids.get(u)? {
                        keys.push((tree::EVENT_IDS, u.to_vec(), pos));
                    }
                }
                keys.push((tree::EVENTS, k.to_vec(), v));
                p.events += 1;
            }
            if keys.len() >= CHUNK {
                self.remove_if(&mut keys).await?;
            }
        }
        self.remove_if(&mut keys).await?;
        for kv in self.trees.history.iter() {
            let (k, v) = kv?;
            let h: HistoryEntry = dec(&v)?;
            if now - h.received_at >= r.events {
                keys.push((tree::HISTORY, k.to_vec(), v));
                p.history += 1;
            }
            if keys.len() >= CHUNK {
                self.remove_if(&mut keys).await?;
            }
        }
        self.remove_if(&mut keys).await?;
        for kv in self.trees.deliveries.iter() {
            let (k, v) = kv?;
            let d: DeliveryRecord = dec(&v)?;
            if now - d.created_at < r.events {
                break; // ids are in creation order: the rest is younger
            }
            if d.state == DeliveryState::Pending {
                continue;
            }
            for a in self.trees.attempts.scan_prefix(&k) {
                let (ak, av) = a?;
                keys.push((tree::ATTEMPTS, ak.to_vec(), av));
            }
            let index = super::by_merchant::key_of(&d)?;
            keys.push((tree::BY_MERCHANT, index, IVec::default()));
            keys.push((tree::DELIVERIES, k.to_vec(), v));
            p.deliveries += 1;
            if keys.len() >= CHUNK {
                self.remove_if(&mut keys).await?;
            }
        }
        self.remove_if(&mut keys).await?;
        Ok(p)
    }
}
