//! 申請の削除と保存期間: an application that is finished with (完了・却下・取下げ)
//! is deleted with everything kept with it — answers, attached files, the verified
//! identity, its history, comments and messages, mail not sent yet, the draft that
//! pointed at it — either one at a time by a 管理者 or the department's 所属管理者,
//! for a stated reason, or when its form's 保存期間 (retention, in years) has run.
//!
//! Retention is counted as for public records (公文書の保存期間): from 1 April after
//! the fiscal year (年度, April to March, Japan time) in which the application was
//! finished. Finished in November 2026 with 1 year: kept through FY2027, deleted
//! from 1 April 2028. Each deletion is in the operation log with the receipt number,
//! never the answers.
//!
//! Backups taken before keep a copy until they age out of the backup retention.

use time::{Date, Month, OffsetDateTime, UtcOffset};
use uuid::Uuid;

use super::Status;
use crate::error::AppError;
use crate::tenant::audit::{self, Actor};

/// The retention periods offered, in years (the classes of 公文書 retention).
pub const YEARS: [u8; 5] = [1, 3, 5, 10, 30];

/// The statuses an application can be deleted in.
pub const FINISHED: [&str; 3] = ["completed", "rejected", "withdrawn"];

/// Applications deleted per transaction by the retention purge.
const BATCH: i64 = 500;

const JST: UtcOffset = time::macros::offset!(+9);

/// Why staff delete an application (a closed list: the operation log keeps no
/// free text that could name someone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// 申請者からの削除の依頼
    Applicant,
    /// 重複・誤った申請
    Mistake,
    /// 試験のための申請
    Test,
    /// 保存の必要がなくなった
    NoLongerNeeded,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::Applicant,
        Reason::Mistake,
        Reason::Test,
        Reason::NoLongerNeeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Applicant => "applicant_request",
            Reason::Mistake => "duplicate_or_mistake",
            Reason::Test => "test",
            Reason::NoLongerNeeded => "no_longer_needed",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Reason::Applicant => "申請者から削除の依頼があった",
            Reason::Mistake => "重複した申請・誤って送られた申請",
            Reason::Test => "試験のための申請",
            Reason::NoLongerNeeded => "保存の必要がなくなった",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The fiscal year (年度) `at` falls in, in Japan.
pub fn fiscal_year(at: OffsetDateTime) -> i32 {
    let d = at.to_offset(JST).date();
    if u8::from(d.month()) >= 4 {
        d.year()
    } else {
        d.year() - 1
    }
}

fn april_first(year: i32) -> Option<OffsetDateTime> {
    Date::from_calendar_date(year, Month::April, 1)
        .ok()
        .map(|d| d.midnight().assume_offset(JST))
}

/// When an application finished at `finished` is deleted under `years` of retention
/// (in Japan time).
pub fn deleted_from(finished: OffsetDateTime, years: u8) -> Option<OffsetDateTime> {
    april_first(fiscal_year(finished) + 1 + i32::from(years))
}

/// Applications finished before this are past `years` of retention at `now`.
pub fn cutoff(now: OffsetDateTime, years: u8) -> Option<OffsetDateTime> {
    april_first(fiscal_year(now) - i32::from(years))
}

/// Deletes the applications `ids` that are finished, with what is kept with them;
/// gives their places of 定員 and 選択肢ごとの定員 back (as a publish would recount)
/// and notes each in
/// `submission_deletions` (for the API's deletion list and its retries) with the
/// cause ($4), the idempotency key and who sent it (the history is read as it was
/// before this statement, as every part of it reads).
/// Returns (id, receipt number) of each deleted.
const DELETE_SQL: &str = "WITH gone AS (
     DELETE FROM submissions WHERE id = ANY($1) AND status = ANY($2) RETURNING id, form_id, status, receipt_number, idempotency_key
   ), drafts AS (
     DELETE FROM citizen_drafts d USING gone WHERE d.submission_id = gone.id OR d.resubmit_of = gone.id
     RETURNING d.id
   ), files AS (
     DELETE FROM attachments a USING drafts WHERE a.draft_id = drafts.id AND a.submission_id IS NULL
   ), noted AS (
     INSERT INTO submission_deletions (submission_id, receipt_number, form_id, cause, idempotency_key, made_by)
     SELECT id, receipt_number, form_id, $4, idempotency_key,
            (SELECT e.actor_label FROM submission_events e WHERE e.submission_id = gone.id ORDER BY e.id LIMIT 1)
       FROM gone
   ), places AS (
     UPDATE forms f SET accepted_count = greatest(f.accepted_count - g.n, 0)
       FROM (SELECT form_id, count(*)::int AS n FROM gone WHERE status <> ALL($3) GROUP BY form_id) g
      WHERE f.id = g.form_id AND f.capacity IS NOT NULL
   ), places_gone AS (
     DELETE FROM submission_places p USING gone WHERE p.submission_id = gone.id
   ), option_places_freed AS (
     UPDATE option_places o SET taken = greatest(o.taken - g.n, 0)
       FROM (SELECT p.form_id, p.field_id, p.option, count(*)::int AS n
               FROM submission_places p JOIN gone ON gone.id = p.submission_id
              GROUP BY p.form_id, p.field_id, p.option) g
      WHERE o.form_id = g.form_id AND o.field_id = g.field_id AND o.option = g.option
   )
   SELECT id, receipt_number FROM gone";

async fn delete(
    db: &impl tokio_postgres::GenericClient,
    ids: &[Uuid],
    cause: &str,
) -> Result<Vec<(Uuid, String)>, AppError> {
    // The options' rows whose places these hold are locked first, in the order every
    // other writer locks them (`forms::places`), so giving them back cannot deadlock
    // with an application taking several.
    db.execute(
        "SELECT 1 FROM option_places o
           JOIN (SELECT DISTINCT form_id, field_id, option FROM submission_places
                  WHERE submission_id = ANY($1)) p USING (form_id, field_id, option)
          ORDER BY o.form_id, o.field_id, o.option FOR UPDATE OF o",
        &[&ids],
    )
    .await?;
    let finished: &[&str] = &FINISHED;
    let freed: &[&str] = &Status::PLACE_FREED;
    Ok(db
        .query(DELETE_SQL, &[&ids, &finished, &freed, &cause])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Receipt numbers as typed: full-width or lower case accepted.
fn normalise_receipt(s: &str) -> String {
    crate::ja::nfkc(s.trim()).to_uppercase()
}

/// Deletes one application at a member of staff's request (the caller checked
/// their right to). Refused, with the reason for the person, unless it is finished
/// and `typed` is its receipt number.
pub async fn delete_one(
    db: &mut tokio_postgres::Client,
    actor: &Actor,
    id: Uuid,
    typed: &str,
    reason: Reason,
) -> Result<Result<String, &'static str>, AppError> {
    let tx = db.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT status, receipt_number, form_id FROM submissions WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or(AppError::NotFound)?;
    let (status, receipt, form): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
    if !FINISHED.contains(&status.as_str()) {
        return Ok(Err(
            "受付・審査中・差戻しの申請は削除できません。完了・却下・取下げのいずれかにしてから削除してください",
        ));
    }
    if normalise_receipt(typed) != receipt {
        return Ok(Err(
            "確認のために入力された受付番号が、この申請の受付番号と一致しません",
        ));
    }
    let gone = delete(&tx, &[id], "staff").await?;
    if gone.len() != 1 {
        return Err(AppError::Internal(anyhow::anyhow!(
            "a finished application locked for deletion was not deleted"
        )));
    }
    audit::append(
        &tx,
        actor,
        "submission.delete",
        &id.to_string(),
        serde_json::json!({
            "receipt": receipt,
            "form": form,
            "status": status,
            "reason": reason.as_str(),
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(receipt))
}

/// Finished applications of a form, finished before $3 (the purge's condition).
const DUE_SQL: &str = "SELECT count(*) FROM submissions s
      WHERE s.form_id = $1 AND s.status = ANY($2)
        AND coalesce((SELECT max(e.at) FROM submission_events e WHERE e.submission_id = s.id), s.updated_at) < $3";

/// How many finished applications of a form the purge would delete at `now` with
/// `years` of retention.
pub async fn due(
    db: &tokio_postgres::Client,
    form: i64,
    years: u8,
    now: OffsetDateTime,
) -> Result<i64, AppError> {
    let Some(before) = cutoff(now, years) else {
        return Ok(0);
    };
    let finished: &[&str] = &FINISHED;
    Ok(db
        .query_one(DUE_SQL, &[&form, &finished, &before])
        .await?
        .get(0))
}

/// Deletes every finished application past its form's 保存期間 at `now` (the
/// published version's setting), a batch per transaction, each batch in the
/// operation log with its receipt numbers. Returns how many were deleted.
pub async fn purge_expired(
    db: &mut tokio_postgres::Client,
    now: OffsetDateTime,
) -> Result<u64, AppError> {
    let forms = db
        .query(
            "SELECT f.id, (v.definition->'settings'->>'retention_years')::int
               FROM forms f JOIN form_versions v ON v.form_id = f.id AND v.version = f.current_version
              WHERE jsonb_typeof(v.definition->'settings'->'retention_years') = 'number'",
            &[],
        )
        .await?;
    // The notes of deletions (no content) go with the operation log's entries.
    db.execute(
        "DELETE FROM submission_deletions WHERE deleted_at < now() - make_interval(days => (SELECT audit_retention_days FROM settings))",
        &[],
    )
    .await?;
    let finished: &[&str] = &FINISHED;
    let mut total = 0;
    for f in &forms {
        let (form, years): (i64, i32) = (f.get(0), f.get(1));
        let Some(before) = u8::try_from(years).ok().and_then(|y| cutoff(now, y)) else {
            continue;
        };
        loop {
            let tx = db.transaction().await?;
            let ids: Vec<Uuid> = tx
                .query(
                    "SELECT s.id FROM submissions s
                      WHERE s.form_id = $1 AND s.status = ANY($2)
                        AND coalesce((SELECT max(e.at) FROM submission_events e WHERE e.submission_id = s.id), s.updated_at) < $3
                      ORDER BY s.submitted_at LIMIT $4 FOR UPDATE SKIP LOCKED",
                    &[&form, &finished, &before, &BATCH],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if ids.is_empty() {
                break;
            }
            let gone = delete(&tx, &ids, "retention").await?;
            audit::append(
                &tx,
                &Actor::System,
                "submission.retention_delete",
                &format!("form:{form}"),
                serde_json::json!({
                    "retention_years": years,
                    "finished_before": before
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                    "receipts": gone.iter().map(|(_, r)| r).collect::<Vec<_>>(),
                }),
            )
            .await?;
            tx.commit().await?;
            total += gone.len() as u64;
            if (ids.len() as i64) < BATCH {
                break;
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn retention_runs_from_the_first_of_april_after_the_fiscal_year() {
        // 令和8年11月 (FY2026), one year: kept through FY2027.
        let finished = datetime!(2026-11-29 15:00 +09:00);
        assert_eq!(
            deleted_from(finished, 1),
            Some(datetime!(2028-04-01 00:00 +09:00))
        );
        assert!(finished >= cutoff(datetime!(2028-03-31 23:59 +09:00), 1).unwrap_or(finished));
        assert!(finished < cutoff(datetime!(2028-04-01 00:00 +09:00), 1).unwrap_or(finished));
        // 31 March belongs to the fiscal year before; in UTC it may be 1 April's eve.
        assert_eq!(fiscal_year(datetime!(2027-03-31 23:59 +09:00)), 2026);
        assert_eq!(fiscal_year(datetime!(2027-03-31 15:30 UTC)), 2027);
        assert_eq!(fiscal_year(datetime!(2027-04-01 00:00 +09:00)), 2027);
        assert_eq!(
            deleted_from(datetime!(2027-03-31 10:00 +09:00), 5),
            Some(datetime!(2032-04-01 00:00 +09:00))
        );
        // Whatever the day, cutoff and deletion day agree.
        for (m, d) in [(1, 1), (3, 31), (4, 1), (12, 31)] {
            let at =
                Date::from_calendar_date(2030, Month::try_from(m).unwrap_or(Month::January), d)
                    .unwrap_or(Date::MIN)
                    .midnight()
                    .assume_offset(JST);
            for years in YEARS {
                let gone = deleted_from(at, years).unwrap_or(at);
                assert!(at >= cutoff(gone - time::Duration::minutes(1), years).unwrap_or(at));
                assert!(at < cutoff(gone, years).unwrap_or(at));
            }
        }
    }

    #[test]
    fn receipt_numbers_are_compared_as_typed() {
        assert_eq!(normalise_receipt(" ａｂ１２-３４ "), "AB12-34");
        assert_eq!(Reason::parse("test"), Some(Reason::Test));
        assert_eq!(Reason::parse("anything"), None);
    }
}
