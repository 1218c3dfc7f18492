//! The relay's writes, on the one writer ([`super::writer`]): endpoints,
//! the fan-out of an applied event into deliveries, attempts and their
//! outcomes, manual retries and replays — each one atomic write.
//!
//! **Lanes.** Deliveries of one (endpoint, payment) form a lane (`lanes`
//! tree, pending ones only, in `lane_pos` order). Only a lane's head is in
//! the `due` index, keyed by (endpoint, due time, delivery), so the
//! dispatcher scans one endpoint's due heads oldest first and a payment's
//! n+1 cannot go out before n left the lane (succeeded, dead or
//! superseded). When a head leaves, the next one is due at once: waiting
//! for its turn is not a failed attempt.

use super::writer::{
    answer, Answer, Reply, Stage, Writer, ATTEMPTS, BY_MERCHANT, DELIVERIES, DUE, ENDPOINTS, LANES,
};
use super::*;
use crate::delivery::patterns;

pub(super) enum RelayOp {
    SyncConfig(Vec<EndpointRecord>, Reply<()>),
    /// false: the id is taken.
    Create(Box<EndpointRecord>, Reply<bool>),
    Update(
        String,
        String,
        Box<EndpointUpdate>,
        Reply<Option<EndpointRecord>>,
    ),
    Delete(String, String, Reply<bool>),
    Attempt(Box<AttemptResult>, Reply<()>),
    Retry(Option<String>, String, i64, Reply<Retried>),
    Replay(Box<ReplayOp>, Reply<Option<usize>>),
}

pub(super) struct ReplayOp {
    pub merchant_id: String,
    pub endpoint_id: String,
    /// The feed keys of the events to deliver again, in feed order
    /// ([`super::relay_reads::replay_picks`], read before the write).
    pub events: Vec<Vec<u8>>,
    pub now: i64,
}

/// merchant ‖ 0 ‖ endpoint id
pub(super) fn endpoint_key(merchant: &str, id: &str) -> Vec<u8> {
    joined(merchant, id.as_bytes())
}

/// The prefix of an endpoint's lanes and due entries.
pub(super) fn endpoint_prefix(merchant: &str, id: &str) -> Vec<u8> {
    let mut k = endpoint_key(merchant, id);
    k.push(0);
    k
}

fn lane_prefix(d: &DeliveryRecord) -> Vec<u8> {
    let mut k = endpoint_prefix(&d.merchant_id, &d.endpoint_id);
    k.extend_from_slice(d.payment_id.as_bytes());
    k.push(0);
    k
}

fn lane_key(d: &DeliveryRecord) -> Vec<u8> {
    let mut k = lane_prefix(d);
    k.extend_from_slice(&d.lane_pos.to_be_bytes());
    k
}

/// Unix ms as a big-endian sortable key part (times before 1970 sort first).
fn time_key(at: i64) -> [u8; 8] {
    (at.max(0) as u64).to_be_bytes()
}

pub(super) fn due_key(d: &DeliveryRecord, at: i64) -> Result<Vec<u8>, StoreError> {
    let mut k = endpoint_prefix(&d.merchant_id, &d.endpoint_id);
    k.extend_from_slice(&time_key(at));
    k.extend_from_slice(&delivery_ulid(&d.id)?);
    Ok(k)
}

pub(super) fn delivery_ulid(id: &str) -> Result<[u8; 16], StoreError> {
    id.strip_prefix("dlv_")
        .and_then(|u| ulid::Ulid::from_string(u).ok())
        .map(|u| u.0.to_be_bytes())
        .ok_or_else(|| StoreError::Codec(format!("delivery id {id:?}")))
}

fn attempt_key(ulid: &[u8; 16], n: u32) -> Vec<u8> {
    let mut k = ulid.to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

impl Writer {
    pub(super) fn relay_op(&mut self, op: RelayOp, stage: &mut Stage, mark: usize) -> Answer {
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
            RelayOp::SyncConfig(eps, reply) => run!(reply, self.sync_config(eps, stage)),
            RelayOp::Create(ep, reply) => run!(reply, self.create_endpoint(*ep, stage)),
            RelayOp::Update(m, id, u, reply) => {
                run!(reply, self.update_endpoint(&m, &id, *u, stage))
            }
            RelayOp::Delete(m, id, reply) => run!(reply, self.delete_endpoint(&m, &id, stage)),
            RelayOp::Attempt(r, reply) => run!(reply, self.record_attempt(*r, stage)),
            RelayOp::Retry(m, id, now, reply) => {
                run!(reply, self.retry_delivery(m.as_deref(), &id, now, stage))
            }
            RelayOp::Replay(r, reply) => run!(reply, self.replay(*r, stage)),
        }
    }

    fn endpoint_of(&self, merchant: &str, id: &str) -> Option<&EndpointRecord> {
        self.endpoints.get(merchant)?.iter().find(|e| e.id == id)
    }

    fn put_endpoint(&mut self, stage: &mut Stage, ep: EndpointRecord) -> Result<(), StoreError> {
        stage.put(
            ENDPOINTS,
            endpoint_key(&ep.merchant_id, &ep.id),
            Some(enc(&ep)?),
        );
        let list = self.endpoints.entry(ep.merchant_id.clone()).or_default();
        match list.iter_mut().find(|e| e.id == ep.id) {
            Some(e) => *e = ep,
            None => list.push(ep),
        }
        Ok(())
    }

    fn remove_endpoint(&mut self, stage: &mut Stage, merchant: &str, id: &str) {
        stage.put(ENDPOINTS, endpoint_key(merchant, id), None);
        if let Some(list) = self.endpoints.get_mut(merchant) {
            list.retain(|e| e.id != id);
        }
    }

    fn sync_config(
        &mut self,
        eps: Vec<EndpointRecord>,
        stage: &mut Stage,
    ) -> Result<(), StoreError> {
        let stale: Vec<(String, String)> = self
            .endpoints
            .values()
            .flatten()
            .filter(|e| e.source == EndpointSource::Config)
            .filter(|e| {
                !eps.iter()
                    .any(|n| n.merchant_id == e.merchant_id && n.id == e.id)
            })
            .map(|e| (e.merchant_id.clone(), e.id.clone()))
            .collect();
        for (m, id) in stale {
            self.remove_endpoint(stage, &m, &id);
        }
        for mut ep in eps {
            if let Some(old) = self.endpoint_of(&ep.merchant_id, &ep.id) {
                // A 410 disabled it: that survives a restart.
                ep.disabled = old.disabled;
                ep.disabled_reason = old.disabled_reason.clone();
                ep.created_at = old.created_at;
                let now = ep.updated_at;
                ep.updated_at = old.updated_at;
                if *old == ep {
                    continue;
                }
                ep.updated_at = now;
            }
            self.put_endpoint(stage, ep)?;
        }
        Ok(())
    }

    fn create_endpoint(
        &mut self,
        ep: EndpointRecord,
        stage: &mut Stage,
    ) -> Result<bool, StoreError> {
        if self.endpoint_of(&ep.merchant_id, &ep.id).is_some() {
            return Ok(false);
        }
        self.put_endpoint(stage, ep)?;
        Ok(true)
    }

    fn update_endpoint(
        &mut self,
        merchant: &str,
        id: &str,
        u: EndpointUpdate,
        stage: &mut Stage,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let Some(mut ep) = self.endpoint_of(merchant, id).cloned() else {
            return Ok(None);
        };
        if let Some(url) = u.url {
            ep.url = url;
        }
        if let Some(ev) = u.events {
            ep.events = ev;
        }
        if let Some(d) = u.description {
            ep.description = d;
        }
        if let Some(o) = u.ordering {
            ep.ordering = o;
        }
        if let Some((disabled, reason)) = u.disabled {
            ep.disabled = disabled;
            ep.disabled_reason = if disabled { reason } else { None };
        }
        if let Some((secret, old_until)) = u.rotate {
            let old = std::mem::replace(&mut ep.secret, secret);
            ep.previous_secret = Some(PreviousSecret {
                secret: old,
                expires_at: old_until,
            });
        }
        ep.updated_at = u.now;
        self.put_endpoint(stage, ep.clone())?;
        Ok(Some(ep))
    }

    fn delete_endpoint(
        &mut self,
        merchant: &str,
        id: &str,
        stage: &mut Stage,
    ) -> Result<bool, StoreError> {
        if self.endpoint_of(merchant, id).is_none() {
            return Ok(false);
        }
        self.remove_endpoint(stage, merchant, id);
        Ok(true)
    }

    /// One delivery per endpoint of the event's merchant whose patterns
    /// match, written with the event (called from `apply`). A disabled
    /// endpoint gets its deliveries too: they wait, pending, until it is
    /// enabled again (deleting an endpoint is how to stop them).
    pub(super) fn fan_out(
        &mut self,
        stage: &mut Stage,
        ev: &EventRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        let ty = patterns::event_type(ev.status);
        let targets: Vec<EndpointRecord> = self
            .endpoints
            .get(&ev.merchant_id)
            .map(|l| {
                l.iter()
                    .filter(|e| patterns::matches(&e.events, &ty))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for ep in targets {
            let id = delivery_id(&ev.event_id, &ep.merchant_id, &ep.id, 0, ev.created_at);
            self.enqueue(stage, &ep, id, ev.clone(), now)?;
        }
        Ok(())
    }

    /// Put a new delivery at the tail of its lane (due now if it is the head).
    fn enqueue(
        &mut self,
        stage: &mut Stage,
        ep: &EndpointRecord,
        id: String,
        event: EventRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        let ulid = delivery_ulid(&id)?;
        if self.get(stage, DELIVERIES, &ulid)?.is_some() {
            return Ok(()); // written before: the same change, not a second delivery
        }
        let mut d = DeliveryRecord {
            id,
            endpoint_id: ep.id.clone(),
            merchant_id: ep.merchant_id.clone(),
            payment_id: event.payment_id.clone(),
            sequence: event.sequence,
            event,
            state: DeliveryState::Pending,
            attempts: 0,
            retry_from: 0,
            next_attempt_at: None,
            last_status: None,
            last_error: None,
            created_at: now,
            lane_pos: self.next_id()?,
        };
        // Only `latest` needs the whole lane; `fifo` needs to know if it is empty.
        let look = if ep.ordering == Ordering::Latest {
            usize::MAX
        } else {
            1
        };
        let lane = self.scan(stage, LANES, &lane_prefix(&d), look)?;
        match lane.first() {
            None => {
                d.next_attempt_at = Some(now);
                stage.put(DUE, due_key(&d, now)?, Some(Vec::new()));
            }
            Some((_, head)) if ep.ordering == Ordering::Latest => {
                let head: DeliveryRecord = self.load(stage, head)?;
                let retry_at = head.next_attempt_at.filter(|&t| t > now);
                if let Some(at) = retry_at {
                    // The lane waits for a retry (the head is not in flight:
                    // it is not due): the head and everything waiting behind
                    // it are superseded, and this change goes at that time.
                    stage.put(DUE, due_key(&head, at)?, None);
                    for (k, v) in &lane {
                        let mut w: DeliveryRecord = self.load(stage, v)?;
                        w.state = DeliveryState::Superseded;
                        w.next_attempt_at = None;
                        self.save(stage, &w)?;
                        stage.put(LANES, k.clone(), None);
                    }
                    d.next_attempt_at = Some(at);
                    stage.put(DUE, due_key(&d, at)?, Some(Vec::new()));
                } else if head.attempts > head.retry_from {
                    // Behind a head that failed and may be in flight again:
                    // the ones waiting between it and this change go.
                    for (k, v) in &lane[1..] {
                        let mut w: DeliveryRecord = self.load(stage, v)?;
                        w.state = DeliveryState::Superseded;
                        w.next_attempt_at = None;
                        self.save(stage, &w)?;
                        stage.put(LANES, k.clone(), None);
                    }
                }
            }
            Some(_) => {}
        }
        stage.put(LANES, lane_key(&d), Some(ulid.to_vec()));
        stage.put(
            BY_MERCHANT,
            super::by_merchant::key(&d.merchant_id, &ulid),
            Some(Vec::new()),
        );
        self.save(stage, &d)
    }

    fn load(&self, stage: &Stage, ulid: &[u8]) -> Result<DeliveryRecord, StoreError> {
        self.get_dec(stage, DELIVERIES, ulid)?
            .ok_or_else(|| StoreError::Codec("lane names a missing delivery".into()))
    }

    fn save(&self, stage: &mut Stage, d: &DeliveryRecord) -> Result<(), StoreError> {
        stage.put(DELIVERIES, delivery_ulid(&d.id)?.to_vec(), Some(enc(d)?));
        Ok(())
    }

    /// The lane's head left: the next one is due at `now`.
    fn advance(&self, stage: &mut Stage, lane: &[u8], now: i64) -> Result<(), StoreError> {
        if let Some((_, v)) = self.scan(stage, LANES, lane, 1)?.into_iter().next() {
            let mut next = self.load(stage, &v)?;
            next.next_attempt_at = Some(now);
            stage.put(DUE, due_key(&next, now)?, Some(Vec::new()));
            self.save(stage, &next)?;
        }
        Ok(())
    }

    fn record_attempt(&mut self, r: AttemptResult, stage: &mut Stage) -> Result<(), StoreError> {
        let ulid = delivery_ulid(&r.delivery_id)?;
        let Some(mut d) = self.get_dec::<DeliveryRecord>(stage, DELIVERIES, &ulid)? else {
            return Ok(());
        };
        if d.state != DeliveryState::Pending {
            return Ok(());
        }
        stage.put(
            ATTEMPTS,
            attempt_key(&ulid, d.attempts),
            Some(enc(&r.attempt)?),
        );
        d.attempts += 1;
        d.last_status = r.attempt.status;
        d.last_error = r.attempt.error.clone();
        if let Some(at) = d.next_attempt_at.take() {
            stage.put(DUE, due_key(&d, at)?, None);
        }
        let now = r.attempt.at;
        let lane = lane_prefix(&d);
        match r.outcome {
            AttemptOutcome::Succeeded | AttemptOutcome::Dead => {
                d.state = if r.outcome == AttemptOutcome::Dead {
                    DeliveryState::Dead
                } else {
                    DeliveryState::Succeeded
                };
                stage.put(LANES, lane_key(&d), None);
                self.save(stage, &d)?;
                self.advance(stage, &lane, now)?;
            }
            AttemptOutcome::Retry { at } => {
                let latest = self
                    .endpoint_of(&d.merchant_id, &d.endpoint_id)
                    .is_some_and(|e| e.ordering == Ordering::Latest);
                let waiting = if latest {
                    self.scan(stage, LANES, &lane, usize::MAX)?
                } else {
                    Vec::new()
                };
                if waiting.len() > 1 {
                    // Only the newest change goes next, at the retry time.
                    let last = waiting.len() - 1;
                    d.state = DeliveryState::Superseded;
                    self.save(stage, &d)?;
                    for (i, (k, v)) in waiting.iter().enumerate() {
                        if i == last {
                            let mut newest = self.load(stage, v)?;
                            newest.next_attempt_at = Some(at);
                            stage.put(DUE, due_key(&newest, at)?, Some(Vec::new()));
                            self.save(stage, &newest)?;
                        } else {
                            if v.as_ref() != ulid.as_slice() {
                                let mut w = self.load(stage, v)?;
                                w.state = DeliveryState::Superseded;
                                self.save(stage, &w)?;
                            }
                            stage.put(LANES, k.clone(), None);
                        }
                    }
                } else {
                    d.next_attempt_at = Some(at);
                    stage.put(DUE, due_key(&d, at)?, Some(Vec::new()));
                    self.save(stage, &d)?;
                }
            }
            AttemptOutcome::Gone => {
                if let Some(mut ep) = self.endpoint_of(&d.merchant_id, &d.endpoint_id).cloned() {
                    ep.disabled = true;
                    ep.disabled_reason = Some("the endpoint answered 410 Gone".into());
                    ep.updated_at = now;
                    self.put_endpoint(stage, ep)?;
                }
                // Still the lane's head: it goes out once the endpoint is enabled.
                d.next_attempt_at = Some(now);
                stage.put(DUE, due_key(&d, now)?, Some(Vec::new()));
                self.save(stage, &d)?;
            }
        }
        Ok(())
    }

    fn retry_delivery(
        &mut self,
        merchant: Option<&str>,
        id: &str,
        now: i64,
        stage: &mut Stage,
    ) -> Result<Retried, StoreError> {
        let Ok(ulid) = delivery_ulid(id) else {
            return Ok(Retried::NotFound);
        };
        let Some(mut d) = self.get_dec::<DeliveryRecord>(stage, DELIVERIES, &ulid)? else {
            return Ok(Retried::NotFound);
        };
        if merchant.is_some_and(|m| m != d.merchant_id) {
            return Ok(Retried::NotFound);
        }
        if d.state != DeliveryState::Dead {
            return Ok(Retried::NotDead(d.state));
        }
        // A fresh run of the schedule, at the tail of its lane.
        d.state = DeliveryState::Pending;
        d.retry_from = d.attempts;
        d.lane_pos = self.next_id()?;
        let lane = self.scan(stage, LANES, &lane_prefix(&d), 1)?;
        d.next_attempt_at = None;
        if lane.is_empty() {
            d.next_attempt_at = Some(now);
            stage.put(DUE, due_key(&d, now)?, Some(Vec::new()));
        }
        stage.put(LANES, lane_key(&d), Some(ulid.to_vec()));
        self.save(stage, &d)?;
        Ok(Retried::Queued(Box::new(d)))
    }

    fn replay(&mut self, r: ReplayOp, stage: &mut Stage) -> Result<Option<usize>, StoreError> {
        let Some(ep) = self.endpoint_of(&r.merchant_id, &r.endpoint_id).cloned() else {
            return Ok(None);
        };
        let mut n = 0;
        for key in &r.events {
            // Retention may have taken it since; a PATCH may have changed
            // the endpoint's patterns.
            let Some(ev) = self.get_dec::<EventRecord>(stage, super::writer::tree::EVENTS, key)?
            else {
                continue;
            };
            if !patterns::matches(&ep.events, &patterns::event_type(ev.status)) {
                continue;
            }
            let round = self.next_id()?;
            let id = delivery_id(&ev.event_id, &ep.merchant_id, &ep.id, round, ev.created_at);
            self.enqueue(stage, &ep, id, ev, r.now)?;
            n += 1;
        }
        Ok(Some(n))
    }
}
