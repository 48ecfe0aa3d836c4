//! ウイルスチェック of files already stored (`madoguchi tenant scan-files`): files
//! kept before a scanner was set, and, asked for, every file again with the
//! signatures of today (a file clean at upload may be known as malware later).
//!
//! Each file is opened with the municipality's key and streamed to clamd, one at a
//! time (at most 10 MB in memory). A clean file gets `scanned_at`; a find is marked
//! on its row (`infected`, the signature's name), logged in the municipality's
//! operation log (`attachment.infected`, as at upload: the form, field, file and
//! signature, never the file's name) and in the service log; from then on the file
//! is not handed out (`attachments::content`). Progress is kept file by file: a file
//! clamd cannot answer for is counted and left for the next run; three such in a row
//! (clamd down) end the municipality's run, as do its leaving the active state (a
//! suspension for a key rotation or a decommissioning) and a database error; what was
//! found before is reported all the same. `again` takes every file not scanned in
//! the last day, so a run cut short and started again the same day goes on where it
//! stopped.

use uuid::Uuid;

use crate::catalog::{TenantRecord, TenantState};
use crate::crypto::FieldCipher;
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
    /// Files clamd could not answer for (left for the next run).
    pub errors: usize,
    /// Files that could not be opened with the municipality's keys (a damaged row or
    /// key: for the operator to look into; never scanned).
    pub unreadable: usize,
    /// Why the run ended before the last file, if it did.
    pub stopped: Option<String>,
    /// It ended because clamd did not answer (the next municipality would wait too).
    pub clamd_down: bool,
}

/// clamd failures in a row that end a municipality's run (clamd is down).
const FAILURES_IN_A_ROW: usize = 3;

#[derive(Debug)]
pub struct Found {
    pub file: Uuid,
    pub receipt: Option<String>,
    pub field: String,
    pub signature: String,
}

/// Files not scanned yet, or (with `$1`, again) also those not scanned in the last
/// day; never one already found infected. Oldest first.
const TO_SCAN_SQL: &str = "SELECT id FROM attachments
  WHERE infected IS NULL AND (scanned_at IS NULL OR ($1 AND scanned_at < now() - interval '1 day'))
  ORDER BY created_at, id";

/// Scans the municipality's stored files with `clamd`: those never scanned, or with
/// `again` also those not scanned in the last day. An error only when nothing could
/// be begun; one met on the way ends the run with what it found (`stopped`).
pub async fn scan_files(
    p: &Platform,
    rec: &TenantRecord,
    clamd: &Clamd,
    again: bool,
) -> anyhow::Result<Scanned> {
    let mut run = Run {
        p,
        rec,
        clamd,
        cipher: super::tenant_admin::tenant_cipher(p, rec).await?,
        conn: p
            .cluster
            .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
            .await?,
        done: Scanned::default(),
        in_a_row: 0,
    };
    let ids: Vec<Uuid> = run
        .conn
        .client
        .query(TO_SCAN_SQL, &[&again])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for id in ids {
        match run.one(id).await {
            Ok(None) => {}
            Ok(Some(why)) => {
                run.done.stopped = Some(why);
                break;
            }
            Err(e) => {
                run.done.stopped = Some(format!("{e:#}"));
                break;
            }
        }
    }
    Ok(run.done)
}

struct Run<'a> {
    p: &'a Platform,
    rec: &'a TenantRecord,
    clamd: &'a Clamd,
    cipher: FieldCipher,
    conn: super::cluster::Conn,
    done: Scanned,
    in_a_row: usize,
}

impl Run<'_> {
    /// Scans file `id`; why the run stops, if it does.
    async fn one(&mut self, id: Uuid) -> anyhow::Result<Option<String>> {
        let (p, rec) = (self.p, self.rec);
        // Only while the municipality is active: a key rotation or a decommissioning
        // suspends it first.
        let state = p.catalog.tenant_by_slug(&rec.slug).await?.map(|t| t.state);
        if state != Some(TenantState::Active) {
            return Ok(Some("the municipality is no longer active".into()));
        }
        let db = &mut self.conn.client;
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
            return Ok(None);
        };
        let sealed: &[u8] = row.get(0);
        // Sealed with a key newer than the run began with: the keys again.
        if FieldCipher::version_of(sealed).is_some_and(|v| v > self.cipher.current_version()) {
            self.cipher = super::tenant_admin::tenant_cipher(p, rec).await?;
        }
        let content = match open_content(&self.cipher, id, sealed) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(tenant = %rec.slug, file = %id, error = %e, "a stored file cannot be opened");
                self.done.unreadable += 1;
                return Ok(None);
            }
        };
        let verdict = match crate::scan::scan(self.clamd, &content).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(tenant = %rec.slug, file = %id, error = %e, "clamd could not scan a stored file");
                self.done.errors += 1;
                self.in_a_row += 1;
                if self.in_a_row >= FAILURES_IN_A_ROW {
                    self.done.clamd_down = true;
                    return Ok(Some(format!(
                        "clamd failed {} times in a row ({e:#}); run again once it answers",
                        self.in_a_row
                    )));
                }
                return Ok(None);
            }
        };
        self.in_a_row = 0;
        drop(content);
        self.done.files += 1;
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
                // Marked once: another run at the same time, or the file gone, writes
                // and reports nothing.
                let marked = tx
                    .execute(
                        "UPDATE attachments SET scanned_at = now(), infected = $2 WHERE id = $1 AND infected IS NULL",
                        &[&id, &signature],
                    )
                    .await?;
                if marked == 0 {
                    drop(tx);
                    return Ok(None);
                }
                tracing::warn!(tenant = %rec.slug, form_id, field = %field, file = %id, %signature,
                    "a stored file was found infected; it is no longer handed out");
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
                tx.commit().await?;
                self.done.found.push(Found {
                    file: id,
                    receipt,
                    field,
                    signature,
                });
                return Ok(None);
            }
        }
        tx.commit().await?;
        Ok(None)
    }
}

/// The textfile node_exporter reads (`--metrics-dir`), for the alerts
/// `MadoguchiStoredFileInfected` and `MadoguchiFileScanStale`.
pub const METRICS_FILE: &str = "madoguchi_scan_files.prom";

/// Writes what a whole run (`tenant scan-files --all`) came to as a node_exporter
/// textfile in `dir`, replacing the last (written aside, then renamed): when it ran,
/// files found infected, municipalities not scanned whole, and when a run last
/// scanned everything it had to (`complete`; else the time the last file kept, or
/// this run's if there is none: a scan that never completes is caught as one that
/// stopped).
pub fn write_metrics(
    dir: &std::path::Path,
    found: usize,
    unfinished: usize,
    complete: bool,
    now: i64,
) -> std::io::Result<()> {
    let path = dir.join(METRICS_FILE);
    let success = if complete {
        now
    } else {
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.strip_prefix("madoguchi_scan_files_last_success_timestamp_seconds ")
                        .and_then(|v| v.trim().parse().ok())
                })
            })
            .unwrap_or(now)
    };
    let text = format!(
        "# HELP madoguchi_scan_files_last_run_timestamp_seconds When the scan of stored attached files last ran.\n\
         # TYPE madoguchi_scan_files_last_run_timestamp_seconds gauge\n\
         madoguchi_scan_files_last_run_timestamp_seconds {now}\n\
         # HELP madoguchi_scan_files_found Stored files the last scan found infected (now withheld).\n\
         # TYPE madoguchi_scan_files_found gauge\n\
         madoguchi_scan_files_found {found}\n\
         # HELP madoguchi_scan_files_unfinished Municipalities the last scan could not scan whole.\n\
         # TYPE madoguchi_scan_files_unfinished gauge\n\
         madoguchi_scan_files_unfinished {unfinished}\n\
         # HELP madoguchi_scan_files_last_success_timestamp_seconds When a scan last covered every file it had to (until then: when the first ran).\n\
         # TYPE madoguchi_scan_files_last_success_timestamp_seconds gauge\n\
         madoguchi_scan_files_last_success_timestamp_seconds {success}\n"
    );
    let aside = dir.join(format!("{METRICS_FILE}.tmp"));
    std::fs::write(&aside, text)?;
    std::fs::rename(&aside, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(dir: &std::path::Path, metric: &str) -> Option<i64> {
        std::fs::read_to_string(dir.join(METRICS_FILE))
            .ok()?
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{metric} "))
                    .and_then(|v| v.parse().ok())
            })
    }

    #[test]
    fn the_metrics_keep_the_last_success_through_runs_that_did_not_finish() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path();
        let success = "madoguchi_scan_files_last_success_timestamp_seconds";
        // A first run that did not finish: its own time stands in.
        write_metrics(d, 0, 1, false, 100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value(d, success), Some(100));
        assert_eq!(value(d, "madoguchi_scan_files_unfinished"), Some(1));
        // A whole run with a find.
        write_metrics(d, 2, 0, true, 200).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value(d, success), Some(200));
        assert_eq!(value(d, "madoguchi_scan_files_found"), Some(2));
        // A run cut short keeps when the last whole one was.
        write_metrics(d, 0, 3, false, 300).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value(d, success), Some(200));
        assert_eq!(
            value(d, "madoguchi_scan_files_last_run_timestamp_seconds"),
            Some(300)
        );
        assert_eq!(value(d, "madoguchi_scan_files_found"), Some(0));
        assert!(!d.join(format!("{METRICS_FILE}.tmp")).exists());
    }
}
