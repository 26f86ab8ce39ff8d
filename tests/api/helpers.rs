//! Tests: helpers.
#![allow(dead_code)]
