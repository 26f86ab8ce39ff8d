//! Tests: deploy.
