//! volume service.

pub mod protocol;
