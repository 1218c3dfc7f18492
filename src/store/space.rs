//! Free space on the store's filesystem, checked cheaply (SPEC §8).
//!
//! [`FreeSpace::low`] answers from a cached flag and re-measures with
//! `statvfs(2)` at most every [`RECHECK`]. Below `storage.min_free_space`
//! ingest and `/readyz` answer 503 *before* sled meets ENOSPC (a failed
//! sled write is fatal, see [`super::Store::failed`]); as soon as space is
//! back above the threshold they answer normally again.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a measurement is trusted.
pub const RECHECK: Duration = Duration::from_millis(250);

pub struct FreeSpace {
    path: Option<CString>,
    min_free: u64,
    start: Instant,
    /// Nanoseconds after `start` when the next measurement is due.
    next_ns: AtomicU64,
    low: AtomicBool,
}

impl FreeSpace {
    /// Watch the filesystem holding `path`; `min_free == 0` turns it off.
    pub fn new(path: &Path, min_free: u64) -> FreeSpace {
        FreeSpace {
            path: CString::new(path.as_os_str().as_bytes()).ok(),
            min_free,
            start: Instant::now(),
            next_ns: AtomicU64::new(0),
            low: AtomicBool::new(false),
        }
    }

    /// Bytes available to an unprivileged writer on the filesystem, if
    /// `statvfs` can tell.
    pub fn available(&self) -> Option<u64> {
        let path = self.path.as_ref()?;
        // SAFETY: `path` is NUL-terminated; `st` is written by the call.
        unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(path.as_ptr(), &mut st) != 0 {
                return None;
            }
            Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
        }
    }

    /// Is free space below the threshold (as of a measurement at most
    /// [`RECHECK`] old)? A failed measurement counts as not low: the store's
    /// own write errors still guard durability.
    pub fn low(&self) -> bool {
        if self.min_free == 0 {
            return false;
        }
        let now = self.start.elapsed().as_nanos() as u64;
        let due = self.next_ns.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_ns
                .compare_exchange(
                    due,
                    now + RECHECK.as_nanos() as u64,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let low = self.available().is_some_and(|a| a < self.min_free);
            if self.low.swap(low, Ordering::AcqRel) != low {
                if low {
                    tracing::warn!(
                        min_free_space = self.min_free,
                        "free disk space below storage.min_free_space; refusing IPNs with 503"
                    );
                } else {
                    tracing::info!(
                        "free disk space above storage.min_free_space again; accepting IPNs"
                    );
                }
            }
        }
        self.low.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_zero_is_off_and_a_huge_one_is_low() {
        let dir = std::env::temp_dir();
        assert!(!FreeSpace::new(&dir, 0).low());
        assert!(FreeSpace::new(&dir, u64::MAX).low());
        assert!(!FreeSpace::new(&dir, 1).low());
        assert!(FreeSpace::new(&dir, 1).available().is_some());
    }
}
