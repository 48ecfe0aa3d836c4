//! Operator actions inside a tenant's database: adding staff (the first
//! administrator comes this way) and seeding the demo.

use anyhow::Context;

use crate::catalog::TenantRecord;
use crate::crypto::{DataKey, FieldCipher};
use crate::platform::Platform;
use crate::tenant::audit::{self, Actor};
use crate::tenant::forms::definition::FormDefinition;
use crate::tenant::forms::store;
use crate::tenant::staff::pages::{create_staff, encrypt_totp, ensure_department};
use crate::tenant::staff::{hash_password, new_totp_secret, totp_base32, Role};

/// The tenant's field cipher, from its wrapped keys in the catalog.
pub async fn tenant_cipher(p: &Platform, rec: &TenantRecord) -> anyhow::Result<FieldCipher> {
    let mut keys = Vec::new();
    for k in p.catalog.keys(rec.id, "data").await? {
        keys.push((
            k.version,
            DataKey::unwrap(p.keys.as_ref(), &k.wrapped, &rec.id, k.version)?,
        ));
    }
    Ok(FieldCipher::new(rec.crypto_id, keys)?)
}

/// Adds a staff member; returns the one-time setup token.
pub async fn add_staff(
    p: &Platform,
    rec: &TenantRecord,
    email: &str,
    name: &str,
    role: Role,
    department: Option<&str>,
) -> anyhow::Result<String> {
    let mut conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    let (_, token) = create_staff(
        &mut conn.client,
        &Actor::Operator,
        email,
        name,
        role,
        department,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", describe(e)))?;
    Ok(token)
}

/// [`crate::catalog::Catalog::move_state`] for a command or the console: a tenant
/// made active is first checked to be under its newest data key (a data-key
/// rotation cut short is refused: `data_key::check`) and opened to writes again,
/// before it takes requests (a final export may have closed its database to them:
/// `final_export::reopen_writes`).
pub async fn move_state(
    p: &Platform,
    rec: &TenantRecord,
    from: &[crate::catalog::TenantState],
    to: crate::catalog::TenantState,
) -> anyhow::Result<bool> {
    if to != crate::catalog::TenantState::Active {
        return p.catalog.move_state(rec.id, from, to).await;
    }
    // Not while its data key is being rotated (the rotation takes the same lock).
    let Some(lock) = crate::control::data_key::key_lock(p, rec).await? else {
        anyhow::bail!(
            "テナント「{}」の鍵の更新が実行中です。終わってから再開してください / a data-key rotation of tenant {} is running; resume it when the rotation has finished",
            rec.slug,
            rec.slug
        );
    };
    let moved = async {
        crate::control::data_key::check(p, rec).await?;
        crate::control::final_export::reopen_writes(p, rec).await?;
        p.catalog.move_state(rec.id, from, to).await
    }
    .await;
    crate::control::data_key::key_unlock(lock, rec).await;
    moved
}

/// The longest reason an operator may give for reaching a municipality's data.
pub const REASON_MAX: usize = 500;

/// The reason given, trimmed; refused when empty or too long.
pub fn reason(text: &str) -> anyhow::Result<String> {
    let r = text.trim();
    anyhow::ensure!(
        !r.is_empty(),
        "--reason が空です。自治体からの依頼・承認や障害対応の番号など、理由を書いてください / --reason is empty: say why (the municipality's request or approval, an incident's reference)"
    );
    anyhow::ensure!(
        r.chars().count() <= REASON_MAX,
        "--reason は{REASON_MAX}文字までです / --reason is longer than {REASON_MAX} characters"
    );
    Ok(r.to_owned())
}

/// An operator reaching into a municipality's data (one of its backups decrypted, a
/// copy restored from one), put in the municipality's own operation log before it
/// happens, with who (`by`) and why: the city's administrators see every such act
/// (operator `operator`, action `operator.…`) and can ask about it.
pub async fn record_operator_act(
    p: &Platform,
    rec: &TenantRecord,
    by: &str,
    action: &str,
    target: &str,
    reason: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    let mut conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    let mut detail = detail;
    if let Some(d) = detail.as_object_mut() {
        d.insert("by".into(), by.into());
        d.insert("reason".into(), reason.into());
    }
    audit::record(&mut conn.client, &Actor::Operator, action, target, detail)
        .await
        .map_err(|e| anyhow::anyhow!("{}", describe(e)))
}

/// Opens the admin screen again to every network (no address rule, both zones): for
/// a city whose administrators all shut themselves out (an office's address changed,
/// a rule typed wrong). Logged in the tenant's operation log as the operator's act.
pub async fn reset_access(p: &Platform, rec: &TenantRecord) -> anyhow::Result<()> {
    let mut conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    let tx = conn.client.transaction().await?;
    let before = tx
        .query_one("SELECT admin_cidrs::text[], admin_zones FROM settings", &[])
        .await?;
    let (cidrs, zones): (Vec<String>, Vec<String>) = (before.get(0), before.get(1));
    tx.execute(
        "UPDATE settings SET admin_cidrs = '{}', admin_zones = '{internet,lgwan}'",
        &[],
    )
    .await?;
    crate::tenant::audit::append(
        &tx,
        &Actor::Operator,
        "access.reset",
        "settings",
        serde_json::json!({ "cidrs_before": cidrs, "zones_before": zones }),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", describe(e)))?;
    tx.commit().await?;
    Ok(())
}

/// Incident response: revokes every API token still valid (the integrations stop
/// until the municipality's administrator issues new ones), each logged in the
/// tenant's operation log. Works on a suspended tenant. Returns how many.
pub async fn revoke_api_tokens(p: &Platform, rec: &TenantRecord) -> anyhow::Result<usize> {
    let mut conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    let tx = conn.client.transaction().await?;
    let revoked = tx
        .query(
            "UPDATE api_tokens SET revoked_at = now() WHERE revoked_at IS NULL RETURNING id, name",
            &[],
        )
        .await?;
    for r in &revoked {
        let (id, name): (i64, String) = (r.get(0), r.get(1));
        crate::tenant::audit::append(
            &tx,
            &Actor::Operator,
            "api_token.revoke",
            &id.to_string(),
            serde_json::json!({ "name": name, "incident": true }),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", describe(e)))?;
    }
    tx.commit().await?;
    Ok(revoked.len())
}

/// What disabling a staff account found.
#[derive(Debug, PartialEq, Eq)]
pub struct Disabled {
    /// The account's id (what the operators' log records, not the address).
    pub staff_id: i64,
    /// It was enabled until now.
    pub changed: bool,
    /// Administrators still enabled: none means `add-staff` must make one.
    pub admins_left: i64,
}

/// Incident response: disables a staff account, ends its sessions and its unused
/// setup links, and clears its password and TOTP secret (an administrator's too, even
/// the last: `add-staff` makes a new one). Enabled again later, the account signs in
/// only after a new setup link: whoever took it over does not get it back. Works on a
/// suspended tenant.
pub async fn disable_staff(
    p: &Platform,
    rec: &TenantRecord,
    email: &str,
) -> anyhow::Result<Disabled> {
    let mut conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    let tx = conn.client.transaction().await?;
    // As sign-in reads an address.
    let email = crate::ja::nfkc(email.trim()).to_lowercase();
    let Some(row) = tx
        .query_opt(
            "SELECT id, disabled FROM staff WHERE email = $1 FOR UPDATE",
            &[&email],
        )
        .await?
    else {
        anyhow::bail!("職員 {email} はいません / no staff account {email}");
    };
    let (id, was): (i64, bool) = (row.get(0), row.get(1));
    tx.execute(
        "UPDATE staff SET disabled = true, password_hash = NULL, totp_secret = NULL, totp_enabled = false,
                totp_last_step = 0, updated_at = now() WHERE id = $1",
        &[&id],
    )
    .await?;
    tx.execute("DELETE FROM staff_sessions WHERE staff_id = $1", &[&id])
        .await?;
    crate::tenant::staff::void_setup_links(&tx, id)
        .await
        .map_err(|e| anyhow::anyhow!("{}", describe(e)))?;
    crate::tenant::audit::append(
        &tx,
        &Actor::Operator,
        "staff.update",
        &id.to_string(),
        serde_json::json!({ "disabled": true, "credentials_cleared": true, "incident": true }),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", describe(e)))?;
    let admins_left: i64 = tx
        .query_one(
            "SELECT count(*) FROM staff WHERE role = 'admin' AND NOT disabled",
            &[],
        )
        .await?
        .get(0);
    tx.commit().await?;
    Ok(Disabled {
        staff_id: id,
        changed: !was,
        admins_left,
    })
}

/// An error for an operator: a refusal as it was worded, else the error.
pub fn describe(e: crate::error::AppError) -> String {
    match e {
        crate::error::AppError::BadRequest(m) => m,
        other => format!("{other:#}"),
    }
}

/// What `madoguchi demo` prints for each tenant.
#[derive(Debug)]
pub struct DemoAccount {
    pub email: String,
    pub password: String,
    pub totp_secret: String,
    pub form_path: Option<String>,
}

/// Makes the demo administrator usable with a fresh password and TOTP secret (printed
/// once by the caller) and, if the tenant has no form yet, publishes the sample
/// 粗大ごみ収集申込 form.
pub async fn seed_demo(p: &Platform, rec: &TenantRecord) -> anyhow::Result<DemoAccount> {
    let cipher = tenant_cipher(p, rec).await?;
    let mut conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    let email = format!("admin@{}.example.jp", rec.slug);
    let password = crate::crypto::random_token(12);
    let secret = new_totp_secret();
    let hash = hash_password(&password).map_err(|e| anyhow::anyhow!("{}", describe(e)))?;
    let tx = conn.client.transaction().await?;
    // What is sealed here must be under the key the database is at: a data-key
    // rotation either waits for this transaction (and seals it again) or finished
    // first, and then this refuses rather than seal with the replaced key.
    let at = crate::tenant::rekey::index_version_locked(&tx).await?;
    if at > cipher.current_version() {
        anyhow::bail!(
            "tenant {}'s data key was rotated meanwhile (database at version {at}); run the command again",
            rec.slug
        );
    }
    let dept = ensure_department(&tx, "環境政策課")
        .await
        .map_err(|e| anyhow::anyhow!("{}", describe(e)))?;
    let staff_id: i64 = tx
        .query_one(
            "INSERT INTO staff (email, display_name, role) VALUES ($1, 'デモ管理者', 'admin')
             ON CONFLICT (email) DO UPDATE SET role = 'admin', disabled = false RETURNING id",
            &[&email],
        )
        .await?
        .get(0);
    let encrypted =
        encrypt_totp(&cipher, staff_id, &secret).map_err(|e| anyhow::anyhow!("{}", describe(e)))?;
    tx.execute(
        "UPDATE staff SET password_hash = $2, totp_secret = $3, totp_enabled = true, totp_last_step = 0,
                failed_attempts = 0, locked_until = NULL WHERE id = $1",
        &[&staff_id, &hash, &encrypted],
    )
    .await?;
    audit::append(
        &tx,
        &Actor::Operator,
        "demo.seed",
        &staff_id.to_string(),
        serde_json::json!({ "role": "admin", "department": dept }),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", describe(e)))?;
    let has_forms: bool = tx
        .query_one("SELECT EXISTS (SELECT 1 FROM forms)", &[])
        .await?
        .get(0);
    let mut form_path = None;
    if !has_forms {
        let def =
            FormDefinition::from_json(include_str!("samples/bulky-waste.json")).map_err(|p| {
                anyhow::anyhow!(
                    "sample form: {}",
                    p.into_iter().map(|p| p.en).collect::<Vec<_>>().join("; ")
                )
            })?;
        let json = serde_json::to_value(&def)?;
        let public_id = store::new_public_id();
        let form_id: i64 = tx
            .query_one(
                "INSERT INTO forms (public_id, department_id, draft, current_version, created_by) VALUES ($1, $2, $3, 1, $4) RETURNING id",
                &[&public_id, &dept, &json, &staff_id],
            )
            .await?
            .get(0);
        tx.execute("INSERT INTO form_versions (form_id, version, definition, published_by) VALUES ($1, 1, $2, $3)", &[&form_id, &json, &staff_id])
            .await?;
        form_path = Some(format!("/f/{public_id}"));
    } else {
        let row = tx
            .query_opt(
                "SELECT public_id FROM forms WHERE current_version IS NOT NULL ORDER BY id LIMIT 1",
                &[],
            )
            .await?;
        form_path = row
            .map(|r| format!("/f/{}", r.get::<_, String>(0)))
            .or(form_path);
    }
    tx.commit().await.context("seeding the demo")?;
    Ok(DemoAccount {
        email,
        password,
        totp_secret: totp_base32(&secret),
        form_path,
    })
}

/// Imports a form definition (a `madoguchi.form/1` JSON document, e.g. a template
/// shared by another municipality) into a tenant, optionally publishing it; returns
/// the form's public path.
pub async fn import_form(
    p: &Platform,
    rec: &TenantRecord,
    json: &str,
    department: &str,
    publish: bool,
) -> anyhow::Result<String> {
    let def = FormDefinition::from_json(json).map_err(|problems| {
        anyhow::anyhow!(
            "{}",
            problems
                .into_iter()
                .map(|p| format!("{} / {}", p.ja, p.en))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let mut conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    let dept = ensure_department(&conn.client, department)
        .await
        .map_err(|e| anyhow::anyhow!("{}", describe(e)))?;
    let form_id = store::create(
        &mut conn.client,
        &Actor::Operator,
        dept,
        &def,
        serde_json::json!({ "imported": true }),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", describe(e)))?;
    if publish {
        store::publish(&mut conn.client, form_id, &Actor::Operator, None)
            .await
            .map_err(|e| anyhow::anyhow!("{}", describe(e)))?;
    }
    let public_id: String = conn
        .client
        .query_one("SELECT public_id FROM forms WHERE id = $1", &[&form_id])
        .await?
        .get(0);
    Ok(format!("/f/{public_id}"))
}

/// Creates an API token for a tenant; returns it (shown once).
pub async fn api_token(
    p: &Platform,
    rec: &TenantRecord,
    name: &str,
    scopes: &[String],
    network: &crate::tenant::api::tokens::TokenNetwork,
) -> anyhow::Result<String> {
    let mut conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    crate::tenant::api::tokens::create(
        &mut conn.client,
        &Actor::Operator,
        None,
        name,
        scopes,
        network,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", describe(e)))
}
