//! The one writer: rounds of queued operations, each round one sled
//! transaction and one group-commit ticket.
//!
//! An operation reads the trees through the round's [`Stage`] (so it sees
//! what earlier operations of the round wrote) and stages its writes. If
//! it fails half-way (a record that does not decode) its staged writes are
//! undone and only it answers with the error. After the commit the writer
//! hands new inbox entries to the work queue and answers every operation
//! with its result and the round's ticket; a failed commit answers all of
//! them with the error, writes nothing and raises the store's fatal error
//! (sled cannot write again without a reopen).

use std::collections::HashMap;
use std::sync::mpsc;

use ::sled::{IVec, Transactional};

use super::flush::GroupCommit;
use super::queue::WorkQueue;
pub(super) use super::stage::Stage;
use super::*;

pub(super) const TREES: usize = 15;
const REQUESTS: usize = 0;
const TASKS: usize = 1;
pub(super) const INBOX: usize = 2;
const DEDUPE: usize = 3;
const QUARANTINE: usize = 4;
const PAYMENTS: usize = 5;
const HISTORY: usize = 6;
const EVENTS: usize = 7;
const EVENT_IDS: usize = 8;
const META: usize = 9;
pub(super) const ENDPOINTS: usize = 10;
pub(super) const DELIVERIES: usize = 11;
pub(super) const LANES: usize = 12;
pub(super) const DUE: usize = 13;
pub(super) const ATTEMPTS: usize = 14;

/// `meta` key of the last id handed out (inbox order, feed positions, lane
/// positions, replay rounds), written with every round that handed one out.
pub(super) const ID_LAST: &[u8] = b"id_last";

/// Operations one round takes at most; the rest wait for the next round.
const ROUND_OPS: usize = 1024;
const QUARANTINE_KEEP: u64 = 1000;

/// The result of an operation and the ticket of the round that wrote it.
pub(super) type Reply<T> = tokio::sync::oneshot::Sender<(Result<T, StoreError>, u64)>;

pub(super) struct AcceptOp {
    pub request: Arc<RawRequest>,
    /// `request`, encoded by the caller (off the writer thread).
    pub value: Vec<u8>,
    pub doc: Option<Arc<serde_json::Value>>,
    pub dedupe_window_ms: i64,
    pub now: i64,
}

pub(super) enum Op {
    Accept(Box<AcceptOp>, Reply<Accepted>),
    Apply(Vec<Plan>, Reply<Vec<Applied>>),
    Register(Registration, Reply<Registered>),
    TakeError(Uuid, Reply<Option<TaskRecord>>),
    Reprocess(Uuid, i64, Reply<Reprocess>),
    Quarantine(Box<QuarantineRecord>, Reply<()>),
    Probe(i64, Reply<()>),
    /// Remove each key whose value is still the one given (retention).
    RemoveIf(Vec<(usize, Vec<u8>, IVec)>, Reply<usize>),
    /// Copy every tree into a new store at this path ([`super::backup`]).
    Backup(std::path::PathBuf, Reply<Backup>),
    /// The relay's verbs ([`super::relay_ops`]).
    Relay(super::relay_ops::RelayOp),
}

/// Answers an operation once the round is committed (None) or failed (Some).
pub(super) type Answer = Box<dyn FnOnce(Option<&str>, u64)>;

pub(super) struct Writer {
    all: [::sled::Tree; TREES],
    commit: Arc<GroupCommit>,
    queue: Arc<WorkQueue>,
    quarantine_seq: u64,
    /// Last event-feed position handed out (the group-commit mark).
    feed: u64,
    /// Every endpoint by merchant, as staged: the fan-out of an apply reads
    /// it, and only the writer changes endpoints, so it is exact.
    pub(super) endpoints: HashMap<String, Vec<EndpointRecord>>,
    /// Bumped after a committed round that touched deliveries or endpoints.
    pub(super) relay: Arc<tokio::sync::watch::Sender<u64>>,
    /// The last id handed out; committed to `meta` with the round that
    /// used it, so ids keep rising across restarts and into a restored
    /// backup (sled's own id counter is not part of the trees a backup copies).
    id_last: u64,
    /// The counts behind `Store::stats`, moved after each committed round.
    stats: Arc<super::stats::Counters>,
}

pub(super) fn answer<T: Send + 'static>(reply: Reply<T>, res: Result<T, StoreError>) -> Answer {
    Box::new(move |failed, ticket| {
        let res = match failed {
            Some(e) => Err(StoreError::Io(e.to_string())),
            None => res,
        };
        let _ = reply.send((res, ticket));
    })
}

impl Writer {
    pub fn new(
        db: ::sled::Db,
        t: Trees,
        commit: Arc<GroupCommit>,
        queue: Arc<WorkQueue>,
        relay: Arc<tokio::sync::watch::Sender<u64>>,
        stats: Arc<super::stats::Counters>,
    ) -> Result<Writer, StoreError> {
        let quarantine_seq = match t.quarantine.last()? {
            Some((k, _)) => u64_key(&k)? + 1,
            None => 0,
        };
        let id_last = match t.meta.get(ID_LAST)? {
            Some(v) => u64_key(&v)?,
            None => ids_in_use(&t, &db)?,
        };
        let mut endpoints: HashMap<String, Vec<EndpointRecord>> = HashMap::new();
        for v in t.endpoints.iter().values() {
            let e: EndpointRecord = dec(&v?)?;
            endpoints.entry(e.merchant_id.clone()).or_default().push(e);
        }
        Ok(Writer {
            stats,
            id_last,
            endpoints,
            relay,
            feed: commit.durable_mark(),
            all: t.all(),
            commit,
            queue,
            quarantine_seq,
        })
    }

    pub fn run(mut self, rx: mpsc::Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let mut ops = vec![first];
            while ops.len() < ROUND_OPS {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            self.round(ops);
        }
    }

    fn round(&mut self, ops: Vec<Op>) {
        let mut stage = Stage {
            maps: Default::default(),
            undo: Vec::new(),
        };
        let ids_before = self.id_last;
        let mut answers: Vec<Answer> = Vec::with_capacity(ops.len());
        let mut work = Vec::new();
        let (mut accepts, mut applies, mut relay, mut manage) = (false, false, false, false);
        for op in ops {
            use super::relay_ops::RelayOp as R;
            accepts |= matches!(op, Op::Accept(..));
            applies |= matches!(op, Op::Apply(..));
            relay |= matches!(op, Op::Relay(R::Attempt(..)));
            // The API's relay writes (config endpoints are synced before
            // serving, so that sync has no crash point of its own).
            manage |= matches!(
                op,
                Op::Relay(
                    R::Create(..) | R::Update(..) | R::Delete(..) | R::Retry(..) | R::Replay(..)
                )
            );
            stage.undo.clear();
            answers.push(self.execute(op, &mut stage, &mut work));
        }
        if accepts {
            crash_point("store::commit::accept");
        }
        if applies {
            crash_point("store::commit::apply");
        }
        if relay {
            crash_point("store::commit::relay");
        }
        if manage {
            crash_point("store::commit::manage");
        }
        if self.id_last != ids_before {
            stage.put(
                META,
                ID_LAST.to_vec(),
                Some(self.id_last.to_be_bytes().to_vec()),
            );
        }
        let touched_relay = [ENDPOINTS, DELIVERIES, DUE]
            .iter()
            .any(|&t| !stage.maps[t].is_empty());
        let counted = super::stats::Delta::of(&stage, &self.all);
        let failed = self.write(&stage).err().map(|e| e.to_string());
        let ticket = match &failed {
            None => {
                self.stats.add(counted);
                crash_point("store::committed");
                self.queue.offer(work);
                let t = self.commit.ticket(self.feed);
                if touched_relay {
                    self.relay.send_modify(|n| *n += 1);
                }
                t
            }
            Some(e) => {
                tracing::error!(error = %e, "store write failed; answering 503");
                // sled 0.34 refuses every later write after an I/O error.
                self.commit.fatal(&format!("store write failed: {e}"));
                0
            }
        };
        for a in answers {
            a(failed.as_deref(), ticket);
        }
    }

    /// Commit the round in one transaction.
    fn write(&self, stage: &Stage) -> Result<(), StoreError> {
        let batches: Vec<(usize, ::sled::Batch)> = stage
            .maps
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.is_empty())
            .map(|(i, m)| {
                let mut b = ::sled::Batch::default();
                for (k, v) in m {
                    match v {
                        Some(v) => b.insert(k.as_slice(), v.clone()),
                        None => b.remove(k.as_slice()),
                    }
                }
                (i, b)
            })
            .collect();
        if batches.is_empty() {
            return Ok(());
        }
        self.all[..]
            .transaction(|tx| {
                for (i, b) in &batches {
                    tx[*i].apply_batch(b)?;
                }
                Ok::<(), ::sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                ::sled::transaction::TransactionError::Storage(e) => StoreError::from(e),
                ::sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Io("transaction aborted".into())
                }
            })
    }

    fn execute(&mut self, op: Op, stage: &mut Stage, work: &mut Vec<Work>) -> Answer {
        let mark = stage.undo.len();
        macro_rules! run {
            ($reply:expr, $res:expr) => {{
                let res = $res;
                if res.is_err() {
                    stage.rollback(mark);
                }
                answer($reply, res)
            }};
        }
        match op {
            Op::Accept(a, reply) => run!(reply, self.accept(*a, stage, work)),
            Op::Apply(plans, reply) => run!(reply, self.apply(plans, stage)),
            Op::Register(r, reply) => run!(reply, self.register(r, stage)),
            Op::TakeError(id, reply) => run!(reply, self.take_error(id, stage)),
            Op::Reprocess(id, now, reply) => run!(reply, self.reprocess(id, now, stage, work)),
            Op::Quarantine(rec, reply) => run!(reply, self.quarantine(&rec, stage)),
            Op::Probe(now, reply) => {
                stage.put(META, b"probe".to_vec(), Some(now.to_be_bytes().to_vec()));
                answer(reply, Ok(()))
            }
            Op::RemoveIf(keys, reply) => run!(reply, self.remove_if(keys, stage)),
            Op::Backup(to, reply) => {
                // The copy is the trees as committed; ids staged this round
                // are covered by the in-memory count.
                let res = super::backup::copy(&self.all, &to, self.id_last);
                answer(reply, res)
            }
            Op::Relay(op) => self.relay_op(op, stage, mark),
        }
    }

    /// A fresh id, above every id this store (or the backup it was
    /// restored from) handed out.
    pub(super) fn next_id(&mut self) -> Result<u64, StoreError> {
        self.id_last += 1;
        Ok(self.id_last)
    }

    pub(super) fn get(
        &self,
        stage: &Stage,
        tree: usize,
        key: &[u8],
    ) -> Result<Option<IVec>, StoreError> {
        match stage.maps[tree].get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.all[tree].get(key)?),
        }
    }

    /// Up to `limit` entries of `tree` under `prefix`, in key order, as the
    /// round sees them (see [`Stage::scan`]).
    pub(super) fn scan(
        &self,
        stage: &Stage,
        tree: usize,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, IVec)>, StoreError> {
        stage.scan(&self.all[tree], tree, prefix, limit)
    }

    pub(super) fn get_dec<T: DeserializeOwned>(
        &self,
        stage: &Stage,
        tree: usize,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.get(stage, tree, key)?.map(|b| dec(&b)).transpose()
    }

    fn task_state(&self, stage: &Stage, id: Uuid) -> Result<Option<TaskState>, StoreError> {
        if let Some(t) = self.get_dec::<TaskRecord>(stage, TASKS, id.as_bytes())? {
            return Ok(Some(t.state));
        }
        Ok(self
            .get(stage, REQUESTS, id.as_bytes())?
            .map(|_| TaskState::Processing))
    }

    fn accept(
        &mut self,
        a: AcceptOp,
        stage: &mut Stage,
        work: &mut Vec<Work>,
    ) -> Result<Accepted, StoreError> {
        let r = &a.request;
        let dkey = joined(&r.provider, r.event_key.as_bytes());
        if let Some(prev) = self.get_dec::<DedupeRecord>(stage, DEDUPE, &dkey)? {
            // A dedupe hit only counts while its request is kept.
            let live = a.now.saturating_sub(prev.seen_at) < a.dedupe_window_ms
                && self
                    .get(stage, REQUESTS, prev.request_id.as_bytes())?
                    .is_some();
            if live {
                return Ok(Accepted::Duplicate {
                    request_id: prev.request_id,
                    state: self.task_state(stage, prev.request_id)?,
                });
            }
        }
        let dedupe = DedupeRecord {
            request_id: r.request_id,
            seen_at: a.now,
        };
        stage.put(DEDUPE, dkey, Some(enc(&dedupe)?));
        let id = r.request_id.as_bytes().to_vec();
        stage.put(REQUESTS, id.clone(), Some(a.value));
        let seq = self.next_id()?;
        stage.put(INBOX, seq.to_be_bytes().to_vec(), Some(id));
        work.push(Work {
            id: WorkId(seq),
            request: a.request,
            doc: a.doc,
        });
        Ok(Accepted::New)
    }

    fn apply(&mut self, plans: Vec<Plan>, stage: &mut Stage) -> Result<Vec<Applied>, StoreError> {
        let mut out = Vec::with_capacity(plans.len());
        for plan in plans {
            let mark = stage.undo.len();
            let inbox_key = plan.work().0.to_be_bytes();
            if self.get(stage, INBOX, &inbox_key)?.is_none() {
                out.push(Applied::AlreadyDone);
                continue;
            }
            let applied = match plan {
                Plan::Fail {
                    request_id,
                    error,
                    now,
                    ..
                } => {
                    self.end_task(stage, request_id, now, |t| {
                        t.state = TaskState::Error;
                        t.error = Some(error);
                    })?;
                    Applied::Done
                }
                Plan::Complete {
                    request_id,
                    events,
                    changes,
                    now,
                    ..
                } => {
                    if self.changes(stage, changes)? {
                        self.end_task(stage, request_id, now, |t| {
                            t.state = TaskState::Completed;
                            t.events = events;
                        })?;
                        Applied::Done
                    } else {
                        stage.rollback(mark);
                        out.push(Applied::Conflict);
                        continue;
                    }
                }
            };
            stage.put(INBOX, inbox_key.to_vec(), None);
            out.push(applied);
        }
        Ok(out)
    }

    /// Stage a plan's payment changes; false (and nothing to keep) if a
    /// payment is not at the version the plan was decided on.
    fn changes(
        &mut self,
        stage: &mut Stage,
        changes: Vec<PaymentChange>,
    ) -> Result<bool, StoreError> {
        for c in changes {
            let pkey = payment_key(&c.key);
            let current = self.get_dec::<PaymentRecord>(stage, PAYMENTS, &pkey)?;
            if current.as_ref().map_or(0, |r| r.version) != c.base_version {
                return Ok(false);
            }
            let mut rec = current.unwrap_or_else(|| PaymentRecord {
                payment_id: c.key.payment_id.clone(),
                merchant_id: c.key.merchant_id.clone(),
                provider: Some(c.provider.clone()),
                state: None,
                registered: false,
                registered_site_url: None,
                ipn_site_url: None,
                metadata: None,
                created_at: c.now,
                updated_at: c.now,
                version: 0,
            });
            if let Some(s) = c.state {
                rec.state = Some(s);
                rec.provider.get_or_insert_with(|| c.provider.clone());
            }
            if c.ipn_site_url.is_some() {
                rec.ipn_site_url = c.ipn_site_url;
            }
            rec.updated_at = c.now;
            let version = rec.version;
            rec.version += 1;
            stage.put(PAYMENTS, pkey, Some(enc(&rec)?));
            stage.put(
                HISTORY,
                history_key(&c.key, version),
                Some(enc(&c.history)?),
            );
            if let Some(ev) = &c.event {
                let ulid = event_ulid(&ev.event_id)
                    .ok_or_else(|| StoreError::Codec(format!("event id {:?}", ev.event_id)))?;
                let pos = self.next_id()?;
                self.feed = self.feed.max(pos);
                let fkey = joined(&c.key.merchant_id, &pos.to_be_bytes());
                stage.put(EVENTS, fkey, Some(enc(ev)?));
                stage.put(EVENT_IDS, ulid.to_vec(), Some(pos.to_be_bytes().to_vec()));
                self.fan_out(stage, ev, c.now)?;
            }
        }
        Ok(true)
    }

    /// End a request's task (if it is still processing).
    fn end_task(
        &self,
        stage: &mut Stage,
        id: Uuid,
        now: i64,
        set: impl FnOnce(&mut TaskRecord),
    ) -> Result<(), StoreError> {
        let mut t = match self.get_dec::<TaskRecord>(stage, TASKS, id.as_bytes())? {
            Some(t) => t,
            None => match self.get_dec::<RawRequest>(stage, REQUESTS, id.as_bytes())? {
                Some(r) => processing_task(&r),
                None => return Ok(()),
            },
        };
        if t.state == TaskState::Processing {
            set(&mut t);
            t.finished_at = Some(now);
            stage.put(TASKS, id.as_bytes().to_vec(), Some(enc(&t)?));
        }
        Ok(())
    }

    fn register(&mut self, r: Registration, stage: &mut Stage) -> Result<Registered, StoreError> {
        let pkey = payment_key(&r.key);
        let (rec, created) = match self.get_dec::<PaymentRecord>(stage, PAYMENTS, &pkey)? {
            Some(rec) if rec.registered => return Ok(Registered::AlreadyRegistered),
            Some(mut rec) => {
                rec.registered = true;
                rec.registered_site_url = r.site_url.or(rec.registered_site_url);
                rec.metadata = r.metadata.or(rec.metadata);
                if rec.provider.is_none() {
                    rec.provider = r.provider;
                }
                rec.updated_at = r.now;
                (rec, false)
            }
            None => (
                PaymentRecord {
                    payment_id: r.key.payment_id.clone(),
                    merchant_id: r.key.merchant_id.clone(),
                    provider: r.provider,
                    state: None,
                    registered: true,
                    registered_site_url: r.site_url,
                    ipn_site_url: None,
                    metadata: r.metadata,
                    created_at: r.now,
                    updated_at: r.now,
                    version: 0,
                },
                true,
            ),
        };
        stage.put(PAYMENTS, pkey, Some(enc(&rec)?));
        Ok(if created {
            Registered::Created(rec)
        } else {
            Registered::Updated(rec)
        })
    }

    fn take_error(&self, id: Uuid, stage: &mut Stage) -> Result<Option<TaskRecord>, StoreError> {
        let Some(mut t) = self.get_dec::<TaskRecord>(stage, TASKS, id.as_bytes())? else {
            return Ok(None);
        };
        if t.state != TaskState::Error || t.error_read {
            return Ok(None);
        }
        t.error_read = true;
        stage.put(TASKS, id.as_bytes().to_vec(), Some(enc(&t)?));
        Ok(Some(t))
    }

    fn reprocess(
        &mut self,
        id: Uuid,
        now: i64,
        stage: &mut Stage,
        work: &mut Vec<Work>,
    ) -> Result<Reprocess, StoreError> {
        let Some(req) = self.get_dec::<RawRequest>(stage, REQUESTS, id.as_bytes())? else {
            return Ok(Reprocess::NotFound);
        };
        // Accepting writes the inbox entry with the request, so a request
        // that is processing is in the inbox: only errors go back.
        let state = self.task_state(stage, id)?.unwrap_or(TaskState::Processing);
        if state != TaskState::Error {
            return Ok(Reprocess::NotInError(state));
        }
        let fresh = TaskRecord {
            created_at: now,
            ..processing_task(&req)
        };
        stage.put(TASKS, id.as_bytes().to_vec(), Some(enc(&fresh)?));
        let seq = self.next_id()?;
        stage.put(
            INBOX,
            seq.to_be_bytes().to_vec(),
            Some(id.as_bytes().to_vec()),
        );
        work.push(Work {
            id: WorkId(seq),
            request: Arc::new(req),
            doc: None,
        });
        Ok(Reprocess::Queued)
    }

    fn quarantine(&mut self, rec: &QuarantineRecord, stage: &mut Stage) -> Result<(), StoreError> {
        let seq = self.quarantine_seq;
        self.quarantine_seq += 1;
        stage.put(QUARANTINE, seq.to_be_bytes().to_vec(), Some(enc(rec)?));
        if let Some(old) = seq.checked_sub(QUARANTINE_KEEP) {
            stage.put(QUARANTINE, old.to_be_bytes().to_vec(), None);
        }
        Ok(())
    }

    fn remove_if(
        &self,
        keys: Vec<(usize, Vec<u8>, IVec)>,
        stage: &mut Stage,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for (tree, key, expected) in keys {
            if self.get(stage, tree, &key)?.as_ref() == Some(&expected) {
                stage.put(tree, key, None);
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Tree indexes for [`Op::RemoveIf`] callers.
pub(super) mod tree {
    pub const REQUESTS: usize = super::REQUESTS;
    pub const TASKS: usize = super::TASKS;
    pub const DEDUPE: usize = super::DEDUPE;
    pub const QUARANTINE: usize = super::QUARANTINE;
    pub const EVENTS: usize = super::EVENTS;
    pub const EVENT_IDS: usize = super::EVENT_IDS;
    pub const HISTORY: usize = super::HISTORY;
    pub const DELIVERIES: usize = super::DELIVERIES;
    pub const ATTEMPTS: usize = super::ATTEMPTS;
}

/// The highest id a store written before `id_last` existed has in use (once,
/// at the first open after the upgrade): inbox keys, feed positions, lane
/// positions, and sled's own counter.
fn ids_in_use(t: &Trees, db: &::sled::Db) -> Result<u64, StoreError> {
    let mut m = db.generate_id()?;
    if let Some((k, _)) = t.inbox.last()? {
        m = m.max(u64_key(&k)?);
    }
    for v in t.event_ids.iter().values() {
        m = m.max(u64_key(&v?)?);
    }
    for k in t.lanes.iter().keys() {
        m = m.max(u64_key(&k?)?);
    }
    for v in t.deliveries.iter().values() {
        let d: DeliveryRecord = dec(&v?)?;
        m = m.max(d.lane_pos);
    }
    Ok(m)
}
