//! Batched waiting: jobs waiting on the cloud (a server building, a volume being created or
//! attached) hold no lease and no task, only an entry here.
//!
//! Every `engine.poll_interval_ms`, for each project (and region) with waiting jobs, the poller makes one list
//! call for servers (`GET /servers/detail?tags=provisioner&changes-since=...`) and, for volumes,
//! one list per transitional status (by our metadata mark), however many jobs wait, and takes up the jobs
//! whose resource settled: it claims them by their fence ([`crate::store::Store::claim_exact`])
//! and hands them with what it saw to the engine, so the wait step needs no GET of its own.
//! A settled job that cannot be taken up at once (no free slot, or its row is locked by another
//! transaction for a moment) stays *ready* with what the poll saw, and is taken up on a later
//! tick without polling it again; one whose claim fails [`MAX_MISSES`] times was taken by
//! someone else (its recheck came due) and is forgotten.
//! The database is the safety net: a waiting job is saved with `next_run_at` a recheck interval
//! ahead, so if this worker dies (or its poll misses a change), any worker claims it then and
//! the wait step checks the resource with one GET.
//!
//! Each region runs its own Nova and Cinder: the waiters are grouped by (project, region) and
//! each group's lists go to its region ([`crate::openstack::region::scope`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::kind::{Observation, Watch};

/// How far back of the last poll a list looks, to cover clock skew between us and the cloud
/// and changes committed while the previous list was being answered.
pub const SLACK: Duration = Duration::from_secs(1);

/// Claims of a ready job that may fail (row locked, no slot) before it is forgotten.
pub const MAX_MISSES: u8 = 8;

/// A job waiting for its resource.
#[derive(Debug, Clone)]
pub struct Waiter {
    pub job_id: Uuid,
    /// The fence the job was released with: the claim that takes it up checks it.
    pub fence: u64,
    pub project_id: String,
    /// The job's region (`None`: the configured one): its lists go there.
    pub region: Option<String>,
    pub watch: Watch,
    /// Changes before this instant are not the ones waited for (the step started after).
    pub since: DateTime<Utc>,
    pub registered: tokio::time::Instant,
    /// Covered by a poll already: the next polls may start from the last poll's time.
    pub polled: bool,
}

/// The waiting jobs of this worker, by project.
#[derive(Debug, Default)]
pub struct Waiting {
    inner: Mutex<State>,
}

/// A waiter whose resource settled, with what the poll saw, until a claim takes it up.
#[derive(Debug, Clone)]
pub struct Ready {
    pub waiter: Waiter,
    pub seen: Option<Observation>,
    /// Claims that did not take it up.
    pub misses: u8,
}

#[derive(Debug, Default)]
struct State {
    waiters: HashMap<Uuid, Waiter>,
    /// Settled, oldest first.
    ready: VecDeque<Ready>,
    /// Start of the last successful poll of each (project, region).
    last_poll: HashMap<(String, Option<String>), DateTime<Utc>>,
}

/// What one project's poll needs: the waiters and where to start the lists.
#[derive(Debug)]
pub struct ProjectPoll {
    pub project_id: String,
    pub region: Option<String>,
    pub waiters: Vec<Waiter>,
    pub since: DateTime<Utc>,
}

impl Waiting {
    pub fn register(&self, w: Waiter) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // A newer registration of the job replaces one still ready under an older fence.
        s.ready.retain(|r| r.waiter.job_id != w.job_id);
        s.waiters.insert(w.job_id, w);
    }

    /// Jobs waiting or ready.
    pub fn len(&self) -> usize {
        let s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.waiters.len() + s.ready.len()
    }

    /// Settled jobs not yet taken up.
    pub fn ready_len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Groups the waiters by project for one round of polls; waiters older than `stale` are
    /// dropped (the database recheck has made their job due; whoever claims it owns it now).
    pub fn plan(&self, stale: Duration) -> Vec<ProjectPoll> {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        s.waiters.retain(|_, w| now.duration_since(w.registered) < stale);
        s.ready.retain(|r| now.duration_since(r.waiter.registered) < stale);
        let mut by_project: HashMap<(String, Option<String>), Vec<Waiter>> = HashMap::new();
        for w in s.waiters.values() {
            by_project.entry((w.project_id.clone(), w.region.clone())).or_default().push(w.clone());
        }
        s.last_poll.retain(|p, _| by_project.contains_key(p));
        let slack = chrono::Duration::from_std(SLACK).unwrap_or_default();
        by_project
            .into_iter()
            .map(|(key, waiters)| {
                let fresh = waiters.iter().filter(|w| !w.polled).map(|w| w.since).min();
                let since = match (s.last_poll.get(&key).copied(), fresh) {
                    (Some(last), Some(f)) => last.min(f),
                    (Some(last), None) => last,
                    (None, Some(f)) => f,
                    (None, None) => Utc::now(),
                } - slack;
                let (project_id, region) = key;
                ProjectPoll { project_id, region, waiters, since }
            })
            .collect()
    }

    /// Records a successful poll of `project` in `region` that started at `at` and covered
    /// `covered`.
    pub fn polled(&self, project: &str, region: Option<&str>, at: DateTime<Utc>, covered: &[Uuid]) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.last_poll.insert((project.to_string(), region.map(str::to_string)), at);
        for id in covered {
            if let Some(w) = s.waiters.get_mut(id) {
                w.polled = true;
            }
        }
    }

    /// Moves the settled waiters (if they are still the same registration) to the ready queue.
    pub fn settle(&self, settled: Vec<(Waiter, Option<Observation>)>) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (w, seen) in settled {
            if s.waiters.get(&w.job_id).is_some_and(|cur| cur.fence == w.fence && cur.watch == w.watch) {
                s.waiters.remove(&w.job_id);
                s.ready.push_back(Ready { waiter: w, seen, misses: 0 });
            }
        }
    }

    /// Up to `n` ready jobs, oldest first, to claim now.
    pub fn next_ready(&self, n: usize) -> Vec<Ready> {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let n = n.min(s.ready.len());
        s.ready.drain(..n).collect()
    }

    /// Ready jobs that could not be claimed now: they go first next time. `missed`: the claim
    /// ran and did not take them (counted; forgotten after [`MAX_MISSES`]); otherwise it could
    /// not run (no slot, database error).
    pub fn not_taken(&self, jobs: Vec<Ready>, missed: bool) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for mut r in jobs.into_iter().rev() {
            if missed {
                r.misses += 1;
                if r.misses >= MAX_MISSES {
                    continue;
                }
            }
            if !s.waiters.contains_key(&r.waiter.job_id) {
                s.ready.push_front(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(fence: u64) -> Waiter {
        Waiter {
            job_id: Uuid::from_u128(1),
            fence,
            project_id: "p".into(),
            region: None,
            watch: Watch::ServerGone("s".into()),
            since: Utc::now(),
            registered: tokio::time::Instant::now(),
            polled: false,
        }
    }

    #[test]
    fn a_settled_job_stays_ready_until_taken_and_is_forgotten_after_its_misses() {
        let w = Waiting::default();
        w.register(waiter(3));
        // A stale observation (older fence) settles nothing.
        w.settle(vec![(waiter(2), None)]);
        assert_eq!(w.ready_len(), 0);
        w.settle(vec![(waiter(3), Some(Observation::Settled))]);
        assert_eq!((w.ready_len(), w.len()), (1, 1));
        assert!(w.plan(Duration::from_secs(60)).is_empty(), "a ready job is not polled again");
        // No slot: back, not counted.
        let r = w.next_ready(5);
        assert_eq!(r.len(), 1);
        w.not_taken(r, false);
        assert_eq!(w.next_ready(5)[0].misses, 0);
        // It was in next_ready's answer above and is gone from the queue now; put it back
        // and miss it MAX_MISSES times.
        w.not_taken(vec![Ready { waiter: waiter(3), seen: None, misses: 0 }], false);
        for i in 1..=MAX_MISSES {
            let r = w.next_ready(1);
            assert_eq!(r.len(), 1, "still ready after {} misses", i - 1);
            w.not_taken(r, true);
        }
        assert_eq!(w.len(), 0, "forgotten after {MAX_MISSES} misses");
    }

    #[test]
    fn waiters_are_polled_per_project_and_region() {
        let w = Waiting::default();
        for (n, region) in [(1u128, None), (2, Some("RegionTwo")), (3, Some("RegionTwo"))] {
            w.register(Waiter {
                job_id: Uuid::from_u128(n),
                region: region.map(str::to_string),
                ..waiter(1)
            });
        }
        let mut plans: Vec<(Option<String>, usize)> =
            w.plan(Duration::from_secs(60)).into_iter().map(|p| (p.region, p.waiters.len())).collect();
        plans.sort();
        assert_eq!(plans, vec![(None, 1), (Some("RegionTwo".to_string()), 2)]);
    }

    #[test]
    fn a_new_registration_replaces_a_ready_one() {
        let w = Waiting::default();
        w.register(waiter(3));
        w.settle(vec![(waiter(3), None)]);
        w.register(waiter(4));
        assert_eq!((w.ready_len(), w.len()), (0, 1));
    }
}
