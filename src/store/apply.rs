//! Applying a processed request: events, payment state and history, the
//! task result — replay-safe, without sled transactions.

use ulid::Ulid;

use super::*;
use crate::domain::rule::decide;
use crate::domain::Candidate;

impl Store {
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
}
