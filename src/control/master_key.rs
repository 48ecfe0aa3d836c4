//! Rotating the master key: a new key file, everything the catalog holds wrapped by
//! the old key (tenants' data keys and database passwords, operators' TOTP secrets,
//! the key check) re-wrapped under the new one in one transaction, then the files
//! swapped. The data keys themselves do not change, so no tenant row is touched.
//!
//! The old key is kept as `master.key.retired-<time>`: catalog backups made before
//! the rotation open only with it (tenant backups open with the data keys, which the
//! catalog still holds).

use std::fs;
use std::path::PathBuf;

use anyhow::Context;

use crate::crypto::{DataKey, FileKeyProvider, KeyProvider};
use crate::platform::{swap_master_files, Platform, WrappedInCatalog, CHECK_AAD, NEW_MASTER_KEY};

/// What a rotation did.
#[derive(Debug)]
pub struct Rotated {
    /// Rows of `tenant_keys` re-wrapped (data keys and database passwords).
    pub tenant_keys: usize,
    /// Operators' TOTP secrets re-wrapped.
    pub totp_secrets: usize,
    /// Catalog backups made under the old key (they open only with the retired file).
    pub old_catalog_backups: i64,
    /// Where the old key is now.
    pub retired: PathBuf,
}

/// Rotates the master key. Refused while any other Madoguchi process uses the
/// catalog (stop `serve` first); takes seconds even with thousands of tenants.
pub async fn rotate(p: &Platform, actor: &str) -> anyhow::Result<Rotated> {
    p.alone().await?;
    let dir = &p.settings.state_dir;
    let new_path = dir.join(NEW_MASTER_KEY);
    if new_path.exists() {
        // Nothing committed with it: opening the platform settles a rotation that did.
        fs::remove_file(&new_path)
            .with_context(|| format!("removing a stale {}", new_path.display()))?;
    }
    let new = FileKeyProvider::load_or_create(&new_path)?;
    let result = rewrap(p, &new, actor).await;
    let (tenant_keys, totp_secrets, old_catalog_backups) = match result {
        Ok(counts) => counts,
        Err(e) => {
            // A commit whose answer was lost may have taken effect: the new key is
            // removed only when the catalog is known not to be wrapped under it.
            let committed = match p.catalog.client().await {
                Ok(c) => WrappedInCatalog::read(&c)
                    .await
                    .map(|w| w.holds_check() && w.opens_with(&new)),
                Err(read) => Err(read),
            };
            if let Ok(false) = committed {
                let _ = fs::remove_file(&new_path);
            }
            return Err(e.context(format!(
                "master key not rotated{}",
                if matches!(committed, Ok(false)) {
                    String::new()
                } else {
                    format!(
                        "; {} is kept: the next command or start uses it if the catalog was re-wrapped after all",
                        new_path.display()
                    )
                }
            )));
        }
    };
    let retired = swap_master_files(dir).with_context(|| {
        format!(
            "the catalog is re-wrapped under {}, but the files were not swapped; the next command or start finishes it",
            new_path.display()
        )
    })?;
    Ok(Rotated {
        tenant_keys,
        totp_secrets,
        old_catalog_backups,
        retired,
    })
}

/// Re-wraps everything in one transaction; returns the counts.
async fn rewrap(
    p: &Platform,
    new: &FileKeyProvider,
    actor: &str,
) -> anyhow::Result<(usize, usize, i64)> {
    let old = p.keys.as_ref();
    let again = |wrapped: &[u8], aad: &[u8]| -> anyhow::Result<Vec<u8>> {
        let plain = old.unwrap(wrapped, aad).map_err(|_| {
            anyhow::anyhow!(
                "a wrapped key does not open with the current master key; nothing was changed"
            )
        })?;
        Ok(new.wrap(&plain, aad)?)
    };
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    let keys = tx
        .query(
            "SELECT tenant_id, purpose, version, wrapped FROM tenant_keys ORDER BY tenant_id, purpose, version FOR UPDATE",
            &[],
        )
        .await?;
    for r in &keys {
        let (tenant, purpose, version): (uuid::Uuid, &str, i32) = (r.get(0), r.get(1), r.get(2));
        let aad = DataKey::wrap_aad(&tenant, purpose, u32::try_from(version)?);
        let wrapped = again(r.get(3), &aad)
            .with_context(|| format!("tenant key {tenant} {purpose} v{version}"))?;
        tx.execute(
            "UPDATE tenant_keys SET wrapped = $4 WHERE tenant_id = $1 AND purpose = $2 AND version = $3",
            &[&tenant, &purpose, &version, &wrapped],
        )
        .await?;
    }
    let totp = tx
        .query(
            "SELECT id, totp_wrapped FROM operators WHERE totp_wrapped IS NOT NULL ORDER BY id FOR UPDATE",
            &[],
        )
        .await?;
    for r in &totp {
        let id: &str = r.get(0);
        let wrapped = again(r.get(1), &crate::crypto::operator_totp_aad(id))
            .with_context(|| format!("operator {id}'s TOTP secret"))?;
        tx.execute(
            "UPDATE operators SET totp_wrapped = $2 WHERE id = $1",
            &[&id, &wrapped],
        )
        .await?;
    }
    let check = tx
        .query_one("SELECT wrapped FROM master_key_check FOR UPDATE", &[])
        .await?;
    let wrapped = again(check.get(0), CHECK_AAD)?;
    tx.execute("UPDATE master_key_check SET wrapped = $1", &[&wrapped])
        .await?;
    let old_backups: i64 = tx
        .query_one(
            "SELECT count(*) FROM backups WHERE tenant_id IS NULL AND destroyed_at IS NULL",
            &[],
        )
        .await?
        .get(0);
    super::oplog::append(
        &tx,
        actor,
        "keys.rotate_master",
        "",
        &serde_json::json!({
            "tenant_keys": keys.len(),
            "totp_secrets": totp.len(),
            "old_catalog_backups": old_backups,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok((keys.len(), totp.len(), old_backups))
}
