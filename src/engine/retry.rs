//! The retry policy: which cloud errors are worth another attempt, and when.
//!
//! A retryable step is rescheduled in the database (`next_run_at`), never by sleeping in memory,
//! so a waiting retry holds no lease and survives a restart. The delay is exponential with full
//! jitter (a uniform draw in `[0, min(max, base * 2^(attempt-1))]`, which spreads a herd of jobs
//! that failed together), except that a `Retry-After` from the cloud is honoured (capped at
//! `max`). Attempts are capped per step (`engine.step_max_attempts`) and the whole job by its
//! deadline (`engine.job_deadline_secs`): past either, the error becomes permanent.

use std::time::Duration;

use super::cloud::{CloudError, ErrorKind};
use crate::messages::ErrorClass;

/// The retry settings, taken from `engine.*`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// Delay before attempt `attempt + 1` after attempt `attempt` (1-based) failed with `err`;
    /// `None` when the error is permanent or the attempts are used up.
    pub fn delay(&self, attempt: u32, err: &CloudError) -> Option<Duration> {
        if !is_retryable(err.kind) || attempt >= self.max_attempts {
            return None;
        }
        if let ErrorKind::RateLimited(Some(after)) = err.kind {
            return Some(after.min(self.max));
        }
        Some(self.jittered(attempt))
    }

    /// Full-jitter exponential delay for a 1-based attempt.
    pub fn jittered(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let ceiling = self.base.saturating_mul(1u32 << exp).min(self.max);
        let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(0..=ceiling_ms))
    }
}

pub fn is_retryable(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::Transient | ErrorKind::RateLimited(_) | ErrorKind::Conflict)
}

/// The class billing sees when an error fails a job.
pub fn class_of(kind: ErrorKind) -> ErrorClass {
    match kind {
        ErrorKind::Quota => ErrorClass::QuotaExceeded,
        ErrorKind::NotFound => ErrorClass::NotFound,
        ErrorKind::Auth => ErrorClass::Auth,
        ErrorKind::Invalid => ErrorClass::InvalidOrder,
        ErrorKind::Transient | ErrorKind::RateLimited(_) | ErrorKind::Conflict | ErrorKind::Permanent => {
            ErrorClass::CloudError
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { base: Duration::from_millis(100), max: Duration::from_secs(5), max_attempts: 4 }
    }

    #[test]
    fn delays_grow_with_full_jitter_and_stay_capped() {
        let p = policy();
        for attempt in 1..40 {
            let ceiling = Duration::from_millis(100).saturating_mul(1 << (attempt - 1).min(30)).min(p.max);
            for _ in 0..50 {
                assert!(p.jittered(attempt) <= ceiling);
            }
        }
        // Full jitter: not always the ceiling.
        let draws: Vec<_> = (0..50).map(|_| p.jittered(6)).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(3000)), "{draws:?}");
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let p = policy();
        let e = CloudError::new(ErrorKind::RateLimited(Some(Duration::from_secs(2))), "slow down");
        assert_eq!(p.delay(1, &e), Some(Duration::from_secs(2)));
        let e = CloudError::new(ErrorKind::RateLimited(Some(Duration::from_secs(600))), "slow down");
        assert_eq!(p.delay(1, &e), Some(Duration::from_secs(5)));
    }

    #[test]
    fn permanent_errors_and_used_up_attempts_are_not_retried() {
        let p = policy();
        assert_eq!(p.delay(1, &CloudError::new(ErrorKind::Quota, "quota")), None);
        assert_eq!(p.delay(1, &CloudError::new(ErrorKind::NotFound, "gone")), None);
        assert!(p.delay(3, &CloudError::new(ErrorKind::Transient, "503")).is_some());
        assert_eq!(p.delay(4, &CloudError::new(ErrorKind::Transient, "503")), None);
        assert_eq!(class_of(ErrorKind::Quota), ErrorClass::QuotaExceeded);
        assert_eq!(class_of(ErrorKind::Invalid), ErrorClass::InvalidOrder);
    }
}
