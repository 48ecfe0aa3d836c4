//! The staff inbox and a case's detail page: filters, exact search through blind
//! indexes, keyset pagination, status changes, assignment, comments and messages.

use crate::tenant::forms::attachments::withheld;
use askama::Template;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::Response;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{add_note_in, change_status, open_text, retention, Change, Refusal, Status};
use crate::domain::ReceiptNumber;
use crate::error::AppError;
use crate::tenant::admin::Nav;
use crate::tenant::audit;
use crate::tenant::forms::answers::Answer;
use crate::tenant::forms::attachments;
use crate::tenant::forms::citizen::{decrypt_answers, jst};
use crate::tenant::forms::proxy::Channel;
use crate::tenant::forms::store;
use crate::tenant::http::{date, see_other, FormData};
use crate::tenant::staff::StaffUser;
use crate::tenant::TenantCtx;
use crate::web::render;

/// Rows per inbox page.
pub const PAGE_SIZE: i64 = 50;

/// The inbox filters, from the query string (also used by exports).
#[derive(Debug, Default, Clone)]
pub struct Filters {
    pub form: Option<i64>,
    /// One version of `form` (exports); ignored without a form.
    pub version: Option<i32>,
    pub status: Option<Status>,
    pub from: Option<time::Date>,
    pub to: Option<time::Date>,
    /// Staff id, or 0 for "unassigned".
    pub assignee: Option<i64>,
    pub q: String,
    /// 受付方法: online, or entered by staff (any way or one).
    pub came: Option<Came>,
    /// Keyset cursor: (submitted_at, id) of the last row shown.
    pub after: Option<(OffsetDateTime, Uuid)>,
}

/// How the applications asked for came in (the inbox's 受付方法 filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Came {
    /// Sent by the citizen (no 代理入力).
    Online,
    /// Entered by staff, whichever way it was received.
    Entered,
    /// Entered by staff, received this way.
    By(Channel),
}

impl Came {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "online" => Some(Self::Online),
            "entered" => Some(Self::Entered),
            s => Channel::parse(s).map(Self::By),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Entered => "entered",
            Self::By(c) => c.as_str(),
        }
    }

    pub fn label(self) -> String {
        match self {
            Self::Online => "オンライン申請".into(),
            Self::Entered => "代理入力（すべて）".into(),
            Self::By(c) => format!("代理入力（{}）", c.label()),
        }
    }

    /// Every choice, in the order the filter offers them.
    pub fn all() -> impl Iterator<Item = Self> {
        [Self::Online, Self::Entered]
            .into_iter()
            .chain(Channel::ALL.into_iter().map(Self::By))
    }
}

impl Filters {
    pub fn parse(query: Option<&str>) -> Self {
        let mut f = Self::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*k {
                "form" => f.form = v.parse().ok(),
                "version" => f.version = v.parse().ok(),
                "status" => f.status = Status::parse(&v),
                "from" => f.from = date(&v),
                "to" => f.to = date(&v),
                "assignee" => f.assignee = v.parse().ok(),
                "came" => f.came = Came::parse(&v),
                "q" => f.q = v.trim().chars().take(200).collect(),
                "after" => {
                    f.after = v
                        .split_once('_')
                        .and_then(|(t, id)| Some((super::cursor_time(t)?, id.parse().ok()?)))
                }
                _ => {}
            }
        }
        f
    }

    /// The period of 受付日 asked for, as instants: from the first day's start, before
    /// the day after the last (Japan time; the last day there is has no end).
    pub fn period(&self) -> (Option<OffsetDateTime>, Option<OffsetDateTime>) {
        let jst = time::macros::offset!(+9);
        let start = |d: time::Date| d.midnight().assume_offset(jst);
        (
            self.from.map(start),
            self.to.and_then(|d| d.next_day()).map(start),
        )
    }

    /// The query string for these filters, without the cursor.
    pub fn query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(v) = self.form {
            q.append_pair("form", &v.to_string());
        }
        if let Some(v) = self.version {
            q.append_pair("version", &v.to_string());
        }
        if let Some(v) = self.status {
            q.append_pair("status", v.as_str());
        }
        if let Some(v) = self.from {
            q.append_pair("from", &v.to_string());
        }
        if let Some(v) = self.to {
            q.append_pair("to", &v.to_string());
        }
        if let Some(v) = self.assignee {
            q.append_pair("assignee", &v.to_string());
        }
        if let Some(v) = self.came {
            q.append_pair("came", v.as_str());
        }
        if !self.q.is_empty() {
            q.append_pair("q", &self.q);
        }
        q.finish()
    }

    /// What the search box asks for: an exact receipt number, or a person by e-mail
    /// address or telephone number, each in the form it was stored in.
    fn search(&self) -> Option<Search> {
        if self.q.is_empty() {
            return None;
        }
        let q = crate::ja::nfkc(&self.q);
        Some(if let Ok(r) = ReceiptNumber::parse(&q) {
            Search::Receipt(r.as_str().to_owned())
        } else if let Some((local, domain)) = q.split_once('@') {
            Search::Email(format!("{local}@{}", domain.to_ascii_lowercase()))
        } else {
            // As the answer was stored (see the telephone field's check).
            Search::Phone(
                crate::ja::phone_digits(&q)
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect(),
            )
        })
    }

    /// The filters as the operation log keeps them: a search by e-mail address or
    /// telephone number is recorded as such, without the address or number (personal
    /// data stays out of the log); a receipt number is kept.
    pub fn logged(&self) -> String {
        let mut redacted = self.clone();
        redacted.q = match self.search() {
            Some(Search::Receipt(r)) => r,
            Some(Search::Email(_)) => "（メールアドレスで検索）".into(),
            Some(Search::Phone(_)) => "（電話番号で検索）".into(),
            None => String::new(),
        };
        redacted.query()
    }
}

/// A search of the inbox (see [`Filters::search`]).
enum Search {
    Receipt(String),
    Email(String),
    Phone(String),
}

/// One page of matching submissions, newest first. Only the forms this person may
/// see; exact search goes through the receipt number or a blind index, never by
/// decrypting the table. Returns rows and whether there are more.
pub struct Query<'a> {
    pub user: &'a StaffUser,
    pub filters: &'a Filters,
    pub limit: i64,
    /// Every answer (for exports); otherwise only the summary field's.
    pub all_answers: bool,
}

pub struct Row {
    pub id: Uuid,
    pub receipt: String,
    pub submitted_at: OffsetDateTime,
    pub status: Status,
    pub assignee: String,
    pub form_id: i64,
    pub form_title: String,
    pub form_version: i32,
    pub summary: Option<(String, String)>,
    pub answers: serde_json::Value,
    /// 代理入力: how it came (`Channel::label`), `None` when sent online.
    pub channel: Option<&'static str>,
}

/// Parameters of a statement built at run time.
pub type Params = Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>;

/// The inbox's SQL for `filters`, from fixed fragments; every value is a parameter.
/// `department`: only that department's forms (`None`: all, for administrators).
///
/// Two shapes. Across every form (an administrator), or where a filter picks the rows
/// (one form, a search, one person's cases), the newest are read in order from the
/// index that fits. A department's staff without such a filter get each of the
/// department's forms' newest `limit` rows (from the per-form indexes), merged: walking
/// every submission newest first and keeping the department's would read most of a
/// large tenant when the department's cases are few or old (180 ms at 1M rows, where
/// this takes under 1 ms).
pub fn inbox_sql(
    cipher: &crate::crypto::FieldCipher,
    department: Option<i64>,
    filters: &Filters,
    limit: i64,
    all_answers: bool,
) -> (String, Params) {
    let f = filters;
    let mut params: Params = Vec::new();
    // Conditions on the submission `s`, each value a parameter.
    let mut conds = String::new();
    // `frag` with its `?` standing for `p` (none: a condition without a value).
    let mut add = |frag: &str, p: Option<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>| {
        if let Some(p) = p {
            params.push(p);
        }
        conds.push_str(&frag.replace('?', &format!("${}", params.len())));
    };
    if let Some(v) = f.form {
        add(" AND s.form_id = ?", Some(Box::new(v)));
        if let Some(v) = f.version {
            add(" AND s.form_version = ?", Some(Box::new(v)));
        }
    }
    if let Some(v) = f.status {
        add(" AND s.status = ?", Some(Box::new(v.as_str())));
    }
    let (since, before) = f.period();
    if let Some(at) = since {
        add(" AND s.submitted_at >= ?", Some(Box::new(at)));
    }
    if let Some(at) = before {
        add(" AND s.submitted_at < ?", Some(Box::new(at)));
    }
    match f.assignee {
        Some(0) => add(" AND s.assignee_id IS NULL", None),
        Some(v) => add(" AND s.assignee_id = ?", Some(Box::new(v))),
        None => {}
    }
    match f.came {
        Some(Came::Online) => add(
            " AND NOT EXISTS (SELECT 1 FROM proxy_entries p WHERE p.submission_id = s.id)",
            None,
        ),
        Some(Came::Entered) => add(
            " AND EXISTS (SELECT 1 FROM proxy_entries p WHERE p.submission_id = s.id)",
            None,
        ),
        Some(Came::By(c)) => add(
            " AND EXISTS (SELECT 1 FROM proxy_entries p WHERE p.submission_id = s.id AND p.channel = ?)",
            Some(Box::new(c.as_str())),
        ),
        None => {}
    }
    let search = f.search();
    match &search {
        Some(Search::Receipt(r)) => add(" AND s.receipt_number = ?", Some(Box::new(r.clone()))),
        Some(Search::Email(email)) => {
            let indexes: Vec<Vec<u8>> = crate::ja::email_lookup_keys(email)
                .iter()
                .map(|k| cipher.blind_index("submissions", "email", k).to_vec())
                .collect();
            add(" AND s.email_index = ANY(?)", Some(Box::new(indexes)))
        }
        Some(Search::Phone(digits)) => {
            let index = cipher.blind_index("submissions", "phone", digits).to_vec();
            add(" AND s.phone_index = ?", Some(Box::new(index)))
        }
        None => {}
    }
    if let Some((at, id)) = f.after {
        add(" AND (s.submitted_at, s.id) < (?", Some(Box::new(at)));
        add(", ?)", Some(Box::new(id)));
    }
    params.push(Box::new(limit));
    let limit = format!("${}", params.len());
    let department = department.map(|d| {
        params.push(Box::new(d));
        format!("${}", params.len())
    });
    // A list page needs one answer per row (the summary field), not all of them; and
    // the forms' titles are read once per form (see `fetch`), not once per row.
    let answers = if all_answers {
        "s.answers"
    } else {
        "CASE WHEN f.summary_field IS NULL THEN '{}'::jsonb ELSE jsonb_build_object(f.summary_field, s.answers -> f.summary_field) END"
    };
    // 代理入力's channel is read for the rows returned only (one primary-key probe each).
    let columns = format!(
        "s.id, s.receipt_number, s.submitted_at, s.status, coalesce(st.email, ''), s.form_id, s.form_version,
                f.summary_field, {answers}, (SELECT p.channel FROM proxy_entries p WHERE p.submission_id = s.id)"
    );
    let order = "ORDER BY s.submitted_at DESC, s.id DESC";
    // Entered applications are few beside those sent online: found from their own
    // table rather than by walking each form's newest rows.
    let picked = f.form.is_some()
        || search.is_some()
        || matches!(f.assignee, Some(v) if v != 0)
        || matches!(f.came, Some(Came::Entered | Came::By(_)));
    let sql = match department {
        // The merge picks ids only; the rows' answers are read for the page's rows
        // alone (an export batch would otherwise carry every form's batch of answers).
        Some(d) if !picked => format!(
            "SELECT {columns}
               FROM (SELECT s.id
                       FROM forms f
                       CROSS JOIN LATERAL (
                         SELECT s.id, s.submitted_at FROM submissions s
                          WHERE s.form_id = f.id{conds} {order} LIMIT {limit}) s
                      WHERE f.department_id = {d} {order} LIMIT {limit}) page
               JOIN submissions s ON s.id = page.id
               JOIN forms f ON f.id = s.form_id
               LEFT JOIN staff st ON st.id = s.assignee_id
              {order}"
        ),
        d => format!(
            "SELECT {columns}
               FROM submissions s JOIN forms f ON f.id = s.form_id LEFT JOIN staff st ON st.id = s.assignee_id
              WHERE true{conds}{} {order} LIMIT {limit}",
            d.map(|d| format!(" AND f.department_id = {d}"))
                .unwrap_or_default()
        ),
    };
    (sql, params)
}

/// The inbox page (or an export batch) for `q`.
pub async fn fetch(
    ctx: &TenantCtx,
    db: &deadpool_postgres::ClientWrapper,
    q: &Query<'_>,
) -> Result<Vec<Row>, AppError> {
    use tokio_postgres::types::ToSql;
    let department = (!q.user.is_admin()).then_some(q.user.department_id.unwrap_or(-1));
    let (sql, params) = inbox_sql(ctx.cipher(), department, q.filters, q.limit, q.all_answers);
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    // The SQL is one of a few shapes (which filters are set), each prepared once
    // per connection.
    let stmt = db.prepare_cached(&sql).await?;
    let rows = db.query(&stmt, &refs).await?;
    let mut form_ids: Vec<i64> = rows.iter().map(|r| r.get(5)).collect();
    form_ids.sort_unstable();
    form_ids.dedup();
    let stmt = db
        // The published title (a draft renamed and not yet published does not rename
        // every case in the inbox).
        .prepare_cached(
            "SELECT f.id, coalesce(v.title, f.draft->>'title', '') FROM forms f
               LEFT JOIN form_versions v ON v.form_id = f.id AND v.version = f.current_version
              WHERE f.id = ANY($1)",
        )
        .await?;
    let titles: std::collections::HashMap<i64, String> = db
        .query(&stmt, &[&form_ids])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: Uuid = r.get(0);
        let answers: serde_json::Value = r.get(8);
        let summary_field: Option<String> = r.get(7);
        let summary = match summary_field {
            Some(field) => {
                let one = serde_json::json!({ &field: answers.get(&field).cloned().unwrap_or(serde_json::Value::Null) });
                let decrypted = if answers.get(&field).is_some() {
                    decrypt_answers(ctx.cipher(), id, &one)?
                } else {
                    Default::default()
                };
                Some((
                    field.clone(),
                    decrypted
                        .get(&field)
                        .map(Answer::display)
                        .unwrap_or_default(),
                ))
            }
            None => None,
        };
        out.push(Row {
            id,
            receipt: r.get(1),
            submitted_at: r.get(2),
            status: Status::parse(r.get::<_, &str>(3)).unwrap_or(Status::Received),
            assignee: r.get(4),
            form_id: r.get(5),
            form_title: titles.get(&r.get(5)).cloned().unwrap_or_default(),
            form_version: r.get(6),
            summary,
            answers,
            channel: r
                .get::<_, Option<&str>>(9)
                .and_then(crate::tenant::forms::proxy::Channel::parse)
                .map(crate::tenant::forms::proxy::Channel::label),
        });
    }
    Ok(out)
}

pub struct InboxRow {
    pub id: Uuid,
    pub receipt: String,
    pub received: String,
    /// Shown by its label; sent back (as stored) with a bulk change, so a row
    /// changed by someone else since the page was drawn is refused.
    pub status: Status,
    pub assignee: String,
    pub form: String,
    pub summary: String,
    /// 代理入力: how it came, empty when sent online.
    pub channel: &'static str,
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "admin/inbox.html")]
struct InboxPage {
    site: String,
    nav: Option<Nav>,
    rows: Vec<InboxRow>,
    forms: Vec<Choice>,
    statuses: Vec<Choice>,
    assignees: Vec<Choice>,
    came: Vec<Choice>,
    from: String,
    to: String,
    q: String,
    next: Option<String>,
    export: String,
    /// The totals' conditions: the status and period of these filters.
    totals: String,
    csrf: String,
    can_edit: bool,
    form_id: Option<i64>,
    message: Option<String>,
}

/// Staff who may be assigned cases: everyone active (an administrator may assign any;
/// the form's department is checked when assigning).
async fn staff_choices(
    db: &deadpool_postgres::ClientWrapper,
    user: &StaffUser,
    selected: Option<i64>,
) -> Result<Vec<Choice>, AppError> {
    let rows = if user.is_admin() {
        let stmt = db
            .prepare_cached(
                "SELECT id, email FROM staff WHERE NOT disabled AND role <> 'viewer' ORDER BY email",
            )
            .await?;
        db.query(&stmt, &[]).await?
    } else {
        let stmt = db
            .prepare_cached(
                "SELECT id, email FROM staff WHERE NOT disabled AND role <> 'viewer' AND (department_id = $1 OR role = 'admin') ORDER BY email",
            )
            .await?;
        db.query(&stmt, &[&user.department_id]).await?
    };
    Ok(rows
        .iter()
        .map(|r| {
            let id: i64 = r.get(0);
            Choice {
                value: id.to_string(),
                label: r.get(1),
                selected: selected == Some(id),
            }
        })
        .collect())
}

pub async fn inbox(
    ctx: TenantCtx,
    user: StaffUser,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    // Back from a deletion (申請の削除): say which, by its receipt number only, and
    // only if it was deleted by staff in the last minutes from a form of a department
    // whose applications this user may delete (a link cannot make the notice up, nor
    // tell anyone else what was deleted).
    let deleted = form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "deleted")
        .and_then(|(_, v)| ReceiptNumber::parse(&v).ok());
    let message = match deleted {
        Some(r) => ctx
            .db()
            .await?
            .query(
                "SELECT f.department_id FROM submission_deletions d JOIN forms f ON f.id = d.form_id
                  WHERE d.deleted_at > now() - interval '10 minutes' AND d.receipt_number = $1 AND d.cause = 'staff'",
                &[&r.as_str()],
            )
            .await?
            .iter()
            .any(|row| user.can_delete_cases(row.get(0)))
            .then(|| {
                format!(
                    "受付番号 {} の申請を、添付ファイル・経過・メッセージとともに削除しました",
                    r.as_str()
                )
            }),
        None => None,
    };
    inbox_page(&ctx, &user, query.as_deref(), message).await
}

async fn inbox_page(
    ctx: &TenantCtx,
    user: &StaffUser,
    query: Option<&str>,
    message: Option<String>,
) -> Result<Response, AppError> {
    let filters = Filters::parse(query);
    let db = ctx.db().await?;
    let scope = if user.is_admin() {
        None
    } else {
        Some(user.department_id.into_iter().collect::<Vec<_>>())
    };
    let forms = store::titles(&db, scope.as_deref()).await?;
    if let Some(id) = filters.form {
        if !forms.iter().any(|(fid, _)| *fid == id) {
            return Err(AppError::NotFound);
        }
    }
    let mut rows = fetch(
        ctx,
        &db,
        &Query {
            user,
            filters: &filters,
            limit: PAGE_SIZE + 1,
            all_answers: false,
        },
    )
    .await?;
    let more = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(usize::try_from(PAGE_SIZE).unwrap_or(50));
    let next = match (more, rows.last()) {
        (true, Some(last)) => {
            let micros = last.submitted_at.unix_timestamp_nanos() / 1000;
            let base = filters.query();
            Some(format!(
                "/admin/inbox?{base}{}after={micros}_{}",
                if base.is_empty() { "" } else { "&" },
                last.id
            ))
        }
        _ => None,
    };
    let mut assignees = vec![Choice {
        value: "0".into(),
        label: "（未割当）".into(),
        selected: filters.assignee == Some(0),
    }];
    assignees.extend(staff_choices(&db, user, filters.assignee).await?);
    let page = InboxPage {
        site: ctx.name.to_string(),
        nav: Some(Nav::new(user, "inbox")),
        rows: rows
            .iter()
            .map(|r| InboxRow {
                id: r.id,
                receipt: r.receipt.clone(),
                received: jst(r.submitted_at),
                status: r.status,
                assignee: r.assignee.clone(),
                form: r.form_title.clone(),
                summary: r
                    .summary
                    .as_ref()
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
                channel: r.channel.unwrap_or_default(),
            })
            .collect(),
        forms: forms
            .iter()
            .map(|f| Choice {
                value: f.0.to_string(),
                label: f.1.clone(),
                selected: filters.form == Some(f.0),
            })
            .collect(),
        statuses: Status::ALL
            .iter()
            .map(|s| Choice {
                value: s.as_str().into(),
                label: s.label().into(),
                selected: filters.status == Some(*s),
            })
            .collect(),
        assignees,
        came: Came::all()
            .map(|c| Choice {
                value: c.as_str().into(),
                label: c.label(),
                selected: filters.came == Some(c),
            })
            .collect(),
        from: filters.from.map(|d| d.to_string()).unwrap_or_default(),
        to: filters.to.map(|d| d.to_string()).unwrap_or_default(),
        q: filters.q.clone(),
        next,
        export: filters.query(),
        totals: Filters {
            status: filters.status,
            from: filters.from,
            to: filters.to,
            ..Default::default()
        }
        .query(),
        csrf: user.csrf.clone(),
        can_edit: user.role != crate::tenant::staff::Role::Viewer,
        form_id: filters.form,
        message,
    };
    Ok(render(StatusCode::OK, &page))
}

/// A case as far as permissions go.
struct CaseRef {
    form_id: i64,
    department_id: i64,
}

async fn case_ref(
    db: &tokio_postgres::Client,
    user: &StaffUser,
    id: Uuid,
) -> Result<CaseRef, AppError> {
    let r = db
        .query_opt("SELECT s.form_id, f.department_id FROM submissions s JOIN forms f ON f.id = s.form_id WHERE s.id = $1", &[&id])
        .await?
        .ok_or(AppError::NotFound)?;
    let c = CaseRef {
        form_id: r.get(0),
        department_id: r.get(1),
    };
    if !user.can_see(c.department_id) {
        return Err(AppError::NotFound);
    }
    Ok(c)
}

pub struct AnswerLine {
    pub label: String,
    pub value: String,
    /// 添付ファイル: where to download it.
    pub file: Option<String>,
    /// 添付ファイル found infected after it was stored: why it is not handed out.
    pub withheld: Option<String>,
}

/// Who made a history row, for people: the applicant, an integration by its token's
/// name, or the stored label as it is.
fn who(label: &str) -> String {
    if label == "citizen" {
        return "申請者".into();
    }
    match label.strip_prefix("api:").and_then(|l| l.split_once(':')) {
        Some((_, name)) => format!("API（{name}）"),
        None => label.to_owned(),
    }
}

/// A case's mail to the applicant, oldest first.
pub const CASE_MAILS_SQL: &str =
    "SELECT kind, created_at, sent_at, attempts, last_error, next_attempt_at = 'infinity'
   FROM outbox WHERE submission_id = $1 ORDER BY created_at, id";

/// One mail to the applicant, for staff: which, when queued, and how it went.
pub struct MailLine {
    pub what: &'static str,
    pub at: String,
    pub state: String,
}

/// 送信済み, 送信待ち or 送信できませんでした, with the SMTP reply when it failed.
fn mail_state(
    sent: Option<OffsetDateTime>,
    attempts: i32,
    error: Option<String>,
    given_up: bool,
) -> String {
    let why = error.map(|e| format!("（{e}）")).unwrap_or_default();
    match sent {
        Some(t) => format!("送信済み {}", jst(t)),
        None if given_up => format!("送信できませんでした{why}"),
        None if attempts > 0 => format!("再送待ち（{attempts}回失敗）{why}"),
        None => "送信待ち".to_owned(),
    }
}

pub struct EventLine {
    pub at: String,
    pub who: String,
    pub from: String,
    pub to: String,
    pub comment: String,
}

pub struct NoteLine {
    pub at: String,
    pub who: String,
    pub kind: &'static str,
    pub body: String,
}

#[derive(Template)]
#[template(path = "admin/submission.html")]
struct DetailPage {
    site: String,
    nav: Option<Nav>,
    id: Uuid,
    receipt: String,
    form_title: String,
    form_version: i32,
    received: String,
    status: &'static str,
    status_value: &'static str,
    next: Vec<Choice>,
    assignees: Vec<Choice>,
    answers: Vec<AnswerLine>,
    /// 本人確認 as the provider vouched for it (when, which provider, who).
    identity: Option<(String, String, Vec<crate::tenant::identity::Line>)>,
    /// The form (this version) asks for 本人確認.
    identity_asked: bool,
    /// 代理入力: how the application came and who entered it.
    proxy: Option<crate::tenant::forms::proxy::Shown>,
    events: Vec<EventLine>,
    notes: Vec<NoteLine>,
    mails: Vec<MailLine>,
    return_reason: String,
    return_deadline: String,
    csrf: String,
    can_edit: bool,
    /// Finished, and this person may delete it: the reasons to choose from.
    delete_reasons: Vec<(&'static str, &'static str)>,
    /// 保存期間: when it will be deleted, or why it is kept.
    retention: String,
    message: Option<String>,
}

/// A file attached to a case (添付ファイル), for staff who may see the case; each
/// download is in the operation log.
pub async fn attachment(
    ctx: TenantCtx,
    user: StaffUser,
    Path((id, file)): Path<(Uuid, Uuid)>,
) -> Result<Response, AppError> {
    let mut db = ctx.db().await?;
    case_ref(&db, &user, id).await?;
    attachments::serve(ctx.cipher(), &mut db, &user.actor(), id, file).await
}

pub async fn detail(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<Uuid>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    // `?entered=1`: just entered by 代理入力, the page says so.
    let entered = query.is_some_and(|q| q.split('&').any(|p| p == "entered=1"));
    let message = entered.then(|| {
        "代理入力で受け付けました。受付番号を申請者に伝えてください（メールアドレスを入力した場合は、受付の控えもメールで届きます）。".to_owned()
    });
    detail_page(&ctx, &user, id, message).await
}

async fn detail_page(
    ctx: &TenantCtx,
    user: &StaffUser,
    id: Uuid,
    message: Option<String>,
) -> Result<Response, AppError> {
    let mut db = ctx.db().await?;
    let c = case_ref(&db, user, id).await?;
    let r = db
        .query_one(
            "SELECT receipt_number, form_version, submitted_at, status, answers, assignee_id, return_reason, return_deadline FROM submissions WHERE id = $1",
            &[&id],
        )
        .await?;
    let version: i32 = r.get(1);
    let def = store::version(&db, c.form_id, version).await?;
    let answers = decrypt_answers(ctx.cipher(), id, &r.get(4))?;
    // Files found infected since they were stored: shown so, not offered.
    let infected = crate::tenant::forms::attachments::infected_files(&**db, id).await?;
    // Opening a case is recorded: who saw which submission, when.
    audit::record(
        &mut db,
        &user.actor(),
        "submission.view",
        &id.to_string(),
        serde_json::json!({}),
    )
    .await?;
    let status = Status::parse(r.get::<_, &str>(3)).unwrap_or(Status::Received);
    let row_id = id.to_string();
    let events = db
        .query(
            "SELECT e.id, e.at, e.actor_label, coalesce(st.email, ''), e.from_status, e.to_status, e.comment FROM submission_events e
               LEFT JOIN staff st ON st.id = e.actor_id WHERE e.submission_id = $1 ORDER BY e.at, e.id",
            &[&id],
        )
        .await?
        .iter()
        .map(|e| {
            let comment: Option<Vec<u8>> = e.get(6);
            let email: String = e.get(3);
            Ok(EventLine {
                at: jst(e.get(1)),
                who: if email.is_empty() { who(e.get(2)) } else { email },
                from: e.get::<_, Option<&str>>(4).and_then(Status::parse).map(Status::label).unwrap_or("—").to_owned(),
                to: Status::parse(e.get::<_, &str>(5)).map(Status::label).unwrap_or_default().to_owned(),
                comment: comment.map(|c| open_text(ctx.cipher(), "submission_events", "comment", &row_id, &c)).transpose()?.unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, AppError>>()?;
    // Mail to the applicant about this case: what went, what waits, what failed.
    let mails = db
        .query(CASE_MAILS_SQL, &[&id])
        .await?
        .iter()
        .map(|m| MailLine {
            what: if m.get::<_, &str>(0) == crate::tenant::forms::citizen::RECEIPT_MAIL {
                "受付・修正受付の控え"
            } else {
                "メッセージ・差戻しの通知"
            },
            at: jst(m.get(1)),
            state: mail_state(m.get(2), m.get(3), m.get(4), m.get(5)),
        })
        .collect();
    let notes = db
        .query(
            "SELECT n.id, n.at, st.email, n.kind, n.body, n.author_label FROM submission_notes n LEFT JOIN staff st ON st.id = n.author_id
              WHERE n.submission_id = $1 ORDER BY n.at, n.id",
            &[&id],
        )
        .await?
        .iter()
        .map(|n| {
            let note_id: i64 = n.get(0);
            Ok(NoteLine {
                at: jst(n.get(1)),
                // Staff by their address; anyone else (an integration) as the history
                // names them; notes from before the label, without an author, as
                // written by the system.
                who: n.get::<_, Option<String>>(2).unwrap_or_else(|| {
                    n.get::<_, Option<&str>>(5).map_or_else(|| "システム".to_owned(), who)
                }),
                kind: if n.get::<_, &str>(3) == "message" { "申請者へのメッセージ" } else { "内部コメント" },
                body: open_text(ctx.cipher(), "submission_notes", "body", &note_id.to_string(), &n.get::<_, Vec<u8>>(4))?,
            })
        })
        .collect::<Result<Vec<_>, AppError>>()?;
    let identity = crate::tenant::identity::of_submission(ctx, &**db, id)
        .await?
        .map(|v| (jst(v.at), v.issuer, crate::tenant::identity::lines(&v.who)));
    let proxy = crate::tenant::forms::proxy::of_submission(&**db, id)
        .await?
        .map(|k| k.shown());
    let reason: Option<Vec<u8>> = r.get(6);
    let deadline: Option<time::Date> = r.get(7);
    let assignee: Option<i64> = r.get(5);
    let mut assignees = vec![Choice {
        value: "0".into(),
        label: "（未割当）".into(),
        selected: assignee.is_none(),
    }];
    assignees.extend(staff_choices(&db, user, assignee).await?);
    let page = DetailPage {
        site: ctx.name.to_string(),
        nav: Some(Nav::new(user, "inbox")),
        id,
        receipt: r.get(0),
        form_title: def.title.clone(),
        form_version: version,
        received: jst(r.get(2)),
        status: status.label(),
        status_value: status.as_str(),
        next: status
            .staff_next()
            .iter()
            .map(|s| Choice {
                value: s.as_str().into(),
                label: s.label().into(),
                selected: false,
            })
            .collect(),
        assignees,
        answers: def
            .fields()
            .filter_map(|f| {
                answers.get(&f.id).map(|a| {
                    let withheld = match a {
                        Answer::File(file) => infected.get(&file.id).map(|s| withheld(s)),
                        _ => None,
                    };
                    AnswerLine {
                        label: f.label.clone(),
                        value: a.display(),
                        file: match a {
                            Answer::File(file) if withheld.is_none() => {
                                Some(format!("/admin/submissions/{id}/files/{}", file.id))
                            }
                            _ => None,
                        },
                        withheld,
                    }
                })
            })
            .collect(),
        identity,
        identity_asked: def.settings.identity,
        proxy,
        events,
        notes,
        mails,
        return_reason: reason
            .map(|r| open_text(ctx.cipher(), "submissions", "return_reason", &row_id, &r))
            .transpose()?
            .unwrap_or_default(),
        return_deadline: deadline.map(crate::ja::date_both).unwrap_or_default(),
        csrf: user.csrf.clone(),
        can_edit: user.can_edit(c.department_id),
        delete_reasons: if retention::FINISHED.contains(&status.as_str())
            && user.can_delete_cases(c.department_id)
        {
            retention::Reason::ALL
                .iter()
                .map(|r| (r.as_str(), r.label()))
                .collect()
        } else {
            Vec::new()
        },
        retention: retention_line(&db, &c, id, status).await?,
        message,
    };
    Ok(render(
        if page.message.as_deref().is_some_and(|m| m.starts_with('!')) {
            StatusCode::CONFLICT
        } else {
            StatusCode::OK
        },
        &page,
    ))
}

/// The case page's line on 保存期間: the form's published setting, and when this
/// application goes (counted from its last status change) once it is finished.
async fn retention_line(
    db: &tokio_postgres::Client,
    c: &CaseRef,
    id: Uuid,
    status: Status,
) -> Result<String, AppError> {
    let years = store::current_retention(db, c.form_id).await?;
    let Some(years) = years else {
        return Ok("保存期間: 定めなし（削除するまで保存されます）".into());
    };
    if !retention::FINISHED.contains(&status.as_str()) {
        return Ok(format!(
            "保存期間: {years}年（完了・却下・取下げになった年度の翌年度4月1日から数えます）"
        ));
    }
    let finished: time::OffsetDateTime = db
        .query_one(
            "SELECT coalesce((SELECT max(at) FROM submission_events WHERE submission_id = $1), (SELECT updated_at FROM submissions WHERE id = $1))",
            &[&id],
        )
        .await?
        .get(0);
    Ok(match retention::deleted_from(finished, years) {
        Some(at) => format!(
            "保存期間: {years}年。{}以降、毎日の自動削除で削除されます",
            crate::ja::date_both(at.date())
        ),
        None => format!("保存期間: {years}年"),
    })
}

/// 申請の削除: a finished application deleted by a 管理者 or its department's
/// 所属管理者, who chose a reason and typed its receipt number.
pub async fn delete(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<Uuid>,
    body: FormData,
) -> Result<Response, AppError> {
    user.check_csrf(&body)?;
    let mut db = ctx.db().await?;
    let c = case_ref(&db, &user, id).await?;
    if !user.can_delete_cases(c.department_id) {
        return Err(AppError::Forbidden);
    }
    let Some(reason) = retention::Reason::parse(body.get("reason")) else {
        drop(db);
        return detail_page(
            &ctx,
            &user,
            id,
            Some("!削除する理由を選んでください".into()),
        )
        .await;
    };
    let client: &mut tokio_postgres::Client = &mut db;
    match retention::delete_one(client, &user.actor(), id, body.get("receipt"), reason).await? {
        Ok(receipt) => {
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("deleted", &receipt)
                .finish();
            Ok(see_other(&format!("/admin/inbox?{query}")))
        }
        Err(refusal) => {
            drop(db);
            detail_page(&ctx, &user, id, Some(format!("!{refusal}"))).await
        }
    }
}

fn change_from(body: &FormData) -> Result<Change, AppError> {
    let to = Status::parse(body.get("to"))
        .ok_or_else(|| AppError::BadRequest("変更後の状態を選択してください".into()))?;
    Ok(Change {
        to,
        comment: body.get("comment").chars().take(2000).collect(),
        reason: body.get("reason").chars().take(2000).collect(),
        deadline: date(body.get("deadline")),
        notify: body.get("notify") == "yes",
    })
}

pub async fn set_status(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<Uuid>,
    body: FormData,
) -> Result<Response, AppError> {
    user.check_csrf(&body)?;
    let mut db = ctx.db().await?;
    let change = change_from(&body)?;
    let expected = Status::parse(body.get("from"));
    let outcome = status_one(&mut db, &ctx, &user, id, expected, &change).await?;
    drop(db);
    match outcome {
        Ok(_) => {
            if change.mails() {
                ctx.mail_queued();
            }
            Ok(see_other(&format!("/admin/submissions/{id}")))
        }
        Err(refusal) => detail_page(&ctx, &user, id, Some(format!("!{}", refusal.message()))).await,
    }
}

async fn assign_one(
    db: &mut tokio_postgres::Client,
    user: &StaffUser,
    id: Uuid,
    assignee: Option<i64>,
) -> Result<bool, AppError> {
    let c = case_ref(db, user, id).await?;
    if !user.can_edit(c.department_id) {
        return Err(AppError::Forbidden);
    }
    if let Some(a) = assignee {
        // Only staff of the form's department (or administrators) take its cases.
        let ok = db
            .query_opt(
                "SELECT 1 FROM staff WHERE id = $1 AND NOT disabled AND role <> 'viewer' AND (department_id = $2 OR role = 'admin')",
                &[&a, &c.department_id],
            )
            .await?
            .is_some();
        if !ok {
            return Ok(false);
        }
    }
    let tx = db.transaction().await?;
    tx.execute(
        "UPDATE submissions SET assignee_id = $2, updated_at = now() WHERE id = $1",
        &[&id, &assignee],
    )
    .await?;
    audit::append(
        &tx,
        &user.actor(),
        "submission.assign",
        &id.to_string(),
        serde_json::json!({ "assignee": assignee }),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub async fn assign(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<Uuid>,
    body: FormData,
) -> Result<Response, AppError> {
    user.check_csrf(&body)?;
    let mut db = ctx.db().await?;
    let assignee = body.get("assignee").parse::<i64>().ok().filter(|a| *a != 0);
    let ok = assign_one(&mut db, &user, id, assignee).await?;
    drop(db);
    if ok {
        Ok(see_other(&format!("/admin/submissions/{id}")))
    } else {
        detail_page(
            &ctx,
            &user,
            id,
            Some("!担当者は、このフォームの所属の職員から選んでください".into()),
        )
        .await
    }
}

pub async fn add_note(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<Uuid>,
    body: FormData,
) -> Result<Response, AppError> {
    user.check_csrf(&body)?;
    let mut db = ctx.db().await?;
    let c = case_ref(&db, &user, id).await?;
    if !user.can_edit(c.department_id) {
        return Err(AppError::Forbidden);
    }
    let kind = if body.get("kind") == "message" {
        "message"
    } else {
        "comment"
    };
    let text = body.get("body").trim();
    if text.is_empty() || text.chars().count() > 4000 {
        drop(db);
        return detail_page(
            &ctx,
            &user,
            id,
            Some("!本文を1〜4000文字で入力してください".into()),
        )
        .await;
    }
    let client: &mut tokio_postgres::Client = &mut db;
    let tx = client.transaction().await?;
    add_note_in(
        &tx,
        ctx.cipher(),
        id,
        (Some(user.id), &user.actor().label()),
        kind,
        text,
    )
    .await?;
    audit::append(
        &tx,
        &user.actor(),
        &format!("submission.{kind}"),
        &id.to_string(),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    if kind == "message" {
        ctx.mail_queued();
    }
    Ok(see_other(&format!("/admin/submissions/{id}")))
}

/// Bulk status change or assignment on the rows ticked in the inbox. Each row is
/// checked as on its own page: the department's edit right, and (for a status
/// change) the status the inbox showed, sent as `id:status`.
pub async fn bulk(ctx: TenantCtx, user: StaffUser, body: FormData) -> Result<Response, AppError> {
    user.check_csrf(&body)?;
    let rows: Vec<(Uuid, Option<Status>)> = body
        .all("ids")
        .iter()
        .filter_map(|s| {
            let (id, seen) = s.split_once(':').unwrap_or((s, ""));
            Some((id.parse().ok()?, Status::parse(seen)))
        })
        .take(500)
        .collect();
    let back = body.get("back").to_owned();
    let mut db = ctx.db().await?;
    let (mut done, mut refused) = (0, 0);
    let mut changed: Vec<Uuid> = Vec::new();
    let mut notified = false;
    match body.get("action") {
        "status" => {
            let change = change_from(&body)?;
            for (id, seen) in &rows {
                // Without the status the inbox showed, a stale page could not be told.
                let Some(seen) = seen else {
                    refused += 1;
                    continue;
                };
                match status_one(&mut db, &ctx, &user, *id, Some(*seen), &change).await {
                    Ok(Ok(_)) => {
                        done += 1;
                        changed.push(*id);
                    }
                    Ok(Err(_)) | Err(AppError::NotFound | AppError::Forbidden) => refused += 1,
                    Err(e) => {
                        // What was changed before stays changed: its notices go now.
                        if change.mails() && done > 0 {
                            ctx.mail_queued();
                        }
                        return Err(e);
                    }
                }
            }
            if change.mails() && done > 0 {
                ctx.mail_queued();
            }
            notified = change.notify;
        }
        "assign" => {
            let assignee = body.get("assignee").parse::<i64>().ok().filter(|a| *a != 0);
            for (id, _) in &rows {
                match assign_one(&mut db, &user, *id, assignee).await {
                    Ok(true) => done += 1,
                    Ok(false) | Err(AppError::NotFound | AppError::Forbidden) => refused += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        _ => return Err(AppError::BadRequest("一括操作を選択してください".into())),
    }
    // Who was told: an applicant is mailed only when they gave an address.
    let told = if notified && done > 0 {
        let mailed: i64 = db
            .query_one(
                "SELECT count(*) FROM submissions WHERE id = ANY($1) AND email_index IS NOT NULL",
                &[&changed],
            )
            .await?
            .get(0);
        let without = i64::from(done) - mailed;
        if without == 0 {
            format!("（{mailed}件の申請者にメールで知らせました）")
        } else {
            format!("（{mailed}件の申請者にメールで知らせました。{without}件はメールアドレスの回答がないため、知らせていません）")
        }
    } else {
        String::new()
    };
    drop(db);
    let query = back.strip_prefix("/admin/inbox?").map(str::to_owned);
    let msg = if refused == 0 {
        format!("{done}件を変更しました{told}")
    } else if !told.is_empty() {
        format!("{done}件を変更しました{told}。{refused}件は変更できませんでした（状態の流れに合わない、ほかの職員が先に変更した、または権限がない）")
    } else {
        format!("{done}件を変更しました。{refused}件は変更できませんでした（状態の流れに合わない、ほかの職員が先に変更した、または権限がない）")
    };
    inbox_page(&ctx, &user, query.as_deref(), Some(msg)).await
}

/// A status change by a member of staff, with the checks of the case's page: the
/// department's edit right, then the workflow and the status the page showed.
async fn status_one(
    db: &mut tokio_postgres::Client,
    ctx: &TenantCtx,
    user: &StaffUser,
    id: Uuid,
    seen: Option<Status>,
    change: &Change,
) -> Result<Result<Status, Refusal>, AppError> {
    let c = case_ref(db, user, id).await?;
    if !user.can_edit(c.department_id) {
        return Err(AppError::Forbidden);
    }
    change_status(
        db,
        ctx.cipher(),
        &user.actor(),
        Some(user.id),
        id,
        seen,
        change,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::who;

    #[test]
    fn mail_states_for_staff() {
        use super::mail_state;
        assert_eq!(mail_state(None, 0, None, false), "送信待ち");
        assert_eq!(
            mail_state(None, 2, Some("smtp 451".into()), false),
            "再送待ち（2回失敗）（smtp 451）"
        );
        assert_eq!(
            mail_state(None, 1, Some("smtp 550".into()), true),
            "送信できませんでした（smtp 550）"
        );
        let t = time::macros::datetime!(2026-11-26 05:30 UTC);
        assert_eq!(
            mail_state(Some(t), 1, None, false),
            "送信済み 2026年11月26日（令和8年11月26日） 14:30"
        );
    }

    #[test]
    fn history_rows_name_who_in_words() {
        assert_eq!(who("citizen"), "申請者");
        assert_eq!(who("api:6001:基幹連携:本庁"), "API（基幹連携:本庁）");
        assert_eq!(who("operator"), "operator");
    }
}
