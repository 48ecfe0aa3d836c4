//! Madoguchi: an online application platform for Japanese municipalities.
//! Each municipality (tenant) gets its own PostgreSQL database, role and data key.

pub mod catalog;
pub mod config;
pub mod control;
pub mod crypto;
pub mod domain;
pub mod embedded_pg;
pub mod error;
pub mod front;
pub mod ja;
pub mod ops;
pub mod pg_tls;
pub mod platform;
pub mod postal;
pub mod scan;
pub mod tenant;
pub mod tls_client;
pub mod web;
