//! The outbox relay: moves completion events from the `outbox` table to exchange
//! `provisioning.events` (routing key = event type, persistent, `message_id` = `event_id`) with
//! publisher confirms, marking each sent only once the broker confirmed it.
//!
//! A round takes up to [`BATCH`] due events (locked, so two workers' relays do not publish the
//! same ones at once), publishes them all, awaits the confirms, then commits: confirmed → sent;
//! otherwise the event waits with exponential backoff (`next_attempt_at`, reason in
//! `last_error`). With the broker down the events simply wait and go out when it returns:
//! delivery is at least once, and a re-sent event keeps its `event_id`.
//!
//! Decision: an event returned as unroutable (no queue bound to `provisioning.events` for its
//! key) is not marked sent: it stays in the outbox and is retried with backoff until a queue is
//! bound, and each such return is logged. Billing must not lose an event because its queue was
//! declared late.
//!
//! The relay wakes when a commit wrote an event (the engine notifies it) and otherwise polls
//! every second (events written by other workers whose relay died). At shutdown it keeps
//! flushing until the backlog is empty or [`FLUSH_LIMIT`] passed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::publisher::{ConfirmedPublisher, Outgoing, Published};
use super::{AmqpError, Broker};
use crate::store::Store;

/// Events per round.
pub const BATCH: usize = 500;
/// Poll interval when nobody wakes the relay.
const IDLE: Duration = Duration::from_secs(1);
/// Longest flush at shutdown.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// Largest delay before an event that could not be published is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The relay task.
#[derive(Debug)]
pub struct Relay {
    pub store: Store,
    pub publisher: ConfirmedPublisher,
    /// Notified when events were committed.
    pub wake: Arc<Notify>,
}

/// Backoff before the next attempt after `attempts` failed ones: 1 s doubling to 30 s, jittered.
fn backoff(attempts: u32) -> Duration {
    let ceiling = Duration::from_secs(1).saturating_mul(1 << attempts.min(5)).min(MAX_BACKOFF);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(30_000);
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
}

impl Relay {
    pub fn new(store: Store, broker: Broker, exchange: &str, wake: Arc<Notify>) -> Relay {
        Relay { store, publisher: ConfirmedPublisher::new(broker, exchange), wake }
    }

    /// Runs until `shutdown`, then flushes what is left for at most [`FLUSH_LIMIT`].
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), AmqpError> {
        let mut db_failures = 0u32;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            match self.publisher.ready().await {
                Ok(()) => {}
                Err(AmqpError::Cancelled) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "event relay cannot open its channel; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            }
            match self.round().await {
                Ok(n) if n > 0 => db_failures = 0,
                Ok(_) => {
                    db_failures = 0;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(IDLE) => {}
                    }
                }
                Err(e) => {
                    db_failures += 1;
                    let delay = Duration::from_millis(200 * u64::from(db_failures.min(25)));
                    tracing::warn!(error = %e, "event relay round failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.flush(FLUSH_LIMIT).await;
        Ok(())
    }

    /// Publishes until the backlog of due events is empty or `limit` passed (shutdown).
    pub async fn flush(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, self.round()).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "event relay flush failed");
                    break;
                }
            }
        }
    }

    /// One round; returns how many events it handled (sent or postponed).
    pub async fn round(&mut self) -> Result<usize, crate::store::StoreError> {
        let batch = self.store.take_unsent(BATCH).await?;
        if batch.rows.is_empty() {
            batch.finish(&[], &[]).await?;
            return Ok(0);
        }
        let ids: Vec<String> = batch.rows.iter().map(|r| r.event_id.to_string()).collect();
        let traces: Vec<Option<String>> = batch.rows.iter().map(|r| traceparent_of(&r.body)).collect();
        let outgoing: Vec<Outgoing<'_>> = batch
            .rows
            .iter()
            .zip(&ids)
            .zip(&traces)
            .map(|((r, id), tp)| Outgoing {
                routing_key: &r.routing_key,
                message_id: id,
                body: r.body.as_bytes(),
                traceparent: tp.as_deref(),
            })
            .collect();
        let outcomes = self.publisher.publish_all(&outgoing).await;
        let mut sent = Vec::new();
        let mut failed = Vec::new();
        for (row, outcome) in batch.rows.iter().zip(outcomes) {
            match outcome {
                Published::Confirmed => sent.push(row.id),
                Published::Unroutable(why) => {
                    tracing::warn!(event_id = %row.event_id, job_id = %row.job_id, routing_key = %row.routing_key,
                        "event is unroutable (no queue bound to the events exchange); kept in the outbox");
                    failed.push((row.id, backoff(row.publish_attempts), why));
                }
                Published::Failed(why) => failed.push((row.id, backoff(row.publish_attempts), why)),
            }
        }
        let n = batch.rows.len();
        let (ok, postponed) = (sent.len(), failed.len());
        batch.finish(&sent, &failed).await?;
        if ok > 0 {
            crate::metrics::add(crate::metrics::EVENTS_PUBLISHED, &[], ok as u64);
        }
        if postponed > 0 {
            tracing::info!(postponed, "events not confirmed; they wait in the outbox");
        }
        Ok(n)
    }
}

/// The event's `traceparent` field, mirrored into the AMQP header of the same name.
fn traceparent_of(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Trace {
        traceparent: Option<String>,
    }
    serde_json::from_str::<Trace>(body).ok()?.traceparent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_events_traceparent_is_read_from_its_body() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            traceparent_of(&format!(r#"{{"type":"job.completed","traceparent":"{tp}"}}"#)).as_deref(),
            Some(tp)
        );
        assert_eq!(traceparent_of(r#"{"type":"job.completed"}"#), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for a in 0..20 {
            let d = backoff(a);
            assert!(d <= MAX_BACKOFF, "{a}: {d:?}");
            assert!(d >= Duration::from_millis(500), "{a}: {d:?}");
        }
        assert!(backoff(0) <= Duration::from_secs(2));
    }
}
