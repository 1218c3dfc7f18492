//! Committing one writer round: plain sled writes behind an undo record,
//! so that after a crash a round is there whole or not at all.
//!
//! **Why not a sled transaction.** In sled 0.34.7 every transaction (and
//! every `Tree::apply_batch`) pins the log for its batch manifest, and
//! pinning rolls the current log buffer before and after the manifest: two
//! extra log-buffer writes per round, each a `pwrite` + `sync_file_range`
//! on sled's I/O pool (whose every job wakes all seven idle pool threads),
//! on top of the group flush's own. Measured on the ingest bench, plain
//! writes take 15–25% less CPU per IPN (see the README, Performance).
//!
//! **The scheme.** The writer thread, the only one that writes:
//! 1. reads the value every staged key has now (its *before-image*);
//! 2. inserts them all as one value, the undo record, under `meta`'s
//!    `undo` key (one key, so it is there whole or not at all);
//! 3. writes the staged values, tree by tree in [`WRITE_ORDER`], key order
//!    within a tree (plain inserts and removes);
//! 4. removes the undo record.
//!
//! After a process crash, sled recovers a *prefix* of its log: an offset is
//! stable only once everything before it is written, and recovery stops at
//! the first torn or missing message (`check_contiguity_in_unstable_tail`,
//! then `LogIter` up to that point; sled's own batch manifests rely on the
//! same). Page consolidations, splits and segment rewrites log a page as
//! it is after the writes it holds, so they come later in the log than
//! those writes. One thread logs steps 2–4 in order. So the store holds
//! nothing of the round, or the undo record and part of the writes, or the
//! whole round (step 4 is in the log). In the middle case [`recover`], at
//! the next open and before anything reads, puts every before-image back
//! and then removes the record, as plain writes again: a crash during
//! recovery leaves the record, and the next open repeats it (putting a
//! before-image back twice is putting it back once).
//!
//! On power loss the argument is weaker, as it was for sled's
//! transactions: sled writes each log buffer with `sync_file_range`, which
//! does not flush the disk's cache, so buffers not yet covered by a group
//! flush (`db.flush()` + `fdatasync`, [`super::flush`]) may reach the
//! platter out of order. Nothing acknowledged depends on them: an ack, a
//! delivery and a listed event all wait for a group flush that covers the
//! whole round.
//!
//! A round whose before-images come to more than [`UNDO_MAX`] bytes (a very
//! large round, or retention removing large requests) commits as one sled
//! transaction instead, so the undo record never becomes a blob file.
//!
//! If a write fails half-way (an I/O error), the store is fatal and the
//! process stops; the writer writes nothing more (every later round fails),
//! and the next open rolls the round back. Until the process is gone,
//! reads may see the half-written round. A record already in `meta` when
//! a round begins means exactly that: [`write`] refuses to write on top.
//! The record also holds the `id_last` mark from before and after its
//! round; [`recover`] refuses to open a store whose mark moved past both
//! (an older build, which ignores the record, wrote on top after a crash).
//!
//! **Readers** (HTTP reads, the dispatcher) take no part: they may see a
//! round half-written for the moment it takes, where a transaction would
//! have hidden it. [`WRITE_ORDER`] puts every record before what names it
//! (a request before its inbox and dedupe entries; an event before its
//! index entry and the history entry, task result and deliveries that
//! carry its id; a delivery before its lane, due and index entries), so an
//! insert is never named before it exists. The other way round, for the
//! moment a round takes, a reader may find an index entry whose record
//! retention just removed (the readers skip it; an events cursor naming
//! that event is answered as unknown, as it will be once retention is
//! done), a `due` entry a moment older than its delivery's record, or a
//! history entry a moment before the payment's new version. The
//! dispatcher sends only after the group flush covering every round begun
//! before its read ([`super::flush::GroupCommit::started`]).
//!
//! Crash point (tests only): `store::write::partial`, half-way through step
//! 3 of a round with at least two writes, flushes what was written so far
//! and stops the process, leaving a half-written round on disk.

use ::sled::{IVec, Transactional};

use super::stage::Stage;
use super::writer::*;
use super::StoreError;

/// Above this many bytes of before-images, a round commits as a
/// transaction. sled logs a message over segment size / 4 (128 KiB by
/// default) to a blob file of its own, which it never syncs and which its
/// recovery skips when missing; the undo record, with the few small keys
/// of `meta` beside it in its node, stays well below that.
const UNDO_MAX: usize = 64 * 1024;
/// The `meta` key of the undo record.
const UNDO: &[u8] = b"undo";

type Trees = [::sled::Tree; TREES];

/// The order a round's writes go in (tree indexes): records before what
/// names them, so a reader never finds a name before its record: a
/// request before its inbox entry and dedupe record, an event before its
/// index entry, history, task result and deliveries, history before the
/// payment's new version, a delivery before its lane, due and index
/// entries and attempts. Crash atomicity does not depend on it.
const WRITE_ORDER: [usize; TREES] = [
    REQUESTS,
    QUARANTINE,
    EVENTS,
    EVENT_IDS,
    HISTORY,
    PAYMENTS,
    TASKS,
    INBOX,
    DEDUPE,
    ENDPOINTS,
    DELIVERIES,
    LANES,
    DUE,
    ATTEMPTS,
    BY_MERCHANT,
    META,
];

/// Every staged key's value in the trees now (its before-image): per
/// tree, in the order of that tree's staged keys.
pub(super) type Befores = [Vec<Option<IVec>>; TREES];

/// Step 1 (the writer also counts the round's stats from them).
pub(super) fn before_images(all: &Trees, stage: &Stage) -> Result<Befores, StoreError> {
    let mut out: Befores = Default::default();
    for (tree, map) in stage.maps.iter().enumerate() {
        for key in map.keys() {
            out[tree].push(all[tree].get(key)?);
        }
    }
    Ok(out)
}

/// Commit `stage`, whose [`before_images`] are `befores` (see the module
/// docs).
pub(super) fn write(all: &Trees, stage: &Stage, befores: &Befores) -> Result<(), StoreError> {
    let writes: usize = stage.maps.iter().map(|m| m.len()).sum();
    if writes == 0 {
        return Ok(());
    }
    let meta = &all[META];
    // Only a round the next open would have to roll back leaves a record
    // behind, and nothing may be written on top of that.
    if meta.contains_key(UNDO)? {
        return Err(StoreError::Io(
            "an earlier round was left half-written; reopen the store to roll it back".into(),
        ));
    }
    let Some(undo) = undo_record(all, stage, befores)? else {
        return write_transaction(all, stage);
    };
    meta.insert(UNDO, undo)?;
    let mut done = 0;
    for tree in WRITE_ORDER {
        for (key, value) in &stage.maps[tree] {
            if done == writes / 2 && writes >= 2 {
                partial_crash_point(meta);
            }
            match value {
                Some(v) => all[tree].insert(key.as_slice(), v.clone())?,
                None => all[tree].remove(key.as_slice())?,
            };
            done += 1;
        }
    }
    meta.remove(UNDO)?;
    Ok(())
}

/// Step 2's record: the `id_last` mark before and after the round (see
/// [`recover`]), then every staged key's before-image; None above
/// [`UNDO_MAX`] bytes.
fn undo_record(
    all: &Trees,
    stage: &Stage,
    befores: &Befores,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut undo = Vec::new();
    let mark = all[META].get(ID_LAST)?;
    let after = match stage.maps[META].get(ID_LAST) {
        Some(staged) => staged.clone(),
        None => mark.clone(),
    };
    put_opt(&mut undo, mark.as_deref());
    put_opt(&mut undo, after.as_deref());
    for (tree, map) in stage.maps.iter().enumerate() {
        for (key, before) in map.keys().zip(&befores[tree]) {
            encode(&mut undo, tree, key, before.as_deref());
            if undo.len() > UNDO_MAX {
                return Ok(None);
            }
        }
    }
    Ok(Some(undo))
}

/// At open: put back the before-images of a round a crash left half
/// written, then drop its undo record. Returns how many keys it put back.
///
/// Only if the store's `id_last` mark is still the one from before or
/// after that round: otherwise rounds were committed on top of it (an
/// older build, which ignores the record, opened the store after the
/// crash), and putting the before-images back would undo their writes, so
/// the open is refused instead.
pub(super) fn recover(all: &Trees) -> Result<usize, StoreError> {
    let meta = &all[META];
    let Some(undo) = meta.get(UNDO)? else {
        return Ok(0);
    };
    let bad = || StoreError::Codec("undo record".into());
    let (mark, rest) = take_opt(&undo).ok_or_else(bad)?;
    let (after, mut rest) = take_opt(rest).ok_or_else(bad)?;
    let now = meta.get(ID_LAST)?;
    if now != mark && now != after {
        return Err(StoreError::Open(
            "the store holds the undo record of a round that a crash left half-written, \
             and later writes were made on top of it (by an older build?); \
             restore it from a backup"
                .into(),
        ));
    }
    let mut restored = 0;
    while !rest.is_empty() {
        let (tree, key, before, tail) = decode(rest)?;
        match before {
            Some(v) => all[tree].insert(key, v)?,
            None => all[tree].remove(key)?,
        };
        restored += 1;
        rest = tail;
    }
    meta.remove(UNDO)?;
    meta.flush()?;
    tracing::warn!(
        keys = restored,
        "a crash left a writer round half-written; rolled it back"
    );
    Ok(restored)
}

/// The round in one sled transaction (for rounds with large before-images).
fn write_transaction(all: &Trees, stage: &Stage) -> Result<(), StoreError> {
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
    all[..]
        .transaction(|tx| {
            for (i, b) in &batches {
                tx[*i].apply_batch(b)?;
            }
            Ok::<(), ::sled::transaction::ConflictableTransactionError<()>>(())
        })
        .map_err(tx_error)
}

/// tree (1) ‖ key length (u32 BE) ‖ key ‖ the before-image ([`put_opt`]).
fn encode(out: &mut Vec<u8>, tree: usize, key: &[u8], before: Option<&[u8]>) {
    out.push(tree as u8);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    put_opt(out, before);
}

/// 0 (absent), or 1 ‖ length (u32 BE) ‖ value.
fn put_opt(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v);
        }
    }
}

fn take_opt(b: &[u8]) -> Option<(Option<IVec>, &[u8])> {
    let (&flag, rest) = b.split_first()?;
    match flag {
        0 => Some((None, rest)),
        1 => {
            let (v, rest) = take_len(rest)?;
            Some((Some(IVec::from(v)), rest))
        }
        _ => None,
    }
}

type Entry<'a> = (usize, &'a [u8], Option<IVec>, &'a [u8]);

fn decode(b: &[u8]) -> Result<Entry<'_>, StoreError> {
    let bad = || StoreError::Codec("undo record".into());
    let (&tree, rest) = b.split_first().ok_or_else(bad)?;
    let tree = tree as usize;
    if tree >= TREES {
        return Err(bad());
    }
    let (key, rest) = take_len(rest).ok_or_else(bad)?;
    let (before, rest) = take_opt(rest).ok_or_else(bad)?;
    Ok((tree, key, before, rest))
}

/// A u32 BE length and that many bytes.
fn take_len(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = b.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// `store::write::partial`: flush the half-written round, then stop.
fn partial_crash_point(meta: &::sled::Tree) {
    let _ = meta;
    fail::fail_point!("store::write::partial", |_| {
        let _ = meta.flush();
        std::process::abort();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> (::sled::Db, Trees) {
        // A db this test dropped a moment ago may still hold its file lock
        // while its last log write finishes on sled's I/O pool.
        let db = super::super::open_when_unlocked(
            dir,
            || ::sled::Config::new().path(dir).open(),
            |_| true,
        );
        let all: Vec<::sled::Tree> = (0..TREES)
            .map(|i| db.open_tree(format!("t{i}")).unwrap())
            .collect();
        (db, all.try_into().unwrap())
    }

    fn commit(all: &Trees, stage: &Stage) -> Result<(), StoreError> {
        write(all, stage, &before_images(all, stage)?)
    }

    fn record(all: &Trees, stage: &Stage) -> Result<Option<Vec<u8>>, StoreError> {
        undo_record(all, stage, &before_images(all, stage)?)
    }

    fn stage_of(puts: &[(usize, &str, Option<&str>)]) -> Stage {
        let mut s = Stage {
            maps: Default::default(),
            undo: Vec::new(),
        };
        for (t, k, v) in puts {
            s.put(*t, k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()));
        }
        s
    }

    fn dump(all: &Trees) -> Vec<(usize, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for (i, t) in all.iter().enumerate() {
            for kv in t.iter() {
                let (k, v) = kv.unwrap();
                out.push((i, k.to_vec(), v.to_vec()));
            }
        }
        out
    }

    #[test]
    fn a_round_is_written_whole_and_leaves_no_undo_record() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, all) = open(dir.path());
        commit(&all, &stage_of(&[(0, "a", Some("1")), (3, "b", Some("2"))])).unwrap();
        commit(&all, &stage_of(&[(0, "a", None), (3, "b", Some("3"))])).unwrap();
        assert_eq!(dump(&all), vec![(3, b"b".to_vec(), b"3".to_vec())]);
        assert_eq!(recover(&all).unwrap(), 0);
    }

    /// What a crash half-way through step 3 leaves on disk: the undo
    /// record and some of the writes. The next open takes all of it back.
    #[test]
    fn a_half_written_round_is_rolled_back_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (db, all) = open(dir.path());
            commit(
                &all,
                &stage_of(&[(0, "kept", Some("old")), (5, "gone", Some("x"))]),
            )
            .unwrap();
            let before = dump(&all);
            // Steps 1 and 2 of a round that rewrites "kept", removes "gone"
            // and adds "new"; then only the first two of its writes.
            let round = stage_of(&[
                (0, "kept", Some("new value")),
                (0, "new", Some("n")),
                (5, "gone", None),
            ]);
            let undo = record(&all, &round).unwrap().unwrap();
            all[META].insert(UNDO, undo).unwrap();
            all[0].insert("kept", "new value").unwrap();
            all[0].insert("new", "n").unwrap();
            db.flush().unwrap();
            drop(all);
            drop(db);
            let (_db, all) = open(dir.path());
            assert_eq!(recover(&all).unwrap(), 3);
            assert_eq!(dump(&all), before, "the store as it was before the round");
            assert_eq!(recover(&all).unwrap(), 0, "the undo record is gone");
        }
    }

    /// A crash during the rollback at open (some before-images put back,
    /// the record still there): the next open puts them all back again.
    #[test]
    fn a_rollback_cut_short_is_done_whole_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, all) = open(dir.path());
        commit(
            &all,
            &stage_of(&[(0, "a", Some("old")), (2, "b", Some("old"))]),
        )
        .unwrap();
        let before = dump(&all);
        let round = stage_of(&[(0, "a", Some("new")), (2, "b", None), (4, "c", Some("n"))]);
        all[META]
            .insert(UNDO, record(&all, &round).unwrap().unwrap())
            .unwrap();
        all[0].insert("a", "new").unwrap();
        all[2].remove("b").unwrap();
        all[4].insert("c", "n").unwrap();
        // The first before-image put back, then the stop.
        all[0].insert("a", "old").unwrap();
        assert_eq!(recover(&all).unwrap(), 3);
        assert_eq!(dump(&all), before);
    }

    #[test]
    fn a_large_round_of_small_keys_commits_as_a_transaction_too() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, all) = open(dir.path());
        // 3000 new keys: 48 KB of keys, 66 KB with their entry headers, over
        // UNDO_MAX (undo records never grow into sled blobs).
        let keys: Vec<String> = (0..3000).map(|i| format!("request-{i:08}")).collect();
        let puts: Vec<(usize, &str, Option<&str>)> =
            keys.iter().map(|k| (0, k.as_str(), Some("v"))).collect();
        let stage = stage_of(&puts);
        assert!(record(&all, &stage).unwrap().is_none());
        commit(&all, &stage).unwrap();
        assert_eq!(all[0].len(), 3000);
        assert_eq!(recover(&all).unwrap(), 0);
        // A round of 100 of them has a record, and it decodes whole.
        let small = stage_of(&puts[..100]);
        let undo = record(&all, &small).unwrap().unwrap();
        assert!(undo.len() <= UNDO_MAX);
        // The id_last marks (none here), then the entries.
        let (mark, rest) = take_opt(&undo).unwrap();
        let (after, mut rest) = take_opt(rest).unwrap();
        assert_eq!((mark, after), (None, None));
        let mut n = 0;
        while !rest.is_empty() {
            let (tree, _, before, tail) = decode(rest).unwrap();
            assert_eq!((tree, before.as_deref()), (0, Some(&b"v"[..])));
            rest = tail;
            n += 1;
        }
        assert_eq!(n, 100);
    }

    #[test]
    fn a_round_with_more_than_undo_max_of_before_images_commits_as_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, all) = open(dir.path());
        let big = "v".repeat(300_000);
        let keys = ["a", "b", "c", "d"];
        let puts: Vec<(usize, &str, Option<&str>)> =
            keys.iter().map(|k| (0, *k, Some(big.as_str()))).collect();
        commit(&all, &stage_of(&puts)).unwrap();
        let removals: Vec<(usize, &str, Option<&str>)> =
            keys.iter().map(|k| (0, *k, None)).collect();
        let stage = stage_of(&removals);
        assert!(record(&all, &stage).unwrap().is_none());
        commit(&all, &stage).unwrap();
        assert!(all[0].is_empty());
        assert_eq!(recover(&all).unwrap(), 0);
    }

    /// An older build opened the store after the crash (it ignores the
    /// record) and handed out ids: the before-images are stale.
    #[test]
    fn an_undo_record_that_later_rounds_overtook_refuses_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, all) = open(dir.path());
        let id = |n: u64| Some(n.to_be_bytes().to_vec());
        commit(&all, &stage_of(&[(0, "a", Some("1"))])).unwrap();
        all[META].insert(ID_LAST, id(5).unwrap()).unwrap();
        let mut round = stage_of(&[(0, "a", Some("2"))]);
        round.put(META, ID_LAST.to_vec(), id(6));
        let undo = record(&all, &round).unwrap().unwrap();
        all[META].insert(UNDO, undo.clone()).unwrap();
        all[0].insert("a", "2").unwrap();
        // Still the mark from before (or after) the round: rolled back.
        assert_eq!(recover(&all).unwrap(), 2);
        assert_eq!(all[0].get("a").unwrap().unwrap(), "1");
        // Later rounds moved the mark on: refused, nothing touched.
        all[META].insert(UNDO, undo).unwrap();
        all[META].insert(ID_LAST, id(9).unwrap()).unwrap();
        all[0].insert("a", "3").unwrap();
        let e = recover(&all).unwrap_err();
        assert!(
            e.to_string().contains("later writes were made on top"),
            "{e}"
        );
        assert_eq!(all[0].get("a").unwrap().unwrap(), "3");
    }

    #[test]
    fn nothing_is_written_on_top_of_a_half_written_round() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, all) = open(dir.path());
        let first = stage_of(&[(0, "a", Some("1")), (1, "b", Some("1"))]);
        all[META]
            .insert(UNDO, record(&all, &first).unwrap().unwrap())
            .unwrap();
        let e = commit(&all, &stage_of(&[(0, "c", Some("1"))])).unwrap_err();
        assert!(e.to_string().contains("half-written"), "{e}");
        assert!(all[0].get("c").unwrap().is_none());
    }

    #[test]
    fn a_damaged_undo_record_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, all) = open(dir.path());
        all[META].insert(UNDO, vec![0u8, 0, 0, 0, 9, b'k']).unwrap();
        let e = recover(&all).unwrap_err();
        assert!(e.to_string().contains("undo record"), "{e}");
    }
}
