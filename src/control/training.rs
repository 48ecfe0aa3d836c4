//! Training sites (研修用): a municipality's practice site, where groups of staff
//! learn the product (操作研修) one session after another. Between sessions
//! `madoguchi tenant training-reset` gives the next group a clean site: every
//! application, draft, form, session and setup link the last group made is deleted,
//! the trainees' seats are made ready to be set up again (a fresh setup link each,
//! to hand out), and the practice forms are published anew. Only a tenant created
//! as a training site (`training = true`, fixed at creation) is ever reset this way;
//! its operation log is kept (the reset is entered in it).

use anyhow::Context;

use crate::catalog::{TenantRecord, TenantState};
use crate::platform::Platform;
use crate::tenant::audit::{self, Actor};
use crate::tenant::forms::definition::FormDefinition;
use crate::tenant::forms::store;
use crate::tenant::staff::pages::{ensure_department, new_setup_token};

/// Seats at most: a session of the city's 操作研修 is about 20 people.
pub const MAX_SEATS: u32 = 100;

/// The practice form published when no other is given.
pub const SAMPLE_FORM: &str = include_str!("samples/bulky-waste.json");

/// A trainee's account: its address and a setup link's token (`/admin/setup/…`).
#[derive(Debug, Clone)]
pub struct Seat {
    pub email: String,
    pub setup_token: String,
}

/// What a reset did.
#[derive(Debug)]
pub struct Reset {
    pub applications: i64,
    pub forms: i64,
    pub seats: Vec<Seat>,
    /// The practice forms' public paths.
    pub published: Vec<String>,
}

/// A trainee's address on a site: `trainee07@<slug>.training.invalid` (a domain that
/// never receives mail).
pub fn seat_email(slug: &str, n: u32) -> String {
    format!("trainee{n:02}@{slug}.training.invalid")
}

/// Taken first: a send under way is waited for, and none begins until the reset is
/// done (its application would name a form being deleted).
const LOCK_SQL: &str =
    "LOCK TABLE forms, form_versions, submissions, citizen_drafts IN SHARE ROW EXCLUSIVE MODE";

/// Everything a session leaves behind, children before what they point at. Staff,
/// departments, the site's settings and the operation log stay; so do setup links
/// not yet used (the instructor's), the seats' own being replaced after.
const CLEAR_SQL: &str = "DELETE FROM outbox;
DELETE FROM attachments;
DELETE FROM submission_places;
DELETE FROM submission_deletions;
DELETE FROM submissions;
DELETE FROM draft_identities;
DELETE FROM identity_requests;
DELETE FROM citizen_drafts;
DELETE FROM citizen_sign_ins;
DELETE FROM pow_used;
DELETE FROM option_places;
DELETE FROM form_versions;
DELETE FROM forms;
DELETE FROM staff_sessions;
DELETE FROM staff_setup_tokens WHERE used_at IS NOT NULL OR expires_at < now();
UPDATE api_tokens SET revoked_at = now() WHERE revoked_at IS NULL;";

/// Resets the training site `rec` for the next session: see the module's comment.
/// `forms` are `madoguchi.form/1` documents, each with the name it is reported by
/// (none: the sample form), all checked before anything is deleted; the seats belong
/// to `department` (職員). The deletion is in the operators' log as `by`'s before the
/// forms are published.
pub async fn reset(
    p: &Platform,
    by: &str,
    rec: &TenantRecord,
    seats: u32,
    department: &str,
    forms: &[(String, String)],
) -> anyhow::Result<Reset> {
    if !rec.training {
        anyhow::bail!(
            "テナント「{}」は研修用ではありません。申請を消すリセットは研修用のテナント（作成時に training = true）にだけ行えます / tenant {} is not a training site: only a tenant created with training = true is reset",
            rec.slug,
            rec.slug
        );
    }
    if !(1..=MAX_SEATS).contains(&seats) {
        anyhow::bail!("研修の席数は1〜{MAX_SEATS}です / seats must be 1 to {MAX_SEATS}");
    }
    let department = department.trim();
    if department.is_empty() || department.chars().count() > 100 {
        anyhow::bail!(
            "所属名は1〜100文字で指定してください / the department's name must be 1 to 100 characters"
        );
    }
    if !matches!(rec.state, TenantState::Active | TenantState::Suspended) {
        anyhow::bail!(
            "テナント「{}」は{}のため、リセットできません / tenant {} is {}: not reset",
            rec.slug,
            rec.state,
            rec.slug,
            rec.state
        );
    }
    let sample = [("sample".to_owned(), SAMPLE_FORM.to_owned())];
    let documents = if forms.is_empty() { &sample[..] } else { forms };
    let definitions = documents
        .iter()
        .map(|(name, json)| {
            FormDefinition::from_json(json).map_err(|problems| {
                anyhow::anyhow!(
                    "{name}: {}",
                    problems
                        .into_iter()
                        .map(|p| format!("{} / {}", p.ja, p.en))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Not while its data key is being rotated (the rotation takes the same lock).
    let Some(lock) = crate::control::data_key::key_lock(p, rec).await? else {
        anyhow::bail!(
            "テナント「{}」の鍵の更新が実行中です。終わってからリセットしてください / a data-key rotation of tenant {} is running",
            rec.slug,
            rec.slug
        );
    };
    let cleared = clear(p, rec, seats, department).await;
    crate::control::data_key::key_unlock(lock, rec).await;
    let (mut conn, dept, applications, form_count, opened) = cleared?;
    crate::control::oplog::record(
        &p.catalog,
        by,
        "tenant.training_reset",
        &rec.slug,
        serde_json::json!({ "applications": applications, "forms": form_count, "seats": seats }),
    )
    .await?;
    // The practice forms, each created and published as an import is (a failure
    // here leaves the site clean: running the reset again finishes it).
    let mut published = Vec::new();
    for def in &definitions {
        let id = store::create(
            &mut conn.client,
            &Actor::Operator,
            dept,
            def,
            serde_json::json!({ "training": true }),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        store::publish(&mut conn.client, id, &Actor::Operator, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let public_id: String = conn
            .client
            .query_one("SELECT public_id FROM forms WHERE id = $1", &[&id])
            .await?
            .get(0);
        published.push(format!("/f/{public_id}"));
    }
    Ok(Reset {
        applications,
        forms: form_count,
        seats: opened,
        published,
    })
}

/// The reset's one transaction: the last session's traces deleted and the seats
/// opened. Returns the connection, the seats' department, how many applications and
/// forms were deleted, and the seats.
async fn clear(
    p: &Platform,
    rec: &TenantRecord,
    seats: u32,
    department: &str,
) -> anyhow::Result<(crate::control::cluster::Conn, i64, i64, i64, Vec<Seat>)> {
    let mut conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    let tx = conn.client.transaction().await?;
    tx.batch_execute(LOCK_SQL).await?;
    let counted = tx
        .query_one(
            "SELECT (SELECT count(*) FROM submissions), (SELECT count(*) FROM forms)",
            &[],
        )
        .await?;
    let (applications, form_count): (i64, i64) = (counted.get(0), counted.get(1));
    tx.batch_execute(CLEAR_SQL)
        .await
        .context("deleting the last session's applications and forms")?;
    let dept = ensure_department(&tx, department)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Seats of an earlier, larger session are closed; this session's are opened
    // with no password or TOTP, to be set up from a new link each.
    let domain = format!("@{}.training.invalid", rec.slug);
    tx.execute(
        "UPDATE staff SET disabled = true, password_hash = NULL, totp_secret = NULL, totp_enabled = false
          WHERE email LIKE 'trainee%' AND right(email, length($1)) = $1",
        &[&domain],
    )
    .await?;
    let mut opened = Vec::new();
    for n in 1..=seats {
        let email = seat_email(&rec.slug, n);
        let id: i64 = tx
            .query_one(
                "INSERT INTO staff (email, display_name, role, department_id) VALUES ($1, $2, 'staff', $3)
                 ON CONFLICT (email) DO UPDATE SET display_name = $2, role = 'staff', department_id = $3,
                        disabled = false, password_hash = NULL, totp_secret = NULL, totp_enabled = false,
                        totp_last_step = 0, failed_attempts = 0, locked_until = NULL, updated_at = now()
                 RETURNING id",
                &[&email, &format!("研修受講者{n:02}"), &dept],
            )
            .await?
            .get(0);
        let setup_token = new_setup_token(&tx, id, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        opened.push(Seat { email, setup_token });
    }
    audit::append(
        &tx,
        &Actor::Operator,
        "training.reset",
        "",
        serde_json::json!({
            "applications": applications,
            "forms": form_count,
            "seats": seats,
            "department": dept,
        }),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tx.commit().await.context("resetting the training site")?;
    Ok((conn, dept, applications, form_count, opened))
}
