//! Client-side rate limits: a token bucket per project and one for the whole cloud, so that a
//! burst of orders for one customer cannot starve the others, and the worker as a whole stays
//! under what the cloud operator allows (`engine.project_rate`, `engine.cloud_rate`).
//!
//! Every request the session sends first takes a token from its project's bucket, then one from
//! the cloud's bucket. A bucket holds up to one second of tokens (at least one), so short bursts
//! pass at once; beyond that callers wait their turn (reservations are made under a lock and the
//! wait happens outside it, so waiting is fair and costs no lock). A rate of 0 means unlimited.
//! Time is `tokio::time`, so tests can pause it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// One bucket: `tokens` may go negative, which records reservations of callers now waiting.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(capacity: f64, now: Instant) -> Bucket {
        Bucket { tokens: capacity, updated: now }
    }

    /// Takes one token; returns how long the caller must wait before it may proceed.
    fn take(&mut self, rate: f64, capacity: f64, now: Instant) -> Duration {
        // `now` may be earlier than `updated` (the cloud bucket is taken at a future instant).
        if now > self.updated {
            let elapsed = (now - self.updated).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(capacity);
            self.updated = now;
        }
        self.tokens -= 1.0;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / rate) }
    }

    fn is_full(&self, rate: f64, capacity: f64, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.updated).as_secs_f64() * rate >= capacity
    }
}

/// Per-project and per-cloud token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    project_rate: f64,
    cloud_rate: f64,
    projects: Mutex<HashMap<String, Bucket>>,
    cloud: Mutex<Option<Bucket>>,
}

/// Project buckets kept before idle (full) ones are dropped.
const PRUNE_ABOVE: usize = 10_000;

fn capacity(rate: f64) -> f64 {
    rate.max(1.0)
}

impl RateLimiter {
    /// Requests per second per project and in all; 0 (or less) is unlimited.
    pub fn new(project_rate: f64, cloud_rate: f64) -> RateLimiter {
        let sane = |r: f64| if r.is_finite() && r > 0.0 { r } else { 0.0 };
        RateLimiter {
            project_rate: sane(project_rate),
            cloud_rate: sane(cloud_rate),
            projects: Mutex::new(HashMap::new()),
            cloud: Mutex::new(None),
        }
    }

    pub fn unlimited() -> RateLimiter {
        RateLimiter::new(0.0, 0.0)
    }

    /// How long a request for `project` must wait, reserving its place. Not async: callers sleep.
    pub fn reserve(&self, project: &str) -> Duration {
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        if self.project_rate > 0.0 {
            let (rate, cap) = (self.project_rate, capacity(self.project_rate));
            let mut projects = self.projects.lock().unwrap_or_else(|p| p.into_inner());
            if projects.len() > PRUNE_ABOVE {
                projects.retain(|_, b| !b.is_full(rate, cap, now));
            }
            let bucket = projects.entry(project.to_string()).or_insert_with(|| Bucket::full(cap, now));
            wait = bucket.take(rate, cap, now);
        }
        if self.cloud_rate > 0.0 {
            let (rate, cap) = (self.cloud_rate, capacity(self.cloud_rate));
            let mut cloud = self.cloud.lock().unwrap_or_else(|p| p.into_inner());
            let bucket = cloud.get_or_insert_with(|| Bucket::full(cap, now));
            // The cloud token is taken at the time the project bucket lets the request go.
            wait = wait.max(bucket.take(rate, cap, now + wait));
        }
        wait
    }

    /// Waits until a request for `project` may be sent.
    pub async fn acquire(&self, project: &str) {
        let wait = self.reserve(project);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_project_is_held_to_its_rate_and_others_are_not() {
        let limiter = RateLimiter::new(10.0, 0.0);
        // A burst of 10 passes at once; the 11th..20th are spaced by 100 ms.
        let waits: Vec<Duration> = (0..20).map(|_| limiter.reserve("p1")).collect();
        assert!(waits[..10].iter().all(|w| w.is_zero()), "{waits:?}");
        assert_eq!(waits[10], Duration::from_millis(100));
        assert_eq!(waits[19], Duration::from_secs(1));
        // Another project is not held up by p1's burst.
        assert_eq!(limiter.reserve("p2"), Duration::ZERO);
        // After a second p1 has its tokens back (those reserved by waiters are used by them).
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(limiter.reserve("p1"), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cloud_bucket_caps_all_projects() {
        let limiter = RateLimiter::new(0.0, 2.0);
        assert_eq!(limiter.reserve("a"), Duration::ZERO);
        assert_eq!(limiter.reserve("b"), Duration::ZERO);
        assert_eq!(limiter.reserve("c"), Duration::from_millis(500));
        let start = Instant::now();
        limiter.acquire("d").await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_is_unlimited() {
        let limiter = RateLimiter::unlimited();
        assert!((0..10_000).all(|_| limiter.reserve("p").is_zero()));
    }
}
