//! Record and key encodings shared by the sled backend's modules, and its
//! test-only crash point.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::super::*;
use super::FORMAT;

pub(super) fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(v, vec![FORMAT]).map_err(|e| StoreError::Codec(e.to_string()))
}

pub(super) fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    match b.split_first() {
        Some((&FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|e| StoreError::Codec(e.to_string()))
        }
        _ => Err(StoreError::Codec("unknown record format".into())),
    }
}

/// A quarantine value: the current layout, else the legacy one (whole body),
/// converted. The current layout never decodes as the legacy one by
/// mistake: it is tried first, and a legacy value ends where the current
/// layout still expects `body_len`.
pub(super) fn dec_quarantine(b: &[u8]) -> Result<QuarantineRecord, StoreError> {
    dec::<QuarantineRecord>(b).or_else(|e| {
        dec::<LegacyQuarantineRecord>(b)
            .map(QuarantineRecord::from)
            .map_err(|_| e)
    })
}

impl From<::sled::Error> for StoreError {
    fn from(e: ::sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// A test-only crash point: with the `failpoints` feature and
/// `FAILPOINTS=<name>=<n>*off->return` in the environment, the process
/// stops on the spot (as `kill -9` would) the n+1-th time it gets here.
/// Without the feature this is nothing.
pub(super) fn crash_point(name: &str) {
    let _ = name;
    fail::fail_point!(name, |_| {
        std::process::abort();
    });
}

pub(super) fn joined(a: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + rest.len());
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(rest);
    k
}

pub(super) fn payment_key(k: &PaymentKey) -> Vec<u8> {
    joined(&k.merchant_id, k.payment_id.as_bytes())
}

pub(super) fn history_key(k: &PaymentKey, version: u64) -> Vec<u8> {
    let mut key = payment_key(k);
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

pub(super) fn u64_key(k: &[u8]) -> Result<u64, StoreError> {
    let tail: [u8; 8] = k
        .get(k.len().saturating_sub(8)..)
        .and_then(|t| t.try_into().ok())
        .ok_or_else(|| StoreError::Codec("u64 key".into()))?;
    Ok(u64::from_be_bytes(tail))
}

/// The event ULID of an `evt_…` id, if it is one.
pub(super) fn event_ulid(event_id: &str) -> Option<[u8; 16]> {
    let u = ulid::Ulid::from_string(event_id.strip_prefix("evt_")?).ok()?;
    Some(u.0.to_be_bytes())
}

/// The task of a stored request that has no task record yet.
pub(super) fn processing_task(r: &RawRequest) -> TaskRecord {
    TaskRecord {
        request_id: r.request_id,
        provider: r.provider.clone(),
        state: TaskState::Processing,
        created_at: r.received_at,
        finished_at: None,
        events: Vec::new(),
        error: None,
        error_read: false,
    }
}
