//! Completion event v1 (`schemas/event.v1.json`): how a job ended, for billing; and, with the
//! same shape, `service.drift`: the reconciler found a service not as recorded.
//!
//! Written to the outbox in the same transaction as the job's final state and relayed to exchange
//! `provisioning.events` with routing key equal to [`EventType::routing_key`]. Delivery is at
//! least once; `event_id` is fixed when the event is written, so a re-sent event keeps it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub occurred_at: DateTime<Utc>,
    pub job_id: Uuid,
    pub order_id: String,
    pub project_id: String,
    pub attempts: u32,
    /// What the job did: `create`, `suspend`, `unsuspend`, `resize`, `terminate` (absent in
    /// events written before the lifecycle existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The service the job acted on: the create order's id (a create's own order id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_order_id: Option<String>,
    pub server: Option<EventServer>,
    pub port_id: Option<String>,
    pub volume: Option<EventVolume>,
    pub error: Option<EventError>,
    /// W3C trace context of the job (the span that ended it, under billing's order's trace), so
    /// that billing's consumer continues one trace from order to event. Absent when the order
    /// came without one and the worker exports no traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// `service.drift` only: what the reconciler found different from what was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<EventDrift>,
    /// Tenant orders: the tenant and its Keystone ids (and, for a close, what was removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<EventTenant>,
    /// The region the job ran in, when its create order named one (`region`); absent: the
    /// configured region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// A drift the reconciler found on a service (`service.drift`): its kind (`server_missing`,
/// `server_error`, `server_state`, `volume_missing`, `volume_detached`), what the database says
/// the cloud should show, and what the cloud showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventDrift {
    pub kind: String,
    pub expected: String,
    pub found: String,
}

/// A tenant job's tenant, in its `job.completed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTenant {
    pub tenant_ref: String,
    pub project_id: Option<String>,
    pub domain_id: Option<String>,
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<EventRemoved>,
}

/// What a tenant close removed: the services it terminated (their create order ids), what it
/// swept from the project by the provisioner's tag, and whether the project and the user were
/// `disabled` or `deleted`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRemoved {
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "job.completed")]
    Completed,
    #[serde(rename = "job.failed")]
    Failed,
    #[serde(rename = "job.cancelled")]
    Cancelled,
    /// The reconciler found a service's cloud resources not as recorded (no job ended).
    #[serde(rename = "service.drift")]
    Drift,
}

impl EventType {
    /// The routing key on `provisioning.events`: the event's `type`.
    pub fn routing_key(self) -> &'static str {
        match self {
            EventType::Completed => "job.completed",
            EventType::Failed => "job.failed",
            EventType::Cancelled => "job.cancelled",
            EventType::Drift => "service.drift",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventServer {
    pub id: String,
    pub name: String,
    pub status: String,
    pub addresses: Vec<EventAddress>,
    /// The floating IP of an order's `server.public_ip` (a create's `job.completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<EventPublicIp>,
    /// The availability zone Nova placed the server in (a create's `job.completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// The volume the server boots from (an order's `server.boot_volume`): in a create's
    /// `job.completed`, and in a terminate's, where `kept: true` says it was detached and kept
    /// (`delete_on_termination: false`; absent: Nova deleted it with the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_volume: Option<EventVolume>,
}

/// A server's floating IP: its Neutron id, the address and the external network's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventPublicIp {
    pub id: String,
    pub ip: String,
    pub network: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventAddress {
    pub network: String,
    pub ip: String,
    pub version: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventVolume {
    pub id: String,
    pub device: Option<String>,
    /// Terminate with `lifecycle.delete_volumes = false`: the volume was detached and kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventError {
    pub class: ErrorClass,
    pub step: String,
    pub message: String,
}

/// Why a job did not complete, as billing sees it. The engine maps its internal error kinds
/// (see `openstack::error`) onto these once, when a job fails for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    InvalidOrder,
    NotFound,
    QuotaExceeded,
    CloudError,
    Timeout,
    Auth,
    Cancelled,
    Internal,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::InvalidOrder => "invalid_order",
            ErrorClass::NotFound => "not_found",
            ErrorClass::QuotaExceeded => "quota_exceeded",
            ErrorClass::CloudError => "cloud_error",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Auth => "auth",
            ErrorClass::Cancelled => "cancelled",
            ErrorClass::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "invalid_order" => ErrorClass::InvalidOrder,
            "not_found" => ErrorClass::NotFound,
            "quota_exceeded" => ErrorClass::QuotaExceeded,
            "cloud_error" => ErrorClass::CloudError,
            "timeout" => ErrorClass::Timeout,
            "auth" => ErrorClass::Auth,
            "cancelled" => ErrorClass::Cancelled,
            "internal" => ErrorClass::Internal,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
