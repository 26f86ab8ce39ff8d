//! The broker connection: connect with retry and backoff, reconnect after a loss, hand out
//! channels.
//!
//! Every consumer and publisher of the worker (intake, admin consumer, outbox relay) holds a
//! clone of the same [`Broker`] and asks it for a channel when it starts and after its channel
//! died; the broker reconnects when the connection is gone, waiting with jittered exponential
//! backoff (100 ms doubling up to 5 s) for as long as it takes, until the shutdown token fires.
//! The pattern for a consumer is therefore a loop: `broker.watched_channel()` →
//! `topology::declare` → consume until the stream ends or errors, or the connection is reported
//! lost → log → loop. What was not acked on the lost channel is redelivered by the broker, and
//! every consumer is idempotent on its message ids.
//!
//! Why "reported lost" and not only "the stream errored": lapin can leave a request that was
//! queued at the moment its connection died (an ack, seen in the reconnect test under load)
//! unanswered forever, so a consumer that awaits it would hang with its connection gone. Each
//! connection therefore gets a `lost` token, fired from lapin's connection events, and a session
//! runs its work [`until_lost`]: when the connection goes, whatever the session was awaiting is
//! dropped and the loop reconnects.
//!
//! The URL may carry a password: it is only ever shown redacted.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::{Channel, Connection, ConnectionProperties, Event};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{AmqpError, AmqpOp};
use crate::config::SecretUrl;

/// First and largest delay between connection attempts.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Longest wait for the broker's close-ok at shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A shared, self-healing connection to RabbitMQ. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Broker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    url: SecretUrl,
    /// Shown in the RabbitMQ management UI (`connection_name`).
    name: String,
    conn: Mutex<Option<Live>>,
    /// Stops the retry loops: a worker that shuts down does not wait for a broker.
    shutdown: CancellationToken,
}

/// The current connection and the token that fires when it is lost.
#[derive(Debug)]
struct Live {
    conn: Arc<Connection>,
    lost: CancellationToken,
}

impl Live {
    /// Watches `conn`'s events: the first error (or the end of the events, or a connection that
    /// is already down when the watch starts) fires `lost`; shutdown ends the watch.
    fn watch(conn: Connection, shutdown: &CancellationToken) -> Live {
        let lost = CancellationToken::new();
        // Subscribe first, then look: an error before the subscription is seen in the status.
        let mut events = conn.events_listener();
        if !conn.status().connected() {
            lost.cancel();
        }
        let (fire, shutdown) = (lost.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = fire.cancelled() => return,
                    event = events.next() => match event {
                        Some(Event::Error(error)) => {
                            tracing::debug!(%error, "the broker connection is lost");
                            break;
                        }
                        Some(_) => {}
                        None => break,
                    },
                }
            }
            fire.cancel();
        });
        Live { conn: Arc::new(conn), lost }
    }

    fn usable(&self) -> bool {
        !self.lost.is_cancelled() && self.conn.status().connected()
    }
}

/// Runs `work` until it ends or the connection behind `lost` is lost
/// ([`AmqpError::ConnectionLost`]): a session never waits on a connection that is gone.
pub async fn until_lost<T>(
    lost: &CancellationToken,
    work: impl std::future::Future<Output = Result<T, AmqpError>>,
) -> Result<T, AmqpError> {
    tokio::select! {
        result = work => result,
        _ = lost.cancelled() => Err(AmqpError::ConnectionLost),
    }
}

/// The backoff between (re)connection attempts: 100 ms doubling to 5 s, jittered, unbounded.
pub fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(RETRY_MIN)
        .with_max_delay(RETRY_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Runs a consumer's `session` (one channel's life) again and again until `shutdown` fires:
/// after a broker failure it waits with [`reconnect_backoff`] and starts a new session. What the
/// lost channel had not acked is redelivered by the broker; every consumer is idempotent.
/// `Ok` or [`AmqpError::Cancelled`] from a session is a clean stop.
pub async fn consume_until_stopped<F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut session: F,
) -> Result<(), AmqpError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), AmqpError>>,
{
    let mut delays = reconnect_backoff();
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        match session().await {
            Ok(()) | Err(AmqpError::Cancelled) => return Ok(()),
            Err(e) => {
                let delay = delays.next().unwrap_or(RETRY_MAX);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64,
                    "{what} lost its broker channel; what it had not acked will be redelivered");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

impl Broker {
    /// A broker handle; nothing is connected until the first [`Broker::channel`].
    pub fn new(url: SecretUrl, name: impl Into<String>, shutdown: CancellationToken) -> Broker {
        Broker { inner: Arc::new(Inner { url, name: name.into(), conn: Mutex::new(None), shutdown }) }
    }

    /// The broker URL, password redacted.
    pub fn redacted_url(&self) -> String {
        self.inner.url.redacted()
    }

    /// The shutdown token the retry loops watch.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// A new channel on the live connection; connects (or reconnects) first if needed, retrying
    /// with backoff until it works or shutdown is requested ([`AmqpError::Cancelled`]).
    pub async fn channel(&self) -> Result<Channel, AmqpError> {
        self.watched_channel().await.map(|(channel, _)| channel)
    }

    /// [`Broker::channel`], with the token that fires when the channel's connection is lost
    /// (for [`until_lost`]).
    pub async fn watched_channel(&self) -> Result<(Channel, CancellationToken), AmqpError> {
        let mut delays = reconnect_backoff();
        loop {
            let (conn, lost) = self.connection().await?;
            // Opening a channel is itself a request on the connection: bounded by its loss too.
            match until_lost(&lost, async { conn.create_channel().await.op("channel.open") }).await {
                Ok(channel) => return Ok((channel, lost)),
                Err(error) => {
                    tracing::warn!(%error, "cannot open an AMQP channel; reconnecting");
                    self.forget(&conn).await;
                    let delay = delays.next().unwrap_or(RETRY_MAX);
                    self.pause(delay).await?;
                }
            }
        }
    }

    /// A consumer's session: its two channels (the one it consumes on, and one for its
    /// confirmed dead-letter publishes), with `work` run on them until it ends or their
    /// connection is lost ([`until_lost`]).
    pub async fn consumer_session<F, Fut>(&self, work: F) -> Result<(), AmqpError>
    where
        F: FnOnce(Channel, Channel) -> Fut,
        Fut: std::future::Future<Output = Result<(), AmqpError>>,
    {
        let (channel, lost) = self.watched_channel().await?;
        let (dead, dead_lost) = self.watched_channel().await?;
        // Usually one connection; two if it was replaced between the two opens.
        let session = async {
            dead.confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await
                .op("confirm.select")?;
            work(channel, dead).await
        };
        until_lost(&lost, until_lost(&dead_lost, session)).await
    }

    /// The live connection and its `lost` token, connecting with backoff if there is none (or
    /// it died).
    async fn connection(&self) -> Result<(Arc<Connection>, CancellationToken), AmqpError> {
        let mut slot = self.inner.conn.lock().await;
        if let Some(live) = slot.as_ref()
            && live.usable()
        {
            return Ok((live.conn.clone(), live.lost.clone()));
        }
        if let Some(old) = slot.take() {
            old.lost.cancel();
        }
        let live = Live::watch(self.connect_with_retry().await?, &self.inner.shutdown);
        let handed = (live.conn.clone(), live.lost.clone());
        *slot = Some(live);
        Ok(handed)
    }

    /// Drops `conn` if it is still the current connection, so that the next call reconnects.
    async fn forget(&self, conn: &Arc<Connection>) {
        let mut slot = self.inner.conn.lock().await;
        if slot.as_ref().is_some_and(|live| Arc::ptr_eq(&live.conn, conn))
            && let Some(old) = slot.take()
        {
            old.lost.cancel();
        }
    }

    /// Closes the connection (at shutdown), if there is one; waits at most 2 s for the broker.
    pub async fn close(&self) {
        if let Some(live) = self.inner.conn.lock().await.take()
            && live.conn.status().connected()
        {
            let _ = tokio::time::timeout(CLOSE_WAIT, live.conn.close(200, "shutdown".into())).await;
        }
    }

    async fn connect_with_retry(&self) -> Result<Connection, AmqpError> {
        let mut delays = reconnect_backoff();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match connect_once(&self.inner.url, &self.inner.name).await {
                Ok(conn) => {
                    if attempt > 1 {
                        tracing::info!(url = %self.redacted_url(), attempt, "connected to RabbitMQ again");
                    }
                    return Ok(conn);
                }
                Err(e) => {
                    let delay = delays.next().unwrap_or(RETRY_MAX);
                    tracing::warn!(error = %e, attempt, retry_in_ms = delay.as_millis() as u64,
                        "cannot connect to RabbitMQ; retrying");
                    self.pause(delay).await?;
                }
            }
        }
    }

    async fn pause(&self, delay: Duration) -> Result<(), AmqpError> {
        tokio::select! {
            _ = self.inner.shutdown.cancelled() => Err(AmqpError::Cancelled),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

/// One connection attempt, no retry (the CLI commands use it: they fail fast).
pub async fn connect_once(url: &SecretUrl, name: &str) -> Result<Connection, AmqpError> {
    let properties = ConnectionProperties::default().with_connection_name(name.to_string().into());
    Connection::connect(url.expose(), properties)
        .await
        .map_err(|source| AmqpError::Connect { url: url.redacted(), source })
}
