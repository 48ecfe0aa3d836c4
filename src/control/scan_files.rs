//! ウイルスチェック of files already stored (`madoguchi tenant scan-files`): files
//! kept before a scanner was set, and, asked for, every file again with the
//! signatures of today (a file clean at upload may be known as malware later).
//!
//! Each file is opened with the municipality's key and streamed to clamd, one at a
//! time (at most 10 MB in memory). A clean file gets `scanned_at`; a find is marked
//! on its row (`infected`, the signature's name), logged in the municipality's
//! operation log (`attachment.infected`, as at upload: the form, field, file and
//! signature, never the file's name) and in the service log; from then on the file
//! is not handed out (`attachments::content`). Progress is kept file by file: when
//! clamd stops answering, the run ends with an error and the next run goes on.

use anyhow::Context;
use uuid::Uuid;

use crate::catalog::TenantRecord;
use crate::platform::Platform;
use crate::scan::{Clamd, Verdict};
use crate::tenant::audit::{self, Actor};
use crate::tenant::forms::attachments::open_content;

/// What a run found in one municipality.
#[derive(Debug, Default)]
pub struct Scanned {
    /// Files scanned.
    pub files: usize,
    /// Files found infected: the application's receipt number (none for a file of a
    /// draft), the field and the signature.
    pub found: Vec<Found>,
}

#[derive(Debug)]
pub struct Found {
    pub file: Uuid,
    pub receipt: Option<String>,
    pub field: String,
    pub signature: String,
}

/// Files not scanned yet, or (with `again`) also those last scanned before `$1`, the
/// run's start; never one already found infected. Oldest first.
const TO_SCAN_SQL: &str = "SELECT id FROM attachments
  WHERE infected IS NULL AND (scanned_at IS NULL OR ($2 AND scanned_at < $1))
  ORDER BY created_at, id";

/// Scans the municipality's stored files with `clamd`: those never scanned, or with
/// `again` every one.
pub async fn scan_files(
    p: &Platform,
    rec: &TenantRecord,
    clamd: &Clamd,
    again: bool,
) -> anyhow::Result<Scanned> {
    let cipher = super::tenant_admin::tenant_cipher(p, rec).await?;
    let mut conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    let db = &mut conn.client;
    let started: time::OffsetDateTime = db.query_one("SELECT now()", &[]).await?.get(0);
    let ids: Vec<Uuid> = db
        .query(TO_SCAN_SQL, &[&started, &again])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut done = Scanned::default();
    for id in ids {
        // Gone meanwhile (a draft's file replaced, an application deleted): skipped.
        let Some(row) = db
            .query_opt(
                "SELECT a.content, a.form_id, a.field_id, s.id, s.receipt_number
                   FROM attachments a LEFT JOIN submissions s ON s.id = a.submission_id
                  WHERE a.id = $1",
                &[&id],
            )
            .await?
        else {
            continue;
        };
        let content =
            open_content(&cipher, id, row.get(0)).map_err(|e| anyhow::anyhow!("file {id}: {e}"))?;
        let verdict = crate::scan::scan(clamd, &content).await.with_context(|| {
            format!(
                "{}: clamd could not scan file {id} ({} scanned before it; run again to go on)",
                rec.slug, done.files
            )
        })?;
        drop(content);
        done.files += 1;
        let tx = db.transaction().await?;
        match verdict {
            Verdict::Clean => {
                tx.execute(
                    "UPDATE attachments SET scanned_at = now() WHERE id = $1",
                    &[&id],
                )
                .await?;
            }
            Verdict::Found(signature) => {
                let (form_id, field): (i64, String) = (row.get(1), row.get(2));
                let (submission, receipt): (Option<Uuid>, Option<String>) =
                    (row.get(3), row.get(4));
                tracing::warn!(tenant = %rec.slug, form_id, field = %field, file = %id, %signature,
                    "a stored file was found infected; it is no longer handed out");
                tx.execute(
                    "UPDATE attachments SET scanned_at = now(), infected = $2 WHERE id = $1",
                    &[&id, &signature],
                )
                .await?;
                audit::append(
                    &tx,
                    &Actor::Operator,
                    "attachment.infected",
                    &submission.map_or_else(|| format!("form:{form_id}"), |s| s.to_string()),
                    serde_json::json!({
                        "field": field, "file": id, "signature": signature, "stored": true,
                    }),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{}", super::tenant_admin::describe(e)))?;
                done.found.push(Found {
                    file: id,
                    receipt,
                    field,
                    signature,
                });
            }
        }
        tx.commit().await?;
    }
    Ok(done)
}
