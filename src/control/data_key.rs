//! Rotating a municipality's data key (`madoguchi tenant rotate-data-key`): a new
//! version in the catalog, escrowed by a catalog backup before anything is sealed
//! with it, then every value in the municipality's database sealed again with it
//! and its blind indexes computed again (`crate::tenant::rekey`).
//!
//! The municipality is suspended meanwhile (its pages answer 503), so the service
//! neither reads a half-done database nor writes with a key it is about to lose.
//! A rotation cut short (before or during the pass) leaves the database as it was,
//! under the older key; the catalog's newest version is then ahead of the database's
//! and the municipality cannot be resumed until the same command is run again, which
//! finishes it with the key already made.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::catalog::{TenantRecord, TenantState};
use crate::control::backup::BackupStore;
use crate::crypto::DataKey;
use crate::platform::Platform;
use crate::tenant::rekey::{self, Rekeyed};

/// How long the rotation waits for the service's connections to the database to end
/// after the municipality was suspended.
const QUIET_WAIT: Duration = Duration::from_secs(30);

/// What a rotation did.
#[derive(Debug)]
pub struct Rotation {
    /// Whether a new key version was made (false: one cut short was finished).
    pub new_key: bool,
    /// The catalog backup made to escrow the new key.
    pub catalog_backup: Option<String>,
    pub rekeyed: Rekeyed,
}

pub async fn rotate(
    p: &Platform,
    store: &dyn BackupStore,
    slug: &str,
    actor: &str,
) -> anyhow::Result<Rotation> {
    let rec = p
        .catalog
        .tenant_by_slug(slug)
        .await?
        .with_context(|| format!("テナント「{slug}」はありません / no tenant {slug}"))?;
    match rec.state {
        TenantState::Suspended => {}
        TenantState::Active => bail!(
            "テナント「{slug}」は稼働中です。先に一時停止してください（madoguchi tenant suspend {slug}）。更新の間、窓口は 503 を返します / tenant {slug} is active: suspend it first (madoguchi tenant suspend {slug}); its pages answer 503 during the rotation"
        ),
        other => bail!(
            "テナント「{slug}」は {} の状態です。停止中のテナントだけ鍵を更新できます / tenant {slug} is {}: only a suspended tenant's data key is rotated",
            other.as_str(),
            other.as_str()
        ),
    }
    // A resume cannot slip in between this check and the work: it takes the same lock.
    let lock = key_lock(p, &rec).await?.with_context(|| {
        format!("テナント「{slug}」の鍵の更新か再開が実行中です / a data-key rotation or a resume of tenant {slug} is running")
    })?;
    let done = rotate_locked(p, store, &rec, actor).await;
    key_unlock(lock, &rec).await;
    done
}

async fn rotate_locked(
    p: &Platform,
    store: &dyn BackupStore,
    rec: &TenantRecord,
    actor: &str,
) -> anyhow::Result<Rotation> {
    let slug = rec.slug.as_str();
    let state = p.catalog.tenant_by_id(rec.id).await?.map(|r| r.state);
    if state != Some(TenantState::Suspended) {
        bail!("tenant {slug} changed state meanwhile; nothing was changed");
    }
    let rec = rec.clone();
    let mut conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), &rec)
        .await?;
    wait_until_quiet(&conn.client, slug).await?;
    let in_database = rekey::index_version(&conn.client).await?;
    let newest = newest_version(p, &rec).await?;
    if in_database > newest {
        bail!(ahead_message(slug, in_database, newest));
    }
    if in_database == newest && canary_behind(p, &rec, newest).await? {
        // The pass committed and only the erasure canary was left to make again.
        crate::control::progress::step(&format!(
            "finishing the rotation of {slug}: the erasure canary under version {newest}"
        ));
        canary_under_newest(p, &rec).await?;
        let rekeyed = Rekeyed {
            from: newest,
            to: newest,
            ..Rekeyed::default()
        };
        crate::control::oplog::record(
            &p.catalog,
            actor,
            "tenant.rotate_data_key",
            slug,
            serde_json::json!({ "to": newest, "new_key": false, "canary_only": true }),
        )
        .await?;
        return Ok(Rotation {
            new_key: false,
            catalog_backup: None,
            rekeyed,
        });
    }
    let new_key = in_database == newest;
    if new_key {
        crate::control::progress::step(&format!(
            "making data key version {} of {slug}",
            newest + 1
        ));
        add_version(p, &rec, newest + 1).await?;
    } else {
        crate::control::progress::step(&format!(
            "finishing the rotation of {slug} to version {newest}, cut short before"
        ));
    }
    // The catalog holds the only wrapped copy of the new key: a backup of it exists
    // before a single value depends on it (also when finishing a rotation whose
    // catalog backup failed).
    let catalog_backup = crate::control::backup::cover_keys(p, store, &rec)
        .await
        .context("backing up the catalog with the new key; nothing was sealed with it yet, run the command again")?;
    let cipher = crate::control::tenant_admin::tenant_cipher(p, &rec).await?;
    crate::control::progress::step(&format!(
        "sealing every value of {slug} again with version {}",
        cipher.current_version()
    ));
    let rekeyed = rekey::rekey(&mut conn.client, &cipher).await.context(
        "sealing the values again (nothing changed in the database; run the command again)",
    )?;
    canary_under_newest(p, &rec).await?;
    crate::control::oplog::record(
        &p.catalog,
        actor,
        "tenant.rotate_data_key",
        slug,
        serde_json::json!({
            "from": rekeyed.from,
            "to": rekeyed.to,
            "new_key": new_key,
            "values": rekeyed.values(),
            "indexes": rekeyed.indexes,
            "catalog_backup": catalog_backup,
        }),
    )
    .await?;
    Ok(Rotation {
        new_key,
        catalog_backup,
        rekeyed,
    })
}

/// The lock a rotation holds, and a tenant being made active takes too (on an admin
/// connection of its own; `None`: held elsewhere).
pub async fn key_lock(
    p: &Platform,
    rec: &TenantRecord,
) -> anyhow::Result<Option<crate::control::cluster::Conn>> {
    let admin = p.cluster.admin().await?;
    let got: bool = admin
        .client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtextextended('madoguchi.keys:' || $1::uuid::text, 0))",
            &[&rec.id],
        )
        .await?
        .get(0);
    Ok(got.then_some(admin))
}

/// Lets go of [`key_lock`] at once (closing the connection would too, a little later).
pub async fn key_unlock(lock: crate::control::cluster::Conn, rec: &TenantRecord) {
    let _ = lock
        .client
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended('madoguchi.keys:' || $1::uuid::text, 0))",
            &[&rec.id],
        )
        .await;
}

/// Refuses to open a municipality whose database is not under its newest data key:
/// a rotation cut short, or a catalog restored from before one. Called before a
/// tenant is made active.
pub async fn check(p: &Platform, rec: &TenantRecord) -> anyhow::Result<()> {
    let conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    let in_database = rekey::index_version(&conn.client).await?;
    let newest = newest_version(p, rec).await?;
    let slug = &rec.slug;
    if in_database < newest {
        bail!(
            "テナント「{slug}」の鍵の更新が終わっていません。madoguchi tenant rotate-data-key {slug} を実行して終えてから再開してください / the data-key rotation of {slug} was cut short (the database is under version {in_database}, the newest key is {newest}): run `madoguchi tenant rotate-data-key {slug}` to finish it, then resume"
        );
    }
    if in_database > newest {
        bail!(ahead_message(slug, in_database, newest));
    }
    Ok(())
}

/// Brings a database restored from a backup made before a rotation under the newest
/// key (a copy gets every version of its source's keys). Returns what was done, if
/// anything was.
pub async fn bring_up_to_date(p: &Platform, rec: &TenantRecord) -> anyhow::Result<Option<Rekeyed>> {
    let mut conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    let cipher = crate::control::tenant_admin::tenant_cipher(p, rec).await?;
    if rekey::index_version(&conn.client).await? >= cipher.current_version() {
        return Ok(None);
    }
    crate::control::progress::step(&format!(
        "sealing the restored values again with data key version {}",
        cipher.current_version()
    ));
    Ok(Some(rekey::rekey(&mut conn.client, &cipher).await?))
}

fn ahead_message(slug: &str, in_database: u32, newest: u32) -> String {
    format!(
        "テナント「{slug}」のデータは鍵の版 {in_database} で暗号化されていますが、カタログには版 {newest} までしかありません。鍵の更新より前のカタログが復元されています / the database of {slug} is sealed with data key version {in_database}, which the catalog does not hold (newest {newest}): the catalog was restored from before a data-key rotation; restore a catalog backup made after it (ops/runbooks/keys.md)"
    )
}

async fn newest_version(p: &Platform, rec: &TenantRecord) -> anyhow::Result<u32> {
    p.catalog
        .keys(rec.id, "data")
        .await?
        .last()
        .map(|k| k.version)
        .with_context(|| format!("tenant {} has no data key", rec.slug))
}

/// Adds data key `version`, unless another rotation added it meanwhile.
async fn add_version(p: &Platform, rec: &TenantRecord, version: u32) -> anyhow::Result<()> {
    let key = DataKey::generate();
    let wrapped = key.wrap(p.keys.as_ref(), &rec.id, version)?;
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    let newest = crate::control::provision::newest_key_locked(&tx, rec.id, "data").await?;
    let version = i32::try_from(version)?;
    if newest >= version {
        bail!(
            "another rotation of {} made key version {newest} meanwhile; run the command again",
            rec.slug
        );
    }
    tx.execute(
        "INSERT INTO tenant_keys (tenant_id, purpose, version, wrapped, provider) VALUES ($1, 'data', $2, $3, $4)",
        &[&rec.id, &version, &wrapped, &p.keys.id()],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Makes the erasure canary again under the newest data key, if it is under an older
/// one: older versions may be retired, and an erasure checks that no key opens it.
/// The erasure canary is under an older version than `newest` (a tenant made before
/// canaries has none, and counts as not behind).
async fn canary_behind(p: &Platform, rec: &TenantRecord, newest: u32) -> anyhow::Result<bool> {
    let version: Option<i32> = p
        .catalog
        .client()
        .await?
        .query_one(
            "SELECT canary_key_version FROM tenants WHERE id = $1",
            &[&rec.id],
        )
        .await?
        .get(0);
    Ok(version.is_some_and(|v| i64::from(v) < i64::from(newest)))
}

async fn canary_under_newest(p: &Platform, rec: &TenantRecord) -> anyhow::Result<()> {
    let (version, key) = crate::control::backup::data_key(p, rec).await?;
    let canary = crate::control::erase::make_canary(&key, &rec.crypto_id, version)?;
    p.catalog
        .client()
        .await?
        .execute(
            "UPDATE tenants SET canary = $2, canary_key_version = $3
              WHERE id = $1 AND (canary_key_version IS NULL OR canary_key_version < $3)",
            &[&rec.id, &canary, &i32::try_from(version)?],
        )
        .await?;
    Ok(())
}

/// Deletes the tenant's data-key versions nothing needs any more: older than the
/// newest and than one made over a day ago, with its database under the newest, and
/// named by none of its backups
/// (neither the version its values are sealed with nor the one its backup key is
/// wrapped with; a backup from before the former was recorded keeps every version up
/// to its key's). Nothing while its backups are held. Run after retention, so that a
/// version goes with the last backup that needed it; catalog backups made before keep
/// a wrapped copy until they are pruned too. Returns the versions deleted.
pub async fn retire_unused(p: &Platform, rec: &TenantRecord) -> anyhow::Result<Vec<u32>> {
    let conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    let in_database = rekey::index_version(&conn.client).await?;
    drop(conn);
    let newest = newest_version(p, rec).await?;
    if in_database != newest {
        return Ok(Vec::new());
    }
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    tx.query_one("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", &[&rec.id])
        .await?;
    let held = tx
        .query_opt(
            "SELECT 1 FROM backup_holds WHERE tenant_slug = $1",
            &[&rec.slug],
        )
        .await?
        .is_some();
    if held {
        return Ok(Vec::new());
    }
    let retired: Vec<u32> = tx
        .query(
            "DELETE FROM tenant_keys k
              WHERE k.tenant_id = $1 AND k.purpose = 'data' AND k.version < $2
                -- Older than a version made over a day ago: a backup begun before the
                -- rotation, under the version it replaced, has recorded itself by then.
                AND k.version < (SELECT coalesce(max(n.version), 0) FROM tenant_keys n
                                  WHERE n.tenant_id = $1 AND n.purpose = 'data'
                                    AND n.created_at <= now() - interval '1 day')
                AND k.version IS DISTINCT FROM (SELECT canary_key_version FROM tenants WHERE id = $1)
                AND NOT EXISTS (SELECT 1 FROM backups b
                                 WHERE b.tenant_id = $1
                                   AND (b.key_version = k.version OR b.data_key_version = k.version
                                        OR (b.data_key_version IS NULL AND k.version <= b.key_version)))
             RETURNING k.version",
            &[&rec.id, &i32::try_from(newest)?],
        )
        .await?
        .iter()
        .map(|r| u32::try_from(r.get::<_, i32>(0)))
        .collect::<Result<_, _>>()?;
    if !retired.is_empty() {
        crate::control::oplog::append(
            &tx,
            "retention",
            "tenant.retire_data_keys",
            &rec.slug,
            &serde_json::json!({ "versions": retired, "newest": newest }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(retired)
}

/// Waits for the service to let go of the suspended municipality's database: it
/// closes the pool when it hears of the suspension, once a request or a mail being
/// sent has finished. Other sessions (a backup, an operator's psql) may stay: the
/// pass's locks keep them from writing meanwhile.
async fn wait_until_quiet(db: &tokio_postgres::Client, slug: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let others: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
                &[&crate::control::cluster::SERVICE_APPLICATION],
            )
            .await?
            .get(0);
        if others == 0 {
            return Ok(());
        }
        if started.elapsed() >= QUIET_WAIT {
            bail!(
                "テナント「{slug}」のデータベースに窓口サービスの接続がまだ {others} 本あります（処理中のリクエストやメール送信）。しばらくしてからもう一度実行してください / the service still holds {others} connections to the database of {slug} after {} s (a request or a mail being sent?); nothing was changed, try again in a minute",
                QUIET_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
