//! The one writer: rounds of queued operations, each round one write that
//! a crash leaves whole or absent ([`super::commit`]) and one group-commit
//! ticket. The verbs live in
//! [`super::ingest_ops`] and [`super::relay_ops`]; the probe and the backup
//! run here.
//!
//! An operation reads the trees through the round's [`Stage`] (so it sees
//! what earlier operations of the round wrote) and stages its writes. If
//! it fails half-way (a record that does not decode) its staged writes are
//! undone and only it answers with the error. After the commit the writer
//! hands new inbox entries to the work queue and answers every operation
//! with its result and the round's ticket; a failed commit answers all of
//! them with the error and raises the store's fatal error (the process
//! stops); it may have written part of the round, which the next open
//! rolls back, so from then on every round fails without writing.
//!
//! Crash points (tests only, [`super::crash_point`]): before the commit, a
//! round passes one for each kind of write it holds —
//! `store::commit::accept`, `store::commit::apply`, `store::commit::relay`
//! (attempt results), `store::commit::manage` (the API's relay writes) and
//! `store::commit::retention` (retention's removals) — and after it
//! `store::committed`.

use std::collections::HashMap;
use std::sync::mpsc;

use ::sled::IVec;

use super::flush::GroupCommit;
use super::queue::WorkQueue;
pub(super) use super::stage::Stage;
use super::*;

pub(super) const TREES: usize = 16;
pub(super) const REQUESTS: usize = 0;
pub(super) const TASKS: usize = 1;
pub(super) const INBOX: usize = 2;
pub(super) const DEDUPE: usize = 3;
pub(super) const QUARANTINE: usize = 4;
pub(super) const PAYMENTS: usize = 5;
pub(super) const HISTORY: usize = 6;
pub(super) const EVENTS: usize = 7;
pub(super) const EVENT_IDS: usize = 8;
pub(super) const META: usize = 9;
pub(super) const ENDPOINTS: usize = 10;
pub(super) const DELIVERIES: usize = 11;
pub(super) const LANES: usize = 12;
pub(super) const DUE: usize = 13;
pub(super) const ATTEMPTS: usize = 14;
/// The `deliveries_by_merchant` index ([`super::by_merchant`]).
pub(super) const BY_MERCHANT: usize = 15;

/// `meta` key of the last id handed out (inbox order, feed positions, lane
/// positions, replay rounds), written with every round that handed one out.
pub(super) const ID_LAST: &[u8] = b"id_last";

/// Operations one round takes at most; the rest wait for the next round.
const ROUND_OPS: usize = 1024;
pub(super) const QUARANTINE_KEEP: u64 = 1000;

/// The result of an operation and the ticket of the round that wrote it.
pub(super) type Reply<T> = tokio::sync::oneshot::Sender<(Result<T, StoreError>, u64)>;

pub(super) struct AcceptOp {
    pub request: Arc<RawRequest>,
    /// `request`, encoded by the caller (off the writer thread).
    pub value: Vec<u8>,
    pub doc: Option<Arc<serde_json::Value>>,
    pub dedupe_window_ms: i64,
    pub item_keys: Vec<String>,
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
    pub(super) quarantine_seq: u64,
    /// Last event-feed position handed out (the group-commit mark).
    pub(super) feed: u64,
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
    /// This round's inbox record ([`super::inbox`]), once it has one.
    pub(super) inbox_slot: Option<u64>,
    /// Set by the first failed write: every later round fails unwritten.
    broken: Option<String>,
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
        t: Trees,
        commit: Arc<GroupCommit>,
        queue: Arc<WorkQueue>,
        relay: Arc<tokio::sync::watch::Sender<u64>>,
        stats: Arc<super::stats::Counters>,
        id_last: u64,
    ) -> Result<Writer, StoreError> {
        let quarantine_seq = match t.quarantine.last()? {
            Some((k, _)) => u64_key(&k)? + 1,
            None => 0,
        };
        let mut endpoints: HashMap<String, Vec<EndpointRecord>> = HashMap::new();
        for v in t.endpoints.iter().values() {
            let e: EndpointRecord = dec(&v?)?;
            endpoints.entry(e.merchant_id.clone()).or_default().push(e);
        }
        Ok(Writer {
            stats,
            id_last,
            inbox_slot: None,
            broken: None,
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

    pub(super) fn round(&mut self, ops: Vec<Op>) {
        let mut stage = Stage {
            maps: Default::default(),
            undo: Vec::new(),
        };
        let ids_before = self.id_last;
        self.inbox_slot = None;
        let mut answers: Vec<Answer> = Vec::with_capacity(ops.len());
        let mut work = Vec::new();
        let (mut accepts, mut applies, mut relay, mut manage) = (false, false, false, false);
        let mut retention = false;
        for op in ops {
            use super::relay_ops::RelayOp as R;
            accepts |= matches!(op, Op::Accept(..));
            applies |= matches!(op, Op::Apply(..));
            relay |= matches!(op, Op::Relay(R::Attempt(..)));
            // Retention's removals (the janitor, `POST /v1/admin/purge`).
            retention |= matches!(op, Op::RemoveIf(..));
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
        if retention {
            crash_point("store::commit::retention");
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
        // Read once: the undo record and the stats' deltas both need them.
        let befores = super::commit::before_images(&self.all, &stage);
        let counted = match &befores {
            Ok(b) => super::stats::Delta::of(&stage, b),
            Err(_) => super::stats::Delta::default(),
        };
        // A panic from here to the ticket would leave `started` ahead of
        // every ticket: readers waiting for it would wait forever.
        let _fatal_on_panic = FatalOnPanic(&self.commit);
        self.commit.begin();
        let failed = match &self.broken {
            // Nothing more is written once a write failed: the next open
            // rolls the failed round back ([`super::commit`]).
            Some(e) => Some(e.clone()),
            None => befores
                .and_then(|b| super::commit::write(&self.all, &stage, &b))
                .err()
                .map(|e| e.to_string()),
        };
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
                if self.broken.is_none() {
                    tracing::error!(error = %e, "store write failed; answering 503");
                    self.commit.fatal(&format!("store write failed: {e}"));
                    self.broken = Some(format!("an earlier store write failed: {e}"));
                }
                0
            }
        };
        for a in answers {
            a(failed.as_deref(), ticket);
        }
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
}

/// Raises the store's fatal error if the writer panics while it lives, so
/// nobody waits for a ticket the round will never take.
struct FatalOnPanic<'a>(&'a GroupCommit);

impl Drop for FatalOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fatal("the store's writer thread panicked");
        }
    }
}

/// A failed sled transaction (ours never abort) as a store error.
pub(super) fn tx_error(e: ::sled::transaction::TransactionError<()>) -> StoreError {
    match e {
        ::sled::transaction::TransactionError::Storage(e) => StoreError::from(e),
        ::sled::transaction::TransactionError::Abort(()) => {
            StoreError::Io("transaction aborted".into())
        }
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
    pub const BY_MERCHANT: usize = super::BY_MERCHANT;
}

/// The last id handed out (at open): `id_last` in `meta`, or for a store
/// written before that key existed, the highest id it has in use.
pub(super) fn last_id(t: &Trees, db: &::sled::Db) -> Result<u64, StoreError> {
    match t.meta.get(ID_LAST)? {
        Some(v) => u64_key(&v),
        None => ids_in_use(t, db),
    }
}

/// The highest id a store written before `id_last` existed has in use (once,
/// at the first open after the upgrade): inbox keys, feed positions, lane
/// positions, and sled's own counter. (Such a store's inbox has one key
/// per entry; [`super::inbox::last_seq`] reads either layout.)
fn ids_in_use(t: &Trees, db: &::sled::Db) -> Result<u64, StoreError> {
    let mut m = db.generate_id()?;
    if let Some(seq) = super::inbox::last_seq(t)? {
        m = m.max(seq);
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
