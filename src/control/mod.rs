//! Control-plane services: provisioning, migrations, tenant manifests, and operator
//! actions inside a tenant (first administrator, demo data), backups, and
//! decommissioning with erasure certificates.

pub mod audit_witness;
pub mod backup;
pub mod catalog_restore;
pub mod certificate;
pub mod cluster;
pub mod data_key;
pub mod erase;
pub mod final_export;
pub mod key_transition;
pub mod keys;
pub mod manifest;
pub mod master_key;
pub mod migrate;
pub mod notices;
pub mod operators;
pub mod oplog;
pub mod progress;
pub mod provision;
pub mod scan_files;
pub mod tenant_admin;
pub mod training;

pub use cluster::Cluster;
