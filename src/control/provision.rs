//! Provisioning a municipality: its data key, its own role and database, its schema.
//!
//! Every step can be repeated: a tenant left half-made (state `provisioning`) is
//! finished by running the same command again.

use anyhow::{bail, Context};
use tokio_postgres::error::SqlState;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::catalog::{quote_ident, TenantRecord, TenantState};
use crate::control::cluster::password_aad;
use crate::control::migrate::{migrate_tenant_to, SchemaTarget};
use crate::crypto::{random_token, DataKey};
use crate::domain::{HostName, Invalid, LocalGovCode, Slug};
use crate::platform::Platform;

/// What a tenant should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSpec {
    pub slug: Slug,
    pub name: String,
    pub code: LocalGovCode,
    pub hosts: Vec<HostName>,
    /// A training site (研修用; see `control::training`). Fixed at creation.
    pub training: bool,
}

impl TenantSpec {
    pub fn parse(slug: &str, name: &str, code: &str, hosts: &[String]) -> Result<Self, Invalid> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Invalid {
                ja: "団体名は1〜100文字で入力してください".into(),
                en: "name must be 1-100 characters".into(),
            });
        }
        let mut hosts = hosts
            .iter()
            .map(|h| HostName::parse(h))
            .collect::<Result<Vec<_>, _>>()?;
        hosts.sort();
        hosts.dedup();
        if hosts.is_empty() {
            return Err(Invalid {
                ja: "ホスト名を1つ以上指定してください".into(),
                en: "at least one host is required".into(),
            });
        }
        Ok(Self {
            slug: Slug::parse(slug)?,
            name: name.to_owned(),
            code: LocalGovCode::parse(code)?,
            hosts,
            training: false,
        })
    }
}

/// Creates a tenant, or finishes one left half-made. Refuses a slug that is
/// already an active or suspended tenant, and a host that belongs to another.
pub async fn provision(p: &Platform, spec: &TenantSpec) -> anyhow::Result<TenantRecord> {
    provision_at(p, spec, SchemaTarget::Newest).await
}

/// [`provision`], with the tenant's schema brought to `schema` (an older one only to
/// rehearse a later `migrate --all`).
pub async fn provision_at(
    p: &Platform,
    spec: &TenantSpec,
    schema: SchemaTarget,
) -> anyhow::Result<TenantRecord> {
    let rec = match p.catalog.tenant_by_slug(spec.slug.as_str()).await? {
        // A restore cut short (its tenant keeps another's crypto identity): finishing
        // it would put a half-restored database live.
        Some(rec) if rec.state == TenantState::Provisioning && rec.crypto_id != rec.id => bail!(
            "テナント「{}」はバックアップからのリストアが途中で止まったものです。`madoguchi backup restore` をもう一度実行してください（途中のものは片付けてからやり直します） / tenant {} is a restore that was cut short; run `madoguchi backup restore` again (it clears what was left first)",
            rec.slug,
            rec.slug
        ),
        // Finished as what it was begun as: a municipality's site never becomes a
        // training site (whose applications a reset deletes), nor the other way.
        Some(rec) if rec.state == TenantState::Provisioning && rec.training != spec.training => bail!(
            "テナント「{}」は training = {} で作成が始まっています。同じ指定で実行してください / tenant {} was begun with training = {}; finish it the same way",
            rec.slug,
            rec.training,
            rec.slug,
            rec.training
        ),
        Some(rec) if rec.state == TenantState::Provisioning => {
            tracing::info!(tenant = %rec.slug, "resuming provisioning");
            rec
        }
        Some(rec) => bail!(
            "テナント「{}」は既に存在します / tenant {} already exists ({})",
            rec.slug,
            rec.slug,
            rec.state
        ),
        None => register(p, spec)
            .await
            .context("step 1/5: registering the tenant and its keys in the catalog")?,
    };
    finish(p, &rec, schema).await?;
    p.catalog
        .tenant_by_id(rec.id)
        .await?
        .context("tenant vanished from the catalog")
}

/// Steps 2–5, each idempotent.
pub(crate) async fn finish(
    p: &Platform,
    rec: &TenantRecord,
    schema: SchemaTarget,
) -> anyhow::Result<()> {
    let pw = crate::control::cluster::tenant_password(&p.catalog, p.keys.as_ref(), rec).await?;
    create_role(p, rec, &pw).await.with_context(|| {
        format!(
            "step 2/5: creating role {} (run the command again to resume)",
            rec.role
        )
    })?;
    create_database(p, rec).await.with_context(|| {
        format!(
            "step 3/5: creating database {} (run the command again to resume)",
            rec.database
        )
    })?;
    migrate_tenant_to(p, rec, schema)
        .await
        .context("step 4/5: migrating the tenant database (run the command again to resume)")?;
    write_settings(p, rec)
        .await
        .context("step 5/5: writing the tenant's settings (run the command again to resume)")?;
    p.catalog.set_state(rec.id, TenantState::Active).await?;
    Ok(())
}

async fn register(p: &Platform, spec: &TenantSpec) -> anyhow::Result<TenantRecord> {
    register_with(p, spec, None, vec![(1, DataKey::generate())]).await
}

/// Registers a tenant in the catalog with the given data keys (each version wrapped
/// for the new tenant) and crypto identity (`None`: its own id).
pub(crate) async fn register_with(
    p: &Platform,
    spec: &TenantSpec,
    crypto_id: Option<Uuid>,
    data_keys: Vec<(u32, DataKey)>,
) -> anyhow::Result<TenantRecord> {
    let id = Uuid::new_v4();
    let db = format!("t_{}", id.simple());
    let crypto_id = crypto_id.unwrap_or(id);
    let mut wrapped_keys = Vec::new();
    for (version, key) in &data_keys {
        wrapped_keys.push((
            i32::try_from(*version)?,
            key.wrap(p.keys.as_ref(), &id, *version)?,
        ));
    }
    let (canary_version, canary_key) = data_keys.last().context("no data key")?;
    let canary = crate::control::erase::make_canary(canary_key, &crypto_id, *canary_version)?;
    let canary_version = i32::try_from(*canary_version)?;
    let password = Zeroizing::new(random_token(32));
    let wrapped_pw = p.keys.wrap(password.as_bytes(), &password_aad(&id, 1))?;
    let provider = p.keys.id().to_owned();

    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    tx.execute(
        "INSERT INTO tenants (id, slug, name, local_gov_code, state, db_name, role_name, crypto_id, canary, canary_key_version, training)
         VALUES ($1, $2, $3, $4, 'provisioning', $5, $5, $6, $7, $8, $9)",
        &[&id, &spec.slug.as_str(), &spec.name, &spec.code.as_str(), &db, &crypto_id, &canary, &canary_version, &spec.training],
    )
    .await
    .map_err(|e| unique_violation(e, spec))?;
    for host in &spec.hosts {
        tx.execute(
            "INSERT INTO tenant_hosts (host, tenant_id) VALUES ($1, $2)",
            &[&host.as_str(), &id],
        )
        .await
        .map_err(|e| unique_violation(e, spec))?;
    }
    for (version, wrapped) in &wrapped_keys {
        tx.execute(
            "INSERT INTO tenant_keys (tenant_id, purpose, version, wrapped, provider) VALUES ($1, 'data', $2, $3, $4)",
            &[&id, version, wrapped, &provider],
        )
        .await?;
    }
    tx.execute(
        "INSERT INTO tenant_keys (tenant_id, purpose, version, wrapped, provider) VALUES ($1, 'db_password', 1, $2, $3)",
        &[&id, &wrapped_pw, &provider],
    )
    .await?;
    tx.commit().await?;
    p.catalog
        .tenant_by_id(id)
        .await?
        .context("tenant vanished from the catalog")
}

fn unique_violation(e: tokio_postgres::Error, spec: &TenantSpec) -> anyhow::Error {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        let what = e
            .as_db_error()
            .and_then(|d| d.constraint())
            .unwrap_or_default()
            .to_owned();
        if what.contains("host") {
            let hosts: Vec<&str> = spec.hosts.iter().map(HostName::as_str).collect();
            return anyhow::anyhow!(
                "ホスト名 {} は別のテナントが使用しています / host {} already belongs to another tenant",
                hosts.join(", "),
                hosts.join(", ")
            );
        }
        return anyhow::anyhow!(
            "テナント「{}」は既に存在します / tenant {} already exists",
            spec.slug,
            spec.slug
        );
    }
    e.into()
}

pub(crate) async fn create_role(
    p: &Platform,
    rec: &TenantRecord,
    password: &str,
) -> anyhow::Result<()> {
    let admin = p.cluster.admin().await?;
    // The password goes over as a SCRAM verifier, so not even the server's
    // statement log can show it.
    let verifier = scram_verifier(password);
    let role = quote_ident(&rec.role);
    let exists = admin
        .client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&rec.role])
        .await?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    admin
        .client
        .batch_execute(&format!(
            "{verb} ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT NOREPLICATION NOBYPASSRLS PASSWORD '{}'",
            verifier.replace('\'', "''")
        ))
        .await?;
    // A non-superuser admin (CREATEROLE) must be a member of the role to make it a database owner.
    let superuser: bool = admin
        .client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?
        .get(0);
    if !superuser {
        admin
            .client
            .batch_execute(&format!("GRANT {role} TO current_user"))
            .await?;
    }
    Ok(())
}

/// What `tenant rotate-password` did.
#[derive(Debug)]
pub struct NewPassword {
    pub version: u32,
    /// Sessions of the role ended (with `end_sessions`).
    pub ended: i64,
}

/// Gives a tenant's database role a new random password: the role's password, the
/// catalog's wrapped copy (a new version; older ones are deleted) and the operation
/// log change in one transaction, so neither is ever ahead of the other. The running
/// service reads it again when a new connection is refused with the old one; its open
/// connections go on unless `end_sessions` ends every session of the role (a
/// password that may have leaked): the service's requests on them fail once (503)
/// and it reconnects.
pub async fn rotate_password(
    p: &Platform,
    slug: &str,
    end_sessions: bool,
    actor: &str,
) -> anyhow::Result<NewPassword> {
    let rec = p
        .catalog
        .tenant_by_slug(slug)
        .await?
        .with_context(|| format!("テナント「{slug}」はありません / no tenant {slug}"))?;
    if !matches!(rec.state, TenantState::Active | TenantState::Suspended) {
        bail!(
            "テナント {slug} は {} の状態です。稼働中か停止中のテナントだけ、パスワードを変更できます / tenant {slug} is {}: only an active or suspended tenant's password is rotated",
            rec.state.as_str(),
            rec.state.as_str()
        );
    }
    let password = Zeroizing::new(random_token(32));
    let verifier = scram_verifier(&password);
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    let newest = newest_key_locked(&tx, rec.id, "db_password").await?;
    let version = newest + 1;
    let wrapped = p.keys.wrap(
        password.as_bytes(),
        &password_aad(&rec.id, u32::try_from(version)?),
    )?;
    tx.execute(
        "INSERT INTO tenant_keys (tenant_id, purpose, version, wrapped, provider) VALUES ($1, 'db_password', $2, $3, $4)",
        &[&rec.id, &version, &wrapped, &p.keys.id()],
    )
    .await?;
    tx.execute(
        "DELETE FROM tenant_keys WHERE tenant_id = $1 AND purpose = 'db_password' AND version < $2",
        &[&rec.id, &version],
    )
    .await?;
    // As at provisioning: a SCRAM verifier, so no statement log shows the password.
    tx.batch_execute(&format!(
        "ALTER ROLE {} PASSWORD '{}'",
        quote_ident(&rec.role),
        verifier.replace('\'', "''")
    ))
    .await?;
    crate::control::oplog::append(
        &tx,
        actor,
        "tenant.rotate_password",
        slug,
        &serde_json::json!({ "version": version, "end_sessions": end_sessions }),
    )
    .await?;
    tx.commit().await?;
    let ended = if end_sessions {
        c.query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1",
            &[&rec.role],
        )
        .await?
        .get(0)
    } else {
        0
    };
    Ok(NewPassword {
        version: u32::try_from(version)?,
        ended,
    })
}

/// A SCRAM-SHA-256 verifier with one PBKDF2 iteration. Iterations slow down guessing
/// of human passwords; a tenant role's password is 256 random bits, which no
/// iteration count makes stronger, while 4,096 iterations (the usual default) cost
/// several milliseconds of CPU on both sides of every new connection, and the front
/// tier opens connections often when many tenants share the budget.
fn scram_verifier(password: &str) -> String {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use rand::RngCore;
    use sha2::{Digest, Sha256};

    fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    // PBKDF2 with one iteration: U1 = HMAC(password, salt ‖ INT(1)).
    let salted = Zeroizing::new(hmac(
        password.as_bytes(),
        &[&salt[..], &1u32.to_be_bytes()].concat(),
    ));
    let client_key = Zeroizing::new(hmac(&salted, b"Client Key"));
    let stored_key = Sha256::digest(&*client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256$1:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

pub(crate) async fn create_database(p: &Platform, rec: &TenantRecord) -> anyhow::Result<()> {
    let admin = p.cluster.admin().await?;
    let db = quote_ident(&rec.database);
    let exists = admin
        .client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&rec.database],
        )
        .await?
        .is_some();
    if !exists {
        admin
            .client
            .batch_execute(&format!(
                "CREATE DATABASE {db} OWNER {} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'",
                quote_ident(&rec.role)
            ))
            .await?;
        // One database more: autovacuum's round may need to be longer.
        crate::control::cluster::tune_autovacuum_on(&admin.client).await;
    }
    admin
        .client
        .batch_execute(&format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"))
        .await?;
    Ok(())
}

/// The newest version of the tenant's keys for `purpose` (0: none), with the tenant's
/// row locked for the rest of `tx`: two rotations at once make one version each.
pub(crate) async fn newest_key_locked(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: Uuid,
    purpose: &str,
) -> anyhow::Result<i32> {
    tx.query_one("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", &[&tenant])
        .await?;
    Ok(tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM tenant_keys WHERE tenant_id = $1 AND purpose = $2",
            &[&tenant, &purpose],
        )
        .await?
        .get(0))
}

pub(crate) async fn write_settings(p: &Platform, rec: &TenantRecord) -> anyhow::Result<()> {
    let conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    conn.client
        .execute(
            "INSERT INTO settings (tenant_id, name, local_gov_code) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, local_gov_code = excluded.local_gov_code, updated_at = now()
             WHERE (settings.name, settings.local_gov_code) IS DISTINCT FROM (excluded.name, excluded.local_gov_code)",
            &[&rec.id, &rec.name, &rec.code],
        )
        .await?;
    Ok(())
}

/// Updates name, code and hosts of an existing tenant to match `spec`; returns what changed.
pub async fn reconcile(
    p: &Platform,
    rec: &TenantRecord,
    spec: &TenantSpec,
) -> anyhow::Result<Vec<String>> {
    let mut changes = Vec::new();
    let wanted_hosts: Vec<String> = spec.hosts.iter().map(|h| h.as_str().to_owned()).collect();
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    if rec.name != spec.name || rec.code != spec.code.as_str() {
        tx.execute(
            "UPDATE tenants SET name = $2, local_gov_code = $3, updated_at = now() WHERE id = $1",
            &[&rec.id, &spec.name, &spec.code.as_str()],
        )
        .await?;
        changes.push(format!(
            "name/code: {} {} -> {} {}",
            rec.name, rec.code, spec.name, spec.code
        ));
    }
    if rec.hosts != wanted_hosts {
        tx.execute(
            "DELETE FROM tenant_hosts WHERE tenant_id = $1 AND NOT (host = ANY($2))",
            &[&rec.id, &wanted_hosts],
        )
        .await?;
        for h in &wanted_hosts {
            tx.execute("INSERT INTO tenant_hosts (host, tenant_id) VALUES ($1, $2) ON CONFLICT (host) DO NOTHING", &[h, &rec.id])
                .await?;
            let owner: Uuid = tx
                .query_one("SELECT tenant_id FROM tenant_hosts WHERE host = $1", &[h])
                .await?
                .get(0);
            if owner != rec.id {
                bail!("ホスト名 {h} は別のテナントが使用しています / host {h} already belongs to another tenant");
            }
        }
        changes.push(format!(
            "hosts: {} -> {}",
            rec.hosts.join(","),
            wanted_hosts.join(",")
        ));
    }
    tx.commit().await?;
    if !changes.is_empty() {
        let updated = p
            .catalog
            .tenant_by_id(rec.id)
            .await?
            .context("tenant vanished from the catalog")?;
        write_settings(p, &updated).await?;
    }
    Ok(changes)
}
