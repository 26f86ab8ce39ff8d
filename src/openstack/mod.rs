//! The OpenStack client: a Keystone v3 session (tokens per project, catalog), then one module
//! per service (identity, image, network, compute, volume) built the same way, and one error
//! taxonomy decided in one place.

pub mod compute;
pub mod config;
pub mod error;
pub mod identity;
pub mod image;
pub mod microversion;
pub mod network;
pub mod protocol_time;
pub mod ratelimit;
pub mod volume;
