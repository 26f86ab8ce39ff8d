//! The provisioning engine: a persisted state machine that drives each job through its steps
//! against the cloud, exactly once, and ends it with a completion event.
//!
//! The policy loop is split from the unit of work:
//! - the **claimer** claims due jobs (queued, retries whose time came, rollbacks, waits whose
//!   recheck came) under a lease, within `engine.max_in_flight` running jobs;
//! - the **poller** ([`poller`]) takes up waiting jobs whose resource settled, one list call per
//!   project per tick;
//! - the **lease keeper** renews the leases of jobs with a step running;
//! - a **driver** per claimed job ([`Engine::drive`]) runs steps of its kind ([`kind`],
//!   [`create`]) and saves every transition through the group [`Committer`] with a fenced
//!   compare-and-set, until the job waits, retries later, or ends. A driver never sleeps: a
//!   retry is a `next_run_at` in the database ([`retry`]).
//!
//! Guarantees: a job is written only under its current lease (fence); a creating step's intent
//! is persisted before the create call, so a crash anywhere is followed by adoption, never by a
//! second resource; a failure rolls back what was created, in reverse, and the final state and
//! its event are committed together. Every job runs in a span with `job_id` and `order_id`.

/// Inside a step: the value of a cloud call, or the step ends with its error (which carries
/// its class, so the engine decides whether and when to try again).
macro_rules! cloud {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $crate::engine::kind::Outcome::Error(e),
        }
    };
}

pub mod cloud;
pub mod create;
pub mod kind;
pub mod lifecycle;
pub mod openstack_cloud;
pub mod poller;
pub mod preflight;
pub mod reconcile;
pub mod retry;
pub mod tenant;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use self::cloud::{Cloud, CloudError, Tenants};
use self::kind::{Failure, Job, Kind, Observation, Outcome, StepCtx, Watch};
use self::poller::{Waiter, Waiting};
use self::retry::RetryPolicy;
use crate::config::{LifecycleSettings, Settings};
use crate::messages::{ErrorClass, Event, EventError, EventServer, EventType, EventVolume};
use crate::openstack::{region, request_id};
use crate::store::{Committer, History, JobRow, JobSave, JobState, OutboxEvent, SaveError, Store};
use crate::telemetry::trace;

/// The engine's settings, from `engine.*`.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This worker's name in leases and history.
    pub owner: String,
    pub lease: Duration,
    pub max_in_flight: usize,
    pub claim_batch: usize,
    pub poll_interval: Duration,
    /// When a waiting job is due again if no poll took it up (the safety net).
    pub recheck: Duration,
    pub wait_timeout: Duration,
    pub job_deadline: Duration,
    pub retry: RetryPolicy,
    pub max_crashes: u32,
    pub lifecycle: LifecycleSettings,
    /// `PROVISIONER_PREFLIGHT=on`: a create fails fast when pre-flight knows it cannot succeed.
    pub preflight: bool,
    /// Opens sealed passwords of tenant orders (`PROVISIONER_SECRETS_KEY`).
    pub secrets: Option<Arc<crate::secrets::SecretsKey>>,
}

impl EngineConfig {
    pub fn from_settings(s: &Settings, owner: String) -> EngineConfig {
        let e = &s.engine;
        let poll_interval = Duration::from_millis(e.poll_interval_ms);
        EngineConfig {
            owner,
            lease: Duration::from_secs(e.lease_secs),
            max_in_flight: e.max_in_flight,
            claim_batch: e.claim_batch,
            poll_interval,
            // Longer than a typical boot, so that the safety net does not cost a GET per VM;
            // short enough that the waits of a worker that died resume soon on another one.
            recheck: (poll_interval * 120).clamp(Duration::from_secs(5), Duration::from_secs(60)),
            wait_timeout: Duration::from_secs(e.wait_timeout_secs),
            job_deadline: Duration::from_secs(e.job_deadline_secs),
            retry: RetryPolicy {
                base: Duration::from_millis(e.backoff_base_ms),
                max: Duration::from_secs(e.backoff_max_secs),
                max_attempts: e.step_max_attempts,
            },
            max_crashes: e.max_crashes,
            lifecycle: s.lifecycle.clone(),
            preflight: s.preflight.is_on(),
            secrets: s.secrets.key().ok().flatten().map(Arc::new),
        }
    }
}

/// The running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    committer: Committer,
    kinds: HashMap<&'static str, Arc<Kind>>,
    ctx: StepCtx,
    cfg: EngineConfig,
    permits: Arc<Semaphore>,
    /// Jobs with a driver running, and their fence (the lease keeper renews them).
    held: Mutex<HashMap<Uuid, u64>>,
    waiting: Waiting,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("owner", &self.inner.cfg.owner).finish()
    }
}

/// How often, and by how much, jobs waiting for an earlier job of their service are pushed back.
const BLOCKED_SNOOZE: Duration = Duration::from_secs(5);

/// What the driver does after a save.
enum Then {
    Continue,
    Stop,
    Watch(Watch),
}

impl Engine {
    /// An engine over `store` and `cloud` (`tenants`: the same cloud as an administrator);
    /// `events` is notified when a commit wrote an event (it wakes the outbox relay). Nothing
    /// runs until [`Engine::run`].
    pub fn new(
        store: Store,
        cloud: Arc<dyn Cloud>,
        tenants: Arc<dyn Tenants>,
        cfg: EngineConfig,
        events: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Engine {
        let committer = Committer::start(store.clone(), move || events.notify_one());
        let kinds: HashMap<&'static str, Arc<Kind>> = std::iter::once(create::kind())
            .chain(lifecycle::kinds())
            .chain(tenant::kinds())
            .map(|k| (k.name, Arc::new(k)))
            .collect();
        let ctx = StepCtx {
            cloud,
            wait_timeout: cfg.wait_timeout,
            recheck: cfg.poll_interval.max(Duration::from_millis(200)),
            lifecycle: cfg.lifecycle.clone(),
            preflight: cfg.preflight,
            tenants,
            store: store.clone(),
            secrets: cfg.secrets.clone(),
        };
        Engine {
            inner: Arc::new(Inner {
                store,
                committer,
                kinds,
                ctx,
                permits: Arc::new(Semaphore::new(cfg.max_in_flight)),
                cfg,
                held: Mutex::new(HashMap::new()),
                waiting: Waiting::default(),
                tasks: TaskTracker::new(),
                shutdown,
            }),
        }
    }

    /// Runs the claimer, the poller and the lease keeper until shutdown, then waits for the
    /// drivers to finish their current step (the caller bounds that with the grace period).
    pub async fn run(self) {
        let claimer = tokio::spawn(self.clone().claim_loop());
        let poller = tokio::spawn(self.clone().poll_loop());
        let keeper = tokio::spawn(self.clone().lease_loop());
        let _ = claimer.await;
        let _ = poller.await;
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        keeper.abort();
        tracing::info!(owner = %self.inner.cfg.owner, "engine stopped");
    }

    /// Jobs waiting in this worker's poller (metrics, tests).
    pub fn waiting(&self) -> usize {
        self.inner.waiting.len()
    }

    async fn claim_loop(self) {
        let inner = &self.inner;
        let idle = inner.cfg.poll_interval.min(Duration::from_millis(20));
        let mut failures = 0u32;
        let mut snoozed = tokio::time::Instant::now();
        loop {
            if inner.shutdown.is_cancelled() {
                return;
            }
            // Jobs chained behind a running job of their service are due but not claimable;
            // push them back now and then so the claim query does not scan them every round.
            if snoozed.elapsed() >= BLOCKED_SNOOZE {
                snoozed = tokio::time::Instant::now();
                if let Err(e) = inner.store.snooze_blocked(BLOCKED_SNOOZE).await {
                    tracing::debug!(error = %e, "cannot snooze blocked jobs");
                }
            }
            let free = inner.permits.available_permits().min(inner.cfg.claim_batch);
            if free == 0 {
                tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    p = inner.permits.clone().acquire_owned() => drop(p),
                }
                continue;
            }
            let Ok(permits) = inner.permits.clone().try_acquire_many_owned(free as u32) else { continue };
            match inner.store.claim_due(&inner.cfg.owner, inner.cfg.lease, free).await {
                Ok(rows) => {
                    failures = 0;
                    let n = rows.len();
                    let mut permits = permits;
                    for row in rows {
                        let Some(permit) = permits.split(1) else { break };
                        self.spawn_driver(row, None, permit);
                    }
                    drop(permits);
                    if n < free {
                        tokio::select! {
                            _ = inner.shutdown.cancelled() => return,
                            _ = tokio::time::sleep(idle) => {}
                        }
                    }
                }
                Err(e) => {
                    drop(permits);
                    failures += 1;
                    let delay = Duration::from_millis(100 * u64::from(failures.min(50)));
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot claim jobs");
                    tokio::select! {
                        _ = inner.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn lease_loop(self) {
        let inner = &self.inner;
        let every = inner.cfg.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let held: Vec<(Uuid, u64)> =
                inner.held.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (*k, *v)).collect();
            for chunk in held.chunks(500) {
                if let Err(e) = inner.store.renew_leases(&inner.cfg.owner, inner.cfg.lease, chunk).await {
                    tracing::warn!(error = %e, "cannot renew leases");
                }
            }
        }
    }

    async fn poll_loop(self) {
        let inner = &self.inner;
        let stale = inner.cfg.recheck * 2;
        let mut tick = tokio::time::interval(inner.cfg.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let plans = inner.waiting.plan(stale);
            if !plans.is_empty() {
                let polls = plans.into_iter().map(|plan| self.poll_project(plan));
                let settled: Vec<(Waiter, Option<Observation>)> =
                    futures_util::future::join_all(polls).await.into_iter().flatten().collect();
                inner.waiting.settle(settled);
            }
            // Take up the ready jobs, oldest first, as far as there are free slots; the rest
            // wait for the next tick with what the poll saw.
            let free = inner.permits.available_permits().min(inner.waiting.ready_len());
            if free == 0 {
                continue;
            }
            let Ok(mut permits) = inner.permits.clone().try_acquire_many_owned(free as u32) else { continue };
            let ready = inner.waiting.next_ready(free);
            let pairs: Vec<(Uuid, u64)> = ready.iter().map(|r| (r.waiter.job_id, r.waiter.fence)).collect();
            match inner.store.claim_exact(&inner.cfg.owner, inner.cfg.lease, &pairs).await {
                Ok(rows) => {
                    let mut ready: HashMap<Uuid, poller::Ready> =
                        ready.into_iter().map(|r| (r.waiter.job_id, r)).collect();
                    for row in rows {
                        let seen = ready.remove(&row.id).and_then(|r| r.seen);
                        let Some(permit) = permits.split(1) else { break };
                        self.spawn_driver(row, seen, permit);
                    }
                    // Not claimable at that fence now: locked for a moment, or taken by
                    // someone else (then it is forgotten after a few misses).
                    if !ready.is_empty() {
                        tracing::debug!(missed = ready.len(), "settled jobs not claimed; trying again");
                        inner.waiting.not_taken(ready.into_values().collect(), true);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take up settled jobs; trying again");
                    inner.waiting.not_taken(ready, false);
                }
            }
        }
    }

    /// One project's round in one region: one list of servers and one of volumes, if anything
    /// waits on them, sent to the waiters' region.
    async fn poll_project(&self, plan: poller::ProjectPoll) -> Vec<(Waiter, Option<Observation>)> {
        region::scope(plan.region.clone(), self.poll_project_in_region(plan)).await
    }

    async fn poll_project_in_region(&self, plan: poller::ProjectPoll) -> Vec<(Waiter, Option<Observation>)> {
        let cloud = &self.inner.ctx.cloud;
        let started = Utc::now();
        let mut out = Vec::new();
        let mut ok = true;
        let servers: Vec<&Waiter> = plan.waiters.iter().filter(|w| w.watch.server_id().is_some()).collect();
        if !servers.is_empty() {
            match cloud.servers_changed(&plan.project_id, create::TAG, plan.since).await {
                Ok(list) => {
                    let by_id: HashMap<&str, &cloud::ServerInfo> =
                        list.iter().map(|s| (s.id.as_str(), s)).collect();
                    for w in &servers {
                        if let Some(id) = w.watch.server_id()
                            && let Some(s) = by_id.get(id)
                            && w.watch.settled_by_server(s)
                        {
                            out.push(((*w).clone(), Some(Observation::Server((*s).clone()))));
                        }
                    }
                }
                Err(e) => {
                    ok = false;
                    tracing::debug!(project = %plan.project_id, error = %e, "server poll failed");
                }
            }
        }
        // Volumes being created: the ones now `available` settle with what the list shows.
        let creating: Vec<&Waiter> =
            plan.waiters.iter().filter(|w| matches!(w.watch, Watch::VolumeCreated(_))).collect();
        if !creating.is_empty() {
            match cloud.volumes_in_status(&plan.project_id, "available").await {
                Ok(list) => {
                    let by_id: HashMap<&str, &cloud::VolumeInfo> =
                        list.iter().map(|v| (v.id.as_str(), v)).collect();
                    for w in &creating {
                        if let Watch::VolumeCreated(id) = &w.watch
                            && let Some(v) = by_id.get(id.as_str())
                        {
                            out.push(((*w).clone(), Some(Observation::Volume((*v).clone()))));
                        }
                    }
                }
                Err(e) => {
                    ok = false;
                    tracing::debug!(project = %plan.project_id, error = %e, "volume poll failed");
                }
            }
        }
        // Volumes being attached: listing every `in-use` volume would grow without bound, so
        // list the few still in transition; a waiting volume no longer among them settled, and
        // its wait step looks at it once.
        let attaching: Vec<&Waiter> =
            plan.waiters.iter().filter(|w| matches!(w.watch, Watch::VolumeAttached(_))).collect();
        if !attaching.is_empty() {
            let mut busy: std::collections::HashSet<String> = std::collections::HashSet::new();
            let mut listed = true;
            for status in ["reserved", "attaching"] {
                match cloud.volumes_in_status(&plan.project_id, status).await {
                    Ok(list) => busy.extend(list.into_iter().map(|v| v.id)),
                    Err(e) => {
                        listed = false;
                        ok = false;
                        tracing::debug!(project = %plan.project_id, error = %e, "volume poll failed");
                        break;
                    }
                }
            }
            if listed {
                for w in &attaching {
                    if let Watch::VolumeAttached(id) = &w.watch
                        && !busy.contains(id)
                    {
                        out.push(((*w).clone(), None));
                    }
                }
            }
        }
        // Volumes being detached (terminate): settled once they left `detaching`; the step
        // goes on to delete the volume without a GET of its own.
        let detaching: Vec<&Waiter> =
            plan.waiters.iter().filter(|w| matches!(w.watch, Watch::VolumeDetached(_))).collect();
        if !detaching.is_empty() {
            match cloud.volumes_in_status(&plan.project_id, "detaching").await {
                Ok(list) => {
                    let busy: std::collections::HashSet<String> = list.into_iter().map(|v| v.id).collect();
                    for w in &detaching {
                        if let Watch::VolumeDetached(id) = &w.watch
                            && !busy.contains(id)
                        {
                            out.push(((*w).clone(), Some(Observation::Settled)));
                        }
                    }
                }
                Err(e) => {
                    ok = false;
                    tracing::debug!(project = %plan.project_id, error = %e, "volume poll failed");
                }
            }
        }
        if ok {
            let covered: Vec<Uuid> = plan.waiters.iter().map(|w| w.job_id).collect();
            self.inner.waiting.polled(&plan.project_id, plan.region.as_deref(), started, &covered);
        }
        out
    }

    fn spawn_driver(&self, row: JobRow, seen: Option<Observation>, permit: OwnedSemaphorePermit) {
        let engine = self.clone();
        let span = tracing::info_span!("job", job_id = %row.id, order_id = %row.order_id,
            trace_id = tracing::field::Empty);
        // Under the job's own trace (stored at intake), whichever worker or retry this is; every
        // OpenStack request of the job carries its global request id.
        trace::adopt(&span, row.traceparent.as_deref(), row.id, &self.inner.cfg.owner);
        let request_id = request_id::for_job(row.id);
        self.inner.tasks.spawn(
            request_id::scope(request_id, async move {
                engine.drive(row, seen).await;
                drop(permit);
            })
            .instrument(span),
        );
    }

    /// Drives one claimed job until it waits, retries later, ends, or loses its lease.
    pub async fn drive(&self, row: JobRow, seen: Option<Observation>) {
        let inner = &self.inner;
        let mut job = match Job::from_row(row) {
            Ok(job) => job,
            Err(bad) => {
                let (row, why) = *bad;
                self.fail_unreadable(row, why).await;
                return;
            }
        };
        let Some(kind) = inner.kinds.get(job.kind.as_str()).cloned() else {
            let why = format!("unknown kind of job {:?}", job.kind);
            let f = Failure::new(ErrorClass::Internal, why);
            let (save, _) = self.finish(None, &mut job, Some(f), "claim");
            let _ = inner.committer.save(save).await;
            return;
        };
        // Every step, wait, undo and poll of the job goes to its region (see `openstack::region`).
        let region = job.region();
        region::scope(region, self.drive_in_region(kind, job, seen)).await;
    }

    /// [`Engine::drive`]'s loop, inside the job's region.
    async fn drive_in_region(&self, kind: Arc<Kind>, mut job: Job, mut seen: Option<Observation>) {
        let inner = &self.inner;
        let (id, fence) = (job.id, job.fence);
        inner.held.lock().unwrap_or_else(|e| e.into_inner()).insert(id, fence);
        loop {
            let run_started = Utc::now();
            let clock = std::time::Instant::now();
            let span = trace::step_span(&job.kind, &job.step, job.state.as_str(), job.step_attempts + 1);
            let (save, then) = self.step(&kind, &mut job, seen.take(), clock).instrument(span.clone()).await;
            trace::outcome(&span, &format!("{}/{}", save.state, save.step));
            drop(span);
            match self.save(save).await {
                Ok(()) => {}
                Err(SaveError::LeaseLost) => {
                    tracing::warn!(step = %job.step, "lease lost: another worker owns the job now; stopping");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, step = %job.step, "cannot save the job; its lease will expire");
                    break;
                }
            }
            match then {
                Then::Continue if inner.shutdown.is_cancelled() => {
                    let _ = inner.store.release_lease(job.id, job.fence).await;
                    break;
                }
                Then::Continue => continue,
                Then::Stop => break,
                Then::Watch(watch) => {
                    inner.waiting.register(Waiter {
                        job_id: job.id,
                        fence: job.fence,
                        project_id: job.project_id.clone(),
                        region: job.region(),
                        watch,
                        since: run_started - chrono::Duration::milliseconds(500),
                        registered: tokio::time::Instant::now(),
                        polled: false,
                    });
                    break;
                }
            }
        }
        inner.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// A save through the group committer, tried again a few times if the database fails.
    async fn save(&self, save: JobSave) -> Result<(), SaveError> {
        let mut attempt = 0u32;
        loop {
            match self.inner.committer.save(save.clone()).await {
                Err(SaveError::Store(_) | SaveError::Commit(_)) if attempt < 5 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }

    /// Runs the job's current step (or undo) and turns its outcome into the save to make.
    async fn step(
        &self,
        kind: &Kind,
        job: &mut Job,
        seen: Option<Observation>,
        clock: std::time::Instant,
    ) -> (JobSave, Then) {
        let cfg = &self.inner.cfg;
        let ctx = &self.inner.ctx;
        let from = (job.state, job.step.clone(), job.step_attempts);
        if job.state == JobState::RollingBack {
            if job.crashes > cfg.max_crashes {
                let why = format!(
                    "rollback step {} crashed the worker {} times; clean-up abandoned",
                    job.step, job.crashes
                );
                job.data.cleanup_error = Some(why);
                return self.finish(Some(kind), job, None, "crash cap");
            }
            let Some(undo) = kind.undo_fn(&job.step) else {
                return self.finish(Some(kind), job, None, "no undo");
            };
            let outcome = undo(ctx, job, None).await;
            return self.after_undo(kind, job, outcome, from, clock);
        }
        // Forward: the gates first.
        if job.state == JobState::Queued {
            job.state = JobState::InProgress;
            if job.deadline_at.is_none() {
                job.deadline_at =
                    Some(job.created_at + chrono::Duration::from_std(cfg.job_deadline).unwrap_or_default());
            }
            if job.data.step_started_at.is_none() {
                job.data.step_started_at = Some(Utc::now());
            }
            // A replayed job (step `start`) begins at its kind's first step.
            if kind.step(&job.step).is_none() {
                job.step = kind.first().to_string();
            }
            if !job.cancel_requested {
                job.data.started = true;
                if let Some(state) = kind.running_state {
                    job.change_service(|s| s.state = Some(state.to_string()));
                }
            }
        }
        if job.cancel_requested {
            let why = job.cancel_reason.clone().unwrap_or_else(|| "cancelled by an operator".into());
            return self.begin_rollback(kind, job, Failure::new(ErrorClass::Cancelled, why), from, clock);
        }
        if job.deadline_at.is_some_and(|d| Utc::now() > d) {
            let f = Failure::new(
                ErrorClass::Timeout,
                format!("the job did not finish within {}s", cfg.job_deadline.as_secs()),
            );
            return self.begin_rollback(kind, job, f, from, clock);
        }
        if job.crashes > cfg.max_crashes {
            let f = Failure::new(
                ErrorClass::Internal,
                format!(
                    "step {} ended without progress {} times (the worker crashed or hung)",
                    job.step, job.crashes
                ),
            );
            return self.begin_rollback(kind, job, f, from, clock);
        }
        let Some(step) = kind.step(&job.step).copied() else {
            let f = Failure::new(ErrorClass::Internal, format!("unknown step {:?}", job.step));
            return self.begin_rollback(kind, job, f, from, clock);
        };
        // A creating step runs only once its intent is persisted.
        if step.creates && job.intent.as_deref() != Some(step.name) {
            job.intent = Some(step.name.to_string());
            job.intent_on_entry = false;
            let save = self.save_of(
                job,
                false,
                Duration::ZERO,
                history(from, clock, &self.inner.cfg.owner, "intent"),
                None,
            );
            return (save, Then::Continue);
        }
        let outcome = (step.run)(ctx, job, seen).await;
        match outcome {
            Outcome::Next => match kind.after(&job.step).copied() {
                Some(next) => self.advance(job, next.name, next.creates, from, clock),
                None => self.complete(kind, job, from, clock),
            },
            Outcome::Goto(name) => {
                let creates = kind.step(name).is_some_and(|s| s.creates);
                self.advance(job, name, creates, from, clock)
            }
            Outcome::Done => self.complete(kind, job, from, clock),
            Outcome::Wait { step, watch } => {
                if job.step != step {
                    job.step = step.to_string();
                    job.step_attempts = 0;
                    job.attempts += 1;
                    job.data.step_started_at = Some(Utc::now());
                }
                job.intent = None;
                job.crashes = 0;
                let h = history(from, clock, &cfg.owner, "waiting");
                (self.save_of(job, true, cfg.recheck, h, None), Then::Watch(watch))
            }
            Outcome::Later(delay) => {
                let h = history(from, clock, &cfg.owner, &format!("again in {}ms", delay.as_millis()));
                (self.save_of(job, true, delay, h, None), Then::Stop)
            }
            Outcome::Error(e) => {
                job.step_attempts += 1;
                job.attempts += 1;
                let delay = cfg.retry.delay(job.step_attempts, &e);
                let in_time = |d: Duration| {
                    job.deadline_at
                        .is_none_or(|dl| Utc::now() + chrono::Duration::from_std(d).unwrap_or_default() < dl)
                };
                match delay {
                    Some(d) if in_time(d) => {
                        crate::metrics::inc(crate::metrics::ENGINE_RETRIES, &[("step", step.name)]);
                        crate::metrics::inc(crate::metrics::RETRIES, &[("class", retry_class(&e.kind))]);
                        let detail = format!(
                            "attempt {} failed ({:?}): {}; retry in {}ms",
                            job.step_attempts,
                            e.kind,
                            e.message,
                            d.as_millis()
                        );
                        tracing::info!(step = step.name, attempt = job.step_attempts, error = %e.message, "step failed; retrying later");
                        trace::failed(&e.message);
                        let h = history(from, clock, &cfg.owner, &detail);
                        (self.save_of(job, true, d, h, None), Then::Stop)
                    }
                    _ => {
                        let mut f = Failure::new(retry::class_of(e.kind), e.message.clone());
                        if retry::is_retryable(e.kind) {
                            f.message =
                                format!("{} (gave up after {} attempts)", e.message, job.step_attempts);
                        }
                        self.begin_rollback(kind, job, f, from, clock)
                    }
                }
            }
            Outcome::Fail(f) => self.begin_rollback(kind, job, f, from, clock),
        }
    }

    fn advance(
        &self,
        job: &mut Job,
        next: &'static str,
        creates: bool,
        from: (JobState, String, u32),
        clock: std::time::Instant,
    ) -> (JobSave, Then) {
        job.step = next.to_string();
        job.step_attempts = 0;
        job.attempts += 1;
        job.crashes = 0;
        job.data.step_started_at = Some(Utc::now());
        job.intent = creates.then(|| next.to_string());
        job.intent_on_entry = false;
        let h = history(from, clock, &self.inner.cfg.owner, "");
        (self.save_of(job, false, Duration::ZERO, h, None), Then::Continue)
    }

    fn complete(
        &self,
        kind: &Kind,
        job: &mut Job,
        from: (JobState, String, u32),
        clock: std::time::Instant,
    ) -> (JobSave, Then) {
        job.attempts += 1;
        job.state = JobState::Completed;
        job.step = "completed".into();
        job.intent = None;
        self.end_service(kind, job);
        let event = self.event(job, EventType::Completed, None);
        let detail = match &job.data.noop {
            Some(why) => format!("completed: nothing to do ({why})"),
            None => "completed".to_string(),
        };
        let h = history(from, clock, &self.inner.cfg.owner, &detail);
        tracing::info!(attempts = job.attempts, "job completed");
        (self.save_of(job, true, Duration::ZERO, h, Some(event)), Then::Stop)
    }

    fn begin_rollback(
        &self,
        kind: &Kind,
        job: &mut Job,
        f: Failure,
        from: (JobState, String, u32),
        clock: std::time::Instant,
    ) -> (JobSave, Then) {
        tracing::warn!(step = %job.step, class = %f.class, error = %f.message, "job failed; rolling back");
        trace::failed(&format!("{}: {}", f.class, f.message));
        let detail = format!("{} at {}: {}", f.class, job.step, f.message);
        job.error = Some((f.class, job.step.clone(), f.message));
        match kind.first_undo(&job.step) {
            Some((undo, _)) => {
                job.state = JobState::RollingBack;
                job.step = undo.to_string();
                job.step_attempts = 0;
                job.crashes = 0;
                let h = history(from, clock, &self.inner.cfg.owner, &detail);
                (self.save_of(job, false, Duration::ZERO, h, None), Then::Continue)
            }
            None => self.finish(Some(kind), job, None, "nothing to undo"),
        }
    }

    fn after_undo(
        &self,
        kind: &Kind,
        job: &mut Job,
        outcome: Outcome,
        from: (JobState, String, u32),
        clock: std::time::Instant,
    ) -> (JobSave, Then) {
        let cfg = &self.inner.cfg;
        match outcome {
            Outcome::Done | Outcome::Next | Outcome::Goto(_) => match kind.undo_after(&job.step) {
                Some((next, _)) => {
                    job.step = next.to_string();
                    job.step_attempts = 0;
                    job.crashes = 0;
                    let h = history(from, clock, &cfg.owner, "");
                    (self.save_of(job, false, Duration::ZERO, h, None), Then::Continue)
                }
                None => self.finish(Some(kind), job, None, "rolled back"),
            },
            Outcome::Later(d) => self.undo_later(job, d, from, clock),
            Outcome::Wait { .. } => self.undo_later(job, ctx_recheck(cfg), from, clock),
            Outcome::Error(CloudError { message, .. }) | Outcome::Fail(Failure { message, .. }) => {
                job.step_attempts += 1;
                job.attempts += 1;
                // Clean-up is retried longer than a forward step: giving up leaves an orphan.
                if job.step_attempts >= cfg.retry.max_attempts.saturating_mul(3) {
                    job.data.cleanup_error = Some(format!("{}: {}", job.step, message));
                    return self.finish(Some(kind), job, None, "clean-up abandoned");
                }
                let d = cfg.retry.jittered(job.step_attempts);
                let detail = format!(
                    "undo attempt {} failed: {message}; retry in {}ms",
                    job.step_attempts,
                    d.as_millis()
                );
                let h = history(from, clock, &cfg.owner, &detail);
                (self.save_of(job, true, d, h, None), Then::Stop)
            }
        }
    }

    fn undo_later(
        &self,
        job: &mut Job,
        d: Duration,
        from: (JobState, String, u32),
        clock: std::time::Instant,
    ) -> (JobSave, Then) {
        job.crashes = 0;
        let h = history(from, clock, &self.inner.cfg.owner, &format!("again in {}ms", d.as_millis()));
        (self.save_of(job, true, d, h, None), Then::Stop)
    }

    /// Ends a job that did not complete: `failed`, or `cancelled` when an operator asked; the
    /// original error is kept (a clean-up problem is appended, never substituted).
    fn finish(
        &self,
        kind: Option<&Kind>,
        job: &mut Job,
        extra: Option<Failure>,
        why: &str,
    ) -> (JobSave, Then) {
        let from = (job.state, job.step.clone(), job.step_attempts);
        if job.error.is_none() {
            let f = extra.unwrap_or_else(|| Failure::new(ErrorClass::Internal, why));
            job.error = Some((f.class, job.step.clone(), f.message));
        }
        let (class, _, _) = job.error.clone().unwrap_or((ErrorClass::Internal, String::new(), String::new()));
        job.state = if class == ErrorClass::Cancelled { JobState::Cancelled } else { JobState::Failed };
        job.step = job.state.as_str().to_string();
        if let Some(kind) = kind {
            self.end_service(kind, job);
        }
        let kind = if class == ErrorClass::Cancelled { EventType::Cancelled } else { EventType::Failed };
        let event = self.event(job, kind, job.error.clone());
        tracing::info!(state = %job.state, class = %class, "job ended");
        let h = history(from, std::time::Instant::now(), &self.inner.cfg.owner, why);
        (self.save_of(job, true, Duration::ZERO, h, Some(event)), Then::Stop)
    }

    async fn fail_unreadable(&self, row: JobRow, why: String) {
        let save = JobSave {
            id: row.id,
            fence: row.fence,
            state: JobState::Failed,
            step: "failed".into(),
            step_attempts: row.step_attempts,
            attempts: row.attempts,
            run_after: Duration::ZERO,
            deadline_at: row.deadline_at,
            crashes: 0,
            intent: None,
            port_id: row.port_id.clone(),
            server_id: row.server_id.clone(),
            volume_id: row.volume_id.clone(),
            data: row.data.clone(),
            error_class: Some(ErrorClass::InvalidOrder.as_str().into()),
            error_step: Some(row.step.clone()),
            error_message: Some(why.clone()),
            release: true,
            lease: self.inner.cfg.lease,
            service: None,
            history: History {
                from_state: Some(row.state),
                from_step: Some(row.step.clone()),
                actor: Some(self.inner.cfg.owner.clone()),
                detail: Some(why.clone()),
                ..History::default()
            },
            event: Some(outbox_event(&Event {
                event_id: Uuid::new_v4(),
                event_type: EventType::Failed,
                occurred_at: Utc::now(),
                job_id: row.id,
                order_id: row.order_id.clone(),
                project_id: row.project_id.clone(),
                attempts: row.attempts,
                action: Some(row.action.clone()),
                target_order_id: row.target_order_id.clone().or_else(|| Some(row.order_id.clone())),
                server: None,
                port_id: None,
                volume: None,
                error: Some(EventError {
                    class: ErrorClass::InvalidOrder,
                    step: row.step.clone(),
                    message: why,
                }),
                traceparent: trace::current().or_else(|| row.traceparent.clone()),
                drift: None,
                tenant: None,
                region: None,
            })),
            tenant: None,
        };
        let _ = self.inner.committer.save(save).await;
    }

    /// What the job's end changes on its service (and a tenant job's on its tenant), written
    /// with the final save.
    fn end_service(&self, kind: &Kind, job: &mut Job) {
        if kind.name.starts_with("tenant_")
            && let Some(change) = tenant::on_end(job, job.state)
        {
            job.change_tenant(|t| t.state = change.state);
        }
        if let Some(change) = (kind.on_end)(job, job.state) {
            let mut merged = job.service_change.take().unwrap_or_default();
            merged.target_order_id = change.target_order_id;
            merged.state = change.state.or(merged.state);
            merged.ids = change.ids.or(merged.ids);
            merged.boot_volume_id = change.boot_volume_id.or(merged.boot_volume_id);
            merged.flavor = change.flavor.or(merged.flavor);
            merged.last_action_order_id = change.last_action_order_id.or(merged.last_action_order_id);
            job.service_change = Some(merged);
        }
    }

    fn event(&self, job: &Job, kind: EventType, error: Option<(ErrorClass, String, String)>) -> OutboxEvent {
        let completed = kind == EventType::Completed;
        let terminated = completed && job.action == "terminate";
        let status = if terminated {
            "DELETED".to_string()
        } else {
            job.data.server_status.clone().unwrap_or_else(|| "ACTIVE".into())
        };
        let event = Event {
            event_id: Uuid::new_v4(),
            event_type: kind,
            occurred_at: Utc::now(),
            job_id: job.id,
            order_id: job.order_id.clone(),
            project_id: job.project_id.clone(),
            attempts: job.attempts,
            action: Some(job.action.clone()),
            target_order_id: Some(job.target_order_id.clone()),
            server: job.server_id.as_ref().filter(|_| completed).map(|id| EventServer {
                id: id.clone(),
                name: job.server_name(),
                status,
                addresses: if terminated { Vec::new() } else { job.data.addresses.clone() },
                public_ip: job.data.public_ip.as_ref().filter(|_| !terminated).and_then(|p| {
                    Some(crate::messages::EventPublicIp {
                        id: p.id.clone()?,
                        ip: p.ip.clone()?,
                        network: p.network.clone(),
                    })
                }),
                availability_zone: job.data.availability_zone.clone().filter(|_| !terminated),
                boot_volume: job.data.boot_volume.as_ref().and_then(|b| b.id.clone()).map(|id| EventVolume {
                    id,
                    device: None,
                    kept: job.data.boot_volume_kept.filter(|_| terminated),
                }),
            }),
            port_id: job.port_id.clone().filter(|_| completed),
            volume: job.volume_id.as_ref().filter(|_| completed).map(|id| EventVolume {
                id: id.clone(),
                device: if terminated { None } else { job.data.device.clone() },
                kept: job.data.volume_kept.filter(|_| terminated),
            }),
            error: error.map(|(class, step, message)| {
                let message = match &job.data.cleanup_error {
                    Some(c) => format!("{message} (clean-up incomplete: {c})"),
                    None => message,
                };
                EventError { class, step, message }
            }),
            // The span that ends the job, or the stored context when traces are off.
            traceparent: trace::current().or_else(|| job.traceparent.clone()),
            drift: None,
            tenant: match (&job.tenant, &job.data.tenant) {
                (Some(t), Some(d)) if completed && job.kind.starts_with("tenant_") => {
                    Some(crate::messages::EventTenant {
                        tenant_ref: t.tenant_ref.clone(),
                        project_id: d.project_id.clone(),
                        domain_id: d.domain_id.clone(),
                        user_id: d.user_id.clone(),
                        removed: d.removed.clone(),
                    })
                }
                _ => None,
            },
            region: job.region(),
        };
        outbox_event(&event)
    }

    fn save_of(
        &self,
        job: &mut Job,
        release: bool,
        run_after: Duration,
        history: History,
        event: Option<OutboxEvent>,
    ) -> JobSave {
        let (error_class, error_step, error_message) = match &job.error {
            Some((c, s, m)) => (Some(c.as_str().to_string()), Some(s.clone()), Some(m.clone())),
            None => (None, None, None),
        };
        record_transition(job, &history);
        JobSave {
            id: job.id,
            fence: job.fence,
            state: job.state,
            step: job.step.clone(),
            step_attempts: job.step_attempts,
            attempts: job.attempts,
            run_after,
            deadline_at: job.deadline_at,
            crashes: job.crashes,
            intent: job.intent.clone(),
            port_id: job.port_id.clone(),
            server_id: job.server_id.clone(),
            volume_id: job.volume_id.clone(),
            data: serde_json::to_string(&job.data).ok(),
            error_class,
            error_step,
            error_message,
            release,
            lease: self.inner.cfg.lease,
            history,
            event,
            service: job.service_change.take(),
            tenant: job.tenant_change.take(),
        }
    }
}

fn ctx_recheck(cfg: &EngineConfig) -> Duration {
    cfg.poll_interval.max(Duration::from_millis(200))
}

fn history(from: (JobState, String, u32), clock: std::time::Instant, actor: &str, detail: &str) -> History {
    History {
        from_state: Some(from.0),
        from_step: Some(from.1),
        attempt: from.2 + 1,
        duration_ms: Some(clock.elapsed().as_millis() as u64),
        actor: Some(actor.to_string()),
        detail: (!detail.is_empty()).then(|| detail.to_string()),
    }
}

/// Process metrics of one transition (served by `GET /metrics`): the run of the step it ends,
/// with its duration, and the job's end if it is one.
fn record_transition(job: &Job, history: &History) {
    use crate::metrics;
    if let Some(from_step) = history.from_step.as_deref() {
        let labels = [("kind", job.kind.as_str()), ("step", from_step), ("outcome", job.state.as_str())];
        metrics::inc(metrics::STEP_RUNS, &labels);
        if let Some(ms) = history.duration_ms {
            metrics::observe(metrics::STEP_DURATION, &labels[..2], ms as f64 / 1000.0);
        }
    }
    if job.state.is_final() {
        metrics::inc(metrics::JOBS_FINISHED, &[("state", job.state.as_str())]);
        if let Some((class, _, _)) = &job.error {
            metrics::inc(metrics::JOBS_FAILED, &[("kind", job.kind.as_str()), ("class", class.as_str())]);
        }
        let seconds = (Utc::now() - job.created_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::observe(
            metrics::ORDER_TO_EVENT,
            &[("kind", job.kind.as_str()), ("state", job.state.as_str())],
            seconds,
        );
    }
}

/// The `class` label of a retry: the kind of error that is retried.
fn retry_class(kind: &self::cloud::ErrorKind) -> &'static str {
    use self::cloud::ErrorKind;
    match kind {
        ErrorKind::Transient => "transient",
        ErrorKind::RateLimited(_) => "rate_limited",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Quota => "quota",
        ErrorKind::NotFound => "not_found",
        ErrorKind::Auth => "auth",
        ErrorKind::Invalid => "invalid",
        ErrorKind::Permanent => "permanent",
    }
}

fn outbox_event(event: &Event) -> OutboxEvent {
    OutboxEvent {
        event_id: event.event_id,
        routing_key: event.event_type.routing_key().to_string(),
        body: serde_json::to_string(event).unwrap_or_else(|_| "{}".into()),
    }
}
