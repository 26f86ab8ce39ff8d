//! [`Cloud`] on the OpenStack client: one Keystone [`Session`] (tokens per project, rate
//! limits) and the four service APIs.
//!
//! What it adds to the client, for the engine's call budget: name resolution (image, flavor,
//! network) is cached per project for [`RESOLVE_TTL`] and single-flight (a thousand orders for
//! the same image cause one Glance lookup); the pollers' lists are one call per project (servers
//! by tag and `changes-since`; volumes by our metadata mark and status); and the errors are
//! mapped onto the engine's [`ErrorKind`] here, once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use tokio::sync::OnceCell;

use super::cloud::{
    Cloud, CloudError, CloudResult, ErrorKind, PortSpec, Resolved, ServerInfo, ServerSpec, VolumeInfo,
    VolumeSpec,
};
use crate::messages::EventAddress;
use crate::openstack::compute::protocol::Server;
use crate::openstack::compute::{ComputeApi, NewServer, ServerQuery};
use crate::openstack::error::{ErrorClass, OpenStackError};
use crate::openstack::image::ImageApi;
use crate::openstack::network::{NetworkApi, NewPort};
use crate::openstack::session::Session;
use crate::openstack::volume::protocol::Volume;
use crate::openstack::volume::{NewVolume, VolumeApi, VolumeQuery};

/// How long a resolved name is trusted.
pub const RESOLVE_TTL: Duration = Duration::from_secs(300);

/// Metadata pair on every volume the provisioner creates (the volume poller lists by it).
pub const VOLUME_MARK: (&str, &str) = ("provisioner", "true");

type Cell = Arc<OnceCell<Result<(Resolved, Instant), CloudError>>>;

/// The OpenStack client behind the engine's [`Cloud`].
pub struct OpenStackCloud {
    compute: ComputeApi,
    network: NetworkApi,
    volume: VolumeApi,
    image: ImageApi,
    resolved: Mutex<HashMap<(String, String, String, String), Cell>>,
}

impl std::fmt::Debug for OpenStackCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenStackCloud").finish_non_exhaustive()
    }
}

impl OpenStackCloud {
    pub fn new(session: Arc<Session>) -> OpenStackCloud {
        OpenStackCloud {
            compute: ComputeApi::new(session.clone()),
            network: NetworkApi::new(session.clone()),
            volume: VolumeApi::new(session.clone()),
            image: ImageApi::new(session),
            resolved: Mutex::new(HashMap::new()),
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
    let k = match e.class {
        ErrorClass::Transient => ErrorKind::Transient,
        ErrorClass::RateLimited { retry_after } => ErrorKind::RateLimited(retry_after),
        ErrorClass::Conflict => ErrorKind::Conflict,
        ErrorClass::Quota => ErrorKind::Quota,
        ErrorClass::NotFound => ErrorKind::NotFound,
        ErrorClass::Auth => ErrorKind::Auth,
        ErrorClass::Ambiguous | ErrorClass::Permanent => ErrorKind::Permanent,
    };
    CloudError::new(k, e.to_string())
}

fn not_found_is_none<T>(r: Result<T, OpenStackError>) -> CloudResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.class == ErrorClass::NotFound => Ok(None),
        Err(e) => Err(kind(e)),
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
    ServerInfo {
        id: s.id,
        name: s.name,
        status: s.status,
        fault: s.fault.map(|f| f.message),
        addresses,
        tags: s.tags.unwrap_or_default(),
        ..ServerInfo::default()
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
    fn resolve<'a>(
        &'a self,
        project: &'a str,
        image: &'a str,
        flavor: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, CloudResult<Resolved>> {
        Box::pin(async move {
            let key = (project.to_string(), image.to_string(), flavor.to_string(), network.to_string());
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

    fn create_port<'a>(&'a self, project: &'a str, spec: &'a PortSpec) -> BoxFuture<'a, CloudResult<String>> {
        Box::pin(async move {
            let new = NewPort {
                network_id: spec.network_id.clone(),
                name: spec.name.clone(),
                tags: spec.tags.clone(),
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
            let query = ServerQuery {
                tags: vec![tag.to_string()],
                changes_since: Some(since),
                ..ServerQuery::default()
            };
            let servers = self.compute.list_servers(project, &query).await.map_err(kind)?;
            Ok(servers.into_iter().map(server_info).collect())
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

    // TEMPORARY until the compute client's actions land (novasim).
    fn server_action<'a>(
        &'a self,
        _project: &'a str,
        _id: &'a str,
        _action: super::cloud::ServerAction,
    ) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move { Err(CloudError::new(ErrorKind::Permanent, "server actions not implemented")) })
    }
    fn resize_server<'a>(&'a self, _p: &'a str, _id: &'a str, _f: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move { Err(CloudError::new(ErrorKind::Permanent, "resize not implemented")) })
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
    fn action_error<'a>(
        &'a self,
        _p: &'a str,
        _id: &'a str,
        _a: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<String>>> {
        Box::pin(async move { Ok(None) })
    }
}
