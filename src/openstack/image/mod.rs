//! image service.

pub mod protocol;
