//! 一時保存: a citizen part-way through a form has a link mailed to them, and opens
//! it later, on this device or another, to go on from the page they saved.
//!
//! The link carries a random key; the draft keeps only its hash, and the mail (in the
//! outbox, sealed like every payload) loses it once sent or given up. A draft whose
//! link was mailed is kept [`LINK_DAYS`] from the latest link instead of 24 hours
//! from the last step. Opening the link is two steps: the page it leads to changes
//! nothing (mail scanners fetch links), and its button moves the draft into this
//! browser under a new random cookie token; from then on the draft is kept 24 hours
//! from the last step again. For [`SECOND_PRESS_SECS`] more the key still works in
//! the browser that opened it (told by a claim cookie its page set), for a reload or
//! a press whose answer was lost; then in none. The browser that saved the draft is
//! told where it went.
//!
//! Offered only where mail is delivered, and not for a correction (差戻し), which is
//! reopened from the status page. Links are limited per draft ([`MAX_LINKS`]), per
//! address ([`LINKS_PER_ADDRESS`] a day) and per municipality ([`LINKS_PER_DAY`]), and
//! ask for the form's proof of work when its final submit does.

use askama::Template;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::answers::check_all;
use super::citizen::{
    cookie_drafts, first_error_page, jst, load_draft, notice, open_draft, open_form, posted_token,
    same_origin, visible_pages, with_cookie, Draft, Posted, DRAFT_HOURS,
};
use super::definition::{FieldKind, FormDefinition};
use super::store::Published;
use crate::crypto::random_token;
use crate::error::AppError;
use crate::tenant::http::{cookies, see_other, set_cookie, token_hash, FormData, Query};
use crate::tenant::TenantCtx;
use crate::web::render;

/// How long a mailed link (and the draft behind it) lasts.
pub const LINK_DAYS: i32 = 7;
/// Links one draft may send: enough for a typo in the address and a second try.
pub const MAX_LINKS: i32 = 5;
/// Links one address is sent in 24 hours, from any draft of the municipality: the
/// form is not a way to fill a stranger's inbox.
pub const LINKS_PER_ADDRESS: i64 = 3;
/// Links one municipality mails in 24 hours, to all addresses: the form is not a way
/// to send mail in bulk through the city's relay. Past it, a citizen finishes the
/// application in one go (nothing typed is lost) or asks the next day.
pub const LINKS_PER_DAY: i64 = 1_000;
/// How long after a link was opened it still works (a reload, or a second press whose
/// first answer was lost on the way), moving the draft again.
const SECOND_PRESS_SECS: f64 = 120.0;
/// How long a browser keeps its claim on a form's links (see `claim_cookie`).
const CLAIM_SECS: u64 = 3600;
/// The open draft a link's key ($1, hashed) opens in the form $2, and its expiry,
/// while the key works: unopened, or opened less than $3 seconds ago by the browser
/// with the claim $4 (hashed).
pub const LINKED_DRAFT_SQL: &str = "SELECT id, expires_at FROM citizen_drafts
  WHERE resume_hash = $1 AND form_id = $2 AND submission_id IS NULL AND expires_at > now()
    AND (resumed_at IS NULL OR (resumed_at > now() - make_interval(secs => $3) AND resume_claim = $4))";

/// The outbox kind of the mail with the link. Sealed to its own row, with no
/// submission behind it.
pub const RESUME_MAIL: &str = "resume";

/// The cookie that tells the browser which opened a form's link (set by the link's
/// page, for the link's path only).
fn claim_cookie(public_id: &str) -> String {
    format!("md_r_{public_id}")
}

/// This browser's claim on the form's links (see [`claim_cookie`]), hashed, if it has one.
fn claim(headers: &HeaderMap, public_id: &str) -> Option<Vec<u8>> {
    cookies(headers, &claim_cookie(public_id))
        .first()
        .map(|c| token_hash(c))
}

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
    /// A proof-of-work challenge (JSON) when the form asks for one.
    pow: Option<String>,
}

#[derive(Template)]
#[template(path = "citizen/resume.html")]
struct ResumePage {
    site: String,
    title: String,
    action: String,
    until: String,
    /// This browser has another draft of the form open, which opening replaces.
    replaces: bool,
}

#[derive(Deserialize)]
pub struct SaveQuery {
    page: Option<usize>,
}

/// The page saved from, if the form has it (else the confirmation step), and where
/// 戻る leads.
fn saved_from(form: &Published, page: Option<usize>) -> (Option<usize>, String) {
    let public_id = &form.public_id;
    match page.filter(|p| *p < form.def.pages.len()) {
        Some(p) => (Some(p), format!("/f/{public_id}?page={p}")),
        None => (None, format!("/f/{public_id}/confirm")),
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

/// The published form and this browser's open draft when 一時保存 is offered for
/// it, or where to go instead.
async fn savable(
    ctx: &TenantCtx,
    db: &deadpool_postgres::ClientWrapper,
    public_id: &str,
    headers: &HeaderMap,
) -> Result<Result<(Published, String, Draft), Response>, AppError> {
    let found = open_draft(ctx, db, public_id, headers).await?;
    Ok(match found {
        Ok((_, _, d)) if !ctx.mail_on() || d.resubmit_of.is_some() => {
            Err(see_other(&format!("/f/{public_id}")))
        }
        other => other,
    })
}

fn save_page(
    ctx: &TenantCtx,
    form: &Published,
    token: String,
    page: Option<usize>,
    email: String,
) -> Result<SavePage, AppError> {
    let (page, back) = saved_from(form, page);
    Ok(SavePage {
        site: ctx.name.to_string(),
        title: form.def.title.clone(),
        token,
        action: format!("/f/{}/save", form.public_id),
        back,
        page: page.map(|p| p.to_string()).unwrap_or_default(),
        email,
        error: None,
        days: LINK_DAYS,
        sent: None,
        pow: super::pow::challenge_if_required(ctx, form.id, form.def.settings.proof_of_work)?,
    })
}

/// 一時保存: where to mail the link (the form's page sent with 「一時保存」 leads here).
pub async fn save_form(
    ctx: TenantCtx,
    Path(public_id): Path<String>,
    Query(q): Query<SaveQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let (form, token, draft) = match savable(&ctx, &db, &public_id, &headers).await? {
        Ok(found) => found,
        Err(elsewhere) => return Ok(elsewhere),
    };
    let email = typed_email(&form.def, &draft);
    let page = save_page(&ctx, &form, token, q.page, email)?;
    Ok(no_store(render(StatusCode::OK, &page)))
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
    let draft = match load_draft(&ctx, &db, form.id, &token).await? {
        Some(d) if d.submission.is_some() => return Ok(see_other(&format!("/f/{public_id}/done"))),
        Some(d) if ctx.mail_on() && d.resubmit_of.is_none() => d,
        _ => return Ok(see_other(&format!("/f/{public_id}"))),
    };
    let typed: String = body.get("email").chars().take(254).collect();
    let page = body.get("page").parse().ok();
    let mut shown = save_page(&ctx, &form, token, page, typed.clone())?;
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
    if shown.pow.is_some() {
        if let Err(e) = super::pow::check(&ctx, &db, body.get("pow")).await {
            if !matches!(e, AppError::BadRequest(_)) {
                return Err(e);
            }
            return refused(
                shown,
                "送信前の自動確認をやり直しました。もう一度「リンクを送る」を押してください",
            );
        }
    }
    let tx = db.transaction().await?;
    let until = match issue(&tx, &ctx, &form, &draft, &shown.token, page, &to).await? {
        Issued::Until(until) => until,
        Issued::AddressFull => {
            return refused(
                shown,
                &format!("このメールアドレスには、24時間に{LINKS_PER_ADDRESS}通までしかリンクを送れません。届いたメールのリンクをお使いいただくか、時間をおいてお試しください"),
            )
        }
        Issued::MunicipalityFull => {
            return refused(
                shown,
                "本日この自治体から送れるリンクの数が上限に達しました。お手数ですが、このまま入力を続けて送信するか、明日あらためてお試しください",
            )
        }
        Issued::DraftFull => {
            return refused(
                shown,
                &format!("この入力内容について送れるリンクは{MAX_LINKS}通までです。前に届いたメールのリンクをお使いください"),
            )
        }
        // Sent, expired or moved to another browser meanwhile.
        Issued::Gone => return Ok(see_other(&format!("/f/{public_id}"))),
    };
    tx.commit().await?;
    ctx.mail_queued();
    shown.email = to;
    shown.sent = Some(until);
    Ok(no_store(render(StatusCode::OK, &shown)))
}

/// What [`issue`] came to. Anything but `Until` leaves the transaction to be
/// dropped, so nothing changes.
enum Issued {
    /// The link was queued; it works until then (for people).
    Until(String),
    /// The address was sent [`LINKS_PER_ADDRESS`] links in the last 24 hours.
    AddressFull,
    /// The municipality mailed [`LINKS_PER_DAY`] links in the last 24 hours.
    MunicipalityFull,
    /// The draft sent [`MAX_LINKS`].
    DraftFull,
    /// The draft was sent, expired or moved away meanwhile.
    Gone,
}

/// Gives the draft (under `token`) a new key, saved from `page`, and queues its link
/// to `to`, within the limits, in `tx`.
async fn issue(
    tx: &deadpool_postgres::Transaction<'_>,
    ctx: &TenantCtx,
    form: &Published,
    draft: &Draft,
    token: &str,
    page: Option<usize>,
    to: &str,
) -> Result<Issued, AppError> {
    use crate::tenant::mail::{link_quota, Quota};
    let quota = link_quota(
        &**tx,
        ctx.cipher(),
        RESUME_MAIL,
        to,
        LINKS_PER_ADDRESS,
        LINKS_PER_DAY,
    )
    .await?;
    let recipient = match quota {
        Quota::Open(recipient) => recipient,
        Quota::AddressFull => return Ok(Issued::AddressFull),
        Quota::MunicipalityFull => return Ok(Issued::MunicipalityFull),
    };
    let key = random_token(32);
    let saved_page = saved_from(form, page).0.and_then(|p| i32::try_from(p).ok());
    let updated = tx
        .query_opt(
            "UPDATE citizen_drafts SET resume_hash = $2, resume_mails = resume_mails + 1, resume_page = $5,
                    resumed_at = NULL, resume_claim = NULL, updated_at = now(),
                    expires_at = greatest(expires_at, now() + make_interval(days => $3))
              WHERE id = $1 AND token_hash = $6 AND submission_id IS NULL AND expires_at > now()
              RETURNING expires_at, resume_mails <= $4",
            &[
                &draft.id,
                &token_hash(&key),
                &LINK_DAYS,
                &MAX_LINKS,
                &saved_page,
                &token_hash(token),
            ],
        )
        .await?;
    let until = match updated {
        Some(r) if r.get::<_, bool>(1) => jst(r.get(0)),
        Some(_) => return Ok(Issued::DraftFull),
        None => return Ok(Issued::Gone),
    };
    let payload = serde_json::json!({
        "to": to,
        "title": form.def.title,
        "url": format!("{}/f/{}/resume/{key}", ctx.base_url, form.public_id),
        "until": until,
    })
    .to_string();
    crate::tenant::mail::queue_link(&**tx, ctx.cipher(), RESUME_MAIL, &payload, &recipient).await?;
    Ok(Issued::Until(until))
}

/// The draft a link's key opens, and until when, if the key is current.
async fn linked_draft(
    db: &tokio_postgres::Client,
    form: &Published,
    key: &str,
    claim: Option<&Vec<u8>>,
) -> Result<Option<(Uuid, time::OffsetDateTime)>, AppError> {
    Ok(db
        .query_opt(
            LINKED_DRAFT_SQL,
            &[&token_hash(key), &form.id, &SECOND_PRESS_SECS, &claim],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
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
/// Fetching it changes nothing but the browser's claim cookie, set when it has none
/// (a random value, for the link's path only).
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
    let held = claim(&headers, &public_id);
    let Some((id, until)) = linked_draft(&db, &form, &key, held.as_ref()).await? else {
        return Ok(spent_link(&ctx, &form));
    };
    let replaces = cookie_drafts(&ctx, &db, form.id, &public_id, &headers)
        .await?
        .iter()
        .any(|(_, d)| {
            d.as_ref()
                .is_some_and(|d| d.submission.is_none() && d.id != id)
        });
    let mut resp = no_store(render(
        StatusCode::OK,
        &ResumePage {
            site: ctx.name.to_string(),
            title: form.def.title.clone(),
            action: format!("/f/{public_id}/resume/{key}"),
            until: jst(until),
            replaces,
        },
    ));
    // The key is in this page's address: requests from it (its stylesheet) tell
    // only the origin. Not `no-referrer`, which would send the button's POST with
    // `Origin: null`.
    resp.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin"),
    );
    if held.is_none() {
        resp.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(
                &claim_cookie(&public_id),
                &random_token(32),
                &format!("/f/{public_id}/resume"),
                Some(CLAIM_SECS),
                ctx.secure_cookies,
            ),
        );
    }
    Ok(resp)
}

/// An address as one mailbox, for the per-address limit: lower case, without a
/// `+tag`, and for Gmail without dots (which it ignores).
pub(crate) fn mailbox(address: &str) -> String {
    let address = crate::ja::email_key(address);
    let Some((local, domain)) = address.rsplit_once('@') else {
        return address;
    };
    let local = local.split('+').next().unwrap_or(local);
    match domain {
        "gmail.com" | "googlemail.com" => format!("{}@gmail.com", local.replace('.', "")),
        _ => format!("{local}@{domain}"),
    }
}

/// Moves the draft into this browser: a cookie token of its own, the key spent, and
/// on to the page it was saved from (or the first page still to be answered, or the
/// confirmation step).
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
    // The first opening records the browser that saved it and this browser's claim;
    // a second, within the window, must come with the same claim. A 本人確認 done (or
    // under way) in the browser that saved it stays there: whoever opens the link
    // (sent to an address nobody checked) verifies again.
    let token = random_token(32);
    let moved = db
        .query_opt(
            "WITH moved AS (
             UPDATE citizen_drafts SET token_hash = $3, updated_at = now(),
                    moved_from = CASE WHEN resumed_at IS NULL THEN token_hash ELSE moved_from END,
                    resume_claim = CASE WHEN resumed_at IS NULL THEN $6 ELSE resume_claim END,
                    resumed_at = coalesce(resumed_at, now()),
                    expires_at = now() + make_interval(hours => $4)
              WHERE resume_hash = $1 AND form_id = $2 AND submission_id IS NULL AND expires_at > now()
                AND (resumed_at IS NULL OR (resumed_at > now() - make_interval(secs => $5) AND resume_claim = $6))
              RETURNING id, resume_page
             ), verified AS (
               DELETE FROM draft_identities WHERE draft_id IN (SELECT id FROM moved)
             ), started AS (
               DELETE FROM identity_requests WHERE draft_id IN (SELECT id FROM moved)
             )
             SELECT resume_page FROM moved",
            &[
                &token_hash(&key),
                &form.id,
                &token_hash(&token),
                &DRAFT_HOURS,
                &SECOND_PRESS_SECS,
                &claim(&headers, &public_id),
            ],
        )
        .await?;
    let Some(saved_page) = moved.map(|r| r.get::<_, Option<i32>>(0)) else {
        return Ok(spent_link(&ctx, &form));
    };
    let Some(draft) = load_draft(&ctx, &db, form.id, &token).await? else {
        return Ok(spent_link(&ctx, &form));
    };
    let visible = visible_pages(&form.def, &draft.inputs);
    let next = match saved_page.and_then(|p| usize::try_from(p).ok()) {
        Some(p) if visible.contains(&p) => format!("/f/{public_id}?page={p}"),
        _ => match check_all(&form.def, &draft.inputs) {
            Ok(_) => format!("/f/{public_id}/confirm"),
            Err(errors) => format!(
                "/f/{public_id}?page={}",
                first_error_page(&form.def, &errors)
            ),
        },
    };
    tracing::info!(form = %public_id, "draft moved by a mailed link");
    Ok(with_cookie(see_other(&next), &ctx, &form, &token))
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mailbox_is_one_address_however_it_is_written() {
        for a in [
            "hanako.kasai@example.jp",
            "Hanako.Kasai@EXAMPLE.JP",
            "hanako.kasai+save@example.jp",
            "hanako.kasai+a+b@example.jp",
        ] {
            assert_eq!(mailbox(a), "hanako.kasai@example.jp", "{a}");
        }
        assert_eq!(mailbox("H.Kasai+x@googlemail.com"), "hkasai@gmail.com");
        assert_eq!(mailbox("h.kasai@gmail.com"), "hkasai@gmail.com");
        assert_ne!(mailbox("h.kasai@example.jp"), mailbox("hkasai@example.jp"));
        assert_eq!(mailbox("no-at-sign"), "no-at-sign");
    }
}
