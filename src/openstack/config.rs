//! Which cloud to talk to, configured the OpenStack way: `OS_CLOUD` naming an entry of a
//! `clouds.yaml` (standard search path), or the `OS_*` variables, with `OS_*` variables
//! overriding a `clouds.yaml` entry the way the `openstack` CLI does.
//!
//! This is the first thing startup asks: [`CloudConfig::from_env`] returns `None` when no cloud is
//! configured at all (neither `OS_CLOUD` nor `OS_AUTH_URL`), and the worker then runs against the
//! embedded simulator. A cloud that is configured but incomplete is an error naming what is
//! missing, never a silent fallback. The password is a [`Secret`]: `Debug` never shows it.
//!
//! Search path for `clouds.yaml` (first found wins): `$OS_CLIENT_CONFIG_FILE`, `./clouds.yaml`,
//! `$XDG_CONFIG_HOME/openstack/clouds.yaml` (or `~/.config/openstack/clouds.yaml`),
//! `/etc/openstack/clouds.yaml`. A `secure.yaml` next to it (same layout) is merged into the
//! entry, which is where passwords usually live. `verify: false` (no TLS verification) is
//! refused rather than silently ignored.
//!
//! Three Keystone v3 auth types, named as keystoneauth names them (`auth_type:` /
//! `OS_AUTH_TYPE`): `password` (`v3password`), `v3applicationcredential` (an id, or a name plus
//! its user, and the secret: `OS_APPLICATION_CREDENTIAL_ID/NAME/SECRET`) and `v3token`
//! (`token`, `OS_TOKEN`). Without an auth type it is inferred as the clients do: a token alone is
//! `v3token`, an application credential secret `v3applicationcredential`, else `password`.
//!
//! An application credential is bound to one project, so it cannot serve other customers'
//! projects. Per-project credentials live in `clouds.yaml` entries named `<OS_CLOUD>/<project
//! id>` (each a complete entry the `openstack` CLI can use as it is): the session authenticates a
//! project with its own entry when there is one, else with the main entry's credential. The
//! main entry's `regions:` list names every region orders may ask for; the first (or
//! `region_name`) is the default.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Secret;

/// A missing or malformed cloud setting; the message names the variable or the file and key.
#[derive(Debug, thiserror::Error)]
#[error("OpenStack configuration: {0}")]
pub struct CloudConfigError(pub String);

/// A domain, by id or by name (Keystone accepts either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRef {
    Id(String),
    Name(String),
}

/// The user the worker authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(String),
    Name { name: String, domain: DomainRef },
}

/// A project, by id or by name within a domain. Orders carry project ids; a name is only used
/// for the default scope (`OS_PROJECT_NAME`), which tools like the smoke check use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectRef {
    Id(String),
    Name { name: String, domain: DomainRef },
}

/// How the service user authenticates. Every secret is a [`Secret`]: `Debug` shows `***`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `password`: a user and its password, scoped to each project it is asked for.
    Password { user: UserRef, password: Secret },
    /// `v3applicationcredential`: bound to the project it was made in; never scoped.
    ApplicationCredential { credential: AppCredRef, secret: Secret },
    /// `v3token`: an existing token, exchanged for one scoped to each project (a rescope).
    Token { token: Secret },
}

/// An application credential by id, or by name plus the user who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppCredRef {
    Id(String),
    Name { name: String, user: UserRef },
}

impl Credential {
    /// The auth type's name, as clouds.yaml spells it.
    pub fn auth_type(&self) -> &'static str {
        match self {
            Credential::Password { .. } => "password",
            Credential::ApplicationCredential { .. } => "v3applicationcredential",
            Credential::Token { .. } => "v3token",
        }
    }
}

/// Which endpoint of the catalog to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interface {
    #[default]
    Public,
    Internal,
    Admin,
}

impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Public => "public",
            Interface::Internal => "internal",
            Interface::Admin => "admin",
        }
    }

    fn parse(what: &str, v: &str) -> Result<Interface, CloudConfigError> {
        match v.trim().to_ascii_lowercase().trim_end_matches("url") {
            "public" => Ok(Interface::Public),
            "internal" => Ok(Interface::Internal),
            "admin" => Ok(Interface::Admin),
            _ => Err(CloudConfigError(format!("{what}={v:?} is not one of public, internal, admin"))),
        }
    }
}

/// Everything needed to authenticate and pick endpoints.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// `OS_CLOUD`, when the configuration came from `clouds.yaml`; for messages only.
    pub cloud_name: Option<String>,
    /// Keystone, normalised to end in `/v3`.
    pub auth_url: String,
    pub credential: Credential,
    /// Credentials of single projects (`<OS_CLOUD>/<project id>` entries of clouds.yaml), used
    /// instead of `credential` for their project.
    pub project_credentials: BTreeMap<String, Credential>,
    /// The scope used when a caller does not name a project (the smoke check, `limits`).
    pub default_project: Option<ProjectRef>,
    /// The default region (`region_name`, the first of `regions:`, `OS_REGION_NAME`).
    pub region: Option<String>,
    /// Every region the entry lists (`regions:`); informational: any region of the catalog is
    /// served.
    pub regions: Vec<String>,
    pub interface: Interface,
    /// Extra CA bundle (PEM) trusted besides the system roots.
    pub cacert: Option<PathBuf>,
}

impl CloudConfig {
    /// From the process environment and the standard `clouds.yaml` search path.
    /// `Ok(None)`: no cloud configured (neither `OS_CLOUD` nor `OS_AUTH_URL`).
    pub fn from_env() -> Result<Option<CloudConfig>, CloudConfigError> {
        let vars: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("OS_") || k == "HOME" || k == "XDG_CONFIG_HOME")
            .collect();
        Self::from_vars(&vars)
    }

    /// Like [`CloudConfig::from_env`] with an explicit environment, so tests do not race on the
    /// process environment. `HOME` and `XDG_CONFIG_HOME` are read from `vars` too.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Option<CloudConfig>, CloudConfigError> {
        let var = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_string);
        let mut per_project = BTreeMap::new();
        let mut raw = match var("OS_CLOUD") {
            Some(cloud) => {
                let path = search_path(vars).into_iter().find(|p| p.is_file()).ok_or_else(|| {
                    CloudConfigError(format!(
                        "OS_CLOUD={cloud:?} but no clouds.yaml was found (looked in {})",
                        search_path(vars)
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                let mut raw = RawCloud::from_clouds_yaml(&path, &cloud)?;
                let secure = path.with_file_name("secure.yaml");
                if secure.is_file() {
                    raw.merge_secure(&secure, &cloud)?;
                }
                let prefix = format!("{cloud}/");
                for name in read_clouds_file(&path)?.clouds.keys().filter(|k| k.starts_with(&prefix)) {
                    let project = name[prefix.len()..].trim().to_string();
                    if project.is_empty() {
                        continue;
                    }
                    let mut entry = RawCloud::from_clouds_yaml(&path, name)?;
                    if secure.is_file() {
                        entry.merge_secure(&secure, name)?;
                    }
                    per_project.insert(project, entry);
                }
                raw.cloud_name = Some(cloud);
                raw
            }
            None if var("OS_AUTH_URL").is_some() => RawCloud::default(),
            None => return Ok(None),
        };
        raw.apply_env(&var)?;
        let mut cfg = raw.finish()?;
        for (project, entry) in per_project {
            let src = entry.source.clone();
            if let Some(url) = &entry.auth.auth_url
                && normalise_auth_url(url) != cfg.auth_url
            {
                return Err(CloudConfigError(format!(
                    "{src}: auth_url {url:?} differs from the main entry's {:?} (one Keystone per cloud)",
                    cfg.auth_url
                )));
            }
            let credential = entry.credential()?;
            cfg.project_credentials.insert(project, credential);
        }
        Ok(Some(cfg))
    }
}

/// Where `clouds.yaml` is looked for, in order.
pub fn search_path(vars: &HashMap<String, String>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(file) = vars.get("OS_CLIENT_CONFIG_FILE").filter(|v| !v.trim().is_empty()) {
        paths.push(PathBuf::from(file.trim()));
    }
    paths.push(PathBuf::from("clouds.yaml"));
    match (vars.get("XDG_CONFIG_HOME").filter(|v| !v.is_empty()), vars.get("HOME").filter(|v| !v.is_empty()))
    {
        (Some(xdg), _) => paths.push(Path::new(xdg).join("openstack/clouds.yaml")),
        (None, Some(home)) => paths.push(Path::new(home).join(".config/openstack/clouds.yaml")),
        (None, None) => {}
    }
    paths.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    paths
}

/// The `clouds:` map of a `clouds.yaml` (or `secure.yaml`).
#[derive(Debug, Deserialize, Default)]
struct CloudsFile {
    #[serde(default)]
    clouds: BTreeMap<String, CloudEntry>,
}

/// One cloud entry; unknown keys (`identity_api_version`, `volume_api_version`, ...) are ignored.
#[derive(Debug, Deserialize, Default)]
struct CloudEntry {
    #[serde(default)]
    auth: AuthEntry,
    auth_type: Option<String>,
    region_name: Option<String>,
    #[serde(default)]
    regions: Vec<RegionEntry>,
    interface: Option<String>,
    cacert: Option<String>,
    verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RegionEntry {
    Name(String),
    Full { name: String },
}

#[derive(Debug, Deserialize, Default)]
struct AuthEntry {
    auth_url: Option<String>,
    username: Option<String>,
    user_id: Option<String>,
    password: Option<String>,
    application_credential_id: Option<String>,
    application_credential_name: Option<String>,
    application_credential_secret: Option<String>,
    token: Option<String>,
    user_domain_name: Option<String>,
    user_domain_id: Option<String>,
    project_name: Option<String>,
    project_id: Option<String>,
    project_domain_name: Option<String>,
    project_domain_id: Option<String>,
    /// Shorthand for both domains (clouds.yaml allows it).
    domain_name: Option<String>,
    domain_id: Option<String>,
    /// Old spellings still found in the wild.
    tenant_name: Option<String>,
    tenant_id: Option<String>,
}

/// The settings as collected from file and environment, before validation.
#[derive(Debug, Default)]
struct RawCloud {
    cloud_name: Option<String>,
    source: String,
    auth_type: Option<String>,
    auth: AuthEntry,
    region: Option<String>,
    regions: Vec<String>,
    interface: Option<String>,
    cacert: Option<String>,
}

fn read_clouds_file(path: &Path) -> Result<CloudsFile, CloudConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CloudConfigError(format!("cannot read {}: {e}", path.display())))?;
    serde_saphyr::from_str::<CloudsFile>(&text)
        .map_err(|e| CloudConfigError(format!("{}: {}", path.display(), e.to_string().trim())))
}

impl RawCloud {
    fn from_clouds_yaml(path: &Path, cloud: &str) -> Result<RawCloud, CloudConfigError> {
        let mut file = read_clouds_file(path)?;
        let entry = file.clouds.remove(cloud).ok_or_else(|| {
            CloudConfigError(format!(
                "OS_CLOUD={cloud:?}: no such cloud in {} (it has: {})",
                path.display(),
                file.clouds.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let source = format!("{} (cloud {cloud:?})", path.display());
        if entry.verify == Some(false) {
            return Err(CloudConfigError(format!(
                "{source}: verify: false is not supported; give the CA with cacert instead"
            )));
        }
        let regions: Vec<String> = entry
            .regions
            .into_iter()
            .map(|r| match r {
                RegionEntry::Name(n) | RegionEntry::Full { name: n } => n,
            })
            .collect();
        let region = entry.region_name.or_else(|| regions.first().cloned());
        Ok(RawCloud {
            cloud_name: None,
            source,
            auth_type: entry.auth_type,
            auth: entry.auth,
            region,
            regions,
            interface: entry.interface,
            cacert: entry.cacert,
        })
    }

    /// Fills what `secure.yaml` has for the same cloud (typically the password).
    fn merge_secure(&mut self, path: &Path, cloud: &str) -> Result<(), CloudConfigError> {
        let mut file = read_clouds_file(path)?;
        let Some(entry) = file.clouds.remove(cloud) else { return Ok(()) };
        let a = entry.auth;
        let b = &mut self.auth;
        macro_rules! fill {
            ($($f:ident),*) => { $( if a.$f.is_some() { b.$f = a.$f; } )* };
        }
        fill!(
            auth_url,
            username,
            user_id,
            password,
            application_credential_id,
            application_credential_name,
            application_credential_secret,
            token,
            user_domain_name,
            user_domain_id,
            project_name,
            project_id,
            project_domain_name,
            project_domain_id,
            domain_name,
            domain_id
        );
        if entry.region_name.is_some() {
            self.region = entry.region_name;
        }
        if entry.cacert.is_some() {
            self.cacert = entry.cacert;
        }
        Ok(())
    }

    /// `OS_*` variables override the file entry, like the `openstack` CLI.
    fn apply_env(&mut self, var: &impl Fn(&str) -> Option<String>) -> Result<(), CloudConfigError> {
        let a = &mut self.auth;
        let set = |slot: &mut Option<String>, name: &str| {
            if let Some(v) = var(name) {
                *slot = Some(v);
            }
        };
        set(&mut a.auth_url, "OS_AUTH_URL");
        set(&mut a.username, "OS_USERNAME");
        set(&mut a.user_id, "OS_USER_ID");
        set(&mut a.password, "OS_PASSWORD");
        set(&mut a.application_credential_id, "OS_APPLICATION_CREDENTIAL_ID");
        set(&mut a.application_credential_name, "OS_APPLICATION_CREDENTIAL_NAME");
        set(&mut a.application_credential_secret, "OS_APPLICATION_CREDENTIAL_SECRET");
        set(&mut a.token, "OS_TOKEN");
        if let Some(t) = var("OS_AUTH_TYPE") {
            self.auth_type = Some(t);
        }
        set(&mut a.user_domain_name, "OS_USER_DOMAIN_NAME");
        set(&mut a.user_domain_id, "OS_USER_DOMAIN_ID");
        set(&mut a.project_name, "OS_PROJECT_NAME");
        set(&mut a.project_id, "OS_PROJECT_ID");
        set(&mut a.project_domain_name, "OS_PROJECT_DOMAIN_NAME");
        set(&mut a.project_domain_id, "OS_PROJECT_DOMAIN_ID");
        set(&mut a.tenant_name, "OS_TENANT_NAME");
        set(&mut a.tenant_id, "OS_TENANT_ID");
        set(&mut a.domain_name, "OS_DEFAULT_DOMAIN_NAME");
        set(&mut a.domain_id, "OS_DEFAULT_DOMAIN_ID");
        if a.domain_id.is_none()
            && a.domain_name.is_none()
            && let Some(d) = var("OS_DEFAULT_DOMAIN")
        {
            a.domain_id = Some(d);
        }
        set(&mut self.region, "OS_REGION_NAME");
        set(&mut self.interface, "OS_INTERFACE");
        set(&mut self.cacert, "OS_CACERT");
        if self.source.is_empty() {
            self.source = "OS_* environment".into();
        }
        Ok(())
    }

    /// The credential of this entry, by its auth type (given or inferred).
    fn credential(&self) -> Result<Credential, CloudConfigError> {
        let src = &self.source;
        let a = &self.auth;
        let missing = |what: &str| CloudConfigError(format!("{src}: {what} is not set"));
        let auth_type = match self.auth_type.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => t.to_ascii_lowercase(),
            _ if a.password.is_none() && a.application_credential_secret.is_some() => {
                "v3applicationcredential".into()
            }
            _ if a.password.is_none() && a.token.is_some() => "v3token".into(),
            _ => "password".into(),
        };
        match auth_type.as_str() {
            "password" | "v3password" => {
                let password = a.password.clone().ok_or_else(|| missing("password (OS_PASSWORD)"))?;
                let user =
                    self.user().ok_or_else(|| missing("username or user_id (OS_USERNAME / OS_USER_ID)"))?;
                Ok(Credential::Password { user, password: Secret::new(password) })
            }
            "v3applicationcredential" | "applicationcredential" | "application_credential" => {
                let secret = a.application_credential_secret.clone().ok_or_else(|| {
                    missing("application_credential_secret (OS_APPLICATION_CREDENTIAL_SECRET)")
                })?;
                let credential = match (&a.application_credential_id, &a.application_credential_name) {
                    (Some(id), _) => AppCredRef::Id(id.clone()),
                    (None, Some(name)) => AppCredRef::Name {
                        name: name.clone(),
                        user: self.user().ok_or_else(|| {
                            missing("username or user_id (an application credential named by name needs its user)")
                        })?,
                    },
                    (None, None) => {
                        return Err(missing(
                            "application_credential_id or application_credential_name \
                             (OS_APPLICATION_CREDENTIAL_ID / OS_APPLICATION_CREDENTIAL_NAME)",
                        ));
                    }
                };
                Ok(Credential::ApplicationCredential { credential, secret: Secret::new(secret) })
            }
            "v3token" | "token" => {
                let token = a.token.clone().ok_or_else(|| missing("token (OS_TOKEN)"))?;
                Ok(Credential::Token { token: Secret::new(token) })
            }
            other => Err(CloudConfigError(format!(
                "{src}: auth_type {other:?} is not supported (password, v3applicationcredential, v3token)"
            ))),
        }
    }

    /// A domain given once for both (domain_*, OS_DEFAULT_DOMAIN_*), else Keystone's default.
    fn shared_domain(&self) -> DomainRef {
        match (&self.auth.domain_id, &self.auth.domain_name) {
            (Some(id), _) => DomainRef::Id(id.clone()),
            (None, Some(name)) => DomainRef::Name(name.clone()),
            (None, None) => DomainRef::Id("default".into()),
        }
    }

    fn domain(&self, id: &Option<String>, name: &Option<String>) -> DomainRef {
        match (id, name) {
            (Some(id), _) => DomainRef::Id(id.clone()),
            (None, Some(name)) => DomainRef::Name(name.clone()),
            (None, None) => self.shared_domain(),
        }
    }

    fn user(&self) -> Option<UserRef> {
        let a = &self.auth;
        match (&a.user_id, &a.username) {
            (Some(id), _) => Some(UserRef::Id(id.clone())),
            (None, Some(name)) => Some(UserRef::Name {
                name: name.clone(),
                domain: self.domain(&a.user_domain_id, &a.user_domain_name),
            }),
            (None, None) => None,
        }
    }

    fn finish(self) -> Result<CloudConfig, CloudConfigError> {
        let src = &self.source;
        let missing = |what: &str| CloudConfigError(format!("{src}: {what} is not set"));
        let auth_url = self.auth.auth_url.clone().ok_or_else(|| missing("auth_url (OS_AUTH_URL)"))?;
        if !(auth_url.starts_with("http://") || auth_url.starts_with("https://")) {
            return Err(CloudConfigError(format!("{src}: auth_url {auth_url:?} is not an http(s) URL")));
        }
        let credential = self.credential()?;
        let a = &self.auth;
        let default_project = match (
            a.project_id.clone().or(a.tenant_id.clone()),
            a.project_name.clone().or(a.tenant_name.clone()),
        ) {
            (Some(id), _) => Some(ProjectRef::Id(id)),
            (None, Some(name)) => Some(ProjectRef::Name {
                name,
                domain: self.domain(&a.project_domain_id, &a.project_domain_name),
            }),
            (None, None) => None,
        };
        if matches!(credential, Credential::ApplicationCredential { .. }) && default_project.is_some() {
            // Keystone answers 401 "Application credentials cannot request a scope."
            return Err(CloudConfigError(format!(
                "{src}: an application credential carries its own project; remove project_id / project_name \
                 (OS_PROJECT_ID / OS_PROJECT_NAME)"
            )));
        }
        let interface = match &self.interface {
            Some(v) => Interface::parse("interface (OS_INTERFACE)", v)?,
            None => Interface::Public,
        };
        let mut regions = self.regions.clone();
        let region = self.region.clone().filter(|r| !r.is_empty());
        if let Some(r) = &region
            && !regions.contains(r)
        {
            regions.insert(0, r.clone());
        }
        Ok(CloudConfig {
            cloud_name: self.cloud_name,
            auth_url: normalise_auth_url(&auth_url),
            credential,
            project_credentials: BTreeMap::new(),
            default_project,
            region,
            regions,
            interface,
            cacert: self.cacert.map(PathBuf::from),
        })
    }
}

/// Keystone's v3 root: `http://h:5000` and `http://h:5000/v2.0` both become `http://h:5000/v3`.
pub fn normalise_auth_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.ends_with("/v3") {
        return url.to_string();
    }
    let base = url.strip_suffix("/v2.0").unwrap_or(url);
    format!("{base}/v3")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(cfg: &CloudConfig) -> &str {
        match &cfg.credential {
            Credential::Password { password, .. } => password.expose(),
            other => panic!("not a password: {other:?}"),
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("prov-clouds-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn nothing_configured_means_none() {
        assert!(CloudConfig::from_vars(&vars(&[("HOME", "/nonexistent")])).unwrap().is_none());
    }

    #[test]
    fn os_variables_alone() {
        let cfg = CloudConfig::from_vars(&vars(&[
            ("OS_AUTH_URL", "https://keystone.example:5000/"),
            ("OS_USERNAME", "provisioner"),
            ("OS_PASSWORD", "hunter2"),
            ("OS_USER_DOMAIN_NAME", "Service"),
            ("OS_PROJECT_NAME", "ops"),
            ("OS_PROJECT_DOMAIN_ID", "default"),
            ("OS_REGION_NAME", "RegionTwo"),
            ("OS_INTERFACE", "internal"),
            ("OS_CACERT", "/etc/ssl/cloud-ca.pem"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(cfg.auth_url, "https://keystone.example:5000/v3");
        assert_eq!(
            cfg.credential,
            Credential::Password {
                user: UserRef::Name { name: "provisioner".into(), domain: DomainRef::Name("Service".into()) },
                password: Secret::new("hunter2"),
            }
        );
        assert_eq!(
            cfg.default_project,
            Some(ProjectRef::Name { name: "ops".into(), domain: DomainRef::Id("default".into()) })
        );
        assert_eq!(cfg.region.as_deref(), Some("RegionTwo"));
        assert_eq!(cfg.interface, Interface::Internal);
        assert_eq!(cfg.cacert, Some(PathBuf::from("/etc/ssl/cloud-ca.pem")));
        assert!(!format!("{cfg:?}").contains("hunter2"), "password in Debug output");
        assert_eq!(cfg.regions, vec!["RegionTwo".to_string()]);
    }

    #[test]
    fn os_variables_defaults_and_ids() {
        let cfg = CloudConfig::from_vars(&vars(&[
            ("OS_AUTH_URL", "http://k:5000/v2.0"),
            ("OS_USER_ID", "u-1"),
            ("OS_PASSWORD", "p"),
            ("OS_PROJECT_ID", "p-1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(cfg.auth_url, "http://k:5000/v3");
        assert_eq!(
            cfg.credential,
            Credential::Password { user: UserRef::Id("u-1".into()), password: Secret::new("p") }
        );
        assert_eq!(cfg.default_project, Some(ProjectRef::Id("p-1".into())));
        assert_eq!(cfg.interface, Interface::Public);
        assert_eq!(cfg.region, None);
        let cfg = CloudConfig::from_vars(&vars(&[
            ("OS_AUTH_URL", "http://k:5000/v3"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "p"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            cfg.credential,
            Credential::Password {
                user: UserRef::Name { name: "u".into(), domain: DomainRef::Id("default".into()) },
                password: Secret::new("p"),
            }
        );
        assert_eq!(cfg.default_project, None);
    }

    #[test]
    fn incomplete_configuration_names_what_is_missing() {
        let e = CloudConfig::from_vars(&vars(&[("OS_AUTH_URL", "http://k:5000/v3"), ("OS_USERNAME", "u")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("OS_PASSWORD"), "{e}");
        let e = CloudConfig::from_vars(&vars(&[("OS_AUTH_URL", "http://k/v3"), ("OS_PASSWORD", "sekrit")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("OS_USERNAME") && !e.contains("sekrit"), "{e}");
        let e = CloudConfig::from_vars(&vars(&[
            ("OS_AUTH_URL", "http://k/v3"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "p"),
            ("OS_INTERFACE", "backdoor"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("OS_INTERFACE"), "{e}");
    }

    const CLOUDS_YAML: &str = r#"
clouds:
  os-tenant:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: os_tenant_user
      password: tenant_pw
      project_name: os_tenant_project
      user_domain_name: os_tenant_domain
      project_domain_name: os_tenant_domain
    region_name: RegionOne
    interface: public
    identity_api_version: 3
  by-id:
    auth_type: password
    auth:
      auth_url: https://id.example/
      user_id: 9a8b
      project_id: 77c1
      domain_id: dom-1
    regions:
      - name: North
      - South
  insecure:
    auth: {auth_url: "https://x/v3", username: a, password: b}
    verify: false
"#;

    #[test]
    fn clouds_yaml_via_os_client_config_file() {
        let dir = temp_dir();
        let file = dir.join("clouds.yaml");
        std::fs::write(&file, CLOUDS_YAML).unwrap();
        let base = [("OS_CLIENT_CONFIG_FILE", file.to_str().unwrap()), ("HOME", "/nonexistent")];

        let mut v = vars(&base);
        v.insert("OS_CLOUD".into(), "os-tenant".into());
        let cfg = CloudConfig::from_vars(&v).unwrap().unwrap();
        assert_eq!(cfg.cloud_name.as_deref(), Some("os-tenant"));
        assert_eq!(cfg.auth_url, "http://127.0.0.1:5000/v3");
        assert_eq!(
            cfg.credential,
            Credential::Password {
                user: UserRef::Name {
                    name: "os_tenant_user".into(),
                    domain: DomainRef::Name("os_tenant_domain".into())
                },
                password: Secret::new("tenant_pw"),
            }
        );
        assert_eq!(cfg.region.as_deref(), Some("RegionOne"));

        // OS_* variables override the entry, like the openstack CLI.
        v.insert("OS_REGION_NAME".into(), "RegionX".into());
        v.insert("OS_PASSWORD".into(), "from-env".into());
        let cfg = CloudConfig::from_vars(&v).unwrap().unwrap();
        assert_eq!(cfg.region.as_deref(), Some("RegionX"));
        assert_eq!(password(&cfg), "from-env");

        // The password from secure.yaml, the first region of `regions`, one domain for both.
        std::fs::write(dir.join("secure.yaml"), "clouds:\n  by-id:\n    auth:\n      password: s3cure\n")
            .unwrap();
        let mut v = vars(&base);
        v.insert("OS_CLOUD".into(), "by-id".into());
        let cfg = CloudConfig::from_vars(&v).unwrap().unwrap();
        assert_eq!(
            cfg.credential,
            Credential::Password { user: UserRef::Id("9a8b".into()), password: Secret::new("s3cure") }
        );
        assert_eq!(cfg.regions, vec!["North".to_string(), "South".to_string()]);
        assert_eq!(cfg.default_project, Some(ProjectRef::Id("77c1".into())));
        assert_eq!(cfg.region.as_deref(), Some("North"));
        assert_eq!(cfg.auth_url, "https://id.example/v3");

        v.insert("OS_CLOUD".into(), "insecure".into());
        let e = CloudConfig::from_vars(&v).unwrap_err().to_string();
        assert!(e.contains("verify"), "{e}");
        v.insert("OS_CLOUD".into(), "nope".into());
        let e = CloudConfig::from_vars(&v).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("os-tenant"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn clouds_yaml_in_xdg_config_home_and_missing_file() {
        let dir = temp_dir();
        std::fs::create_dir_all(dir.join("openstack")).unwrap();
        std::fs::write(dir.join("openstack/clouds.yaml"), CLOUDS_YAML).unwrap();
        let v = vars(&[("OS_CLOUD", "os-tenant"), ("XDG_CONFIG_HOME", dir.to_str().unwrap())]);
        let cfg = CloudConfig::from_vars(&v).unwrap().unwrap();
        assert_eq!(password(&cfg), "tenant_pw");

        let v = vars(&[("OS_CLOUD", "os-tenant"), ("OS_CLIENT_CONFIG_FILE", "/nonexistent/c.yaml")]);
        // Falls through the search path; only fails if none of the standard files exists.
        if !Path::new("clouds.yaml").exists() && !Path::new("/etc/openstack/clouds.yaml").exists() {
            let e = CloudConfig::from_vars(&v).unwrap_err().to_string();
            assert!(e.contains("no clouds.yaml"), "{e}");
        }
        std::fs::write(dir.join("openstack/clouds.yaml"), "clouds: [not, a, map]").unwrap();
        let v = vars(&[("OS_CLOUD", "os-tenant"), ("XDG_CONFIG_HOME", dir.to_str().unwrap())]);
        let e = CloudConfig::from_vars(&v).unwrap_err().to_string();
        assert!(e.contains("clouds.yaml"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn application_credential_and_token_from_os_variables() {
        let base = [("OS_AUTH_URL", "http://k:5000/v3")];
        let with = |extra: &[(&str, &str)]| {
            let mut v = vars(&base);
            v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            CloudConfig::from_vars(&v)
        };
        let cfg = with(&[
            ("OS_AUTH_TYPE", "v3applicationcredential"),
            ("OS_APPLICATION_CREDENTIAL_ID", "ac-1"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "very-secret"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            cfg.credential,
            Credential::ApplicationCredential {
                credential: AppCredRef::Id("ac-1".into()),
                secret: Secret::new("very-secret")
            }
        );
        assert!(!format!("{cfg:?}").contains("very-secret"), "secret in Debug output");
        // Inferred from the secret; by name it needs its user.
        let cfg = with(&[
            ("OS_APPLICATION_CREDENTIAL_NAME", "prov"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "s"),
            ("OS_USERNAME", "svc"),
            ("OS_USER_DOMAIN_NAME", "Service"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            cfg.credential,
            Credential::ApplicationCredential {
                credential: AppCredRef::Name {
                    name: "prov".into(),
                    user: UserRef::Name { name: "svc".into(), domain: DomainRef::Name("Service".into()) }
                },
                secret: Secret::new("s")
            }
        );
        let e =
            with(&[("OS_APPLICATION_CREDENTIAL_NAME", "prov"), ("OS_APPLICATION_CREDENTIAL_SECRET", "s")])
                .unwrap_err()
                .to_string();
        assert!(e.contains("username") && !e.contains("\"s\""), "{e}");
        // A project next to an application credential is Keystone's 401: refused up front.
        let e = with(&[
            ("OS_APPLICATION_CREDENTIAL_ID", "ac-1"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "s"),
            ("OS_PROJECT_NAME", "demo"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("OS_PROJECT_NAME"), "{e}");
        let e = with(&[("OS_AUTH_TYPE", "v3applicationcredential"), ("OS_APPLICATION_CREDENTIAL_ID", "a")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("OS_APPLICATION_CREDENTIAL_SECRET"), "{e}");

        let cfg = with(&[("OS_TOKEN", "gAAAA-tok"), ("OS_PROJECT_ID", "p-1")]).unwrap().unwrap();
        assert_eq!(cfg.credential, Credential::Token { token: Secret::new("gAAAA-tok") });
        assert!(!format!("{cfg:?}").contains("gAAAA-tok"));
        let e = with(&[("OS_AUTH_TYPE", "v3token")]).unwrap_err().to_string();
        assert!(e.contains("OS_TOKEN"), "{e}");
        let e = with(&[("OS_AUTH_TYPE", "v3oidcpassword"), ("OS_PASSWORD", "p")]).unwrap_err().to_string();
        assert!(e.contains("v3oidcpassword") && e.contains("v3applicationcredential"), "{e}");
    }

    #[test]
    fn clouds_yaml_per_project_entries_and_regions() {
        let dir = temp_dir();
        let file = dir.join("clouds.yaml");
        std::fs::write(
            &file,
            r#"
clouds:
  prov:
    auth_type: password
    auth: {auth_url: "http://k:5000", username: svc, password: pw, project_name: service}
    regions: [RegionOne, RegionTwo]
  prov/aaaa:
    auth_type: v3applicationcredential
    auth: {auth_url: "http://k:5000/v3", application_credential_id: ac-a}
  prov/bbbb:
    auth:
      application_credential_name: for-b
      application_credential_secret: sb
      user_id: u-b
  other/cccc:
    auth: {auth_url: "http://k:5000/v3", token: t}
"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("secure.yaml"),
            "clouds:\n  prov/aaaa:\n    auth:\n      application_credential_secret: sa\n",
        )
        .unwrap();
        let v =
            vars(&[("OS_CLOUD", "prov"), ("OS_CLIENT_CONFIG_FILE", file.to_str().unwrap()), ("HOME", "/x")]);
        let cfg = CloudConfig::from_vars(&v).unwrap().unwrap();
        assert_eq!(cfg.region.as_deref(), Some("RegionOne"));
        assert_eq!(cfg.regions, vec!["RegionOne".to_string(), "RegionTwo".to_string()]);
        assert_eq!(cfg.project_credentials.keys().collect::<Vec<_>>(), vec!["aaaa", "bbbb"]);
        assert_eq!(
            cfg.project_credentials["aaaa"],
            Credential::ApplicationCredential {
                credential: AppCredRef::Id("ac-a".into()),
                secret: Secret::new("sa")
            }
        );
        assert_eq!(
            cfg.project_credentials["bbbb"],
            Credential::ApplicationCredential {
                credential: AppCredRef::Name { name: "for-b".into(), user: UserRef::Id("u-b".into()) },
                secret: Secret::new("sb")
            }
        );
        assert!(!format!("{cfg:?}").contains("\"sa\""));
        std::fs::write(
            &file,
            "clouds:\n  prov:\n    auth: {auth_url: \"http://k/v3\", username: a, password: b}\n  prov/x:\n    auth: {auth_url: \"http://elsewhere/v3\", token: t}\n",
        )
        .unwrap();
        let e = CloudConfig::from_vars(&v).unwrap_err().to_string();
        assert!(e.contains("prov/x") && e.contains("one Keystone"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
