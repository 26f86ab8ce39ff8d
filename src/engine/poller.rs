//! Batched waiting: jobs waiting on the cloud (a server building, a volume being created or
//! attached) hold no lease and no task, only an entry here.
//!
//! Every `engine.poll_interval_ms`, for each project with waiting jobs, the poller makes one list
//! call for servers (`GET /servers/detail?tags=provisioner&changes-since=...`) and, for volumes,
//! one list per transitional status (by our metadata mark), however many jobs wait, and takes up the jobs
//! whose resource settled: it claims them by their fence ([`crate::store::Store::claim_exact`])
//! and hands them with what it saw to the engine, so the wait step needs no GET of its own.
//! The database is the safety net: a waiting job is saved with `next_run_at` a recheck interval
//! ahead, so if this worker dies (or its poll misses a change), any worker claims it then and
//! the wait step checks the resource with one GET.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::kind::{Observation, Watch};

/// How far back of the last poll a list looks, to cover clock skew between us and the cloud
/// and changes committed while the previous list was being answered.
pub const SLACK: Duration = Duration::from_secs(1);

/// A job waiting for its resource.
#[derive(Debug, Clone)]
pub struct Waiter {
    pub job_id: Uuid,
    /// The fence the job was released with: the claim that takes it up checks it.
    pub fence: u64,
    pub project_id: String,
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

#[derive(Debug, Default)]
struct State {
    waiters: HashMap<Uuid, Waiter>,
    /// Start of the last successful poll of each project.
    last_poll: HashMap<String, DateTime<Utc>>,
}

/// What one project's poll needs: the waiters and where to start the lists.
#[derive(Debug)]
pub struct ProjectPoll {
    pub project_id: String,
    pub waiters: Vec<Waiter>,
    pub since: DateTime<Utc>,
}

impl Waiting {
    pub fn register(&self, w: Waiter) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.waiters.insert(w.job_id, w);
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).waiters.len()
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
        let mut by_project: HashMap<String, Vec<Waiter>> = HashMap::new();
        for w in s.waiters.values() {
            by_project.entry(w.project_id.clone()).or_default().push(w.clone());
        }
        s.last_poll.retain(|p, _| by_project.contains_key(p));
        let slack = chrono::Duration::from_std(SLACK).unwrap_or_default();
        by_project
            .into_iter()
            .map(|(project_id, waiters)| {
                let fresh = waiters.iter().filter(|w| !w.polled).map(|w| w.since).min();
                let since = match (s.last_poll.get(&project_id).copied(), fresh) {
                    (Some(last), Some(f)) => last.min(f),
                    (Some(last), None) => last,
                    (None, Some(f)) => f,
                    (None, None) => Utc::now(),
                } - slack;
                ProjectPoll { project_id, waiters, since }
            })
            .collect()
    }

    /// Records a successful poll of `project` that started at `at` and covered `covered`.
    pub fn polled(&self, project: &str, at: DateTime<Utc>, covered: &[Uuid]) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.last_poll.insert(project.to_string(), at);
        for id in covered {
            if let Some(w) = s.waiters.get_mut(id) {
                w.polled = true;
            }
        }
    }

    /// Takes the settled waiters out (if they are still the same registration).
    pub fn take(&self, settled: &[(Waiter, Option<Observation>)]) -> Vec<(Waiter, Option<Observation>)> {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        settled
            .iter()
            .filter(|(w, _)| {
                if s.waiters.get(&w.job_id).is_some_and(|cur| cur.fence == w.fence && cur.watch == w.watch) {
                    s.waiters.remove(&w.job_id);
                    true
                } else {
                    false
                }
            })
            .cloned()
            .collect()
    }

    /// Puts back waiters that could not be taken up now (no free slot).
    pub fn put_back(&self, waiters: Vec<Waiter>) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for mut w in waiters {
            // Not polled: the next poll must look back far enough to see its change again.
            w.polled = false;
            s.waiters.entry(w.job_id).or_insert(w);
        }
    }
}
