//! What one writer round has staged so far, over the trees: an ordered map
//! per tree (so prefix scans merge it with the tree on disk) and an undo
//! log for the operation in progress (a failing operation is undone alone).

use std::collections::BTreeMap;

use ::sled::IVec;

use super::writer::TREES;
use super::StoreError;

/// What a round has written so far, over the trees (ordered, so prefix
/// scans can merge it with the trees).
pub(super) struct Stage {
    pub(super) maps: [BTreeMap<Vec<u8>, Option<IVec>>; TREES],
    /// (tree, key, what the stage held before) for the operation in progress.
    pub(super) undo: Vec<(usize, Vec<u8>, Option<Option<IVec>>)>,
}

impl Stage {
    /// Up to `limit` entries of `tree` under `prefix`, in key order, as the
    /// round sees them: `disk` (the tree) merged with what the round staged.
    pub(super) fn scan(
        &self,
        disk: &::sled::Tree,
        tree: usize,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, IVec)>, StoreError> {
        let mut out = Vec::new();
        let mut staged = self.maps[tree]
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut disk = disk.scan_prefix(prefix);
        let mut d = disk.next().transpose()?;
        while out.len() < limit {
            // The staged entry wins over the tree's for the same key.
            let staged_first = match (&d, staged.peek()) {
                (None, None) => break,
                (Some((dk, _)), Some((sk, _))) => sk.as_slice() <= dk.as_ref(),
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            if staged_first {
                let Some((sk, sv)) = staged.next() else { break };
                if d.as_ref()
                    .is_some_and(|(dk, _)| dk.as_ref() == sk.as_slice())
                {
                    d = disk.next().transpose()?;
                }
                if let Some(v) = sv {
                    out.push((sk.clone(), v.clone()));
                }
            } else if let Some((dk, dv)) = d.take() {
                out.push((dk.to_vec(), dv));
                d = disk.next().transpose()?;
            }
        }
        Ok(out)
    }

    /// What the round staged in `tree` (None: removed), in key order.
    pub(super) fn staged(&self, tree: usize) -> impl Iterator<Item = (&Vec<u8>, &Option<IVec>)> {
        self.maps[tree].iter()
    }

    pub(super) fn put(&mut self, tree: usize, key: Vec<u8>, value: Option<Vec<u8>>) {
        let value = value.map(IVec::from);
        let before = self.maps[tree].insert(key.clone(), value);
        self.undo.push((tree, key, before));
    }

    /// Undo everything staged since `mark` (newest first).
    pub(super) fn rollback(&mut self, mark: usize) {
        while self.undo.len() > mark {
            let Some((tree, key, before)) = self.undo.pop() else {
                break;
            };
            match before {
                Some(v) => self.maps[tree].insert(key, v),
                None => self.maps[tree].remove(&key),
            };
        }
    }
}
