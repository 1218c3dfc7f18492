//! Keeping failed authentications cheap to log (SPEC §4): a throttle for
//! the failed-authentication line ([`LogThrottle`]).

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
}
