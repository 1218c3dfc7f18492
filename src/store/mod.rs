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
//! | `history` | payment_id ‖ 0 ‖ inbox seq (u64 BE) ‖ item (u16 BE) | [`HistoryEntry`] |
//! | `events` | merchant_id ‖ 0 ‖ ulid (u128 BE) | [`EventRecord`] |
//!
//! Big-endian keys make scans come out in arrival / time order. Every change
//! that spans trees is one sled transaction.

pub mod flush;
pub mod records;

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError as Cte, TransactionError, Transactional};
use sled::Tree;
use ulid::Ulid;
use uuid::Uuid;

use crate::domain::rule::decide;
use crate::domain::Candidate;
pub use records::*;

const FORMAT: u8 = 1;
const QUARANTINE_KEEP: u64 = 1000;

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

impl<E: Into<StoreError>> From<TransactionError<E>> for StoreError {
    fn from(e: TransactionError<E>) -> Self {
        match e {
            TransactionError::Abort(e) => e.into(),
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
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

/// Why [`Store::complete`]'s transaction gave up.
enum TxAbort {
    Store(StoreError),
    Task(TaskError),
}

fn ab(e: StoreError) -> Cte<TxAbort> {
    Cte::Abort(TxAbort::Store(e))
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
    pub history: usize,
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
    history: Tree,
    events: Tree,
    meta: Tree,
    commit: flush::GroupCommit,
    quarantine_seq: AtomicU64,
    ulids: Mutex<ulid::Generator>,
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
            history: db.open_tree("history")?,
            events: db.open_tree("events")?,
            meta: db.open_tree("meta")?,
            quarantine,
            commit: flush::GroupCommit::start(db.clone(), data_file),
            quarantine_seq: AtomicU64::new(next_q),
            ulids: Mutex::new(ulid::Generator::new()),
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

    /// Dedupe, then store the raw request, its task and its inbox entry in
    /// one transaction — so two identical IPNs at once yield one task.
    pub fn accept_ipn(
        &self,
        req: &RawRequest,
        dedupe_window_ms: i64,
        now: i64,
    ) -> Result<Accepted, StoreError> {
        let dkey = joined(&req.provider, req.event_key.as_bytes());
        let id = *req.request_id.as_bytes();
        let req_bytes = enc(req)?;
        let task_bytes = enc(&TaskRecord {
            request_id: req.request_id,
            provider: req.provider.clone(),
            state: TaskState::Processing,
            created_at: now,
            finished_at: None,
            events: Vec::new(),
            error: None,
            error_read: false,
        })?;
        let dedupe_bytes = enc(&DedupeRecord {
            request_id: req.request_id,
            seen_at: now,
        })?;
        let order = self.inbox_order.lock().unwrap_or_else(|e| e.into_inner());
        let seq = self.db.generate_id()?.to_be_bytes();
        let original: Option<Uuid> = (&self.dedupe, &self.requests, &self.tasks, &self.inbox)
            .transaction(|(d, r, t, i)| {
                if let Some(prev) = d.get(&dkey)? {
                    let prev: DedupeRecord = dec(&prev).map_err(Cte::Abort)?;
                    if now.saturating_sub(prev.seen_at) < dedupe_window_ms {
                        return Ok(Some(prev.request_id));
                    }
                }
                d.insert(dkey.as_slice(), dedupe_bytes.as_slice())?;
                r.insert(&id, req_bytes.as_slice())?;
                t.insert(&id, task_bytes.as_slice())?;
                i.insert(&seq, &id)?;
                Ok(None)
            })?;
        drop(order);
        // Also for a duplicate: its original may still be waiting for its flush.
        let ticket = self.commit.ticket();
        Ok(match original {
            None => Accepted::New { ticket },
            Some(request_id) => Accepted::Duplicate {
                request_id,
                state: self.task(request_id)?.map(|t| t.state),
                ticket,
            },
        })
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

    pub fn task(&self, id: Uuid) -> Result<Option<TaskRecord>, StoreError> {
        self.tasks.get(id.as_bytes())?.map(|b| dec(&b)).transpose()
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

    /// Apply a request's candidate events: payment state, history, events and
    /// the task result in one transaction, and the inbox entry removed in it
    /// too — so a crash anywhere means "not applied" or "applied once".
    ///
    /// `resolve` names the merchant of a candidate given the payment's current
    /// record (registered payments first); an `Err` ends the task in that error.
    pub fn complete(
        &self,
        seq: u64,
        request_id: Uuid,
        candidates: &[Candidate],
        resolve: &MerchantResolver,
        now: i64,
    ) -> Result<Completion, StoreError> {
        let id = *request_id.as_bytes();
        let seq_key = seq.to_be_bytes();
        let trees = (
            &self.tasks,
            &self.inbox,
            &self.payments,
            &self.history,
            &self.events,
            &self.requests,
        );
        let res = trees.transaction(|(tasks, inbox, payments, history, events, requests)| {
            let Some(task) = tasks.get(id)? else {
                inbox.remove(&seq_key)?;
                return Ok(Completion::AlreadyDone);
            };
            let mut task: TaskRecord = dec(&task).map_err(ab)?;
            if task.state != TaskState::Processing {
                inbox.remove(&seq_key)?;
                return Ok(Completion::AlreadyDone);
            }
            let provider = task.provider.clone();
            let received_at = match requests.get(id)? {
                Some(r) => dec::<RawRequest>(&r).map_err(ab)?.received_at,
                None => now,
            };
            let mut out = Vec::with_capacity(candidates.len());
            for (idx, c) in candidates.iter().enumerate() {
                let existing: Option<PaymentRecord> = payments
                    .get(c.payment_id.as_bytes())?
                    .map(|b| dec(&b))
                    .transpose()
                    .map_err(ab)?;
                let merchant_id = match resolve(existing.as_ref(), c) {
                    Ok(m) => m,
                    // Abort, so no earlier item of this request is written either.
                    Err(e) => return Err(Cte::Abort(TxAbort::Task(e))),
                };
                let mut rec = existing.unwrap_or_else(|| PaymentRecord {
                    payment_id: c.payment_id.clone(),
                    merchant_id: merchant_id.clone(),
                    provider: Some(provider.clone()),
                    state: None,
                    registered_site_url: None,
                    ipn_site_url: None,
                    metadata: None,
                    created_at: now,
                    updated_at: now,
                });
                let decision = decide(rec.state.as_ref(), c);
                let mut event_id = None;
                let mut sequence = None;
                if let Some(next) = &decision.next {
                    let ulid = self.next_ulid();
                    let eid = format!("evt_{ulid}");
                    let ev = EventRecord {
                        event_id: eid.clone(),
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
                        request_id,
                    };
                    events.insert(
                        joined(&rec.merchant_id, &ulid.0.to_be_bytes()),
                        enc(&ev).map_err(ab)?,
                    )?;
                    sequence = Some(next.sequence);
                    event_id = Some(eid);
                    rec.state = Some(next.clone());
                    rec.provider.get_or_insert_with(|| provider.clone());
                }
                if let Some(url) = &c.merchant_site_url {
                    rec.ipn_site_url = Some(url.clone());
                }
                rec.updated_at = now;
                let mut hkey = seq.to_be_bytes().to_vec();
                hkey.extend_from_slice(&(idx as u16).to_be_bytes());
                let entry = HistoryEntry {
                    sequence,
                    status: c.status,
                    outcome: decision.outcome,
                    occurred_at: c.occurred_at,
                    received_at,
                    request_id,
                    event_id: event_id.clone(),
                    provider_event_id: c.provider_event_id.clone(),
                };
                history.insert(joined(&c.payment_id, &hkey), enc(&entry).map_err(ab)?)?;
                payments.insert(c.payment_id.as_bytes(), enc(&rec).map_err(ab)?)?;
                out.push(TaskEvent {
                    payment_id: c.payment_id.clone(),
                    status: c.status,
                    outcome: decision.outcome,
                    sequence,
                    event_id,
                });
            }
            task.state = TaskState::Completed;
            task.finished_at = Some(now);
            task.events = out.clone();
            tasks.insert(&id, enc(&task).map_err(ab)?)?;
            inbox.remove(&seq_key)?;
            Ok(Completion::Completed(out))
        });
        match res {
            Ok(c) => Ok(c),
            // The transaction above wrote nothing: end the task in that error.
            Err(TransactionError::Abort(TxAbort::Task(e))) => {
                self.fail(seq, request_id, e.clone(), now)?;
                Ok(Completion::Failed(e))
            }
            Err(TransactionError::Abort(TxAbort::Store(e))) => Err(e),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }

    /// End a task in error and drop its inbox entry, atomically.
    pub fn fail(
        &self,
        seq: u64,
        request_id: Uuid,
        err: TaskError,
        now: i64,
    ) -> Result<(), StoreError> {
        let id = *request_id.as_bytes();
        let seq_key = seq.to_be_bytes();
        (&self.tasks, &self.inbox).transaction(|(tasks, inbox)| {
            if let Some(b) = tasks.get(id)? {
                let mut t: TaskRecord = dec(&b).map_err(Cte::Abort)?;
                if t.state == TaskState::Processing {
                    t.state = TaskState::Error;
                    t.error = Some(err.clone());
                    t.finished_at = Some(now);
                    tasks.insert(&id, enc(&t).map_err(Cte::Abort)?)?;
                }
            }
            inbox.remove(&seq_key)?;
            Ok(())
        })?;
        Ok(())
    }

    /// Put an errored request back to work (after the operator fixed the config).
    pub fn reprocess(&self, request_id: Uuid, now: i64) -> Result<Reprocess, StoreError> {
        let id = *request_id.as_bytes();
        let _order = self.inbox_order.lock().unwrap_or_else(|e| e.into_inner());
        let seq = self.db.generate_id()?.to_be_bytes();
        let res = (&self.requests, &self.tasks, &self.inbox).transaction(
            |(requests, tasks, inbox)| {
                let Some(req) = requests.get(id)? else {
                    return Ok(Reprocess::NotFound);
                };
                let req: RawRequest = dec(&req).map_err(Cte::Abort)?;
                let task = tasks
                    .get(id)?
                    .map(|b| dec::<TaskRecord>(&b))
                    .transpose()
                    .map_err(Cte::Abort)?;
                if let Some(t) = &task {
                    if t.state != TaskState::Error {
                        return Ok(Reprocess::NotInError(t.state));
                    }
                }
                let fresh = TaskRecord {
                    request_id,
                    provider: req.provider,
                    state: TaskState::Processing,
                    created_at: now,
                    finished_at: None,
                    events: Vec::new(),
                    error: None,
                    error_read: false,
                };
                tasks.insert(&id, enc(&fresh).map_err(Cte::Abort)?)?;
                inbox.insert(&seq, &id)?;
                Ok(Reprocess::Queued)
            },
        )?;
        Ok(res)
    }

    /// Tasks, optionally filtered, newest first (admin listing).
    pub fn tasks(
        &self,
        state: Option<TaskState>,
        provider: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let mut out = Vec::new();
        for r in self.tasks.iter() {
            let t: TaskRecord = dec(&r?.1)?;
            if state.is_none_or(|s| s == t.state) && provider.is_none_or(|p| p == t.provider) {
                out.push(t);
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
        self.history
            .scan_prefix(joined(payment_id, &[]))
            .map(|r| dec(&r?.1))
            .collect()
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
            if now - d.seen_at >= r.dedupe_window {
                self.dedupe.remove(k)?;
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
        for kv in self.history.iter() {
            let (k, v) = kv?;
            let h: HistoryEntry = dec(&v)?;
            if now - h.received_at >= r.events {
                self.history.remove(k)?;
                p.history += 1;
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
