//! Keystone v3: what the rest of the client needs from identity beyond the session's own
//! authentication: checking that the credentials work for a project, and resolving the
//! configured default project.
//!
//! Built like the other services: [`IdentityApi`] holds the shared session, each call takes the
//! project scope. The token itself never leaves the session; callers see [`TokenInfo`].

pub mod protocol;

use std::sync::Arc;
use std::time::Duration;

use super::error::{OpenStackError, Service};
use super::session::Session;

/// What a project-scoped token says, without the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub project_id: String,
    pub user_id: String,
    pub lifetime: Duration,
    /// The normalised endpoints found in the catalog (service, base URL).
    pub endpoints: Vec<(Service, String)>,
}

/// Keystone calls.
#[derive(Debug, Clone)]
pub struct IdentityApi {
    session: Arc<Session>,
}

impl IdentityApi {
    pub fn new(session: Arc<Session>) -> IdentityApi {
        IdentityApi { session }
    }

    /// Authenticates for `project` (or uses the cached token) and says what the token gives:
    /// a startup check that the service user has a role there and the catalog has our services.
    pub async fn check_project(&self, project: &str) -> Result<TokenInfo, OpenStackError> {
        let token = self.session.token(project).await?;
        let endpoints = [Service::Image, Service::Network, Service::Compute, Service::Volume]
            .into_iter()
            .filter_map(|s| token.endpoint(s).map(|url| (s, url.to_string())))
            .collect();
        Ok(TokenInfo {
            project_id: token.project_id.clone(),
            user_id: token.user_id.clone(),
            lifetime: token.lifetime(),
            endpoints,
        })
    }

    /// The id of the configured default project (`OS_PROJECT_ID`, or `OS_PROJECT_NAME` resolved).
    pub async fn default_project_id(&self) -> Result<String, OpenStackError> {
        self.session.default_project_id().await
    }
}

#[cfg(test)]
mod tests {
    use super::protocol::TokenResponse;
    use crate::openstack::error::Service;
    use crate::openstack::session::{normalise_endpoint, pick_endpoint};

    /// Keystone api-ref, `POST /v3/auth/tokens` project-scoped response
    /// (auth-password-project-scoped-response), catalog trimmed to one entry per service we use
    /// and endpoint URLs as devstack registers them.
    #[test]
    fn parses_the_api_ref_token_with_catalog_and_finds_every_endpoint() {
        let body = r#"{
    "token": {
        "methods": ["password"],
        "roles": [{"id": "51cc68287d524c759f47c811e6463340", "name": "admin"}],
        "expires_at": "2015-11-07T02:58:43.578887Z",
        "project": {
            "domain": {"id": "default", "name": "Default"},
            "id": "a6944d763bf64ee6a275f1263fae0352",
            "name": "admin"
        },
        "is_domain": false,
        "catalog": [
            {"endpoints": [
                {"region_id": "RegionOne", "url": "http://example.com/identity", "region": "RegionOne", "interface": "public", "id": "068d1b359ee84b438266cb736d81de97"},
                {"region_id": "RegionOne", "url": "http://example.com/identity", "region": "RegionOne", "interface": "admin", "id": "8bfc846841ab441ca38471be6d164ced"}],
             "type": "identity", "id": "050726f278654128aba89757ae25950c", "name": "keystone"},
            {"endpoints": [
                {"region_id": "RegionOne", "url": "http://example.com/image", "region": "RegionOne", "interface": "public", "id": "1e6c1a4f9f9f4b7d9a0a3f2c1e0d9b8a"}],
             "type": "image", "id": "4e8e1d6a2c4b4f0f8e8d7c6b5a493827", "name": "glance"},
            {"endpoints": [
                {"region_id": "RegionOne", "url": "http://example.com:9696/", "region": "RegionOne", "interface": "public", "id": "9c1b8f0e6d5c4b3a2f1e0d9c8b7a6f5e"}],
             "type": "network", "id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "name": "neutron"},
            {"endpoints": [
                {"region_id": "RegionOne", "url": "http://example.com/compute/v2.1", "region": "RegionOne", "interface": "public", "id": "2dd4e3b6a5c44e2a9a3f7e1c8b0d6f42"}],
             "type": "compute", "id": "1999c3a1b6d54aa9a7a0f8b1b1d0a7c4", "name": "nova"},
            {"endpoints": [
                {"region_id": "RegionOne", "url": "http://example.com/volume/v3/a6944d763bf64ee6a275f1263fae0352", "region": "RegionOne", "interface": "public", "id": "5a8c5c2e0e1b4d7b9f3a6e8c1d2b4f6a"}],
             "type": "block-storage", "id": "3b2f9a1c7e6d4a5b8c0d1e2f3a4b5c6d", "name": "cinder"}
        ],
        "user": {
            "domain": {"id": "default", "name": "Default"},
            "id": "ee4dfb6e5540447cb3741905149d9b6e",
            "name": "admin",
            "password_expires_at": "2016-11-06T15:32:17.000000"
        },
        "audit_ids": ["3T2dc1CGQxyJsHdDu1xkcw"],
        "issued_at": "2015-11-07T01:58:43.578929Z"
    }
}"#;
        let token: TokenResponse = serde_json::from_str(body).unwrap();
        let project = token.token.project.as_ref().unwrap().id.clone();
        let catalog = token.token.catalog.unwrap();
        let base = |s| {
            let url = pick_endpoint(&catalog, s, "public", Some("RegionOne")).unwrap();
            normalise_endpoint(s, &url, &project).0
        };
        assert_eq!(base(Service::Image), "http://example.com/image/v2");
        assert_eq!(base(Service::Network), "http://example.com:9696/v2.0");
        assert_eq!(base(Service::Compute), "http://example.com/compute/v2.1");
        assert_eq!(base(Service::Volume), format!("http://example.com/volume/v3/{project}"));
        assert_eq!(pick_endpoint(&catalog, Service::Compute, "internal", None), None);
        let lifetime = token.token.expires_at - token.token.issued_at;
        assert_eq!(lifetime.num_seconds(), 3599);
    }
}
