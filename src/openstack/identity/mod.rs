//! identity service.

pub mod protocol;
