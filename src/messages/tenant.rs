//! Tenant order v1 (`schemas/tenant-order.v1.json`): billing onboards a customer (a Keystone
//! project, a user with roles on it, quotas), changes its quotas, or closes it.
//!
//! Published on `billing.orders` with routing key `order.tenant.create`, `order.tenant.update`
//! or `order.tenant.close`; intake checks that the key and the body agree. `user.password` is a
//! secret: intake seals it before the order is stored (see [`crate::secrets`]), `Debug` never
//! shows it, and the stored order loses it once the user exists.

use serde::{Deserialize, Serialize};

/// What a tenant order asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantAction {
    TenantCreate,
    TenantUpdate,
    TenantClose,
}

impl TenantAction {
    pub const ALL: [TenantAction; 3] =
        [TenantAction::TenantCreate, TenantAction::TenantUpdate, TenantAction::TenantClose];

    /// Also the job's `action` and `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantAction::TenantCreate => "tenant_create",
            TenantAction::TenantUpdate => "tenant_update",
            TenantAction::TenantClose => "tenant_close",
        }
    }

    pub fn parse(s: &str) -> Option<TenantAction> {
        TenantAction::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn routing_key(self) -> &'static str {
        match self {
            TenantAction::TenantCreate => "order.tenant.create",
            TenantAction::TenantUpdate => "order.tenant.update",
            TenantAction::TenantClose => "order.tenant.close",
        }
    }

    pub fn from_routing_key(key: &str) -> Option<TenantAction> {
        TenantAction::ALL.into_iter().find(|a| a.routing_key() == key)
    }
}

impl std::fmt::Display for TenantAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantOrder {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u8>,
    pub order_id: String,
    pub action: TenantAction,
    pub tenant_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<TenantProject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<TenantUser>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Quotas>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantProject {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The customer's first user. `password` is the plain text as billing sent it (in memory, at
/// intake only) or, in a stored order, the sealed envelope.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantUser {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for TenantUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantUser")
            .field("name", &self.name)
            .field("email", &self.email)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Limits as billing's plan says; `None` leaves a limit as it is, `-1` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gigabytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floating_ips: Option<i64>,
}

impl Quotas {
    /// `self` with the limits `newer` sets.
    pub fn merged(self, newer: Quotas) -> Quotas {
        Quotas {
            instances: newer.instances.or(self.instances),
            cores: newer.cores.or(self.cores),
            ram_mb: newer.ram_mb.or(self.ram_mb),
            volumes: newer.volumes.or(self.volumes),
            gigabytes: newer.gigabytes.or(self.gigabytes),
            ports: newer.ports.or(self.ports),
            networks: newer.networks.or(self.networks),
            floating_ips: newer.floating_ips.or(self.floating_ips),
        }
    }
}

impl TenantOrder {
    /// Checks of meaning that the schema cannot express.
    pub fn check_meaning(&self) -> Result<(), String> {
        if self.order_id.chars().any(|c| !(' '..='~').contains(&c)) {
            return Err("/order_id: only printable ASCII characters are allowed".into());
        }
        Ok(())
    }

    /// The password as received (or sealed, in a stored order), if any.
    pub fn password(&self) -> Option<&str> {
        self.user.as_ref().and_then(|u| u.password.as_deref())
    }
}

/// A stored tenant order's body with `user.password` replaced (`Some`) or removed (`None`).
pub fn with_password(body: &str, password: Option<&str>) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(body).ok()?;
    let user = value.get_mut("user")?.as_object_mut()?;
    match password {
        Some(p) => {
            user.insert("password".into(), p.into());
        }
        None => {
            user.remove("password");
        }
    }
    serde_json::to_string(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_user_never_shows_its_password() {
        let u = TenantUser { name: "a".into(), email: None, password: Some("hunter2".into()) };
        assert!(!format!("{u:?}").contains("hunter2"));
    }

    #[test]
    fn the_password_is_replaced_or_removed_in_a_body() {
        let body = r#"{"order_id":"x","user":{"name":"a","password":"hunter2"}}"#;
        let sealed = with_password(body, Some("v1:abc:xyz")).unwrap();
        assert!(sealed.contains("v1:abc:xyz") && !sealed.contains("hunter2"), "{sealed}");
        let gone = with_password(&sealed, None).unwrap();
        assert!(!gone.contains("password"), "{gone}");
        assert_eq!(with_password(r#"{"order_id":"x"}"#, None), None);
    }
}
