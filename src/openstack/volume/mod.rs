//! Cinder v3: the order's data volume (create with metadata, get, list by metadata, delete), and
//! a project's quota set (tenant onboarding, in an admin's scope).
//!
//! Built like the other services: [`VolumeApi`] holds the shared session, each call takes the
//! project scope (the order's project id) and returns the wire types of [`protocol`]. Requests
//! carry `OpenStack-API-Version: volume 3.x` as negotiated by the session (3.0: nothing we use
//! needs more). Deleting is idempotent: a volume already gone is success.

pub mod protocol;

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::Method;

use self::protocol::{Link, Volume, VolumeBody, VolumeCreate, VolumeCreateRequest, VolumeList};
use super::error::{ErrorClass, OpenStackError, Service};
use super::microversion::Microversion;
use super::session::{Request, Session};

const SERVICE: Service = Service::Volume;

/// What the client sets on a new volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewVolume {
    pub name: String,
    pub size_gb: u64,
    /// `None`: the cloud's default type.
    pub volume_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// Filters of `GET /volumes/detail`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeQuery {
    /// Volumes whose metadata has every one of these pairs.
    pub metadata: BTreeMap<String, String>,
    /// Volumes in this status (`available`, `in-use`, `error`, ...).
    pub status: Option<String>,
}

/// Cinder calls in a project's scope.
#[derive(Debug, Clone)]
pub struct VolumeApi {
    session: Arc<Session>,
}

fn next_link(links: &Option<Vec<Link>>) -> Option<String> {
    links.as_ref()?.iter().find(|l| l.rel == "next").map(|l| l.href.clone())
}

impl VolumeApi {
    pub fn new(session: Arc<Session>) -> VolumeApi {
        VolumeApi { session }
    }

    /// The microversion this client speaks to Cinder (negotiated once per session).
    pub async fn microversion(&self, project: &str) -> Result<Microversion, OpenStackError> {
        self.session.cinder_microversion(project).await
    }

    /// `POST /v3/{project}/volumes`; the answer is the volume in `creating`.
    pub async fn create_volume(&self, project: &str, new: &NewVolume) -> Result<Volume, OpenStackError> {
        let body = VolumeCreateRequest {
            volume: VolumeCreate {
                size: new.size_gb,
                name: Some(new.name.clone()),
                volume_type: new.volume_type.clone(),
                metadata: (!new.metadata.is_empty()).then(|| new.metadata.clone()),
                ..Default::default()
            },
        };
        let req = Request::new(SERVICE, Method::POST, "/volumes", "/volumes").json(&body);
        Ok(self.session.json::<VolumeBody>(project, req).await?.volume)
    }

    /// `GET /v3/{project}/volumes/{id}`.
    pub async fn get_volume(&self, project: &str, id: &str) -> Result<Volume, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/volumes/{id}", format!("/volumes/{id}"));
        Ok(self.session.json::<VolumeBody>(project, req).await?.volume)
    }

    /// `GET /v3/{project}/volumes/detail?metadata={...}` (all pages): the volumes whose metadata
    /// contains every pair of `metadata`.
    pub async fn list_volumes_by_metadata(
        &self,
        project: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Vec<Volume>, OpenStackError> {
        self.list_volumes(project, &VolumeQuery { metadata: metadata.clone(), status: None }).await
    }

    /// `GET /v3/{project}/volumes/detail` with the filters (all pages). The filters are also
    /// applied to the answer, so a Cinder that ignores one cannot widen the result.
    pub async fn list_volumes(
        &self,
        project: &str,
        query: &VolumeQuery,
    ) -> Result<Vec<Volume>, OpenStackError> {
        let mut req = Request::new(SERVICE, Method::GET, "/volumes/detail", "/volumes/detail");
        if let Some(status) = &query.status {
            req = req.query("status", status.clone());
        }
        if !query.metadata.is_empty() {
            // Cinder reads the filter as a dict literal; JSON is one.
            let filter = serde_json::to_string(&query.metadata).unwrap_or_default();
            req = req.query("metadata", filter);
        }
        let mut volumes = Vec::new();
        loop {
            let page: VolumeList = self.session.json(project, req.clone()).await?;
            let next = next_link(&page.volumes_links);
            volumes.extend(page.volumes);
            match next {
                Some(link) => req = req.query_from_link(&link),
                None => break,
            }
        }
        volumes.retain(|v| {
            query.metadata.iter().all(|(k, val)| v.metadata.get(k) == Some(val))
                && query.status.as_ref().is_none_or(|s| &v.status == s)
        });
        Ok(volumes)
    }

    /// `DELETE /v3/{project}/volumes/{id}`; a volume already gone is success. A volume still
    /// attached or busy answers 400 "status must be ...", classified `Conflict` (retry later).
    pub async fn delete_volume(&self, project: &str, id: &str) -> Result<(), OpenStackError> {
        let req = Request::new(SERVICE, Method::DELETE, "/volumes/{id}", format!("/volumes/{id}"));
        match self.session.send(project, req).await {
            Ok(_) => Ok(()),
            Err(e) if e.class == ErrorClass::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /v3/{scope}/os-quota-sets/{target}` (an admin's scope to read another project's).
    pub async fn get_quota_set(
        &self,
        scope: &str,
        target: &str,
    ) -> Result<protocol::QuotaSet, OpenStackError> {
        let req =
            Request::new(SERVICE, Method::GET, "/os-quota-sets/{id}", format!("/os-quota-sets/{target}"));
        Ok(self.session.json::<protocol::QuotaSetBody>(scope, req).await?.quota_set)
    }

    /// `GET /v3/{project}/types` (all the project may use).
    pub async fn list_types(&self, project: &str) -> Result<Vec<protocol::VolumeType>, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/types", "/types");
        Ok(self.session.json::<protocol::VolumeTypeList>(project, req).await?.volume_types)
    }

    /// `GET /v3/{project}/os-quota-sets/{project}?usage=True` in the project's own scope (a
    /// member may read its own): `in_use` and `limit` of `volumes` and `gigabytes`.
    pub async fn quota_usage(
        &self,
        project: &str,
    ) -> Result<BTreeMap<String, protocol::QuotaUsage>, OpenStackError> {
        let req =
            Request::new(SERVICE, Method::GET, "/os-quota-sets/{id}", format!("/os-quota-sets/{project}"))
                .query("usage", "True");
        let body = self.session.json::<protocol::QuotaUsageBody>(project, req).await?;
        Ok(body
            .quota_set
            .into_iter()
            .filter_map(|(k, v)| serde_json::from_value::<protocol::QuotaUsage>(v).ok().map(|u| (k, u)))
            .collect())
    }

    /// `PUT /v3/{scope}/os-quota-sets/{target}` (admin): volumes, gigabytes as given.
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

    /// `DELETE /v3/{scope}/os-quota-sets/{target}` (admin): back to the cloud's defaults.
    pub async fn delete_quota_set(&self, scope: &str, target: &str) -> Result<(), OpenStackError> {
        let req =
            Request::new(SERVICE, Method::DELETE, "/os-quota-sets/{id}", format!("/os-quota-sets/{target}"));
        self.session.send(scope, req).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cinder api-ref, `GET /v3/{project_id}/volumes/{volume_id}` (volume-show-response).
    #[test]
    fn parses_the_api_ref_volume() {
        let body = r#"{
    "volume": {
        "attachments": [],
        "availability_zone": "nova",
        "bootable": "false",
        "consistencygroup_id": null,
        "created_at": "2018-11-29T06:50:07.770785",
        "description": null,
        "encrypted": false,
        "id": "f7223234-1afc-4d19-bfa3-d19deb6235ef",
        "links": [
            {"href": "http://127.0.0.1:45839/v3/89afd400-b646-4bbc-b12b-c0a4d63e5bd3/volumes/f7223234-1afc-4d19-bfa3-d19deb6235ef", "rel": "self"},
            {"href": "http://127.0.0.1:45839/89afd400-b646-4bbc-b12b-c0a4d63e5bd3/volumes/f7223234-1afc-4d19-bfa3-d19deb6235ef", "rel": "bookmark"}
        ],
        "metadata": {},
        "migration_status": null,
        "multiattach": false,
        "name": null,
        "os-vol-host-attr:host": null,
        "os-vol-mig-status-attr:migstat": null,
        "os-vol-mig-status-attr:name_id": null,
        "os-vol-tenant-attr:tenant_id": "89afd400-b646-4bbc-b12b-c0a4d63e5bd3",
        "replication_status": null,
        "size": 10,
        "snapshot_id": null,
        "source_volid": null,
        "status": "creating",
        "updated_at": null,
        "user_id": "c853ca26-e8ea-4797-8a52-ee124a013d0e",
        "volume_type": "__DEFAULT__",
        "provider_id": null,
        "group_id": null,
        "service_uuid": null,
        "shared_targets": true,
        "cluster_name": null,
        "volume_type_id": "5fed9d7c-401d-46e2-8e80-f30c70cb7e1d",
        "consumes_quota": true
    }
}"#;
        let v: VolumeBody = serde_json::from_str(body).unwrap();
        assert_eq!(v.volume.status, "creating");
        assert_eq!(v.volume.size, 10);
        assert_eq!(v.volume.volume_type.as_deref(), Some("__DEFAULT__"));
        assert_eq!(v.volume.updated_at, None);
    }

    #[test]
    fn the_create_request_sends_only_what_we_set() {
        let body = VolumeCreateRequest {
            volume: VolumeCreate {
                size: 20,
                name: Some("data-o-1".into()),
                metadata: Some(BTreeMap::from([("provisioner_order_id".into(), "o-1".into())])),
                ..Default::default()
            },
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"volume": {"size": 20, "name": "data-o-1", "metadata": {"provisioner_order_id": "o-1"}}})
        );
    }
}
