//! Inbox records: one per writer round (a new one after every [`GROUP`]
//! entries), not one per request. Accepting a round of n IPNs writes
//! ⌈n / 128⌉ inbox keys instead of n, and each apply round rewrites each
//! record it touches once, instead of removing one key per IPN.
//!
//! A record's key is the seq that started it (u64 BE: its first entry's,
//! which may since be applied); its value is its remaining entries, 24
//! bytes each, in seq order: seq (u64 BE) ‖ request id. Entries are added
//! only in the round that started the record, and seqs only rise, so every
//! seq of a record lies between its key and the next record's key, and a
//! scan in key order yields entries in seq order. A value of 16 bytes is an
//! entry written before grouping (an earlier build's store): its request
//! id, with seq = key.
//!
//! Applying an entry rewrites its record without it (the record goes when
//! its last entry does); the entry's [`WorkId::slot`] names the record.

use super::writer::{Stage, Writer, INBOX};
use super::*;

/// Most entries one record holds: a round with more starts another record.
/// 128 × 24 bytes stays far below sled's blob threshold (~128 KiB).
pub(super) const GROUP: usize = 128;
const ENTRY: usize = 24;
const LEGACY: usize = 16;

fn codec(what: &str) -> StoreError {
    StoreError::Codec(format!("inbox record: {what}"))
}

/// The entries of the record at `key`, in seq order.
pub(super) fn entries(key: &[u8], value: &[u8]) -> Result<Vec<(WorkId, Uuid)>, StoreError> {
    let slot = u64_key(key)?;
    if value.len() == LEGACY {
        let id = Uuid::from_slice(value).map_err(|e| codec(&e.to_string()))?;
        return Ok(vec![(WorkId::single(slot), id)]);
    }
    if !value.len().is_multiple_of(ENTRY) {
        return Err(codec("bad length"));
    }
    value
        .chunks_exact(ENTRY)
        .map(|c| {
            let seq = u64_key(&c[..8])?;
            let id = Uuid::from_slice(&c[8..]).map_err(|e| codec(&e.to_string()))?;
            Ok((WorkId { seq, slot }, id))
        })
        .collect()
}

/// How many entries a record holds.
pub(super) fn count(value: &[u8]) -> usize {
    if value.len() == LEGACY {
        1
    } else {
        value.len() / ENTRY
    }
}

/// The record's value without entry `seq`: None if it does not hold it,
/// Some(None) if that was its last entry.
fn without(slot: u64, value: &[u8], seq: u64) -> Option<Option<Vec<u8>>> {
    if value.len() == LEGACY {
        return (slot == seq).then_some(None);
    }
    let at = value
        .chunks_exact(ENTRY)
        .position(|c| c[..8] == seq.to_be_bytes())?;
    if value.len() == ENTRY {
        return Some(None);
    }
    let mut v = Vec::with_capacity(value.len() - ENTRY);
    v.extend_from_slice(&value[..at * ENTRY]);
    v.extend_from_slice(&value[(at + 1) * ENTRY..]);
    Some(Some(v))
}

impl Writer {
    /// Stage a new inbox entry in this round's record (a new record once
    /// the round's is full); its place.
    pub(super) fn push_inbox(&mut self, stage: &mut Stage, id: Uuid) -> Result<WorkId, StoreError> {
        let seq = self.next_id()?;
        let open = match self.inbox_slot {
            Some(slot) => self
                .get(stage, INBOX, &slot.to_be_bytes())?
                .map(|v| (slot, v)),
            None => None,
        };
        let (slot, mut value) = match open {
            Some((slot, v)) if v.len() < GROUP * ENTRY => (slot, v.to_vec()),
            // None open this round, or it is full: this entry starts one.
            _ => (seq, Vec::new()),
        };
        value.reserve(ENTRY);
        value.extend_from_slice(&seq.to_be_bytes());
        value.extend_from_slice(id.as_bytes());
        stage.put(INBOX, slot.to_be_bytes().to_vec(), Some(value));
        self.inbox_slot = Some(slot);
        Ok(WorkId { seq, slot })
    }

    /// Stage the removal of entry `work`; false if it is not in the inbox
    /// (applied before).
    pub(super) fn pop_inbox(&self, stage: &mut Stage, work: WorkId) -> Result<bool, StoreError> {
        let key = work.slot.to_be_bytes();
        let Some(value) = self.get(stage, INBOX, &key)? else {
            return Ok(false);
        };
        match without(work.slot, &value, work.seq) {
            None => Ok(false),
            Some(rest) => {
                stage.put(INBOX, key.to_vec(), rest);
                Ok(true)
            }
        }
    }
}

/// Inbox entries from seq `from` on (at most `limit`), in seq order.
pub(super) fn page(t: &Trees, from: u64, limit: usize) -> Result<Vec<(WorkId, Uuid)>, StoreError> {
    // Start at the record that may hold `from`: the last one keyed at or
    // below it.
    let start = match t.inbox.range(..=from.to_be_bytes()).next_back() {
        Some(kv) => kv?.0.to_vec(),
        None => from.to_be_bytes().to_vec(),
    };
    let mut out = Vec::new();
    for kv in t.inbox.range(start..) {
        let (k, v) = kv?;
        for e in entries(&k, &v)? {
            if e.0.seq >= from {
                out.push(e);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// Every inbox entry, newest first.
pub(super) fn newest_first(
    t: &Trees,
) -> impl Iterator<Item = Result<(WorkId, Uuid), StoreError>> + '_ {
    t.inbox.iter().rev().flat_map(|kv| {
        let es = kv
            .map_err(StoreError::from)
            .and_then(|(k, v)| entries(&k, &v));
        match es {
            Ok(mut es) => {
                es.reverse();
                es.into_iter().map(Ok).collect::<Vec<_>>()
            }
            Err(e) => vec![Err(e)],
        }
    })
}

/// How many entries the inbox holds (at open).
pub(super) fn len(t: &Trees) -> Result<usize, StoreError> {
    let mut n = 0;
    for v in t.inbox.iter().values() {
        n += count(&v?);
    }
    Ok(n)
}

/// The highest seq the inbox holds.
pub(super) fn last_seq(t: &Trees) -> Result<Option<u64>, StoreError> {
    match t.inbox.last()? {
        Some((k, v)) => Ok(entries(&k, &v)?.last().map(|e| e.0.seq)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn record(entries: &[(u64, u8)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (seq, n) in entries {
            v.extend_from_slice(&seq.to_be_bytes());
            v.extend_from_slice(id(*n).as_bytes());
        }
        v
    }

    #[test]
    fn a_record_lists_its_entries_and_drops_one_at_a_time() {
        let v = record(&[(5, 1), (6, 2), (9, 3)]);
        let got = entries(&5u64.to_be_bytes(), &v).unwrap();
        let seqs: Vec<(u64, u64)> = got.iter().map(|(w, _)| (w.seq, w.slot)).collect();
        assert_eq!(seqs, [(5, 5), (6, 5), (9, 5)]);
        assert_eq!(got[1].1, id(2));
        assert_eq!(count(&v), 3);
        let v = without(5, &v, 6).unwrap().unwrap();
        assert_eq!(v, record(&[(5, 1), (9, 3)]));
        assert_eq!(without(5, &v, 6), None, "gone already");
        let v = without(5, &v, 5).unwrap().unwrap();
        assert_eq!(without(5, &v, 9), Some(None), "the last one empties it");
    }

    #[test]
    fn a_record_written_before_grouping_is_one_entry() {
        let v = id(7).as_bytes().to_vec();
        let got = entries(&42u64.to_be_bytes(), &v).unwrap();
        assert_eq!(got, [(WorkId::single(42), id(7))]);
        assert_eq!(count(&v), 1);
        assert_eq!(without(42, &v, 41), None);
        assert_eq!(without(42, &v, 42), Some(None));
        assert!(entries(&1u64.to_be_bytes(), &[0; 25]).is_err());
    }
}
