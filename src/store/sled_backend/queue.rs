//! New inbox entries on their way to the processor, in commit order.
//!
//! The writer offers each entry it committed; while there is room the queue
//! keeps it (with the request, so the processor reads nothing back). When
//! it is full the queue *spills*: it keeps nothing more and the taker reads
//! the inbox from disk from the first entry it missed, until a read reaches
//! the end of the inbox. A new store starts spilled at seq 0, so a restart
//! picks up every entry left from before.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::*;

/// Most entries, and most body bytes, the queue keeps in memory.
const KEEP: usize = 16_384;
const KEEP_BYTES: usize = 32 << 20;

struct Inner {
    mem: VecDeque<Work>,
    bytes: usize,
    /// Entries were committed without a copy in `mem`: once `mem` is
    /// drained, read them from disk, from `disk_next` on.
    spilled: bool,
    /// The first entry not in `mem` (while spilled), then the next to read.
    disk_next: u64,
    /// Every entry below it was read from disk already: a copy of one in
    /// `mem` (offered while the read ran) is skipped.
    read_below: u64,
}

pub(super) struct WorkQueue {
    inner: Mutex<Inner>,
    notify: tokio::sync::Notify,
    keep: usize,
    keep_bytes: usize,
}

impl WorkQueue {
    pub fn new() -> WorkQueue {
        WorkQueue::with_limits(KEEP, KEEP_BYTES)
    }

    fn with_limits(keep: usize, keep_bytes: usize) -> WorkQueue {
        WorkQueue {
            inner: Mutex::new(Inner {
                mem: VecDeque::new(),
                bytes: 0,
                spilled: true,
                disk_next: 0,
                read_below: 0,
            }),
            notify: tokio::sync::Notify::new(),
            keep,
            keep_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer committed these entries (in seq order).
    pub fn offer(&self, work: Vec<Work>) {
        if work.is_empty() {
            return;
        }
        let mut q = self.lock();
        for w in work {
            let len = w.request.body.len();
            if !q.spilled && q.mem.len() < self.keep && q.bytes + len <= self.keep_bytes {
                q.bytes += len;
                q.mem.push_back(w);
            } else if !q.spilled {
                q.spilled = true;
                q.disk_next = w.id.seq;
            }
        }
        drop(q);
        self.notify.notify_one();
    }

    /// A future that completes after the next [`Self::offer`] (or at once
    /// if one happened since the last wait).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// Up to `limit` entries not handed out before, oldest first.
    pub fn take(&self, trees: &Trees, limit: usize) -> Result<Vec<Work>, StoreError> {
        let mut q = self.lock();
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(w) = q.mem.pop_front() else { break };
            q.bytes -= w.request.body.len();
            if w.id.seq >= q.read_below {
                out.push(w);
            }
        }
        if !out.is_empty() || !q.spilled {
            return Ok(out);
        }
        // `mem` is empty and entries were missed: read them from disk. The
        // page is read under the lock, so the writer cannot offer an entry
        // between this read and clearing `spilled` without it being either
        // in the page or offered after (and then kept in `mem`).
        let page = inbox::page(trees, q.disk_next, limit)?;
        if let Some((last, _)) = page.last() {
            q.disk_next = last.seq + 1;
            q.read_below = q.disk_next;
        }
        if page.len() < limit {
            q.spilled = false;
        }
        drop(q);
        for (place, id) in page {
            match reads::request(trees, id)? {
                Some(r) => out.push(Work {
                    id: place,
                    request: Arc::new(r),
                    doc: None,
                }),
                None => {
                    tracing::error!(%id, seq = place.seq, "inbox entry without its request; skipped")
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries committed (inbox + request) and offered as the writer does:
    /// one inbox record for the lot, as one writer round writes it.
    fn commit(trees: &Trees, q: &WorkQueue, seqs: std::ops::Range<u64>) {
        let slot = seqs.start;
        let mut record = Vec::new();
        let mut work = Vec::new();
        for seq in seqs {
            let r = RawRequest {
                request_id: Uuid::new_v4(),
                provider: "p".into(),
                received_at: 0,
                content_type: None,
                headers: Vec::new(),
                body: vec![b'x'; 10],
                peer: None,
                event_key: seq.to_string(),
            };
            trees
                .requests
                .insert(r.request_id.as_bytes(), enc(&r).unwrap())
                .unwrap();
            record.extend_from_slice(&seq.to_be_bytes());
            record.extend_from_slice(r.request_id.as_bytes());
            work.push(Work {
                id: WorkId { seq, slot },
                request: Arc::new(r),
                doc: None,
            });
        }
        trees.inbox.insert(slot.to_be_bytes(), record).unwrap();
        q.offer(work);
    }

    fn ids(w: &[Work]) -> Vec<u64> {
        w.iter().map(|w| w.id.seq).collect()
    }

    /// Each committed entry comes out once, in order, whether it was kept
    /// in memory or the queue overflowed and it is read back from disk.
    #[test]
    fn every_entry_comes_out_once_in_order_across_overflows() {
        let dir = tempfile::tempdir().unwrap();
        let db = ::sled::Config::new().path(dir.path()).open().unwrap();
        let trees = Trees::open(&db).unwrap();
        let q = WorkQueue::with_limits(3, 1 << 20);
        // A new store reads the inbox first (empty here).
        assert!(q.take(&trees, 10).unwrap().is_empty());
        // Kept in memory.
        commit(&trees, &q, 1..3);
        assert_eq!(ids(&q.take(&trees, 10).unwrap()), [1, 2]);
        // Overflow: 3..6 kept, 6..10 only on disk; all come out in order,
        // read two at a time from the middle of one inbox record.
        commit(&trees, &q, 3..10);
        let mut got = Vec::new();
        for _ in 0..10 {
            got.extend(ids(&q.take(&trees, 2).unwrap()));
        }
        assert_eq!(got, (3..10).collect::<Vec<_>>());
        // Back to memory afterwards, nothing twice.
        commit(&trees, &q, 10..12);
        assert_eq!(ids(&q.take(&trees, 10).unwrap()), [10, 11]);
        assert!(q.take(&trees, 10).unwrap().is_empty());
    }
}
