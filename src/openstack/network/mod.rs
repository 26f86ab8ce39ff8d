//! network service.

pub mod protocol;
