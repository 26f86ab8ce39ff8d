//! The OpenStack simulator: Keystone v3, Glance v2, Neutron v2.0, Nova v2.1 and Cinder v3 on one
//! listener, with the real URL layout (DevStack's path prefixes), wire format, status codes,
//! headers and asynchronous state changes, for development, tests, demos and benchmarks.
//!
//! It serialises the same wire types the client parses (`openstack::*::protocol`), so the two
//! cannot drift apart. State lives in memory ([`state::World`] behind one mutex); statuses are
//! derived from timestamps on read, so nothing runs between requests. Tests and benches start
//! it in-process with [`Simulator::start`] on a random port and steer it through
//! [`SimHandle`] (faults, quotas, timings, counters, reset) or the same operations over HTTP
//! under `/_sim/`. `provisioner sim` runs it as a server ([`cli`]).
//!
//! Two regions share the one Keystone: `RegionOne` at the root paths and `RegionTwo` under
//! `/RegionTwo/` (its own Glance, Neutron, Nova and Cinder: a second [`Sim`] with its own world,
//! seeded like the first but with ids of its own, that trusts the first one's tokens). The
//! catalog lists the endpoints of both, as a multi-region cloud's Keystone does.

pub mod cli;
mod compute;
pub mod control;
pub mod faults;
pub mod http;
mod identity;
mod image;
mod keypairs;
mod network;
mod placement;
pub mod seed;
pub mod state;
mod volume;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::Method;
use chrono::Utc;
use tokio::sync::oneshot;

pub use control::{Counter, IdentitySnapshot, QuotaPatch, Resources};
pub use faults::FaultRule;
pub use seed::{ACME_PROJECT_ID, ADMIN_PROJECT_ID, DEMO_PROJECT_ID, Quotas, SERVICE_PROJECT_ID, Seed};
pub use state::Timings;

use crate::sim::faults::Faults;
use crate::sim::http::Service;
use crate::sim::state::{TokenInfo, World};

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// The URL clients reach it at (catalog URLs are built on it); derived from the bound
    /// address when absent.
    pub public_url: Option<String>,
    pub seed: Seed,
    pub timings: Timings,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            seed: Seed::builtin(),
            timings: Timings::default(),
        }
    }
}

impl SimConfig {
    /// A config for tests: random port, built-in seed, fast timings.
    pub fn for_tests() -> SimConfig {
        SimConfig { timings: Timings::fast(), ..SimConfig::default() }
    }
}

/// Counter key: (service, method, path template, status).
pub(crate) type CounterKey = (&'static str, String, String, u16);

/// The shared state every handler sees.
#[derive(Debug)]
pub struct Sim {
    pub(crate) world: Mutex<World>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) counters: Mutex<HashMap<CounterKey, u64>>,
    /// Requests per inbound global request id (`X-OpenStack-Request-Id: req-<uuid>`), as the
    /// services' logs would show them.
    pub(crate) global_request_ids: Mutex<HashMap<String, u64>>,
    /// Where clients reach the simulator, e.g. `http://127.0.0.1:5000` (no trailing slash);
    /// a region's services: `http://127.0.0.1:5000/RegionTwo`.
    pub(crate) base: String,
    /// This world's region.
    pub(crate) region: String,
    /// A second region's services trust the tokens of the Keystone of the first ([`Sim::token`]).
    pub(crate) keystone: Option<std::sync::Weak<Sim>>,
    /// The first region's Sim: the other regions, by name (each under `/<name>/`).
    pub(crate) regions: Vec<(String, Arc<Sim>)>,
}

/// The region of the root paths.
pub const REGION_ONE: &str = "RegionOne";
/// The second region, under `/RegionTwo/`.
pub const REGION_TWO: &str = "RegionTwo";

impl Sim {
    pub(crate) fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn count(&self, service: Service, method: &Method, template: &str, status: u16) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((service.name(), method.as_str().to_string(), template.to_string(), status)).or_insert(0) +=
            1;
    }

    /// A valid (known, unexpired) token (Keystone's: a second region asks the first).
    pub(crate) fn token(&self, token: &str) -> Option<TokenInfo> {
        if let Some(keystone) = &self.keystone {
            return keystone.upgrade()?.token(token);
        }
        let w = self.world();
        let t = w.tokens.get(token)?;
        (t.expires_at > Utc::now()).then(|| t.clone())
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Every region's Sim, this one first.
    pub(crate) fn all_regions(&self) -> impl Iterator<Item = &Sim> {
        std::iter::once(self).chain(self.regions.iter().map(|(_, s)| s.as_ref()))
    }

    /// A project Keystone made is known to every region's services (their quotas are kept
    /// per region): called without the first region's world locked.
    pub(crate) fn mirror_project(&self, rec: &crate::sim::state::ProjectRec) {
        for (_, r) in &self.regions {
            let mut w = r.world();
            let entry = w.projects.entry(rec.id.clone()).or_insert_with(|| rec.clone());
            entry.name = rec.name.clone();
            entry.enabled = rec.enabled;
        }
    }

    /// A project Keystone deleted: gone from every region's services too.
    pub(crate) fn forget_project(&self, id: &str) {
        for (_, r) in &self.regions {
            r.world().projects.remove(id);
        }
    }
}

/// Entry point: `Simulator::start(SimConfig::for_tests()).await?`.
pub struct Simulator;

/// The simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

impl Simulator {
    /// Binds, starts serving in a background task, and returns the handle.
    pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| SimError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind { addr: config.listen, source })?;
        let base = match &config.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let host =
                    if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
                format!("http://{host}:{}", addr.port())
            }
        };
        let sim = Arc::new_cyclic(|keystone: &std::sync::Weak<Sim>| {
            let two = Arc::new(Sim {
                world: Mutex::new(World::new(config.seed.for_region(REGION_TWO), config.timings)),
                faults: Mutex::new(Faults::default()),
                counters: Mutex::new(HashMap::new()),
                global_request_ids: Mutex::new(HashMap::new()),
                base: format!("{base}/{REGION_TWO}"),
                region: REGION_TWO.to_string(),
                keystone: Some(keystone.clone()),
                regions: Vec::new(),
            });
            Sim {
                world: Mutex::new(World::new(config.seed, config.timings)),
                faults: Mutex::new(Faults::default()),
                counters: Mutex::new(HashMap::new()),
                global_request_ids: Mutex::new(HashMap::new()),
                base,
                region: REGION_ONE.to_string(),
                keystone: None,
                regions: vec![(REGION_TWO.to_string(), two)],
            }
        });
        let mut app = router(sim.clone());
        for (name, regional) in &sim.regions {
            app = app.nest(&format!("/{name}"), regional_router(regional.clone()));
        }
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "simulator stopped");
            }
        });
        Ok(SimHandle { sim, addr, shutdown: Some(tx), task: Some(task) })
    }
}

fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .merge(identity::routes())
        .merge(image::routes())
        .merge(network::routes())
        .merge(compute::routes())
        .merge(keypairs::routes())
        .merge(placement::routes())
        .merge(volume::routes("/volume/v3"))
        .merge(volume::routes("/volume/v3/{project_id}"))
        .route_layer(axum::middleware::from_fn_with_state(sim.clone(), http::api_layer))
        .merge(control::routes())
        .fallback(http::not_found)
        .with_state(sim)
}

/// A second region's services (no Keystone: the first region's serves every region).
fn regional_router(sim: Arc<Sim>) -> Router {
    Router::new()
        .merge(image::routes())
        .merge(network::routes())
        .merge(compute::routes())
        .merge(keypairs::routes())
        .merge(volume::routes("/volume/v3"))
        .merge(volume::routes("/volume/v3/{project_id}"))
        .route_layer(axum::middleware::from_fn_with_state(sim.clone(), http::api_layer))
        .fallback(http::not_found)
        .with_state(sim)
}

/// A running simulator. Dropping it stops the server (use [`SimHandle::shutdown`] to wait).
pub struct SimHandle {
    sim: Arc<Sim>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.sim.base.clone()
    }

    /// `OS_AUTH_URL`: the Keystone endpoint (`<url>/identity`).
    pub fn auth_url(&self) -> String {
        self.sim.url("/identity")
    }

    /// The in-process control API (faults, quotas, timings, counters, state, reset) of the
    /// first region (`RegionOne`; Keystone's state is there too).
    pub fn control(&self) -> control::SimControl {
        control::SimControl { sim: self.sim.clone() }
    }

    /// The control API of a region's services (`RegionOne`, `RegionTwo`), if there is one.
    pub fn region(&self, name: &str) -> Option<control::SimControl> {
        if self.sim.region == name {
            return Some(self.control());
        }
        self.sim.regions.iter().find(|(n, _)| n == name).map(|(_, s)| control::SimControl { sim: s.clone() })
    }

    /// Stops accepting, finishes in-flight requests, and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
