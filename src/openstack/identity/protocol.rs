//! Keystone v3 wire types: the password authentication request, the token body with its
//! service catalog, and the admin resources tenant onboarding uses: domains, projects (with
//! tags), users, roles and role assignments; and the error body.
//!
//! Shared by the client (which sends `AuthRequest` and reads `TokenResponse`) and the simulator
//! (which does the opposite), so the two cannot drift apart. Fields the real service may omit
//! are `Option` or defaulted; unknown fields are ignored when reading.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::openstack::protocol_time;

/// `POST /v3/auth/tokens` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthRequest {
    pub auth: Auth,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Auth {
    pub identity: Identity,
    /// Absent (or the string `"unscoped"`) for an unscoped token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// `["password"]` or `["token"]`.
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_credential: Option<ApplicationCredentialMethod>,
}

/// The `application_credential` method: the credential by id, or by name plus its user (by id,
/// or by name plus domain), and its secret. Keystone refuses a scope next to it (the credential
/// carries its project).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplicationCredentialMethod {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<AppCredUser>,
    pub secret: String,
}

impl std::fmt::Debug for ApplicationCredentialMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplicationCredentialMethod")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("user", &self.user)
            .field("secret", &"***")
            .finish()
    }
}

/// The owner of an application credential named by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppCredUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordMethod {
    pub user: PasswordUser,
}

/// A user by id, or by name plus domain (by id or name). The password is a secret: never log it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainRef>,
    pub password: String,
}

impl std::fmt::Debug for PasswordUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordUser")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("domain", &self.domain)
            .field("password", &"***")
            .finish()
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenMethod {
    pub id: String,
}

impl std::fmt::Debug for TokenMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenMethod { id: *** }")
    }
}

/// A domain by id or by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DomainRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The scope of the requested token. keystoneauth sends the string `"unscoped"` for an
/// explicitly unscoped token; that reads as [`Scope::Unscoped`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scope {
    Scoped(ScopeTarget),
    Unscoped(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScopeTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<ProjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<serde_json::Value>,
}

/// A project by id, or by name plus domain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainRef>,
}

impl AuthRequest {
    /// Password authentication of a user by name in a domain (by name), scoped to a project
    /// by id when `project_id` is given.
    pub fn password(user: PasswordUser, scope: Option<ProjectRef>) -> AuthRequest {
        AuthRequest {
            auth: Auth {
                identity: Identity {
                    methods: vec!["password".into()],
                    password: Some(PasswordMethod { user }),
                    token: None,
                    application_credential: None,
                },
                scope: scope.map(|p| Scope::Scoped(ScopeTarget { project: Some(p), ..Default::default() })),
            },
        }
    }

    /// Token authentication (`v3token`): an existing token exchanged for one scoped to `scope`.
    pub fn token(id: String, scope: Option<ProjectRef>) -> AuthRequest {
        AuthRequest {
            auth: Auth {
                identity: Identity {
                    methods: vec!["token".into()],
                    password: None,
                    token: Some(TokenMethod { id }),
                    application_credential: None,
                },
                scope: scope.map(|p| Scope::Scoped(ScopeTarget { project: Some(p), ..Default::default() })),
            },
        }
    }

    /// Application credential authentication: never a scope (the credential has its project).
    pub fn application_credential(method: ApplicationCredentialMethod) -> AuthRequest {
        AuthRequest {
            auth: Auth {
                identity: Identity {
                    methods: vec!["application_credential".into()],
                    password: None,
                    token: None,
                    application_credential: Some(method),
                },
                scope: None,
            },
        }
    }
}

/// The body of `POST /v3/auth/tokens` (201) and `GET /v3/auth/tokens` (200). The token itself
/// is in the `X-Subject-Token` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: Token,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    #[serde(default)]
    pub methods: Vec<String>,
    pub user: TokenUser,
    #[serde(default)]
    pub audit_ids: Vec<String>,
    #[serde(with = "protocol_time::micros_z")]
    pub expires_at: DateTime<Utc>,
    #[serde(with = "protocol_time::micros_z")]
    pub issued_at: DateTime<Utc>,
    /// Present on a project-scoped token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<TokenProject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_domain: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    /// Present on scoped tokens (absent with `?nocatalog`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<Vec<CatalogEntry>>,
    /// Present on a token issued for an application credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_credential: Option<TokenAppCred>,
}

/// The application credential a token was issued for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenAppCred {
    pub id: String,
    pub name: String,
    pub restricted: bool,
}

/// `POST /v3/users/{user_id}/application_credentials` request body. Without a `secret` Keystone
/// makes one and returns it once; without `roles` the credential gets every role the token has.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct NewApplicationCredential {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<RoleRef>>,
    #[serde(default)]
    pub unrestricted: bool,
}

impl std::fmt::Debug for NewApplicationCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApplicationCredential")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("unrestricted", &self.unrestricted)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A role by id or name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoleRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewApplicationCredentialBody {
    pub application_credential: NewApplicationCredential,
}

/// An application credential as Keystone shows it; `secret` only in the answer to its creation.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplicationCredential {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub project_id: String,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub unrestricted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl std::fmt::Debug for ApplicationCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplicationCredential")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("project_id", &self.project_id)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplicationCredentialBody {
    pub application_credential: ApplicationCredential,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenUser {
    pub id: String,
    pub name: String,
    pub domain: Domain,
    #[serde(default)]
    pub password_expires_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Domain {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenProject {
    pub id: String,
    pub name: String,
    pub domain: Domain,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    pub id: String,
    pub name: String,
}

/// One service in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub service_type: String,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub region_id: Option<String>,
    pub url: String,
}

/// A project as listed by `/v3/projects` and `/v3/auth/projects`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub is_domain: bool,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub links: Links,
}

fn yes() -> bool {
    true
}

/// `{"self": url}` on one resource; `{"self", "previous", "next"}` on a collection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Links {
    #[serde(rename = "self", default)]
    pub self_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectList {
    pub projects: Vec<Project>,
    #[serde(default)]
    pub links: Links,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectBody {
    pub project: Project,
}

/// A user. Keystone keeps `email` as an extra attribute: shown only when set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub password_expires_at: Option<String>,
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub links: Links,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserBody {
    pub user: User,
}

/// `POST /v3/users`. The password is a secret: `Debug` hides it.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserCreate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl std::fmt::Debug for UserCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCreate")
            .field("name", &self.name)
            .field("domain_id", &self.domain_id)
            .field("default_project_id", &self.default_project_id)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("email", &self.email)
            .field("enabled", &self.enabled)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserCreateRequest {
    pub user: UserCreate,
}

/// `PATCH /v3/users/{id}`: only the given fields change. `Debug` hides the password.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl std::fmt::Debug for UserUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserUpdate")
            .field("name", &self.name)
            .field("default_project_id", &self.default_project_id)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("email", &self.email)
            .field("enabled", &self.enabled)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserUpdateRequest {
    pub user: UserUpdate,
}

/// `POST /v3/projects`. Keystone refuses tags longer than 255 characters or containing `/`
/// or `,`; names are unique per domain, compared case-insensitively (409 otherwise).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectCreate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_domain: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectCreateRequest {
    pub project: ProjectCreate,
}

/// `PATCH /v3/projects/{id}`: only the given fields change (`tags` replaces them all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectUpdateRequest {
    pub project: ProjectUpdate,
}

/// `GET/PUT /v3/projects/{id}/tags`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectTags {
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Links>,
}

/// A domain as `/v3/domains` shows it (the token's `Domain` is only id and name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainDetail {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub links: Links,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainBody {
    pub domain: DomainDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainList {
    pub domains: Vec<DomainDetail>,
    #[serde(default)]
    pub links: Links,
}

/// `POST /v3/domains`, and (every field optional) `PATCH /v3/domains/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DomainCreate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainCreateRequest {
    pub domain: DomainCreate,
}

/// A role (`/v3/roles`). The roles Keystone's bootstrap makes are global (`domain_id` null)
/// and immutable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleDetail {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub domain_id: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub links: Links,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleBody {
    pub role: RoleDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleList {
    pub roles: Vec<RoleDetail>,
    #[serde(default)]
    pub links: Links,
}

/// One entry of `GET /v3/role_assignments`: a role, a user (or group), a scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleAssignment {
    pub role: AssignmentRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<AssignmentRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<AssignmentRef>,
    pub scope: AssignmentScope,
    #[serde(default)]
    pub links: AssignmentLinks,
}

/// An id, with the name (and domain) when asked for with `include_names`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssignmentRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Domain>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssignmentScope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<AssignmentRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<AssignmentRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssignmentLinks {
    #[serde(default)]
    pub assignment: String,
    /// Set on an effective assignment that comes from an implied role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_role: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleAssignmentList {
    pub role_assignments: Vec<RoleAssignment>,
    #[serde(default)]
    pub links: Links,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserList {
    pub users: Vec<User>,
    #[serde(default)]
    pub links: Links,
}

/// Keystone's error body, also what keystonemiddleware answers for a bad token on every
/// service: `{"error": {"code": 401, "message": "...", "title": "Unauthorized"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: u16,
    pub message: String,
    pub title: String,
}

/// Keystone's version discovery document (`GET /identity` answers 300 with a list,
/// `GET /identity/v3` answers 200 with one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionList {
    pub versions: VersionValues,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionValues {
    pub values: Vec<Version>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionBody {
    pub version: Version,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub id: String,
    pub status: String,
    pub updated: String,
    pub links: Vec<Link>,
    #[serde(rename = "media-types", default)]
    pub media_types: Vec<MediaType>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub rel: String,
    pub href: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaType {
    pub base: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_api_ref_password_scoped_request() {
        let body = r#"{"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"name": "Default"}, "password": "devstacker"}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}"#;
        let req: AuthRequest = serde_json::from_str(body).unwrap();
        let user = &req.auth.identity.password.as_ref().unwrap().user;
        assert_eq!(user.name.as_deref(), Some("admin"));
        assert!(!format!("{user:?}").contains("devstacker"));
        match req.auth.scope {
            Some(Scope::Scoped(ScopeTarget { project: Some(p), .. })) => {
                assert_eq!(p.name.as_deref(), Some("admin"));
                assert_eq!(p.domain.unwrap().id.as_deref(), Some("default"));
            }
            other => panic!("unexpected scope {other:?}"),
        }
        let unscoped: AuthRequest = serde_json::from_str(
            r#"{"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "id": "ee4dfb6e5540447cb3741905149d9b6e", "password": "x"}}}, "scope": "unscoped"}}"#,
        )
        .unwrap();
        assert_eq!(unscoped.auth.scope, Some(Scope::Unscoped("unscoped".into())));
    }

    #[test]
    fn parses_api_ref_token_response() {
        let body = r#"{"token": {"methods": ["password"], "roles": [{"id": "51cc68287d524c759f47c811e6463340", "name": "admin"}],
          "expires_at": "2015-11-07T02:58:43.578887Z", "issued_at": "2015-11-07T01:58:43.578929Z",
          "project": {"domain": {"id": "default", "name": "Default"}, "id": "a6944d763bf64ee6a275f1263fae0352", "name": "admin"},
          "is_domain": false,
          "catalog": [{"endpoints": [{"region_id": "RegionOne", "url": "http://example.com/identity", "region": "RegionOne", "interface": "public", "id": "068d1b359ee84b438266cb736d81de97"}],
             "type": "identity", "id": "050726f278654128aba89757ae25950c", "name": "keystone"}],
          "user": {"domain": {"id": "default", "name": "Default"}, "id": "ee4dfb6e5540447cb3741905149d9b6e", "name": "admin", "password_expires_at": "2016-11-06T15:32:17.000000"},
          "audit_ids": ["3T2dc1CGQxyJsHdDu1xkcw"]}}"#;
        let tok: TokenResponse = serde_json::from_str(body).unwrap();
        let catalog = tok.token.catalog.as_ref().unwrap();
        assert_eq!(catalog[0].service_type, "identity");
        assert_eq!(catalog[0].endpoints[0].interface, "public");
        assert_eq!(tok.token.project.as_ref().unwrap().name, "admin");
        let again = serde_json::to_value(&tok).unwrap();
        assert_eq!(again["token"]["expires_at"], "2015-11-07T02:58:43.578887Z");
    }

    /// Answers of a real Keystone 30 (shared/real-openstack), verbatim.
    #[test]
    fn parses_real_keystone_admin_answers() {
        let p: ProjectBody = serde_json::from_str(
            r#"{"project": {"id": "22d5464d218c4e5dacbecc5657bf533c", "name": "ks-probe-1", "domain_id": "default", "description": "probe", "enabled": true, "parent_id": "default", "is_domain": false, "tags": ["provisioner", "tenant-ref:CUST-1"], "options": {}, "links": {"self": "http://127.0.0.1:5000/v3/projects/22d5464d218c4e5dacbecc5657bf533c"}}}"#,
        )
        .unwrap();
        assert_eq!(p.project.tags, ["provisioner", "tenant-ref:CUST-1"]);
        assert_eq!((p.project.domain_id.as_str(), p.project.enabled), ("default", true));
        // A PATCH answer carries `extra`; ignored.
        let patched: ProjectBody = serde_json::from_str(
            r#"{"project": {"id": "22d5464d218c4e5dacbecc5657bf533c", "name": "ks-probe-1", "domain_id": "default", "description": "probe", "enabled": false, "parent_id": "default", "is_domain": false, "tags": ["provisioner", "tenant-ref:CUST-1"], "extra": {}, "options": {}, "links": {"self": "http://127.0.0.1:5000/v3/projects/22d5464d218c4e5dacbecc5657bf533c"}}}"#,
        )
        .unwrap();
        assert!(!patched.project.enabled);
        let u: UserBody = serde_json::from_str(
            r#"{"user": {"email": "a@example.com", "id": "31eb085a2d0f4a63a7043af0228db9a6", "name": "ks-probe-user", "domain_id": "default", "enabled": true, "default_project_id": "22d5464d218c4e5dacbecc5657bf533c", "password_expires_at": null, "options": {}, "links": {"self": "http://127.0.0.1:5000/v3/users/31eb085a2d0f4a63a7043af0228db9a6"}}}"#,
        )
        .unwrap();
        assert_eq!(u.user.email.as_deref(), Some("a@example.com"));
        assert_eq!(u.user.default_project_id.as_deref(), Some("22d5464d218c4e5dacbecc5657bf533c"));
        // A user made without a default project or email: the keys are absent, and we write
        // them absent too.
        let bare: UserBody = serde_json::from_str(
            r#"{"user": {"id": "cd0666a7b0534506a609f3f5983c7bca", "name": "ks-probe-mgruser", "domain_id": "default", "enabled": true, "password_expires_at": null, "options": {}, "links": {"self": "http://127.0.0.1:5000/v3/users/cd0666a7b0534506a609f3f5983c7bca"}}}"#,
        )
        .unwrap();
        let again = serde_json::to_value(&bare).unwrap();
        assert!(again["user"].get("email").is_none() && again["user"].get("default_project_id").is_none());
        let roles: RoleList = serde_json::from_str(
            r#"{"roles": [{"id": "e41413957f4145e289221f51b301bc54", "name": "member", "domain_id": null, "description": null, "options": {"immutable": true}, "links": {"self": "http://127.0.0.1:5000/v3/roles/e41413957f4145e289221f51b301bc54"}}], "links": {"next": null, "self": "http://127.0.0.1:5000/v3/roles?name=member", "previous": null}}"#,
        )
        .unwrap();
        assert_eq!((roles.roles[0].name.as_str(), roles.roles[0].domain_id.as_deref()), ("member", None));
        assert_eq!(roles.links.next, None);
        let list: RoleAssignmentList = serde_json::from_str(
            r#"{"role_assignments": [{"links": {"assignment": "http://127.0.0.1:5000/v3/projects/22d5464d218c4e5dacbecc5657bf533c/users/31eb085a2d0f4a63a7043af0228db9a6/roles/e41413957f4145e289221f51b301bc54"}, "scope": {"project": {"id": "22d5464d218c4e5dacbecc5657bf533c", "name": "ks-probe-1", "domain": {"id": "default", "name": "Default"}}}, "user": {"id": "31eb085a2d0f4a63a7043af0228db9a6", "name": "ks-probe-user", "domain": {"id": "default", "name": "Default"}}, "role": {"id": "e41413957f4145e289221f51b301bc54", "name": "member"}}], "links": {"next": null, "self": "http://127.0.0.1:5000/v3/role_assignments?scope.project.id=22d5464d218c4e5dacbecc5657bf533c&user.id=31eb085a2d0f4a63a7043af0228db9a6&include_names=true", "previous": null}}"#,
        )
        .unwrap();
        let a = &list.role_assignments[0];
        assert_eq!(a.role.id, "e41413957f4145e289221f51b301bc54");
        assert_eq!(a.user.as_ref().unwrap().name.as_deref(), Some("ks-probe-user"));
        assert_eq!(a.scope.project.as_ref().unwrap().id, "22d5464d218c4e5dacbecc5657bf533c");
        let d: DomainList = serde_json::from_str(
            r#"{"domains": [{"id": "default", "name": "Default", "description": "The default domain", "enabled": true, "tags": [], "options": {}, "links": {"self": "http://127.0.0.1:5000/v3/domains/default"}}], "links": {"next": null, "self": "http://127.0.0.1:5000/v3/domains?name=Default", "previous": null}}"#,
        )
        .unwrap();
        assert_eq!(d.domains[0].id, "default");
        let e: ErrorBody = serde_json::from_str(
            r#"{"error":{"code":409,"message":"Conflict occurred attempting to store user - Duplicate entry found with name KS-Probe-User at domain ID default.","title":"Conflict"}}"#,
        )
        .unwrap();
        assert_eq!((e.error.code, e.error.title.as_str()), (409, "Conflict"));
    }

    #[test]
    fn a_user_create_request_never_shows_its_password() {
        let req = UserCreate { name: "a".into(), password: Some("hunter2".into()), ..Default::default() };
        assert!(!format!("{req:?}").contains("hunter2"));
        let upd = UserUpdate { password: Some("hunter2".into()), ..Default::default() };
        assert!(!format!("{upd:?}").contains("hunter2"));
        // The body Keystone gets carries it (and only what was set).
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({"name": "a", "password": "hunter2"})
        );
    }

    #[test]
    fn parses_error_body() {
        let e: ErrorBody = serde_json::from_str(
            r#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#,
        )
        .unwrap();
        assert_eq!(e.error.code, 401);
    }
}
