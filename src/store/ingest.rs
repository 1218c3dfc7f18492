//! Accepting IPNs: dedupe, the raw request, its inbox entry; quarantine.

use std::sync::Arc;

use super::*;

impl Store {
    /// Dedupe, then store the raw request and its inbox entry.
    ///
    /// No sled transaction here (see the module docs): three plain writes,
    /// none acknowledged before the group flush covers all three:
    /// 1. `dedupe[key]` — a dedupe hit only counts if its request exists, so
    ///    a crash right after this write can never swallow a provider's retry;
    /// 2. `requests[id]` — alone, an orphan nobody was given the id of;
    /// 3. `inbox[seq]` — from here on the request will be processed.
    ///
    /// The dedupe check and the writes run under an in-process lock striped by
    /// key (sled admits one process per store), so two identical IPNs at once
    /// yield one request: the second waits and then sees the first's request.
    pub fn accept_ipn(
        &self,
        req: RawRequest,
        dedupe_window_ms: i64,
        now: i64,
    ) -> Result<Accepted, StoreError> {
        let dkey = joined(&req.provider, req.event_key.as_bytes());
        let _guard = Self::stripe(&self.ingest_locks, &dkey);
        // One sled op for the common case (a new key): insert, and look at
        // what it replaced. A live duplicate puts its original back.
        let mine = enc(&DedupeRecord {
            request_id: req.request_id,
            seen_at: now,
        })?;
        if let Some(prev_bytes) = self.dedupe.insert(&dkey, mine)? {
            let prev: DedupeRecord = dec(&prev_bytes)?;
            let live = now.saturating_sub(prev.seen_at) < dedupe_window_ms
                && self.requests.contains_key(prev.request_id.as_bytes())?;
            if live {
                self.dedupe.insert(&dkey, prev_bytes)?;
                // Also for a duplicate: its original may still be waiting for its flush.
                let ticket = self.commit.ticket();
                return Ok(Accepted::Duplicate {
                    request_id: prev.request_id,
                    state: self.task(prev.request_id)?.map(|t| t.state),
                    ticket,
                });
            }
        }
        let id = *req.request_id.as_bytes();
        self.requests.insert(id, enc(&req)?)?;
        let seq = {
            let _order = self.inbox_order.lock().unwrap_or_else(|e| e.into_inner());
            let seq = self.db.generate_id()?;
            self.inbox.insert(seq.to_be_bytes(), &id)?;
            seq
        };
        let mut handoff = self.handoff.lock().unwrap_or_else(|e| e.into_inner());
        if handoff.len() < HANDOFF_KEEP {
            handoff.insert(seq, Arc::new(req));
        }
        Ok(Accepted::New {
            ticket: self.commit.ticket(),
        })
    }

    /// The request behind a new inbox entry, if this process accepted it and
    /// still holds it in memory (once: the caller owns the first attempt).
    pub fn take_fresh(&self, seq: u64) -> Option<Arc<RawRequest>> {
        self.handoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&seq)
    }

    /// Keep a request that failed authentication (bounded: the last 1000).
    pub fn quarantine(&self, rec: &QuarantineRecord) -> Result<(), StoreError> {
        let seq = self.quarantine_seq.fetch_add(1, Ordering::SeqCst);
        self.quarantine.insert(seq.to_be_bytes(), enc(rec)?)?;
        if seq >= QUARANTINE_KEEP {
            let cut = (seq + 1 - QUARANTINE_KEEP).to_be_bytes();
            for k in self.quarantine.range(..cut).keys() {
                self.quarantine.remove(k?)?;
            }
        }
        Ok(())
    }

    /// Newest first.
    pub fn quarantined(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError> {
        self.quarantine
            .iter()
            .rev()
            .take(limit)
            .map(|r| dec(&r?.1))
            .collect()
    }
}
