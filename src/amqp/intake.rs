//! The intake consumer: billing orders from `provisioner.orders` to `queued` jobs, each once.
//!
//! Deliveries are collected into a batch (up to `intake.batch_size`, or for at most
//! `intake.batch_linger_ms` after the first one); each is checked on its own (size ≤ 256 KiB,
//! UTF-8, JSON, schema `order.v1`, then meaning: see [`crate::messages::Schemas::parse_order`]).
//! Then, for the batch as a whole:
//!
//! 1. the valid orders, deduplicated within the batch (the first one wins), are written in ONE
//!    idempotent multi-row insert and ONE commit ([`Store::insert_jobs`]); an order whose
//!    `order_id` already has a job makes no second job: it is counted as a duplicate, and if its
//!    body differs from the stored one, a warning names both SHA-256 digests (a billing bug);
//! 2. every invalid message is dead-lettered with its reasons: a copy of the original body and
//!    properties is published to `provisioner.dlx` (same routing key, so it lands in
//!    `provisioner.dead`) with the headers `x-provisioner-error` (every reason, one readable
//!    line), `x-provisioner-error-kind` and `x-provisioner-error-at` (RFC 3339), with publisher
//!    confirms. `basic.reject` would dead-letter too, but cannot say why;
//! 3. only then is the batch acked, with one `multiple` ack up to its last delivery tag (every
//!    delivery before it on the channel is settled: batches are settled in order).
//!
//! Nothing is acked before its commit. A message is never requeued by us: the broker
//! redelivers only what a lost channel left unacked, and the `order_id` dedupes it. A quorum
//! queue's delivery limit (see [`super::topology`]) dead-letters a message that crashes the
//! worker again and again.
//!
//! Database down or slow: the batch stays unacked and its insert is retried with backoff (50 ms
//! doubling to 5 s); no new delivery is pulled meanwhile (the prefetch bounds what the broker
//! hands over), and intake resumes by itself. Broker connection lost: the session ends, the
//! broker handle reconnects with backoff, the topology is declared again and consuming resumes.
//! Shutdown (the token): `basic.cancel`, then every delivery already handed over (the batch in
//! hand and what the consumer buffers, at most the prefetch) is settled, and the channels are
//! closed. A database that is down at that moment is retried until the app's grace period ends;
//! then the task is aborted and the broker requeues what was not acked.
//!
//! Intake writes no `job_history` row: the creation time is `jobs.created_at` (see
//! [`crate::store::intake`] for the measurement behind this).

use std::collections::HashMap;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection::{Broker, consume_until_stopped};
use super::dead_letter;
use super::submit::confirmed;
use super::topology::{self, Names};
use super::{AmqpError, AmqpOp};
use crate::config::{IntakeSettings, QueueType};
use crate::messages::{Incoming, Rejection, Schemas};
use crate::metrics;
use crate::store::Store;
use crate::store::intake::NewJob;
use crate::telemetry::trace;

pub use super::dead_letter::{ERROR_AT_HEADER, ERROR_HEADER, ERROR_KIND_HEADER};

pub use crate::metrics::DIFFERING_RESENDS;

/// At shutdown, how long the drain waits for one more buffered delivery.
const DRAIN_IDLE: Duration = Duration::from_millis(500);

/// Largest pause between two attempts of a failing batch insert.
const DB_RETRY_MAX: Duration = Duration::from_secs(5);

/// What the intake consumer needs. Built by `startup`; tests and the benchmark build it too.
#[derive(Debug, Clone)]
pub struct Intake {
    pub broker: Broker,
    pub store: Store,
    pub names: Names,
    pub queue_type: QueueType,
    pub settings: IntakeSettings,
    pub schemas: Schemas,
    /// Consumer tag, shown by `rabbitmqctl list_consumers`.
    pub consumer_tag: String,
    /// Seals a password in a tenant order before it is stored; without it such an order is
    /// dead-lettered (`PROVISIONER_SECRETS_KEY`).
    pub secrets: Option<std::sync::Arc<crate::secrets::SecretsKey>>,
}

/// One order of a batch, after validation.
enum Checked {
    Valid(NewJob),
    Invalid(Rejection),
}

/// An action whose target service is not known (yet): held back, unacked, and offered again
/// with every batch until its create commits (it may be in another worker's batch right now)
/// or `intake.target_grace_secs` pass, when it is dead-lettered.
struct Parked {
    delivery: Delivery,
    job: NewJob,
    since: Instant,
}

/// How often held-back actions are offered again when no delivery comes.
const PARKED_RECHECK: Duration = Duration::from_millis(250);

/// Counts of one settled batch (tests and logs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub queued: usize,
    pub duplicates: usize,
    pub rejected: usize,
    /// Actions held back because their service is not known yet.
    pub held: usize,
}

impl Intake {
    /// Consumes until `shutdown` fires, reconnecting after every broker failure.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AmqpError> {
        consume_until_stopped("intake", &shutdown, || self.session(&shutdown)).await
    }

    /// One channel's life: declare, consume, settle batches; `Ok` only after a clean shutdown.
    /// Runs until its connection is lost: an ack or confirm lapin never answers cannot hang it.
    async fn session(&self, shutdown: &CancellationToken) -> Result<(), AmqpError> {
        self.broker.consumer_session(|channel, dead| self.consume(channel, dead, shutdown)).await
    }

    async fn consume(
        &self,
        channel: Channel,
        dead: Channel,
        shutdown: &CancellationToken,
    ) -> Result<(), AmqpError> {
        topology::declare(&channel, &self.names, self.queue_type).await?;
        channel.basic_qos(self.settings.prefetch, BasicQosOptions::default()).await.op("basic.qos")?;
        let mut consumer = channel
            .basic_consume(
                ShortString::from(self.names.orders_queue.as_str()),
                ShortString::from(self.consumer_tag.as_str()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .op("basic.consume")?;
        tracing::info!(queue = %self.names.orders_queue, prefetch = self.settings.prefetch,
            batch_size = self.settings.batch_size, "intake consuming");

        let batch_size = self.settings.batch_size.max(1);
        let linger = Duration::from_millis(self.settings.batch_linger_ms);
        let mut batch: Vec<Delivery> = Vec::with_capacity(batch_size);
        let mut parked: Vec<Parked> = Vec::new();
        let mut deadline = Instant::now();
        loop {
            let next = if batch.is_empty() && parked.is_empty() {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    next = consumer.next() => next,
                }
            } else {
                let wake = if batch.is_empty() { Instant::now() + PARKED_RECHECK } else { deadline };
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(wake) => {
                        self.settle(&mut batch, &mut parked, &dead).await?;
                        continue;
                    }
                    next = consumer.next() => next,
                }
            };
            let delivery = self.delivery(next)?;
            if batch.is_empty() {
                deadline = Instant::now() + linger;
            }
            batch.push(delivery);
            // Take what is already buffered without waiting: a busy queue fills batches at once.
            while batch.len() < batch_size {
                match consumer.next().now_or_never() {
                    Some(next) => batch.push(self.delivery(next)?),
                    None => break,
                }
            }
            if batch.len() >= batch_size {
                self.settle(&mut batch, &mut parked, &dead).await?;
            }
        }

        // Shutdown: stop the flow, then settle every delivery already handed to us (at most
        // the prefetch), so that nothing we hold goes back to the queue; then close. Actions
        // still held back stay unacked: the broker redelivers them to whoever consumes next.
        tracing::info!(in_hand = batch.len(), held = parked.len(), "intake stopping");
        let _ = channel
            .basic_cancel(ShortString::from(self.consumer_tag.as_str()), BasicCancelOptions::default())
            .await;
        let settled = self.drain(consumer, &mut batch, &mut parked, &dead).await;
        // The channels close when dropped (an explicit close racing lapin's close-on-drop can
        // put the whole connection in error); the broker handle closes the connection.
        drop((channel, dead));
        settled.map(|_| ())
    }

    /// After `basic.cancel`: takes what the consumer still buffers (it ends once the broker
    /// confirmed the cancel and the buffer is empty) and settles it with the batch in hand.
    async fn drain(
        &self,
        mut consumer: lapin::Consumer,
        batch: &mut Vec<Delivery>,
        parked: &mut Vec<Parked>,
        dead: &Channel,
    ) -> Result<(), AmqpError> {
        let batch_size = self.settings.batch_size.max(1);
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout(DRAIN_IDLE, consumer.next()).await {
            batch.push(delivery);
            if batch.len() >= batch_size {
                self.settle(batch, parked, dead).await?;
            }
        }
        self.settle(batch, parked, dead).await.map(|_| ())
    }

    fn delivery(&self, next: Option<lapin::Result<Delivery>>) -> Result<Delivery, AmqpError> {
        match next {
            Some(Ok(delivery)) => Ok(delivery),
            Some(Err(source)) => Err(AmqpError::Channel { op: "consume", source }),
            None => Err(AmqpError::ConsumerCancelled { queue: self.names.orders_queue.clone() }),
        }
    }

    /// Validates, commits, dead-letters and acks a batch (with the actions held back so far,
    /// offered again first); empties it on success.
    async fn settle(
        &self,
        batch: &mut Vec<Delivery>,
        parked: &mut Vec<Parked>,
        dead: &Channel,
    ) -> Result<BatchOutcome, AmqpError> {
        if batch.is_empty() && parked.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let mut outcome = BatchOutcome::default();
        let were_parked = !parked.is_empty();

        // 1. Check every delivery; dedupe the valid ones within the batch (the first one wins;
        //    held-back actions came first).
        let mut checked: Vec<Checked> =
            batch.iter().map(|d| self.check(d.routing_key.as_str(), &d.data)).collect();
        let spans = self.trace_context(batch, &mut checked);
        let mut jobs: Vec<NewJob> = Vec::with_capacity(batch.len() + parked.len());
        let mut first_digest: HashMap<String, String> = HashMap::new();
        for p in parked.iter() {
            first_digest.insert(p.job.order_id.clone(), p.job.order_digest.clone());
            jobs.push(p.job.clone());
        }
        // Index into `batch` of each delivery whose job is in `jobs` (held ones excepted).
        let mut job_of_delivery: Vec<Option<String>> = vec![None; batch.len()];
        for (i, c) in checked.iter().enumerate() {
            if let Checked::Valid(job) = c {
                match first_digest.get(job.order_id.as_str()) {
                    Some(first) => {
                        outcome.duplicates += 1;
                        warn_if_differs(&job.order_id, first, &job.order_digest);
                    }
                    None => {
                        first_digest.insert(job.order_id.clone(), job.order_digest.clone());
                        job_of_delivery[i] = Some(job.order_id.clone());
                        jobs.push(job.clone());
                    }
                }
            }
        }

        // 2. Commit the valid ones (retrying while the database is away).
        let mut unknown: std::collections::HashSet<String> = std::collections::HashSet::new();
        if !jobs.is_empty() {
            let digests: HashMap<String, String> =
                jobs.iter().map(|j| (j.order_id.clone(), j.order_digest.clone())).collect();
            let inserted = self.insert_with_retry(&mut jobs).await?;
            outcome.queued = inserted.inserted;
            outcome.duplicates += inserted.duplicates.len();
            for (order_id, span) in &spans {
                let dup = inserted.duplicates.contains_key(order_id.as_str());
                trace::outcome(span, if dup { "duplicate" } else { "queued" });
            }
            for (order_id, stored) in &inserted.duplicates {
                if let Some(received) = digests.get(order_id) {
                    warn_if_differs(order_id, stored, received);
                }
            }
            unknown.extend(inserted.unknown_targets);
        }

        // 3. Actions whose service is unknown: held back within the grace, then dead-lettered.
        let grace = Duration::from_secs(self.settings.target_grace_secs);
        let mut to_ack: Vec<Delivery> = Vec::new();
        let mut expired: Vec<(Delivery, Rejection)> = Vec::new();
        let mut still: Vec<Parked> = Vec::new();
        for p in parked.drain(..) {
            if !unknown.contains(&p.job.order_id) {
                to_ack.push(p.delivery);
            } else if p.since.elapsed() >= grace {
                let why = unknown_target(&p.job, grace);
                expired.push((p.delivery, why));
            } else {
                still.push(p);
            }
        }
        let mut invalid: Vec<(Delivery, Rejection)> = Vec::new();
        for ((delivery, c), order) in batch.drain(..).zip(checked).zip(job_of_delivery) {
            match (c, order) {
                (Checked::Valid(job), Some(order)) if unknown.contains(&order) => {
                    if grace.is_zero() {
                        let why = unknown_target(&job, grace);
                        expired.push((delivery, why));
                    } else {
                        tracing::info!(order_id = %job.order_id, target = ?job.target_order_id,
                            "action for an unknown service held back (its create may still be committing)");
                        still.push(Parked { delivery, job, since: Instant::now() });
                    }
                }
                (Checked::Invalid(rejection), _) => invalid.push((delivery, rejection)),
                _ => to_ack.push(delivery),
            }
        }
        outcome.held = still.len();
        *parked = still;
        invalid.extend(expired);

        // 4. Dead-letter the invalid ones, with their reasons, confirmed.
        let mut confirms = Vec::new();
        for (delivery, rejection) in &invalid {
            tracing::warn!(delivery_tag = delivery.delivery_tag, kind = rejection.kind(),
                reason = %rejection, "order rejected; dead-lettered");
            confirms.push((self.dead_letter(dead, delivery, rejection).await?, rejection.kind()));
        }
        for (confirm, kind) in confirms {
            confirmed(confirm, "a dead-lettered order").await?;
            metrics::inc(metrics::DEAD_LETTERED, &[("queue", "orders"), ("reason", kind)]);
            outcome.rejected += 1;
        }
        to_ack.extend(invalid.into_iter().map(|(d, _)| d));

        // 5. Ack. With nothing held back, one `multiple` ack up to the newest delivery settles
        //    everything before it on the channel; while actions are held back (unacked, with
        //    older tags), each delivery is acked on its own.
        if parked.is_empty() && !were_parked {
            if let Some(last) = to_ack.iter().max_by_key(|d| d.delivery_tag) {
                last.acker.ack(BasicAckOptions { multiple: true }).await.op("basic.ack")?;
            }
        } else {
            for d in &to_ack {
                d.acker.ack(BasicAckOptions { multiple: false }).await.op("basic.ack")?;
            }
        }

        metrics::add(metrics::INTAKE_ORDERS, &[("outcome", "queued")], outcome.queued as u64);
        metrics::add(metrics::INTAKE_ORDERS, &[("outcome", "duplicate")], outcome.duplicates as u64);
        metrics::add(metrics::INTAKE_ORDERS, &[("outcome", "rejected")], outcome.rejected as u64);
        tracing::debug!(?outcome, "intake batch settled");
        Ok(outcome)
    }

    /// Billing's `traceparent` (AMQP header) of each valid order, under an intake span per order
    /// when traces are on; the context to store goes into the job. The spans end with the batch.
    fn trace_context(&self, batch: &[Delivery], checked: &mut [Checked]) -> Vec<(String, tracing::Span)> {
        let mut spans = Vec::new();
        for (delivery, c) in batch.iter().zip(checked.iter_mut()) {
            if let Checked::Valid(job) = c {
                let incoming = trace::from_headers(delivery.properties.headers().as_ref());
                let queue = &self.names.orders_queue;
                let (span, stored) = trace::intake_span(queue, job.id, &job.order_id, incoming.as_deref());
                job.traceparent = stored;
                if !span.is_none() {
                    spans.push((job.order_id.clone(), span));
                }
            }
        }
        spans
    }

    fn check(&self, routing_key: &str, body: &[u8]) -> Checked {
        let text = match std::str::from_utf8(body) {
            Ok(text) => text,
            Err(e) => return Checked::Invalid(Rejection::NotUtf8(e.to_string())),
        };
        match self.schemas.parse_incoming(routing_key, body) {
            Ok(Incoming::Create(order)) => Checked::Valid(NewJob {
                id: uuid::Uuid::new_v4(),
                order_id: order.order_id,
                project_id: order.project_id,
                action: "create".into(),
                target_order_id: None,
                tenant_ref: order.tenant_ref,
                order_body: text.to_string(),
                order_digest: sha256_hex(body),
                traceparent: None,
            }),
            Ok(Incoming::Action(action)) => Checked::Valid(NewJob {
                id: uuid::Uuid::new_v4(),
                order_id: action.order_id,
                project_id: String::new(),
                action: action.action.as_str().into(),
                target_order_id: Some(action.target_order_id),
                tenant_ref: None,
                order_body: text.to_string(),
                order_digest: sha256_hex(body),
                traceparent: None,
            }),
            Ok(Incoming::Tenant(order)) => self.tenant_job(*order, text, body),
            Err(rejection) => Checked::Invalid(rejection),
        }
    }

    /// A tenant order as a job. A password is sealed before the order is stored (bound to the
    /// order id), and the digest is taken of the body without it (a digest of a password is a
    /// guessable copy of it); with no key configured the order is refused.
    fn tenant_job(&self, order: crate::messages::TenantOrder, text: &str, body: &[u8]) -> Checked {
        use crate::messages::tenant::with_password;
        let (order_body, order_digest) = match (order.password(), &self.secrets) {
            (None, _) => (text.to_string(), sha256_hex(body)),
            (Some(_), None) => {
                return Checked::Invalid(Rejection::Meaning(
                    "/user/password: this worker has no PROVISIONER_SECRETS_KEY, so it cannot keep a password \
                     at rest (sealed): set the key on every worker (`provisioner secrets gen-key`), or send the \
                     order without a password"
                        .into(),
                ));
            }
            (Some(password), Some(key)) => {
                let sealed = match key.seal(password, &order.order_id) {
                    Ok(s) => s,
                    Err(e) => return Checked::Invalid(Rejection::Meaning(format!("/user/password: {e}"))),
                };
                let (Some(stored), Some(masked)) =
                    (with_password(text, Some(&sealed)), with_password(text, Some("***")))
                else {
                    return Checked::Invalid(Rejection::Meaning("/user/password: cannot be sealed".into()));
                };
                (stored, sha256_hex(masked.as_bytes()))
            }
        };
        Checked::Valid(NewJob {
            id: uuid::Uuid::new_v4(),
            order_id: order.order_id,
            project_id: String::new(),
            action: order.action.as_str().into(),
            target_order_id: None,
            tenant_ref: Some(order.tenant_ref),
            order_body,
            order_digest,
            traceparent: None,
        })
    }

    async fn insert_with_retry(
        &self,
        jobs: &mut [NewJob],
    ) -> Result<crate::store::intake::InsertOutcome, AmqpError> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(DB_RETRY_MAX)
            .with_jitter()
            .without_max_times()
            .build();
        let mut failures = 0u32;
        loop {
            match self.store.insert_jobs(jobs).await {
                Ok(outcome) => {
                    if failures > 0 {
                        tracing::info!(failures, "database is back; intake resumes");
                    }
                    return Ok(outcome);
                }
                Err(e) => {
                    failures += 1;
                    let delay = delays.next().unwrap_or(DB_RETRY_MAX);
                    tracing::warn!(error = %e, failures, orders = jobs.len(), retry_in_ms = delay.as_millis() as u64,
                        "cannot commit intake batch; it stays unacked, retrying");
                    // Even after shutdown was requested: the batch in hand is finished if the
                    // database comes back within the grace period (then the task is aborted,
                    // and the broker requeues what was not acked).
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        dead: &Channel,
        delivery: &Delivery,
        rejection: &Rejection,
    ) -> Result<lapin::PublisherConfirm, AmqpError> {
        let (dlx, queue) = (&self.names.dlx, &self.names.orders_queue);
        dead_letter::publish_copy(dead, dlx, queue, delivery, rejection.to_string(), rejection.kind()).await
    }
}

fn unknown_target(job: &NewJob, grace: Duration) -> Rejection {
    if let Some(tenant) = &job.tenant_ref {
        return Rejection::UnknownTarget(format!(
            "/tenant_ref: no tenant {tenant:?} was onboarded (no order.tenant.create; waited {} s for it)",
            grace.as_secs()
        ));
    }
    Rejection::UnknownTarget(format!(
        "/target_order_id: no service was created by order {:?} (waited {} s for its create order)",
        job.target_order_id.as_deref().unwrap_or(""),
        grace.as_secs()
    ))
}

fn warn_if_differs(order_id: &str, stored: &str, received: &str) {
    if stored != received {
        metrics::inc(DIFFERING_RESENDS, &[]);
        tracing::warn!(
            order_id,
            stored_digest = stored,
            received_digest = received,
            "order re-sent with a different body; the first one is kept (a billing bug?)"
        );
    }
}

/// SHA-256 of a body, lowercase hex.
pub fn sha256_hex(body: &[u8]) -> String {
    format!("{:x}", Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::sha256_hex;

    #[test]
    fn digest_is_lowercase_hex_sha256() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
