//! Tasks and the inbox: lookup, the once-only error result, reprocess,
//! failure, the admin listing.

use uuid::Uuid;

use super::*;

impl Store {
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
        Ok(self
            .inbox_page(after, usize::MAX)?
            .into_iter()
            .map(|(seq, id, _)| (seq, id))
            .collect())
    }

    /// [`Store::inbox`], at most `limit` entries, each with whether a
    /// reprocess queued it (see [`INBOX_REPROCESS`]).
    pub(super) fn inbox_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Uuid, bool)>, StoreError> {
        let start = after.map(|a| (a + 1).to_be_bytes()).unwrap_or([0; 8]);
        self.inbox
            .range(start..)
            .take(limit)
            .map(|r| {
                let (k, v) = r?;
                let seq = u64::from_be_bytes(
                    k.as_ref()
                        .try_into()
                        .map_err(|_| StoreError::Codec("inbox key".into()))?,
                );
                let (id, mark) = v.split_at(v.len().min(16));
                let id = Uuid::from_slice(id).map_err(|e| StoreError::Codec(e.to_string()))?;
                Ok((seq, id, mark == INBOX_REPROCESS))
            })
            .collect()
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
        let mut entry = id.to_vec();
        entry.extend_from_slice(INBOX_REPROCESS);
        self.inbox.insert(seq, entry)?;
        // Not in the handoff: send the processor to the disk for it.
        self.handoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .missed += 1;
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
}
