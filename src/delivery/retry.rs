//! Retry timing for outbound notifications (SPEC §6), as pure functions.
//!
//! After each attempt the dispatcher asks [`verdict`] what happens next:
//! any 2xx succeeded, 410 disables the endpoint, everything else (3xx
//! included, since redirects are not followed, and no response at all) is a
//! failure retried per `delivery.retry_schedule` with ±20 % jitter. A
//! `Retry-After` on 429/503 replaces the jittered step but is bounded by the
//! schedule's last step, so an endpoint cannot park a delivery for a year.
//! After the last step the delivery is dead.
//!
//! Nothing here reads a clock or a random source of its own: the caller
//! passes the jitter ([`jitter`]) and "now" ([`parse_retry_after`]), so every
//! rule is testable exactly.

use std::time::Duration;

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx: the delivery is done.
    Succeeded,
    /// A 410: the endpoint asked to be disabled.
    Gone,
    /// A failure with steps left: try again after this long.
    Retry { after: Duration },
    /// A failure after the last step: kept as `dead`, retryable by hand.
    Dead,
}

/// How far jitter may move a step: ±20 %.
pub const JITTER_FRACTION: f64 = 0.2;

/// What to do after an attempt. `attempts`: attempts made so far, this one
/// included (>= 1; 0 is treated as 1). `status`: the HTTP status if a response
/// arrived (None = timeout/connect error/refused target). `retry_after`: the
/// parsed Retry-After of that response, if any. `jitter` in [-1.0, 1.0]
/// (clamped; NaN counts as 0).
pub fn verdict(
    schedule: &[Duration],
    attempts: u32,
    status: Option<u16>,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Verdict {
    match status {
        Some(s) if (200..300).contains(&s) => return Verdict::Succeeded,
        Some(410) => return Verdict::Gone,
        _ => {}
    }
    let index = attempts.max(1) as usize - 1;
    let (Some(step), Some(last)) = (schedule.get(index), schedule.last()) else {
        return Verdict::Dead;
    };
    let after = match (status, retry_after) {
        (Some(429 | 503), Some(r)) => r.min(*last),
        _ => jittered(*step, jitter),
    };
    Verdict::Retry { after }
}

/// `step` scaled by `1 + 0.2 * jitter`.
fn jittered(step: Duration, jitter: f64) -> Duration {
    let j = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(-1.0, 1.0)
    };
    // Integer nanoseconds plus a rounded offset: exact for whole steps,
    // and saturating rather than panicking on absurd schedules.
    let nanos = step.as_nanos();
    let offset = (nanos as f64 * JITTER_FRACTION * j).round();
    let total = if offset >= 0.0 {
        nanos.saturating_add(offset as u128)
    } else {
        nanos.saturating_sub((-offset) as u128)
    };
    let secs = u64::try_from(total / 1_000_000_000).unwrap_or(u64::MAX);
    if secs == u64::MAX {
        return Duration::MAX;
    }
    Duration::new(secs, (total % 1_000_000_000) as u32)
}

/// A jitter value, uniform in [-1, 1].
pub fn jitter(rng: &mut impl rand::Rng) -> f64 {
    rng.gen_range(-1.0..=1.0)
}

/// Parse a Retry-After value: delta-seconds or an HTTP-date (relative to
/// `now_ms`, unix milliseconds). None if unparseable or negative (a date in
/// the past, a signed number).
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to fit is still "a very long time"; the schedule's
        // last step bounds it anyway.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    let at_ms = i64::try_from(at_ms).ok()?;
    let delta = at_ms.checked_sub(now_ms)?;
    u64::try_from(delta).ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// The default schedule of SPEC §2.
    fn default_schedule() -> Vec<Duration> {
        [5, 300, 1800, 7200, 18000, 36000, 36000]
            .into_iter()
            .map(s)
            .collect()
    }

    #[test]
    fn every_2xx_succeeds_whatever_the_attempt() {
        for status in [200, 201, 202, 204, 299] {
            for attempts in [1, 7, 8, 1000] {
                assert_eq!(
                    verdict(&default_schedule(), attempts, Some(status), None, 1.0),
                    Verdict::Succeeded
                );
            }
            assert_eq!(verdict(&[], 1, Some(status), None, 0.0), Verdict::Succeeded);
        }
    }

    #[test]
    fn gone_is_410_only_and_beats_dead() {
        assert_eq!(
            verdict(&default_schedule(), 1, Some(410), None, 0.0),
            Verdict::Gone
        );
        assert_eq!(verdict(&[], 99, Some(410), Some(s(1)), 0.0), Verdict::Gone);
        assert!(matches!(
            verdict(&default_schedule(), 1, Some(404), None, 0.0),
            Verdict::Retry { .. }
        ));
    }

    #[test]
    fn failures_walk_the_schedule_then_die() {
        let sched = default_schedule();
        for status in [
            None,
            Some(100),
            Some(199),
            Some(300),
            Some(302),
            Some(400),
            Some(500),
        ] {
            for (i, step) in sched.iter().enumerate() {
                assert_eq!(
                    verdict(&sched, i as u32 + 1, status, None, 0.0),
                    Verdict::Retry { after: *step },
                    "status {status:?} attempt {}",
                    i + 1
                );
            }
            assert_eq!(verdict(&sched, 8, status, None, 0.0), Verdict::Dead);
            assert_eq!(verdict(&sched, u32::MAX, status, None, 0.0), Verdict::Dead);
        }
    }

    #[test]
    fn attempts_zero_counts_as_the_first() {
        assert_eq!(
            verdict(&default_schedule(), 0, None, None, 0.0),
            Verdict::Retry { after: s(5) }
        );
    }

    #[test]
    fn empty_schedule_means_the_first_failure_is_dead() {
        assert_eq!(verdict(&[], 1, None, None, 0.0), Verdict::Dead);
        assert_eq!(verdict(&[], 1, Some(503), Some(s(1)), 0.0), Verdict::Dead);
        assert_eq!(verdict(&[], 0, Some(500), None, 0.0), Verdict::Dead);
    }

    #[test]
    fn jitter_moves_a_step_by_at_most_twenty_percent() {
        let sched = [s(100)];
        let at = |j| verdict(&sched, 1, None, None, j);
        assert_eq!(at(1.0), Verdict::Retry { after: s(120) });
        assert_eq!(at(-1.0), Verdict::Retry { after: s(80) });
        assert_eq!(at(0.5), Verdict::Retry { after: s(110) });
        // Out-of-range and NaN jitter are clamped / ignored.
        assert_eq!(at(7.0), Verdict::Retry { after: s(120) });
        assert_eq!(at(-7.0), Verdict::Retry { after: s(80) });
        assert_eq!(at(f64::NAN), Verdict::Retry { after: s(100) });
        assert_eq!(at(f64::INFINITY), Verdict::Retry { after: s(120) });
    }

    #[test]
    fn huge_steps_saturate_instead_of_panicking() {
        let sched = [Duration::MAX];
        assert_eq!(
            verdict(&sched, 1, None, None, 1.0),
            Verdict::Retry {
                after: Duration::MAX
            }
        );
    }

    #[test]
    fn retry_after_on_429_and_503_replaces_the_step_bounded_by_the_last() {
        let sched = default_schedule();
        for status in [429, 503] {
            // Shorter than the step: honoured exactly, no jitter.
            assert_eq!(
                verdict(&sched, 3, Some(status), Some(s(60)), 1.0),
                Verdict::Retry { after: s(60) }
            );
            // Longer than the step but under the last: honoured.
            assert_eq!(
                verdict(&sched, 1, Some(status), Some(s(3600)), -1.0),
                Verdict::Retry { after: s(3600) }
            );
            // Above the last step: bounded by it.
            assert_eq!(
                verdict(&sched, 1, Some(status), Some(s(10 * 86400)), 0.0),
                Verdict::Retry { after: s(36000) }
            );
            assert_eq!(
                verdict(&sched, 1, Some(status), Some(Duration::MAX), 0.0),
                Verdict::Retry { after: s(36000) }
            );
            // Zero: retry at once.
            assert_eq!(
                verdict(&sched, 1, Some(status), Some(Duration::ZERO), 0.5),
                Verdict::Retry {
                    after: Duration::ZERO
                }
            );
            // It does not extend the schedule.
            assert_eq!(
                verdict(&sched, 8, Some(status), Some(s(1)), 0.0),
                Verdict::Dead
            );
            // Without one: the jittered step.
            assert_eq!(
                verdict(&sched, 2, Some(status), None, 1.0),
                Verdict::Retry { after: s(360) }
            );
        }
    }

    #[test]
    fn retry_after_is_ignored_on_other_statuses() {
        let sched = default_schedule();
        for status in [None, Some(500), Some(502), Some(504), Some(302), Some(400)] {
            assert_eq!(
                verdict(&sched, 1, status, Some(s(1000)), 0.0),
                Verdict::Retry { after: s(5) }
            );
        }
    }

    #[test]
    fn jitter_from_an_rng_stays_in_range_and_spreads() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let values: Vec<f64> = (0..10_000).map(|_| jitter(&mut rng)).collect();
        assert!(values.iter().all(|j| (-1.0..=1.0).contains(j)));
        assert!(values.iter().any(|j| *j < -0.9));
        assert!(values.iter().any(|j| *j > 0.9));
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
    }

    #[test]
    fn retry_after_delta_seconds() {
        assert_eq!(parse_retry_after("120", 0), Some(s(120)));
        assert_eq!(parse_retry_after(" 0 ", 0), Some(s(0)));
        assert_eq!(parse_retry_after("007", 0), Some(s(7)));
        assert_eq!(
            parse_retry_after("99999999999999999999999", 0),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_http_date_is_relative_to_now() {
        // 2026-12-01T12:00:00Z = 1796126400.
        let now_ms = 1_796_126_400_000;
        let v = "Tue, 01 Dec 2026 12:00:30 GMT";
        assert_eq!(parse_retry_after(v, now_ms), Some(s(30)));
        assert_eq!(
            parse_retry_after(v, now_ms + 500),
            Some(Duration::from_millis(29_500))
        );
        assert_eq!(parse_retry_after(v, now_ms + 30_000), Some(s(0)));
        // In the past: negative, so None.
        assert_eq!(parse_retry_after(v, now_ms + 30_001), None);
        // The obsolete forms HTTP still accepts.
        assert_eq!(
            parse_retry_after("Tuesday, 01-Dec-26 12:01:00 GMT", now_ms),
            Some(s(60))
        );
        assert_eq!(
            parse_retry_after("Tue Dec  1 12:00:10 2026", now_ms),
            Some(s(10))
        );
    }

    #[test]
    fn retry_after_garbage_is_none() {
        for v in [
            "",
            "   ",
            "-5",
            "+5",
            "1.5",
            "5s",
            "soon",
            "0x10",
            "Tue, 32 Dec 2026 12:00:00 GMT",
            "Tue, 01 Dec 2026 12:00:00",
            "2026-12-01T12:00:30Z",
            "١٢",
        ] {
            assert_eq!(parse_retry_after(v, 0), None, "{v:?}");
        }
    }

    proptest! {
        #[test]
        fn delays_stay_within_twenty_percent_of_their_step(
            // Schedules grow step by step (as the default does); "never above
            // last step x 1.2" only means anything for those.
            steps in proptest::collection::vec(0u64..=10_000_000_000, 0..10)
                .prop_map(|mut v| { v.sort_unstable(); v }),
            attempts in 1u32..12,
            status in proptest::option::of(0u16..1000),
            retry_after in proptest::option::of(0u64..100_000_000_000),
            jitter in -1.0f64..=1.0,
        ) {
            let sched: Vec<Duration> = steps.iter().map(|ms| Duration::from_millis(*ms)).collect();
            let retry_after = retry_after.map(Duration::from_millis);
            let v = verdict(&sched, attempts, status, retry_after, jitter);
            match status {
                Some(s) if (200..300).contains(&s) => prop_assert_eq!(v, Verdict::Succeeded),
                Some(410) => prop_assert_eq!(v, Verdict::Gone),
                _ if attempts as usize > sched.len() => prop_assert_eq!(v, Verdict::Dead),
                _ => {
                    let Verdict::Retry { after } = v else {
                        return Err(TestCaseError::fail(format!("{v:?}")));
                    };
                    let step = sched[attempts as usize - 1].as_secs_f64();
                    let last = sched.last().unwrap().as_secs_f64();
                    let got = after.as_secs_f64();
                    let eps = 1e-6;
                    prop_assert!(got <= last * 1.2 + eps, "{got} > 1.2 * {last}");
                    let honoured = matches!(status, Some(429 | 503)) && retry_after.is_some();
                    if honoured {
                        let r = retry_after.unwrap().as_secs_f64();
                        prop_assert!((got - r.min(last)).abs() < eps);
                    } else {
                        prop_assert!(got >= step * 0.8 - eps && got <= step * 1.2 + eps,
                            "{got} not within 20% of {step}");
                    }
                }
            }
        }

        #[test]
        fn delta_seconds_round_trip(n in 0u64..=u64::MAX) {
            prop_assert_eq!(parse_retry_after(&n.to_string(), 0), Some(Duration::from_secs(n)));
        }

        #[test]
        fn arbitrary_strings_never_panic(v in ".{0,40}", now in any::<i64>()) {
            let _ = parse_retry_after(&v, now);
        }
    }
}
