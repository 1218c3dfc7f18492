//! Group commit: one thread makes sled durable for everybody.
//!
//! Two sled 0.34.7 traps shape this (both seen on our machines):
//! - awaiting `flush_async()` from many requests at once deadlocks
//!   (sled #1308), so nobody flushes for itself: the writer takes a
//!   *ticket* after each committed batch and callers wait until a flush
//!   covering it has finished;
//! - sled's flush ends in `sync_file_range`, which leaves the disk cache and
//!   the file size unsynced (sled #1452), so every group flush is followed by
//!   an `fdatasync` of the store file before anyone is told "durable".
//!
//! A third: sled writes any log message over segment size / 4 (a large
//! body) to its own file under `blobs/` and never fsyncs it. Each flush
//! also fsyncs the blob files it has not synced yet, and then the
//! directory, so no acknowledged byte lives in an unsynced file.
//!
//! A failed flush is fatal: sled latches its first I/O error and fails
//! every later write until it is reopened (and a failed fsync cannot be
//! retried safely either), so the waiting callers get an error and
//! [`GroupCommit::fatal`] is raised for the process to exit non-zero.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Flushed {
    /// Every ticket up to here is on disk.
    pub ok_upto: u64,
    /// A flush covering tickets up to here failed (those callers get an error).
    pub failed_upto: u64,
    /// The writer's mark (the last event-feed position) as of the last
    /// successful flush: everything up to it is durable.
    pub mark: u64,
}

#[derive(Default)]
struct Wake {
    requested: bool,
    stop: bool,
}

struct Shared {
    /// Tickets handed out; taken *after* the caller's write completed, so a
    /// flush that starts after reading this covers every ticket ≤ the value read.
    written: AtomicU64,
    /// Rounds whose write has begun ([`GroupCommit::begin`]): the ticket
    /// the round in progress, if any, will take.
    started: AtomicU64,
    /// Set by the writer before each ticket (see [`Flushed::mark`]).
    mark: AtomicU64,
    wake: Mutex<Wake>,
    cv: Condvar,
    done: watch::Sender<Flushed>,
    /// The first unrecoverable store error (flush or commit), if any.
    fatal: watch::Sender<Option<String>>,
}

pub(super) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommit {
    pub fn start(db: ::sled::Db, dir: &Path, mark: u64) -> std::io::Result<GroupCommit> {
        // sled 0.34 keeps its log in `<path>/db`.
        let data_file = File::open(dir.join("db"))?;
        let (done, _) = watch::channel(Flushed {
            mark,
            ..Flushed::default()
        });
        let shared = Arc::new(Shared {
            written: AtomicU64::new(0),
            started: AtomicU64::new(0),
            mark: AtomicU64::new(mark),
            wake: Mutex::new(Wake::default()),
            cv: Condvar::new(),
            done,
            fatal: watch::channel(None).0,
        });
        let s = shared.clone();
        let blobs = dir.join("blobs");
        let thread = std::thread::Builder::new()
            .name("ipn-relay-flush".into())
            .spawn(move || flush_loop(&s, &db, &data_file, &blobs))?;
        Ok(GroupCommit {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Call after a write has completed; the ticket is what [`Self::wait`]
    /// waits for. `mark` is the writer's mark as of that write.
    pub fn ticket(&self, mark: u64) -> u64 {
        self.shared.mark.store(mark, Ordering::SeqCst);
        let t = self.shared.written.fetch_add(1, Ordering::SeqCst) + 1;
        let mut w = self.shared.wake.lock().unwrap_or_else(|e| e.into_inner());
        w.requested = true;
        drop(w);
        self.shared.cv.notify_one();
        t
    }

    /// Resolves once a flush + fsync covering `ticket` finished.
    pub async fn wait(&self, ticket: u64) -> Result<(), super::StoreError> {
        let mut rx = self.shared.done.subscribe();
        let f = *rx
            .wait_for(|f| f.ok_upto >= ticket || f.failed_upto >= ticket)
            .await
            .map_err(|_| super::StoreError::Flush)?;
        if f.ok_upto >= ticket {
            Ok(())
        } else {
            Err(super::StoreError::Flush)
        }
    }

    /// Record an unrecoverable store error (the first one wins).
    pub fn fatal(&self, error: &str) {
        fatal(&self.shared, error);
    }

    /// Resolves with the first unrecoverable error once there is one.
    pub async fn failed(&self) -> String {
        let mut rx = self.shared.fatal.subscribe();
        let got = rx.wait_for(Option::is_some).await.map(|e| e.clone());
        match got {
            Ok(e) => e.unwrap_or_default(),
            // The sender lives in `shared`, which we hold: unreachable.
            Err(_) => std::future::pending().await,
        }
    }

    /// Call before a round's write begins (its writes become visible to
    /// readers one by one, before its ticket).
    pub fn begin(&self) {
        self.shared.started.fetch_add(1, Ordering::SeqCst);
    }

    /// The ticket of the last round whose write has begun: waiting for it
    /// (after a read) covers every write that read could have seen, even
    /// one of a round still writing.
    pub fn started(&self) -> u64 {
        self.shared.started.load(Ordering::SeqCst)
    }

    /// Everything up to this mark is durable.
    pub fn durable_mark(&self) -> u64 {
        self.shared.done.borrow().mark
    }

    /// Wait (at most `limit`) until the durable mark reaches `mark`, a
    /// position already committed; returns the durable mark then. A
    /// committed write always takes a ticket with its mark, which asks for
    /// a flush, so this ends after at most two flushes unless one fails.
    pub async fn wait_mark(&self, mark: u64, limit: std::time::Duration) -> u64 {
        let mut rx = self.shared.done.subscribe();
        let _ = tokio::time::timeout(
            limit,
            rx.wait_for(|f| f.mark >= mark || f.failed_upto > f.ok_upto),
        )
        .await;
        self.durable_mark()
    }

    /// Is anybody waiting for a flush right now (tickets not yet covered)?
    pub fn busy(&self) -> bool {
        self.shared.written.load(Ordering::Relaxed) > self.shared.done.borrow().ok_upto
    }

    /// Final flush, then stop the thread. Idempotent.
    pub fn stop(&self) {
        {
            let mut w = self.shared.wake.lock().unwrap_or_else(|e| e.into_inner());
            w.stop = true;
        }
        self.shared.cv.notify_one();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn flush_loop(s: &Shared, db: &::sled::Db, data_file: &File, blobs: &Path) {
    let mut last = 0u64;
    let mut synced_blobs = HashMap::new();
    loop {
        let stop = {
            let mut w = s.wake.lock().unwrap_or_else(|e| e.into_inner());
            while !w.requested && !w.stop {
                w = s.cv.wait(w).unwrap_or_else(|e| e.into_inner());
            }
            w.requested = false;
            w.stop
        };
        // The mark first: it belongs to a write that completed before the
        // flush below starts, whatever `written` reads.
        let mark = s.mark.load(Ordering::SeqCst);
        let target = s.written.load(Ordering::SeqCst);
        if target > last || stop {
            let res = db
                .flush()
                .map(|_| ())
                .map_err(|e| e.to_string())
                .and_then(|()| data_file.sync_data().map_err(|e| e.to_string()))
                .and_then(|()| sync_new_blobs(blobs, &mut synced_blobs).map_err(|e| e.to_string()));
            super::crash_point("store::flushed");
            match res {
                Ok(()) => s.done.send_modify(|f| {
                    f.ok_upto = target;
                    f.mark = f.mark.max(mark);
                }),
                Err(e) => {
                    tracing::error!(error = %e, "store flush failed; answering 503 to waiting requests");
                    s.done.send_modify(|f| f.failed_upto = target);
                    fatal(s, &format!("store flush failed: {e}"));
                }
            }
            last = target;
        }
        if stop {
            return;
        }
    }
}

fn fatal(s: &Shared, error: &str) {
    // Nothing becomes durable after this: every later ticket has failed
    // (including the one a round whose write failed never took).
    s.done.send_modify(|f| f.failed_upto = u64::MAX);
    s.fatal.send_if_modified(|f| {
        if f.is_some() {
            return false;
        }
        *f = Some(error.to_string());
        true
    });
}

/// fsync every blob file not synced at its current length, then the
/// directory if any was new. A file sled is still writing is synced again
/// once its length has grown; `synced` forgets files sled has removed.
fn sync_new_blobs(dir: &Path, synced: &mut HashMap<PathBuf, u64>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut present = HashMap::new();
    let mut new = false;
    for entry in entries {
        let path = entry?.path();
        let f = match File::open(&path) {
            Ok(f) => f,
            // Removed by sled meanwhile: nothing to keep.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        if synced.get(&path) != Some(&len) {
            f.sync_all()?;
            new = true;
        }
        present.insert(path, len);
    }
    if new {
        File::open(dir)?.sync_all()?;
    }
    *synced = present;
    Ok(())
}
