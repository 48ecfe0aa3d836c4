//! 状況照会: a citizen looks up an application with its receipt number and the
//! e-mail address used, and sees its status and any message, never the answers.
//! A returned (差戻し) application can be corrected and sent again from here.

use askama::Template;
use axum::http::{header, StatusCode};
use axum::response::Response;
use uuid::Uuid;

use super::cases::{open_text, Status};
use super::forms::citizen::{jst, start_resubmission};
use super::http::FormData;
use super::TenantCtx;
use crate::domain::ReceiptNumber;
use crate::error::AppError;
use crate::tenant::audit::{self, Actor};
use crate::web::render;

/// Lookups allowed per tenant and client address: a burst, then one every few seconds.
pub const LOOKUP_BURST: u32 = 5;
pub const LOOKUP_EVERY_SECS: u64 = 6;

pub struct Message {
    pub at: String,
    pub body: String,
}

pub struct Found {
    pub receipt: String,
    pub title: String,
    pub status: &'static str,
    /// The status itself (`status` is its label).
    pub state: Status,
    pub returned: bool,
    /// Returned, and the deadline for the correction has passed.
    pub late: bool,
    pub updated: String,
    pub reason: String,
    pub deadline: String,
    pub messages: Vec<Message>,
    /// The applicant may withdraw it here ([`may_withdraw`]).
    pub withdrawable: bool,
    /// Under review: withdrawn only by asking the department.
    pub reviewing: bool,
    /// The department's 問い合わせ先.
    pub contact: Option<crate::tenant::forms::store::Contact>,
}

/// Whether the applicant may withdraw an application in this status from the status
/// page: before the department takes it up (受付) or while a correction is asked
/// for (差戻し). Under review, they ask the department, which may withdraw it.
pub fn may_withdraw(status: Status) -> bool {
    matches!(status, Status::Received | Status::Returned)
}

#[derive(Template)]
#[template(path = "citizen/status.html")]
struct StatusPage {
    site: String,
    receipt: String,
    email: String,
    error: Option<String>,
    found: Option<Found>,
    /// What was just done (取下げ).
    done: Option<&'static str>,
    /// 申請一覧 is offered (mail is delivered).
    mine: bool,
}

pub async fn form(ctx: TenantCtx) -> Response {
    render(
        StatusCode::OK,
        &StatusPage {
            site: ctx.name.to_string(),
            receipt: String::new(),
            email: String::new(),
            error: None,
            found: None,
            done: None,
            mine: ctx.mail_on(),
        },
    )
}

/// The submission a receipt number and e-mail address point at, if both match.
async fn find(
    ctx: &TenantCtx,
    db: &tokio_postgres::Client,
    body: &FormData,
) -> Result<Result<Uuid, String>, AppError> {
    let Ok(receipt) = ReceiptNumber::parse(body.get("receipt")) else {
        return Ok(Err(
            "受付番号の形式が正しくありません（例: 4K7M-9XPQ）".into()
        ));
    };
    let email = body.get("email");
    if !crate::ja::nfkc(email).contains('@') {
        return Ok(Err("メールアドレスを入力してください".into()));
    }
    let indexes: Vec<Vec<u8>> = crate::ja::email_lookup_keys(email)
        .iter()
        .map(|k| ctx.cipher().blind_index("submissions", "email", k).to_vec())
        .collect();
    let row = db
        .query_opt(
            "SELECT id FROM submissions WHERE receipt_number = $1 AND email_index = ANY($2)",
            &[&receipt.as_str(), &indexes],
        )
        .await?;
    // The same answer whichever of the two did not match.
    Ok(row.map(|r| r.get(0)).ok_or_else(|| {
        "該当する申請が見つかりません。受付番号とメールアドレスをご確認ください".to_owned()
    }))
}

/// The status page for what was posted: `found`, or the form again with `error`.
fn page(
    ctx: &TenantCtx,
    body: &FormData,
    error: Option<String>,
    found: Option<Found>,
) -> StatusPage {
    StatusPage {
        site: ctx.name.to_string(),
        receipt: body.get("receipt").to_owned(),
        email: body.get("email").to_owned(),
        error,
        found,
        done: None,
        mine: ctx.mail_on(),
    }
}

/// The submission the posted receipt number and address point at, or the lookup
/// form again (404) saying that they did not match.
async fn find_or_ask(
    ctx: &TenantCtx,
    db: &tokio_postgres::Client,
    body: &FormData,
) -> Result<Result<Uuid, Response>, AppError> {
    Ok(find(ctx, db, body)
        .await?
        .map_err(|msg| render(StatusCode::NOT_FOUND, &page(ctx, body, Some(msg), None))))
}

pub async fn lookup(ctx: TenantCtx, body: FormData) -> Result<Response, AppError> {
    let mut db = ctx.db().await?;
    let id = match find_or_ask(&ctx, &db, &body).await? {
        Ok(id) => id,
        Err(again) => return Ok(again),
    };
    let found = looked_up(&ctx, &mut db, id).await?;
    Ok(render(
        StatusCode::OK,
        &page(&ctx, &body, None, Some(found)),
    ))
}

/// [`describe`] for the applicant who looked it up, logged as a lookup.
async fn looked_up(
    ctx: &TenantCtx,
    db: &mut deadpool_postgres::ClientWrapper,
    id: Uuid,
) -> Result<Found, AppError> {
    let found = describe(ctx, db, id).await?;
    audit::record(
        db,
        &Actor::Citizen,
        "status.lookup",
        &id.to_string(),
        serde_json::json!({}),
    )
    .await?;
    Ok(found)
}

/// What the applicant is shown of application `id`: its status and the messages to
/// them, never the answers.
async fn describe(
    ctx: &TenantCtx,
    db: &tokio_postgres::Client,
    id: Uuid,
) -> Result<Found, AppError> {
    let r = db
        .query_one(
            "SELECT s.receipt_number, f.draft->>'title', s.status, s.updated_at, s.return_reason, s.return_deadline, v.title, f.contact_name, f.contact
               FROM submissions s JOIN forms f ON f.id = s.form_id
               JOIN form_versions v ON v.form_id = s.form_id AND v.version = s.form_version WHERE s.id = $1",
            &[&id],
        )
        .await?;
    let row_id = id.to_string();
    let status = Status::parse(r.get::<_, &str>(2)).unwrap_or(Status::Received);
    let reason: Option<Vec<u8>> = r.get(4);
    let deadline: Option<time::Date> = r.get(5);
    let messages = db
        .query("SELECT id, at, body FROM submission_notes WHERE submission_id = $1 AND kind = 'message' ORDER BY at, id", &[&id])
        .await?
        .iter()
        .map(|n| {
            let note: i64 = n.get(0);
            Ok(Message { at: jst(n.get(1)), body: open_text(ctx.cipher(), "submission_notes", "body", &note.to_string(), &n.get::<_, Vec<u8>>(2))? })
        })
        .collect::<Result<Vec<_>, AppError>>()?;
    Ok(Found {
        contact: crate::tenant::forms::store::Contact::of(r.get(7), r.get(8)),
        receipt: r.get(0),
        title: r.get::<_, Option<String>>(6).unwrap_or_default(),
        status: status.label(),
        state: status,
        returned: status == Status::Returned,
        late: status == Status::Returned && deadline.is_some_and(|d| d < crate::ja::today()),
        updated: jst(r.get(3)),
        reason: if status == Status::Returned {
            reason
                .map(|x| open_text(ctx.cipher(), "submissions", "return_reason", &row_id, &x))
                .transpose()?
                .unwrap_or_default()
        } else {
            String::new()
        },
        deadline: if status == Status::Returned {
            deadline.map(crate::ja::date_both).unwrap_or_default()
        } else {
            String::new()
        },
        messages,
        withdrawable: may_withdraw(status),
        reviewing: status == Status::Reviewing,
    })
}

/// 差戻し: open the form again with the earlier answers, to correct and send. The
/// answers are shown to whoever holds the receipt number and the address, so the
/// opening is logged as a lookup is.
pub async fn resubmit(ctx: TenantCtx, body: FormData) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let id = match find_or_ask(&ctx, &db, &body).await? {
        Ok(id) => id,
        Err(again) => return Ok(again),
    };
    drop(db);
    let (location, cookie) = start_resubmission(&ctx, id).await?;
    let mut db = ctx.db().await?;
    audit::record(
        &mut db,
        &Actor::Citizen,
        "status.resubmit_open",
        &id.to_string(),
        serde_json::json!({}),
    )
    .await?;
    drop(db);
    let mut resp = super::http::see_other(&location);
    resp.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(resp)
}

#[derive(Template)]
#[template(path = "citizen/withdraw.html")]
struct WithdrawPage {
    site: String,
    receipt: String,
    email: String,
    title: String,
    /// Proves the confirmation comes from this question, for a browser that sends
    /// no `Origin` (see [`withdraw_token`]).
    token: String,
}

/// How long a withdrawal's question stays answerable without an `Origin` header:
/// its token is bound to a half-hour window, and the one before is taken too.
const WITHDRAW_WINDOW_SECS: i64 = 1800;

/// A token only this municipality's question page can give (keyed by its data key),
/// bound to the application and address it was asked for and to a time window.
fn withdraw_token(ctx: &TenantCtx, receipt: &str, email: &str, window: i64) -> String {
    hex::encode(ctx.cipher().blind_index(
        "status_withdraw",
        "token",
        &format!("{window}\u{1f}{receipt}\u{1f}{email}"),
    ))
}

fn withdraw_window() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp() / WITHDRAW_WINDOW_SECS
}

/// 取下げ by the applicant, in two steps: the button on the status page asks for a
/// confirmation; the confirmation withdraws it (see [`may_withdraw`]), as a member of
/// staff would, recorded in its history and the operation log as the applicant's. A
/// withdrawn application gives back its place of a 定員.
pub async fn withdraw(
    ctx: TenantCtx,
    headers: axum::http::HeaderMap,
    body: FormData,
) -> Result<Response, AppError> {
    // Only from this municipality's own pages: nobody else's page can withdraw an
    // application, even one whose receipt number and address it knows. A browser (or
    // proxy) that sends no `Origin` may see the question, and confirms with the
    // token the question carries, which no other site can make.
    let same = super::forms::citizen::same_origin(&ctx, &headers);
    if !same && headers.contains_key(axum::http::header::ORIGIN) {
        return Err(AppError::Csrf);
    }
    if !same && body.get("confirm") == "yes" {
        let (receipt, email, sent) = (body.get("receipt"), body.get("email"), body.get("token"));
        let now = withdraw_window();
        let proven = !sent.is_empty()
            && [now, now - 1]
                .iter()
                .any(|w| super::http::same_secret(&withdraw_token(&ctx, receipt, email, *w), sent));
        if !proven {
            return Err(AppError::Csrf);
        }
    }
    let mut db = ctx.db().await?;
    let id = match find_or_ask(&ctx, &db, &body).await? {
        Ok(id) => id,
        Err(again) => return Ok(again),
    };
    // Each step shows what a lookup shows, and is logged as one.
    let found = looked_up(&ctx, &mut db, id).await?;
    if !found.withdrawable {
        let why = "この申請は、現在の状況ではオンラインで取り下げられません。担当部署にお問い合わせください。";
        return Ok(render(
            StatusCode::CONFLICT,
            &page(&ctx, &body, Some(why.into()), Some(found)),
        ));
    }
    if body.get("confirm") != "yes" {
        return Ok(render(
            StatusCode::OK,
            &WithdrawPage {
                site: ctx.name.to_string(),
                token: withdraw_token(
                    &ctx,
                    body.get("receipt"),
                    body.get("email"),
                    withdraw_window(),
                ),
                receipt: found.receipt,
                email: body.get("email").to_owned(),
                title: found.title,
            },
        ));
    }
    let change = super::cases::Change {
        to: Status::Withdrawn,
        comment: String::new(),
        reason: String::new(),
        deadline: None,
        // The applicant is told by mail too: a withdrawal made by someone else who
        // knew the receipt number and the address does not go unnoticed.
        notify: true,
    };
    let outcome = super::cases::change_status(
        &mut db,
        ctx.cipher(),
        &Actor::Citizen,
        None,
        id,
        Some(found.state),
        &change,
    )
    .await?;
    let found = describe(&ctx, &db, id).await?;
    let mut shown = page(&ctx, &body, None, Some(found));
    match outcome {
        Ok(_) => {
            ctx.mail_queued();
            shown.done = Some("申請を取り下げました。");
        }
        // Changed meanwhile (taken up for review, or withdrawn already): as it is now.
        Err(_) => {
            shown.error = Some(
                "この申請の状況が変わったため、取り下げられませんでした。現在の状況をご確認ください。".into(),
            );
        }
    }
    Ok(render(
        if shown.error.is_some() {
            StatusCode::CONFLICT
        } else {
            StatusCode::OK
        },
        &shown,
    ))
}
