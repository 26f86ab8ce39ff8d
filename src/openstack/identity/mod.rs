//! Keystone v3: what the rest of the client needs from identity beyond the session's own
//! authentication: checking that the credentials work for a project, resolving the configured
//! default project, and the admin API of tenant onboarding (domains, projects with tags, users,
//! roles, role assignments on projects).
//!
//! Built like the other services: [`IdentityApi`] holds the shared session. The admin calls take
//! no project: they are made in the session's default scope ([`IdentityApi::admin_scope`]), the
//! service user's own project where it holds `admin`, never in a customer project. Errors are
//! classified once (`super::error`): a policy 403 is `Auth`, a 409 on a taken name is
//! `AlreadyExists` (look the existing one up and decide), a 404 is `NotFound`. Deleting is
//! idempotent: gone is success. A user's password is a [`Secret`]: only the request body, which
//! the session never logs, carries it. The token itself never leaves the session; callers see
//! [`TokenInfo`].

pub mod protocol;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;

use self::protocol::{
    DomainBody, DomainCreate, DomainCreateRequest, DomainDetail, DomainList, Links, Project, ProjectBody,
    ProjectCreate, ProjectCreateRequest, ProjectList, ProjectTags, ProjectUpdate, ProjectUpdateRequest,
    RoleAssignment, RoleAssignmentList, RoleDetail, RoleList, User, UserBody, UserCreate, UserCreateRequest,
    UserList, UserUpdate, UserUpdateRequest,
};
use super::error::{ErrorClass, OpenStackError, Service, exactly_one};
use super::session::{Request, Session};
use crate::config::Secret;

const SERVICE: Service = Service::Identity;

/// What a project-scoped token says, without the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub project_id: String,
    pub user_id: String,
    pub lifetime: Duration,
    /// The normalised endpoints found in the catalog (service, base URL).
    pub endpoints: Vec<(Service, String)>,
}

/// What the client sets on a new project.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewProject {
    pub name: String,
    pub domain_id: String,
    pub description: String,
    /// At most 80, each 1-255 characters without `/` or `,` (Keystone refuses others: 400).
    pub tags: Vec<String>,
    pub enabled: bool,
}

/// What the client sets on a new user. `Debug` does not show the password (a [`Secret`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewUser {
    pub name: String,
    pub domain_id: String,
    pub default_project_id: Option<String>,
    pub email: Option<String>,
    pub description: Option<String>,
    pub password: Option<Secret>,
    pub enabled: bool,
}

/// Filters of `GET /v3/projects` (all optional; tags match exactly).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectQuery {
    /// Compared case-insensitively by Keystone.
    pub name: Option<String>,
    pub domain_id: Option<String>,
    /// Projects carrying every one of these tags.
    pub tags: Vec<String>,
    /// Projects carrying at least one of these tags.
    pub tags_any: Vec<String>,
}

/// Keystone calls.
#[derive(Debug, Clone)]
pub struct IdentityApi {
    session: Arc<Session>,
}

fn next_link(links: &Links) -> Option<String> {
    links.next.clone().filter(|l| !l.is_empty())
}

/// Gone is success (idempotent deletes and revokes).
fn gone_is_ok(r: Result<super::session::Response, OpenStackError>) -> Result<(), OpenStackError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.class == ErrorClass::NotFound => Ok(()),
        Err(e) => Err(e),
    }
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

    /// The scope of admin calls: the default project, where the service user must hold `admin`.
    pub async fn admin_scope(&self) -> Result<String, OpenStackError> {
        self.session.default_project_id().await
    }

    /// The service user's own id (from its token in the admin scope).
    pub async fn service_user_id(&self) -> Result<String, OpenStackError> {
        let scope = self.admin_scope().await?;
        Ok(self.session.token(&scope).await?.user_id.clone())
    }

    async fn admin_json<T: serde::de::DeserializeOwned>(&self, req: Request) -> Result<T, OpenStackError> {
        let scope = self.admin_scope().await?;
        self.session.json(&scope, req).await
    }

    async fn admin_send(&self, req: Request) -> Result<super::session::Response, OpenStackError> {
        let scope = self.admin_scope().await?;
        self.session.send(&scope, req).await
    }

    // ---- domains ----

    /// `GET /v3/domains/{id}`.
    pub async fn get_domain(&self, id: &str) -> Result<DomainDetail, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/domains/{id}", format!("/domains/{id}"));
        Ok(self.admin_json::<DomainBody>(req).await?.domain)
    }

    /// `GET /v3/domains?name=...`: Keystone compares names case-insensitively.
    pub async fn list_domains_by_name(&self, name: &str) -> Result<Vec<DomainDetail>, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/domains", "/domains").query("name", name);
        let mut domains = self.admin_json::<DomainList>(req).await?.domains;
        domains.retain(|d| d.name.eq_ignore_ascii_case(name));
        Ok(domains)
    }

    /// The domain with this id, or else this name (as the CLI's `--domain` resolves it).
    pub async fn find_domain(&self, id_or_name: &str) -> Result<DomainDetail, OpenStackError> {
        match self.get_domain(id_or_name).await {
            Ok(d) => return Ok(d),
            Err(e) if e.class == ErrorClass::NotFound => {}
            Err(e) => return Err(e),
        }
        let found = self.list_domains_by_name(id_or_name).await?;
        exactly_one(SERVICE, "/domains", "domain", id_or_name, found, |d| &d.id)
    }

    /// `POST /v3/domains`.
    pub async fn create_domain(&self, name: &str, description: &str) -> Result<DomainDetail, OpenStackError> {
        let body = DomainCreateRequest {
            domain: DomainCreate {
                name: Some(name.to_string()),
                description: Some(description.to_string()),
                enabled: Some(true),
            },
        };
        let req = Request::new(SERVICE, Method::POST, "/domains", "/domains").json(&body);
        Ok(self.admin_json::<DomainBody>(req).await?.domain)
    }

    // ---- projects ----

    /// `POST /v3/projects` with tags. A taken name is `AlreadyExists`.
    pub async fn create_project(&self, new: &NewProject) -> Result<Project, OpenStackError> {
        let body = ProjectCreateRequest {
            project: ProjectCreate {
                name: new.name.clone(),
                domain_id: Some(new.domain_id.clone()),
                description: Some(new.description.clone()),
                enabled: Some(new.enabled),
                tags: Some(new.tags.clone()),
                ..Default::default()
            },
        };
        let req = Request::new(SERVICE, Method::POST, "/projects", "/projects").json(&body);
        Ok(self.admin_json::<ProjectBody>(req).await?.project)
    }

    /// `GET /v3/projects/{id}`.
    pub async fn get_project(&self, id: &str) -> Result<Project, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/projects/{id}", format!("/projects/{id}"));
        Ok(self.admin_json::<ProjectBody>(req).await?.project)
    }

    /// `GET /v3/projects` with filters (every page, if Keystone pages). Tag filters are
    /// checked again on the answer, so only exact matches come back.
    pub async fn list_projects(&self, query: &ProjectQuery) -> Result<Vec<Project>, OpenStackError> {
        let mut req = Request::new(SERVICE, Method::GET, "/projects", "/projects");
        if let Some(n) = &query.name {
            req = req.query("name", n);
        }
        if let Some(d) = &query.domain_id {
            req = req.query("domain_id", d);
        }
        if !query.tags.is_empty() {
            req = req.query("tags", query.tags.join(","));
        }
        if !query.tags_any.is_empty() {
            req = req.query("tags-any", query.tags_any.join(","));
        }
        let mut projects = Vec::new();
        loop {
            let page: ProjectList = self.admin_json(req.clone()).await?;
            let next = next_link(&page.links);
            projects.extend(page.projects);
            match next {
                Some(link) => req = req.query_from_link(&link),
                None => break,
            }
        }
        projects.retain(|p| {
            query.tags.iter().all(|t| p.tags.contains(t))
                && (query.tags_any.is_empty() || query.tags_any.iter().any(|t| p.tags.contains(t)))
        });
        Ok(projects)
    }

    /// `PATCH /v3/projects/{id}`: only what `update` sets changes.
    pub async fn update_project(&self, id: &str, update: &ProjectUpdate) -> Result<Project, OpenStackError> {
        let req = Request::new(SERVICE, Method::PATCH, "/projects/{id}", format!("/projects/{id}"))
            .json(&ProjectUpdateRequest { project: update.clone() });
        Ok(self.admin_json::<ProjectBody>(req).await?.project)
    }

    /// `PUT /v3/projects/{id}/tags`: replaces the project's tags.
    pub async fn set_project_tags(&self, id: &str, tags: &[String]) -> Result<Vec<String>, OpenStackError> {
        let req = Request::new(SERVICE, Method::PUT, "/projects/{id}/tags", format!("/projects/{id}/tags"))
            .json(&ProjectTags { tags: tags.to_vec(), links: None });
        Ok(self.admin_json::<ProjectTags>(req).await?.tags)
    }

    /// `DELETE /v3/projects/{id}`; a project already gone is success. Keystone deletes its role
    /// assignments too; what the project holds in the other services is not touched.
    pub async fn delete_project(&self, id: &str) -> Result<(), OpenStackError> {
        let req = Request::new(SERVICE, Method::DELETE, "/projects/{id}", format!("/projects/{id}"));
        gone_is_ok(self.admin_send(req).await)
    }

    // ---- users ----

    /// `POST /v3/users`. A taken name (in the domain, any case) is `AlreadyExists`.
    pub async fn create_user(&self, new: &NewUser) -> Result<User, OpenStackError> {
        let body = UserCreateRequest {
            user: UserCreate {
                name: new.name.clone(),
                domain_id: Some(new.domain_id.clone()),
                default_project_id: new.default_project_id.clone(),
                password: new.password.as_ref().map(|p| p.expose().to_string()),
                email: new.email.clone(),
                description: new.description.clone(),
                enabled: Some(new.enabled),
            },
        };
        let req = Request::new(SERVICE, Method::POST, "/users", "/users").json(&body);
        Ok(self.admin_json::<UserBody>(req).await?.user)
    }

    /// `GET /v3/users/{id}`.
    pub async fn get_user(&self, id: &str) -> Result<User, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/users/{id}", format!("/users/{id}"));
        Ok(self.admin_json::<UserBody>(req).await?.user)
    }

    /// `GET /v3/users?name=...&domain_id=...` (names compared case-insensitively, as Keystone does).
    pub async fn list_users(&self, name: &str, domain_id: &str) -> Result<Vec<User>, OpenStackError> {
        let mut req = Request::new(SERVICE, Method::GET, "/users", "/users")
            .query("name", name)
            .query("domain_id", domain_id);
        let mut users = Vec::new();
        loop {
            let page: UserList = self.admin_json(req.clone()).await?;
            let next = next_link(&page.links);
            users.extend(page.users);
            match next {
                Some(link) => req = req.query_from_link(&link),
                None => break,
            }
        }
        users.retain(|u| u.name.eq_ignore_ascii_case(name) && u.domain_id == domain_id);
        Ok(users)
    }

    /// `PATCH /v3/users/{id}`.
    pub async fn update_user(&self, id: &str, update: &UserUpdate) -> Result<User, OpenStackError> {
        let req = Request::new(SERVICE, Method::PATCH, "/users/{id}", format!("/users/{id}"))
            .json(&UserUpdateRequest { user: update.clone() });
        Ok(self.admin_json::<UserBody>(req).await?.user)
    }

    /// `DELETE /v3/users/{id}`; a user already gone is success.
    pub async fn delete_user(&self, id: &str) -> Result<(), OpenStackError> {
        let req = Request::new(SERVICE, Method::DELETE, "/users/{id}", format!("/users/{id}"));
        gone_is_ok(self.admin_send(req).await)
    }

    // ---- roles and assignments ----

    /// `GET /v3/roles?name=...`.
    pub async fn list_roles(&self, name: &str) -> Result<Vec<RoleDetail>, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/roles", "/roles").query("name", name);
        let mut roles = self.admin_json::<RoleList>(req).await?.roles;
        roles.retain(|r| r.name.eq_ignore_ascii_case(name));
        Ok(roles)
    }

    /// The one global role with this name (`member`, `reader`, ...).
    pub async fn find_role(&self, name: &str) -> Result<RoleDetail, OpenStackError> {
        let mut found = self.list_roles(name).await?;
        // A domain-specific role of the same name is not the one meant.
        if found.iter().any(|r| r.domain_id.is_none()) {
            found.retain(|r| r.domain_id.is_none());
        }
        exactly_one(SERVICE, "/roles", "role", name, found, |r| &r.id)
    }

    /// `PUT /v3/projects/{p}/users/{u}/roles/{r}`: idempotent (204 when it already exists).
    pub async fn assign_project_role(
        &self,
        project: &str,
        user: &str,
        role: &str,
    ) -> Result<(), OpenStackError> {
        let req = Request::new(
            SERVICE,
            Method::PUT,
            "/projects/{id}/users/{id}/roles/{id}",
            format!("/projects/{project}/users/{user}/roles/{role}"),
        );
        self.admin_send(req).await.map(|_| ())
    }

    /// `HEAD /v3/projects/{p}/users/{u}/roles/{r}`: whether the user holds the role directly.
    /// (A 404 also answers a missing project, user or role: all mean "no".)
    pub async fn has_project_role(
        &self,
        project: &str,
        user: &str,
        role: &str,
    ) -> Result<bool, OpenStackError> {
        let req = Request::new(
            SERVICE,
            Method::HEAD,
            "/projects/{id}/users/{id}/roles/{id}",
            format!("/projects/{project}/users/{user}/roles/{role}"),
        );
        match self.admin_send(req).await {
            Ok(_) => Ok(true),
            Err(e) if e.class == ErrorClass::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /v3/projects/{p}/users/{u}/roles/{r}`; an assignment already gone is success.
    pub async fn unassign_project_role(
        &self,
        project: &str,
        user: &str,
        role: &str,
    ) -> Result<(), OpenStackError> {
        let req = Request::new(
            SERVICE,
            Method::DELETE,
            "/projects/{id}/users/{id}/roles/{id}",
            format!("/projects/{project}/users/{user}/roles/{role}"),
        );
        gone_is_ok(self.admin_send(req).await)
    }

    /// `GET /v3/role_assignments?scope.project.id=...&user.id=...`: direct assignments (not the
    /// roles they imply).
    pub async fn list_role_assignments(
        &self,
        project: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<RoleAssignment>, OpenStackError> {
        let mut req = Request::new(SERVICE, Method::GET, "/role_assignments", "/role_assignments");
        if let Some(p) = project {
            req = req.query("scope.project.id", p);
        }
        if let Some(u) = user {
            req = req.query("user.id", u);
        }
        let mut out = Vec::new();
        loop {
            let page: RoleAssignmentList = self.admin_json(req.clone()).await?;
            let next = next_link(&page.links);
            out.extend(page.role_assignments);
            match next {
                Some(link) => req = req.query_from_link(&link),
                None => break,
            }
        }
        Ok(out)
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
