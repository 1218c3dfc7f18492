//! Dropping what retention no longer keeps.

use super::*;

impl Store {
    /// Drop what retention no longer keeps. Unprocessed requests are never dropped.
    pub fn purge_expired(&self, now: i64, r: RetentionMs) -> Result<Purged, StoreError> {
        let mut p = Purged::default();
        for kv in self.dedupe.iter() {
            let (k, v) = kv?;
            let d: DedupeRecord = dec(&v)?;
            // Compare-and-swap: an IPN may have renewed this key meanwhile.
            if now - d.seen_at >= r.dedupe_window
                && self
                    .dedupe
                    .compare_and_swap(k, Some(v), None::<&[u8]>)?
                    .is_ok()
            {
                p.dedupe += 1;
            }
        }
        for kv in self.tasks.iter() {
            let (k, v) = kv?;
            let t: TaskRecord = dec(&v)?;
            if t.state != TaskState::Processing && now - t.created_at >= r.events {
                self.tasks.remove(&k)?;
                self.requests.remove(&k)?;
                p.requests += 1;
            }
        }
        for kv in self.quarantine.iter() {
            let (k, v) = kv?;
            let q: QuarantineRecord = dec(&v)?;
            if now - q.received_at >= r.events {
                self.quarantine.remove(k)?;
                p.quarantine += 1;
            }
        }
        for kv in self.events.iter() {
            let (k, v) = kv?;
            let e: EventRecord = dec(&v)?;
            if now - e.created_at >= r.events {
                self.events.remove(k)?;
                p.events += 1;
            }
        }
        Ok(p)
    }
}
