//! Group commit: one thread flushes sled for everybody.
//!
//! Two sled 0.34.7 traps shape this (both seen on our machines):
//! - awaiting `flush_async()` from many requests at once deadlocks
//!   (sled #1308), so requests never flush themselves: they take a *ticket*
//!   after their write and wait until a flush covering it has finished;
//! - sled's flush ends in `sync_file_range`, which leaves the disk cache and
//!   the file size unsynced (sled #1452), so every group flush is followed by
//!   an `fdatasync` of the store file before anyone is told "durable".

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Flushed {
    /// Every ticket up to here is on disk.
    ok_upto: u64,
    /// A flush covering tickets up to here failed (those callers get an error).
    failed_upto: u64,
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
    wake: Mutex<Wake>,
    cv: Condvar,
    done: watch::Sender<Flushed>,
}

pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("store flush failed")]
pub struct FlushFailed;

impl GroupCommit {
    pub fn start(db: sled::Db, data_file: File) -> GroupCommit {
        let (done, _) = watch::channel(Flushed::default());
        let shared = Arc::new(Shared {
            written: AtomicU64::new(0),
            wake: Mutex::new(Wake::default()),
            cv: Condvar::new(),
            done,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ipn-relay-flush".into())
            .spawn(move || flush_loop(&s, &db, &data_file))
            .expect("spawn flusher thread");
        GroupCommit {
            shared,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Call after a write has completed; the ticket is what [`Self::wait`] waits for.
    pub fn ticket(&self) -> u64 {
        let t = self.shared.written.fetch_add(1, Ordering::SeqCst) + 1;
        let mut w = self.shared.wake.lock().unwrap_or_else(|e| e.into_inner());
        w.requested = true;
        drop(w);
        self.shared.cv.notify_one();
        t
    }

    /// Resolves once a flush + fdatasync covering `ticket` finished.
    pub async fn wait(&self, ticket: u64) -> Result<(), FlushFailed> {
        let mut rx = self.shared.done.subscribe();
        let f = *rx
            .wait_for(|f| f.ok_upto >= ticket || f.failed_upto >= ticket)
            .await
            .map_err(|_| FlushFailed)?;
        if f.ok_upto >= ticket {
            Ok(())
        } else {
            Err(FlushFailed)
        }
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

fn flush_loop(s: &Shared, db: &sled::Db, data_file: &File) {
    let mut last = 0u64;
    loop {
        let stop = {
            let mut w = s.wake.lock().unwrap_or_else(|e| e.into_inner());
            while !w.requested && !w.stop {
                w = s.cv.wait(w).unwrap_or_else(|e| e.into_inner());
            }
            w.requested = false;
            w.stop
        };
        let target = s.written.load(Ordering::SeqCst);
        if target > last || stop {
            let res = db
                .flush()
                .map(|_| ())
                .map_err(|e| e.to_string())
                .and_then(|()| data_file.sync_data().map_err(|e| e.to_string()));
            match res {
                Ok(()) => s.done.send_modify(|f| f.ok_upto = target),
                Err(e) => {
                    tracing::error!(error = %e, "store flush failed; answering 503 to waiting requests");
                    s.done.send_modify(|f| f.failed_upto = target);
                }
            }
            last = target;
        }
        if stop {
            return;
        }
    }
}
