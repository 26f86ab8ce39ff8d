//! compute service.

pub mod protocol;
