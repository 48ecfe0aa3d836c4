//! Integration tests against a real PostgreSQL cluster started by the harness.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod abuse;
mod api;
mod attachments;
mod attacks;
mod backup;
mod bench_scripts;
mod browser;
mod budget;
mod cases;
mod cli;
mod console;
mod data_key;
mod drafts;
mod erasure;
mod external;
mod faults;
mod forms;
mod help;
mod identity;
mod incident;
mod isolation;
mod mail;
mod mine;
mod notices;
mod pg_tls;
mod places;
mod plans;
mod proxy;
mod routing;
mod smtp;
mod tls;
mod training;
mod zones;
