//! Pre-flight: would this order pass? Answered without creating anything, behind
//! `provisioner order check FILE`, `POST /v1/preflight`, and (with `PROVISIONER_PREFLIGHT=on`)
//! the first step of every create job, which then fails fast with `not_found` /
//! `quota_exceeded` / `invalid_order` before its first create call.
//!
//! The checks, each with its verdict and reason: the schema; the order's region (in the
//! catalog; every other check runs in it, quotas included: each region has its own); the image
//! (one by id or exact name: several of that name is refused as ambiguous), flavor, network,
//! volume type, keypair, security groups, the public IP's external network and the server group
//! resolved or not, the availability zone listed and available (Nova `/os-availability-zone`);
//! a boot volume at least as large as its image (`min_disk` and size) and of a type that
//! exists; and headroom for what
//! the order would take (1 instance, the flavor's cores and RAM, 1 port, with a public IP 1
//! floating IP, with a volume and a boot volume 1 volume and its gigabytes each) against the project's quotas from Nova
//! `/limits`, Neutron quota details and Cinder quota usage. Action orders are checked
//! against their schema and the service they name (it exists and is not terminated; a resize's
//! flavor resolves in the service's project and region). A create that names its tenant (`tenant_ref`) is
//! checked in the tenant's project once the tenant is active; before that, the `tenant` check
//! says it is not active yet (and nothing is checked against an empty project id). The names are looked up afresh (no cache): a
//! pre-flight is a question about now.

use serde::Serialize;

use super::cloud::{Cloud, CloudError, ErrorKind, QuotaLine};
use crate::messages::{Action, ErrorClass, Order, Schemas};
use crate::metrics;
use crate::openstack::region;
use crate::store::Store;

/// One check and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// `schema`, `region`, `image`, `flavor`, `network`, `volume_type`, `keypair`,
    /// `security_groups`, `public_ip`, `availability_zone`, `server_group`, `boot_volume`,
    /// `boot_volume_type`, `quota.<resource>`, `service`.
    pub check: String,
    pub ok: bool,
    /// What was found, or why not.
    pub detail: String,
    /// The error class the order would fail with, when the check failed for a reason of the
    /// order's (`invalid_order`, `not_found`, `quota_exceeded`); absent when pre-flight could not
    /// tell (the cloud did not answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<ErrorClass>,
}

/// The verdict on an order: `ok` only when every check passed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub ok: bool,
    pub order_id: Option<String>,
    pub project_id: Option<String>,
    pub checks: Vec<Check>,
}

impl Report {
    fn new(order_id: Option<String>, project_id: Option<String>, checks: Vec<Check>) -> Report {
        Report { ok: checks.iter().all(|c| c.ok), order_id, project_id, checks }
    }

    /// The first failed check that says the order cannot succeed as it is (`not_found`,
    /// `quota_exceeded`, `invalid_order`): what a fail-fast create fails with.
    pub fn blocking(&self) -> Option<&Check> {
        self.checks.iter().find(|c| {
            !c.ok
                && matches!(
                    c.class,
                    Some(ErrorClass::NotFound | ErrorClass::QuotaExceeded | ErrorClass::InvalidOrder)
                )
        })
    }
}

fn pass(check: &str, detail: impl Into<String>) -> Check {
    Check { check: check.into(), ok: true, detail: detail.into(), class: None }
}

fn fail(check: &str, detail: impl Into<String>, class: Option<ErrorClass>) -> Check {
    Check { check: check.into(), ok: false, detail: detail.into(), class }
}

/// A lookup that failed, as a check: not found, ambiguous (or otherwise refused), or no answer.
fn lookup_failed(check: &str, e: &CloudError) -> Check {
    let class = match e.kind {
        ErrorKind::NotFound => Some(ErrorClass::NotFound),
        ErrorKind::Permanent | ErrorKind::Invalid => Some(ErrorClass::InvalidOrder),
        ErrorKind::Auth => Some(ErrorClass::Auth),
        _ => None,
    };
    fail(check, e.message.clone(), class)
}

/// The checks of a create order's names and quotas, in the order's region (each region has its
/// own Glance, Nova, Neutron and Cinder, and its own quotas).
pub async fn check_order(cloud: &dyn Cloud, order: &Order) -> Report {
    region::scope(order.region.clone(), check_order_in_region(cloud, order)).await
}

async fn check_order_in_region(cloud: &dyn Cloud, order: &Order) -> Report {
    let s = &order.server;
    // A region the catalog does not list: nothing else can be checked (or made) there.
    let mut region_check = None;
    if let Some(wanted) = &order.region {
        region_check = Some(match cloud.regions(&order.project_id).await {
            Ok(r) if r.catalog.iter().any(|x| x == wanted) => {
                pass("region", format!("{wanted} is in the catalog"))
            }
            Ok(r) => {
                let known =
                    if r.catalog.is_empty() { "no regions".to_string() } else { r.catalog.join(", ") };
                let check = fail(
                    "region",
                    format!("unknown region {wanted:?}: the cloud's catalog lists {known}"),
                    Some(ErrorClass::InvalidOrder),
                );
                return Report::new(
                    Some(order.order_id.clone()),
                    Some(order.project_id.clone()),
                    vec![pass("schema", "valid order.v1"), check],
                );
            }
            Err(e) => lookup_failed("region", &e),
        });
    }
    let volume_type = order.volume.as_ref().and_then(|v| v.volume_type.as_deref());
    let groups = async {
        if s.security_groups.is_empty() {
            return None;
        }
        Some(cloud.find_security_groups(&order.project_id, &s.security_groups).await)
    };
    let public = async {
        let wanted = s.public_ip.as_ref()?;
        Some(cloud.find_external_network(&order.project_id, &wanted.network).await)
    };
    let zones = async {
        s.availability_zone.as_ref()?;
        Some(cloud.availability_zones(&order.project_id).await)
    };
    let server_group = async {
        let wanted = s.server_group.as_ref()?;
        Some(cloud.find_server_group(&order.project_id, wanted).await)
    };
    let boot_type = async {
        let wanted = s.boot_volume.as_ref()?.volume_type.as_deref()?;
        Some(cloud.find_volume_type(&order.project_id, wanted).await)
    };
    let (names, groups, public, zones, server_group, boot_type) = tokio::join!(
        cloud.lookup_names(
            &order.project_id,
            &s.image,
            &s.flavor,
            &s.network,
            volume_type,
            s.key_name.as_deref()
        ),
        groups,
        public,
        zones,
        server_group,
        boot_type
    );
    let mut checks = vec![pass("schema", "valid order.v1")];
    checks.extend(region_check);
    let named = |check: &str, r: &Result<String, CloudError>, what: &str| match r {
        Ok(id) => pass(check, format!("{what} → {id}")),
        Err(e) => lookup_failed(check, e),
    };
    checks.push(named("image", &names.image, &s.image));
    let flavor = match &names.flavor {
        Ok(f) => {
            checks.push(pass(
                "flavor",
                format!("{} → {} ({} vCPU, {} MiB)", s.flavor, f.id, f.vcpus, f.ram_mb),
            ));
            Some(f.clone())
        }
        Err(e) => {
            checks.push(lookup_failed("flavor", e));
            None
        }
    };
    checks.push(named("network", &names.network, &s.network));
    if let (Some(r), Some(name)) = (&names.volume_type, volume_type) {
        checks.push(named("volume_type", r, name));
    }
    if let (Some(r), Some(name)) = (&names.keypair, s.key_name.as_deref()) {
        checks.push(match r {
            Ok(()) => pass("keypair", format!("{name} exists")),
            Err(e) => lookup_failed("keypair", e),
        });
    }
    if let Some(r) = groups {
        checks.push(match r {
            Ok(ids) => {
                pass("security_groups", format!("{} → {}", s.security_groups.join(", "), ids.join(", ")))
            }
            Err(e) => lookup_failed("security_groups", &e),
        });
    }
    if let (Some(r), Some(wanted)) = (public, s.public_ip.as_ref()) {
        checks.push(match r {
            Ok((id, _)) => pass("public_ip", format!("{} → {id} (external)", wanted.network)),
            Err(e) => lookup_failed("public_ip", &e),
        });
    }
    if let Some(b) = &s.boot_volume {
        checks.push(boot_volume_fits(b.size_gb, names.image_disk, &s.image));
        if let (Some(r), Some(name)) = (&boot_type, b.volume_type.as_deref()) {
            checks.push(named("boot_volume_type", r, name));
        }
    }

    if let (Some(r), Some(wanted)) = (zones, s.availability_zone.as_ref()) {
        checks.push(match r {
            Ok(zones) => zone_check(&zones, wanted),
            Err(e) => fail("availability_zone", format!("cannot list the availability zones: {e}"), None),
        });
    }
    if let (Some(r), Some(wanted)) = (server_group, s.server_group.as_ref()) {
        checks.push(match r {
            Ok(id) => pass("server_group", format!("{wanted} → {id}")),
            Err(e) => lookup_failed("server_group", &e),
        });
    }

    let mut needs: Vec<(&str, Option<i64>)> = vec![
        ("instances", Some(1)),
        ("cores", flavor.as_ref().map(|f| i64::from(f.vcpus))),
        ("ram", flavor.as_ref().map(|f| f.ram_mb as i64)),
        ("ports", Some(1)),
    ];
    if s.public_ip.is_some() {
        needs.push(("floating_ips", Some(1)));
    }
    // Cinder counts the boot volume and the data volume alike.
    let volumes: Vec<u32> =
        order.volume.iter().map(|v| v.size_gb).chain(s.boot_volume.iter().map(|b| b.size_gb)).collect();
    if !volumes.is_empty() {
        needs.push(("volumes", Some(volumes.len() as i64)));
        needs.push(("gigabytes", Some(volumes.iter().map(|g| i64::from(*g)).sum())));
    }
    match cloud.quota_usage(&order.project_id).await {
        Ok(lines) => {
            for (resource, need) in needs {
                let check = format!("quota.{resource}");
                let Some(need) = need else {
                    checks.push(pass(&check, "not checked: the flavor did not resolve"));
                    continue;
                };
                checks.push(match lines.iter().find(|l| l.resource == resource) {
                    Some(line) => headroom(&check, line, need),
                    None => pass(&check, "the cloud reports no such quota"),
                });
            }
        }
        Err(e) => checks.push(fail("quota", format!("cannot read the project's quotas: {e}"), None)),
    }
    Report::new(Some(order.order_id.clone()), Some(order.project_id.clone()), checks)
}

/// The order's zone among Nova's: available, listed but not available, or unknown (the last two
/// are what Nova's 400 "The requested availability zone is not available" would say).
fn zone_check(zones: &[(String, bool)], wanted: &str) -> Check {
    let names: Vec<&str> = zones.iter().filter(|z| z.1).map(|z| z.0.as_str()).collect();
    match zones.iter().find(|z| z.0 == wanted) {
        Some((_, true)) => pass("availability_zone", format!("{wanted} is available")),
        found => fail(
            "availability_zone",
            format!(
                "{wanted:?} is {}: available zones are {}",
                if found.is_some() { "not available" } else { "not a zone of this cloud" },
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            ),
            Some(ErrorClass::InvalidOrder),
        ),
    }
}

/// Whether a boot volume of `size_gb` holds the image: at least its `min_disk` and its size
/// (Nova refuses a smaller one at server create). `image_disk` is `None` when the image did not
/// resolve (its own check says why).
fn boot_volume_fits(size_gb: u32, image_disk: Option<(u64, Option<u64>)>, image: &str) -> Check {
    const GIB: u64 = 1 << 30;
    let Some((min_disk, size)) = image_disk else {
        return pass("boot_volume", "not checked: the image did not resolve");
    };
    let need = min_disk.max(size.map(|b| b.div_ceil(GIB)).unwrap_or(0));
    let detail = format!(
        "{size_gb} GiB for image {image} (min_disk {min_disk} GiB, size {} bytes)",
        size.map(|b| b.to_string()).unwrap_or_else(|| "unknown".into())
    );
    if u64::from(size_gb) >= need {
        pass("boot_volume", detail)
    } else {
        fail(
            "boot_volume",
            format!("{detail}: too small, needs at least {need} GiB"),
            Some(ErrorClass::InvalidOrder),
        )
    }
}

fn headroom(check: &str, line: &QuotaLine, need: i64) -> Check {
    if line.limit < 0 {
        return pass(check, format!("need {need}, unlimited ({} in use)", line.used));
    }
    let free = (line.limit - line.used).max(0);
    let detail = format!("need {need}, {} of {} in use, {free} free", line.used, line.limit);
    if need <= free {
        pass(check, detail)
    } else {
        fail(check, format!("{detail}: short by {}", need - free), Some(ErrorClass::QuotaExceeded))
    }
}

/// A create that names its tenant: checked in the tenant's project once the tenant is active;
/// before that (or for a tenant that cannot take VMs) the `tenant` check says why, and the
/// names and quotas are not checked (there is no project to check them in).
async fn check_by_tenant(cloud: &dyn Cloud, store: Option<&Store>, mut order: Order) -> Report {
    let tenant_ref = order.tenant_ref.clone().unwrap_or_default();
    let schema = pass("schema", "valid order.v1");
    let stop = |check: Check| Report::new(Some(order.order_id.clone()), None, vec![schema.clone(), check]);
    let Some(store) = store else {
        return stop(fail("tenant", "no database to look the tenant up in", None));
    };
    let tenant = match store.tenant(&tenant_ref).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return stop(fail(
                "tenant",
                format!("no tenant {tenant_ref:?} was onboarded (no order.tenant.create)"),
                Some(ErrorClass::NotFound),
            ));
        }
        Err(e) => return stop(fail("tenant", format!("cannot read the tenant: {e}"), None)),
    };
    let project = tenant.project_id.clone().filter(|p| !p.is_empty());
    let (state, project) = match (tenant.state.as_str(), project) {
        ("active", Some(p)) => ("active", p),
        ("provisioning", _) => {
            // Not a verdict on the order: it waits for the onboarding, and is checked after it.
            return stop(fail(
                "tenant",
                format!(
                    "tenant {tenant_ref} is not active yet (provisioning): its project, names and quotas \
                     can be checked once its onboarding completes"
                ),
                None,
            ));
        }
        (state, _) => {
            let why = match state {
                "closing" | "closed" => "a create naming it is cancelled",
                _ => "its onboarding did not complete; a create naming it fails",
            };
            return stop(fail(
                "tenant",
                format!("tenant {tenant_ref} is {state}: {why}"),
                Some(ErrorClass::InvalidOrder),
            ));
        }
    };
    order.project_id = project.clone();
    let mut report = check_order(cloud, &order).await;
    report.checks.insert(1, pass("tenant", format!("{tenant_ref} is {state} → project {project}")));
    report
}

/// Checks an order body of any kind: the schema first (its errors are the only check then),
/// then a create's names and quotas ([`check_order`]) or an action's service. Without a cloud
/// (none configured) or a store, the checks that need it fail saying so.
pub async fn check_body(
    schemas: &Schemas,
    cloud: Option<&dyn Cloud>,
    store: Option<&Store>,
    body: &[u8],
    source: &'static str,
) -> Report {
    let report = check_body_inner(schemas, cloud, store, body).await;
    let verdict = if report.ok { "pass" } else { "fail" };
    metrics::inc(metrics::PREFLIGHT_CHECKS, &[("source", source), ("verdict", verdict)]);
    report
}

async fn check_body_inner(
    schemas: &Schemas,
    cloud: Option<&dyn Cloud>,
    store: Option<&Store>,
    body: &[u8],
) -> Report {
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| value.as_ref().and_then(|v| v.get(k)).and_then(|v| v.as_str()).map(str::to_string);
    let is_action = value.as_ref().is_some_and(|v| v.get("action").is_some());
    if !is_action {
        return match schemas.parse_order(body) {
            Err(e) => Report::new(
                field("order_id"),
                field("project_id"),
                vec![fail("schema", e.to_string(), Some(ErrorClass::InvalidOrder))],
            ),
            Ok((order, _)) => match cloud {
                Some(cloud) if order.tenant_ref.is_some() => check_by_tenant(cloud, store, order).await,
                Some(cloud) => check_order(cloud, &order).await,
                None => Report::new(
                    Some(order.order_id.clone()),
                    Some(order.project_id.clone()),
                    vec![pass("schema", "valid order.v1"), fail("cloud", "no cloud configured", None)],
                ),
            },
        };
    }
    let action = match schemas.parse_action(body) {
        Ok(a) => a,
        Err(e) => {
            return Report::new(
                field("order_id"),
                None,
                vec![fail("schema", e.to_string(), Some(ErrorClass::InvalidOrder))],
            );
        }
    };
    let mut checks = vec![pass("schema", "valid order-action.v1")];
    let Some(store) = store else {
        checks.push(fail("service", "no database to look the service up in", None));
        return Report::new(Some(action.order_id.clone()), None, checks);
    };
    let service = match store.service_detail(&action.target_order_id).await {
        Ok(s) => s,
        Err(e) => {
            checks.push(fail("service", format!("cannot read the service: {e}"), None));
            return Report::new(Some(action.order_id.clone()), None, checks);
        }
    };
    let Some(service) = service.map(|d| d.status) else {
        checks.push(fail(
            "service",
            format!("no service made by order {:?}", action.target_order_id),
            Some(ErrorClass::NotFound),
        ));
        return Report::new(Some(action.order_id.clone()), None, checks);
    };
    let project = service.project_id.clone();
    if matches!(service.state.as_str(), "terminated" | "terminating" | "failed") {
        checks.push(fail(
            "service",
            format!("service {} is {}", service.target_order_id, service.state),
            Some(ErrorClass::NotFound),
        ));
    } else {
        checks.push(pass("service", format!("{} is {}", service.target_order_id, service.state)));
    }
    if action.action == Action::Resize
        && let Some(flavor) = action.flavor.as_deref()
    {
        checks.push(match cloud {
            Some(cloud) => {
                match region::scope(service.region.clone(), cloud.find_flavor(&project, flavor)).await {
                    Ok(f) => pass("flavor", format!("{flavor} → {}", f.id)),
                    Err(e) => lookup_failed("flavor", &e),
                }
            }
            None => fail("flavor", "no cloud configured", None),
        });
    }
    Report::new(Some(action.order_id.clone()), Some(project), checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boot_volume_holds_its_image_by_min_disk_and_by_size() {
        // cirros: min_disk 1, 21 MB; ubuntu: min_disk 3, 570 MiB.
        assert!(boot_volume_fits(1, Some((1, Some(21_430_272))), "cirros").ok);
        let c = boot_volume_fits(2, Some((3, Some(597_688_320))), "ubuntu");
        assert!(
            !c.ok && c.class == Some(ErrorClass::InvalidOrder) && c.detail.contains("at least 3 GiB"),
            "{c:?}"
        );
        // An image larger than its min_disk says: its size decides (rounded up to GiB).
        let c = boot_volume_fits(1, Some((0, Some((1 << 30) + 1))), "big");
        assert!(!c.ok && c.detail.contains("at least 2 GiB"), "{c:?}");
        assert!(boot_volume_fits(1, None, "missing").ok, "the image check says why");
    }

    #[test]
    fn a_zone_must_be_listed_and_available() {
        let zones = [("nova".to_string(), true), ("az2".to_string(), true), ("down".to_string(), false)];
        assert!(zone_check(&zones, "az2").ok);
        for (wanted, says) in [("down", "is not available"), ("elsewhere", "is not a zone of this cloud")] {
            let c = zone_check(&zones, wanted);
            assert!(!c.ok && c.class == Some(ErrorClass::InvalidOrder), "{c:?}");
            assert!(c.detail.contains(says) && c.detail.ends_with("available zones are nova, az2"), "{c:?}");
        }
        let none = zone_check(&[("down".to_string(), false)], "down");
        assert!(none.detail.ends_with("available zones are none"), "{none:?}");
    }
}
