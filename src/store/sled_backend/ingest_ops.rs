//! The ingest side's writes, on the one writer ([`super::writer`]):
//! accepting IPNs, applying decided plans (payment state, history, events,
//! the task's result, the inbox entry's removal and the fan-out into
//! deliveries, all in the round's one atomic write), registrations, taking
//! an errored task, reprocessing, the quarantine, and retention's removals.

use ::sled::IVec;

use super::writer::*;
use super::*;

impl Writer {
    fn task_state(&self, stage: &Stage, id: Uuid) -> Result<Option<TaskState>, StoreError> {
        if let Some(t) = self.get_dec::<TaskRecord>(stage, TASKS, id.as_bytes())? {
            return Ok(Some(t.state));
        }
        Ok(self
            .get(stage, REQUESTS, id.as_bytes())?
            .map(|_| TaskState::Processing))
    }

    /// The request a dedupe key names, while it counts: seen within the
    /// window and its request still kept.
    fn live_owner(
        &self,
        stage: &Stage,
        dkey: &[u8],
        now: i64,
        window_ms: i64,
    ) -> Result<Option<Uuid>, StoreError> {
        let Some(prev) = self.get_dec::<DedupeRecord>(stage, DEDUPE, dkey)? else {
            return Ok(None);
        };
        let live = now.saturating_sub(prev.seen_at) < window_ms
            && self
                .get(stage, REQUESTS, prev.request_id.as_bytes())?
                .is_some();
        Ok(live.then_some(prev.request_id))
    }

    pub(super) fn accept(
        &mut self,
        a: AcceptOp,
        stage: &mut Stage,
        work: &mut Vec<Work>,
    ) -> Result<Accepted, StoreError> {
        let r = &a.request;
        let dkey = joined(&r.provider, r.event_key.as_bytes());
        if let Some(prev) = self.live_owner(stage, &dkey, a.now, a.dedupe_window_ms)? {
            return Ok(Accepted::Duplicate {
                request_id: prev,
                state: self.task_state(stage, prev)?,
            });
        }
        let dedupe = enc(&DedupeRecord {
            request_id: r.request_id,
            seen_at: a.now,
        })?;
        // A batch's items: each one not seen yet names this request too (an
        // item another request brought first keeps naming that one).
        for item in &a.item_keys {
            let ikey = joined(&r.provider, item.as_bytes());
            if ikey != dkey
                && self
                    .live_owner(stage, &ikey, a.now, a.dedupe_window_ms)?
                    .is_none()
            {
                stage.put(DEDUPE, ikey, Some(dedupe.clone()));
            }
        }
        stage.put(DEDUPE, dkey, Some(dedupe));
        let id = r.request_id.as_bytes().to_vec();
        let place = self.push_inbox(stage, r.request_id)?;
        stage.put(REQUESTS, id, Some(a.value));
        work.push(Work {
            id: place,
            request: a.request,
            doc: a.doc,
        });
        Ok(Accepted::New)
    }

    pub(super) fn apply(
        &mut self,
        plans: Vec<Plan>,
        stage: &mut Stage,
    ) -> Result<Vec<Applied>, StoreError> {
        let mut out = Vec::with_capacity(plans.len());
        for plan in plans {
            let mark = stage.undo.len();
            let work = plan.work();
            if !self.pop_inbox(stage, work)? {
                out.push(Applied::AlreadyDone);
                continue;
            }
            let applied = match plan {
                Plan::Fail {
                    request,
                    error,
                    now,
                    ..
                } => {
                    self.end_task(stage, &request, now, |t| {
                        t.state = TaskState::Error;
                        t.error = Some(error);
                    })?;
                    Applied::Done
                }
                Plan::Complete {
                    request,
                    events,
                    changes,
                    now,
                    ..
                } => {
                    if self.changes(stage, changes)? {
                        self.end_task(stage, &request, now, |t| {
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

    /// End a request's task (if it is still processing). Called only
    /// while its inbox entry exists, so the request is stored (retention
    /// never drops an unprocessed one): with no task record yet, the task
    /// is made from the plan's copy instead of decoding the stored one.
    fn end_task(
        &self,
        stage: &mut Stage,
        request: &RawRequest,
        now: i64,
        set: impl FnOnce(&mut TaskRecord),
    ) -> Result<(), StoreError> {
        let id = request.request_id;
        let mut t = match self.get_dec::<TaskRecord>(stage, TASKS, id.as_bytes())? {
            Some(t) => t,
            None => processing_task(request),
        };
        if t.state == TaskState::Processing {
            set(&mut t);
            t.finished_at = Some(now);
            stage.put(TASKS, id.as_bytes().to_vec(), Some(enc(&t)?));
        }
        Ok(())
    }

    pub(super) fn register(
        &mut self,
        r: Registration,
        stage: &mut Stage,
    ) -> Result<Registered, StoreError> {
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

    pub(super) fn take_error(
        &self,
        id: Uuid,
        stage: &mut Stage,
    ) -> Result<Option<TaskRecord>, StoreError> {
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

    pub(super) fn reprocess(
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
        let place = self.push_inbox(stage, id)?;
        work.push(Work {
            id: place,
            request: Arc::new(req),
            doc: None,
        });
        Ok(Reprocess::Queued)
    }

    pub(super) fn quarantine(
        &mut self,
        rec: &QuarantineRecord,
        stage: &mut Stage,
    ) -> Result<(), StoreError> {
        let seq = self.quarantine_seq;
        self.quarantine_seq += 1;
        stage.put(QUARANTINE, seq.to_be_bytes().to_vec(), Some(enc(rec)?));
        if let Some(old) = seq.checked_sub(QUARANTINE_KEEP) {
            stage.put(QUARANTINE, old.to_be_bytes().to_vec(), None);
        }
        Ok(())
    }

    pub(super) fn remove_if(
        &self,
        keys: Vec<(usize, Vec<u8>, IVec)>,
        stage: &mut Stage,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for (tree, key, expected) in keys {
            // A request goes only with its task (listed before it): a task
            // reprocessed since retention read it keeps its request, which
            // its new inbox entry needs.
            if tree == REQUESTS && self.get(stage, TASKS, &key)?.is_some() {
                continue;
            }
            if self.get(stage, tree, &key)?.as_ref() == Some(&expected) {
                stage.put(tree, key, None);
                n += 1;
            }
        }
        Ok(n)
    }
}
