//! The store interface: every verb the processor and the HTTP layer use,
//! in domain terms. Callers see records, plans and [`WorkId`]s, never
//! trees, tickets, cursors or key encodings; the embedded backend is sled
//! ([`sled_backend::SledStore`]), and a PostgreSQL backend can implement the same
//! trait and run the same conformance suite (`src/store/conformance/`, tests only).
//!
//! ## Commit scheme: one atomic write per logical change
//!
//! | verb | what it writes, atomically |
//! |---|---|
//! | [`Store::accept`] | dedupe key (and a batch's item keys not seen yet), raw request, its (implicit `processing`) task, inbox entry |
//! | [`Store::apply`] | per plan: payment state, history entries, events, one delivery per matching endpoint, the task result, inbox removal |
//! | [`Store::record_attempt`] | the attempt, the delivery's next state, its due entry, and the lane's next head when it leaves the lane |
//! | endpoint verbs, [`Store::retry_delivery`], [`Store::replay`] | their records, lanes and due entries (replay: at most `limit` events, picked by a read before the write) |
//! | [`Store::register_payment`], [`Store::take_error`], [`Store::reprocess`], [`Store::quarantine`] | their one record (reprocess: task reset + inbox entry) |
//! | [`Store::purge_expired`] | per chunk of about 1000 keys (a delivery's attempts stay in its chunk): each key that still holds the value retention read (a request only once its task is gone) |
//!
//! So every crash point is harmless by construction: after a restart each
//! change is there whole or not at all. An accepted IPN whose inbox entry is
//! there is processed; one that is not was never acknowledged. A plan whose
//! inbox entry is gone was applied already (`Applied::AlreadyDone`), and one
//! decided on a payment that moved since is refused (`Applied::Conflict`),
//! so no double apply is possible even when work is handed out twice.
//! Event ids are derived from (request, item) ([`event_id`]), so a request
//! that is re-applied after a crash names its events the same.
//!
//! The status rule is not in the store: the processor reads, decides
//! (pure), and hands the store a [`Plan`] to apply.
//!
//! ## Durability
//!
//! With `durability = "sync"`, `accept` and the other request-facing write
//! verbs return only when their write is fsynced. `apply` returns once its
//! write is committed; the events it wrote become visible to
//! [`Store::events`] only once they are durable, so nobody reads an event
//! that a crash could take back (a read waits for that flush rather than
//! leave a committed event out).
//!
//! ## Write errors
//!
//! sled 0.34 latches the first I/O error of its log (`Config::global_error`)
//! and refuses every later write until the database is reopened, so the sled
//! backend treats a failed commit or group flush as fatal: the callers get
//! `StoreError`s (503), and [`Store::failed`] resolves so the process exits
//! non-zero and is restarted, never staying alive answering 503 forever.
//! Running out of disk space is kept from getting there by [`space`].
//!
//! ## Mapping onto PostgreSQL (a later backend)
//!
//! - `accept`: one transaction: `INSERT … ON CONFLICT DO NOTHING` into
//!   `dedupe (provider, event_key)` (a batch's item keys likewise, each kept
//!   only if new; `event_owner` is a `SELECT` on it), then, if new,
//!   `requests` and `inbox (id bigserial, request_id)`; commit
//!   (synchronous_commit on) before the ack.
//! - `next_work`: `SELECT … FROM inbox WHERE lease_until < now() ORDER BY id
//!   LIMIT n FOR UPDATE SKIP LOCKED`, setting a lease; several nodes share the
//!   inbox. Per-payment order across nodes: a node claims the inbox rows of
//!   a payment together (`pg_advisory_xact_lock(hash(payment_id))` while
//!   claiming), so one payment's requests are in flight on one node at a time.
//! - `apply`: one transaction per call: for each plan, `DELETE FROM inbox
//!   WHERE id = $work RETURNING 1` (none: `AlreadyDone`), `SELECT version FROM
//!   payments … FOR UPDATE` and compare with the plan (`Conflict`: roll back
//!   that plan's savepoint), then `INSERT` history/events/task result and
//!   `UPDATE payments`.
//! - deliveries: `apply` inserts them in its transaction; `due_deliveries`
//!   is `SELECT … FROM deliveries WHERE endpoint = $1 AND lane head AND
//!   due_at <= now() AND lease_until < now() ORDER BY due_at LIMIT n FOR
//!   UPDATE SKIP LOCKED`, setting a lease (the sled backend needs none: one
//!   process, and the dispatcher tracks what it has in flight);
//!   `record_attempt` is one transaction that also clears the lease;
//!   `replay` selects the matching events outside the transaction, then
//!   inserts their deliveries in one.
//! - `backlog` is synchronous and read on every processor pass: a count
//!   the node refreshes in the background (`SELECT count(*) FROM inbox`
//!   every second or so) is enough, as it only steers the acks-first hold.
//! - reads are plain `SELECT`s scoped by merchant; the event feed orders by
//!   a `bigserial` assigned at insert and shows rows of committed
//!   transactions only.

#[cfg(test)]
mod conformance;
pub mod records;
pub mod relay;
pub mod sled_backend;
pub mod space;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use ulid::Ulid;
use uuid::Uuid;

use crate::domain::rule::PaymentState;
pub use records::*;
pub use relay::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O: {0}")]
    Io(String),
    #[error("store record could not be decoded: {0}")]
    Codec(String),
    #[error("store flush failed")]
    Flush,
    #[error("cannot open store: {0}")]
    Open(String),
    #[error("the store is shutting down")]
    Closed,
}

/// A place in the inbox: arrival order (`seq`, unique, rising), and where a
/// backend keeps the entry (`slot`: the sled backend's inbox record that
/// holds it; a backend with one row per entry sets it to `seq`). Callers
/// order and compare by `seq` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkId {
    pub seq: u64,
    pub slot: u64,
}

impl WorkId {
    /// An entry kept in its own slot.
    pub fn single(seq: u64) -> WorkId {
        WorkId { seq, slot: seq }
    }
}

/// An authenticated IPN to accept.
#[derive(Debug, Clone)]
pub struct NewIpn {
    pub request: RawRequest,
    /// Its body as the ingest parsed it, handed to the processor with it.
    pub doc: Option<serde_json::Value>,
    /// `retention.dedupe_window` in milliseconds.
    pub dedupe_window_ms: i64,
    /// A batch's item keys ([`crate::mapping::Mapping::event_keys_of`]):
    /// each one not yet seen within the window is kept naming this request
    /// too, so a later request repeating an item is known (a single one is
    /// a duplicate; a batch's repeated item is skipped when processed).
    pub item_keys: Vec<String>,
}

/// Result of [`Store::accept`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    New,
    /// Seen within the dedupe window: answer with the original request.
    Duplicate {
        request_id: Uuid,
        state: Option<TaskState>,
    },
}

/// One accepted request to process, in arrival order.
#[derive(Debug, Clone)]
pub struct Work {
    pub id: WorkId,
    pub request: Arc<RawRequest>,
    pub doc: Option<Arc<serde_json::Value>>,
}

/// What one processed request does, decided by the processor.
#[derive(Debug, Clone)]
pub enum Plan {
    /// The task ends `completed` with these results.
    Complete {
        work: WorkId,
        /// The request (its task record is made from it when it has none).
        request: Arc<RawRequest>,
        events: Vec<TaskEvent>,
        changes: Vec<PaymentChange>,
        now: i64,
    },
    Fail {
        work: WorkId,
        request: Arc<RawRequest>,
        error: TaskError,
        now: i64,
    },
}

impl Plan {
    pub fn work(&self) -> WorkId {
        match self {
            Plan::Complete { work, .. } | Plan::Fail { work, .. } => *work,
        }
    }
}

/// One candidate event's effect on one payment.
#[derive(Debug, Clone)]
pub struct PaymentChange {
    pub key: PaymentKey,
    /// The payment's version the decision was made on (0: no record yet).
    pub base_version: u64,
    pub provider: String,
    /// The new state when the change was applied; None for duplicate/stale.
    pub state: Option<PaymentState>,
    pub ipn_site_url: Option<String>,
    pub history: HistoryEntry,
    pub event: Option<EventRecord>,
    pub now: i64,
}

/// Result of one plan in [`Store::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// Its inbox entry is gone: applied before (nothing written now).
    AlreadyDone,
    /// A payment it names moved since the decision: nothing written; decide again.
    Conflict,
}

/// A payment registration (`POST /v1/payments`).
#[derive(Debug, Clone)]
pub struct Registration {
    pub key: PaymentKey,
    pub provider: Option<String>,
    pub site_url: Option<String>,
    pub metadata: Option<String>,
    pub now: i64,
}

/// Outcome of [`Store::register_payment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    Created(PaymentRecord),
    /// An IPN had created the record; now it is registered too.
    Updated(PaymentRecord),
    /// This merchant registered this payment id before.
    AlreadyRegistered,
}

/// Outcome of [`Store::reprocess`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reprocess {
    Queued,
    NotFound,
    NotInError(TaskState),
}

/// Outcome of [`Store::events`] with a cursor that names no event of the merchant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownCursor;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub dedupe: usize,
    pub requests: usize,
    pub quarantine: usize,
    pub events: usize,
    pub history: usize,
    pub deliveries: usize,
}

/// Retention limits in milliseconds, for [`Store::purge_expired`].
#[derive(Debug, Clone, Copy)]
pub struct RetentionMs {
    pub dedupe_window: i64,
    pub events: i64,
}

impl RetentionMs {
    /// The limits of `[retention]`.
    pub fn of(r: &crate::config::RetentionSettings) -> RetentionMs {
        RetentionMs {
            dedupe_window: r.dedupe_window.as_millis() as i64,
            events: r.events.as_millis() as i64,
        }
    }
}

/// The deterministic id of the event that item `idx` of request
/// `request_id` (received at `received_at`, unix ms) applies: a ULID whose
/// time is the arrival and whose random part is a hash of (request, item).
pub fn event_id(request_id: Uuid, idx: usize, received_at: i64) -> String {
    let mut h = Sha256::new();
    h.update(request_id.as_bytes());
    h.update((idx as u64).to_be_bytes());
    let d = h.finalize();
    let mut r = [0u8; 16];
    r[6..].copy_from_slice(&d[..10]);
    let rand = u128::from_be_bytes(r);
    let ulid = Ulid::from_parts(received_at.max(0) as u64, rand);
    format!("evt_{ulid}")
}

/// The deterministic id of the delivery of event `event_id` to endpoint
/// (`merchant_id`, `endpoint_id`): round 0 is the fan-out at apply time (so
/// an apply replayed after a crash names its deliveries the same); a
/// replay passes a fresh round. Its ULID time is the event's creation.
pub fn delivery_id(
    event_id: &str,
    merchant_id: &str,
    endpoint_id: &str,
    round: u64,
    created_at: i64,
) -> String {
    let mut h = Sha256::new();
    for part in [event_id, merchant_id, endpoint_id] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.update(round.to_be_bytes());
    let d = h.finalize();
    let mut r = [0u8; 16];
    r[6..].copy_from_slice(&d[..10]);
    let ulid = Ulid::from_parts(created_at.max(0) as u64, u128::from_be_bytes(r));
    format!("dlv_{ulid}")
}

/// What [`Store::replay`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    /// This many new deliveries.
    Enqueued(usize),
    /// More events than the limit match: nothing was enqueued.
    TooMany,
}

/// The store, whatever the backend. Every write verb is one atomic write.
#[async_trait]
pub trait Store: Send + Sync {
    /// Dedupe, then store the raw request, its task and inbox entry (one
    /// write). Durable on return with `durability = "sync"`.
    async fn accept(&self, ipn: NewIpn, now: i64) -> Result<Accepted, StoreError>;

    /// The request a dedupe key names while it counts: seen within
    /// `window_ms` of `now` and still kept.
    async fn event_owner(
        &self,
        provider: &str,
        event_key: &str,
        now: i64,
        window_ms: i64,
    ) -> Result<Option<Uuid>, StoreError>;

    /// Up to `limit` requests to process, oldest first, each handed out
    /// once per process until applied; waits up to `wait` for one.
    async fn next_work(&self, limit: usize, wait: Duration) -> Result<Vec<Work>, StoreError>;

    /// Apply plans, in order, in one atomic write; one result per plan.
    async fn apply(&self, plans: Vec<Plan>) -> Result<Vec<Applied>, StoreError>;

    async fn payment(&self, key: &PaymentKey) -> Result<Option<PaymentRecord>, StoreError>;

    /// A payment's history, oldest first (at most `limit`, the newest).
    async fn history(
        &self,
        key: &PaymentKey,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Durable applied events of a merchant, in the order they were
    /// applied, strictly after the event `after`. Reads its writes: an
    /// event already committed (a task result may name it) is listed once
    /// durable, waiting for its flush rather than leaving it out.
    async fn events(
        &self,
        merchant_id: &str,
        payment_id: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Result<Vec<EventRecord>, UnknownCursor>, StoreError>;

    async fn register_payment(&self, reg: Registration) -> Result<Registered, StoreError>;

    /// A task: its record once processing ended (or was restarted by
    /// `reprocess`); before that, a stored request is a task in `processing`.
    async fn task(&self, id: Uuid) -> Result<Option<TaskRecord>, StoreError>;

    async fn request(&self, id: Uuid) -> Result<Option<RawRequest>, StoreError>;

    /// Hand out an error result exactly once: marks it read and returns it,
    /// or None if there is no unread error result.
    async fn take_error(&self, id: Uuid) -> Result<Option<TaskRecord>, StoreError>;

    /// Put an errored request back to work (after the operator fixed the config).
    async fn reprocess(&self, id: Uuid, now: i64) -> Result<Reprocess, StoreError>;

    /// Tasks, optionally filtered, newest first (admin listing).
    async fn tasks(
        &self,
        state: Option<TaskState>,
        provider: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, StoreError>;

    /// Keep a request that failed authentication (bounded: the last 1000).
    async fn quarantine(&self, rec: QuarantineRecord) -> Result<(), StoreError>;

    /// Newest first.
    async fn quarantined(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError>;

    /// Is the store writable and durable right now? (readiness probe)
    async fn probe(&self, now: i64) -> Result<(), StoreError>;

    /// Drop what retention no longer keeps. Unprocessed requests are never dropped.
    async fn purge_expired(&self, now: i64, r: RetentionMs) -> Result<Purged, StoreError>;

    /// Are writes waiting for their flush right now? (Under load these are
    /// mostly acknowledgements; the sled backend cannot tell them apart.)
    fn acks_waiting(&self) -> bool;

    /// How many accepted requests wait to be applied (the inbox), from a
    /// count kept as writes commit: cheap enough for every processor pass
    /// (the acks-first rule reads it).
    fn backlog(&self) -> u64;

    /// Counts for the operator's gauges (`GET /metrics`), cheap enough for
    /// every scrape: kept as writes commit, never by scanning.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Resolves (with the cause) once the store hit a write error it cannot
    /// recover from in this process; the service then exits non-zero so its
    /// supervisor restarts it (SPEC §8). Never resolves for a healthy store.
    async fn failed(&self) -> String {
        std::future::pending().await
    }

    // ---- the relay (SPEC §5, §6) ----

    /// Make the config-file endpoints exactly these: add and update them
    /// (a 410's disabled state survives), remove config ones no longer listed.
    async fn sync_config_endpoints(&self, endpoints: Vec<EndpointRecord>)
        -> Result<(), StoreError>;

    /// false: the merchant has an endpoint with this id already.
    async fn create_endpoint(&self, ep: EndpointRecord) -> Result<bool, StoreError>;

    async fn endpoint(
        &self,
        merchant_id: &str,
        id: &str,
    ) -> Result<Option<EndpointRecord>, StoreError>;

    /// A merchant's endpoints (None: everybody's), oldest first.
    async fn endpoints(&self, merchant_id: Option<&str>)
        -> Result<Vec<EndpointRecord>, StoreError>;

    /// None: no such endpoint.
    async fn update_endpoint(
        &self,
        merchant_id: &str,
        id: &str,
        u: EndpointUpdate,
    ) -> Result<Option<EndpointRecord>, StoreError>;

    /// false: no such endpoint. Its deliveries are kept (listed) but never sent.
    async fn delete_endpoint(&self, merchant_id: &str, id: &str) -> Result<bool, StoreError>;

    /// Up to `limit` lane heads of one endpoint due at `now`, oldest due
    /// first, leaving out `skip` (in flight). Only durable deliveries are
    /// handed out, so nothing is sent for a change a crash could take back.
    async fn due_deliveries(
        &self,
        merchant_id: &str,
        endpoint_id: &str,
        now: i64,
        limit: usize,
        skip: &[String],
    ) -> Result<Due, StoreError>;

    /// An attempt, and the delivery's next state, in one write: success and
    /// death make the lane's next delivery due at once; a 410 disables the
    /// endpoint; with `ordering = "latest"` a retry supersedes all but the
    /// newest waiting change.
    async fn record_attempt(&self, r: AttemptResult) -> Result<(), StoreError>;

    /// Newest first.
    async fn deliveries(&self, f: DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError>;

    async fn delivery(
        &self,
        id: &str,
    ) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>, StoreError>;

    /// A dead delivery back to pending, for a fresh run of the schedule, at
    /// the tail of its lane. `merchant_id` scopes it (None: admin).
    async fn retry_delivery(
        &self,
        merchant_id: Option<&str>,
        id: &str,
        now: i64,
    ) -> Result<Retried, StoreError>;

    /// New deliveries to this endpoint of the merchant's matching events
    /// created in `[since, until]`, in apply order, with their original
    /// event ids: all of them in one write, or none when more than `limit`
    /// match. The events are found before the write, so finding them never
    /// holds other writes back. None: no such endpoint.
    async fn replay(
        &self,
        merchant_id: &str,
        endpoint_id: &str,
        range: (i64, i64),
        limit: usize,
        now: i64,
    ) -> Result<Option<Replayed>, StoreError>;

    /// Moves after every committed write that touched deliveries or
    /// endpoints (the dispatcher's wake-up; the store stays the truth).
    fn relay_changed(&self) -> tokio::sync::watch::Receiver<u64>;

    /// A consistent copy of the whole store, written and fsynced at `to`
    /// (which must not exist or be empty), taken while the store serves:
    /// writes wait while it is taken. The copy is a store a new instance
    /// can open.
    async fn backup(&self, to: &std::path::Path) -> Result<Backup, StoreError>;

    /// Flush everything and stop background threads (shutdown). Idempotent.
    fn close(&self);
}

/// What [`Store::stats`] counts, as of the last committed write.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Accepted requests not applied yet (the inbox).
    pub inbox_depth: u64,
    pub deliveries_pending: u64,
    pub deliveries_dead: u64,
    pub endpoints_enabled: u64,
    pub endpoints_disabled: u64,
    /// What the store takes on disk.
    pub store_bytes: u64,
}

/// What [`Store::backup`] copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backup {
    pub records: u64,
    pub bytes: u64,
    pub took_ms: u64,
}
