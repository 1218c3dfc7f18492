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
        doc: Option<serde_json::Value>,
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
        {
            // Entry and handoff copy appear together (see `pending`).
            let _order = self.inbox_order.lock().unwrap_or_else(|e| e.into_inner());
            let seq = self.db.generate_id()?;
            self.inbox.insert(seq.to_be_bytes(), &id)?;
            let fresh = Fresh {
                request: Arc::new(req),
                doc: doc.map(Arc::new),
            };
            self.handoff
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .offer(seq, fresh);
        }
        Ok(Accepted::New {
            ticket: self.commit.ticket(),
        })
    }

    /// The inbox entries after `cursor`, in seq order (at most `limit`), and
    /// advance it.
    ///
    /// From memory when the handoff holds all of them (the common case: no
    /// store reads at all), else from disk. Correct because an entry and its
    /// handoff copy (or the `missed` count) appear under one lock: once a
    /// disk read saw the whole tail while `missed` stood still, every later
    /// entry is in the handoff until `missed` moves again.
    pub fn pending(
        &self,
        cursor: &mut InboxCursor,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let after = cursor.last;
        let mut handoff = self.handoff.lock().unwrap_or_else(|e| e.into_inner());
        let missed = handoff.missed;
        let out: Vec<Pending> = if cursor.synced == Some(missed) {
            let taken = handoff.take_first(limit);
            debug_assert!(taken.first().is_none_or(|(s, _)| Some(*s) > after));
            taken
                .into_iter()
                .map(|(seq, f)| Pending {
                    seq,
                    request_id: f.request.request_id,
                    held: Some(f),
                    first_attempt: true,
                })
                .collect()
        } else {
            drop(handoff);
            let work = self.inbox_page(after, limit)?;
            let mut handoff = self.handoff.lock().unwrap_or_else(|e| e.into_inner());
            // Only a short page shows the whole tail.
            if work.len() < limit {
                cursor.synced = Some(missed);
            }
            work.into_iter()
                .map(|(seq, request_id, reprocess)| Pending {
                    seq,
                    request_id,
                    held: handoff.take(seq),
                    // sled ids only grow, across crashes too.
                    first_attempt: seq > self.boot_seq && !reprocess,
                })
                .collect()
        };
        if let Some(p) = out.last() {
            cursor.last = Some(p.seq);
        }
        Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: u32) -> RawRequest {
        RawRequest {
            request_id: Uuid::new_v4(),
            provider: "p".into(),
            received_at: 1_700_000_000_000,
            content_type: Some("application/json".into()),
            headers: Vec::new(),
            body: format!("{{\"id\":{n}}}").into_bytes(),
            peer: None,
            event_key: format!("id:{n}"),
        }
    }

    fn accept(store: &Store, n: u32) -> Uuid {
        let r = request(n);
        let id = r.request_id;
        let got = store
            .accept_ipn(r, None, 60_000, 1_700_000_000_000)
            .unwrap();
        assert!(matches!(got, Accepted::New { .. }));
        id
    }

    fn drain(store: &Store, cursor: &mut InboxCursor, page: usize) -> Vec<(Uuid, bool)> {
        let mut out = Vec::new();
        loop {
            let got = store.pending(cursor, page).unwrap();
            if got.is_empty() {
                return out;
            }
            out.extend(got.iter().map(|p| (p.request_id, p.held.is_some())));
            assert!(got
                .iter()
                .all(|p| p.first_attempt == (p.seq > store.boot_seq)));
        }
    }

    /// Every inbox entry comes out once, in arrival order, whether from
    /// memory or from disk, and pages never skip one.
    #[test]
    fn pending_hands_out_each_entry_once_in_order_from_memory_or_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut cursor = InboxCursor::default();

        // First read after open goes to disk, in short pages; copies held in
        // memory come along.
        let first: Vec<Uuid> = (0..5).map(|n| accept(&store, n)).collect();
        let got = drain(&store, &mut cursor, 2);
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), first);
        assert!(
            got.iter().all(|g| g.1),
            "still in memory: handed over fresh"
        );

        // Then from memory alone.
        let second: Vec<Uuid> = (5..8).map(|n| accept(&store, n)).collect();
        assert_eq!(
            drain(&store, &mut cursor, 2),
            second.iter().map(|id| (*id, true)).collect::<Vec<_>>()
        );

        // Memory lost some (the handoff was full): back to disk, in order.
        let third: Vec<Uuid> = (8..11).map(|n| accept(&store, n)).collect();
        {
            let mut h = store.handoff.lock().unwrap();
            let lost = *h.requests.keys().nth(1).unwrap();
            h.requests.remove(&lost);
            h.missed += 1;
        }
        let got = drain(&store, &mut cursor, 2);
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), third);
        assert_eq!(
            got.iter().map(|g| g.1).collect::<Vec<_>>(),
            [true, false, true]
        );

        // And back to memory after that.
        let fourth = accept(&store, 11);
        assert_eq!(drain(&store, &mut cursor, 2), [(fourth, true)]);

        // A new process reads the inbox from disk: nothing is "since open".
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let mut cursor = InboxCursor::default();
        let all = drain(&store, &mut cursor, 3);
        assert_eq!(
            all.len(),
            12,
            "nothing was completed, so all twelve are due"
        );
        assert!(all.iter().all(|g| !g.1));
        assert!(
            cursor.last.unwrap() < store.boot_seq,
            "none is a first attempt"
        );
    }

    /// A reprocessed request left state behind in its earlier attempt: it is
    /// never a first attempt, though this process queued it.
    #[test]
    fn a_reprocessed_entry_is_not_a_first_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut cursor = InboxCursor::default();
        let id = accept(&store, 1);
        let first = store.pending(&mut cursor, 10).unwrap();
        assert!(first[0].first_attempt);
        let req = store.request(id).unwrap().unwrap();
        let err = TaskError {
            code: "unmapped_status".into(),
            message: "x".into(),
        };
        store.fail(first[0].seq, Some(&req), err, 1).unwrap();
        assert_eq!(store.reprocess(id, 2).unwrap(), Reprocess::Queued);
        let again = store.pending(&mut cursor, 10).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].request_id, id);
        assert!(again[0].seq > store.boot_seq);
        assert!(!again[0].first_attempt, "replay checks must run");
        // The inbox still reads as plain (seq, id) elsewhere.
        assert_eq!(store.inbox(None).unwrap(), [(again[0].seq, id)]);
    }
}
