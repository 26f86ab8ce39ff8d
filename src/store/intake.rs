//! Intake's side of the store: one multi-row, idempotent insert per batch of orders.
//!
//! The intake consumer (`amqp::intake`) hands over a batch of validated orders; this module
//! writes them in ONE statement and ONE transaction:
//! `INSERT INTO jobs (...) VALUES (...),(...) ON DUPLICATE KEY UPDATE resends = resends + 1`.
//! An order whose `order_id` already has a job makes no second job; it only bumps `resends`.
//!
//! How duplicates are found without a read per order: MySQL/MariaDB report 1 affected row per
//! inserted row and 2 per row updated by `ON DUPLICATE KEY UPDATE`. So when the affected rows
//! equal the batch length there was no duplicate (the fast path, one round trip). Otherwise,
//! still inside the transaction, `SELECT ... WHERE resends > 0 AND order_id IN (...)` returns
//! exactly the duplicates of this batch: the rows this statement inserted are locked by it and
//! have `resends = 0`, and every pre-existing row it touched was just incremented. Their stored
//! digests are returned so that the caller can warn when a resend differs from the original.
//!
//! Intake writes no `job_history` row: the job's creation time is `jobs.created_at`, and the
//! first history row is the engine's first transition. A history insert per order costs about a
//! fifth of intake throughput (measured), which misses the throughput target of issue 2.
//!
//! Rows are sorted by `order_id` before the insert so that two workers inserting overlapping
//! batches lock the unique index in the same order (no deadlock between them); a deadlock or any
//! other error rolls the whole batch back, and the caller retries it.

use std::collections::HashMap;

use sqlx::{MySql, QueryBuilder};

use super::{Op, Result, Store};

/// The state, kind and first step of a new job.
pub const NEW_JOB_STATE: &str = "queued";
pub const NEW_JOB_KIND: &str = "create";
pub const FIRST_STEP: &str = "resolve";

/// One validated order, ready to become a job.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: uuid::Uuid,
    pub order_id: String,
    pub project_id: String,
    /// The validated order body (UTF-8 JSON, as received).
    pub order_body: String,
    /// SHA-256 (lowercase hex) of the raw body.
    pub order_digest: String,
}

/// What [`Store::insert_jobs`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InsertOutcome {
    /// New jobs created.
    pub inserted: usize,
    /// Orders of the batch that already had a job, with the digest stored for it.
    pub duplicates: HashMap<String, String>,
}

impl Store {
    /// Inserts a batch of new jobs, idempotent on `order_id`, in one transaction.
    ///
    /// `jobs` must not repeat an `order_id` (the caller dedupes the batch first). On error
    /// nothing was written and the whole batch may be retried.
    pub async fn insert_jobs(&self, jobs: &mut [NewJob]) -> Result<InsertOutcome> {
        if jobs.is_empty() {
            return Ok(InsertOutcome::default());
        }
        jobs.sort_by(|a, b| a.order_id.cmp(&b.order_id));
        let mut tx = self.pool.begin().await.op("begin intake batch")?;
        let mut insert: QueryBuilder<MySql> = QueryBuilder::new(
            "INSERT INTO jobs (id, order_id, project_id, kind, order_body, order_digest, state, step, \
             next_run_at) ",
        );
        insert.push_values(jobs.iter(), |mut row, job| {
            row.push_bind(job.id.to_string())
                .push_bind(&job.order_id)
                .push_bind(&job.project_id)
                .push_bind(NEW_JOB_KIND)
                .push_bind(&job.order_body)
                .push_bind(&job.order_digest)
                .push_bind(NEW_JOB_STATE)
                .push_bind(FIRST_STEP)
                .push("UTC_TIMESTAMP(6)");
        });
        insert.push(" ON DUPLICATE KEY UPDATE resends = resends + 1");
        let affected = insert.build().execute(&mut *tx).await.op("insert intake batch")?.rows_affected();
        let mut outcome = InsertOutcome::default();
        if affected as usize != jobs.len() {
            let mut select: QueryBuilder<MySql> = QueryBuilder::new(
                "SELECT order_id, order_digest FROM jobs WHERE resends > 0 AND order_id IN (",
            );
            let mut ids = select.separated(", ");
            for job in jobs.iter() {
                ids.push_bind(&job.order_id);
            }
            select.push(")");
            let rows: Vec<(String, String)> =
                select.build_query_as().fetch_all(&mut *tx).await.op("find intake duplicates")?;
            outcome.duplicates = rows.into_iter().collect();
        }
        tx.commit().await.op("commit intake batch")?;
        outcome.inserted = jobs.len() - outcome.duplicates.len();
        Ok(outcome)
    }

    /// Jobs in the store (tests and benchmarks count with it).
    pub async fn count_jobs(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs").fetch_one(&self.pool).await.op("count jobs")
    }
}
