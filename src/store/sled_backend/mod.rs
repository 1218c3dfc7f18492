//! The embedded backend: sled 0.34, one tree per concern, one writer thread.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `requests` | request_id (16 bytes) | [`RawRequest`] |
//! | `tasks` | request_id | [`TaskRecord`] (absent while first processing) |
//! | `inbox` | seq of its first entry (u64 BE) | up to 128 × (seq ‖ request_id): work not yet applied, one record per writer round ([`inbox`]; a 16-byte value is one entry of an earlier build) |
//! | `dedupe` | provider ‖ 0 ‖ event key (a request's, or a batch item's) | [`DedupeRecord`] |
//! | `quarantine` | seq (u64 BE) | [`QuarantineRecord`] (last 1000) |
//! | `payments` | merchant ‖ 0 ‖ payment_id | [`PaymentRecord`] |
//! | `history` | merchant ‖ 0 ‖ payment_id ‖ 0 ‖ version (u64 BE) | [`HistoryEntry`] |
//! | `events` | merchant ‖ 0 ‖ feed position (u64 BE) | [`EventRecord`] |
//! | `event_ids` | event ULID (16 bytes) | feed position (u64 BE) |
//! | `endpoints` | merchant ‖ 0 ‖ endpoint id | [`EndpointRecord`] |
//! | `deliveries` | delivery ULID (16 bytes) | [`DeliveryRecord`] |
//! | `lanes` | merchant ‖ 0 ‖ endpoint ‖ 0 ‖ payment ‖ 0 ‖ lane pos (u64 BE) | delivery ULID — pending only |
//! | `due` | merchant ‖ 0 ‖ endpoint ‖ 0 ‖ due at (ms, u64 BE) ‖ delivery ULID | empty — lane heads only |
//! | `attempts` | delivery ULID ‖ attempt n (u32 BE) | [`AttemptRecord`] |
//! | `deliveries_by_merchant` | merchant ‖ 0 ‖ delivery ULID | empty — a merchant's listing ([`by_merchant`]) |
//!
//! Big-endian numbers make scans come out in arrival / apply order;
//! merchant and payment ids hold no NUL, so the prefixes are unambiguous.
//!
//! **One writer.** Every write goes through one thread ([`writer`], with
//! the verbs in [`ingest_ops`] and [`relay_ops`]): it
//! takes every operation queued since its last round, computes each one's
//! writes against the trees plus what earlier operations of the round
//! staged, commits them all as one atomic write ([`commit`]: plain sled
//! writes behind an undo record that the next open rolls back if a crash
//! cut the round short; a sled transaction for a round with over 64 KiB of
//! before-images), and takes a group-commit ticket ([`flush`]). Callers
//! then wait for the flush that covers the ticket. With one writer no two
//! writes ever race, so no per-key locks are needed and read-check-write
//! (dedupe, versions) is exact.
//!
//! **Work hand-off.** The writer appends each new inbox entry to an
//! in-memory queue ([`queue`]) in commit order; the processor takes work
//! from there and reads the inbox from disk only after open or when the
//! queue overflowed. The inbox stays the truth: a plan applies only while
//! its inbox entry exists.

mod backup;
mod by_merchant;
mod codec;
mod commit;
mod flush;
mod inbox;
mod ingest_ops;
mod queue;
mod reads;
mod relay_ops;
mod relay_reads;
mod retention;
mod stage;
mod stats;
mod writer;

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::*;
use codec::*;
use relay_ops::RelayOp;

const FORMAT: u8 = 1;

/// How long a feed read waits for the flush of events it found committed.
const FEED_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The trees, in the order the writer stages them.
#[derive(Clone)]
struct Trees {
    requests: ::sled::Tree,
    tasks: ::sled::Tree,
    inbox: ::sled::Tree,
    dedupe: ::sled::Tree,
    quarantine: ::sled::Tree,
    payments: ::sled::Tree,
    history: ::sled::Tree,
    events: ::sled::Tree,
    event_ids: ::sled::Tree,
    meta: ::sled::Tree,
    endpoints: ::sled::Tree,
    deliveries: ::sled::Tree,
    lanes: ::sled::Tree,
    due: ::sled::Tree,
    attempts: ::sled::Tree,
    by_merchant: ::sled::Tree,
}

impl Trees {
    fn open(db: &::sled::Db) -> Result<Trees, StoreError> {
        Ok(Trees {
            requests: db.open_tree("requests")?,
            tasks: db.open_tree("tasks")?,
            inbox: db.open_tree("inbox")?,
            dedupe: db.open_tree("dedupe")?,
            quarantine: db.open_tree("quarantine")?,
            payments: db.open_tree("payments")?,
            history: db.open_tree("history")?,
            events: db.open_tree("events")?,
            event_ids: db.open_tree("event_ids")?,
            meta: db.open_tree("meta")?,
            endpoints: db.open_tree("endpoints")?,
            deliveries: db.open_tree("deliveries")?,
            lanes: db.open_tree("lanes")?,
            due: db.open_tree("due")?,
            attempts: db.open_tree("attempts")?,
            by_merchant: db.open_tree("deliveries_by_merchant")?,
        })
    }

    fn all(&self) -> [::sled::Tree; writer::TREES] {
        [
            self.requests.clone(),
            self.tasks.clone(),
            self.inbox.clone(),
            self.dedupe.clone(),
            self.quarantine.clone(),
            self.payments.clone(),
            self.history.clone(),
            self.events.clone(),
            self.event_ids.clone(),
            self.meta.clone(),
            self.endpoints.clone(),
            self.deliveries.clone(),
            self.lanes.clone(),
            self.due.clone(),
            self.attempts.clone(),
            self.by_merchant.clone(),
        ]
    }
}

/// Options the backend takes from the config.
#[derive(Debug, Clone, Copy)]
pub struct SledOptions {
    /// Wait for the fsync before a write verb returns (`durability = "sync"`).
    pub sync: bool,
}

pub struct SledStore {
    trees: Trees,
    ops: Mutex<Option<mpsc::Sender<writer::Op>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    commit: Arc<flush::GroupCommit>,
    queue: Arc<queue::WorkQueue>,
    sync: bool,
    relay: tokio::sync::watch::Receiver<u64>,
    db: ::sled::Db,
    stats: Arc<stats::Counters>,
}

/// sled's lock on the data dir is held by another process: say so in one
/// line (sled reports it as an I/O error "could not acquire lock …").
fn open_error(path: &Path, e: ::sled::Error) -> StoreError {
    match &e {
        ::sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock") =>
        {
            StoreError::Open(format!("another ipn-relay is using {}", path.display()))
        }
        _ => StoreError::from(e),
    }
}

impl SledStore {
    /// Opens (or creates) the store at `path`. A data dir another process
    /// has open is [`StoreError::Open`] "another ipn-relay is using <path>".
    pub fn open(path: &Path, opts: SledOptions) -> Result<SledStore, StoreError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
        let db = ::sled::Config::new()
            .path(path)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| open_error(path, e))?;
        let trees = Trees::open(&db)?;
        commit::recover(&trees.all())?;
        by_merchant::build_if_missing(&trees)?;
        // Every id handed out so far is on disk: the durable mark (the last
        // feed position) starts there. (Not the position of the highest event
        // id: ids sort by arrival, positions by apply.)
        let id_last = writer::last_id(&trees, &db)?;
        let commit = Arc::new(
            flush::GroupCommit::start(db.clone(), path, id_last)
                .map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?,
        );
        let queue = Arc::new(queue::WorkQueue::new());
        let (tx, rx) = mpsc::channel();
        let (relay_tx, relay) = tokio::sync::watch::channel(0u64);
        let stats = Arc::new(stats::Counters::open(&trees)?);
        let w = writer::Writer::new(
            trees.clone(),
            commit.clone(),
            queue.clone(),
            Arc::new(relay_tx),
            stats.clone(),
            id_last,
        )?;
        let handle = std::thread::Builder::new()
            .name("ipn-relay-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| StoreError::Open(e.to_string()))?;
        Ok(SledStore {
            trees,
            ops: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            commit,
            queue,
            sync: opts.sync,
            relay,
            db,
            stats,
        })
    }

    /// Send an operation to the writer and wait for its committed result
    /// (and, if `durable`, for the flush covering it).
    async fn write<T>(
        &self,
        durable: bool,
        make: impl FnOnce(writer::Reply<T>) -> writer::Op,
    ) -> Result<T, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
            let ops = ops.as_ref().ok_or(StoreError::Closed)?;
            ops.send(make(tx)).map_err(|_| StoreError::Closed)?;
        }
        let (res, ticket) = rx.await.map_err(|_| StoreError::Closed)?;
        let v = res?;
        if durable {
            self.commit.wait(ticket).await?;
        }
        Ok(v)
    }
}

impl SledStore {
    async fn relay_write<T>(
        &self,
        durable: bool,
        make: impl FnOnce(writer::Reply<T>) -> RelayOp,
    ) -> Result<T, StoreError> {
        self.write(durable, |r| writer::Op::Relay(make(r))).await
    }
}

#[async_trait]
impl Store for SledStore {
    async fn accept(&self, ipn: NewIpn, now: i64) -> Result<Accepted, StoreError> {
        let id = ipn.request.request_id;
        let value = enc(&ipn.request)?;
        let op = writer::AcceptOp {
            request: Arc::new(ipn.request),
            value,
            doc: ipn.doc.map(Arc::new),
            dedupe_window_ms: ipn.dedupe_window_ms,
            item_keys: ipn.item_keys,
            now,
        };
        let res = self
            .write(self.sync, |reply| writer::Op::Accept(Box::new(op), reply))
            .await;
        if res.is_err() {
            tracing::debug!(request_id = %id, "accept failed");
        }
        res
    }

    async fn event_owner(
        &self,
        provider: &str,
        event_key: &str,
        now: i64,
        window_ms: i64,
    ) -> Result<Option<Uuid>, StoreError> {
        reads::event_owner(&self.trees, provider, event_key, now, window_ms)
    }

    async fn next_work(&self, limit: usize, wait: Duration) -> Result<Vec<Work>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.queue.notified();
            let got = self.queue.take(&self.trees, limit)?;
            if !got.is_empty() {
                return Ok(got);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }

    async fn apply(&self, plans: Vec<Plan>) -> Result<Vec<Applied>, StoreError> {
        self.write(false, |reply| writer::Op::Apply(plans, reply))
            .await
    }

    async fn payment(&self, key: &PaymentKey) -> Result<Option<PaymentRecord>, StoreError> {
        reads::payment(&self.trees, key)
    }

    async fn history(
        &self,
        key: &PaymentKey,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        reads::history(&self.trees, key, limit)
    }

    async fn events(
        &self,
        merchant_id: &str,
        payment_id: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Result<Vec<EventRecord>, UnknownCursor>, StoreError> {
        let found = match reads::events(&self.trees, merchant_id, payment_id, after, limit)? {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        // Only durable events are listed, so a cursor never passes an event a
        // crash could take back. Read your writes: an event that is committed
        // (a task result may already name it) is waited for (the flush in
        // progress and at most one more) rather than left out. Should the flush fail (the
        // service is going down), what is durable is listed.
        let last = found.last().map_or(0, |(pos, _)| *pos);
        let upto = self.commit.wait_mark(last, FEED_FLUSH_WAIT).await;
        Ok(Ok(found
            .into_iter()
            .take_while(|(pos, _)| *pos <= upto)
            .map(|(_, ev)| ev)
            .collect()))
    }

    async fn register_payment(&self, reg: Registration) -> Result<Registered, StoreError> {
        self.write(self.sync, |reply| writer::Op::Register(reg, reply))
            .await
    }

    async fn task(&self, id: Uuid) -> Result<Option<TaskRecord>, StoreError> {
        reads::task(&self.trees, id)
    }

    async fn request(&self, id: Uuid) -> Result<Option<RawRequest>, StoreError> {
        reads::request(&self.trees, id)
    }

    async fn take_error(&self, id: Uuid) -> Result<Option<TaskRecord>, StoreError> {
        self.write(self.sync, |reply| writer::Op::TakeError(id, reply))
            .await
    }

    async fn reprocess(&self, id: Uuid, now: i64) -> Result<Reprocess, StoreError> {
        self.write(self.sync, |reply| writer::Op::Reprocess(id, now, reply))
            .await
    }

    async fn tasks(
        &self,
        state: Option<TaskState>,
        provider: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        reads::tasks(&self.trees, state, provider, limit)
    }

    async fn quarantine(&self, rec: QuarantineRecord) -> Result<(), StoreError> {
        self.write(false, |reply| writer::Op::Quarantine(Box::new(rec), reply))
            .await
    }

    async fn quarantined(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError> {
        reads::quarantined(&self.trees, limit)
    }

    async fn probe(&self, now: i64) -> Result<(), StoreError> {
        self.write(true, |reply| writer::Op::Probe(now, reply))
            .await
    }

    async fn purge_expired(&self, now: i64, r: RetentionMs) -> Result<Purged, StoreError> {
        self.purge(now, r).await
    }

    fn acks_waiting(&self) -> bool {
        self.commit.busy()
    }

    fn backlog(&self) -> u64 {
        self.stats.inbox_depth()
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        Ok(self.stats.snapshot(self.db.size_on_disk()?))
    }

    async fn sync_config_endpoints(&self, eps: Vec<EndpointRecord>) -> Result<(), StoreError> {
        self.relay_write(true, |r| RelayOp::SyncConfig(eps, r))
            .await
    }

    async fn create_endpoint(&self, ep: EndpointRecord) -> Result<bool, StoreError> {
        self.relay_write(self.sync, |r| RelayOp::Create(Box::new(ep), r))
            .await
    }

    async fn endpoint(
        &self,
        merchant_id: &str,
        id: &str,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        relay_reads::endpoint(&self.trees, merchant_id, id)
    }

    async fn endpoints(
        &self,
        merchant_id: Option<&str>,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        relay_reads::endpoints(&self.trees, merchant_id)
    }

    async fn update_endpoint(
        &self,
        merchant_id: &str,
        id: &str,
        u: EndpointUpdate,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let (m, id) = (merchant_id.to_string(), id.to_string());
        self.relay_write(self.sync, |r| RelayOp::Update(m, id, Box::new(u), r))
            .await
    }

    async fn delete_endpoint(&self, merchant_id: &str, id: &str) -> Result<bool, StoreError> {
        let (m, id) = (merchant_id.to_string(), id.to_string());
        self.relay_write(self.sync, |r| RelayOp::Delete(m, id, r))
            .await
    }

    async fn due_deliveries(
        &self,
        merchant_id: &str,
        endpoint_id: &str,
        now: i64,
        limit: usize,
        skip: &[String],
    ) -> Result<Due, StoreError> {
        let due = relay_reads::due(&self.trees, merchant_id, endpoint_id, now, limit, skip)?;
        if self.sync {
            // Send only what a crash cannot take back: the flush covering
            // every round begun before this point (so every write the read
            // could have seen, one of a round still writing included).
            self.commit.wait(self.commit.started()).await?;
        }
        Ok(due)
    }

    async fn record_attempt(&self, r: AttemptResult) -> Result<(), StoreError> {
        self.relay_write(false, |reply| RelayOp::Attempt(Box::new(r), reply))
            .await
    }

    async fn deliveries(&self, f: DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError> {
        relay_reads::deliveries(&self.trees, &f)
    }

    async fn delivery(
        &self,
        id: &str,
    ) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>, StoreError> {
        relay_reads::delivery(&self.trees, id)
    }

    async fn retry_delivery(
        &self,
        merchant_id: Option<&str>,
        id: &str,
        now: i64,
    ) -> Result<Retried, StoreError> {
        let (m, id) = (merchant_id.map(str::to_string), id.to_string());
        self.relay_write(self.sync, |r| RelayOp::Retry(m, id, now, r))
            .await
    }

    async fn replay(
        &self,
        merchant_id: &str,
        endpoint_id: &str,
        range: (i64, i64),
        limit: usize,
        now: i64,
    ) -> Result<Option<Replayed>, StoreError> {
        let Some(ep) = relay_reads::endpoint(&self.trees, merchant_id, endpoint_id)? else {
            return Ok(None);
        };
        // The feed is read here, off the writer, so a long one delays
        // nobody else's writes; the writer reads each picked event again.
        let trees = self.trees.clone();
        let picked = tokio::task::spawn_blocking(move || {
            relay_reads::replay_picks(&trees, &ep.merchant_id, &ep.events, range, limit)
        })
        .await
        .map_err(|e| StoreError::Io(format!("replay read: {e}")))??;
        let Some(events) = picked else {
            return Ok(Some(Replayed::TooMany));
        };
        let op = relay_ops::ReplayOp {
            merchant_id: merchant_id.to_string(),
            endpoint_id: endpoint_id.to_string(),
            events,
            now,
        };
        let n = self
            .relay_write(self.sync, |r| RelayOp::Replay(Box::new(op), r))
            .await?;
        Ok(n.map(Replayed::Enqueued))
    }

    fn relay_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.relay.clone()
    }

    async fn backup(&self, to: &Path) -> Result<Backup, StoreError> {
        let to = to.to_path_buf();
        self.write(false, |r| writer::Op::Backup(to, r)).await
    }

    async fn failed(&self) -> String {
        self.commit.failed().await
    }

    fn close(&self) {
        // Closing the channel ends the writer once it drained what is queued.
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
        self.commit.stop();
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
/// Open the store at `path`, waiting (at most 5 s) while an instance a
/// test closed a moment ago still holds sled's file lock: its last log
/// write may still be finishing on sled's I/O pool, which keeps the file
/// open until that job ends.
pub(crate) fn reopen(path: &std::path::Path, opts: SledOptions) -> SledStore {
    open_when_unlocked(
        path,
        || SledStore::open(path, opts),
        |e| matches!(e, StoreError::Open(e) if e.contains("another ipn-relay is using")),
    )
}

#[cfg(test)]
/// `open()` once it succeeds, retried every 10 ms for at most 5 s while
/// `locked` says its error is a file lock still held (see [`reopen`]).
pub(super) fn open_when_unlocked<T, E: std::fmt::Display>(
    path: &std::path::Path,
    mut open: impl FnMut() -> Result<T, E>,
    locked: impl Fn(&E) -> bool,
) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match open() {
            Ok(s) => return s,
            Err(e) if locked(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("open {}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests;
