//! The `deliveries_by_merchant` index: merchant ‖ 0 ‖ delivery ulid → ``,
//! so a merchant's delivery listing reads only its own deliveries, newest
//! first, instead of decoding every merchant's (a quiet merchant, or a
//! filter that matches nothing, used to cost a scan of the whole tree).
//!
//! Written with the delivery in the same round ([`super::relay_ops`]'s
//! enqueue) and removed with it by retention, in the same chunk. A store
//! written before the index existed gets it built at open, before the
//! writer starts, in one transaction with the `meta` mark
//! `by_merchant_built`: a crash before it leaves the store as it was (the
//! next open builds it), after it the index is whole. The crash point
//! `store::open::by_merchant` stops the process just before that write
//! (`tests/api/index_crash.rs`).

use ::sled::Transactional;

use super::relay_ops::delivery_ulid;
use super::*;

const BUILT: &[u8] = b"by_merchant_built";

/// merchant ‖ 0 ‖ ulid
pub(super) fn key(merchant: &str, ulid: &[u8]) -> Vec<u8> {
    joined(merchant, ulid)
}

/// Build the index from `deliveries` unless a previous open did: one
/// atomic write of every entry and the mark.
pub(super) fn build_if_missing(t: &Trees) -> Result<(), StoreError> {
    if t.meta.get(BUILT)?.is_some() {
        return Ok(());
    }
    let mut batch = ::sled::Batch::default();
    for kv in t.deliveries.iter() {
        let (k, v) = kv?;
        let d: DeliveryRecord = dec(&v)?;
        batch.insert(key(&d.merchant_id, &k), &[][..]);
    }
    crash_point("store::open::by_merchant");
    (&t.by_merchant, &t.meta)
        .transaction(|(index, meta)| {
            index.apply_batch(&batch)?;
            meta.insert(BUILT, &[][..])?;
            Ok::<(), ::sled::transaction::ConflictableTransactionError<()>>(())
        })
        .map_err(super::writer::tx_error)
}

/// A merchant's deliveries, newest first, that `keep` accepts, `limit` at most.
pub(super) fn deliveries(
    t: &Trees,
    merchant: &str,
    limit: usize,
    keep: impl Fn(&DeliveryRecord) -> bool,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut out = Vec::new();
    let prefix = joined(merchant, &[]);
    for k in t.by_merchant.scan_prefix(&prefix).keys().rev() {
        let k = k?;
        let ulid = &k[prefix.len()..];
        // Retention removes both in one round; a missing record is skipped.
        let Some(v) = t.deliveries.get(ulid)? else {
            continue;
        };
        let d: DeliveryRecord = dec(&v)?;
        if keep(&d) {
            out.push(d);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

/// The index key of a delivery record (for retention).
pub(super) fn key_of(d: &DeliveryRecord) -> Result<Vec<u8>, StoreError> {
    Ok(key(&d.merchant_id, &delivery_ulid(&d.id)?))
}
