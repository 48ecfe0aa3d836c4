//! Control-plane services: provisioning, migrations and tenant manifests.

pub mod cluster;
pub mod manifest;
pub mod migrate;
pub mod provision;

pub use cluster::Cluster;
