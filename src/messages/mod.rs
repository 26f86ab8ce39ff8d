//! Wire types of everything that crosses the broker, one file per message, each versioned.
//!
//! The JSON Schemas in `schemas/` are the contract with billing and operators; these types are
//! the Rust side of the same contract. [`schema`] validates raw bodies against the schemas (for
//! readable rejection reasons) before serde turns them into these types, and the tests check that
//! every example in `schemas/examples/` validates and round-trips through them.

pub mod action;
pub mod admin;
pub mod event;
pub mod order;
pub mod schema;
pub mod tenant;

pub use action::{Action, ActionOrder};
pub use admin::{AdminCommand, AdminCommandKind, AdminTarget};
pub use event::{
    ErrorClass, Event, EventAddress, EventDrift, EventError, EventPublicIp, EventRemoved, EventServer,
    EventTenant, EventType, EventVolume,
};
pub use order::{Order, OrderBootVolume, OrderPublicIp, OrderServer, OrderVolume};
pub use schema::{CREATE_KEY, Incoming, Rejection, Schemas};
pub use tenant::{Quotas, TenantAction, TenantOrder};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn examples(prefix: &str) -> Vec<(String, Vec<u8>)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/examples");
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        out.sort();
        assert!(!out.is_empty(), "no {prefix} examples");
        out
    }

    #[test]
    fn order_examples_validate_and_round_trip() {
        let schemas = Schemas::new();
        for (name, body) in examples("order-") {
            let (order, value) = schemas.parse_order(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(serde_json::to_value(&order).unwrap(), value, "{name} does not round-trip");
        }
    }

    #[test]
    fn action_examples_validate_round_trip_and_match_their_routing_key() {
        let schemas = Schemas::new();
        for (name, body) in examples("action-") {
            let a = schemas.parse_action(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
            let value: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(serde_json::to_value(&a).unwrap(), value, "{name} does not round-trip");
            assert!(name.ends_with(&format!("action-{}.json", a.action)), "{name}");
            let parsed = schemas.parse_incoming(a.action.routing_key(), &body).unwrap();
            assert_eq!(parsed, Incoming::Action(a.clone()));
            let wrong = if a.action == Action::Terminate { "order.suspend" } else { "order.terminate" };
            assert_eq!(schemas.parse_incoming(wrong, &body).unwrap_err().kind(), "routing_key", "{name}");
            assert_eq!(schemas.parse_incoming("order.create", &body).unwrap_err().kind(), "schema", "{name}");
        }
        let mut no_flavor: Value = serde_json::from_slice(&examples("action-resize")[0].1).unwrap();
        no_flavor.as_object_mut().unwrap().remove("flavor");
        let e = schemas.parse_action(no_flavor.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("flavor"), "{e}");
        let mut flavor_on_suspend: Value = serde_json::from_slice(&examples("action-suspend")[0].1).unwrap();
        flavor_on_suspend["flavor"] = "m1.small".into();
        assert!(schemas.parse_action(flavor_on_suspend.to_string().as_bytes()).is_err());
        let mut self_target: Value = serde_json::from_slice(&examples("action-terminate")[0].1).unwrap();
        self_target["target_order_id"] = self_target["order_id"].clone();
        assert_eq!(schemas.parse_action(self_target.to_string().as_bytes()).unwrap_err().kind(), "meaning");
        let mut long_reason: Value = serde_json::from_slice(&examples("action-terminate")[0].1).unwrap();
        long_reason["reason"] = "x".repeat(256).into();
        assert!(schemas.parse_action(long_reason.to_string().as_bytes()).is_err());
        assert_eq!(schemas.parse_incoming("order.reboot", b"{}").unwrap_err().kind(), "routing_key");
    }

    #[test]
    fn event_examples_validate_and_round_trip() {
        let schemas = Schemas::new();
        for (name, body) in examples("event-") {
            let value: Value = serde_json::from_slice(&body).unwrap();
            schemas.check_event(&value).unwrap_or_else(|e| panic!("{name}: {e}"));
            let event: Event = serde_json::from_value(value.clone()).unwrap();
            let back = serde_json::to_value(&event).unwrap();
            // chrono may print the time differently; compare it as a time.
            let t = |v: &Value| {
                v["occurred_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap()
            };
            assert_eq!(t(&back), t(&value), "{name}");
            let (mut a, mut b) = (back, value);
            a["occurred_at"] = Value::Null;
            b["occurred_at"] = Value::Null;
            assert_eq!(a, b, "{name} does not round-trip");
        }
    }

    #[test]
    fn tenant_examples_validate_round_trip_and_match_their_routing_key() {
        let schemas = Schemas::new();
        for (name, body) in examples("tenant-") {
            let t = schemas.parse_tenant(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
            let value: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(serde_json::to_value(&t).unwrap(), value, "{name} does not round-trip");
            let parsed = schemas.parse_incoming(t.action.routing_key(), &body).unwrap();
            assert_eq!(parsed, Incoming::Tenant(Box::new(t.clone())));
            let wrong = if t.action == TenantAction::TenantClose {
                "order.tenant.create"
            } else {
                "order.tenant.close"
            };
            assert_eq!(schemas.parse_incoming(wrong, &body).unwrap_err().kind(), "routing_key", "{name}");
        }
        let create: Value = serde_json::from_slice(&examples("tenant-create")[0].1).unwrap();
        // What each action may carry.
        for (action, field) in
            [("tenant_update", "user"), ("tenant_close", "quotas"), ("tenant_create", "delete")]
        {
            let mut v = create.clone();
            v["action"] = action.into();
            v["delete"] = true.into();
            if action != "tenant_create" {
                v.as_object_mut().unwrap().retain(|k, _| k != "project" && k != "roles" && k != "delete");
                if action == "tenant_close" {
                    v.as_object_mut().unwrap().remove("user");
                }
            }
            let e = schemas.parse_tenant(v.to_string().as_bytes());
            assert!(e.is_err(), "{action} with {field}: {v}");
        }
        let mut no_user = create.clone();
        no_user.as_object_mut().unwrap().remove("user");
        assert!(schemas.parse_tenant(no_user.to_string().as_bytes()).is_err());
        // A password that breaks the schema is never echoed in the reason.
        let mut bad = create.clone();
        bad["user"]["password"] = "".into();
        bad["user"]["extra"] = "x".into();
        let mut long = create.clone();
        long["user"]["password"] = "S3cret!".repeat(1000).into();
        let mut update_with_user = create.clone();
        update_with_user["action"] = "tenant_update".into();
        for v in [bad, long, update_with_user] {
            let e = schemas.parse_tenant(v.to_string().as_bytes()).unwrap_err().to_string();
            assert!(!e.contains("S3cret") && !e.contains("correct horse"), "{e}");
        }
        let mut wrong_type = create.clone();
        wrong_type["user"]["password"] = 12345678.into();
        let e = schemas.parse_tenant(wrong_type.to_string().as_bytes()).unwrap_err().to_string();
        assert!(!e.contains("12345678"), "{e}");
    }

    #[test]
    fn a_create_names_its_project_by_id_or_by_tenant_ref_never_both() {
        let schemas = Schemas::new();
        let (name, example) = examples("create-by-tenant-ref").remove(0);
        let (order, value) = schemas.parse_order(&example).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(serde_json::to_value(&order).unwrap(), value, "{name} does not round-trip");
        let by_ref = br#"{"order_id":"o1","tenant_ref":"CUST-1","server":{"name":"a","flavor":"f","image":"i","network":"n"}}"#;
        let (order, _) = schemas.parse_order(by_ref).unwrap();
        assert_eq!(order.tenant_ref.as_deref(), Some("CUST-1"));
        assert!(order.project_id.is_empty());
        let both = br#"{"order_id":"o1","tenant_ref":"CUST-1","project_id":"p","server":{"name":"a","flavor":"f","image":"i","network":"n"}}"#;
        assert!(schemas.parse_order(both).is_err());
        let neither = br#"{"order_id":"o1","server":{"name":"a","flavor":"f","image":"i","network":"n"}}"#;
        assert!(schemas.parse_order(neither).is_err());
    }

    #[test]
    fn admin_examples_validate_and_round_trip() {
        let schemas = Schemas::new();
        for (name, body) in examples("admin-") {
            let cmd = schemas.parse_admin(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(cmd.target().is_some(), "{name}");
            let value: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(serde_json::to_value(&cmd).unwrap(), value, "{name} does not round-trip");
        }
    }

    #[test]
    fn bad_orders_are_rejected_with_a_reason_naming_the_field() {
        let schemas = Schemas::new();
        let good: Value = serde_json::from_slice(&examples("order-full")[0].1).unwrap();
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "unknown field",
                {
                    let mut v = good.clone();
                    v["server"]["falvor"] = "x".into();
                    v
                },
                "falvor",
            ),
            (
                "missing flavor",
                {
                    let mut v = good.clone();
                    v["server"].as_object_mut().unwrap().remove("flavor");
                    v
                },
                "flavor",
            ),
            (
                "volume too big",
                {
                    let mut v = good.clone();
                    v["volume"]["size_gb"] = 20000.into();
                    v
                },
                "/volume/size_gb",
            ),
            (
                "order id too long",
                {
                    let mut v = good.clone();
                    v["order_id"] = "x".repeat(129).into();
                    v
                },
                "/order_id",
            ),
            (
                "wrong version",
                {
                    let mut v = good.clone();
                    v["version"] = 2.into();
                    v
                },
                "/version",
            ),
            (
                "blank name",
                {
                    let mut v = good.clone();
                    v["server"]["name"] = " ".into();
                    v
                },
                "/server/name",
            ),
        ];
        for (what, value, needle) in cases {
            let err = schemas.parse_order(value.to_string().as_bytes()).unwrap_err();
            assert_eq!(err.kind(), "schema", "{what}: {err}");
            assert!(err.to_string().contains(needle), "{what}: {err}");
        }
        // An SSH public key: the shape of an OpenSSH line, its data decoding to its type; never
        // together with key_name.
        let key: Value = serde_json::from_slice(&examples("order-ssh-key")[0].1).unwrap();
        let mut both = key.clone();
        both["server"]["key_name"] = "ops-key".into();
        assert_eq!(schemas.parse_order(both.to_string().as_bytes()).unwrap_err().kind(), "schema");
        for bad in [
            "ssh-ed25519",
            "ssh-foo AAAAC3NzaC1lZDI1NTE5AAAAIFu6mj/FKYTcvwcnV85bk1XPHmiG6aGY6nz3TFwuy4/1",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIFu6mj/FKYTcvwcnV85bk1XPHmiG6aGY6nz3TFwuy4/1",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFu6mj/FKYTcvwcnV85bk1XPHmiG6aGY6nz3TFwuy4/1x",
            "ssh-ed25519 AAAA\nssh-ed25519 AAAA",
        ] {
            let mut v = key.clone();
            v["server"]["ssh_public_key"] = bad.into();
            let err = schemas.parse_order(v.to_string().as_bytes()).unwrap_err();
            assert!(err.to_string().contains("ssh_public_key"), "{bad}: {err}");
        }
        let mut big_user_data = good.clone();
        use base64::Engine as _;
        big_user_data["server"]["user_data"] =
            base64::engine::general_purpose::STANDARD.encode(vec![b'a'; 65 * 1024]).into();
        let err = schemas.parse_order(big_user_data.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("user_data"), "{err}");
        let mut ok_user_data = good.clone();
        ok_user_data["server"]["user_data"] =
            base64::engine::general_purpose::STANDARD.encode(vec![b'a'; 64 * 1024]).into();
        schemas.parse_order(ok_user_data.to_string().as_bytes()).unwrap();

        assert_eq!(schemas.parse_order(b"\xff\xfe").unwrap_err().kind(), "not_utf8");
        assert_eq!(schemas.parse_order(b"{not json").unwrap_err().kind(), "not_json");
        assert_eq!(schemas.parse_order(&vec![b' '; 300 * 1024]).unwrap_err().kind(), "too_large");
        assert_eq!(schemas.parse_order(b"[]").unwrap_err().kind(), "schema");
    }

    #[test]
    fn admin_commands_need_exactly_one_target() {
        let schemas = Schemas::new();
        assert!(schemas.parse_admin(br#"{"command":"replay"}"#).is_err());
        assert!(
            schemas
                .parse_admin(
                    br#"{"command":"replay","order_id":"a","job_id":"9f2e7b3c-4d5e-4f6a-9b0c-1d2e3f4a5b6c"}"#
                )
                .is_err()
        );
        assert!(schemas.parse_admin(br#"{"command":"delete","order_id":"a"}"#).is_err());
        assert!(schemas.parse_admin(br#"{"command":"cancel","job_id":"not-a-uuid"}"#).is_err());
    }
}
