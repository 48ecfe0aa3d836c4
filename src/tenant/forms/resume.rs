//! 一時保存: a citizen part-way through a form has a link mailed to them, and opens
//! it later, on this device or another, to go on where they left off.
//!
//! The link carries a random key; the draft keeps only its hash, and the mail (in the
//! outbox, sealed like every payload) loses it once sent. A draft whose link was
//! mailed is kept [`LINK_DAYS`] from the latest link instead of 24 hours from the last
//! step. Opening the link is two steps: the page it leads to changes nothing (mail
//! scanners fetch links), and its button moves the draft into this browser under a
//! new cookie, spending the key. The browser that saved it then starts afresh.

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::answers::check_all;
use super::citizen::{
    first_error_page, jst, load_draft, notice, open_draft, open_form, posted_token, same_origin,
    with_cookie, Draft, Posted,
};
use super::definition::{FieldKind, FormDefinition};
use super::store::Published;
use crate::crypto::random_token;
use crate::error::AppError;
use crate::tenant::http::{see_other, token_hash, FormData};
use crate::tenant::TenantCtx;
use crate::web::render;

/// How long a mailed link (and the draft behind it) lasts.
pub const LINK_DAYS: i32 = 7;
/// Links one draft may send: enough for a typo in the address and a second try,
/// not a way to mail strangers.
pub const MAX_LINKS: i32 = 5;
/// The outbox kind of the mail with the link. Sealed to its own row, with no
/// submission behind it.
pub const RESUME_MAIL: &str = "resume";

#[derive(Template)]
#[template(path = "citizen/save.html")]
struct SavePage {
    site: String,
    title: String,
    token: String,
    action: String,
    /// Where 戻る leads: the page the person saved on, or the confirmation step.
    back: String,
    page: String,
    email: String,
    error: Option<String>,
    days: i32,
    /// Until when the link sent works, once it is sent.
    sent: Option<String>,
}

#[derive(Template)]
#[template(path = "citizen/resume.html")]
struct ResumePage {
    site: String,
    title: String,
    action: String,
    until: String,
}

#[derive(Deserialize)]
pub struct SaveQuery {
    page: Option<usize>,
}

/// The page to go back to: the one saved from, if the form has it, else the
/// confirmation step (saved from there).
fn back_to(form: &Published, page: Option<usize>) -> (String, String) {
    let public_id = &form.public_id;
    match page.filter(|p| *p < form.def.pages.len()) {
        Some(p) => (format!("/f/{public_id}?page={p}"), p.to_string()),
        None => (format!("/f/{public_id}/confirm"), String::new()),
    }
}

/// The first e-mail address the draft holds, as typed: the likeliest place to send
/// the link.
fn typed_email(def: &FormDefinition, draft: &Draft) -> String {
    def.fields()
        .filter(|f| matches!(f.kind, FieldKind::Email {}))
        .find_map(|f| draft.inputs.get(&f.id).and_then(|v| v.first()).cloned())
        .unwrap_or_default()
}

/// 一時保存: where to mail the link (the form's page sent with 「一時保存」 leads here).
pub async fn save_form(
    ctx: TenantCtx,
    Path(public_id): Path<String>,
    Query(q): Query<SaveQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let (form, token, draft) = match open_draft(&ctx, &db, &public_id, &headers).await? {
        Ok(found) => found,
        Err(elsewhere) => return Ok(elsewhere),
    };
    let (back, page) = back_to(&form, q.page);
    Ok(no_store(render(
        StatusCode::OK,
        &SavePage {
            site: ctx.name.to_string(),
            title: form.def.title.clone(),
            token,
            action: format!("/f/{public_id}/save"),
            back,
            page,
            email: typed_email(&form.def, &draft),
            error: None,
            days: LINK_DAYS,
            sent: None,
        },
    )))
}

/// Mails the link: a new key for the draft (the earlier link stops working), its
/// expiry moved to [`LINK_DAYS`] from now, and the mail queued, in one transaction.
pub async fn send_link(
    ctx: TenantCtx,
    Path(public_id): Path<String>,
    headers: HeaderMap,
    body: FormData,
) -> Result<Response, AppError> {
    let mut db = ctx.db().await?;
    let form = match open_form(&ctx, &db, &public_id, &headers).await? {
        Ok(form) => form,
        Err(page) => return Ok(page),
    };
    let Posted::Token(token) = posted_token(&ctx, &db, &form, &headers, &body).await? else {
        return Ok(see_other(&format!("/f/{public_id}")));
    };
    let Some(draft) = load_draft(&ctx, &db, form.id, &token).await? else {
        return Ok(see_other(&format!("/f/{public_id}")));
    };
    if draft.submission.is_some() {
        return Ok(see_other(&format!("/f/{public_id}/done")));
    }
    let typed: String = body.get("email").chars().take(254).collect();
    let (back, page) = back_to(&form, body.get("page").parse().ok());
    let mut shown = SavePage {
        site: ctx.name.to_string(),
        title: form.def.title.clone(),
        token: token.clone(),
        action: format!("/f/{public_id}/save"),
        back,
        page,
        email: typed.clone(),
        error: None,
        days: LINK_DAYS,
        sent: None,
    };
    let refused = |mut shown: SavePage, why: &str| {
        shown.error = Some(why.to_owned());
        Ok(no_store(render(StatusCode::UNPROCESSABLE_ENTITY, &shown)))
    };
    let address = crate::ja::nfkc(typed.trim());
    if address.is_empty() {
        return refused(shown, "メールアドレスを入力してください");
    }
    let Some(to) = super::answers::email_address(&address) else {
        return refused(
            shown,
            "メールアドレスの形式が正しくありません（例: yamada@example.jp）",
        );
    };
    let key = random_token(32);
    let tx = db.transaction().await?;
    let until = tx
        .query_opt(
            "UPDATE citizen_drafts SET resume_hash = $2, resume_mails = resume_mails + 1, updated_at = now(),
                    expires_at = greatest(expires_at, now() + make_interval(days => $3))
              WHERE id = $1 AND submission_id IS NULL AND expires_at > now() AND resume_mails < $4
              RETURNING expires_at",
            &[&draft.id, &token_hash(&key), &LINK_DAYS, &MAX_LINKS],
        )
        .await?
        .map(|r| jst(r.get(0)));
    let Some(until) = until else {
        return refused(
            shown,
            &format!("この入力内容について送れるリンクは{MAX_LINKS}通までです。前に届いたメールのリンクをお使いください"),
        );
    };
    let payload = serde_json::json!({
        "to": to,
        "title": form.def.title,
        "url": format!("{}/f/{public_id}/resume/{key}", ctx.base_url),
        "until": until,
    })
    .to_string();
    crate::tenant::mail::queue(&*tx, ctx.cipher(), RESUME_MAIL, None, &payload).await?;
    tx.commit().await?;
    ctx.mail_queued();
    shown.email = to;
    shown.sent = Some(until);
    Ok(no_store(render(StatusCode::OK, &shown)))
}

/// The draft a link's key opens, and until when, if the key is current.
async fn linked_draft(
    db: &tokio_postgres::Client,
    form: &Published,
    key: &str,
) -> Result<Option<time::OffsetDateTime>, AppError> {
    Ok(db
        .query_opt(
            "SELECT expires_at FROM citizen_drafts
              WHERE resume_hash = $1 AND form_id = $2 AND submission_id IS NULL AND expires_at > now()",
            &[&token_hash(key), &form.id],
        )
        .await?
        .map(|r| r.get(0)))
}

fn spent_link(ctx: &TenantCtx, form: &Published) -> Response {
    no_store(notice(
        ctx,
        StatusCode::NOT_FOUND,
        &form.def.title,
        "このリンクは使えません",
        "リンクの有効期限が過ぎたか、すでに開かれたか、新しいリンクが送られています。新しいリンクのメールがあればそちらを開いてください。保存した内容が見つからないときは、最初から入力してください。",
    ))
}

/// The page a mailed link leads to: what opening it does, and a button to do it.
/// Fetching it changes nothing.
pub async fn link_page(
    ctx: TenantCtx,
    Path((public_id, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let form = match open_form(&ctx, &db, &public_id, &headers).await? {
        Ok(form) => form,
        Err(page) => return Ok(page),
    };
    let Some(until) = linked_draft(&db, &form, &key).await? else {
        return Ok(spent_link(&ctx, &form));
    };
    let mut resp = no_store(render(
        StatusCode::OK,
        &ResumePage {
            site: ctx.name.to_string(),
            title: form.def.title.clone(),
            action: format!("/f/{public_id}/resume/{key}"),
            until: jst(until),
        },
    ));
    // The key is in this page's address: requests from it (its stylesheet) tell
    // only the origin. Not `no-referrer`, which would send the button's POST with
    // `Origin: null`.
    resp.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin"),
    );
    Ok(resp)
}

/// Moves the draft into this browser: a new cookie token, the key spent, and on to
/// the first page still to be answered (or the confirmation step).
pub async fn take_up(
    ctx: TenantCtx,
    Path((public_id, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    // Another site must not slip its own draft into this browser.
    if !same_origin(&ctx, &headers) {
        return Err(AppError::Csrf);
    }
    let db = ctx.db().await?;
    let form = match open_form(&ctx, &db, &public_id, &headers).await? {
        Ok(form) => form,
        Err(page) => return Ok(page),
    };
    let token = random_token(32);
    let moved = db
        .execute(
            "UPDATE citizen_drafts SET token_hash = $3, resume_hash = NULL, updated_at = now()
              WHERE resume_hash = $1 AND form_id = $2 AND submission_id IS NULL AND expires_at > now()",
            &[&token_hash(&key), &form.id, &token_hash(&token)],
        )
        .await?;
    if moved != 1 {
        return Ok(spent_link(&ctx, &form));
    }
    let Some(draft) = load_draft(&ctx, &db, form.id, &token).await? else {
        return Ok(spent_link(&ctx, &form));
    };
    let next = match check_all(&form.def, &draft.inputs) {
        Ok(_) => format!("/f/{public_id}/confirm"),
        Err(errors) => format!(
            "/f/{public_id}?page={}",
            first_error_page(&form.def, &errors)
        ),
    };
    tracing::info!(form = %public_id, "draft resumed from a mailed link");
    Ok(with_cookie(see_other(&next), &ctx, &form, &token))
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
