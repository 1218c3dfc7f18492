//! Which prepared requests may apply now, and in what order (pure).
//!
//! Requests wait here in arrival order. One is ready when no earlier
//! request still waiting names any of its payments, and its reorder window
//! (if its provider has one) has passed. So a request naming several
//! payments applies only when it is next for every one of them, and a
//! request held back (window, or behind such a request) holds back only the
//! later requests of its own payments. Nothing can wait on itself, so there
//! is no deadlock: the oldest waiting request is always ready once its
//! window has passed.
//!
//! Reorder window: when a windowed request of one payment is ready, the
//! later requests of that same payment received within its window (and not
//! behind a request naming other payments too) join it, and the group is
//! stably sorted by [`reorder_key`] before it applies.

use std::collections::{HashSet, VecDeque};

use crate::domain::rule::reorder_key;
use crate::domain::Candidate;
use crate::store::{TaskError, Work};

/// One request on its way through the processor.
#[derive(Debug)]
pub struct Pending {
    pub work: Work,
    pub prepared: Result<Vec<Candidate>, TaskError>,
    /// The payment ids it names, sorted, once each (ordering is by payment
    /// id alone, which is safe: two merchants' payments of one id merely
    /// wait in turn).
    ids: Vec<String>,
    /// Not before (unix ms): arrival + its provider's `reorder_window`.
    hold: Option<i64>,
}

impl Pending {
    /// `window_ms`: its provider's `reorder_window` in milliseconds (0: none).
    pub fn new(work: Work, prepared: Result<Vec<Candidate>, TaskError>, window_ms: i64) -> Self {
        let mut ids: Vec<String> = match &prepared {
            Ok(c) => c.iter().map(|c| c.payment_id.clone()).collect(),
            Err(_) => Vec::new(),
        };
        ids.sort_unstable();
        ids.dedup();
        let hold = (window_ms > 0 && !ids.is_empty())
            .then(|| work.request.received_at.saturating_add(window_ms));
        Pending {
            work,
            prepared,
            ids,
            hold,
        }
    }

    fn hold_until(&self) -> Option<i64> {
        self.hold
    }

    fn sort_key(&self) -> Option<(i64, u8)> {
        self.prepared.as_ref().ok()?.first().map(reorder_key)
    }
}

#[derive(Debug, Default)]
pub struct Schedule {
    waiting: VecDeque<Pending>,
}

impl Schedule {
    pub fn push(&mut self, p: Pending) {
        self.waiting.push_back(p);
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The earliest time a held request becomes ready.
    pub fn next_deadline(&self) -> Option<i64> {
        self.waiting.iter().filter_map(Pending::hold_until).min()
    }

    /// Up to about `limit` requests ready at `now`, in the order they must
    /// apply (a reorder group is never split).
    pub fn take_ready(&mut self, now: i64, limit: usize) -> Vec<Pending> {
        let mut slots: Vec<Option<Pending>> = self.waiting.drain(..).map(Some).collect();
        let mut blocked: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for i in 0..slots.len() {
            if out.len() >= limit {
                // Full: the rest waits, in order, unexamined.
                self.waiting.extend(slots.drain(i..).flatten());
                break;
            }
            let Some(p) = slots[i].take() else { continue };
            let held = p.hold_until().is_some_and(|t| t > now);
            if held || p.ids.iter().any(|id| blocked.contains(id)) {
                blocked.extend(p.ids.iter().cloned());
                self.waiting.push_back(p);
                continue;
            }
            match (p.hold_until(), p.ids.as_slice()) {
                (Some(deadline), [only]) => {
                    let only = only.clone();
                    let mut group = vec![p];
                    for slot in slots.iter_mut().skip(i + 1) {
                        let Some(q) = slot else { continue };
                        if !q.ids.contains(&only) {
                            continue;
                        }
                        if q.ids.len() != 1 || q.work.request.received_at >= deadline {
                            break;
                        }
                        group.extend(slot.take());
                    }
                    group.sort_by_key(Pending::sort_key);
                    out.extend(group);
                }
                _ => out.push(p),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::domain::Status;
    use crate::store::{RawRequest, WorkId};

    fn cand(pid: &str, occurred_at: Option<i64>, status: Status) -> Candidate {
        Candidate {
            provider_event_id: None,
            payment_id: pid.into(),
            status,
            occurred_at,
            merchant_id: None,
            authorization_id: None,
            charge_id: None,
            amount: None,
            currency: None,
            merchant_site_url: None,
        }
    }

    fn pending(seq: u64, received_at: i64, window_ms: i64, cands: Vec<Candidate>) -> Pending {
        Pending::new(
            Work {
                id: WorkId::single(seq),
                request: Arc::new(RawRequest {
                    request_id: uuid::Uuid::new_v4(),
                    provider: "p".into(),
                    received_at,
                    content_type: None,
                    headers: Vec::new(),
                    body: Vec::new(),
                    peer: None,
                    event_key: seq.to_string(),
                }),
                doc: None,
            },
            Ok(cands),
            window_ms,
        )
    }

    fn seqs(v: &[Pending]) -> Vec<u64> {
        v.iter().map(|p| p.work.id.seq).collect()
    }

    #[test]
    fn a_held_request_holds_back_only_its_own_payments() {
        let mut s = Schedule::default();
        s.push(pending(1, 0, 100, vec![cand("a", None, Status::Pending)]));
        s.push(pending(2, 0, 0, vec![cand("b", None, Status::Pending)]));
        s.push(pending(
            3,
            0,
            0,
            vec![
                cand("b", None, Status::Succeeded),
                cand("a", None, Status::Succeeded),
            ],
        ));
        s.push(pending(4, 0, 0, vec![cand("c", None, Status::Pending)]));
        // 1 is held by its window; 3 names a (behind 1); 2 and 4 go.
        assert_eq!(seqs(&s.take_ready(50, 10)), [2, 4]);
        assert_eq!(s.next_deadline(), Some(100));
        assert_eq!(seqs(&s.take_ready(100, 10)), [1, 3]);
        assert!(s.is_empty());
    }

    #[test]
    fn a_reorder_window_sorts_one_payments_requests_by_occurred_at() {
        let mut s = Schedule::default();
        s.push(pending(
            1,
            0,
            100,
            vec![cand("a", Some(30), Status::Succeeded)],
        ));
        s.push(pending(
            2,
            10,
            100,
            vec![cand("a", Some(10), Status::Pending)],
        ));
        s.push(pending(
            3,
            20,
            100,
            vec![cand("b", Some(5), Status::Pending)],
        ));
        // Received after 1's window closed: not part of its group.
        s.push(pending(
            4,
            150,
            100,
            vec![cand("a", Some(1), Status::Pending)],
        ));
        assert!(s.take_ready(99, 10).is_empty());
        assert_eq!(seqs(&s.take_ready(120, 10)), [2, 1, 3]);
        assert_eq!(seqs(&s.take_ready(250, 10)), [4]);
    }

    #[test]
    fn errors_are_ready_at_once_and_block_nothing() {
        let mut s = Schedule::default();
        s.push(pending(1, 0, 100, vec![cand("a", None, Status::Pending)]));
        let err = TaskError {
            code: "malformed_payload".into(),
            message: "x".into(),
        };
        let bad = pending(2, 0, 100, Vec::new());
        s.push(Pending::new(bad.work, Err(err), 100));
        assert_eq!(seqs(&s.take_ready(0, 10)), [2]);
    }

    proptest! {
        /// Random multi-payment requests arriving in random batches: every
        /// request comes out exactly once, each payment's requests in
        /// arrival order, and the schedule always drains (no deadlock).
        #[test]
        fn per_payment_arrival_order_is_kept_and_nothing_deadlocks(
            reqs in prop::collection::vec(prop::collection::vec(0u8..6, 1..4), 1..60),
            arrivals in prop::collection::vec(1usize..8, 1..60),
            limit in 1usize..6,
        ) {
            let mut s = Schedule::default();
            let mut next = 0usize;
            let mut out: Vec<u64> = Vec::new();
            let mut arrivals = arrivals.into_iter().cycle();
            let mut rounds = 0;
            while out.len() < reqs.len() {
                let n = arrivals.next().unwrap_or(1);
                for _ in 0..n {
                    if next < reqs.len() {
                        let cands = reqs[next].iter().map(|p| cand(&p.to_string(), None, Status::Pending)).collect();
                        s.push(pending(next as u64, 0, 0, cands));
                        next += 1;
                    }
                }
                out.extend(seqs(&s.take_ready(0, limit)));
                rounds += 1;
                prop_assert!(rounds < 10 * reqs.len() + 10, "schedule stopped draining");
            }
            let mut sorted = out.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), reqs.len());
            let mut last: HashMap<u8, u64> = HashMap::new();
            for seq in out {
                let mut named = reqs[seq as usize].clone();
                named.sort_unstable();
                named.dedup();
                for p in &named {
                    if let Some(prev) = last.insert(*p, seq) {
                        prop_assert!(prev < seq, "payment {} went {} then {}", p, prev, seq);
                    }
                }
            }
        }
    }
}
