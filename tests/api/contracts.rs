//! Tests: contracts.
