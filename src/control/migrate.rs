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

/// The schema version a migration brings tenant databases to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SchemaTarget {
    /// The newest version compiled into this binary (what `serve` expects).
    #[default]
    Newest,
    /// Every migration up to and including this version, none after it: a tenant
    /// held at an older schema, to rehearse the `migrate --all` a new version needs.
    Version(u32),
}

impl SchemaTarget {
    /// A version this binary has a migration for.
    pub fn version(v: u32) -> anyhow::Result<Self> {
        let newest = latest_tenant_version();
        match i32::try_from(v) {
            Ok(n) if (1..=newest).contains(&n) => Ok(Self::Version(v)),
            _ => anyhow::bail!(
                "スキーマのバージョン {v} はありません（1〜{newest}） / no tenant schema version {v} (this binary has 1 to {newest})"
            ),
        }
    }

    /// The version a database holds after migrating to this target from below it.
    pub fn number(self) -> i32 {
        match self {
            Self::Newest => latest_tenant_version(),
            Self::Version(v) => i32::try_from(v).unwrap_or(i32::MAX),
        }
    }

    fn refinery(self) -> refinery::Target {
        match self {
            Self::Newest => refinery::Target::Latest,
            Self::Version(v) => refinery::Target::Version(v),
        }
    }
}

/// Brings one tenant database to the newest schema; records the version in the catalog.
pub async fn migrate_tenant(p: &Platform, rec: &TenantRecord) -> anyhow::Result<i32> {
    migrate_tenant_to(p, rec, SchemaTarget::Newest).await
}

/// Applies the migrations a tenant database lacks up to `target` (a database already
/// past it is left as it is: migrations only go forward); records the version it
/// holds in the catalog.
pub async fn migrate_tenant_to(
    p: &Platform,
    rec: &TenantRecord,
    target: SchemaTarget,
) -> anyhow::Result<i32> {
    let mut conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    let client = &mut conn.client;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&TENANT_MIGRATION_LOCK])
        .await?;
    let runner = embedded::migrations::runner().set_target(target.refinery());
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
    /// How many tenants hold each schema version afterwards.
    pub versions: std::collections::BTreeMap<i32, usize>,
    pub failed: Vec<(String, String)>,
    /// Tenants not migrated, and what to do about each. Erased tenants, which have no
    /// database, are not listed.
    pub skipped: Vec<(String, String)>,
}

impl MigrateReport {
    /// Tenants whose migration succeeded (or had nothing to apply).
    pub fn migrated(&self) -> usize {
        self.versions.values().sum()
    }
}

/// Migrates the given tenants to `target`, `parallel` at a time, with a progress bar
/// on stderr. Tenants still being provisioned are skipped (provisioning migrates
/// them) and reported; a tenant awaiting erasure is migrated, since a withdrawn
/// request opens it again.
pub async fn migrate_many(
    p: &Platform,
    tenants: Vec<TenantRecord>,
    target: SchemaTarget,
    parallel: usize,
) -> MigrateReport {
    let mut skipped = Vec::new();
    // An erasure begun cannot be withdrawn, and may have dropped the database already.
    let erasing: std::collections::HashSet<uuid::Uuid> = match p.catalog.client().await {
        Ok(c) => c
            .query(
                "SELECT tenant_id FROM decommissions WHERE state = 'requested' AND erasure_started_at IS NOT NULL",
                &[],
            )
            .await
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .unwrap_or_default(),
        Err(_) => std::collections::HashSet::new(),
    };
    let tenants: Vec<_> = tenants
        .into_iter()
        .filter(|t| match t.state {
            TenantState::Active | TenantState::Suspended => true,
            TenantState::Decommissioning if erasing.contains(&t.id) => {
                skipped.push((
                    t.slug.clone(),
                    "消去の途中です: `madoguchi tenant erase` で完了してください / being erased: finish it with `madoguchi tenant erase`".to_owned(),
                ));
                false
            }
            TenantState::Decommissioning => true,
            TenantState::Erased => false,
            // A restore cut short keeps its source's crypto identity.
            TenantState::Provisioning if t.crypto_id != t.id => {
                skipped.push((
                    t.slug.clone(),
                    "リストアが途中で止まっています: `madoguchi backup restore` をもう一度実行してください / a restore cut short: run `madoguchi backup restore` again".to_owned(),
                ));
                false
            }
            TenantState::Provisioning => {
                skipped.push((
                    t.slug.clone(),
                    "作成の途中です: `madoguchi tenant create` で完了すると移行されます / being provisioned: finishing it with `madoguchi tenant create` migrates it".to_owned(),
                ));
                false
            }
        })
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
                let r = migrate_tenant_to(p, &t, target).await;
                bar.set_message(t.slug.clone());
                bar.inc(1);
                (t.slug, r)
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    let mut report = MigrateReport {
        skipped,
        ..MigrateReport::default()
    };
    for (slug, r) in results {
        match r {
            Ok(version) => *report.versions.entry(version).or_default() += 1,
            Err(e) => report.failed.push((slug, format!("{e:#}"))),
        }
    }
    report
}
