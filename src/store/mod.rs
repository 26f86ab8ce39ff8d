//! The job store: the only module with SQL in it.
//!
//! MySQL 8.0+ / MariaDB 10.6+ through sqlx. The schema lives in `migrations/` and is applied at
//! startup (and by `provisioner migrate`). What the store guarantees:
//! - intake inserts are idempotent on `order_id` and committed before the broker message is acked;
//! - every change of a claimed job is a compare-and-set on its lease fence (zero rows affected
//!   means another worker owns the job now);
//! - a job's final state and its completion event are written in one transaction (the outbox).

use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection, MySqlPool};

use crate::config::DatabaseSettings;

pub mod status;

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

/// The database name in a `mysql://.../NAME?...` URL.
pub fn database_name(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let path = rest.split_once('/')?.1;
    let name = path.split(['?', '#']).next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// The pool and the queries. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: MySqlPool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

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
            .connect_with(options)
            .await
            .op("connect")?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations (idempotent; safe with several workers starting at once, as
    /// sqlx takes a lock for it).
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
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

#[cfg(test)]
mod tests {
    use super::database_name;

    #[test]
    fn database_name_is_read_from_the_url() {
        assert_eq!(database_name("mysql://root@127.0.0.1:3306/provisioner").as_deref(), Some("provisioner"));
        assert_eq!(database_name("mysql://u:p@h/db?ssl-mode=required").as_deref(), Some("db"));
        assert_eq!(database_name("mysql://u:p@h/"), None);
        assert_eq!(database_name("mysql://u:p@h"), None);
    }
}
