//! The OpenStack client: a Keystone v3 session (tokens per project, catalog), then one module
//! per service (identity, image, network, compute, volume) built the same way, and one error
//! taxonomy decided in one place.
//!
//! The engine holds one [`OpenStack`] (cheap to clone) and calls the services through it, always
//! naming the project the order is provisioned in:
//!
//! ```text
//! let cloud = OpenStack::new(cloud_config, SessionOptions::from_settings(&settings))?;
//! let image = cloud.image().find_image(&order.project_id, &order.server.image).await?;
//! ```
//!
//! - [`config`]: which cloud (`OS_*`, `OS_CLOUD` + `clouds.yaml`); `None` means the simulator.
//! - [`session`]: tokens per project (cached, refreshed early, single-flight, one re-auth on 401),
//!   endpoints from the catalog, the one place requests are sent.
//! - [`error`]: [`OpenStackError`] and [`ErrorClass`], decided in [`error::classify`].
//! - [`microversion`]: Nova and Cinder microversions, negotiated against the cloud.
//! - [`ratelimit`]: token buckets per project and per cloud.
//! - `identity`, `image`, `network`, `compute`, `volume`: each a `mod.rs` with the typed calls
//!   (`XxxApi`) and a `protocol.rs` with the wire types shared with the simulator.

pub mod compute;
pub mod config;
pub mod error;
pub mod identity;
pub mod image;
pub mod microversion;
pub mod network;
pub mod protocol_time;
pub mod ratelimit;
pub mod region;
pub mod request_id;
pub mod session;
pub mod smoke;
pub mod volume;

use std::sync::Arc;

pub use config::CloudConfig;
pub use error::{ErrorClass, OpenStackError, Service};
pub use session::{Session, SessionBuildError, SessionOptions};

/// The cloud client: one session shared by the five service handles.
#[derive(Debug, Clone)]
pub struct OpenStack {
    session: Arc<Session>,
}

impl OpenStack {
    pub fn new(cloud: CloudConfig, options: SessionOptions) -> Result<OpenStack, SessionBuildError> {
        Ok(OpenStack { session: Arc::new(Session::new(cloud, options)?) })
    }

    /// The session (token cache, counters); services are reached through the methods below.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    pub fn identity(&self) -> identity::IdentityApi {
        identity::IdentityApi::new(self.session.clone())
    }

    pub fn image(&self) -> image::ImageApi {
        image::ImageApi::new(self.session.clone())
    }

    pub fn network(&self) -> network::NetworkApi {
        network::NetworkApi::new(self.session.clone())
    }

    pub fn compute(&self) -> compute::ComputeApi {
        compute::ComputeApi::new(self.session.clone())
    }

    pub fn volume(&self) -> volume::VolumeApi {
        volume::VolumeApi::new(self.session.clone())
    }
}
