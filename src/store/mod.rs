//! The one door to sled. Callers see typed records and verbs
//! (`accept_ipn`, `complete`, `fail`, …), never trees or key encodings, so a
//! second backend can come later behind the same API.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `requests` | request_id (16 bytes) | [`RawRequest`] |
//! | `tasks` | request_id | [`TaskRecord`] |
//! | `inbox` | arrival seq (u64 BE) | request_id — work not yet processed |
//! | `dedupe` | provider ‖ 0 ‖ event key | [`DedupeRecord`] |
//! | `quarantine` | seq (u64 BE) | [`QuarantineRecord`] (last 1000) |
//! | `payments` | payment_id | [`PaymentRecord`] |
//! | `events` | merchant_id ‖ 0 ‖ ulid (u128 BE) | [`EventRecord`] |
//!
//! Big-endian keys make scans come out in arrival / time order.
//!
//! No sled transactions: in sled 0.34 each one takes a global exclusive lock
//! and seals an atomic log batch, which cut the durable ack rate ~3x in
//! `benches/ingest.rs`. Multi-tree changes are instead ordered plain writes
//! whose every crash-prefix is harmless or replays exactly once; each verb
//! documents its order. Read-modify-writes of one key run under an
//! in-process lock striped by key (sled admits one process per store).

mod apply;
pub mod flush;
mod ingest;
mod payments;
pub mod records;
mod retention;
mod tasks;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::Tree;
use ulid::Ulid;
use uuid::Uuid;

use crate::domain::Candidate;
pub use records::*;

const FORMAT: u8 = 1;
const QUARANTINE_KEEP: u64 = 1000;
/// Most requests, and most body bytes, waiting in the in-memory handoff to
/// the processor; beyond, the processor reads them back from the inbox.
const HANDOFF_KEEP: usize = 16_384;
const HANDOFF_BYTES: usize = 32 << 20;
/// Appended to the request id in an inbox entry that `reprocess` queued:
/// an earlier attempt left state behind, so the replay checks must run.
const INBOX_REPROCESS: &[u8] = b"r";
/// History entries a payment keeps (oldest dropped first). A replay only
/// looks for the request in flight, so this only needs to exceed one
/// request's items.
const HISTORY_KEEP: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O: {0}")]
    Sled(#[from] sled::Error),
    #[error("store record could not be decoded: {0}")]
    Codec(String),
    #[error("store flush failed")]
    Flush(#[from] flush::FlushFailed),
    #[error("cannot open store: {0}")]
    Open(String),
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(v, vec![FORMAT]).map_err(|e| StoreError::Codec(e.to_string()))
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    match b.split_first() {
        Some((&FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|e| StoreError::Codec(e.to_string()))
        }
        _ => Err(StoreError::Codec("unknown record format".into())),
    }
}

/// The task of a stored request that has no task record yet.
fn processing_task(r: &RawRequest) -> TaskRecord {
    TaskRecord {
        request_id: r.request_id,
        provider: r.provider.clone(),
        state: TaskState::Processing,
        created_at: r.received_at,
        finished_at: None,
        events: Vec::new(),
        error: None,
        error_read: false,
    }
}

fn joined(a: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + rest.len());
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(rest);
    k
}

/// New inbox entries held in memory for the processor.
#[derive(Default)]
struct Handoff {
    requests: BTreeMap<u64, Fresh>,
    /// Body bytes in `requests`.
    bytes: usize,
    /// Inbox entries ever added without a copy here (handoff full, or a
    /// reprocess). While it has not moved, the handoff holds every entry the
    /// processor has not taken yet.
    missed: u64,
}

impl Handoff {
    /// Keep a new entry's request, if there is room; else count it missed.
    fn offer(&mut self, seq: u64, fresh: Fresh) {
        let len = fresh.request.body.len();
        if self.requests.len() < HANDOFF_KEEP && self.bytes + len <= HANDOFF_BYTES {
            self.bytes += len;
            self.requests.insert(seq, fresh);
        } else {
            self.missed += 1;
        }
    }

    fn take(&mut self, seq: u64) -> Option<Fresh> {
        let f = self.requests.remove(&seq)?;
        self.bytes -= f.request.body.len();
        Some(f)
    }

    /// The first `limit` entries, in seq order.
    fn take_first(&mut self, limit: usize) -> Vec<(u64, Fresh)> {
        let rest = match self.requests.keys().nth(limit).copied() {
            Some(first_left) => self.requests.split_off(&first_left),
            None => BTreeMap::new(),
        };
        let taken = std::mem::replace(&mut self.requests, rest);
        self.bytes -= taken.values().map(|f| f.request.body.len()).sum::<usize>();
        taken.into_iter().collect()
    }
}

/// Where [`Store::pending`] reads the inbox from; kept by its one caller.
#[derive(Debug, Default)]
pub struct InboxCursor {
    /// Highest seq handed out.
    pub last: Option<u64>,
    /// `Handoff::missed` as of the last read of the whole inbox tail from
    /// disk; None until one (so a restart always reads the disk first).
    synced: Option<u64>,
}

impl InboxCursor {
    /// Read again from `seq` on, from disk (after failing to load it).
    pub fn rewind(&mut self, seq: u64) {
        self.last = seq.checked_sub(1);
        self.synced = None;
    }
}

/// A request handed over in memory by the ingest that accepted it.
#[derive(Debug, Clone)]
pub struct Fresh {
    pub request: Arc<RawRequest>,
    /// Its body as the ingest parsed it (`mapping::parse_body`), if it did.
    pub doc: Option<Arc<serde_json::Value>>,
}

/// One inbox entry to process, from [`Store::pending`].
#[derive(Debug)]
pub struct Pending {
    pub seq: u64,
    pub request_id: Uuid,
    /// The request, if this process accepted it and still held it in memory.
    pub held: Option<Fresh>,
    /// Nothing of it can be in the store yet: this process accepted it and
    /// has not tried it (no reprocess either), so no replay checks are needed.
    pub first_attempt: bool,
}

/// Result of [`Store::accept_ipn`]. Either way, wait for `ticket` before acking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    New {
        ticket: u64,
    },
    /// Seen within the dedupe window: answer with the original request.
    Duplicate {
        request_id: Uuid,
        state: Option<TaskState>,
        ticket: u64,
    },
}

/// Names the merchant of a candidate, given the payment's current record.
pub type MerchantResolver<'a> =
    dyn Fn(Option<&PaymentRecord>, &Candidate) -> Result<String, TaskError> + 'a;

/// One stored request and its mapped events, for [`Store::complete`].
#[derive(Debug, Clone, Copy)]
pub struct WorkItem<'a> {
    pub seq: u64,
    pub request_id: Uuid,
    pub request: &'a RawRequest,
    pub candidates: &'a [Candidate],
    /// First attempt at a request this process accepted (see
    /// [`Pending::first_attempt`]): nothing of it can be in the store yet, so
    /// the replay checks are skipped.
    pub fresh: bool,
}

/// Result of [`Store::complete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Completed(Vec<TaskEvent>),
    /// The merchant resolver refused an event; the task ended in this error.
    Failed(TaskError),
    /// Already processed (a replay after a crash): nothing changed.
    AlreadyDone,
}

/// Outcome of [`Store::register_payment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    Created(PaymentRecord),
    Updated(PaymentRecord),
    /// The id belongs to another merchant.
    Taken,
}

/// Outcome of [`Store::reprocess`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reprocess {
    Queued,
    NotFound,
    NotInError(TaskState),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub dedupe: usize,
    pub requests: usize,
    pub quarantine: usize,
    pub events: usize,
}

/// Retention limits in milliseconds, for [`Store::purge_expired`].
#[derive(Debug, Clone, Copy)]
pub struct RetentionMs {
    pub dedupe_window: i64,
    pub events: i64,
}

pub struct Store {
    db: sled::Db,
    requests: Tree,
    tasks: Tree,
    inbox: Tree,
    dedupe: Tree,
    quarantine: Tree,
    payments: Tree,
    events: Tree,
    meta: Tree,
    commit: flush::GroupCommit,
    quarantine_seq: AtomicU64,
    ulids: Mutex<ulid::Generator>,
    /// Serialise check-then-insert on one dedupe key (`accept_ipn`), and
    /// read-modify-write of one payment (`complete`, `register_payment`).
    /// Two sets, so that the niced processor can never hold a lock an
    /// acknowledging request waits for.
    ingest_locks: Vec<Mutex<()>>,
    payment_locks: Vec<Mutex<()>>,
    /// Requests accepted by this process and not yet picked up, by inbox
    /// seq: the processor takes them from here instead of reading the inbox
    /// back (see [`Store::pending`]). Only a shortcut; the inbox stays the truth.
    handoff: Mutex<Handoff>,
    /// Held from taking an inbox seq until the entry is committed, so inbox
    /// entries become visible in seq order: the processor reads the inbox
    /// with a cursor and would never see an entry committed behind it.
    inbox_order: Mutex<()>,
    /// An id taken at open: inbox entries above it were accepted by this
    /// process (sled ids only grow, across crashes too).
    boot_seq: u64,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(1000))
            .open()?;
        // sled 0.34 keeps its log in `<path>/db`; see flush.rs for why we fdatasync it.
        let data_file = File::open(path.join("db"))
            .map_err(|e| StoreError::Open(format!("{}/db: {e}", path.display())))?;
        let quarantine = db.open_tree("quarantine")?;
        let next_q = match quarantine.last()? {
            Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])) + 1,
            None => 0,
        };
        Ok(Store {
            requests: db.open_tree("requests")?,
            tasks: db.open_tree("tasks")?,
            inbox: db.open_tree("inbox")?,
            dedupe: db.open_tree("dedupe")?,
            payments: db.open_tree("payments")?,
            events: db.open_tree("events")?,
            meta: db.open_tree("meta")?,
            quarantine,
            commit: flush::GroupCommit::start(db.clone(), data_file),
            quarantine_seq: AtomicU64::new(next_q),
            ulids: Mutex::new(ulid::Generator::new()),
            ingest_locks: (0..64).map(|_| Mutex::new(())).collect(),
            payment_locks: (0..64).map(|_| Mutex::new(())).collect(),
            handoff: Mutex::new(Handoff::default()),
            inbox_order: Mutex::new(()),
            boot_seq: db.generate_id()?,
            db,
        })
    }

    /// Flush everything and stop the flusher (shutdown).
    pub fn close(&self) {
        self.commit.stop();
    }

    /// Wait until everything written before `ticket` was taken is on disk.
    pub async fn wait_durable(&self, ticket: u64) -> Result<(), StoreError> {
        Ok(self.commit.wait(ticket).await?)
    }

    /// Are writes (IPN acknowledgements, mostly) waiting for a flush now?
    pub fn acks_waiting(&self) -> bool {
        self.commit.busy()
    }

    /// Is the store writable and durable right now? (readiness probe)
    pub async fn probe(&self, now: i64) -> Result<(), StoreError> {
        self.meta.insert("probe", &now.to_be_bytes())?;
        let t = self.commit.ticket();
        self.wait_durable(t).await
    }

    fn stripe<'a>(locks: &'a [Mutex<()>], key: &[u8]) -> std::sync::MutexGuard<'a, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let lock = &locks[(h.finish() as usize) % locks.len()];
        lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn payment_lock(&self, payment_id: &str) -> std::sync::MutexGuard<'_, ()> {
        Self::stripe(&self.payment_locks, payment_id.as_bytes())
    }

    fn next_ulid(&self) -> Ulid {
        let mut g = self.ulids.lock().unwrap_or_else(|e| e.into_inner());
        g.generate().unwrap_or_else(|_| Ulid::new())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.commit.stop();
    }
}
