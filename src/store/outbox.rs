//! The transactional outbox, read side: the relay takes unsent completion events, publishes them
//! with publisher confirms, and marks them sent only once the broker confirmed them.
//!
//! Events are written by the job saves (see [`super::jobs`]) in the same transaction as the
//! job's final state. [`RelayBatch`] holds the rows it took locked (`FOR UPDATE SKIP LOCKED`)
//! for the time of one publish round, so that two workers' relays do not publish the same event
//! at the same time; delivery is still at least once (a crash between confirm and commit sends an
//! event again, with the same `event_id`). An event that could not be published waits with
//! exponential backoff (`next_attempt_at`) and the reason in `last_error`.

use std::time::Duration;

use sqlx::{MySql, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use super::{Op, Result, Store, StoreError};

/// One event to publish.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: u64,
    pub event_id: Uuid,
    pub job_id: String,
    pub routing_key: String,
    pub body: String,
    pub publish_attempts: u32,
}

/// A round of the relay: the rows it took, locked until [`RelayBatch::finish`].
pub struct RelayBatch {
    tx: Transaction<'static, MySql>,
    pub rows: Vec<OutboxRow>,
}

impl std::fmt::Debug for RelayBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBatch").field("rows", &self.rows.len()).finish()
    }
}

fn id_list(q: &mut QueryBuilder<MySql>, ids: &[u64]) {
    q.push("(");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    q.push(")");
}

impl Store {
    /// Takes up to `limit` unsent events that are due, oldest first, locked for this round.
    pub async fn take_unsent(&self, limit: usize) -> Result<RelayBatch> {
        let mut tx = self.pool().begin().await.op("begin relay")?;
        let rows = sqlx::query(
            "SELECT id, event_id, job_id, routing_key, body, publish_attempts FROM outbox \
             WHERE sent_at IS NULL AND (next_attempt_at IS NULL OR next_attempt_at <= NOW(6)) \
             ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED",
        )
        .bind(limit as u64)
        .fetch_all(&mut *tx)
        .await
        .op("select unsent events")?;
        let rows = rows
            .iter()
            .map(|r| {
                let event_id: String = r.try_get("event_id").op("read outbox")?;
                Ok(OutboxRow {
                    id: r.try_get("id").op("read outbox")?,
                    event_id: Uuid::parse_str(&event_id)
                        .map_err(|e| StoreError::Corrupt(format!("outbox event_id {event_id:?}: {e}")))?,
                    job_id: r.try_get("job_id").op("read outbox")?,
                    routing_key: r.try_get("routing_key").op("read outbox")?,
                    body: r.try_get("body").op("read outbox")?,
                    publish_attempts: r.try_get("publish_attempts").op("read outbox")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RelayBatch { tx, rows })
    }
}

impl RelayBatch {
    /// Marks `sent` as sent and `failed` (id, delay, reason) as waiting for another attempt,
    /// then commits and releases the rows.
    pub async fn finish(mut self, sent: &[u64], failed: &[(u64, Duration, String)]) -> Result<()> {
        if !sent.is_empty() {
            let mut q: QueryBuilder<MySql> = QueryBuilder::new(
                "UPDATE outbox SET sent_at = NOW(6), publish_attempts = publish_attempts + 1, \
                 last_error = NULL WHERE id IN ",
            );
            id_list(&mut q, sent);
            q.build().execute(&mut *self.tx).await.op("mark events sent")?;
        }
        for (id, delay, reason) in failed {
            sqlx::query(
                "UPDATE outbox SET publish_attempts = publish_attempts + 1, \
                 next_attempt_at = NOW(6) + INTERVAL ? MICROSECOND, last_error = ? WHERE id = ?",
            )
            .bind(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX / 2))
            .bind(reason)
            .bind(*id)
            .execute(&mut *self.tx)
            .await
            .op("mark event failed")?;
        }
        self.tx.commit().await.op("commit relay")?;
        Ok(())
    }
}
