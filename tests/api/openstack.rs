//! Tests: openstack.
