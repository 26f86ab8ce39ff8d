//! Services for people: what each create order made and what later orders did to it.
//!
//! Read-only queries behind `provisioner services list|show` and `GET /v1/services`. Lists read
//! the `service_status` view (the contract teams reading the database use too), newest first,
//! keyset-paged on `(created_at, target_order_id)` like the job lists.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{MySql, QueryBuilder, Row as _};

use base64::Engine as _;

use super::status::{BadCursor, JobStatus, MAX_LIMIT};
use super::{Op as _, Result, Store, StoreError};

/// The states a service can be in.
pub const SERVICE_STATES: &[&str] =
    &["provisioning", "active", "suspended", "resizing", "terminating", "terminated", "failed"];

/// One row of the `service_status` view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub target_order_id: String,
    pub project_id: String,
    pub state: String,
    pub server_id: Option<String>,
    pub port_id: Option<String>,
    pub volume_id: Option<String>,
    pub flavor: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub last_action_order_id: Option<String>,
    pub create_job_id: String,
    pub created_at: DateTime<Utc>,
    /// The region of the service's create order; `None`: the configured region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The volume the server boots from (an order's `server.boot_volume`), kept after
    /// terminate as the record of what was deleted or kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_volume_id: Option<String>,
}

/// A service with every job it had, oldest first (its create first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDetail {
    #[serde(flatten)]
    pub status: ServiceStatus,
    pub jobs: Vec<JobStatus>,
}

/// What a list asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceFilter {
    pub state: Option<String>,
    pub project_id: Option<String>,
    pub limit: u32,
    pub cursor: Option<ServiceCursor>,
}

/// Where the next page of services starts: the last row's `(created_at, target_order_id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCursor {
    pub created_at: DateTime<Utc>,
    pub target_order_id: String,
}

impl ServiceCursor {
    /// Opaque text: base64url of `<microseconds since epoch>:<target order id>`.
    pub fn encode(&self) -> String {
        let raw = format!("{}:{}", self.created_at.timestamp_micros(), self.target_order_id);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(text: &str) -> Result<ServiceCursor, BadCursor> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).map_err(|_| BadCursor)?;
        let raw = String::from_utf8(raw).map_err(|_| BadCursor)?;
        let (micros, target) = raw.split_once(':').ok_or(BadCursor)?;
        let micros: i64 = micros.parse().map_err(|_| BadCursor)?;
        let created_at = DateTime::<Utc>::from_timestamp_micros(micros).ok_or(BadCursor)?;
        if target.is_empty() || target.len() > 128 || target.chars().any(|c| !(' '..='~').contains(&c)) {
            return Err(BadCursor);
        }
        Ok(ServiceCursor { created_at, target_order_id: target.to_string() })
    }
}

/// A page of services, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicePage {
    pub services: Vec<ServiceStatus>,
    pub next_cursor: Option<String>,
}

const COLUMNS: &str = "v.target_order_id, v.project_id, v.state, v.server_id, v.port_id, v.volume_id, v.flavor, \
     v.updated_at, v.last_action_order_id, v.create_job_id, v.created_at, v.region, v.boot_volume_id";

fn from_row(row: &sqlx::mysql::MySqlRow) -> Result<ServiceStatus> {
    let get = |e: sqlx::Error| StoreError::Db { op: "decode service status", source: e };
    Ok(ServiceStatus {
        target_order_id: row.try_get("target_order_id").map_err(get)?,
        project_id: row.try_get("project_id").map_err(get)?,
        state: row.try_get("state").map_err(get)?,
        server_id: row.try_get("server_id").map_err(get)?,
        port_id: row.try_get("port_id").map_err(get)?,
        volume_id: row.try_get("volume_id").map_err(get)?,
        flavor: row.try_get("flavor").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
        last_action_order_id: row.try_get("last_action_order_id").map_err(get)?,
        create_job_id: row.try_get("create_job_id").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        region: row.try_get("region").map_err(get)?,
        boot_volume_id: row.try_get("boot_volume_id").map_err(get)?,
    })
}

impl Store {
    /// One service by its create order's id, with its jobs.
    pub async fn service_detail(&self, target_order_id: &str) -> Result<Option<ServiceDetail>> {
        let sql = format!("SELECT {COLUMNS} FROM service_status v WHERE v.target_order_id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(target_order_id)
            .fetch_optional(self.pool())
            .await
            .op("read service")?;
        let Some(row) = row else { return Ok(None) };
        let status = from_row(&row)?;
        let jobs = self.service_jobs(target_order_id, None).await?;
        Ok(Some(ServiceDetail { status, jobs }))
    }

    /// Services matching `filter`, newest first, one page.
    pub async fn list_services(&self, filter: &ServiceFilter) -> Result<ServicePage> {
        let limit = filter.limit.clamp(1, MAX_LIMIT);
        let mut q: QueryBuilder<MySql> =
            QueryBuilder::new(format!("SELECT {COLUMNS} FROM service_status v WHERE 1=1"));
        if let Some(state) = &filter.state {
            q.push(" AND v.state = ").push_bind(state.clone());
        }
        if let Some(project) = &filter.project_id {
            q.push(" AND v.project_id = ").push_bind(project.clone());
        }
        if let Some(c) = &filter.cursor {
            q.push(" AND (v.created_at < ")
                .push_bind(c.created_at)
                .push(" OR (v.created_at = ")
                .push_bind(c.created_at)
                .push(" AND v.target_order_id < ")
                .push_bind(c.target_order_id.clone())
                .push("))");
        }
        q.push(" ORDER BY v.created_at DESC, v.target_order_id DESC LIMIT ").push_bind(limit + 1);
        let rows = q.build().fetch_all(self.pool()).await.op("list services")?;
        let mut services = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
        let next_cursor = if services.len() > limit as usize {
            services.truncate(limit as usize);
            services.last().map(|s| {
                ServiceCursor { created_at: s.created_at, target_order_id: s.target_order_id.clone() }
                    .encode()
            })
        } else {
            None
        };
        Ok(ServicePage { services, next_cursor })
    }

    /// Services per state (metrics, the console).
    pub async fn service_counts(&self) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM services GROUP BY state")
            .fetch_all(self.pool())
            .await
            .op("count services")?;
        let get = |e: sqlx::Error| StoreError::Db { op: "decode service counts", source: e };
        let mut out: Vec<(String, u64)> = SERVICE_STATES.iter().map(|s| (s.to_string(), 0)).collect();
        for row in rows {
            let state: String = row.try_get("state").map_err(get)?;
            let n: i64 = row.try_get("n").map_err(get)?;
            if let Some(e) = out.iter_mut().find(|(s, _)| *s == state) {
                e.1 = n.max(0) as u64;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_cursors_round_trip_and_reject_garbage() {
        let c = ServiceCursor {
            created_at: DateTime::<Utc>::from_timestamp_micros(1_790_000_000_123_456).unwrap(),
            target_order_id: "B-2026:000123 x".into(),
        };
        assert_eq!(ServiceCursor::decode(&c.encode()).unwrap(), c);
        assert!(ServiceCursor::decode("%%").is_err());
        let bad = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("1:\u{7f}");
        assert!(ServiceCursor::decode(&bad).is_err());
    }
}
