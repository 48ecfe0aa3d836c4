//! Restoring the catalog from one of its backups, when it was lost or damaged: the
//! backup is decrypted (with the master key, or a retired one) and restored into a
//! new database beside the catalog, checked against the master key, compared with
//! the cluster and the certificates on disk, and only then swapped in under the
//! catalog's name. The catalog it replaces is kept, renamed, until someone drops it.

use std::collections::HashSet;

use anyhow::{bail, Context};
use uuid::Uuid;

use super::backup::{self, BackupStore};
use crate::catalog::quote_ident;
use crate::platform::{Platform, WrappedInCatalog};

/// What a catalog restore found and did.
#[derive(Debug)]
pub struct Restored {
    /// The catalog database it replaced, kept under this name.
    pub replaced: String,
    /// Tenants the restored catalog holds (not erased).
    pub tenants: usize,
    /// Tenants it holds whose database is not in the cluster (erased or lost since).
    pub missing_databases: Vec<String>,
    /// Tenant databases in the cluster it does not name (made since the backup):
    /// their keys were not in it, so their data cannot be read.
    pub unknown_databases: Vec<String>,
    /// Erasure certificates on disk that its transparency log lacks (issued since).
    pub unlogged_certificates: Vec<String>,
}

/// Restores the catalog from the catalog backup `file` (a path under the backup
/// directory). Refused while any other Madoguchi process uses the catalog. The
/// caller opens the platform again afterwards (which migrates an older catalog).
pub async fn restore(
    p: &Platform,
    store: &dyn BackupStore,
    file: &str,
) -> anyhow::Result<Restored> {
    p.alone().await?;
    if !backup::is_catalog_backup(store, file)? {
        bail!("{file} はテナントのバックアップです（カタログのバックアップではありません） / {file} is a tenant's backup, not the catalog's: use `backup restore`");
    }
    let dump = tempfile::NamedTempFile::new()?;
    super::progress::step(&format!("decrypting and checking {file}"));
    backup::decrypt(p, store, file, dump.reopen()?).await?;

    let admin = p.cluster.admin().await?;
    let catalog = p.settings.catalog_db.clone();
    let restoring = format!(
        "{catalog}_restoring_{}",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    for sql in [
        "CREATE DATABASE {}",
        "REVOKE CONNECT ON DATABASE {} FROM PUBLIC",
    ] {
        admin
            .client
            .batch_execute(&sql.replace("{}", &quote_ident(&restoring)))
            .await?;
    }
    let checked = async {
        super::progress::step(&format!("pg_restore into {restoring}"));
        backup::restore_dump(p, &restoring, dump.path()).await?;
        compare(p, &admin.client, &restoring).await
    }
    .await;
    let mut report = match checked {
        Ok(r) => r,
        Err(e) => {
            let _ = admin
                .client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&restoring)
                ))
                .await;
            return Err(e);
        }
    };

    // The swap: this process lets go of the catalog first (it is alone on it).
    p.leave_catalog();
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    report.replaced = format!("{catalog}_replaced_{stamp}");
    let swap = format!(
        "BEGIN; ALTER DATABASE {} RENAME TO {}; ALTER DATABASE {} RENAME TO {}; COMMIT",
        quote_ident(&catalog),
        quote_ident(&report.replaced),
        quote_ident(&restoring),
        quote_ident(&catalog)
    );
    // This process's own connections may take a moment to end.
    let mut tries = 0;
    loop {
        let Err(e) = admin.client.batch_execute(&swap).await else {
            break;
        };
        let _ = admin.client.batch_execute("ROLLBACK").await;
        // A commit whose answer was lost: the restored database has the name already.
        if !exists(&admin.client, &restoring).await? {
            break;
        }
        if tries >= 50 {
            return Err(e).with_context(|| {
                format!(
                    "the restored catalog is ready as database {restoring}, but it could not take the catalog's name (is a Madoguchi process connected?); nothing was replaced"
                )
            });
        }
        tries += 1;
        tracing::debug!(error = %e, "waiting for the catalog's connections to end");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(report)
}

async fn exists(admin: &tokio_postgres::Client, database: &str) -> anyhow::Result<bool> {
    Ok(admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await?
        .is_some())
}

/// Checks the restored catalog opens with the master key, and compares it with the
/// cluster's databases and the certificates on disk.
async fn compare(
    p: &Platform,
    admin: &tokio_postgres::Client,
    restored: &str,
) -> anyhow::Result<Restored> {
    let db = p.cluster.connect(&p.cluster.admin_config(restored)).await?;
    let opens = WrappedInCatalog::read(&db.client)
        .await?
        .opens_with(p.keys.as_ref());
    if !opens {
        bail!("このバックアップのカタログは、いまのマスターキーでは開けません / the catalog in this backup does not open with the current master key: it was made before a master-key rotation. Put that backup's master key back as master.key (the retired file) first");
    }
    let tenants: Vec<(String, String)> = db
        .client
        .query(
            "SELECT slug, db_name FROM tenants WHERE state <> 'erased' ORDER BY slug",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let in_cluster: HashSet<String> = admin
        .query("SELECT datname FROM pg_database", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let named: HashSet<&str> = tenants.iter().map(|(_, d)| d.as_str()).collect();
    let mut unknown: Vec<String> = in_cluster
        .iter()
        .filter(|d| d.starts_with("t_") && !named.contains(d.as_str()))
        .cloned()
        .collect();
    unknown.sort();
    let logged: HashSet<Uuid> = db
        .client
        .query("SELECT id FROM certificates", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut unlogged: Vec<String> =
        std::fs::read_dir(super::erase::certificates_dir(&p.settings.state_dir))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter(|n| {
                        n.strip_suffix(".json")
                            .and_then(|id| Uuid::parse_str(id).ok())
                            .is_some_and(|id| !logged.contains(&id))
                    })
                    .collect()
            })
            .unwrap_or_default();
    unlogged.sort();
    Ok(Restored {
        replaced: String::new(),
        tenants: tenants.len(),
        missing_databases: tenants
            .iter()
            .filter(|(_, d)| !in_cluster.contains(d))
            .map(|(s, _)| s.clone())
            .collect(),
        unknown_databases: unknown,
        unlogged_certificates: unlogged,
    })
}
