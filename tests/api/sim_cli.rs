//! Tests: sim_cli.
