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

pub mod flush;
pub mod records;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::Tree;
use ulid::Ulid;
use uuid::Uuid;

use crate::domain::rule::decide;
use crate::domain::Candidate;
pub use records::*;

const FORMAT: u8 = 1;
const QUARANTINE_KEEP: u64 = 1000;
/// Most requests waiting in the in-memory handoff to the processor.
const HANDOFF_KEEP: usize = 4096;
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
    /// [`Store::take_fresh`]): nothing of it can be in the store yet, so the
    /// replay checks are skipped.
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
    /// seq: the processor takes them from here instead of reading them back.
    /// Only a shortcut (bounded; the inbox stays the truth).
    handoff: Mutex<HashMap<u64, Arc<RawRequest>>>,
    /// Held from taking an inbox seq until the entry is committed, so inbox
    /// entries become visible in seq order: the processor reads the inbox
    /// with a cursor and would never see an entry committed behind it.
    inbox_order: Mutex<()>,
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
            handoff: Mutex::new(HashMap::new()),
            inbox_order: Mutex::new(()),
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

    /// Is the store writable and durable right now? (readiness probe)
    pub async fn probe(&self, now: i64) -> Result<(), StoreError> {
        self.meta.insert("probe", &now.to_be_bytes())?;
        let t = self.commit.ticket();
        self.wait_durable(t).await
    }

    // ------------------------------------------------------------- ingest

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

    // -------------------------------------------------------------- tasks

    /// A task: its record once processing ended (or was restarted by
    /// `reprocess`); before that, a stored request is a task in `processing`.
    pub fn task(&self, id: Uuid) -> Result<Option<TaskRecord>, StoreError> {
        if let Some(b) = self.tasks.get(id.as_bytes())? {
            return Ok(Some(dec(&b)?));
        }
        Ok(self.request(id)?.map(|r| processing_task(&r)))
    }

    pub fn request(&self, id: Uuid) -> Result<Option<RawRequest>, StoreError> {
        self.requests
            .get(id.as_bytes())?
            .map(|b| dec(&b))
            .transpose()
    }

    /// Hand out an error result exactly once: marks it read atomically and
    /// returns it, or None if there is no unread error result.
    pub fn take_error(&self, id: Uuid) -> Result<Option<TaskRecord>, StoreError> {
        let key = id.as_bytes();
        loop {
            let Some(old) = self.tasks.get(key)? else {
                return Ok(None);
            };
            let mut t: TaskRecord = dec(&old)?;
            if t.state != TaskState::Error || t.error_read {
                return Ok(None);
            }
            t.error_read = true;
            if self
                .tasks
                .compare_and_swap(key, Some(old), Some(enc(&t)?))?
                .is_ok()
            {
                return Ok(Some(t));
            }
        }
    }

    /// Unprocessed work in arrival order, after `after` (exclusive).
    pub fn inbox(&self, after: Option<u64>) -> Result<Vec<(u64, Uuid)>, StoreError> {
        let start = after.map(|a| (a + 1).to_be_bytes()).unwrap_or([0; 8]);
        self.inbox
            .range(start..)
            .map(|r| {
                let (k, v) = r?;
                let seq = u64::from_be_bytes(
                    k.as_ref()
                        .try_into()
                        .map_err(|_| StoreError::Codec("inbox key".into()))?,
                );
                let id = Uuid::from_slice(&v).map_err(|e| StoreError::Codec(e.to_string()))?;
                Ok((seq, id))
            })
            .collect()
    }

    /// Apply a request's candidate events: events, payment state with its
    /// history, then the task result, then drop the inbox entry.
    ///
    /// No sled transaction (see the module docs); instead every write is
    /// replay-safe, so a crash anywhere means the restart re-runs this
    /// request and it counts exactly once:
    /// - per candidate, under its payment's lock: the event (if applied),
    ///   then the payment record — one insert holding the new state *and*
    ///   the item's history entry, which is the item's commit point. A replay
    ///   finds the entry and reuses its result, or finds only the event and
    ///   re-applies under the same event id;
    /// - the task result, then the inbox removal (the request's commit point).
    ///
    /// Merchants are resolved before anything of the request is written, so
    /// a refused event ends the task in that error with nothing behind.
    pub fn complete(
        &self,
        item: &WorkItem<'_>,
        resolve: &MerchantResolver,
        now: i64,
    ) -> Result<Completion, StoreError> {
        let id = *item.request_id.as_bytes();
        let seq_key = item.seq.to_be_bytes();
        let stored = match item.fresh {
            true => None,
            false => self
                .tasks
                .get(id)?
                .map(|b| dec::<TaskRecord>(&b))
                .transpose()?,
        };
        let mut task = stored.unwrap_or_else(|| processing_task(item.request));
        if task.state != TaskState::Processing {
            self.inbox.remove(seq_key)?;
            return Ok(Completion::AlreadyDone);
        }
        // With several events, resolve every merchant before writing any, so
        // a refusal leaves nothing behind. One event resolves as it applies.
        let mut merchants = Vec::with_capacity(item.candidates.len());
        if item.candidates.len() > 1 {
            for c in item.candidates {
                match resolve(self.payment(&c.payment_id)?.as_ref(), c) {
                    Ok(m) => merchants.push(Some(m)),
                    Err(e) => {
                        self.fail(item.seq, Some(item.request), e.clone(), now)?;
                        return Ok(Completion::Failed(e));
                    }
                }
            }
        } else {
            merchants.push(None);
        }
        let mut out = Vec::with_capacity(item.candidates.len());
        for (idx, (c, merchant_id)) in item.candidates.iter().zip(merchants).enumerate() {
            match self.apply_one(item, idx as u16, c, merchant_id, resolve, now)? {
                Ok(ev) => out.push(ev),
                Err(e) => {
                    self.fail(item.seq, Some(item.request), e.clone(), now)?;
                    return Ok(Completion::Failed(e));
                }
            }
        }
        task.state = TaskState::Completed;
        task.finished_at = Some(now);
        task.events = out.clone();
        self.tasks.insert(id, enc(&task)?)?;
        self.inbox.remove(seq_key)?;
        Ok(Completion::Completed(out))
    }

    /// One candidate of [`Self::complete`], idempotent under replay.
    /// `merchant_id` is None when the caller left resolution to this call
    /// (then a refusal is `Ok(Err(..))` with nothing written).
    fn apply_one(
        &self,
        item: &WorkItem<'_>,
        idx: u16,
        c: &Candidate,
        merchant_id: Option<String>,
        resolve: &MerchantResolver,
        now: i64,
    ) -> Result<Result<TaskEvent, TaskError>, StoreError> {
        let _lock = self.payment_lock(&c.payment_id);
        let provider = &item.request.provider;
        let existing = self.payment(&c.payment_id)?;
        if let Some(done) = existing
            .as_ref()
            .and_then(|r| r.history.iter().find(|h| h.seq == item.seq && h.idx == idx))
        {
            return Ok(Ok(TaskEvent {
                payment_id: c.payment_id.clone(),
                status: done.status,
                outcome: done.outcome,
                sequence: done.sequence,
                event_id: done.event_id.clone(),
            }));
        }
        let merchant_id = match merchant_id {
            Some(m) => m,
            None => match resolve(existing.as_ref(), c) {
                Ok(m) => m,
                Err(e) => return Ok(Err(e)),
            },
        };
        let mut rec = existing.unwrap_or_else(|| PaymentRecord {
            payment_id: c.payment_id.clone(),
            merchant_id,
            provider: Some(provider.clone()),
            state: None,
            registered_site_url: None,
            ipn_site_url: None,
            metadata: None,
            created_at: now,
            updated_at: now,
            history: Vec::new(),
        });
        let decision = decide(rec.state.as_ref(), c);
        let event = match &decision.next {
            None => None,
            Some(next) => {
                // A crash between this event and the payment write below left
                // the event behind: a replay reuses its id. A fresh item
                // cannot have one.
                let orphan = match item.fresh {
                    true => None,
                    false => {
                        self.find_event(&rec.merchant_id, item, &c.payment_id, next.sequence)?
                    }
                };
                let ulid = orphan.unwrap_or_else(|| self.next_ulid());
                Some((
                    ulid,
                    EventRecord {
                        event_id: format!("evt_{ulid}"),
                        payment_id: c.payment_id.clone(),
                        merchant_id: rec.merchant_id.clone(),
                        provider: provider.clone(),
                        status: next.status,
                        previous_status: decision.previous_status,
                        sequence: next.sequence,
                        authorization_id: next.authorization_id.clone(),
                        charge_id: next.charge_id.clone(),
                        amount: next.amount,
                        currency: next.currency.clone(),
                        occurred_at: c.occurred_at,
                        created_at: now,
                        provider_event_id: c.provider_event_id.clone(),
                        request_id: item.request_id,
                    },
                ))
            }
        };
        let entry = HistoryEntry {
            seq: item.seq,
            idx,
            sequence: decision.next.as_ref().map(|n| n.sequence),
            status: c.status,
            outcome: decision.outcome,
            occurred_at: c.occurred_at,
            received_at: item.request.received_at,
            request_id: item.request_id,
            event_id: event.as_ref().map(|(_, e)| e.event_id.clone()),
            provider_event_id: c.provider_event_id.clone(),
        };
        let result = TaskEvent {
            payment_id: c.payment_id.clone(),
            status: c.status,
            outcome: decision.outcome,
            sequence: entry.sequence,
            event_id: entry.event_id.clone(),
        };
        if let Some((ulid, ev)) = &event {
            self.events
                .insert(joined(&rec.merchant_id, &ulid.0.to_be_bytes()), enc(ev)?)?;
        }
        if let Some(next) = decision.next {
            rec.state = Some(next);
            rec.provider.get_or_insert_with(|| provider.clone());
        }
        if let Some(url) = &c.merchant_site_url {
            rec.ipn_site_url = Some(url.clone());
        }
        rec.updated_at = now;
        rec.history.push(entry);
        if rec.history.len() > HISTORY_KEEP {
            rec.history.remove(0);
        }
        self.payments.insert(c.payment_id.as_bytes(), enc(&rec)?)?;
        Ok(Ok(result))
    }

    /// The event a crashed attempt at this item may have written: same
    /// request, payment and sequence, created after the request arrived.
    fn find_event(
        &self,
        merchant_id: &str,
        item: &WorkItem<'_>,
        payment_id: &str,
        sequence: u64,
    ) -> Result<Option<Ulid>, StoreError> {
        let prefix = joined(merchant_id, &[]);
        let since = Ulid::from_parts(item.request.received_at.max(0) as u64, 0);
        for kv in self
            .events
            .range(joined(merchant_id, &since.0.to_be_bytes())..)
        {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            let ev: EventRecord = dec(&v)?;
            if ev.request_id == item.request_id
                && ev.payment_id == payment_id
                && ev.sequence == sequence
            {
                return Ok(Ulid::from_string(ev.event_id.trim_start_matches("evt_")).ok());
            }
        }
        Ok(None)
    }

    /// End a task in error, then drop its inbox entry. `request` is None when
    /// the raw request itself is gone (then only the entry goes).
    pub fn fail(
        &self,
        seq: u64,
        request: Option<&RawRequest>,
        err: TaskError,
        now: i64,
    ) -> Result<(), StoreError> {
        if let Some(req) = request {
            let id = *req.request_id.as_bytes();
            let mut t = match self.tasks.get(id)? {
                Some(b) => dec::<TaskRecord>(&b)?,
                None => processing_task(req),
            };
            if t.state == TaskState::Processing {
                t.state = TaskState::Error;
                t.error = Some(err);
                t.finished_at = Some(now);
                self.tasks.insert(id, enc(&t)?)?;
            }
        }
        self.inbox.remove(seq.to_be_bytes())?;
        Ok(())
    }

    /// Put an errored request back to work (after the operator fixed the config).
    ///
    /// The task record is reset before the inbox entry is added; a crash
    /// between the two leaves a `processing` task with no inbox entry, which
    /// a second reprocess call picks up again.
    pub fn reprocess(&self, request_id: Uuid, now: i64) -> Result<Reprocess, StoreError> {
        let id = *request_id.as_bytes();
        let _lock = Self::stripe(&self.ingest_locks, &id);
        let Some(req) = self.request(request_id)? else {
            return Ok(Reprocess::NotFound);
        };
        let task = self
            .tasks
            .get(id)?
            .map(|b| dec::<TaskRecord>(&b))
            .transpose()?;
        // No task record yet: the request is still in its first processing.
        let state = task.as_ref().map_or(TaskState::Processing, |t| t.state);
        let stuck = state == TaskState::Processing
            && !self.inbox(None)?.iter().any(|(_, i)| *i == request_id);
        if state != TaskState::Error && !stuck {
            return Ok(Reprocess::NotInError(state));
        }
        let fresh = TaskRecord {
            created_at: now,
            ..processing_task(&req)
        };
        self.tasks.insert(id, enc(&fresh)?)?;
        let _order = self.inbox_order.lock().unwrap_or_else(|e| e.into_inner());
        let seq = self.db.generate_id()?.to_be_bytes();
        self.inbox.insert(seq, &id)?;
        Ok(Reprocess::Queued)
    }

    /// Tasks, optionally filtered, newest first (admin listing). Requests
    /// still in their first processing have no task record: they come from
    /// the inbox.
    pub fn tasks(
        &self,
        state: Option<TaskState>,
        provider: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let wanted = |t: &TaskRecord| {
            state.is_none_or(|s| s == t.state) && provider.is_none_or(|p| p == t.provider)
        };
        let mut out = Vec::new();
        for r in self.tasks.iter() {
            let t: TaskRecord = dec(&r?.1)?;
            if wanted(&t) {
                out.push(t);
            }
        }
        if state.is_none_or(|s| s == TaskState::Processing) {
            for (_, id) in self.inbox(None)? {
                if self.tasks.contains_key(id.as_bytes())? {
                    continue;
                }
                if let Some(r) = self.request(id)? {
                    let t = processing_task(&r);
                    if wanted(&t) {
                        out.push(t);
                    }
                }
            }
        }
        out.sort_by_key(|t| std::cmp::Reverse(t.created_at));
        out.truncate(limit);
        Ok(out)
    }

    // ----------------------------------------------------------- payments

    pub fn payment(&self, payment_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        self.payments
            .get(payment_id.as_bytes())?
            .map(|b| dec(&b))
            .transpose()
    }

    /// Register (or update the registration of) a payment before the 3DS redirect.
    pub fn register_payment(
        &self,
        payment_id: &str,
        merchant_id: &str,
        provider: Option<String>,
        site_url: Option<String>,
        metadata: Option<String>,
        now: i64,
    ) -> Result<Registered, StoreError> {
        let key = payment_id.as_bytes();
        let _lock = self.payment_lock(payment_id);
        loop {
            let old = self.payments.get(key)?;
            let (rec, created) = match &old {
                None => (
                    PaymentRecord {
                        payment_id: payment_id.to_string(),
                        merchant_id: merchant_id.to_string(),
                        provider: provider.clone(),
                        state: None,
                        registered_site_url: site_url.clone(),
                        ipn_site_url: None,
                        metadata: metadata.clone(),
                        created_at: now,
                        updated_at: now,
                        history: Vec::new(),
                    },
                    true,
                ),
                Some(b) => {
                    let mut r: PaymentRecord = dec(b)?;
                    if r.merchant_id != merchant_id {
                        return Ok(Registered::Taken);
                    }
                    if site_url.is_some() {
                        r.registered_site_url = site_url.clone();
                    }
                    if metadata.is_some() {
                        r.metadata = metadata.clone();
                    }
                    if r.provider.is_none() {
                        r.provider = provider.clone();
                    }
                    r.updated_at = now;
                    (r, false)
                }
            };
            if self
                .payments
                .compare_and_swap(key, old, Some(enc(&rec)?))?
                .is_ok()
            {
                return Ok(if created {
                    Registered::Created(rec)
                } else {
                    Registered::Updated(rec)
                });
            }
        }
    }

    /// Everything recorded for a payment, in arrival order.
    pub fn history(&self, payment_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(self
            .payment(payment_id)?
            .map(|p| p.history)
            .unwrap_or_default())
    }

    /// Applied events of a merchant, oldest first, strictly after `after`.
    pub fn events(
        &self,
        merchant_id: &str,
        payment_id: Option<&str>,
        after: Option<Ulid>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let prefix = joined(merchant_id, &[]);
        let start = match after {
            Some(u) => joined(merchant_id, &(u.0 + 1).to_be_bytes()),
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for r in self.events.range(start..) {
            let (k, v) = r?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let ev: EventRecord = dec(&v)?;
            if payment_id.is_none_or(|p| p == ev.payment_id) {
                out.push(ev);
            }
        }
        Ok(out)
    }

    fn next_ulid(&self) -> Ulid {
        let mut g = self.ulids.lock().unwrap_or_else(|e| e.into_inner());
        g.generate().unwrap_or_else(|_| Ulid::new())
    }

    // ---------------------------------------------------------- retention

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

impl Drop for Store {
    fn drop(&mut self) {
        self.commit.stop();
    }
}
