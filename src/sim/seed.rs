//! Seed data: what the simulated cloud holds at start (and after a reset).
//!
//! The built-in default ([`DEFAULT_SEED`], YAML) is documented in docs/simulator.md; `provisioner
//! sim --seed FILE` replaces it with a file of the same shape (YAML or JSON). Ids are fixed so
//! that examples, tests and docs can name them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The demo tenant project (the worker's examples use it).
pub const DEMO_PROJECT_ID: &str = "2a7dad41a028167a2c64e6bc150fb6cd";
/// The small-quota tenant project.
pub const ACME_PROJECT_ID: &str = "6c1e5f0b2d8a4c3e9f7a1b2c3d4e5f60";
/// The cloud admin's project.
pub const ADMIN_PROJECT_ID: &str = "0b5ac8d7e1f24a6b9c3d2e1f0a9b8c7d";
/// The service user's own project, where `provisioner` holds `admin` (for tenant onboarding:
/// Keystone projects, users, role assignments and quotas need it).
pub const SERVICE_PROJECT_ID: &str = "8d2f0c4e6a1b4e3f9c7d5b3a1e0f2c4d";

/// The built-in seed.
pub const DEFAULT_SEED: &str = r#"
domains:
  - {id: default, name: Default}
roles:
  - {id: 7a1f3d0e5b2c4a69b8e7d6c5f4a3b2c1, name: admin}
  - {id: 9e8d7c6b5a4f43e2d1c0b9a8f7e6d5c4, name: member}
  - {id: 3c2b1a0f9e8d47c6b5a4f3e2d1c0b9a8, name: reader}
  - {id: 5f4e3d2c1b0a49f8e7d6c5b4a3f2e1d0, name: manager}
  - {id: 1d2c3b4a5f6e47d8c9b0a1f2e3d4c5b6, name: service}
projects:
  - id: 0b5ac8d7e1f24a6b9c3d2e1f0a9b8c7d
    name: admin
    domain_id: default
    quotas: {instances: 10, cores: 20, ram: 51200, ports: 500, volumes: 10, gigabytes: 1000}
  - id: 2a7dad41a028167a2c64e6bc150fb6cd
    name: demo
    domain_id: default
    quotas: {instances: 10000, cores: 40000, ram: 81920000, ports: 10000, volumes: 10000, gigabytes: 100000}
  - id: 6c1e5f0b2d8a4c3e9f7a1b2c3d4e5f60
    name: acme
    domain_id: default
    quotas: {instances: 2, cores: 8, ram: 16384, ports: 10, volumes: 2, gigabytes: 20}
  - id: 8d2f0c4e6a1b4e3f9c7d5b3a1e0f2c4d
    name: service
    domain_id: default
    description: The provisioner's own project (admin calls are scoped to it)
users:
  - id: a0d6f1b2c3e44d5f8a9b0c1d2e3f4a5b
    name: admin
    password: admin
    domain_id: default
    roles: {admin: [admin, member, reader]}
  - id: c5d3e2f1a0b94c8d7e6f5a4b3c2d1e0f
    name: provisioner
    password: provisioner
    domain_id: default
    roles: {demo: [member, reader], acme: [member, reader], service: [admin]}
images:
  - {id: 9f1c2a3b-4d5e-4f60-8a71-b2c3d4e5f601, name: cirros-0.6.2, status: active, disk_format: qcow2, size: 21430272, min_disk: 1}
  - {id: 1e2d3c4b-5a69-4788-97a6-b5c4d3e2f102, name: ubuntu-24.04, status: active, disk_format: qcow2, size: 597688320, min_disk: 3, min_ram: 512}
  - {id: 7b8a9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c03, name: fedora-41-uploading, status: queued, disk_format: qcow2}
flavors:
  - {id: "1", name: m1.tiny, vcpus: 1, ram: 512, disk: 1}
  - {id: "2", name: m1.small, vcpus: 1, ram: 2048, disk: 20}
  - {id: "4", name: m1.large, vcpus: 4, ram: 8192, disk: 80}
networks:
  - id: 5e0c7f2a-8b3d-4c1e-9f6a-2d7b8c9e0f14
    name: private
    shared: true
    project_id: 0b5ac8d7e1f24a6b9c3d2e1f0a9b8c7d
    subnets:
      - {id: 3d4e5f60-7182-4a93-b4c5-d6e7f8091a25, name: private-subnet, cidr: 10.0.0.0/16, gateway_ip: 10.0.0.1}
  - id: e7f8a9b0-c1d2-4e3f-8a4b-5c6d7e8f9a01
    name: public
    external: true
    project_id: 0b5ac8d7e1f24a6b9c3d2e1f0a9b8c7d
    subnets:
      - {id: f1e2d3c4-b5a6-4978-8a69-5b4c3d2e1f02, name: public-subnet, cidr: 203.0.113.0/24, gateway_ip: 203.0.113.1}
volume_types:
  - {id: 4b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c36, name: standard, is_default: true}
  - {id: 8c9d0e1f-2a3b-4c4d-8e5f-6a7b8c9d0e47, name: ssd}
availability_zones:
  - {name: nova, host: sim-compute-1}
  - {name: az2, host: sim-compute-2}
"#;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seed {
    #[serde(default)]
    pub domains: Vec<SeedDomain>,
    /// Keystone's bootstrap roles when a seed lists none.
    #[serde(default = "bootstrap_roles")]
    pub roles: Vec<SeedRole>,
    #[serde(default)]
    pub projects: Vec<SeedProject>,
    #[serde(default)]
    pub users: Vec<SeedUser>,
    #[serde(default)]
    pub images: Vec<SeedImage>,
    #[serde(default)]
    pub flavors: Vec<SeedFlavor>,
    #[serde(default)]
    pub networks: Vec<SeedNetwork>,
    #[serde(default)]
    pub volume_types: Vec<SeedVolumeType>,
    /// Nova keypairs (by name) that every seeded user holds, each with a synthetic ed25519 key
    /// (keypairs belong to users; `POST /os-keypairs` adds more).
    #[serde(default = "default_keypairs")]
    pub keypairs: Vec<String>,
    /// Nova's availability zones, one compute host each, in scheduling order (the first is
    /// where a server goes that asks for none). A seed without them has Nova's default `nova`.
    #[serde(default = "default_zones")]
    pub availability_zones: Vec<SeedZone>,
}

fn default_keypairs() -> Vec<String> {
    vec!["ops-key".to_string()]
}

fn default_zones() -> Vec<SeedZone> {
    vec![SeedZone { name: "nova".into(), host: "sim-compute-1".into(), available: true }]
}

/// A Nova availability zone (an aggregate with one compute host). One that is not `available`
/// (its compute service down) is listed so, and refused to a server create, as Nova does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedZone {
    pub name: String,
    pub host: String,
    #[serde(default = "yes")]
    pub available: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedDomain {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedRole {
    pub id: String,
    pub name: String,
}

/// The roles `keystone-manage bootstrap` creates (ids as in [`DEFAULT_SEED`]).
fn bootstrap_roles() -> Vec<SeedRole> {
    [
        ("7a1f3d0e5b2c4a69b8e7d6c5f4a3b2c1", "admin"),
        ("9e8d7c6b5a4f43e2d1c0b9a8f7e6d5c4", "member"),
        ("3c2b1a0f9e8d47c6b5a4f3e2d1c0b9a8", "reader"),
        ("5f4e3d2c1b0a49f8e7d6c5b4a3f2e1d0", "manager"),
        ("1d2c3b4a5f6e47d8c9b0a1f2e3d4c5b6", "service"),
    ]
    .into_iter()
    .map(|(id, name)| SeedRole { id: id.into(), name: name.into() })
    .collect()
}

/// Per-project limits: Nova instances, cores, ram (MiB); Neutron ports, networks and floating
/// IPs; Cinder volumes and gigabytes. `-1` means unlimited. A key a seed leaves out has the
/// services' default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Quotas {
    pub instances: i64,
    pub cores: i64,
    pub ram: i64,
    pub ports: i64,
    pub volumes: i64,
    pub gigabytes: i64,
    /// Neutron `network` (shown and settable; the simulator has no network create to enforce it).
    pub networks: i64,
    /// Neutron `floatingip`.
    pub floating_ips: i64,
}

impl Default for Quotas {
    /// The services' own defaults.
    fn default() -> Self {
        Quotas {
            instances: 10,
            cores: 20,
            ram: 51200,
            ports: 500,
            volumes: 10,
            gigabytes: 1000,
            networks: 100,
            floating_ips: 50,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedProject {
    pub id: String,
    pub name: String,
    #[serde(default = "default_domain")]
    pub domain_id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub quotas: Quotas,
}

fn default_domain() -> String {
    "default".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedUser {
    pub id: String,
    pub name: String,
    pub password: String,
    #[serde(default = "default_domain")]
    pub domain_id: String,
    /// Project name → role names.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedImage {
    pub id: String,
    pub name: String,
    #[serde(default = "active")]
    pub status: String,
    #[serde(default = "public")]
    pub visibility: String,
    #[serde(default)]
    pub disk_format: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub min_disk: u64,
    #[serde(default)]
    pub min_ram: u64,
}

fn active() -> String {
    "active".into()
}
fn public() -> String {
    "public".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedFlavor {
    pub id: String,
    pub name: String,
    pub vcpus: u32,
    pub ram: u64,
    pub disk: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedNetwork {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub shared: bool,
    /// `router:external`: floating IPs are allocated from it (every project sees it).
    #[serde(default)]
    pub external: bool,
    /// The owner (defaults to the first project).
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub subnets: Vec<SeedSubnet>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedSubnet {
    pub id: String,
    pub name: String,
    /// IPv4 only, e.g. `10.0.0.0/16`.
    pub cidr: String,
    #[serde(default)]
    pub gateway_ip: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedVolumeType {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub is_default: bool,
}

/// A seed that could not be read or is inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read seed file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("seed is not valid YAML/JSON: {0}")]
    Parse(String),
    #[error("seed is inconsistent: {0}")]
    Invalid(String),
}

impl Seed {
    /// The built-in seed.
    pub fn builtin() -> Seed {
        // The constant is tested to parse; this cannot fail at runtime.
        Seed::parse(DEFAULT_SEED).unwrap_or_else(|e| panic!("built-in seed: {e}"))
    }

    pub fn parse(text: &str) -> Result<Seed, SeedError> {
        let seed: Seed = serde_saphyr::from_str(text).map_err(|e| SeedError::Parse(e.to_string()))?;
        seed.validate()?;
        Ok(seed)
    }

    /// The seed of another region's services: the same images, flavors, networks and volume
    /// types by name (flavor ids too, as operators keep them alike), but the images, networks,
    /// subnets and volume types with ids of their own (each region's Glance, Neutron and Cinder
    /// make their own), derived from the region's name so that they are fixed too.
    pub fn for_region(&self, region: &str) -> Seed {
        let id = |id: &str| {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(format!("{region}/{id}").as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
        };
        let mut seed = self.clone();
        for i in &mut seed.images {
            i.id = id(&i.id);
        }
        for n in &mut seed.networks {
            n.id = id(&n.id);
            for s in &mut n.subnets {
                s.id = id(&s.id);
            }
        }
        for t in &mut seed.volume_types {
            t.id = id(&t.id);
        }
        seed
    }

    pub fn from_file(path: &std::path::Path) -> Result<Seed, SeedError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| SeedError::Read { path: path.display().to_string(), source })?;
        Seed::parse(&text)
    }

    fn validate(&self) -> Result<(), SeedError> {
        for u in &self.users {
            for (p, roles) in &u.roles {
                if !self.projects.iter().any(|x| &x.name == p) {
                    return Err(SeedError::Invalid(format!(
                        "user {} has roles on unknown project {p}",
                        u.name
                    )));
                }
                if let Some(r) = roles.iter().find(|r| !self.roles.iter().any(|x| &x.name == *r)) {
                    return Err(SeedError::Invalid(format!("user {} has unknown role {r}", u.name)));
                }
            }
        }
        for n in &self.networks {
            for s in &n.subnets {
                crate::sim::state::parse_cidr(&s.cidr).ok_or_else(|| {
                    SeedError::Invalid(format!("subnet {}: bad IPv4 cidr {}", s.name, s.cidr))
                })?;
            }
        }
        if self.availability_zones.is_empty() {
            return Err(SeedError::Invalid("no availability zones (Nova has at least `nova`)".into()));
        }
        if self.projects.is_empty() {
            return Err(SeedError::Invalid("no projects".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_seed_parses_with_the_documented_ids() {
        let s = Seed::builtin();
        let demo = s.projects.iter().find(|p| p.name == "demo").unwrap();
        assert_eq!(demo.id, DEMO_PROJECT_ID);
        assert_eq!(demo.quotas.instances, 10000);
        let acme = s.projects.iter().find(|p| p.name == "acme").unwrap();
        assert_eq!((acme.id.as_str(), acme.quotas.instances, acme.quotas.volumes), (ACME_PROJECT_ID, 2, 2));
        assert!(s.images.iter().any(|i| i.status != "active"));
        assert_eq!(s.flavors.len(), 3);
        let zones: Vec<(&str, &str)> =
            s.availability_zones.iter().map(|z| (z.name.as_str(), z.host.as_str())).collect();
        assert_eq!(zones, [("nova", "sim-compute-1"), ("az2", "sim-compute-2")]);
        assert!(Seed::parse("projects: []").is_err());
        let service = s.projects.iter().find(|p| p.name == "service").unwrap();
        assert_eq!(service.id, SERVICE_PROJECT_ID);
        let provisioner = s.users.iter().find(|u| u.name == "provisioner").unwrap();
        assert_eq!(provisioner.roles["service"], ["admin"]);
        assert_eq!(demo.quotas.networks, 100, "keys a seed leaves out have the services' defaults");
        let minimal = Seed::parse("projects: [{id: p, name: solo}]\nusers: [{id: u, name: a, password: b, roles: {solo: [member]}}]").unwrap();
        assert_eq!(minimal.roles.len(), 5, "a seed without roles has Keystone's bootstrap roles");
        assert!(Seed::parse("projects: [{id: p, name: solo}]\nusers: [{id: u, name: a, password: b, roles: {solo: [membr]}}]").is_err());
    }

    #[test]
    fn another_region_has_the_same_names_with_ids_of_its_own() {
        let one = Seed::builtin();
        let two = one.for_region("RegionTwo");
        for (a, b) in one.networks.iter().zip(&two.networks) {
            assert_eq!(a.name, b.name);
            assert_ne!(a.id, b.id);
            assert!(uuid::Uuid::parse_str(&b.id).is_ok(), "{}", b.id);
            assert_ne!(a.subnets[0].id, b.subnets[0].id);
        }
        assert_eq!(two.networks[0].id, one.for_region("RegionTwo").networks[0].id, "fixed ids");
        assert!(one.images.iter().zip(&two.images).all(|(a, b)| a.name == b.name && a.id != b.id));
        assert_eq!(
            one.flavors.iter().map(|f| &f.id).collect::<Vec<_>>(),
            two.flavors.iter().map(|f| &f.id).collect::<Vec<_>>()
        );
        assert_eq!(one.projects.len(), two.projects.len());
    }
}
