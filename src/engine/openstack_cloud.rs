//! [`Cloud`] and [`Tenants`] on the OpenStack client: one Keystone [`Session`] (tokens per
//! project, rate limits) and the five service APIs.
//!
//! What it adds to the client, for the engine's call budget: name resolution (image, flavor,
//! network) is cached per project for [`RESOLVE_TTL`] and single-flight (a thousand orders for
//! the same image cause one Glance lookup); the pollers' lists are one call per project (servers
//! by tag and `changes-since`; volumes by our metadata mark and status); and the errors are
//! mapped onto the engine's [`ErrorKind`] here, once. For [`Tenants`]: every call is in the
//! session's default scope (the service user's own project); a Keystone 409 on create is looked
//! up and returned as [`Created::Existing`]; domain and role names are cached (they do not
//! change under a running worker; a miss is not cached).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use tokio::sync::OnceCell;

use super::cloud::{
    Cloud, CloudError, CloudResult, Created, ErrorKind, FloatingIpInfo, FloatingIpSpec, Inventory,
    KeypairInfo, MarkedFloatingIp, MarkedPort, MarkedServer, MarkedVolume, PortSpec, ProjectInfo,
    ProjectSpec, Regions, Resolved, ServerInfo, ServerSpec, TenantQuotas, Tenants, UserInfo, UserSpec,
    VolumeInfo, VolumeSpec,
};
use crate::messages::EventAddress;
use crate::openstack::compute::protocol::Server;
use crate::openstack::compute::{ComputeApi, NewBootVolume, NewServer, ServerQuery};
use crate::openstack::error::{ErrorClass, OpenStackError};
use crate::openstack::identity::protocol::{Project, ProjectUpdate, User, UserUpdate};
use crate::openstack::identity::{IdentityApi, NewProject, NewUser, ProjectQuery};
use crate::openstack::image::ImageApi;
use crate::openstack::network::protocol::FloatingIp;
use crate::openstack::network::{NetworkApi, NewFloatingIp, NewPort};
use crate::openstack::region;
use crate::openstack::session::Session;
use crate::openstack::volume::protocol::Volume;
use crate::openstack::volume::{NewVolume, VolumeApi, VolumeQuery};

/// How long a resolved name is trusted.
pub const RESOLVE_TTL: Duration = Duration::from_secs(300);

/// Metadata pair on every volume the provisioner creates (the volume poller lists by it).
pub const VOLUME_MARK: (&str, &str) = ("provisioner", "true");

type Cell = Arc<OnceCell<Result<(Resolved, Instant), CloudError>>>;
type ResolveKey = (Option<String>, String, String, String, String);

/// The OpenStack client behind the engine's [`Cloud`].
pub struct OpenStackCloud {
    session: Arc<Session>,
    identity: IdentityApi,
    compute: ComputeApi,
    network: NetworkApi,
    volume: VolumeApi,
    image: ImageApi,
    /// By (region, project, image, flavor, network): each region has its own Glance, Nova and
    /// Neutron, so the same names resolve to other ids there.
    resolved: Mutex<HashMap<ResolveKey, Cell>>,
    /// Domain name or id → id, and role name → id (found once, kept).
    domains: Mutex<HashMap<String, String>>,
    roles: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for OpenStackCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenStackCloud").finish_non_exhaustive()
    }
}

impl OpenStackCloud {
    /// The regions tenant quotas are set in: every region of the catalog (of the admin scope's
    /// token), or the configured one when the catalog names none.
    async fn quota_regions(&self) -> CloudResult<Vec<Option<String>>> {
        let scope = self.identity.admin_scope().await.map_err(kind)?;
        let regions = self.session.regions(&scope).await.map_err(kind)?;
        if regions.is_empty() {
            return Ok(vec![None]);
        }
        Ok(regions.into_iter().map(Some).collect())
    }

    /// [`Tenants::set_quotas`] in the caller's region.
    fn set_quotas_here<'a>(
        &'a self,
        project: &'a str,
        q: &'a TenantQuotas,
    ) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move {
            let scope = self.identity.admin_scope().await.map_err(kind)?;
            let scope = scope.as_str();
            let nova = async {
                if q.instances.is_none() && q.cores.is_none() && q.ram_mb.is_none() {
                    return Ok(());
                }
                let set = crate::openstack::compute::protocol::QuotaSet {
                    instances: q.instances,
                    cores: q.cores,
                    ram: q.ram_mb,
                    ..Default::default()
                };
                self.compute.update_quota_set(scope, project, &set).await.map(|_| ())
            };
            let neutron = async {
                if q.ports.is_none() && q.networks.is_none() && q.floating_ips.is_none() {
                    return Ok(());
                }
                let quota = crate::openstack::network::protocol::Quota {
                    port: q.ports,
                    network: q.networks,
                    floatingip: q.floating_ips,
                    ..Default::default()
                };
                self.network.update_quota(scope, project, &quota).await.map(|_| ())
            };
            let cinder = async {
                if q.volumes.is_none() && q.gigabytes.is_none() {
                    return Ok(());
                }
                let set = crate::openstack::volume::protocol::QuotaSet {
                    volumes: q.volumes,
                    gigabytes: q.gigabytes,
                    ..Default::default()
                };
                self.volume.update_quota_set(scope, project, &set).await.map(|_| ())
            };
            let (a, b, c) = tokio::join!(nova, neutron, cinder);
            a.and(b).and(c).map_err(kind)
        })
    }

    /// [`Tenants::clear_quotas`] in the caller's region.
    fn clear_quotas_here<'a>(&'a self, project: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move {
            let scope = self.identity.admin_scope().await.map_err(kind)?;
            let gone = |r: Result<(), OpenStackError>| match r {
                Err(e) if e.class == ErrorClass::NotFound => Ok(()),
                other => other,
            };
            let (a, b, c) = tokio::join!(
                self.compute.delete_quota_set(&scope, project),
                self.network.delete_quota(&scope, project),
                self.volume.delete_quota_set(&scope, project),
            );
            gone(a).and(gone(b)).and(gone(c)).map_err(kind)
        })
    }

    pub fn new(session: Arc<Session>) -> OpenStackCloud {
        OpenStackCloud {
            session: session.clone(),
            identity: IdentityApi::new(session.clone()),
            compute: ComputeApi::new(session.clone()),
            network: NetworkApi::new(session.clone()),
            volume: VolumeApi::new(session.clone()),
            image: ImageApi::new(session),
            resolved: Mutex::new(HashMap::new()),
            domains: Mutex::new(HashMap::new()),
            roles: Mutex::new(HashMap::new()),
        }
    }

    async fn resolve_uncached(
        &self,
        project: &str,
        image: &str,
        flavor: &str,
        network: &str,
    ) -> CloudResult<Resolved> {
        let (i, f, n) = tokio::join!(
            self.image.find_image(project, image),
            self.compute.find_flavor(project, flavor),
            self.network.find_network(project, network),
        );
        let (i, f, n) = (i.map_err(kind)?, f.map_err(kind)?, n.map_err(kind)?);
        Ok(Resolved {
            image_id: i.id,
            flavor_id: f.id,
            flavor_name: f.name,
            network_id: n.id,
            network_name: n.name,
        })
    }

    /// A volume type by id or exact name (one list call: types are few).
    async fn volume_type_id(&self, project: &str, wanted: &str) -> CloudResult<String> {
        let types = self.volume.list_types(project).await.map_err(kind)?;
        types
            .into_iter()
            .find(|t| t.id == wanted || t.name == wanted)
            .map(|t| t.id)
            .ok_or_else(|| CloudError::new(ErrorKind::NotFound, format!("volume type {wanted:?} not found")))
    }

    async fn volumes_with_status(&self, project: &str, status: &str) -> CloudResult<Vec<VolumeInfo>> {
        let mut metadata = BTreeMap::new();
        metadata.insert(VOLUME_MARK.0.to_string(), VOLUME_MARK.1.to_string());
        let query = VolumeQuery { metadata, status: Some(status.to_string()) };
        let volumes = self.volume.list_volumes(project, &query).await.map_err(kind)?;
        Ok(volumes.into_iter().filter(|v| v.status == status).map(volume_info).collect())
    }
}

/// The engine's view of a client error: the class decides, the service's message explains.
fn kind(e: OpenStackError) -> CloudError {
    let k = kind_of(e.class);
    CloudError::new(k, e.to_string())
}

fn kind_of(class: ErrorClass) -> ErrorKind {
    match class {
        ErrorClass::Transient => ErrorKind::Transient,
        ErrorClass::RateLimited { retry_after } => ErrorKind::RateLimited(retry_after),
        ErrorClass::Conflict => ErrorKind::Conflict,
        ErrorClass::Quota => ErrorKind::Quota,
        ErrorClass::NotFound => ErrorKind::NotFound,
        ErrorClass::Auth => ErrorKind::Auth,
        ErrorClass::UnknownRegion => ErrorKind::Invalid,
        ErrorClass::Invalid => ErrorKind::Invalid,
        ErrorClass::Ambiguous | ErrorClass::AlreadyExists | ErrorClass::Permanent => ErrorKind::Permanent,
    }
}

fn not_found_is_none<T>(r: Result<T, OpenStackError>) -> CloudResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.class == ErrorClass::NotFound => Ok(None),
        Err(e) => Err(kind(e)),
    }
}

/// Tags sorted: Keystone echoes them in the order given but reads them back in its own order.
fn project_info(p: Project) -> ProjectInfo {
    let mut tags = p.tags;
    tags.sort();
    ProjectInfo { id: p.id, name: p.name, domain_id: p.domain_id, enabled: p.enabled, tags }
}

fn user_info(u: User) -> UserInfo {
    UserInfo {
        id: u.id,
        name: u.name,
        domain_id: u.domain_id,
        enabled: u.enabled,
        default_project_id: u.default_project_id,
        email: u.email,
    }
}

fn cached(map: &Mutex<HashMap<String, String>>, key: &str) -> Option<String> {
    map.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
}

fn remember(map: &Mutex<HashMap<String, String>>, key: &str, value: &str) {
    map.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), value.to_string());
}

/// The one element, `None` for none, `Permanent` for several (the message lists the ids).
fn at_most_one<T>(
    what: &str,
    key: &str,
    mut found: Vec<T>,
    id: impl Fn(&T) -> &str,
) -> CloudResult<Option<T>> {
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => {
            let ids: Vec<&str> = found.iter().map(id).collect();
            Err(CloudError::new(
                ErrorKind::Permanent,
                format!("{n} {what}s match {key:?} ({}); expected one", ids.join(", ")),
            ))
        }
    }
}

impl OpenStackCloud {
    async fn domain_id(&self, name_or_id: &str) -> CloudResult<String> {
        if let Some(id) = cached(&self.domains, name_or_id) {
            return Ok(id);
        }
        let d = self.identity.find_domain(name_or_id).await.map_err(kind)?;
        remember(&self.domains, name_or_id, &d.id);
        Ok(d.id)
    }

    async fn project_by_name(&self, domain: &str, name: &str) -> CloudResult<Option<ProjectInfo>> {
        let domain_id = self.domain_id(domain).await?;
        let query =
            ProjectQuery { name: Some(name.to_string()), domain_id: Some(domain_id), ..Default::default() };
        let mut found = self.identity.list_projects(&query).await.map_err(kind)?;
        found.retain(|p| p.name.eq_ignore_ascii_case(name));
        at_most_one("project", name, found.into_iter().map(project_info).collect(), |p| &p.id)
    }

    async fn user_by_name(&self, domain: &str, name: &str) -> CloudResult<Option<UserInfo>> {
        let domain_id = self.domain_id(domain).await?;
        let found = self.identity.list_users(name, &domain_id).await.map_err(kind)?;
        at_most_one("user", name, found.into_iter().map(user_info).collect(), |u| &u.id)
    }

    /// A create that Keystone answered 409: the existing one, looked up (gone again by now is
    /// transient: the next attempt creates it).
    fn existing<T>(found: Option<T>, what: &str, name: &str) -> CloudResult<Created<T>> {
        found.map(Created::Existing).ok_or_else(|| {
            CloudError::new(
                ErrorKind::Transient,
                format!("keystone said the {what} {name:?} exists, but it is not found"),
            )
        })
    }
}

fn server_info(s: Server) -> ServerInfo {
    let addresses = s
        .addresses
        .iter()
        .flat_map(|(net, addrs)| {
            addrs.iter().map(move |a| EventAddress {
                network: net.clone(),
                ip: a.addr.clone(),
                version: a.version,
            })
        })
        .collect();
    let fault_kind = s.fault.as_ref().map(|f| kind_of(crate::openstack::error::classify_fault(&f.message)));
    ServerInfo {
        volumes: s.volumes_attached.iter().map(|v| v.id.clone()).collect(),
        fault_kind,
        id: s.id,
        name: s.name,
        status: s.status,
        fault: s.fault.map(|f| f.message),
        addresses,
        tags: s.tags.unwrap_or_default(),
        availability_zone: s.availability_zone.filter(|z| !z.is_empty()),
        ..ServerInfo::default()
    }
}

fn keypair_info(k: crate::openstack::compute::protocol::Keypair) -> KeypairInfo {
    KeypairInfo { name: k.name, fingerprint: k.fingerprint, public_key: k.public_key }
}

fn floating_ip_info(f: FloatingIp) -> FloatingIpInfo {
    FloatingIpInfo {
        id: f.id,
        address: f.floating_ip_address,
        network_id: f.floating_network_id,
        port_id: f.port_id,
        status: f.status,
        tags: f.tags,
        created: f.created_at,
    }
}

fn volume_info(v: Volume) -> VolumeInfo {
    VolumeInfo {
        attachments: v.attachments.iter().map(|a| (a.server_id.clone(), a.device.clone())).collect(),
        id: v.id,
        status: v.status,
        metadata: v.metadata,
    }
}

impl Cloud for OpenStackCloud {
    fn regions<'a>(&'a self, project: &'a str) -> BoxFuture<'a, CloudResult<Regions>> {
        Box::pin(async move {
            let catalog = self.session.regions(project).await.map_err(kind)?;
            Ok(Regions { configured: self.session.cloud().region.clone(), catalog })
        })
    }

    fn resolve<'a>(
        &'a self,
        project: &'a str,
        image: &'a str,
        flavor: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, CloudResult<Resolved>> {
        Box::pin(async move {
            let key = (
                crate::openstack::region::current(),
                project.to_string(),
                image.to_string(),
                flavor.to_string(),
                network.to_string(),
            );
            let cell = {
                let mut map = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
                let stale = map.get(&key).is_some_and(|c| match c.get() {
                    Some(Ok((_, at))) => at.elapsed() > RESOLVE_TTL,
                    Some(Err(_)) => true,
                    None => false,
                });
                if stale {
                    map.remove(&key);
                }
                map.entry(key.clone()).or_default().clone()
            };
            let got = cell
                .get_or_init(|| async {
                    self.resolve_uncached(project, image, flavor, network).await.map(|r| (r, Instant::now()))
                })
                .await;
            match got {
                Ok((r, _)) => Ok(r.clone()),
                Err(e) => {
                    // Not cached: the next job asks again (the image may have been uploaded).
                    let mut map = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
                    if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                        map.remove(&key);
                    }
                    Err(e.clone())
                }
            }
        })
    }

    fn find_security_groups<'a>(
        &'a self,
        project: &'a str,
        names: &'a [String],
    ) -> BoxFuture<'a, CloudResult<Vec<String>>> {
        Box::pin(async move {
            let found = futures_util::future::join_all(
                names.iter().map(|n| self.network.find_security_group(project, n)),
            )
            .await;
            let mut ids: Vec<String> = Vec::with_capacity(found.len());
            for g in found {
                let id = g.map_err(kind)?.id;
                // A name and an id of the same group count once.
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            Ok(ids)
        })
    }

    fn find_server_group<'a>(
        &'a self,
        project: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, CloudResult<String>> {
        Box::pin(async move {
            match self.compute.find_server_group(project, group).await {
                Ok(g) => Ok(g.id),
                // The order names a group its project does not have (or has twice): its own fault.
                Err(e) if matches!(e.class, ErrorClass::NotFound | ErrorClass::Ambiguous) => {
                    let why = if e.class == ErrorClass::NotFound {
                        format!("no server group {group:?} in project {project} (by id or exact name)")
                    } else {
                        e.message.clone()
                    };
                    Err(CloudError::new(ErrorKind::Invalid, format!("server_group: {why}")))
                }
                Err(e) => Err(kind(e)),
            }
        })
    }

    fn availability_zones<'a>(&'a self, project: &'a str) -> BoxFuture<'a, CloudResult<Vec<(String, bool)>>> {
        Box::pin(async move {
            let zones = self.compute.list_availability_zones(project).await.map_err(kind)?;
            Ok(zones.into_iter().map(|z| (z.name, z.state.available)).collect())
        })
    }

    fn find_external_network<'a>(
        &'a self,
        project: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, CloudResult<(String, String)>> {
        Box::pin(async move {
            let n = self.network.find_network(project, network).await.map_err(kind)?;
            if !n.router_external {
                return Err(CloudError::new(
                    ErrorKind::Permanent,
                    format!(
                        "network {network:?} ({}) is not an external network (router:external is false): no floating IP comes from it",
                        n.id
                    ),
                ));
            }
            Ok((n.id, n.name))
        })
    }

    fn create_floating_ip<'a>(
        &'a self,
        project: &'a str,
        spec: &'a FloatingIpSpec,
    ) -> BoxFuture<'a, CloudResult<FloatingIpInfo>> {
        Box::pin(async move {
            let new = NewFloatingIp {
                network_id: spec.network_id.clone(),
                description: spec.description.clone(),
                tags: spec.tags.clone(),
            };
            Ok(floating_ip_info(self.network.create_floating_ip(project, &new).await.map_err(kind)?))
        })
    }

    fn find_floating_ips<'a>(
        &'a self,
        project: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, CloudResult<Vec<FloatingIpInfo>>> {
        Box::pin(async move {
            let found =
                self.network.list_floating_ips_by_tags(project, &[tag.to_string()]).await.map_err(kind)?;
            Ok(found.into_iter().map(floating_ip_info).collect())
        })
    }

    fn get_floating_ip<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<FloatingIpInfo>>> {
        Box::pin(async move {
            Ok(not_found_is_none(self.network.get_floating_ip(project, id).await)?.map(floating_ip_info))
        })
    }

    fn associate_floating_ip<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
        port_id: &'a str,
    ) -> BoxFuture<'a, CloudResult<FloatingIpInfo>> {
        Box::pin(async move {
            Ok(floating_ip_info(
                self.network.set_floating_ip_port(project, id, Some(port_id)).await.map_err(kind)?,
            ))
        })
    }

    fn delete_floating_ip<'a>(&'a self, project: &'a str, id: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move { self.network.delete_floating_ip(project, id).await.map_err(kind) })
    }

    fn create_port<'a>(&'a self, project: &'a str, spec: &'a PortSpec) -> BoxFuture<'a, CloudResult<String>> {
        Box::pin(async move {
            let new = NewPort {
                network_id: spec.network_id.clone(),
                name: spec.name.clone(),
                tags: spec.tags.clone(),
                security_groups: spec.security_groups.clone(),
            };
            Ok(self.network.create_port(project, &new).await.map_err(kind)?.id)
        })
    }

    fn find_ports<'a>(&'a self, project: &'a str, tag: &'a str) -> BoxFuture<'a, CloudResult<Vec<String>>> {
        Box::pin(async move {
            let ports = self.network.list_ports_by_tags(project, &[tag.to_string()]).await.map_err(kind)?;
            Ok(ports.into_iter().map(|p| p.id).collect())
        })
    }

    fn delete_port<'a>(&'a self, project: &'a str, id: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move { self.network.delete_port(project, id).await.map_err(kind) })
    }

    fn create_server<'a>(
        &'a self,
        project: &'a str,
        spec: &'a ServerSpec,
    ) -> BoxFuture<'a, CloudResult<String>> {
        Box::pin(async move {
            let new = NewServer {
                name: spec.name.clone(),
                flavor_id: spec.flavor_id.clone(),
                image_id: spec.image_id.clone(),
                port_id: spec.port_id.clone(),
                tags: spec.tags.clone(),
                key_name: spec.key_name.clone(),
                user_data: spec.user_data.clone(),
                metadata: spec.metadata.clone(),
                availability_zone: spec.availability_zone.clone(),
                server_group: spec.server_group.clone(),
                boot_volume: spec.boot_volume.as_ref().map(|b| NewBootVolume {
                    size_gb: b.size_gb,
                    volume_type: b.volume_type.clone(),
                    delete_on_termination: b.delete_on_termination,
                }),
            };
            Ok(self.compute.create_server(project, &new).await.map_err(kind)?.id)
        })
    }

    fn find_servers<'a>(
        &'a self,
        project: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, CloudResult<Vec<ServerInfo>>> {
        Box::pin(async move {
            let query = ServerQuery { tags: vec![tag.to_string()], ..ServerQuery::default() };
            let servers = self.compute.list_servers(project, &query).await.map_err(kind)?;
            Ok(servers
                .into_iter()
                .filter(|s| !s.status.eq_ignore_ascii_case("DELETED"))
                .map(server_info)
                .collect())
        })
    }

    fn get_server<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<ServerInfo>>> {
        Box::pin(async move {
            Ok(not_found_is_none(self.compute.get_server(project, id).await)?.map(server_info))
        })
    }

    fn servers_changed<'a>(
        &'a self,
        project: &'a str,
        tag: &'a str,
        since: DateTime<Utc>,
    ) -> BoxFuture<'a, CloudResult<Vec<ServerInfo>>> {
        Box::pin(async move {
            // Nova drops a server's tags when it deletes it, so a tag filter would never list
            // a deletion: list every change since then and keep ours and the deleted ones (a
            // waiter matches by server id, so someone else's deletion is simply not waited on).
            let query = ServerQuery { changes_since: Some(since), ..ServerQuery::default() };
            let servers = self.compute.list_servers(project, &query).await.map_err(kind)?;
            Ok(servers
                .into_iter()
                .filter(|s| {
                    s.status.eq_ignore_ascii_case("DELETED")
                        || s.tags.as_ref().is_some_and(|t| t.iter().any(|x| x == tag))
                })
                .map(server_info)
                .collect())
        })
    }

    fn delete_server<'a>(&'a self, project: &'a str, id: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move { self.compute.delete_server(project, id).await.map_err(kind) })
    }

    fn create_volume<'a>(
        &'a self,
        project: &'a str,
        spec: &'a VolumeSpec,
    ) -> BoxFuture<'a, CloudResult<String>> {
        Box::pin(async move {
            let mut metadata = spec.metadata.clone();
            metadata.insert(VOLUME_MARK.0.to_string(), VOLUME_MARK.1.to_string());
            let new = NewVolume {
                name: spec.name.clone(),
                size_gb: u64::from(spec.size_gb),
                volume_type: spec.volume_type.clone(),
                metadata,
            };
            Ok(self.volume.create_volume(project, &new).await.map_err(kind)?.id)
        })
    }

    fn find_volumes<'a>(
        &'a self,
        project: &'a str,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, CloudResult<Vec<VolumeInfo>>> {
        Box::pin(async move {
            let mut filter = BTreeMap::new();
            filter.insert(key.to_string(), value.to_string());
            let volumes = self.volume.list_volumes_by_metadata(project, &filter).await.map_err(kind)?;
            Ok(volumes.into_iter().filter(|v| v.status != "deleting").map(volume_info).collect())
        })
    }

    fn get_volume<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<VolumeInfo>>> {
        Box::pin(
            async move { Ok(not_found_is_none(self.volume.get_volume(project, id).await)?.map(volume_info)) },
        )
    }

    fn volumes_in_status<'a>(
        &'a self,
        project: &'a str,
        status: &'a str,
    ) -> BoxFuture<'a, CloudResult<Vec<VolumeInfo>>> {
        Box::pin(self.volumes_with_status(project, status))
    }

    fn delete_volume<'a>(&'a self, project: &'a str, id: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move { self.volume.delete_volume(project, id).await.map_err(kind) })
    }

    fn marked_resources<'a>(&'a self, project: &'a str) -> BoxFuture<'a, CloudResult<Inventory>> {
        Box::pin(async move {
            use super::create::{TAG, VOLUME_MARK_KEY};
            let mut mark = BTreeMap::new();
            mark.insert(VOLUME_MARK.0.to_string(), VOLUME_MARK.1.to_string());
            let (all, tag) = (ServerQuery::default(), [TAG.to_string()]);
            let (servers, ports, volumes, fips) = tokio::join!(
                self.compute.list_servers(project, &all),
                self.network.list_ports_by_tags(project, &tag),
                self.volume.list_volumes_by_metadata(project, &mark),
                self.network.list_floating_ips_by_tags(project, &tag),
            );
            let (servers, ports, volumes, fips) =
                (servers.map_err(kind)?, ports.map_err(kind)?, volumes.map_err(kind)?, fips.map_err(kind)?);
            let floating_ips = fips
                .into_iter()
                .map(|f| MarkedFloatingIp {
                    id: f.id,
                    tags: f.tags,
                    port_id: f.port_id,
                    created: f.created_at,
                })
                .collect();
            let servers = servers
                .into_iter()
                .filter(|s| !s.status.eq_ignore_ascii_case("DELETED"))
                .filter(|s| {
                    s.tags.as_ref().is_some_and(|t| t.iter().any(|t| t == TAG))
                        || s.metadata.contains_key(VOLUME_MARK_KEY)
                })
                .map(|s| MarkedServer {
                    created: Some(s.created),
                    tags: s.tags.clone().unwrap_or_default(),
                    task_state: s.task_state.clone(),
                    metadata: s.metadata.clone(),
                    id: s.id,
                    name: s.name,
                    status: s.status,
                })
                .collect();
            let ports = ports
                .into_iter()
                .map(|p| MarkedPort {
                    device_id: Some(p.device_id.clone()).filter(|d| !d.is_empty()),
                    created: p.created_at,
                    tags: p.tags,
                    id: p.id,
                })
                .collect();
            let volumes = volumes
                .into_iter()
                .filter(|v| v.status != "deleting")
                .map(|v| MarkedVolume { created: Some(v.created_at), info: volume_info(v) })
                .collect();
            Ok(Inventory { servers, ports, volumes, floating_ips })
        })
    }

    fn lookup_names<'a>(
        &'a self,
        project: &'a str,
        image: &'a str,
        flavor: &'a str,
        network: &'a str,
        volume_type: Option<&'a str>,
        key_name: Option<&'a str>,
    ) -> BoxFuture<'a, super::cloud::NameLookup> {
        Box::pin(async move {
            let volume_type = async { Some(self.volume_type_id(project, volume_type?).await) };
            let keypair = async {
                let wanted = key_name?;
                Some(match self.compute.list_keypair_names(project).await {
                    Ok(names) if names.iter().any(|n| n == wanted) => Ok(()),
                    Ok(_) => Err(CloudError::new(
                        ErrorKind::NotFound,
                        format!("keypair {wanted:?} not found (keypairs belong to the service user)"),
                    )),
                    Err(e) => Err(kind(e)),
                })
            };
            let (i, f, n, t, k) = tokio::join!(
                self.image.find_image(project, image),
                self.compute.find_flavor(project, flavor),
                self.network.find_network(project, network),
                volume_type,
                keypair,
            );
            super::cloud::NameLookup {
                image_disk: i.as_ref().ok().map(|i| (i.min_disk, i.size)),
                image: i.map(|i| i.id).map_err(kind),
                flavor: f
                    .map(|f| super::cloud::FlavorSize {
                        id: f.id,
                        name: f.name,
                        vcpus: f.vcpus,
                        ram_mb: f.ram,
                    })
                    .map_err(kind),
                network: n.map(|n| n.id).map_err(kind),
                volume_type: t,
                keypair: k,
            }
        })
    }

    fn find_volume_type<'a>(
        &'a self,
        project: &'a str,
        wanted: &'a str,
    ) -> BoxFuture<'a, CloudResult<String>> {
        Box::pin(self.volume_type_id(project, wanted))
    }

    fn quota_usage<'a>(
        &'a self,
        project: &'a str,
    ) -> BoxFuture<'a, CloudResult<Vec<super::cloud::QuotaLine>>> {
        Box::pin(async move {
            use super::cloud::QuotaLine;
            let (nova, neutron, cinder) = tokio::join!(
                self.compute.limits(project),
                self.network.quota_details(project),
                self.volume.quota_usage(project),
            );
            let (nova, neutron, cinder) =
                (nova.map_err(kind)?, neutron.map_err(kind)?, cinder.map_err(kind)?);
            let a = nova.absolute;
            let mut lines = vec![
                QuotaLine {
                    resource: "instances",
                    limit: a.max_total_instances,
                    used: a.total_instances_used,
                },
                QuotaLine { resource: "cores", limit: a.max_total_cores, used: a.total_cores_used },
                QuotaLine { resource: "ram", limit: a.max_total_ram_size, used: a.total_ram_used },
            ];
            if let Some(p) = neutron.get("port") {
                lines.push(QuotaLine { resource: "ports", limit: p.limit, used: p.used + p.reserved });
            }
            if let Some(f) = neutron.get("floatingip") {
                lines.push(QuotaLine { resource: "floating_ips", limit: f.limit, used: f.used + f.reserved });
            }
            for (key, resource) in [("volumes", "volumes"), ("gigabytes", "gigabytes")] {
                if let Some(u) = cinder.get(key) {
                    lines.push(QuotaLine { resource, limit: u.limit, used: u.in_use + u.reserved });
                }
            }
            Ok(lines)
        })
    }

    fn tag_server<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
        tags: &'a [String],
    ) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move { self.compute.ensure_server_tags(project, id, tags).await.map_err(kind) })
    }

    fn import_keypair<'a>(
        &'a self,
        project: &'a str,
        name: &'a str,
        public_key: &'a str,
    ) -> BoxFuture<'a, CloudResult<Created<KeypairInfo>>> {
        Box::pin(async move {
            match self.compute.import_keypair(project, name, public_key).await {
                Ok(k) => Ok(Created::New(keypair_info(k))),
                Err(e) if e.class == ErrorClass::AlreadyExists => {
                    match not_found_is_none(self.compute.get_keypair(project, name).await)? {
                        Some(k) => Ok(Created::Existing(keypair_info(k))),
                        None => Err(CloudError::new(
                            ErrorKind::Transient,
                            format!("nova said the keypair {name:?} exists, but it is not found"),
                        )),
                    }
                }
                Err(e) => Err(kind(e)),
            }
        })
    }

    fn get_keypair<'a>(
        &'a self,
        project: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<KeypairInfo>>> {
        Box::pin(async move {
            Ok(not_found_is_none(self.compute.get_keypair(project, name).await)?.map(keypair_info))
        })
    }

    fn delete_keypair<'a>(&'a self, project: &'a str, name: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move { self.compute.delete_keypair(project, name).await.map_err(kind) })
    }

    fn attach_volume<'a>(
        &'a self,
        project: &'a str,
        server_id: &'a str,
        volume_id: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<String>>> {
        Box::pin(async move {
            let attachment = self.compute.attach_volume(project, server_id, volume_id).await.map_err(kind)?;
            Ok(attachment.and_then(|a| a.device))
        })
    }

    fn detach_volume<'a>(
        &'a self,
        project: &'a str,
        server_id: &'a str,
        volume_id: &'a str,
    ) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move {
            match self.compute.detach_volume(project, server_id, volume_id).await {
                Ok(()) => Ok(()),
                Err(e) if e.class == ErrorClass::NotFound => Ok(()),
                Err(e) => Err(kind(e)),
            }
        })
    }

    fn server_action<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
        action: super::cloud::ServerAction,
    ) -> BoxFuture<'a, CloudResult<()>> {
        use super::cloud::ServerAction::*;
        let name = match action {
            Stop => "os-stop",
            Start => "os-start",
            Suspend => "suspend",
            Resume => "resume",
            Shelve => "shelve",
            Unshelve => "unshelve",
            Pause => "pause",
            Unpause => "unpause",
            ConfirmResize => "confirmResize",
            RevertResize => "revertResize",
        };
        Box::pin(async move {
            self.compute.server_action(project, id, name, serde_json::Value::Null).await.map_err(kind)
        })
    }

    fn resize_server<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
        flavor_id: &'a str,
    ) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move { self.compute.resize_server(project, id, flavor_id).await.map_err(kind) })
    }

    fn find_flavor<'a>(
        &'a self,
        project: &'a str,
        flavor: &'a str,
    ) -> BoxFuture<'a, CloudResult<super::cloud::FlavorInfo>> {
        Box::pin(async move {
            let f = self.compute.find_flavor(project, flavor).await.map_err(kind)?;
            Ok(super::cloud::FlavorInfo { id: f.id, name: f.name })
        })
    }
    /// The newest instance action, if it failed: its name and what Nova says went wrong (the
    /// event's `details`, 2.84+, or the admin-only `traceback`). `action` is the lifecycle's
    /// name for it; Nova records its own (`stop` for a suspend in stop mode), so the newest
    /// action is taken whatever its name: it is the one the job started.
    fn action_error<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
        _action: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<String>>> {
        Box::pin(async move {
            let actions = self.compute.instance_actions(project, id).await.map_err(kind)?;
            let Some(last) = actions.into_iter().next() else { return Ok(None) };
            if last.message.as_deref() != Some("Error") {
                return Ok(None);
            }
            let detail = self.compute.instance_action(project, id, &last.request_id).await.map_err(kind)?;
            let why = detail
                .events
                .iter()
                .filter(|e| e.result.as_deref() == Some("Error"))
                .find_map(|e| e.details.clone().or_else(|| e.traceback.clone()))
                .unwrap_or_else(|| "no details recorded".into());
            Ok(Some(format!("{} failed (request {}): {why}", last.action, last.request_id)))
        })
    }
}

impl Tenants for OpenStackCloud {
    fn service_user_id(&self) -> BoxFuture<'_, CloudResult<String>> {
        Box::pin(async move { self.identity.service_user_id().await.map_err(kind) })
    }

    fn resolve_domain<'a>(&'a self, name_or_id: &'a str) -> BoxFuture<'a, CloudResult<String>> {
        Box::pin(self.domain_id(name_or_id))
    }

    fn find_project_by_tag<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, CloudResult<Option<ProjectInfo>>> {
        Box::pin(async move {
            let query = ProjectQuery { tags: vec![tag.to_string()], ..Default::default() };
            let found = self.identity.list_projects(&query).await.map_err(kind)?;
            at_most_one("project", tag, found.into_iter().map(project_info).collect(), |p| &p.id)
        })
    }

    fn find_project_by_name<'a>(
        &'a self,
        domain: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<ProjectInfo>>> {
        Box::pin(self.project_by_name(domain, name))
    }

    fn get_project<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<Option<ProjectInfo>>> {
        Box::pin(async move { Ok(not_found_is_none(self.identity.get_project(id).await)?.map(project_info)) })
    }

    fn create_project<'a>(
        &'a self,
        spec: &'a ProjectSpec,
    ) -> BoxFuture<'a, CloudResult<Created<ProjectInfo>>> {
        Box::pin(async move {
            let domain_id = self.domain_id(&spec.domain).await?;
            let new = NewProject {
                name: spec.name.clone(),
                domain_id: domain_id.clone(),
                description: spec.description.clone(),
                tags: spec.tags.clone(),
                enabled: true,
            };
            match self.identity.create_project(&new).await {
                Ok(p) => Ok(Created::New(project_info(p))),
                Err(e) if e.class == ErrorClass::AlreadyExists => {
                    Self::existing(self.project_by_name(&domain_id, &spec.name).await?, "project", &spec.name)
                }
                Err(e) => Err(kind(e)),
            }
        })
    }

    fn set_project_enabled<'a>(&'a self, id: &'a str, enabled: bool) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move {
            let update = ProjectUpdate { enabled: Some(enabled), ..Default::default() };
            self.identity.update_project(id, &update).await.map(|_| ()).map_err(kind)
        })
    }

    fn delete_project<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move { self.identity.delete_project(id).await.map_err(kind) })
    }

    fn find_user<'a>(
        &'a self,
        domain: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<UserInfo>>> {
        Box::pin(self.user_by_name(domain, name))
    }

    fn get_user<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<Option<UserInfo>>> {
        Box::pin(async move { Ok(not_found_is_none(self.identity.get_user(id).await)?.map(user_info)) })
    }

    fn create_user<'a>(&'a self, spec: &'a UserSpec) -> BoxFuture<'a, CloudResult<Created<UserInfo>>> {
        Box::pin(async move {
            let domain_id = self.domain_id(&spec.domain).await?;
            let new = NewUser {
                name: spec.name.clone(),
                domain_id: domain_id.clone(),
                default_project_id: Some(spec.default_project_id.clone()),
                email: spec.email.clone(),
                description: None,
                password: spec.password.clone(),
                enabled: true,
            };
            match self.identity.create_user(&new).await {
                Ok(u) => Ok(Created::New(user_info(u))),
                Err(e) if e.class == ErrorClass::AlreadyExists => {
                    Self::existing(self.user_by_name(&domain_id, &spec.name).await?, "user", &spec.name)
                }
                Err(e) => Err(kind(e)),
            }
        })
    }

    fn set_user_enabled<'a>(&'a self, id: &'a str, enabled: bool) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move {
            let update = UserUpdate { enabled: Some(enabled), ..Default::default() };
            self.identity.update_user(id, &update).await.map(|_| ()).map_err(kind)
        })
    }

    fn delete_user<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move { self.identity.delete_user(id).await.map_err(kind) })
    }

    fn find_role<'a>(&'a self, name: &'a str) -> BoxFuture<'a, CloudResult<String>> {
        Box::pin(async move {
            if let Some(id) = cached(&self.roles, name) {
                return Ok(id);
            }
            let role = self.identity.find_role(name).await.map_err(kind)?;
            remember(&self.roles, name, &role.id);
            Ok(role.id)
        })
    }

    fn assign_role<'a>(
        &'a self,
        project: &'a str,
        user: &'a str,
        role_id: &'a str,
    ) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move { self.identity.assign_project_role(project, user, role_id).await.map_err(kind) })
    }

    fn role_assignments<'a>(
        &'a self,
        project: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, CloudResult<Vec<String>>> {
        Box::pin(async move {
            let found = self.identity.list_role_assignments(Some(project), Some(user)).await.map_err(kind)?;
            Ok(found
                .into_iter()
                .filter(|a| {
                    a.user.as_ref().is_some_and(|u| u.id == user)
                        && a.scope.project.as_ref().is_some_and(|p| p.id == project)
                })
                .map(|a| a.role.id)
                .collect())
        })
    }

    fn set_quotas<'a>(&'a self, project: &'a str, q: &'a TenantQuotas) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move {
            // A multi-region cloud bills the project's limits in every region it lists.
            for r in self.quota_regions().await? {
                region::scope(r, self.set_quotas_here(project, q)).await?;
            }
            Ok(())
        })
    }

    fn get_quotas<'a>(&'a self, project: &'a str) -> BoxFuture<'a, CloudResult<TenantQuotas>> {
        Box::pin(async move {
            let scope = self.identity.admin_scope().await.map_err(kind)?;
            let (n, q, c) = tokio::join!(
                self.compute.get_quota_set(&scope, project),
                self.network.get_quota(&scope, project),
                self.volume.get_quota_set(&scope, project),
            );
            let (n, q, c) = (n.map_err(kind)?, q.map_err(kind)?, c.map_err(kind)?);
            Ok(TenantQuotas {
                instances: n.instances,
                cores: n.cores,
                ram_mb: n.ram,
                volumes: c.volumes,
                gigabytes: c.gigabytes,
                ports: q.port,
                networks: q.network,
                floating_ips: q.floatingip,
            })
        })
    }

    fn clear_quotas<'a>(&'a self, project: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move {
            for r in self.quota_regions().await? {
                region::scope(r, self.clear_quotas_here(project)).await?;
            }
            Ok(())
        })
    }
}
