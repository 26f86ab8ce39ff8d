//! The simulated cloud's state: every resource in maps behind one mutex, and the rules that
//! derive a resource's status from timestamps.
//!
//! Nothing ticks: a server's `BUILD` → `ACTIVE`, a volume's `creating` → `available` or
//! `reserved` → `attaching` → `in-use` are computed on each read from when they started and the
//! configured durations, so 100,000 servers cost nothing between requests. `updated` is the
//! later of the last explicit change and the last status transition that has happened, which
//! keeps Nova's `changes-since` honest. Quota usage is kept incrementally per project so a
//! create checks its quota in O(1).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::sim::seed::{Quotas, Seed, SeedRole};

/// How long things take in the simulated cloud.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    /// Mean time from server create to `ACTIVE` (or `ERROR`), milliseconds.
    pub boot_mean_ms: u64,
    /// Uniform jitter around the mean, ± milliseconds.
    pub boot_jitter_ms: u64,
    /// `creating` → `available`, milliseconds.
    pub volume_create_ms: u64,
    /// Attach: `reserved` → `attaching` → `in-use` takes this long in total, milliseconds.
    pub attach_ms: u64,
    /// Detach: `detaching` → `available`, milliseconds.
    pub detach_ms: u64,
    /// A server action (stop, start, suspend, resume, pause, unpause, shelve, unshelve,
    /// resize, confirmResize, revertResize) runs this long with its task state, milliseconds.
    pub action_ms: u64,
    /// A deleted server stays visible with task state `deleting` this long, milliseconds.
    pub delete_ms: u64,
    /// Token lifetime, seconds.
    pub token_lifetime_s: u64,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            boot_mean_ms: 3000,
            boot_jitter_ms: 1000,
            volume_create_ms: 1000,
            attach_ms: 1000,
            detach_ms: 500,
            action_ms: 1000,
            delete_ms: 1000,
            token_lifetime_s: 3600,
        }
    }
}

impl Timings {
    /// Timings for tests: everything settles in a few tens of milliseconds.
    pub fn fast() -> Timings {
        Timings {
            boot_mean_ms: 50,
            boot_jitter_ms: 10,
            volume_create_ms: 30,
            attach_ms: 30,
            detach_ms: 20,
            action_ms: 30,
            delete_ms: 20,
            token_lifetime_s: 3600,
        }
    }

    pub(crate) fn boot_duration(&self) -> Duration {
        let j = self.boot_jitter_ms as i64;
        let offset = if j > 0 { fastrand::i64(-j..=j) } else { 0 };
        Duration::from_millis((self.boot_mean_ms as i64 + offset).max(0) as u64)
    }
}

pub(crate) fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero())
}

/// Parses an IPv4 CIDR into (network address, prefix length).
pub fn parse_cidr(cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = cidr.split_once('/')?;
    let addr: Ipv4Addr = a.parse().ok()?;
    let prefix: u8 = p.parse().ok()?;
    (prefix <= 30).then_some((addr, prefix))
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn new_hex_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub user_id: String,
    pub project_id: Option<String>,
    pub roles: Vec<String>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub audit_id: String,
    pub methods: Vec<String>,
    /// The application credential the token was issued for (id, name, restricted).
    pub app_cred: Option<(String, String, bool)>,
}

/// An application credential (`POST /v3/users/{id}/application_credentials`).
#[derive(Debug, Clone)]
pub struct AppCredRec {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub user_id: String,
    pub project_id: String,
    /// Compared on authentication; shown only in the answer to the creation.
    pub secret: String,
    /// Role names it delegates.
    pub roles: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub unrestricted: bool,
}

impl TokenInfo {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }
}

#[derive(Debug, Clone)]
pub struct ProjectRec {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub description: String,
    pub enabled: bool,
    pub tags: Vec<String>,
    pub quotas: Quotas,
}

#[derive(Debug, Clone)]
pub struct DomainRec {
    pub id: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
}

#[derive(Debug, Clone)]
pub struct UserRec {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    /// Compared on authentication; no API shows it. `None`: the user cannot authenticate.
    pub password: Option<String>,
    pub enabled: bool,
    pub default_project_id: Option<String>,
    pub email: Option<String>,
    pub description: Option<String>,
}

/// What a project currently uses (kept incrementally).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub instances: i64,
    pub cores: i64,
    pub ram: i64,
    pub ports: i64,
    pub volumes: i64,
    pub gigabytes: i64,
    #[serde(default)]
    pub floating_ips: i64,
}

#[derive(Debug, Clone)]
pub struct SubnetRec {
    pub id: String,
    pub name: String,
    pub network_id: String,
    pub cidr: String,
    pub gateway_ip: Option<String>,
    pub pool_start: u32,
    pub pool_end: u32,
    pub next: u32,
    pub free: VecDeque<u32>,
    pub used: HashSet<u32>,
    pub project_id: String,
}

impl SubnetRec {
    /// Takes the next free address of the pool (`None` when exhausted).
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        // Fresh addresses first, then freed ones (Neutron does not hand an address straight back).
        while self.next <= self.pool_end {
            let a = self.next;
            self.next += 1;
            if self.used.insert(a) {
                return Some(Ipv4Addr::from(a));
            }
        }
        while let Some(a) = self.free.pop_front() {
            if self.used.insert(a) {
                return Some(Ipv4Addr::from(a));
            }
        }
        None
    }

    /// Takes a specific address; false when it is taken or outside the pool.
    pub fn take(&mut self, ip: Ipv4Addr) -> bool {
        let a = u32::from(ip);
        (self.pool_start..=self.pool_end).contains(&a) && self.used.insert(a)
    }

    pub fn release(&mut self, ip: &str) {
        if let Ok(ip) = ip.parse::<Ipv4Addr>() {
            let a = u32::from(ip);
            if self.used.remove(&a) {
                self.free.push_back(a);
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct NetworkRec {
    pub id: String,
    pub name: String,
    pub shared: bool,
    /// `router:external`.
    pub external: bool,
    pub project_id: String,
    pub subnets: Vec<String>,
    pub created: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct PortRec {
    pub seq: u64,
    pub id: String,
    pub name: String,
    pub description: String,
    pub network_id: String,
    pub project_id: String,
    pub mac: String,
    pub fixed_ips: Vec<(String, String)>,
    pub device_id: String,
    pub device_owner: String,
    pub host: String,
    pub tags: Vec<String>,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub revision: u64,
    pub admin_state_up: bool,
    /// Ids of the security groups applied to the port (the project's `default` unless the
    /// create named others).
    pub security_groups: Vec<String>,
}

/// A Neutron floating IP: an address of an external network's subnet, owned by a project,
/// mapped to a port's fixed IP while associated.
#[derive(Debug, Clone)]
pub struct FloatingIpRec {
    pub seq: u64,
    pub id: String,
    pub project_id: String,
    pub network_id: String,
    pub subnet_id: String,
    pub address: String,
    /// (port id, its fixed IP) while associated.
    pub port: Option<(String, String)>,
    pub description: String,
    pub tags: Vec<String>,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub revision: u64,
}

/// A Neutron security group of a project.
#[derive(Debug, Clone)]
pub struct SecurityGroupRec {
    pub seq: u64,
    pub id: String,
    pub name: String,
    pub description: String,
    pub project_id: String,
    pub stateful: bool,
    pub rules: Vec<RuleRec>,
    pub tags: Vec<String>,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub revision: u64,
}

/// One rule of a security group; `None` is Neutron's `null` (any).
#[derive(Debug, Clone)]
pub struct RuleRec {
    pub id: String,
    pub direction: &'static str,
    pub ethertype: &'static str,
    pub protocol: Option<String>,
    pub port_range_min: Option<u16>,
    pub port_range_max: Option<u16>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub created: DateTime<Utc>,
}

impl RuleRec {
    fn any(
        direction: &'static str,
        ethertype: &'static str,
        remote_group_id: Option<String>,
        now: DateTime<Utc>,
    ) -> RuleRec {
        RuleRec {
            id: new_id(),
            direction,
            ethertype,
            protocol: None,
            port_range_min: None,
            port_range_max: None,
            remote_ip_prefix: None,
            remote_group_id,
            created: now,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AttachRec {
    pub volume_id: String,
    pub attachment_id: String,
    pub bdm_uuid: String,
    pub device: String,
    pub tag: Option<String>,
    pub delete_on_termination: bool,
}

#[derive(Debug, Clone)]
pub struct ServerRec {
    pub seq: u64,
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub user_id: String,
    pub flavor_id: String,
    pub image_id: Option<String>,
    pub key_name: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub description: Option<String>,
    /// The zone it is placed in (its host's).
    pub availability_zone: String,
    /// The zone the create asked for (Nova's request spec: `pinned_availability_zone` from
    /// 2.96).
    pub requested_az: Option<String>,
    /// The create's scheduler hints, as given (shown from 2.100).
    pub scheduler_hints: Option<BTreeMap<String, serde_json::Value>>,
    /// Ports in NIC order, with whether Nova created them (then Nova deletes them too).
    pub ports: Vec<(String, bool)>,
    pub volumes: Vec<AttachRec>,
    pub created: DateTime<Utc>,
    /// When the boot finishes (`ACTIVE`, or `ERROR` when `fault` is set).
    pub boot_done: DateTime<Utc>,
    pub fault: Option<(u16, String)>,
    /// Stays in `BUILD` forever.
    pub stuck: bool,
    /// Last explicit change (metadata, tags, attachments, ...).
    pub modified: DateTime<Utc>,
    /// When the deletion finishes: until then the server shows task state `deleting`; after
    /// it the server is gone from every API except `changes-since` lists (and has no tags).
    pub deleted: Option<DateTime<Utc>>,
    /// What happened to it after the boot: power state, the action in progress, its history.
    pub life: Life,
}

/// A server's settled state after its boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Vm {
    #[default]
    Active,
    Stopped,
    Suspended,
    Paused,
    ShelvedOffloaded,
    /// Resized, waiting for confirmResize or revertResize (`VERIFY_RESIZE`).
    Resized,
}

impl Vm {
    pub fn status(self) -> &'static str {
        match self {
            Vm::Active => "ACTIVE",
            Vm::Stopped => "SHUTOFF",
            Vm::Suspended => "SUSPENDED",
            Vm::Paused => "PAUSED",
            Vm::ShelvedOffloaded => "SHELVED_OFFLOADED",
            Vm::Resized => "VERIFY_RESIZE",
        }
    }

    pub fn vm_state(self) -> &'static str {
        match self {
            Vm::Active => "active",
            Vm::Stopped => "stopped",
            Vm::Suspended => "suspended",
            Vm::Paused => "paused",
            Vm::ShelvedOffloaded => "shelved_offloaded",
            Vm::Resized => "resized",
        }
    }

    /// Nova's power state codes: 1 running, 3 paused, 4 shutdown, 7 suspended, 0 no state.
    pub fn power_state(self) -> u8 {
        match self {
            Vm::Active | Vm::Resized => 1,
            Vm::Stopped => 4,
            Vm::Suspended => 7,
            Vm::Paused => 3,
            Vm::ShelvedOffloaded => 0,
        }
    }
}

/// An action Nova accepted and is carrying out.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The instance action's name (`stop`, `resize`, ...).
    pub action: &'static str,
    /// The task state shown meanwhile (`powering-off`, `resize_prep`, ...), if any.
    pub task: Option<&'static str>,
    pub until: DateTime<Utc>,
    pub to: Vm,
    /// The flavor the server has once the action is done (resize, revert).
    pub flavor: Option<String>,
    /// The action fails: the server stays as it was and the instance action records this.
    pub error: Option<String>,
}

/// One entry of `os-instance-actions`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRec {
    pub action: String,
    pub request_id: String,
    pub user_id: String,
    pub start: DateTime<Utc>,
    pub finish: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Life {
    /// The settled state (after the boot, before `pending`).
    pub vm: Vm,
    /// When `vm` was last settled (it moves `updated`).
    pub since: Option<DateTime<Utc>>,
    pub pending: Option<Pending>,
    /// While `VERIFY_RESIZE`: the flavor before, and the state a revert or confirm returns to.
    pub resized_from: Option<(String, Vm)>,
    pub actions: Vec<ActionRec>,
}

/// A server's state at one instant, derived from its record.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerView {
    pub status: &'static str,
    pub vm_state: &'static str,
    pub task_state: Option<&'static str>,
    pub power_state: u8,
    pub updated: DateTime<Utc>,
    pub launched_at: Option<DateTime<Utc>>,
    pub fault: Option<(u16, String, DateTime<Utc>)>,
}

impl ServerRec {
    /// Deleted, and the deletion has finished.
    pub fn gone(&self, now: DateTime<Utc>) -> bool {
        self.deleted.is_some_and(|d| d <= now)
    }

    /// The tags as the API shows them: a deleted server has none (Nova drops them).
    pub fn live_tags(&self, now: DateTime<Utc>) -> &[String] {
        if self.gone(now) { &[] } else { &self.tags }
    }

    /// The flavor the server has at `now` (a resize switches it when it reaches `VERIFY_RESIZE`).
    pub fn flavor_at(&self, now: DateTime<Utc>) -> &str {
        match &self.life.pending {
            Some(p) if p.until <= now && p.error.is_none() => p.flavor.as_deref().unwrap_or(&self.flavor_id),
            _ => &self.flavor_id,
        }
    }

    /// The settled state at `now`, the task running, and when the state last changed.
    pub fn vm_at(&self, now: DateTime<Utc>) -> (Vm, Option<&'static str>, Option<DateTime<Utc>>) {
        match &self.life.pending {
            Some(p) if p.until <= now => {
                (if p.error.is_some() { self.life.vm } else { p.to }, None, Some(p.until))
            }
            Some(p) => (self.life.vm, p.task, self.life.since),
            None => (self.life.vm, None, self.life.since),
        }
    }

    /// The flavor whose vCPUs and RAM quota usage counts: the target of a resize in progress
    /// (usage moves when Nova accepts it), else the server's flavor.
    pub fn counted_flavor(&self) -> &str {
        match &self.life.pending {
            Some(p) if p.error.is_none() => p.flavor.as_deref().unwrap_or(&self.flavor_id),
            _ => &self.flavor_id,
        }
    }

    /// Applies an action that has finished: its new state and flavor, and its history entry.
    pub fn settle(&mut self, now: DateTime<Utc>) {
        let Some(p) = self.life.pending.take_if(|p| p.until <= now) else { return };
        if p.error.is_none() {
            self.life.vm = p.to;
            if let Some(f) = p.flavor {
                self.flavor_id = f;
            }
        }
        self.life.since = Some(p.until);
        if let Some(a) =
            self.life.actions.iter_mut().rev().find(|a| a.action == p.action && a.finish.is_none())
        {
            a.finish = Some(p.until);
            a.error = p.error;
        }
    }

    fn after_boot(&self, now: DateTime<Utc>, updated: DateTime<Utc>) -> ServerView {
        let (vm, task, since) = self.vm_at(now);
        let deleting = self.deleted.is_some();
        let mut updated = updated.max(since.unwrap_or(updated));
        if let Some(p) = &self.life.pending
            && let Some(a) = self.life.actions.iter().rev().find(|a| a.action == p.action)
        {
            updated = updated.max(a.start.min(now));
        }
        // Nova's status follows the task for these two (nova.api.openstack.common's state map).
        let status = match task {
            Some("resize_prep") => "RESIZE",
            Some("resize_reverting") => "REVERT_RESIZE",
            _ => vm.status(),
        };
        ServerView {
            status,
            vm_state: vm.vm_state(),
            task_state: if deleting { Some("deleting") } else { task },
            power_state: vm.power_state(),
            updated,
            launched_at: Some(self.boot_done),
            fault: None,
        }
    }

    pub fn view(&self, now: DateTime<Utc>) -> ServerView {
        if let Some(d) = self.deleted.filter(|d| *d <= now) {
            return ServerView {
                status: "DELETED",
                vm_state: "deleted",
                task_state: None,
                power_state: 0,
                updated: d,
                launched_at: None,
                fault: None,
            };
        }
        if self.stuck || now < self.boot_done {
            return ServerView {
                status: "BUILD",
                vm_state: "building",
                task_state: Some("spawning"),
                power_state: 0,
                updated: self.modified,
                launched_at: None,
                fault: None,
            };
        }
        let updated = self.modified.max(self.boot_done);
        if self.fault.is_none() {
            return self.after_boot(now, updated);
        }
        match &self.fault {
            Some((code, msg)) => ServerView {
                status: "ERROR",
                vm_state: "error",
                task_state: None,
                power_state: 0,
                updated,
                launched_at: None,
                fault: Some((*code, msg.clone(), self.boot_done)),
            },
            None => ServerView {
                status: "ACTIVE",
                vm_state: "active",
                task_state: None,
                power_state: 1,
                updated,
                launched_at: Some(self.boot_done),
                fault: None,
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct VolAttach {
    pub server_id: String,
    pub attachment_id: String,
    pub device: String,
    pub started: DateTime<Utc>,
    pub attaching_at: DateTime<Utc>,
    pub in_use_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct VolumeRec {
    pub seq: u64,
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub project_id: String,
    pub user_id: String,
    pub size: u64,
    pub volume_type: String,
    pub metadata: BTreeMap<String, String>,
    pub availability_zone: String,
    pub created: DateTime<Utc>,
    pub available_at: DateTime<Utc>,
    /// The volume ends in `error` instead of `available`.
    pub create_fault: bool,
    /// A status the volume is stuck in (overrides everything).
    pub stuck: Option<String>,
    pub attach: Option<VolAttach>,
    pub detached_until: Option<DateTime<Utc>>,
    pub modified: DateTime<Utc>,
    /// The image a volume was made from (id, name): bootable, with `volume_image_metadata`.
    pub image: Option<(String, String)>,
}

impl VolumeRec {
    pub fn status(&self, now: DateTime<Utc>) -> &str {
        if let Some(s) = &self.stuck {
            return s;
        }
        if now < self.available_at {
            return "creating";
        }
        if self.create_fault {
            return "error";
        }
        if let Some(a) = &self.attach {
            return if now < a.attaching_at {
                "reserved"
            } else if now < a.in_use_at {
                "attaching"
            } else {
                "in-use"
            };
        }
        match self.detached_until {
            Some(t) if now < t => "detaching",
            _ => "available",
        }
    }

    pub fn updated(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut t = self.modified;
        for p in [Some(self.available_at), self.attach.as_ref().map(|a| a.in_use_at), self.detached_until]
            .into_iter()
            .flatten()
        {
            if p <= now && p > t {
                t = p;
            }
        }
        t
    }
}

/// The whole simulated cloud.
#[derive(Debug)]
pub struct World {
    pub seed: Seed,
    pub timings: Timings,
    pub tokens: HashMap<String, TokenInfo>,
    pub domains: BTreeMap<String, DomainRec>,
    pub projects: BTreeMap<String, ProjectRec>,
    pub users: BTreeMap<String, UserRec>,
    pub app_creds: BTreeMap<String, AppCredRec>,
    pub roles: Vec<SeedRole>,
    /// Direct role assignments on projects: (project id, user id, role id).
    pub assignments: BTreeSet<(String, String, String)>,
    pub usage: HashMap<String, Usage>,
    pub networks: BTreeMap<String, NetworkRec>,
    pub subnets: BTreeMap<String, SubnetRec>,
    pub ports: HashMap<String, PortRec>,
    pub port_order: BTreeMap<u64, String>,
    pub servers: HashMap<String, ServerRec>,
    pub server_order: BTreeMap<u64, String>,
    pub volumes: HashMap<String, VolumeRec>,
    pub volume_order: BTreeMap<u64, String>,
    /// Nova keypairs by (user id, name): a user's, whatever the project.
    pub keypairs: BTreeMap<(String, String), crate::sim::keypairs::KeypairRec>,
    pub security_groups: BTreeMap<String, SecurityGroupRec>,
    pub floating_ips: BTreeMap<String, FloatingIpRec>,
    /// Nova server groups by id.
    pub server_groups: BTreeMap<String, crate::sim::placement::ServerGroupRec>,
    pub seq: u64,
    pub started: DateTime<Utc>,
}

impl World {
    pub fn new(seed: Seed, timings: Timings) -> World {
        let now = Utc::now();
        let mut w = World {
            seed: seed.clone(),
            timings,
            tokens: HashMap::new(),
            domains: BTreeMap::new(),
            projects: BTreeMap::new(),
            users: BTreeMap::new(),
            app_creds: BTreeMap::new(),
            roles: seed.roles.clone(),
            assignments: BTreeSet::new(),
            usage: HashMap::new(),
            networks: BTreeMap::new(),
            subnets: BTreeMap::new(),
            ports: HashMap::new(),
            port_order: BTreeMap::new(),
            servers: HashMap::new(),
            server_order: BTreeMap::new(),
            volumes: HashMap::new(),
            volume_order: BTreeMap::new(),
            keypairs: BTreeMap::new(),
            security_groups: BTreeMap::new(),
            floating_ips: BTreeMap::new(),
            server_groups: BTreeMap::new(),
            seq: 0,
            started: now,
        };
        for d in &seed.domains {
            w.domains.insert(
                d.id.clone(),
                DomainRec {
                    id: d.id.clone(),
                    name: d.name.clone(),
                    description: String::new(),
                    enabled: true,
                },
            );
        }
        for p in &seed.projects {
            w.projects.insert(
                p.id.clone(),
                ProjectRec {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    domain_id: p.domain_id.clone(),
                    description: p.description.clone(),
                    enabled: true,
                    tags: p.tags.clone(),
                    quotas: p.quotas,
                },
            );
        }
        for u in &seed.users {
            w.users.insert(
                u.id.clone(),
                UserRec {
                    id: u.id.clone(),
                    name: u.name.clone(),
                    domain_id: u.domain_id.clone(),
                    password: Some(u.password.clone()),
                    enabled: true,
                    default_project_id: None,
                    email: u.email.clone(),
                    description: None,
                },
            );
            for (project, roles) in &u.roles {
                let Some(pid) = seed.projects.iter().find(|p| &p.name == project).map(|p| p.id.clone())
                else {
                    continue;
                };
                for r in roles {
                    if let Some(role) = seed.roles.iter().find(|x| &x.name == r) {
                        w.assignments.insert((pid.clone(), u.id.clone(), role.id.clone()));
                    }
                }
            }
        }
        // The seed's keypairs, for every seeded user (a synthetic key each).
        for u in &seed.users {
            for name in &seed.keypairs {
                let key = crate::sim::keypairs::synthetic_key(name, &format!("{name}@sim"));
                w.add_keypair(&u.id, name, &key, now);
            }
        }
        let owner = seed.projects.first().map(|p| p.id.clone()).unwrap_or_default();
        for n in &seed.networks {
            let project_id = n.project_id.clone().unwrap_or_else(|| owner.clone());
            for s in &n.subnets {
                let Some((net, prefix)) = parse_cidr(&s.cidr) else { continue };
                let base = u32::from(net);
                let size = 1u32 << (32 - prefix);
                w.subnets.insert(
                    s.id.clone(),
                    SubnetRec {
                        id: s.id.clone(),
                        name: s.name.clone(),
                        network_id: n.id.clone(),
                        cidr: s.cidr.clone(),
                        gateway_ip: s.gateway_ip.clone(),
                        pool_start: base + 2,
                        pool_end: base + size - 2,
                        next: base + 2,
                        free: VecDeque::new(),
                        used: HashSet::new(),
                        project_id: project_id.clone(),
                    },
                );
            }
            w.networks.insert(
                n.id.clone(),
                NetworkRec {
                    id: n.id.clone(),
                    name: n.name.clone(),
                    shared: n.shared,
                    external: n.external,
                    project_id,
                    subnets: n.subnets.iter().map(|s| s.id.clone()).collect(),
                    created: now,
                },
            );
        }
        w
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn usage_mut(&mut self, project: &str) -> &mut Usage {
        self.usage.entry(project.to_string()).or_default()
    }

    pub fn usage_of(&self, project: &str) -> Usage {
        self.usage.get(project).copied().unwrap_or_default()
    }

    pub fn quotas_of(&self, project: &str) -> Quotas {
        self.projects.get(project).map(|p| p.quotas).unwrap_or_default()
    }

    /// A live server (not deleted, or still being deleted).
    pub fn server(&self, id: &str) -> Option<&ServerRec> {
        let now = Utc::now();
        self.servers.get(id).filter(|s| !s.gone(now))
    }

    pub fn server_mut(&mut self, id: &str) -> Option<&mut ServerRec> {
        let now = Utc::now();
        self.servers.get_mut(id).filter(|s| !s.gone(now))
    }

    /// A port's status: `ACTIVE` once the server it is bound to is `ACTIVE`, else `DOWN`.
    pub fn port_status(&self, p: &PortRec, now: DateTime<Utc>) -> &'static str {
        if p.device_id.is_empty() {
            return "DOWN";
        }
        match self.server(&p.device_id) {
            Some(s) if s.view(now).status == "ACTIVE" => "ACTIVE",
            _ => "DOWN",
        }
    }

    /// The project's `default` security group, created on first need as Neutron does (with
    /// Neutron's rules: all egress, and ingress from members of the group, for IPv4 and IPv6).
    pub fn default_security_group(&mut self, project_id: &str, now: DateTime<Utc>) -> String {
        if let Some(g) =
            self.security_groups.values().find(|g| g.project_id == project_id && g.name == "default")
        {
            return g.id.clone();
        }
        let id = new_id();
        let rules = vec![
            RuleRec::any("egress", "IPv4", None, now),
            RuleRec::any("egress", "IPv6", None, now),
            RuleRec::any("ingress", "IPv4", Some(id.clone()), now),
            RuleRec::any("ingress", "IPv6", Some(id.clone()), now),
        ];
        self.insert_security_group(project_id, "default", "Default security group", rules, now, id)
    }

    /// A new security group with Neutron's rules for one made by a user: all egress.
    pub fn create_security_group(
        &mut self,
        project_id: &str,
        name: &str,
        description: &str,
        now: DateTime<Utc>,
    ) -> String {
        let rules =
            vec![RuleRec::any("egress", "IPv4", None, now), RuleRec::any("egress", "IPv6", None, now)];
        self.insert_security_group(project_id, name, description, rules, now, new_id())
    }

    fn insert_security_group(
        &mut self,
        project_id: &str,
        name: &str,
        description: &str,
        rules: Vec<RuleRec>,
        now: DateTime<Utc>,
        id: String,
    ) -> String {
        let seq = self.next_seq();
        self.security_groups.insert(
            id.clone(),
            SecurityGroupRec {
                seq,
                id: id.clone(),
                name: name.to_string(),
                description: description.to_string(),
                project_id: project_id.to_string(),
                stateful: true,
                rules,
                tags: vec![],
                created: now,
                modified: now,
                revision: 1,
            },
        );
        id
    }

    /// Creates a port (no quota check here). Errors are Neutron's (type, message).
    pub fn create_port(
        &mut self,
        project_id: &str,
        network_id: &str,
        name: String,
        fixed_ip: Option<(Option<String>, Option<String>)>,
        now: DateTime<Utc>,
    ) -> Result<String, (u16, &'static str, String)> {
        let net = self.networks.get(network_id).ok_or((
            404,
            "NetworkNotFound",
            format!("Network {network_id} could not be found."),
        ))?;
        let subnet_ids = net.subnets.clone();
        let (want_subnet, want_ip) = fixed_ip.unwrap_or((None, None));
        let subnet_id = match want_subnet {
            Some(s) if subnet_ids.contains(&s) => s,
            Some(s) => {
                return Err((
                    400,
                    "InvalidInput",
                    format!(
                        "Invalid input for operation: Failed to create port on network {network_id}, because fixed_ips included invalid subnet {s}."
                    ),
                ));
            }
            None => subnet_ids.first().cloned().ok_or((
                400,
                "InvalidInput",
                format!("Network {network_id} has no subnet."),
            ))?,
        };
        let ip = self.take_ip(&subnet_id, network_id, want_ip.as_deref())?;
        let default_group = self.default_security_group(project_id, now);
        let seq = self.next_seq();
        let id = new_id();
        let mac = format!("fa:16:3e:{:02x}:{:02x}:{:02x}", (seq >> 16) as u8, (seq >> 8) as u8, seq as u8);
        self.ports.insert(
            id.clone(),
            PortRec {
                seq,
                id: id.clone(),
                name,
                description: String::new(),
                network_id: network_id.to_string(),
                project_id: project_id.to_string(),
                mac,
                fixed_ips: vec![(subnet_id, ip.to_string())],
                device_id: String::new(),
                device_owner: String::new(),
                host: String::new(),
                tags: Vec::new(),
                created: now,
                modified: now,
                revision: 1,
                admin_state_up: true,
                security_groups: vec![default_group],
            },
        );
        self.port_order.insert(seq, id.clone());
        self.usage_mut(project_id).ports += 1;
        Ok(id)
    }

    /// Takes an address of a subnet: the one asked for, if free, else the next free one.
    /// Errors are Neutron's (status, type, message).
    fn take_ip(
        &mut self,
        subnet_id: &str,
        network_id: &str,
        want: Option<&str>,
    ) -> Result<Ipv4Addr, (u16, &'static str, String)> {
        let subnet = self.subnets.get_mut(subnet_id).ok_or((
            404,
            "SubnetNotFound",
            format!("Subnet {subnet_id} could not be found."),
        ))?;
        match want {
            Some(ip) => {
                let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                    (
                        400,
                        "InvalidInput",
                        format!("Invalid input for operation: '{ip}' is not a valid IP address."),
                    )
                })?;
                if !subnet.take(parsed) {
                    return Err((
                        409,
                        "IpAddressAlreadyAllocated",
                        format!("IP address {ip} already allocated in subnet {subnet_id}"),
                    ));
                }
                Ok(parsed)
            }
            None => subnet.allocate().ok_or((
                409,
                "IpAddressGenerationFailure",
                format!("No more IP addresses available on network {network_id}."),
            )),
        }
    }

    /// The floating IP associated with a port's fixed IP, if any.
    pub fn floating_ip_of(&self, port_id: &str, fixed_ip: &str) -> Option<&FloatingIpRec> {
        self.floating_ips
            .values()
            .find(|f| f.port.as_ref().is_some_and(|(p, ip)| p == port_id && ip == fixed_ip))
    }

    /// Allocates a floating IP of an external network's first subnet (no quota check here).
    /// Errors are Neutron's (status, type, message).
    pub fn create_floating_ip(
        &mut self,
        project_id: &str,
        network_id: &str,
        address: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<String, (u16, &'static str, String)> {
        let net = self.networks.get(network_id).ok_or((
            404,
            "NetworkNotFound",
            format!("Network {network_id} could not be found."),
        ))?;
        if !net.external {
            return Err((
                400,
                "BadRequest",
                format!("Bad floatingip request: Network {network_id} is not a valid external network."),
            ));
        }
        let subnet_id = net.subnets.first().cloned().ok_or((
            409,
            "IpAddressGenerationFailure",
            format!("No more IP addresses available on network {network_id}."),
        ))?;
        let ip = self.take_ip(&subnet_id, network_id, address)?;
        let seq = self.next_seq();
        let id = new_id();
        self.floating_ips.insert(
            id.clone(),
            FloatingIpRec {
                seq,
                id: id.clone(),
                project_id: project_id.to_string(),
                network_id: network_id.to_string(),
                subnet_id,
                address: ip.to_string(),
                port: None,
                description: String::new(),
                tags: vec![],
                created: now,
                modified: now,
                revision: 0,
            },
        );
        self.usage_mut(project_id).floating_ips += 1;
        Ok(id)
    }

    /// Releases a floating IP: its address goes back to the external subnet.
    pub fn delete_floating_ip(&mut self, id: &str) -> Option<FloatingIpRec> {
        let f = self.floating_ips.remove(id)?;
        if let Some(s) = self.subnets.get_mut(&f.subnet_id) {
            s.release(&f.address);
        }
        self.usage_mut(&f.project_id).floating_ips -= 1;
        Some(f)
    }

    pub fn delete_port(&mut self, id: &str) -> Option<PortRec> {
        let p = self.ports.remove(id)?;
        // Neutron disassociates the floating IPs of a port it deletes.
        let now = Utc::now();
        for f in self.floating_ips.values_mut() {
            if f.port.as_ref().is_some_and(|(port, _)| port == id) {
                f.port = None;
                f.modified = now;
                f.revision += 1;
            }
        }
        self.port_order.remove(&p.seq);
        for (subnet, ip) in &p.fixed_ips {
            if let Some(s) = self.subnets.get_mut(subnet) {
                s.release(ip);
            }
        }
        let u = self.usage_mut(&p.project_id);
        u.ports -= 1;
        Some(p)
    }

    /// Deletes a server: unbinds the ports Nova did not create, deletes those it did, detaches
    /// volumes, frees the quota. The record stays as a tombstone for `changes-since`.
    pub fn delete_server(&mut self, id: &str, now: DateTime<Utc>) -> bool {
        let delete = Duration::from_millis(self.timings.delete_ms);
        let Some(s) = self.server_mut(id) else { return false };
        if s.deleted.is_some() {
            return true; // being deleted already
        }
        s.settle(now);
        s.deleted = Some(after(now, delete));
        // Usage counts the flavor an accepted resize moves to (see `ServerRec::counted_flavor`).
        let counted = ServerRec::counted_flavor(s).to_string();
        s.life.pending = None;
        let ports = std::mem::take(&mut s.ports);
        let vols = std::mem::take(&mut s.volumes);
        let project = s.project_id.clone();
        let flavor = counted;
        for (port, nova_created) in ports {
            if nova_created {
                self.delete_port(&port);
            } else if let Some(p) = self.ports.get_mut(&port) {
                p.device_id.clear();
                p.device_owner.clear();
                p.host.clear();
                p.modified = now;
                p.revision += 1;
            }
        }
        let detach = Duration::from_millis(self.timings.detach_ms);
        for a in vols {
            // A volume mapped with delete_on_termination (a boot volume Nova made, say) goes
            // with the server; any other is detached and stays.
            if a.delete_on_termination {
                self.delete_volume(&a.volume_id);
                continue;
            }
            if let Some(v) = self.volumes.get_mut(&a.volume_id) {
                v.attach = None;
                v.detached_until = Some(after(now, detach));
                v.modified = now;
            }
        }
        let (vcpus, ram) = self
            .seed
            .flavors
            .iter()
            .find(|f| f.id == flavor)
            .map(|f| (f.vcpus as i64, f.ram as i64))
            .unwrap_or((0, 0));
        let u = self.usage_mut(&project);
        u.instances -= 1;
        u.cores -= vcpus;
        u.ram -= ram;
        true
    }

    pub fn delete_volume(&mut self, id: &str) -> Option<VolumeRec> {
        let v = self.volumes.remove(id)?;
        self.volume_order.remove(&v.seq);
        let u = self.usage_mut(&v.project_id);
        u.volumes -= 1;
        u.gigabytes -= v.size as i64;
        Some(v)
    }

    /// Drops tombstones of servers deleted before `before` (they only matter to
    /// `changes-since` queries reaching back that far).
    pub fn purge_tombstones(&mut self, before: DateTime<Utc>) {
        let old: Vec<(u64, String)> = self
            .servers
            .values()
            .filter(|s| s.deleted.is_some_and(|d| d < before))
            .map(|s| (s.seq, s.id.clone()))
            .collect();
        for (seq, id) in old {
            self.servers.remove(&id);
            self.server_order.remove(&seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(now: DateTime<Utc>) -> ServerRec {
        ServerRec {
            seq: 1,
            id: "s".into(),
            name: "n".into(),
            project_id: "p".into(),
            user_id: "u".into(),
            flavor_id: "1".into(),
            image_id: None,
            key_name: None,
            metadata: BTreeMap::new(),
            tags: vec![],
            description: None,
            availability_zone: "nova".into(),
            requested_az: None,
            scheduler_hints: None,
            ports: vec![],
            volumes: vec![],
            created: now,
            boot_done: now + chrono::Duration::seconds(3),
            fault: None,
            stuck: false,
            modified: now,
            deleted: None,
            life: Life::default(),
        }
    }

    #[test]
    fn server_status_and_updated_follow_the_clock() {
        let t0 = Utc::now();
        let s = server(t0);
        let v = s.view(t0);
        assert_eq!((v.status, v.updated), ("BUILD", t0));
        let later = t0 + chrono::Duration::seconds(5);
        let v = s.view(later);
        assert_eq!(v.status, "ACTIVE");
        assert_eq!(v.updated, s.boot_done, "updated moves when the status changes");
        let mut e = server(t0);
        e.fault = Some((500, "No valid host was found.".into()));
        assert_eq!(e.view(later).status, "ERROR");
        e.stuck = true;
        e.fault = None;
        assert_eq!(e.view(later).status, "BUILD");
    }

    #[test]
    fn volume_attach_phases() {
        let t0 = Utc::now();
        let s = |ms| t0 + chrono::Duration::milliseconds(ms);
        let mut v = VolumeRec {
            seq: 1,
            id: "v".into(),
            name: None,
            description: None,
            project_id: "p".into(),
            user_id: "u".into(),
            size: 1,
            volume_type: "standard".into(),
            metadata: BTreeMap::new(),
            availability_zone: "nova".into(),
            created: t0,
            available_at: s(100),
            create_fault: false,
            stuck: None,
            attach: None,
            detached_until: None,
            modified: t0,
            image: None,
        };
        assert_eq!(v.status(s(50)), "creating");
        assert_eq!(v.status(s(150)), "available");
        v.attach = Some(VolAttach {
            server_id: "x".into(),
            attachment_id: "a".into(),
            device: "/dev/vdb".into(),
            started: s(200),
            attaching_at: s(250),
            in_use_at: s(300),
        });
        assert_eq!(v.status(s(210)), "reserved");
        assert_eq!(v.status(s(260)), "attaching");
        assert_eq!(v.status(s(310)), "in-use");
        v.attach = None;
        v.detached_until = Some(s(400));
        assert_eq!(v.status(s(350)), "detaching");
        assert_eq!(v.status(s(450)), "available");
    }

    #[test]
    fn subnet_allocates_and_reuses_addresses() {
        let mut w = World::new(Seed::builtin(), Timings::fast());
        let net = w.networks.keys().next().unwrap().clone();
        let now = Utc::now();
        let a = w.create_port("p", &net, "a".into(), None, now).unwrap();
        let ip_a = w.ports[&a].fixed_ips[0].1.clone();
        assert_eq!(ip_a, "10.0.0.2");
        w.delete_port(&a);
        let b = w.create_port("p", &net, "b".into(), None, now).unwrap();
        assert_eq!(w.ports[&b].fixed_ips[0].1, "10.0.0.3");
        let c = w.create_port("p", &net, "c".into(), None, now).unwrap();
        assert_eq!(w.ports[&c].fixed_ips[0].1, "10.0.0.4", "fresh addresses first");
        assert_eq!(w.usage_of("p").ports, 2);
    }
}
