//! Tenant schema migrations: `migrations/tenant/`, applied to each tenant database
//! as the tenant's own role under an advisory lock, with bounded parallelism.

use anyhow::Context;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::catalog::{TenantRecord, TenantState};
use crate::platform::Platform;

mod embedded {
    refinery::embed_migrations!("migrations/tenant");
}

/// Advisory lock key under which a tenant database is migrated ("madoten").
const TENANT_MIGRATION_LOCK: i64 = i64::from_be_bytes(*b"\0madoten");

/// The newest tenant schema version compiled into this binary.
pub fn latest_tenant_version() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(refinery::Migration::version)
        .max()
        .map_or(0, |v| i32::try_from(v).unwrap_or(i32::MAX))
}

/// Brings one tenant database to the newest schema; records the version in the catalog.
pub async fn migrate_tenant(p: &Platform, rec: &TenantRecord) -> anyhow::Result<i32> {
    let mut conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    let client = &mut conn.client;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&TENANT_MIGRATION_LOCK])
        .await?;
    let runner = embedded::migrations::runner();
    let result = runner.run_async(client).await;
    let version = runner.get_last_applied_migration_async(client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&TENANT_MIGRATION_LOCK])
        .await?;
    result.with_context(|| format!("migrating tenant {}", rec.slug))?;
    let version = version?.map_or(0, |m| i32::try_from(m.version()).unwrap_or(i32::MAX));
    p.catalog.set_schema_version(rec.id, version).await?;
    Ok(version)
}

/// Outcome of migrating many tenants.
#[derive(Debug, Default)]
pub struct MigrateReport {
    pub migrated: usize,
    pub failed: Vec<(String, String)>,
}

/// Migrates the given tenants, `parallel` at a time, with a progress bar on stderr.
/// Tenants still being provisioned are skipped (provisioning migrates them).
pub async fn migrate_many(
    p: &Platform,
    tenants: Vec<TenantRecord>,
    parallel: usize,
) -> MigrateReport {
    let tenants: Vec<_> = tenants
        .into_iter()
        .filter(|t| matches!(t.state, TenantState::Active | TenantState::Suspended))
        .collect();
    let bar = ProgressBar::new(tenants.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("migrate");
    let results: Vec<(String, anyhow::Result<i32>)> = futures::stream::iter(tenants)
        .map(|t| {
            let bar = bar.clone();
            async move {
                let r = migrate_tenant(p, &t).await;
                bar.set_message(t.slug.clone());
                bar.inc(1);
                (t.slug, r)
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    let mut report = MigrateReport::default();
    for (slug, r) in results {
        match r {
            Ok(_) => report.migrated += 1,
            Err(e) => report.failed.push((slug, format!("{e:#}"))),
        }
    }
    report
}
