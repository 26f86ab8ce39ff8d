//! Nova v2.1: flavors, servers (create, get, list by tags, delete, actions and their record),
//! volume attachments, keypairs (import, show, delete), availability zones, server groups
//! (list, find, show, create, delete), limits.
//!
//! Built like the other services: [`ComputeApi`] holds the shared session, each call takes the
//! project scope (the order's project id) and returns the wire types of [`protocol`]. Every
//! request carries the microversion the session negotiated (see [`super::microversion`]):
//! - at 2.52 and above the server is created with its tags;
//! - from 2.26 to 2.51 it is created untagged, then tagged with `PUT /servers/{id}/tags`;
//!   a real Nova refuses that while the server builds (409), so the tags are then set in the
//!   background as soon as it has left BUILD. Until then (and forever if the worker crashes
//!   before) the server is found by its metadata, not by its tags: the engine should call
//!   [`ComputeApi::ensure_server_tags`] once the server is ACTIVE;
//! - below 2.26 there are no tags: [`ComputeApi::list_servers`] refuses a tag filter rather than
//!   silently listing every server of the project.
//!
//! `user_data` is sent base64-encoded as Nova requires and is never logged. Deleting is
//! idempotent: a server already gone is success.

pub mod protocol;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use reqwest::Method;

use self::protocol::{
    BlockDeviceMapping, CreatedServer, Flavor, FlavorBody, FlavorList, InstanceAction, InstanceActionBody,
    InstanceActionList, Limits, LimitsBody, Link, NetworkRequest, Networks, Server, ServerBody, ServerCreate,
    ServerCreateRequest, ServerCreated, ServerList, VolumeAttachment, VolumeAttachmentBody,
    VolumeAttachmentCreate, VolumeAttachmentList, VolumeAttachmentRequest,
};
use super::error::{ErrorClass, OpenStackError, Service, exactly_one};
use super::microversion::{self, Microversion};
use super::session::{Request, Session};

const SERVICE: Service = Service::Compute;

/// What the client sets on a new server. The server boots on an existing port (created by the
/// network step), so Nova creates no port of its own that could leak.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NewServer {
    pub name: String,
    pub flavor_id: String,
    pub image_id: String,
    pub port_id: String,
    pub tags: Vec<String>,
    pub key_name: Option<String>,
    /// Base64, as in the order. A secret: not in `Debug`.
    pub user_data: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Nova's `availability_zone` (absent: the scheduler's choice).
    pub availability_zone: Option<String>,
    /// A server group id, sent as the scheduler hint `group`: the server becomes a member.
    pub server_group: Option<String>,
    /// Boot from a volume made from `image_id` (no `imageRef`, a block device mapping instead).
    pub boot_volume: Option<NewBootVolume>,
}

/// The root disk as a Cinder volume Nova makes from the image at boot (block device mapping v2:
/// boot index 0, source `image`, destination `volume`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewBootVolume {
    pub size_gb: u32,
    /// Cinder type name or id (needs 2.67).
    pub volume_type: Option<String>,
    pub delete_on_termination: bool,
}

impl std::fmt::Debug for NewServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewServer")
            .field("name", &self.name)
            .field("flavor_id", &self.flavor_id)
            .field("image_id", &self.image_id)
            .field("port_id", &self.port_id)
            .field("tags", &self.tags)
            .field("key_name", &self.key_name)
            .field("user_data", &self.user_data.as_ref().map(|_| "***"))
            .field("metadata", &self.metadata)
            .field("availability_zone", &self.availability_zone)
            .field("server_group", &self.server_group)
            .field("boot_volume", &self.boot_volume)
            .finish()
    }
}

/// Filters of `GET /servers/detail`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerQuery {
    /// Servers carrying every one of these tags (2.26+).
    pub tags: Vec<String>,
    /// Servers changed since then, deleted ones included (status `DELETED`).
    pub changes_since: Option<DateTime<Utc>>,
    /// Nova matches `name` as a regular expression; anchor it (`^name$`) for an exact match.
    pub name: Option<String>,
    /// Page size; `None` is Nova's default (its `max_limit`, 1000).
    pub limit: Option<u32>,
}

/// Nova calls in a project's scope.
#[derive(Debug, Clone)]
pub struct ComputeApi {
    session: Arc<Session>,
}

fn next_link(links: &Option<Vec<Link>>) -> Option<String> {
    links.as_ref()?.iter().find(|l| l.rel == "next").map(|l| l.href.clone())
}

impl ComputeApi {
    pub fn new(session: Arc<Session>) -> ComputeApi {
        ComputeApi { session }
    }

    /// The microversion this client speaks to Nova (negotiated once per session).
    pub async fn microversion(&self, project: &str) -> Result<Microversion, OpenStackError> {
        self.session.nova_microversion(project).await
    }

    /// `GET /flavors/{id}`.
    pub async fn get_flavor(&self, project: &str, id: &str) -> Result<Flavor, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/flavors/{id}", format!("/flavors/{id}"));
        Ok(self.session.json::<FlavorBody>(project, req).await?.flavor)
    }

    /// The one flavor with this id, or else this exact name (flavor ids are free-form, so the
    /// id is always tried first).
    pub async fn find_flavor(&self, project: &str, id_or_name: &str) -> Result<Flavor, OpenStackError> {
        match self.get_flavor(project, id_or_name).await {
            Ok(flavor) => return Ok(flavor),
            Err(e) if e.class == ErrorClass::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut flavors = Vec::new();
        let mut req = Request::new(SERVICE, Method::GET, "/flavors/detail", "/flavors/detail");
        loop {
            let page: FlavorList = self.session.json(project, req.clone()).await?;
            let next = next_link(&page.flavors_links);
            flavors.extend(page.flavors);
            match next {
                Some(link) => req = req.query_from_link(&link),
                None => break,
            }
        }
        flavors.retain(|f| f.name == id_or_name && !f.disabled);
        exactly_one(SERVICE, "/flavors/detail", "flavor", id_or_name, flavors, |f| &f.id)
    }

    /// `POST /servers`, booting on `new.port_id`; tags at create when the microversion allows,
    /// else right after (see the module doc). Returns the new server's id and links.
    pub async fn create_server(
        &self,
        project: &str,
        new: &NewServer,
    ) -> Result<CreatedServer, OpenStackError> {
        let version = self.microversion(project).await?;
        let tags_at_create = version >= microversion::NOVA_TAGS_AT_CREATE;
        let block_device_mapping_v2 = match &new.boot_volume {
            None => None,
            Some(b) => {
                if b.volume_type.is_some() && version < microversion::NOVA_BDM_VOLUME_TYPE {
                    return Err(OpenStackError::new(
                        ErrorClass::Permanent,
                        SERVICE,
                        "POST",
                        "/servers",
                        format!(
                            "a boot volume of a given type needs Nova microversion {} (this cloud speaks {version})",
                            microversion::NOVA_BDM_VOLUME_TYPE
                        ),
                    ));
                }
                let bdm = BlockDeviceMapping {
                    boot_index: Some(0),
                    source_type: Some("image".into()),
                    destination_type: Some("volume".into()),
                    uuid: Some(new.image_id.clone()),
                    volume_size: Some(i64::from(b.size_gb)),
                    volume_type: b.volume_type.clone(),
                    delete_on_termination: Some(b.delete_on_termination),
                    device_name: None,
                };
                let value = serde_json::to_value(bdm)
                    .map_err(|e| OpenStackError::decode(SERVICE, "POST", "/servers", e))?;
                Some(vec![value])
            }
        };
        let create = ServerCreate {
            name: new.name.clone(),
            // Booting from a volume: the image is the volume's source, not the server's.
            image_ref: new.boot_volume.is_none().then(|| new.image_id.clone()),
            block_device_mapping_v2,
            flavor_ref: new.flavor_id.clone(),
            networks: Some(Networks::List(vec![NetworkRequest {
                port: Some(new.port_id.clone()),
                ..Default::default()
            }])),
            key_name: new.key_name.clone(),
            user_data: new
                .user_data
                .as_ref()
                .map(|u| u.chars().filter(|c| !c.is_ascii_whitespace()).collect()),
            metadata: (!new.metadata.is_empty()).then(|| new.metadata.clone()),
            tags: (tags_at_create && !new.tags.is_empty()).then(|| new.tags.clone()),
            availability_zone: new.availability_zone.clone(),
            ..Default::default()
        };
        let scheduler_hints = new
            .server_group
            .as_ref()
            .map(|g| BTreeMap::from([("group".to_string(), serde_json::Value::from(g.as_str()))]));
        let req = Request::new(SERVICE, Method::POST, "/servers", "/servers")
            .json(&ServerCreateRequest { server: create, scheduler_hints });
        let created = self.session.json::<ServerCreated>(project, req).await?.server;
        if !tags_at_create && !new.tags.is_empty() {
            if version < microversion::NOVA_TAGS {
                tracing::warn!(
                    microversion = %version,
                    "nova is older than 2.26: the server is identified by its metadata only"
                );
            } else {
                // The server exists now: whatever happens to the tags, the create succeeded (an
                // error here would make the caller create a second server).
                match self.set_server_tags(project, &created.id, &new.tags).await {
                    Ok(()) => {}
                    // Nova refuses tag updates while the server builds (409 "in vm_state
                    // building"): tag it as soon as it has left BUILD.
                    Err(e) if e.is_retryable() => self.tag_when_built(project, &created.id, &new.tags),
                    Err(e) => {
                        tracing::warn!(server_id = %created.id, error = %e, "could not tag the new server")
                    }
                }
            }
        }
        Ok(created)
    }

    /// Adds `tags` to the server if it lacks any (2.26+; a no-op below). Idempotent. On Nova
    /// older than 2.52 the engine calls it once the server is ACTIVE, in case the background
    /// tagging of [`ComputeApi::create_server`] was lost with a crash.
    pub async fn ensure_server_tags(
        &self,
        project: &str,
        id: &str,
        tags: &[String],
    ) -> Result<(), OpenStackError> {
        if tags.is_empty() || self.microversion(project).await? < microversion::NOVA_TAGS {
            return Ok(());
        }
        let server = self.get_server(project, id).await?;
        let mut all = server.tags.unwrap_or_default();
        if tags.iter().all(|t| all.contains(t)) {
            return Ok(());
        }
        for t in tags {
            if !all.contains(t) {
                all.push(t.clone());
            }
        }
        self.set_server_tags(project, id, &all).await
    }

    /// Background tagging of a server still in BUILD: every 2 s, for at most 15 minutes, until
    /// the tags are set, the server is gone, or Nova refuses for another reason.
    fn tag_when_built(&self, project: &str, id: &str, tags: &[String]) {
        let (api, project, id, tags) = (self.clone(), project.to_string(), id.to_string(), tags.to_vec());
        tracing::info!(server_id = %id, "nova refuses tags while building; tagging when built");
        // Still the job's requests: they keep its global request id.
        let (request_id, region) =
            (crate::openstack::request_id::current(), crate::openstack::region::current());
        tokio::spawn(crate::openstack::request_id::scope(
            request_id,
            crate::openstack::region::scope(region, async move {
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(900);
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    match api.ensure_server_tags(&project, &id, &tags).await {
                        Ok(()) => return,
                        Err(e) if e.is_retryable() => continue,
                        Err(e) => {
                            tracing::warn!(server_id = %id, error = %e, "could not tag the server");
                            return;
                        }
                    }
                }
                tracing::warn!(server_id = %id, "gave up tagging the server after 15 minutes");
            }),
        ));
    }

    /// `PUT /servers/{id}/tags` (2.26+): replaces the server's tags.
    pub async fn set_server_tags(
        &self,
        project: &str,
        id: &str,
        tags: &[String],
    ) -> Result<(), OpenStackError> {
        let req = Request::new(SERVICE, Method::PUT, "/servers/{id}/tags", format!("/servers/{id}/tags"))
            .json(&serde_json::json!({ "tags": tags }));
        self.session.send(project, req).await.map(|_| ())
    }

    /// `GET /servers/{id}`; a server in `ERROR` carries its `fault`.
    pub async fn get_server(&self, project: &str, id: &str) -> Result<Server, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/servers/{id}", format!("/servers/{id}"));
        Ok(self.session.json::<ServerBody>(project, req).await?.server)
    }

    /// `GET /servers/detail` with the filters, following `next` links to the last page.
    pub async fn list_servers(
        &self,
        project: &str,
        query: &ServerQuery,
    ) -> Result<Vec<Server>, OpenStackError> {
        let mut req = Request::new(SERVICE, Method::GET, "/servers/detail", "/servers/detail");
        if !query.tags.is_empty() {
            let version = self.microversion(project).await?;
            if version < microversion::NOVA_TAGS {
                return Err(OpenStackError::new(
                    ErrorClass::Permanent,
                    SERVICE,
                    "GET",
                    "/servers/detail",
                    format!("listing servers by tags needs microversion 2.26; this cloud offers {version}"),
                ));
            }
            req = req.query("tags", query.tags.join(","));
        }
        if let Some(since) = query.changes_since {
            req = req.query("changes-since", since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        if let Some(name) = &query.name {
            req = req.query("name", name.clone());
        }
        if let Some(limit) = query.limit {
            req = req.query("limit", limit.to_string());
        }
        let mut servers = Vec::new();
        loop {
            let page: ServerList = self.session.json(project, req.clone()).await?;
            let next = next_link(&page.servers_links);
            servers.extend(page.servers);
            match next {
                Some(link) => req = req.query_from_link(&link),
                None => break,
            }
        }
        if !query.tags.is_empty() {
            servers.retain(|s| s.tags.as_ref().is_some_and(|t| query.tags.iter().all(|w| t.contains(w))));
        }
        Ok(servers)
    }

    /// `DELETE /servers/{id}`; a server already gone is success.
    pub async fn delete_server(&self, project: &str, id: &str) -> Result<(), OpenStackError> {
        let req = Request::new(SERVICE, Method::DELETE, "/servers/{id}", format!("/servers/{id}"));
        match self.session.send(project, req).await {
            Ok(_) => Ok(()),
            Err(e) if e.class == ErrorClass::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `POST /servers/{id}/action` with `{name: arg}` (`os-stop`, `resize`, ...). Nova answers
    /// 202 (204 for `confirmResize`) and carries the action out asynchronously: the server's
    /// `task_state` shows it running. A state that does not allow it is a 409 (`Conflict`).
    pub async fn server_action(
        &self,
        project: &str,
        id: &str,
        name: &str,
        arg: serde_json::Value,
    ) -> Result<(), OpenStackError> {
        let mut body = serde_json::Map::new();
        body.insert(name.to_string(), arg);
        let req =
            Request::new(SERVICE, Method::POST, "/servers/{id}/action", format!("/servers/{id}/action"))
                .json(&body);
        self.session.send(project, req).await.map(|_| ())
    }

    /// Starts a resize to `flavor_id` (then `VERIFY_RESIZE`, confirmed by `confirmResize`).
    pub async fn resize_server(
        &self,
        project: &str,
        id: &str,
        flavor_id: &str,
    ) -> Result<(), OpenStackError> {
        self.server_action(project, id, "resize", serde_json::json!({"flavorRef": flavor_id})).await
    }

    /// `GET /servers/{id}/os-instance-actions`: what was done to the server, newest first.
    pub async fn instance_actions(
        &self,
        project: &str,
        id: &str,
    ) -> Result<Vec<InstanceAction>, OpenStackError> {
        let req = Request::new(
            SERVICE,
            Method::GET,
            "/servers/{id}/os-instance-actions",
            format!("/servers/{id}/os-instance-actions"),
        );
        Ok(self.session.json::<InstanceActionList>(project, req).await?.instance_actions)
    }

    /// `GET /servers/{id}/os-instance-actions/{request_id}`: one action with its events.
    pub async fn instance_action(
        &self,
        project: &str,
        id: &str,
        request_id: &str,
    ) -> Result<InstanceAction, OpenStackError> {
        let req = Request::new(
            SERVICE,
            Method::GET,
            "/servers/{id}/os-instance-actions/{request_id}",
            format!("/servers/{id}/os-instance-actions/{request_id}"),
        );
        Ok(self.session.json::<InstanceActionBody>(project, req).await?.instance_action)
    }

    /// `POST /servers/{id}/os-volume_attachments`. Before 2.101 Nova answers with the
    /// attachment; from 2.101 with `202` and no body (`None`): the volume's status (`in-use`)
    /// or [`ComputeApi::list_attachments`] tell when it is done.
    pub async fn attach_volume(
        &self,
        project: &str,
        server_id: &str,
        volume_id: &str,
    ) -> Result<Option<VolumeAttachment>, OpenStackError> {
        let req = Request::new(
            SERVICE,
            Method::POST,
            "/servers/{id}/os-volume_attachments",
            format!("/servers/{server_id}/os-volume_attachments"),
        )
        .json(&VolumeAttachmentRequest {
            volume_attachment: VolumeAttachmentCreate {
                volume_id: volume_id.to_string(),
                ..Default::default()
            },
        });
        let resp = self.session.send(project, req).await?;
        if resp.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice::<VolumeAttachmentBody>(&resp.body)
            .map(|b| Some(b.volume_attachment))
            .map_err(|e| OpenStackError::decode(SERVICE, "POST", "/servers/{id}/os-volume_attachments", e))
    }

    /// `DELETE /servers/{id}/os-volume_attachments/{volume_id}` (answered 202; the volume goes
    /// `detaching`, then `available`). An attachment already gone is success.
    pub async fn detach_volume(
        &self,
        project: &str,
        server_id: &str,
        volume_id: &str,
    ) -> Result<(), OpenStackError> {
        let req = Request::new(
            SERVICE,
            Method::DELETE,
            "/servers/{id}/os-volume_attachments/{volume_id}",
            format!("/servers/{server_id}/os-volume_attachments/{volume_id}"),
        );
        match self.session.send(project, req).await {
            Ok(_) => Ok(()),
            Err(e) if e.class == ErrorClass::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /servers/{id}/os-volume_attachments`.
    pub async fn list_attachments(
        &self,
        project: &str,
        server_id: &str,
    ) -> Result<Vec<VolumeAttachment>, OpenStackError> {
        let req = Request::new(
            SERVICE,
            Method::GET,
            "/servers/{id}/os-volume_attachments",
            format!("/servers/{server_id}/os-volume_attachments"),
        );
        Ok(self.session.json::<VolumeAttachmentList>(project, req).await?.volume_attachments)
    }

    /// `GET /os-keypairs`: the names of the service user's keypairs (keypairs belong to the
    /// user, not to the project).
    pub async fn list_keypair_names(&self, project: &str) -> Result<Vec<String>, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/os-keypairs", "/os-keypairs");
        let body: serde_json::Value = self.session.json(project, req).await?;
        Ok(body["keypairs"]
            .as_array()
            .map(|all| all.iter().filter_map(|k| k["keypair"]["name"].as_str().map(str::to_string)).collect())
            .unwrap_or_default())
    }

    /// `POST /os-keypairs` with a public key: imports it as the caller's keypair `name`
    /// (keypairs belong to the user, not to the project). A name already taken is Nova's 409
    /// (`AlreadyExists`); a key Nova cannot read is its 400 (`Permanent`).
    pub async fn import_keypair(
        &self,
        project: &str,
        name: &str,
        public_key: &str,
    ) -> Result<protocol::Keypair, OpenStackError> {
        let version = self.microversion(project).await?;
        let create = protocol::KeypairCreate {
            name: name.to_string(),
            public_key: Some(public_key.trim().to_string()),
            key_type: (version >= microversion::NOVA_KEYPAIR_TYPE).then(|| "ssh".to_string()),
            user_id: None,
        };
        let req = Request::new(SERVICE, Method::POST, "/os-keypairs", "/os-keypairs")
            .json(&protocol::KeypairCreateRequest { keypair: create });
        Ok(self.session.json::<protocol::KeypairBody>(project, req).await?.keypair)
    }

    /// `GET /os-keypairs/{name}`: the caller's keypair.
    pub async fn get_keypair(&self, project: &str, name: &str) -> Result<protocol::Keypair, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/os-keypairs/{name}", format!("/os-keypairs/{name}"));
        Ok(self.session.json::<protocol::KeypairBody>(project, req).await?.keypair)
    }

    /// `DELETE /os-keypairs/{name}`; a keypair already gone is success.
    pub async fn delete_keypair(&self, project: &str, name: &str) -> Result<(), OpenStackError> {
        let req =
            Request::new(SERVICE, Method::DELETE, "/os-keypairs/{name}", format!("/os-keypairs/{name}"));
        match self.session.send(project, req).await {
            Ok(_) => Ok(()),
            Err(e) if e.class == ErrorClass::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /os-availability-zone`: the zones with their state (the summary every project may
    /// read; `/detail` with hosts is admin-only by default).
    pub async fn list_availability_zones(
        &self,
        project: &str,
    ) -> Result<Vec<protocol::AvailabilityZone>, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/os-availability-zone", "/os-availability-zone");
        Ok(self.session.json::<protocol::AvailabilityZoneList>(project, req).await?.zones)
    }

    /// `GET /os-server-groups`: the project's server groups (its own even for an admin, who
    /// would have to ask `all_projects`), every page (`limit` / `offset`: Nova sends no links).
    pub async fn list_server_groups(
        &self,
        project: &str,
    ) -> Result<Vec<protocol::ServerGroup>, OpenStackError> {
        const PAGE: usize = 1000;
        let mut groups = Vec::new();
        loop {
            let req = Request::new(SERVICE, Method::GET, "/os-server-groups", "/os-server-groups")
                .query("limit", PAGE.to_string())
                .query("offset", groups.len().to_string());
            let page = self.session.json::<protocol::ServerGroupList>(project, req).await?.server_groups;
            let full = page.len() == PAGE;
            groups.extend(page);
            if !full {
                return Ok(groups);
            }
        }
    }

    /// The project's one server group with this id, or else this exact name (ids are UUIDs,
    /// names are free: the id is tried first). Found in the project's list, so a group of
    /// another project is not found (Nova would answer its show with a policy 403).
    pub async fn find_server_group(
        &self,
        project: &str,
        id_or_name: &str,
    ) -> Result<protocol::ServerGroup, OpenStackError> {
        let mut groups = self.list_server_groups(project).await?;
        if let Some(i) = groups.iter().position(|g| g.id == id_or_name) {
            return Ok(groups.swap_remove(i));
        }
        groups.retain(|g| g.name == id_or_name);
        exactly_one(SERVICE, "/os-server-groups", "server group", id_or_name, groups, |g| &g.id)
    }

    /// `GET /os-server-groups/{id}`.
    pub async fn get_server_group(
        &self,
        project: &str,
        id: &str,
    ) -> Result<protocol::ServerGroup, OpenStackError> {
        let req =
            Request::new(SERVICE, Method::GET, "/os-server-groups/{id}", format!("/os-server-groups/{id}"));
        Ok(self.session.json::<protocol::ServerGroupBody>(project, req).await?.server_group)
    }

    /// `POST /os-server-groups` with a policy (`anti-affinity`, `affinity`, `soft-...`): sent as
    /// `policy` from 2.64, as `policies: [policy]` before.
    pub async fn create_server_group(
        &self,
        project: &str,
        name: &str,
        policy: &str,
    ) -> Result<protocol::ServerGroup, OpenStackError> {
        let v264 = self.microversion(project).await? >= microversion::NOVA_SERVER_GROUP_POLICY;
        let create = protocol::ServerGroupCreate {
            name: name.to_string(),
            policies: (!v264).then(|| vec![policy.to_string()]),
            policy: v264.then(|| policy.to_string()),
            rules: None,
        };
        let req = Request::new(SERVICE, Method::POST, "/os-server-groups", "/os-server-groups")
            .json(&protocol::ServerGroupCreateRequest { server_group: create });
        Ok(self.session.json::<protocol::ServerGroupBody>(project, req).await?.server_group)
    }

    /// `DELETE /os-server-groups/{id}`; a group already gone is success.
    pub async fn delete_server_group(&self, project: &str, id: &str) -> Result<(), OpenStackError> {
        let req = Request::new(
            SERVICE,
            Method::DELETE,
            "/os-server-groups/{id}",
            format!("/os-server-groups/{id}"),
        );
        match self.session.send(project, req).await {
            Ok(_) => Ok(()),
            Err(e) if e.class == ErrorClass::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /limits`: the project's absolute limits and usage.
    pub async fn limits(&self, project: &str) -> Result<Limits, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/limits", "/limits");
        Ok(self.session.json::<LimitsBody>(project, req).await?.limits)
    }

    /// `GET /os-quota-sets/{target}` in `scope` (an admin's scope to read another project's).
    pub async fn get_quota_set(
        &self,
        scope: &str,
        target: &str,
    ) -> Result<protocol::QuotaSet, OpenStackError> {
        let req =
            Request::new(SERVICE, Method::GET, "/os-quota-sets/{id}", format!("/os-quota-sets/{target}"));
        Ok(self.session.json::<protocol::QuotaSetBody>(scope, req).await?.quota_set)
    }

    /// `PUT /os-quota-sets/{target}` (admin): instances, cores, ram as given; the rest kept.
    /// Nova refuses a limit below what the project already uses (400).
    pub async fn update_quota_set(
        &self,
        scope: &str,
        target: &str,
        quotas: &protocol::QuotaSet,
    ) -> Result<protocol::QuotaSet, OpenStackError> {
        let req =
            Request::new(SERVICE, Method::PUT, "/os-quota-sets/{id}", format!("/os-quota-sets/{target}"))
                .json(&protocol::QuotaSetBody { quota_set: quotas.clone() });
        Ok(self.session.json::<protocol::QuotaSetBody>(scope, req).await?.quota_set)
    }

    /// `DELETE /os-quota-sets/{target}` (admin): back to the cloud's defaults.
    pub async fn delete_quota_set(&self, scope: &str, target: &str) -> Result<(), OpenStackError> {
        let req =
            Request::new(SERVICE, Method::DELETE, "/os-quota-sets/{id}", format!("/os-quota-sets/{target}"));
        self.session.send(scope, req).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nova api-ref, `GET /servers/{server_id}` of a server in ERROR (server-get-resp at 2.1
    /// with the `fault` Nova adds for ERROR servers).
    #[test]
    fn parses_the_api_ref_server_with_fault() {
        let body = r#"{
    "server": {
        "OS-DCF:diskConfig": "AUTO",
        "OS-EXT-AZ:availability_zone": "nova",
        "OS-EXT-STS:power_state": 0,
        "OS-EXT-STS:task_state": null,
        "OS-EXT-STS:vm_state": "error",
        "OS-SRV-USG:launched_at": null,
        "OS-SRV-USG:terminated_at": null,
        "accessIPv4": "",
        "accessIPv6": "",
        "addresses": {},
        "config_drive": "",
        "created": "2013-09-03T04:01:32Z",
        "fault": {
            "code": 500,
            "created": "2013-09-03T04:01:32Z",
            "message": "No valid host was found. There are not enough hosts available.",
            "details": "Traceback (most recent call last): ..."
        },
        "flavor": {
            "id": "1",
            "links": [{"href": "http://openstack.example.com/6f70656e737461636b20342065766572/flavors/1", "rel": "bookmark"}]
        },
        "hostId": "",
        "id": "9168b536-cd40-4630-b43f-b259807c6e87",
        "image": {
            "id": "70a599e0-31e7-49b7-b260-868f441e862b",
            "links": [{"href": "http://openstack.example.com/6f70656e737461636b20342065766572/images/70a599e0-31e7-49b7-b260-868f441e862b", "rel": "bookmark"}]
        },
        "key_name": null,
        "links": [
            {"href": "http://openstack.example.com/v2.1/6f70656e737461636b20342065766572/servers/9168b536-cd40-4630-b43f-b259807c6e87", "rel": "self"},
            {"href": "http://openstack.example.com/6f70656e737461636b20342065766572/servers/9168b536-cd40-4630-b43f-b259807c6e87", "rel": "bookmark"}
        ],
        "metadata": {"My Server Name": "Apache1"},
        "name": "new-server-test",
        "os-extended-volumes:volumes_attached": [],
        "security_groups": [{"name": "default"}],
        "status": "ERROR",
        "tenant_id": "6f70656e737461636b20342065766572",
        "updated": "2013-09-03T04:01:33Z",
        "user_id": "fake"
    }
}"#;
        let server: ServerBody = serde_json::from_str(body).unwrap();
        let s = server.server;
        assert_eq!(s.status, "ERROR");
        let fault = s.fault.unwrap();
        assert_eq!(fault.code, 500);
        assert!(fault.message.starts_with("No valid host was found"));
        assert_eq!(s.metadata.get("My Server Name").map(String::as_str), Some("Apache1"));
    }

    /// Nova api-ref, attach-volume-to-server-resp (2.79) and list-volume-attachments-resp (2.89).
    #[test]
    fn parses_the_api_ref_volume_attachments() {
        let attach = r#"{
    "volumeAttachment": {
        "delete_on_termination": true,
        "device": "/dev/sdb",
        "id": "a07f71dc-8151-4e7d-a0cc-cd24a3f11113",
        "serverId": "09b3b9d1-b8c5-48e1-841d-62c3ef967a88",
        "tag": "foo",
        "volumeId": "a07f71dc-8151-4e7d-a0cc-cd24a3f11113"
    }
}"#;
        let a: VolumeAttachmentBody = serde_json::from_str(attach).unwrap();
        assert_eq!(a.volume_attachment.volume_id, "a07f71dc-8151-4e7d-a0cc-cd24a3f11113");
        assert_eq!(a.volume_attachment.device.as_deref(), Some("/dev/sdb"));
        let list = r#"{
    "volumeAttachments": [
        {
            "attachment_id": "979ce4f8-033a-409d-85e6-6b5c0f6a6302",
            "delete_on_termination": false,
            "device": "/dev/sdc",
            "serverId": "7696780b-3f53-4688-ab25-019bfcbbd806",
            "tag": null,
            "volumeId": "227cc671-f30b-4488-96fd-7d0bf13648d8",
            "bdm_uuid": "c088db45-92b8-49e8-81e2-a1b77a144b3b"
        },
        {
            "attachment_id": "c5684109-0311-4fca-9814-350e46ab7d2a",
            "delete_on_termination": true,
            "device": "/dev/sdb",
            "serverId": "7696780b-3f53-4688-ab25-019bfcbbd806",
            "tag": "foo",
            "volumeId": "a07f71dc-8151-4e7d-a0cc-cd24a3f11113",
            "bdm_uuid": "1aa24536-6fb5-426c-8894-d627f39aa48b"
        }
    ]
}"#;
        let l: VolumeAttachmentList = serde_json::from_str(list).unwrap();
        assert_eq!(l.volume_attachments.len(), 2);
        assert_eq!(l.volume_attachments[0].id, None);
        assert_eq!(
            l.volume_attachments[1].attachment_id.as_deref(),
            Some("c5684109-0311-4fca-9814-350e46ab7d2a")
        );
    }

    #[test]
    fn the_create_request_boots_on_the_port_and_hides_user_data() {
        let new = NewServer {
            name: "vm-1".into(),
            flavor_id: "1".into(),
            image_id: "70a599e0-31e7-49b7-b260-868f441e862b".into(),
            port_id: "46d4bfb9-b26e-41f3-bd2e-e6dcc1ccedb2".into(),
            tags: vec!["provisioner".into()],
            key_name: Some("ops".into()),
            user_data: Some("I2Nsb3VkLWNvbmZpZwo=".into()),
            metadata: BTreeMap::from([("provisioner_order_id".into(), "o-1".into())]),
            availability_zone: Some("az2".into()),
            server_group: Some("616fb98f-46ca-475e-917e-2563e5a8cd19".into()),
            boot_volume: None,
        };
        assert!(!format!("{new:?}").contains("I2Nsb3VkLWNvbmZpZwo="));
    }

    #[test]
    fn a_block_device_mapping_reads_as_old_and_new_clients_send_it() {
        // The api-ref's boot from volume (integers, booleans) and older clients' strings.
        let new: BlockDeviceMapping = serde_json::from_value(serde_json::json!({
            "boot_index": 0, "uuid": "70a599e0-31e7-49b7-b260-868f441e862b", "source_type": "image",
            "destination_type": "volume", "volume_size": 10, "volume_type": "ssd",
            "delete_on_termination": true}))
        .unwrap();
        assert_eq!(
            (new.boot_index, new.volume_size, new.delete_on_termination),
            (Some(0), Some(10), Some(true))
        );
        let old: BlockDeviceMapping = serde_json::from_value(serde_json::json!({
            "boot_index": "0", "uuid": "x", "source_type": "image", "destination_type": "volume",
            "volume_size": "1", "delete_on_termination": "False"}))
        .unwrap();
        assert_eq!(
            (old.boot_index, old.volume_size, old.delete_on_termination),
            (Some(0), Some(1), Some(false))
        );
        assert!(serde_json::to_value(&old).unwrap().get("volume_type").is_none());
    }
}
