//! The job store: the only module with SQL in it.
//!
//! MySQL 8.0+ / MariaDB 10.6+ through sqlx. The schema lives in `migrations/` and is applied at
//! startup (and by `provisioner migrate`). What the store guarantees:
//! - intake inserts are idempotent on `order_id` and committed before the broker message is acked;
//! - every change of a claimed job is a compare-and-set on its lease fence (zero rows affected
//!   means another worker owns the job now);
//! - a job's final state and its completion event are written in one transaction (the outbox).

pub mod admin;
pub mod intake;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, MySqlPool};

use crate::config::{DatabaseSettings, database_name};

pub mod console;
pub mod jobs;
pub mod outbox;
pub mod reconcile;
pub mod services;
pub mod status;
pub mod tenants;

pub use jobs::{
    Committer, History, JobRow, JobSave, JobState, OutboxEvent, SaveError, ServiceRow, ServiceSave,
};
pub use tenants::{TenantRow, TenantSave};

/// A database error, with the operation that failed. All of them are worth retrying later:
/// the store never classifies a DB error as permanent, because a database that comes back
/// makes every one of them succeed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {op}: {source}")]
    Db {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    MigrationLock(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Adds the name of the failing operation to a sqlx error.
pub(crate) trait Op<T> {
    fn op(self, op: &'static str) -> Result<T>;
}

impl<T> Op<T> for std::result::Result<T, sqlx::Error> {
    fn op(self, op: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Db { op, source })
    }
}

/// The pool and the queries. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: MySqlPool,
}

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Name of the advisory lock that serialises migrations between workers starting at once.
const MIGRATE_LOCK: &str = "provisioner_migrate";
/// How long a worker waits for another one's migrations before it gives up.
const MIGRATE_LOCK_WAIT_SECS: u32 = 60;

/// Session settings of every pooled connection: times are UTC (the schema stores UTC and the
/// defaults `CURRENT_TIMESTAMP(6)` must agree with `UTC_TIMESTAMP(6)`), and READ COMMITTED, which
/// takes no gap locks: fewer deadlocks between intake inserts and `SKIP LOCKED` claims.
const SESSION_SETUP: [&str; 2] =
    ["SET time_zone = '+00:00'", "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"];

impl Store {
    /// Creates the database if it is missing, connects a pool, and applies the migrations.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Store> {
        let url = settings.url.expose();
        let options: MySqlConnectOptions =
            url.parse().map_err(|source| StoreError::Db { op: "parse database URL", source })?;
        let options = options
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
        create_database_if_missing(url).await?;
        let pool = MySqlPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    for statement in SESSION_SETUP {
                        conn.execute(statement).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .op("connect")?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations (idempotent; safe with several workers starting at once).
    ///
    /// sqlx's own migration lock calls `GET_LOCK(name, -1)`, which MariaDB answers with NULL (an
    /// error for sqlx); so we take our own named lock with a finite wait on one connection and
    /// run the migrator on that same connection with its locking turned off.
    pub async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await.op("acquire a connection to migrate")?;
        let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(MIGRATE_LOCK)
            .bind(MIGRATE_LOCK_WAIT_SECS)
            .fetch_one(&mut *conn)
            .await
            .op("take the migration lock")?;
        if got != Some(1) {
            return Err(StoreError::MigrationLock(format!(
                "could not take the migration lock `{MIGRATE_LOCK}` within {MIGRATE_LOCK_WAIT_SECS} s \
                 (another worker is migrating, or is stuck)"
            )));
        }
        let mut migrator = Migrator::with_migrations(MIGRATOR.migrations.to_vec());
        migrator.set_locking(false);
        let outcome = migrator.run(&mut *conn).await;
        let released = sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *conn)
            .await
            .op("release the migration lock");
        outcome?;
        released?;
        Ok(())
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.op("ping")?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn create_database_if_missing(url: &str) -> Result<()> {
    let Some(name) = database_name(url) else {
        return Ok(());
    };
    if name.contains('`') {
        return Err(StoreError::Corrupt(format!("database name {name:?} contains a backtick")));
    }
    // Connect without a default database, which may not exist yet: the same URL, minus its path.
    let (head, tail) = url.split_once("://").unwrap_or(("mysql", url));
    let (authority, path) = tail.split_once('/').unwrap_or((tail, ""));
    let query = path.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    let server: MySqlConnectOptions = format!("{head}://{authority}/{query}")
        .parse()
        .map_err(|source| StoreError::Db { op: "parse database URL", source })?;
    let mut conn = sqlx::MySqlConnection::connect_with(&server).await.op("connect to create the database")?;
    // The name comes from our own settings and holds no backtick (checked above).
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    )))
    .execute(&mut conn)
    .await
    .op("create database")?;
    let _ = conn.close().await;
    Ok(())
}
