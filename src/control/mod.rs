//! Control-plane services: provisioning, migrations, tenant manifests, and operator
//! actions inside a tenant (first administrator, demo data).

pub mod backup;
pub mod cluster;
pub mod keys;
pub mod manifest;
pub mod migrate;
pub mod provision;
pub mod tenant_admin;

pub use cluster::Cluster;
