//! What keeps unauthenticated traffic cheap (SPEC §4): a per-source token
//! bucket charged by failed authentications ([`SourceLimiter`]), and a
//! throttle for the failed-authentication log line ([`LogThrottle`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::Clock as _;
use governor::clock::Reference;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::clock::Clock;
use crate::config::RateLimit;

/// Past this many tracked sources, idle ones are forgotten.
const PRUNE_ABOVE: usize = 10_000;

type Instant = Nanos;

/// The service [`Clock`] as governor reads it (its monotonic nanoseconds),
/// so a test's manual clock also drives every token bucket.
#[derive(Clone)]
pub struct RateClock(pub Arc<dyn Clock>);

impl governor::clock::Clock for RateClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.0.monotonic_ns())
    }
}

/// One token bucket (a provider's `ingress.rate_limit`).
pub type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, RateClock, NoOpMiddleware<Nanos>>;

/// A token bucket per key.
type KeyedLimiter<K> = RateLimiter<K, DefaultKeyedStateStore<K>, RateClock, NoOpMiddleware<Nanos>>;

/// A provider's bucket, on the service clock.
pub fn direct(rate: RateLimit, clock: &Arc<dyn Clock>) -> DirectLimiter {
    RateLimiter::direct_with_clock(quota(rate), RateClock(clock.clone()))
}

/// `ingress.unauthenticated_rate_limit`, per source address.
///
/// Checked before authentication ([`SourceLimiter::retry_after`]) and charged
/// only when authentication fails ([`SourceLimiter::charge_failure`]), so a
/// source's signed requests never spend its bucket. governor cannot look at
/// a bucket without taking a token, so the check reads what the last charge
/// found: a charge the bucket refused marks the source empty until the next
/// token. The failure that finds the bucket empty is still answered 401; the
/// requests after it get 429 until a token is back.
pub struct SourceLimiter {
    buckets: KeyedLimiter<IpAddr>,
    /// Sources whose bucket a charge found empty, and when it has a token again.
    empty_until: Mutex<HashMap<IpAddr, Instant>>,
}

impl SourceLimiter {
    pub fn new(rate: RateLimit, clock: &Arc<dyn Clock>) -> SourceLimiter {
        SourceLimiter {
            buckets: RateLimiter::new(
                quota(rate),
                DefaultKeyedStateStore::default(),
                RateClock(clock.clone()),
            ),
            empty_until: Mutex::new(HashMap::new()),
        }
    }

    /// Whole seconds to wait when `source`'s bucket is empty; None = go on.
    pub fn retry_after(&self, source: IpAddr) -> Option<u64> {
        let now = self.buckets.clock().now();
        let mut empty = self.empty_until.lock().unwrap_or_else(|e| e.into_inner());
        match empty.get(&source) {
            Some(&until) if until > now => Some(whole_seconds(until, now)),
            Some(_) => {
                empty.remove(&source);
                None
            }
            None => None,
        }
    }

    /// Take a token from `source`'s bucket for a failed authentication.
    pub fn charge_failure(&self, source: IpAddr) {
        if let Err(not_until) = self.buckets.check_key(&source) {
            let now = self.buckets.clock().now();
            let mut empty = self.empty_until.lock().unwrap_or_else(|e| e.into_inner());
            if empty.len() >= PRUNE_ABOVE {
                empty.retain(|_, until| *until > now);
            }
            empty.insert(source, not_until.earliest_possible());
        }
        if self.buckets.len() > PRUNE_ABOVE {
            self.buckets.retain_recent();
        }
    }
}

/// A governor quota from a validated `{ per_second, burst }`.
pub fn quota(r: RateLimit) -> Quota {
    Quota::per_second(NonZeroU32::new(r.per_second).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(r.burst).unwrap_or(NonZeroU32::MIN))
}

/// `Retry-After` seconds: at least 1, rounded up.
pub fn whole_seconds(until: Instant, now: Instant) -> u64 {
    let wait: std::time::Duration = until.duration_since(now).into();
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// At most [`LogThrottle::PER_SECOND`] lines per second (of the service
/// clock); the next line let through says how many were left out.
#[derive(Debug, Default)]
pub struct LogThrottle {
    window_start_ms: i64,
    in_window: u32,
    suppressed: u64,
}

impl LogThrottle {
    pub const PER_SECOND: u32 = 5;

    /// May a line be logged at `now_ms`? `Some(n)`: yes, and `n` lines were
    /// suppressed since the last one logged. `None`: suppress it.
    pub fn admit(&mut self, now_ms: i64) -> Option<u64> {
        if now_ms >= self.window_start_ms + 1000 || now_ms < self.window_start_ms {
            self.window_start_ms = now_ms;
            self.in_window = 0;
        }
        if self.in_window < Self::PER_SECOND {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_throttle_lets_a_few_lines_a_second_through_and_counts_the_rest() {
        let mut t = LogThrottle::default();
        let t0 = 1_700_000_000_000;
        for i in 0..LogThrottle::PER_SECOND {
            assert_eq!(t.admit(t0 + i as i64), Some(0), "line {i}");
        }
        for _ in 0..7 {
            assert_eq!(t.admit(t0 + 500), None);
        }
        // Still the same second.
        assert_eq!(t.admit(t0 + 999), None);
        // A new second: the first line reports the 8 left out, then it resets.
        assert_eq!(t.admit(t0 + 1000), Some(8));
        assert_eq!(t.admit(t0 + 1001), Some(0));
        // A clock that went back starts a new window rather than muting forever.
        while t.admit(t0 + 1002).is_some() {}
        assert_eq!(t.admit(t0 + 1003), None);
        assert_eq!(t.admit(t0), Some(2));
    }

    #[test]
    fn a_source_is_refused_only_after_its_failures_emptied_its_bucket() {
        let clock = crate::clock::ManualClock::new(1_700_000_000_000);
        let service: Arc<dyn Clock> = Arc::new(clock.clone());
        let l = SourceLimiter::new(
            RateLimit {
                per_second: 1,
                burst: 3,
            },
            &service,
        );
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.retry_after(a), None);
            l.charge_failure(a);
        }
        // The bucket is empty, but only a charge finds out.
        assert_eq!(l.retry_after(a), None);
        l.charge_failure(a);
        assert_eq!(l.retry_after(a), Some(1));
        // Another source is untouched.
        assert_eq!(l.retry_after(b), None);
        // A second later the source has a token again.
        clock.advance(std::time::Duration::from_secs(1));
        assert_eq!(l.retry_after(a), None);
    }
}
