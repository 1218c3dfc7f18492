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
    /// Entries were committed without a copy in `mem`: read them from disk.
    spilled: bool,
    /// Next seq to read from disk. Every entry below it was handed out
    /// already, so an entry in `mem` below it is skipped.
    disk_next: u64,
}

pub(super) struct WorkQueue {
    inner: Mutex<Inner>,
    notify: tokio::sync::Notify,
}

impl WorkQueue {
    pub fn new() -> WorkQueue {
        WorkQueue {
            inner: Mutex::new(Inner {
                mem: VecDeque::new(),
                bytes: 0,
                spilled: true,
                disk_next: 0,
            }),
            notify: tokio::sync::Notify::new(),
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
            if !q.spilled && q.mem.len() < KEEP && q.bytes + len <= KEEP_BYTES {
                q.bytes += len;
                q.mem.push_back(w);
            } else if !q.spilled {
                q.spilled = true;
                q.disk_next = w.id.0;
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
            if w.id.0 >= q.disk_next {
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
        let page = reads::inbox_page(trees, q.disk_next, limit)?;
        if let Some((last, _)) = page.last() {
            q.disk_next = last + 1;
        }
        if page.len() < limit {
            q.spilled = false;
        }
        drop(q);
        for (seq, id) in page {
            match reads::request(trees, id)? {
                Some(r) => out.push(Work {
                    id: WorkId(seq),
                    request: Arc::new(r),
                    doc: None,
                }),
                None => tracing::error!(%id, seq, "inbox entry without its request; skipped"),
            }
        }
        Ok(out)
    }
}
