//! Case processing: the status workflow of a submission, its history, assignment,
//! internal comments and messages to the applicant (written to the outbox in the same
//! transaction, for delivery by mail).

pub mod export;
pub mod pages;
pub mod retention;
pub mod totals;

use std::fmt;

use uuid::Uuid;

use crate::crypto::{FieldCipher, FieldRef};
use crate::error::AppError;
use crate::tenant::audit::{self, Actor};

/// The time in a paging cursor (microseconds since the epoch), if it is a time the
/// database can hold: years 1 to 9999.
pub fn cursor_time(micros: &str) -> Option<time::OffsetDateTime> {
    let micros: i64 = micros.parse().ok()?;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .filter(|t| (1..=9999).contains(&t.year()))
}

/// Where an application stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// 受付
    Received,
    /// 審査中
    Reviewing,
    /// 完了
    Completed,
    /// 却下
    Rejected,
    /// 差戻し: back to the applicant for correction, with a reason and a deadline.
    Returned,
    /// 取下げ
    Withdrawn,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Received,
        Status::Reviewing,
        Status::Completed,
        Status::Rejected,
        Status::Returned,
        Status::Withdrawn,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Reviewing => "reviewing",
            Self::Completed => "completed",
            Self::Rejected => "rejected",
            Self::Returned => "returned",
            Self::Withdrawn => "withdrawn",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Received => "受付",
            Self::Reviewing => "審査中",
            Self::Completed => "完了",
            Self::Rejected => "却下",
            Self::Returned => "差戻し",
            Self::Withdrawn => "取下げ",
        }
    }

    /// The statuses staff may move a case to from this one. 差戻し goes back to 受付
    /// when the applicant resubmits; staff may take it back to 審査中 (corrected on
    /// paper or by telephone, or returned by mistake) or end it, as 却下 when the
    /// deadline passed without a correction or 取下げ. 完了, 却下 and 取下げ are final.
    pub fn staff_next(self) -> &'static [Status] {
        match self {
            Self::Received => &[Self::Reviewing, Self::Returned, Self::Withdrawn],
            Self::Reviewing => &[
                Self::Completed,
                Self::Rejected,
                Self::Returned,
                Self::Withdrawn,
            ],
            Self::Returned => &[Self::Reviewing, Self::Rejected, Self::Withdrawn],
            Self::Completed | Self::Rejected | Self::Withdrawn => &[],
        }
    }

    pub fn staff_may(self, to: Status) -> bool {
        self.staff_next().contains(&to)
    }

    /// Whether a case in this status takes a place of its form's 定員: every one but
    /// 取下げ and 却下.
    pub fn holds_a_place(self) -> bool {
        !Self::PLACE_FREED.contains(&self.as_str())
    }

    /// The statuses that take no place of a 定員, as stored.
    pub const PLACE_FREED: [&'static str; 2] = ["withdrawn", "rejected"];
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A requested status change.
#[derive(Debug, Clone)]
pub struct Change {
    pub to: Status,
    pub comment: String,
    /// For 差戻し: what to correct, shown to the applicant.
    pub reason: String,
    /// For 差戻し: by when.
    pub deadline: Option<time::Date>,
    /// Tell the applicant by mail (差戻し always does), when they gave an address.
    pub notify: bool,
}

impl Change {
    /// Whether the change queues mail to the applicant (if they gave an address).
    pub fn mails(&self) -> bool {
        self.notify || self.to == Status::Returned
    }
}

impl Status {
    /// The applicant's notice of a change to this status (a message on the case,
    /// mailed with the receipt number and the status-lookup link).
    pub fn notice(self) -> String {
        let more = match self {
            Self::Received => "申請を受け付けた状態に戻しました。",
            Self::Reviewing => "申請の審査を始めました。結果はあらためてお知らせします。",
            Self::Completed => "申請の手続きが完了しました。",
            Self::Rejected => "申請は却下となりました。理由などは担当課へお問い合わせください。",
            Self::Returned => "申請内容の修正をお願いします。",
            Self::Withdrawn => {
                "申請は取り下げられました。お心当たりがない場合は、担当課へお問い合わせください。"
            }
        };
        format!("申請の状況が「{}」になりました。{more}", self.label())
    }
}

/// Why a change was refused, in Japanese for the person who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotAllowed {
        from: Status,
        to: Status,
    },
    /// Someone else changed it first (the case is no longer in the status seen).
    Conflict {
        now: Status,
    },
    MissingReturnDetails,
    /// A deadline for the correction that has already passed (the applicant could
    /// not correct at all).
    PastDeadline,
    /// 差戻し of an application without an e-mail answer: the applicant is never told
    /// and cannot look it up (the status lookup needs the address) to correct it.
    Unreachable,
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Self::NotAllowed { from, to } => format!("「{from}」から「{to}」には変更できません"),
            Self::Conflict { now } => format!("他の職員が先に状態を変更しました（現在「{now}」）。内容を確認してからもう一度操作してください"),
            Self::MissingReturnDetails => "差戻しには、理由と期限が必要です".into(),
            Self::PastDeadline => "修正の期限には、今日以降の日付を指定してください".into(),
            Self::Unreachable => "この申請にはメールアドレスの回答がないため、差戻しはできません（申請者に届かず、オンラインで修正もできません）。電話などで申請者に連絡し、窓口で対応してください".into(),
        }
    }
}

pub(crate) fn seal(
    cipher: &FieldCipher,
    table: &str,
    column: &str,
    row: &str,
    text: &str,
) -> Result<Vec<u8>, AppError> {
    cipher
        .encrypt(
            &FieldRef {
                table,
                column,
                row_id: row,
            },
            text.as_bytes(),
        )
        .map_err(|e| AppError::Internal(anyhow::anyhow!("encrypting {table}.{column}: {e}")))
}

pub(crate) fn open_text(
    cipher: &FieldCipher,
    table: &str,
    column: &str,
    row: &str,
    data: &[u8],
) -> Result<String, AppError> {
    let plain = cipher
        .decrypt(
            &FieldRef {
                table,
                column,
                row_id: row,
            },
            data,
        )
        .map_err(|e| AppError::Internal(anyhow::anyhow!("decrypting {table}.{column}: {e}")))?;
    Ok(String::from_utf8_lossy(&plain).into_owned())
}

/// Changes one case's status if the workflow allows it and nobody changed it
/// meanwhile (`expected`: the status the person saw). Records the history row and
/// the operation-log entry in the same transaction; a 差戻し also queues a message to
/// the applicant in the outbox.
pub async fn change_status(
    db: &mut tokio_postgres::Client,
    cipher: &FieldCipher,
    actor: &Actor,
    actor_id: Option<i64>,
    id: Uuid,
    expected: Option<Status>,
    change: &Change,
) -> Result<Result<Status, Refusal>, AppError> {
    let tx = db.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT status, email_index IS NOT NULL FROM submissions WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or(AppError::NotFound)?;
    let from = Status::parse(row.get::<_, &str>(0))
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("unknown status")))?;
    if expected.is_some_and(|e| e != from) {
        return Ok(Err(Refusal::Conflict { now: from }));
    }
    if !from.staff_may(change.to) {
        return Ok(Err(Refusal::NotAllowed {
            from,
            to: change.to,
        }));
    }
    let row_id = id.to_string();
    let message = if change.to == Status::Returned {
        if change.reason.trim().is_empty() || change.deadline.is_none() {
            return Ok(Err(Refusal::MissingReturnDetails));
        }
        if change.deadline.is_some_and(|d| d < crate::ja::today()) {
            return Ok(Err(Refusal::PastDeadline));
        }
        if !row.get::<_, bool>(1) {
            return Ok(Err(Refusal::Unreachable));
        }
        let reason = seal(
            cipher,
            "submissions",
            "return_reason",
            &row_id,
            change.reason.trim(),
        )?;
        tx.execute(
            "UPDATE submissions SET status = $2, updated_at = now(), return_reason = $3, return_deadline = $4 WHERE id = $1",
            &[&id, &change.to.as_str(), &reason, &change.deadline],
        )
        .await?;
        Some(format!(
            "申請内容の修正をお願いします。\n理由: {}\n期限: {}",
            change.reason.trim(),
            change
                .deadline
                .map(crate::ja::date_both)
                .unwrap_or_default()
        ))
    } else {
        // Leaving 差戻し, the correction asked for is no longer open: its reason and
        // deadline go, as when the applicant resubmits (the message stays in the
        // case's history), and a correction page left open is refused.
        tx.execute(
            "UPDATE submissions SET status = $2, updated_at = now(),
                    return_reason = CASE WHEN status = 'returned' THEN NULL ELSE return_reason END,
                    return_deadline = CASE WHEN status = 'returned' THEN NULL ELSE return_deadline END
              WHERE id = $1",
            &[&id, &change.to.as_str()],
        )
        .await?;
        // Told only when asked, and only with an address to tell.
        (change.notify && row.get::<_, bool>(1)).then(|| change.to.notice())
    };
    // To the applicant: a message on the case, mailed in the same transaction.
    let mailed = message.is_some();
    if let Some(message) = message {
        add_note_in(
            &tx,
            cipher,
            id,
            (actor_id, &actor.label()),
            "message",
            &message,
        )
        .await?;
    }
    if !change.to.holds_a_place() {
        // 定員 counts the applications that may still be granted: one withdrawn or
        // rejected gives its place back, and the form takes another. Each case leaves
        // the counted statuses once (取下げ and 却下 are final).
        tx.execute(
            "UPDATE forms SET accepted_count = accepted_count - 1
              WHERE id = (SELECT form_id FROM submissions WHERE id = $1)
                AND capacity IS NOT NULL AND accepted_count > 0",
            &[&id],
        )
        .await?;
        // And its places of 選択肢ごとの定員.
        crate::tenant::forms::places::release(&tx, id).await?;
    }
    let comment = if change.comment.trim().is_empty() {
        None
    } else {
        Some(seal(
            cipher,
            "submission_events",
            "comment",
            &row_id,
            change.comment.trim(),
        )?)
    };
    tx.execute(
        "INSERT INTO submission_events (submission_id, actor_id, actor_label, from_status, to_status, comment) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&id, &actor_id, &actor.label(), &from.as_str(), &change.to.as_str(), &comment],
    )
    .await?;
    audit::append(
        &tx,
        actor,
        "submission.status",
        &row_id,
        serde_json::json!({ "from": from.as_str(), "to": change.to.as_str(), "mailed": mailed }),
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(from))
}

/// Stores a comment (staff only) or a message (to the applicant, queued for mail).
pub async fn add_note_in(
    tx: &tokio_postgres::Transaction<'_>,
    cipher: &FieldCipher,
    id: Uuid,
    (author, author_label): (Option<i64>, &str),
    kind: &str,
    body: &str,
) -> Result<(), AppError> {
    // The row id is drawn first so the ciphertext is bound to its own row.
    let note_id: i64 = tx
        .query_one(
            "SELECT nextval(pg_get_serial_sequence('submission_notes', 'id'))",
            &[],
        )
        .await?
        .get(0);
    let sealed = seal(
        cipher,
        "submission_notes",
        "body",
        &note_id.to_string(),
        body,
    )?;
    tx.execute(
        "INSERT INTO submission_notes (id, submission_id, author_id, author_label, kind, body) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6)",
        &[&note_id, &id, &author, &author_label, &kind, &sealed],
    )
    .await?;
    if kind == "message" {
        let payload =
            serde_json::json!({ "template": "case_message", "submission": id, "body": body })
                .to_string();
        crate::tenant::mail::queue(tx, cipher, "mail", Some(id), &payload).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transition() {
        use Status::*;
        let allowed = [
            (Received, Reviewing),
            (Received, Returned),
            (Received, Withdrawn),
            (Reviewing, Completed),
            (Reviewing, Rejected),
            (Reviewing, Returned),
            (Reviewing, Withdrawn),
            (Returned, Reviewing),
            (Returned, Rejected),
            (Returned, Withdrawn),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                assert_eq!(
                    from.staff_may(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            Refusal::NotAllowed {
                from: Completed,
                to: Reviewing
            }
            .message(),
            "「完了」から「審査中」には変更できません"
        );
    }
}
