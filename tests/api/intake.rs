//! Tests: intake.
