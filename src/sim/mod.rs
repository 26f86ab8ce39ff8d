//! The OpenStack simulator: Keystone v3, Glance v2, Neutron v2.0, Nova v2.1 and Cinder v3 on one
//! listener, with the real URL layout and wire format, for development, tests, demos and
//! benchmarks. It serialises the same wire types the client parses (`openstack::*::protocol`).

pub mod cli;
