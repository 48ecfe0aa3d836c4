//! The citizen's side of a form: page by page with 戻る / 次へ that keep answers, a
//! 確認画面, then 送信 and a 受付番号. Works without JavaScript. Answers between
//! pages are kept encrypted in a draft found by a random token in a cookie; the same
//! token in each form body is the CSRF check (double submit), and the draft's id is
//! the idempotency key of the submission.

use askama::Template;
use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use serde::Deserialize;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::answers::{
    check_all, check_page, field_visible, input_names, page_inputs, page_visible, Answer, Answers,
    FieldError, Raw,
};
use super::attachments::{self, PageBody};
use super::definition::{FieldKind, FormDefinition};
use super::store::{self, Availability, Published};
use super::view::{page_views, FieldView};
use crate::crypto::{random_token, FieldCipher, FieldRef};
use crate::domain::ReceiptNumber;
use crate::error::AppError;
use crate::tenant::audit::Actor;
use crate::tenant::http::{
    cookies, same_secret, see_other, set_cookie, token_hash, FormData, Query,
};
use crate::tenant::TenantCtx;
use crate::web::render;

/// How long an unfinished application is kept.
pub const DRAFT_HOURS: i32 = 24;

pub(super) fn cookie_name(public_id: &str) -> String {
    format!("md_f_{public_id}")
}

pub(super) struct Draft {
    pub(super) id: Uuid,
    pub(super) inputs: Raw,
    pub(super) submission: Option<Uuid>,
    /// Set when this draft corrects a returned (差戻し) submission.
    pub(super) resubmit_of: Option<Uuid>,
}

impl Draft {
    /// A new draft, with nothing in it yet.
    fn fresh() -> Self {
        Self {
            id: Uuid::new_v4(),
            inputs: Raw::new(),
            submission: None,
            resubmit_of: None,
        }
    }
}

fn draft_ref(id: &str) -> FieldRef<'_> {
    FieldRef {
        table: "citizen_drafts",
        column: "inputs",
        row_id: id,
    }
}

/// A citizen's draft by the hash of the token in their cookie.
pub const LOAD_DRAFT_SQL: &str = "SELECT id, inputs, submission_id, resubmit_of FROM citizen_drafts WHERE token_hash = $1 AND form_id = $2 AND expires_at > now()";

pub(super) async fn load_draft(
    ctx: &TenantCtx,
    db: &deadpool_postgres::ClientWrapper,
    form_id: i64,
    token: &str,
) -> Result<Option<Draft>, AppError> {
    let stmt = db.prepare_cached(LOAD_DRAFT_SQL).await?;
    let row = db.query_opt(&stmt, &[&token_hash(token), &form_id]).await?;
    let Some(r) = row else { return Ok(None) };
    let id: Uuid = r.get(0);
    let inputs: Option<Vec<u8>> = r.get(1);
    let inputs = match inputs {
        Some(ct) => {
            let plain = ctx
                .cipher()
                .decrypt(&draft_ref(&id.to_string()), &ct)
                .map_err(|e| AppError::Internal(anyhow::anyhow!("draft: {e}")))?;
            serde_json::from_slice(&plain).unwrap_or_default()
        }
        None => Raw::new(),
    };
    Ok(Some(Draft {
        id,
        inputs,
        submission: r.get(2),
        resubmit_of: r.get(3),
    }))
}

/// Deletes drafts past their expiry, sent or not: what a citizen typed and left is
/// kept [`DRAFT_HOURS`] after their last step (or, saved with a mailed link, until
/// the link expires), no longer; the link mails done with a day ago; and 申請一覧's
/// links and sessions past their end. Returns
/// the rows deleted. Run daily by the server.
pub async fn purge_expired_drafts(db: &tokio_postgres::Client) -> Result<u64, AppError> {
    let drafts = db
        .execute("DELETE FROM citizen_drafts WHERE expires_at <= now()", &[])
        .await?;
    // Link mails (一時保存) done with for a day: sent or given up, their key and
    // recipient already gone; their recipient's blind index counted for a day.
    let links = db
        .execute(
            "DELETE FROM outbox WHERE recipient_index IS NOT NULL AND created_at < now() - interval '1 day'
               AND (sent_at IS NOT NULL OR next_attempt_at = 'infinity')",
            &[],
        )
        .await?;
    // 本人確認 started and never finished (ten minutes each).
    let verifications = db
        .execute(
            "DELETE FROM identity_requests WHERE expires_at <= now()",
            &[],
        )
        .await?;
    // 申請一覧's links unopened and sessions ended.
    let sign_ins = db
        .execute(
            "DELETE FROM citizen_sign_ins WHERE expires_at <= now()",
            &[],
        )
        .await?;
    // Files of drafts gone (expired or taken over) or sent without them.
    let files = super::attachments::purge_orphans(db).await?;
    Ok(drafts + links + verifications + sign_ins + files)
}

/// The draft saved under a token (see [`save_draft`]; $1 id, $2 token hash, $3 form,
/// $4 version, $5 sealed inputs, $6 hours, $7 the submission it corrects).
pub const SAVE_DRAFT_SQL: &str = "INSERT INTO citizen_drafts (id, token_hash, form_id, form_version, inputs, resubmit_of, expires_at)
  SELECT $1::uuid, $2::bytea, $3::bigint, $4::integer, $5::bytea, $7::uuid, now() + make_interval(hours => $6::integer)
   -- Not under a token whose draft a mailed link moved elsewhere.
   WHERE NOT EXISTS (SELECT 1 FROM citizen_drafts m WHERE m.moved_from = $2 AND m.moved_from IS NOT NULL
                       AND m.submission_id IS NULL AND m.expires_at > now())
  ON CONFLICT (token_hash) DO UPDATE SET id = excluded.id,
         form_version = excluded.form_version, inputs = excluded.inputs,
         expires_at = greatest(citizen_drafts.expires_at, excluded.expires_at), updated_at = now(),
         -- A new draft taking the row over takes none of its links.
         resume_hash = CASE WHEN citizen_drafts.id = excluded.id THEN citizen_drafts.resume_hash END,
         resume_mails = CASE WHEN citizen_drafts.id = excluded.id THEN citizen_drafts.resume_mails ELSE 0 END,
         resume_page = CASE WHEN citizen_drafts.id = excluded.id THEN citizen_drafts.resume_page END,
         moved_from = CASE WHEN citizen_drafts.id = excluded.id THEN citizen_drafts.moved_from END
   WHERE citizen_drafts.submission_id IS NULL
     AND citizen_drafts.form_id = excluded.form_id
     AND citizen_drafts.resubmit_of IS NOT DISTINCT FROM excluded.resubmit_of";

/// Saves the draft, keyed by its token: a new draft whose token already has a row
/// (a double tap on the first 次へ, or a draft expired under an open page) takes
/// that row over rather than failing on the token's uniqueness, unless that row was
/// sent already or is a correction (差戻し) of another application, which a plain
/// draft must not become; and nothing is saved under a token whose draft a mailed
/// link moved to another browser (see `resume`). Every save moves the expiry to
/// [`DRAFT_HOURS`] from now, or leaves it later (a draft whose link was mailed).
/// Returns whether it was saved.
async fn save_draft(
    ctx: &TenantCtx,
    db: &deadpool_postgres::ClientWrapper,
    form: &Published,
    token: &str,
    draft: &Draft,
) -> Result<bool, AppError> {
    let plain = serde_json::to_vec(&draft.inputs).map_err(|e| AppError::Internal(e.into()))?;
    let ct = ctx
        .cipher()
        .encrypt(&draft_ref(&draft.id.to_string()), &plain)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("draft: {e}")))?;
    let stmt = db.prepare_cached(SAVE_DRAFT_SQL).await?;
    let saved = db
        .execute(
            &stmt,
            &[
                &draft.id,
                &token_hash(token),
                &form.id,
                &form.version,
                &ct,
                &DRAFT_HOURS,
                &draft.resubmit_of,
            ],
        )
        .await;
    match saved {
        Ok(n) => Ok(n == 1),
        // The draft's own id under this token, after a mailed link moved it to
        // another token between its loading and this save.
        Err(e) if e.as_db_error().and_then(|d| d.constraint()) == Some("citizen_drafts_pkey") => {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Moves an open draft's expiry to [`DRAFT_HOURS`] from now, unless it is later
/// already (the form page renews its cookie for as long).
async fn renew_draft(db: &deadpool_postgres::ClientWrapper, id: Uuid) -> Result<(), AppError> {
    let stmt = db
        .prepare_cached(
            "UPDATE citizen_drafts SET expires_at = greatest(expires_at, now() + make_interval(hours => $2)) WHERE id = $1 AND submission_id IS NULL",
        )
        .await?;
    db.execute(&stmt, &[&id, &DRAFT_HOURS]).await?;
    Ok(())
}

/// Answers of the visible pages before `upto`, ignoring their errors (for show/hide).
fn answers_before(def: &FormDefinition, raw: &Raw, upto: usize) -> Answers {
    let mut answers = Answers::new();
    for page in def.pages.iter().take(upto) {
        if page_visible(page, &answers) {
            let (a, _) = check_page(page, raw, &answers);
            answers.extend(a);
        }
    }
    answers
}

pub(super) fn visible_pages(def: &FormDefinition, raw: &Raw) -> Vec<usize> {
    (0..def.pages.len())
        .filter(|&i| page_visible(&def.pages[i], &answers_before(def, raw, i)))
        .collect()
}

pub struct ErrorLink {
    pub href: String,
    pub message: String,
}

#[derive(Template)]
#[template(path = "citizen/form.html")]
struct FormPage {
    site: String,
    title: String,
    description: String,
    page_title: String,
    step: usize,
    steps: usize,
    page: usize,
    fields: Vec<FieldView>,
    errors: Vec<ErrorLink>,
    token: String,
    action: String,
    first: bool,
    preview: bool,
    /// The published version the page shows (sent back as `_version`).
    version: i32,
    /// A new version was published while this person filled in the form.
    updated: bool,
    /// What was saved had expired when this person sent a page: that page's
    /// answers are kept, the others must be given again.
    expired: bool,
    /// With `updated` or `expired`: a file that page sent was refused (its kind, size
    /// or the virus scan) and must be attached again.
    files_refused: bool,
    /// The person is correcting a returned application (sent back as `_correction`,
    /// so that a page sent after its cookie expired is not taken as a new one).
    correction: bool,
    /// 一時保存 is offered (mail is delivered; not for a correction).
    save: bool,
    /// What this browser had saved was moved to another by a mailed link.
    moved: bool,
    /// The form asks for 本人確認 before it is sent (said on its first page).
    identity: bool,
    /// The page has a 添付ファイル field: it is sent as multipart/form-data.
    multipart: bool,
    /// The department's 問い合わせ先.
    contact: Option<store::Contact>,
}

impl FormPage {
    /// One page of a form: `page` is the page's index, `step` its position (from 0)
    /// among the `steps` pages shown to this person.
    fn shell(
        ctx: &TenantCtx,
        def: &FormDefinition,
        page: usize,
        step: usize,
        steps: usize,
        fields: Vec<FieldView>,
    ) -> Self {
        Self {
            site: ctx.name.to_string(),
            title: def.title.clone(),
            description: if step == 0 {
                def.description.clone()
            } else {
                String::new()
            },
            page_title: def
                .pages
                .get(page)
                .map(|p| p.title.clone())
                .unwrap_or_default(),
            step: step + 1,
            steps,
            page,
            fields,
            errors: Vec::new(),
            token: String::new(),
            action: String::new(),
            first: step == 0,
            preview: false,
            version: 0,
            updated: false,
            expired: false,
            files_refused: false,
            correction: false,
            save: false,
            moved: false,
            identity: step == 0 && def.settings.identity,
            multipart: def
                .pages
                .get(page)
                .is_some_and(|p| p.fields.iter().any(|f| f.kind.is_file())),
            contact: None,
        }
    }
}

#[derive(Template)]
#[template(path = "citizen/notice.html")]
struct NoticePage {
    site: String,
    title: String,
    heading: String,
    message: String,
}

pub(crate) fn notice(
    ctx: &TenantCtx,
    status: StatusCode,
    title: &str,
    heading: &str,
    message: &str,
) -> Response {
    render(
        status,
        &NoticePage {
            site: ctx.name.to_string(),
            title: title.to_owned(),
            heading: heading.to_owned(),
            message: message.to_owned(),
        },
    )
}

/// Whether the person is correcting a returned application (its draft says so).
async fn correcting(
    db: &tokio_postgres::Client,
    form: &Published,
    headers: &HeaderMap,
) -> Result<bool, AppError> {
    let hashes: Vec<Vec<u8>> = cookies(headers, &cookie_name(&form.public_id))
        .iter()
        .map(|t| token_hash(t))
        .collect();
    if hashes.is_empty() {
        return Ok(false);
    }
    let row = db
        .query_opt(
            "SELECT 1 FROM citizen_drafts WHERE token_hash = ANY($1) AND form_id = $2 AND resubmit_of IS NOT NULL AND submission_id IS NULL AND expires_at > now() LIMIT 1",
            &[&hashes, &form.id],
        )
        .await?;
    Ok(row.is_some())
}

/// The published form at `public_id` as this listener's zone sees it, or the page to
/// show instead when it is closed or full and this visit is not the correction of a
/// returned application.
pub(super) async fn open_form(
    ctx: &TenantCtx,
    db: &deadpool_postgres::ClientWrapper,
    public_id: &str,
    headers: &HeaderMap,
) -> Result<Result<Published, Response>, AppError> {
    let form = store::published(ctx.id, db, public_id).await?;
    if !form.def.settings.published_in(ctx.zone) {
        return Err(AppError::NotFound);
    }
    // Only a closed (or full) form needs to know whether this is a correction.
    if let Some(page) = unavailable(ctx, &form) {
        if !correcting(db, &form, headers).await? {
            return Ok(Err(page));
        }
    }
    Ok(Ok(form))
}

fn unavailable(ctx: &TenantCtx, form: &Published) -> Option<Response> {
    let title = &form.def.title;
    let (heading, msg) = match form.availability {
        Availability::Open => return None,
        Availability::NotYetOpen => {
            let when = form.def.settings.opens_at.map(jst).unwrap_or_default();
            (
                "受付開始前です",
                format!("この手続きの受付は{when}から始まります。"),
            )
        }
        Availability::Ended => (
            "受付は終了しました",
            "この手続きの受付期間は終了しました。".to_owned(),
        ),
        Availability::Full => (
            "定員に達しました",
            "この手続きは定員に達したため、受付を終了しました。".to_owned(),
        ),
        Availability::Closed => (
            "受付を停止しています",
            "この手続きは現在受け付けていません。".to_owned(),
        ),
    };
    Some(notice(ctx, StatusCode::OK, title, heading, &msg))
}

/// A time in Asia/Tokyo (UTC+9, no daylight saving) for people.
pub fn jst(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::macros::offset!(+9));
    format!(
        "{} {:02}:{:02}",
        crate::ja::date_both(t.date()),
        t.hour(),
        t.minute()
    )
}

#[derive(Deserialize)]
pub struct PageQuery {
    page: Option<usize>,
    /// Set when a page of an earlier version was sent (see [`post_page`]).
    updated: Option<u8>,
    /// Set when a page was sent after what was saved had expired (see [`post_page`]).
    expired: Option<u8>,
    /// Set with either when a file that page sent was refused.
    refused: Option<u8>,
}

/// Links from the error summary to the input at fault: a part's own input (名 of a
/// name), or the field's first input as the page draws it (a radio or checkbox
/// group's first option).
fn error_links(errors: &[FieldError], fields: &[super::view::FieldView]) -> Vec<ErrorLink> {
    errors
        .iter()
        .map(|e| {
            let drawn = fields
                .iter()
                .find(|f| f.id == e.field && e.input == e.field)
                .map(|f| f.input_id.clone());
            ErrorLink {
                href: format!(
                    "#{}",
                    drawn.unwrap_or_else(|| super::view::input_id(&e.input))
                ),
                message: e.message.clone(),
            }
        })
        .collect()
}

fn form_page(
    ctx: &TenantCtx,
    form: &Published,
    page: usize,
    raw: &Raw,
    errors: &[FieldError],
    token: &str,
) -> FormPage {
    let def = &form.def;
    let visible = visible_pages(def, raw);
    let step = visible.iter().position(|&p| p == page).unwrap_or(0);
    let before = answers_before(def, raw, page);
    let p = &def.pages[page];
    // Rules on an earlier page are decided here; rules on this page are shown to the
    // person (and applied by the server when the page is sent).
    let same_page: Vec<&str> = p.fields.iter().map(|f| f.id.as_str()).collect();
    let mut fields = page_views(p, raw, errors, |f| match &f.show_if {
        Some(c) if !same_page.contains(&c.field.as_str()) => field_visible(f, &before),
        _ => true,
    });
    for f in &mut fields {
        if !same_page.contains(&f.show_field.as_str()) {
            f.show_field.clear();
        }
        f.attached_href = f
            .attached_id
            .map(|id| format!("/f/{}/files/{id}", form.public_id));
    }
    super::view::mark_places(&mut fields, &form.places);
    // The summary lists this page's errors only: the confirmation step can find
    // errors on several pages (after a new version), and links to fields of other
    // pages lead nowhere.
    let errors: Vec<FieldError> = errors
        .iter()
        .filter(|e| same_page.contains(&e.field.as_str()))
        .cloned()
        .collect();
    FormPage {
        errors: error_links(&errors, &fields),
        token: token.to_owned(),
        action: format!("/f/{}", form.public_id),
        version: form.version,
        save: ctx.mail_on(),
        contact: form.contact.clone(),
        ..FormPage::shell(ctx, def, page, step, visible.len(), fields)
    }
}

/// One page of `draft` with its errors (a correction's page says so).
fn draft_page(
    ctx: &TenantCtx,
    form: &Published,
    page: usize,
    draft: &Draft,
    errors: &[FieldError],
    token: &str,
) -> FormPage {
    let mut shown = FormPage {
        correction: draft.resubmit_of.is_some(),
        ..form_page(ctx, form, page, &draft.inputs, errors, token)
    };
    if draft.resubmit_of.is_some() {
        // A correction keeps the places its application holds, full as they may be
        // now: no option is closed to it here, and the send checks the others.
        for f in &mut shown.fields {
            for o in &mut f.options {
                o.disabled = false;
            }
        }
    }
    shown
}

pub(super) fn with_cookie(
    mut resp: Response,
    ctx: &TenantCtx,
    form: &Published,
    token: &str,
) -> Response {
    let path = format!("/f/{}", form.public_id);
    let max_age = u64::try_from(DRAFT_HOURS).unwrap_or(24) * 3600;
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            &cookie_name(&form.public_id),
            token,
            &path,
            Some(max_age),
            ctx.secure_cookies,
        ),
    );
    resp
}

pub async fn show(
    ctx: TenantCtx,
    Path(public_id): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let form = match open_form(&ctx, &db, &public_id, &headers).await? {
        Ok(form) => form,
        Err(page) => return Ok(page),
    };
    let drafts = cookie_drafts(&ctx, &db, form.id, &public_id, &headers).await?;
    // Sent here after a page was sent without the form's cookie, and there is still
    // none: this browser does not keep it, and nothing typed can be kept.
    if q.expired.is_some() && drafts.is_empty() {
        return Ok(notice(
            &ctx,
            StatusCode::BAD_REQUEST,
            &form.def.title,
            "入力内容を一時保存できません",
            "このブラウザでは入力内容を一時保存できません（Cookieが保存されていません）。ブラウザのCookieを有効にするか、別のブラウザでお試しください。",
        ));
    }
    // A draft already sent is done with: the form starts afresh under a new token
    // (another application from the same browser, or the next person at a shared
    // PC, must not land on the earlier receipt and lose what they type). A token
    // with nothing saved under it is not kept either: it may have been planted.
    let open = drafts.iter().find_map(|(t, d)| {
        d.as_ref()
            .filter(|d| d.submission.is_none())
            .map(|d| (t, d))
    });
    if let Some((_, d)) = open {
        renew_draft(&db, d.id).await?;
    }
    let token = open
        .map(|(t, _)| t.clone())
        .unwrap_or_else(|| random_token(32));
    let correction = open.is_some_and(|(_, d)| d.resubmit_of.is_some());
    let moved = open.is_none() && !drafts.is_empty() && {
        let tokens: Vec<&str> = drafts.iter().map(|(t, _)| t.as_str()).collect();
        moved_away(&db, &form, &tokens).await?
    };
    let raw = open.map(|(_, d)| d.inputs.clone()).unwrap_or_default();
    let visible = visible_pages(&form.def, &raw);
    let page = q
        .page
        .filter(|p| visible.contains(p))
        .or_else(|| visible.first().copied())
        .unwrap_or(0);
    let resp = render(
        StatusCode::OK,
        &FormPage {
            updated: q.updated.is_some(),
            expired: q.expired.is_some(),
            files_refused: q.refused.is_some(),
            correction,
            moved,
            ..form_page(&ctx, &form, page, &raw, &[], &token)
        },
    );
    Ok(with_cookie(resp, &ctx, &form, &token))
}

/// An open draft moved away from one of these token hashes ($1) of the form $2.
pub const MOVED_AWAY_SQL: &str = "SELECT 1 FROM citizen_drafts
  WHERE moved_from = ANY($1) AND moved_from IS NOT NULL AND form_id = $2 AND submission_id IS NULL AND expires_at > now() LIMIT 1";

/// Said to the browser whose draft a mailed link moved to another: go on there.
fn moved_notice(ctx: &TenantCtx, form: &Published) -> Response {
    notice(
        ctx,
        StatusCode::CONFLICT,
        &form.def.title,
        "入力内容は別の端末に移りました",
        "一時保存していた入力内容は、メールのリンクから開かれ、リンクを開いたブラウザに移りました。続きはそちらで入力してください。ここで新しく申請するときは、フォームを開き直して最初から入力してください。",
    )
}

/// Whether a draft under one of these cookie tokens was moved to another browser by
/// a mailed link (一時保存) and is still open there.
async fn moved_away(
    db: &deadpool_postgres::ClientWrapper,
    form: &Published,
    tokens: &[&str],
) -> Result<bool, AppError> {
    let hashes: Vec<Vec<u8>> = tokens.iter().map(|t| token_hash(t)).collect();
    let stmt = db.prepare_cached(MOVED_AWAY_SQL).await?;
    Ok(db.query_opt(&stmt, &[&hashes, &form.id]).await?.is_some())
}

/// Which of the form's tokens a posted page belongs to.
pub(super) enum Posted {
    Token(String),
    /// Sent from this site without the form's cookie (see [`post_page`]).
    Renew,
}

/// The form's cookie value a posted `_token` matches (double submit), if any.
fn cookie_holding<'a>(values: &'a [String], posted: &str) -> Option<&'a String> {
    values.iter().find(|v| same_secret(v, posted))
}

/// Whether a page posted to the form `public_id` carries a token its cookie holds:
/// then it comes from a page of this site, whatever its `Origin` says.
pub fn carries_the_cookies_token(headers: &HeaderMap, public_id: &str, posted: &str) -> bool {
    cookie_holding(&cookies(headers, &cookie_name(public_id)), posted).is_some()
}

/// The token a posted page is saved under: the cookie's, when the page carries it
/// (double submit), or when the request says it comes from a page of this site
/// (`Origin`): a page drawn before another tab opened the form carries an older
/// token than the cookie. Another site's request, or one that says neither, is
/// refused.
pub(super) async fn posted_token(
    ctx: &TenantCtx,
    db: &deadpool_postgres::ClientWrapper,
    form: &Published,
    headers: &HeaderMap,
    body: &FormData,
) -> Result<Posted, AppError> {
    let values = cookies(headers, &cookie_name(&form.public_id));
    if let Some(t) = cookie_holding(&values, body.get("_token")) {
        return Ok(Posted::Token(t.clone()));
    }
    if !same_origin(ctx, headers) {
        return Err(if values.is_empty() {
            AppError::BadRequest(
                "入力内容を一時保存できませんでした。ブラウザのCookieを有効にして、最初からやり直してください。".into(),
            )
        } else {
            AppError::Csrf
        });
    }
    Ok(
        match cookie_drafts(ctx, db, form.id, &form.public_id, headers)
            .await?
            .into_iter()
            .next()
        {
            Some((t, _)) => Posted::Token(t),
            None => Posted::Renew,
        },
    )
}

/// The form's cookie tokens with their drafts, best first: one whose draft is open,
/// then one without a draft, then one whose draft was sent.
pub(super) async fn cookie_drafts(
    ctx: &TenantCtx,
    db: &deadpool_postgres::ClientWrapper,
    form_id: i64,
    public_id: &str,
    headers: &HeaderMap,
) -> Result<Vec<(String, Option<Draft>)>, AppError> {
    let mut out = Vec::new();
    for t in cookies(headers, &cookie_name(public_id)) {
        let d = load_draft(ctx, db, form_id, &t).await?;
        out.push((t, d));
    }
    out.sort_by_key(|(_, d)| match d {
        Some(d) if d.submission.is_none() => 0,
        None => 1,
        Some(_) => 2,
    });
    Ok(out)
}

/// Whether the request says it comes from a page of this site: `Origin`, which
/// browsers send with every form POST, is the address this request reached.
pub(crate) fn same_origin(ctx: &TenantCtx, headers: &HeaderMap) -> bool {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|origin| origin.eq_ignore_ascii_case(&ctx.base_url))
}

/// Keeps what a page sent (for any page of the form it names) in `draft`, and sends
/// the person to the form's first page with a notice (`?…&{why}=1`) of why, and that a
/// file the page sent was refused when it was.
async fn restart(
    ctx: &TenantCtx,
    db: &deadpool_postgres::ClientWrapper,
    form: &Published,
    token: &str,
    mut draft: Draft,
    body: &FormData,
    (why, files_refused): (&str, bool),
) -> Result<Response, AppError> {
    let public_id = &form.public_id;
    for p in &form.def.pages {
        draft.inputs.extend(page_inputs(p, &body.0));
    }
    if !save_draft(ctx, db, form, token, &draft).await? {
        return Ok(see_other(&format!("/f/{public_id}")));
    }
    let first = visible_pages(&form.def, &draft.inputs)
        .first()
        .copied()
        .unwrap_or(0);
    let refused = if files_refused { "&refused=1" } else { "" };
    Ok(see_other(&format!(
        "/f/{public_id}?page={first}&{why}=1{refused}"
    )))
}

/// Files a page sent, kept in `draft` for whichever field of the form as published
/// now they name: for a page of an earlier version, or sent after what was saved
/// expired (see [`restart`]). A file refused is left out, and said so (`true`): the
/// page that follows asks for it again.
async fn keep_files(
    ctx: &TenantCtx,
    db: &mut deadpool_postgres::ClientWrapper,
    form: &Published,
    draft: &mut Draft,
    sent: &PageBody,
) -> Result<bool, AppError> {
    let mut refused = false;
    if sent.files.is_empty() {
        return Ok(refused);
    }
    for p in &form.def.pages {
        let applied =
            attachments::apply(ctx, db, form.id, p, draft.id, &mut draft.inputs, sent).await?;
        attachments::log_found(db, form.id, &applied.found).await?;
        refused |= !applied.errors.is_empty();
    }
    Ok(refused)
}

pub async fn post_page(
    ctx: TenantCtx,
    Path(public_id): Path<String>,
    headers: HeaderMap,
    sent: PageBody,
) -> Result<Response, AppError> {
    let body = &sent.form;
    let mut db = ctx.db().await?;
    let form = match open_form(&ctx, &db, &public_id, &headers).await? {
        Ok(form) => form,
        Err(page) => return Ok(page),
    };
    let def = &form.def;
    // A page sent from this site without its cookie: the cookie expired with the
    // draft (24 hours) while the page stayed open, as phone tabs do. This page's
    // answers are kept under a new token rather than lost with an error (unless it is
    // a correction, which must start again from the status page).
    let token = match posted_token(&ctx, &db, &form, &headers, body).await? {
        // A page of a tab older than the cookie (the same-origin fallback) whose draft
        // a mailed link moved elsewhere: not a page of the cookie's application.
        Posted::Token(t)
            if !same_secret(&t, body.get("_token"))
                && moved_away(&db, &form, &[body.get("_token")]).await? =>
        {
            return Ok(moved_notice(&ctx, &form))
        }
        Posted::Token(t) => t,
        Posted::Renew if body.get("_correction") == "1" => {
            return Ok(notice(
                &ctx,
                StatusCode::CONFLICT,
                &def.title,
                "入力の保存期間が切れました",
                "入力内容の保存期間（24時間）が過ぎました。申請内容の修正は、状況照会からもう一度お進みください。",
            ))
        }
        // The cookie expired (24 hours) and the draft went to another browser by a
        // mailed link meanwhile: go on there.
        Posted::Renew if moved_away(&db, &form, &[body.get("_token")]).await? => {
            return Ok(moved_notice(&ctx, &form))
        }
        Posted::Renew => {
            let token = random_token(32);
            let mut draft = Draft::fresh();
            let refused = keep_files(&ctx, &mut db, &form, &mut draft, &sent).await?;
            let back =
                restart(&ctx, &db, &form, &token, draft, body, ("expired", refused)).await?;
            return Ok(with_cookie(back, &ctx, &form, &token));
        }
    };
    let page: usize = body
        .get("_page")
        .parse()
        .ok()
        .filter(|p| *p < def.pages.len())
        .unwrap_or(0);
    let mut draft = match load_draft(&ctx, &db, form.id, &token).await? {
        Some(d) if d.submission.is_some() => return Ok(see_other(&format!("/f/{public_id}/done"))),
        Some(d) => d,
        // Nothing under this token (a new application, or a draft a mailed link
        // moved elsewhere, which the save below refuses).
        None => Draft::fresh(),
    };
    // A page of an earlier version (a new one was published while this person filled
    // in the form): its number may now be another page's. What it sent that the new
    // version asks for is kept, nothing the draft holds is dropped, and the person
    // goes through the new version from its first page, told why.
    if body
        .get("_version")
        .parse::<i32>()
        .is_ok_and(|v| v != form.version)
    {
        let refused = keep_files(&ctx, &mut db, &form, &mut draft, &sent).await?;
        return restart(&ctx, &db, &form, &token, draft, body, ("updated", refused)).await;
    }
    // This page's inputs replace what the draft held for them; nothing else is lost.
    // A 添付ファイル field keeps its file unless a new one is sent or it is removed.
    let p = &def.pages[page];
    for f in p.fields.iter().filter(|f| !f.kind.is_file()) {
        for name in input_names(f) {
            draft.inputs.remove(&name);
        }
    }
    draft.inputs.extend(page_inputs(p, &body.0));
    let files =
        attachments::apply(&ctx, &db, form.id, p, draft.id, &mut draft.inputs, &sent).await?;
    attachments::log_found(&mut db, form.id, &files.found).await?;
    if !save_draft(&ctx, &db, &form, &token, &draft).await? {
        attachments::discard(&db, draft.id, &files.added).await?;
        // The row under this token was sent meanwhile, or is a correction that
        // expired: its earlier receipt, or a way back in, not a new application.
        let sent = db
            .query_opt(
                "SELECT submission_id IS NOT NULL FROM citizen_drafts WHERE token_hash = $1",
                &[&token_hash(&token)],
            )
            .await?
            .is_some_and(|r| r.get::<_, bool>(0));
        if sent {
            return Ok(see_other(&format!("/f/{public_id}/done")));
        }
        if moved_away(&db, &form, &[&token]).await? {
            return Ok(moved_notice(&ctx, &form));
        }
        return Ok(notice(
            &ctx,
            StatusCode::CONFLICT,
            &def.title,
            "入力の保存期間が切れました",
            "入力内容の保存期間（24時間）が過ぎました。申請内容の修正の場合は、状況照会からもう一度お進みください。",
        ));
    }

    attachments::discard(&db, draft.id, &files.dropped).await?;
    // A file refused: said at once, whichever button was pressed, with the page as
    // it was kept.
    if !files.errors.is_empty() {
        let before = answers_before(def, &draft.inputs, page);
        let (_, mut errors) = check_page(p, &draft.inputs, &before);
        errors.retain(|e| !files.errors.iter().any(|f| f.field == e.field));
        errors.splice(0..0, files.errors);
        return Ok(render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &draft_page(&ctx, &form, page, &draft, &errors, &token),
        ));
    }
    // 一時保存: this page is kept as typed, errors and all, and the person is asked
    // where to mail the link that brings them back.
    if body.get("_nav") == "save" {
        return Ok(see_other(&format!("/f/{public_id}/save?page={page}")));
    }
    let visible = visible_pages(def, &draft.inputs);
    let pos = visible.iter().position(|&i| i == page);
    if body.get("_nav") == "back" {
        let prev = pos
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| visible.get(i))
            .copied()
            .unwrap_or(0);
        return Ok(see_other(&format!("/f/{public_id}?page={prev}")));
    }
    let before = answers_before(def, &draft.inputs, page);
    let (_, errors) = check_page(p, &draft.inputs, &before);
    if !errors.is_empty() {
        return Ok(render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &draft_page(&ctx, &form, page, &draft, &errors, &token),
        ));
    }
    match pos.and_then(|i| visible.get(i + 1)) {
        Some(next) => Ok(see_other(&format!("/f/{public_id}?page={next}"))),
        None => Ok(see_other(&format!("/f/{public_id}/confirm"))),
    }
}

pub struct AnswerRow {
    pub label: String,
    pub value: String,
    pub change: String,
    /// An attached file, for the citizen to open and check.
    pub file: Option<String>,
}

#[derive(Template)]
#[template(path = "citizen/confirm.html")]
struct ConfirmPage {
    site: String,
    title: String,
    rows: Vec<AnswerRow>,
    token: String,
    action: String,
    back: String,
    /// 一時保存 (see `resume`), when offered.
    save: Option<String>,
    /// A proof-of-work challenge (JSON) when the submit needs one.
    pow: Option<String>,
    /// The automatic check before sending failed (or was asked for after the page
    /// was drawn), and this page has a fresh one.
    retry: bool,
    /// 本人確認, when the form asks for it.
    identity: Option<IdentityStep>,
}

impl ConfirmPage {
    /// 本人確認 is asked for and not done yet: no 送信 button.
    fn unverified(&self) -> bool {
        self.identity.as_ref().is_some_and(|i| i.verified.is_none())
    }
}

/// The confirmation page's 本人確認: who was verified, or the way to verify.
pub struct IdentityStep {
    /// The provider's name for citizens (none set: verification is not possible).
    pub provider: Option<String>,
    pub start: String,
    /// The form's first page, to open on its own when framed.
    pub form: String,
    pub verified: Option<Vec<crate::tenant::identity::Line>>,
    pub at: String,
    /// Sent back with 送信 (see [`crate::tenant::identity::Verified::stamp`]).
    pub stamp: String,
    /// The page is in a frame on another site: the provider cannot be reached from
    /// it (its pages refuse frames, and the draft's cookie is the frame's own).
    pub framed: bool,
}

impl IdentityStep {
    async fn of(
        ctx: &TenantCtx,
        db: &tokio_postgres::Client,
        public_id: &str,
        draft: Uuid,
        headers: &HeaderMap,
    ) -> Result<Self, AppError> {
        let verified = crate::tenant::identity::of_draft(ctx, db, draft).await?;
        Ok(Self {
            provider: crate::tenant::identity::provider_label(db).await?,
            start: format!("/f/{public_id}/identity"),
            form: format!("/f/{public_id}"),
            at: verified.as_ref().map(|v| jst(v.at)).unwrap_or_default(),
            stamp: verified
                .as_ref()
                .map(crate::tenant::identity::Verified::stamp)
                .unwrap_or_default(),
            verified: verified.map(|v| crate::tenant::identity::lines(&v.who)),
            framed: headers
                .get("sec-fetch-dest")
                .is_some_and(|v| v.as_bytes() == b"iframe"),
        })
    }
}

/// Whether a new application (not a correction) must carry a verified identity.
pub(super) fn needs_identity(form: &Published, draft: &Draft) -> bool {
    form.def.settings.identity && draft.resubmit_of.is_none()
}

/// Rows for every answered field, in the form's order, with the page to change it on.
fn answer_rows(def: &FormDefinition, answers: &Answers, public_id: &str) -> Vec<AnswerRow> {
    let mut rows = Vec::new();
    for (i, page) in def.pages.iter().enumerate() {
        for f in &page.fields {
            if let Some(a) = answers.get(&f.id) {
                // The input the page draws first (a radio group's first option).
                let anchor = super::view::field_view(f, &Raw::new(), &[]).input_id;
                rows.push(AnswerRow {
                    label: f.label.clone(),
                    value: a.display(),
                    change: format!("/f/{public_id}?page={i}#{anchor}"),
                    file: match a {
                        Answer::File(r) => Some(format!("/f/{public_id}/files/{}", r.id)),
                        _ => None,
                    },
                });
            }
        }
    }
    rows
}

async fn draft_for(
    ctx: &TenantCtx,
    db: &deadpool_postgres::ClientWrapper,
    form: &Published,
    headers: &HeaderMap,
) -> Result<Option<(String, Draft)>, AppError> {
    Ok(cookie_drafts(ctx, db, form.id, &form.public_id, headers)
        .await?
        .into_iter()
        .find_map(|(t, d)| d.map(|d| (t, d))))
}

/// The published form with this browser's open draft and its token, or the page to
/// show instead: the form's own when it is closed, its first page when nothing is
/// saved, the receipt when the draft was sent.
pub(super) async fn open_draft(
    ctx: &TenantCtx,
    db: &deadpool_postgres::ClientWrapper,
    public_id: &str,
    headers: &HeaderMap,
) -> Result<Result<(Published, String, Draft), Response>, AppError> {
    let form = match open_form(ctx, db, public_id, headers).await? {
        Ok(form) => form,
        Err(page) => return Ok(Err(page)),
    };
    Ok(match draft_for(ctx, db, &form, headers).await? {
        None => Err(see_other(&format!("/f/{public_id}"))),
        Some((_, d)) if d.submission.is_some() => Err(see_other(&format!("/f/{public_id}/done"))),
        Some((token, draft)) => Ok((form, token, draft)),
    })
}

#[derive(Deserialize)]
pub struct ConfirmQuery {
    retry: Option<u8>,
}

pub async fn confirm(
    ctx: TenantCtx,
    Path(public_id): Path<String>,
    Query(q): Query<ConfirmQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let (form, token, draft) = match open_draft(&ctx, &db, &public_id, &headers).await? {
        Ok(found) => found,
        Err(elsewhere) => return Ok(elsewhere),
    };
    match sendable(&**db, &form, &draft).await? {
        Ok(answers) => {
            let last = visible_pages(&form.def, &draft.inputs)
                .last()
                .copied()
                .unwrap_or(0);
            let identity = if needs_identity(&form, &draft) {
                Some(IdentityStep::of(&ctx, &db, &public_id, draft.id, &headers).await?)
            } else {
                None
            };
            Ok(render(
                StatusCode::OK,
                &ConfirmPage {
                    site: ctx.name.to_string(),
                    title: form.def.title.clone(),
                    rows: answer_rows(&form.def, &answers, &public_id),
                    token,
                    action: format!("/f/{public_id}/submit"),
                    back: format!("/f/{public_id}?page={last}"),
                    save: (ctx.mail_on() && draft.resubmit_of.is_none())
                        .then(|| format!("/f/{public_id}/save")),
                    pow: super::pow::challenge_if_required(
                        &ctx,
                        form.id,
                        form.def.settings.proof_of_work,
                    )?,
                    retry: q.retry.is_some(),
                    identity,
                },
            ))
        }
        Err(errors) => {
            let page = first_error_page(&form.def, &errors);
            Ok(render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &draft_page(&ctx, &form, page, &draft, &errors, &token),
            ))
        }
    }
}

/// The draft's answers checked as they would be sent: every visible page against
/// the definition, no file found infected since it was attached, and a place left
/// for each option chosen that has 選択肢ごとの定員 (a correction keeps its own).
async fn sendable(
    db: &impl tokio_postgres::GenericClient,
    form: &Published,
    draft: &Draft,
) -> Result<Result<Answers, Vec<FieldError>>, AppError> {
    let answers = match check_all(&form.def, &draft.inputs) {
        Ok(a) => a,
        Err(errors) => return Ok(Err(errors)),
    };
    let mut found = attachments::found_since(db, &answers).await?;
    found.extend(super::places::full(db, form.id, &form.def, &answers, draft.resubmit_of).await?);
    Ok(if found.is_empty() {
        Ok(answers)
    } else {
        Err(found)
    })
}

pub(super) fn first_error_page(def: &FormDefinition, errors: &[FieldError]) -> usize {
    def.pages
        .iter()
        .position(|p| {
            p.fields
                .iter()
                .any(|f| errors.iter().any(|e| e.field == f.id))
        })
        .unwrap_or(0)
}

/// Encrypts each answer on its own, bound to this submission and field.
pub(crate) fn encrypt_answers(
    cipher: &FieldCipher,
    id: Uuid,
    answers: &Answers,
) -> Result<serde_json::Value, AppError> {
    let row = id.to_string();
    let mut map = serde_json::Map::new();
    for (field, answer) in answers {
        let plain = serde_json::to_vec(answer).map_err(|e| AppError::Internal(e.into()))?;
        let column = format!("answer:{field}");
        let ct = cipher
            .encrypt(
                &FieldRef {
                    table: "submissions",
                    column: &column,
                    row_id: &row,
                },
                &plain,
            )
            .map_err(|e| AppError::Internal(anyhow::anyhow!("encrypting an answer: {e}")))?;
        map.insert(
            field.clone(),
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(ct)),
        );
    }
    Ok(serde_json::Value::Object(map))
}

/// Decrypts a stored submission's answers.
pub fn decrypt_answers(
    cipher: &FieldCipher,
    id: Uuid,
    stored: &serde_json::Value,
) -> Result<Answers, AppError> {
    let row = id.to_string();
    let mut out = Answers::new();
    if let Some(map) = stored.as_object() {
        for (field, v) in map {
            // No answer (a JSON null: the inbox picks one field by name, and
            // `answers -> 'field'` of a case that did not answer it is null).
            if v.is_null() {
                continue;
            }
            let ct = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .map_err(|e| AppError::Internal(anyhow::anyhow!("stored answer: {e}")))?;
            let column = format!("answer:{field}");
            let plain = cipher
                .decrypt(
                    &FieldRef {
                        table: "submissions",
                        column: &column,
                        row_id: &row,
                    },
                    &ct,
                )
                .map_err(|e| AppError::Internal(anyhow::anyhow!("decrypting an answer: {e}")))?;
            // serde's message would quote the answer: only the field is named.
            let a: Answer = serde_json::from_slice(&plain).map_err(|_| {
                AppError::Internal(anyhow::anyhow!("stored answer to {field}: not an answer"))
            })?;
            out.insert(field.clone(), a);
        }
    }
    Ok(out)
}

fn first_of_kind(
    def: &FormDefinition,
    answers: &Answers,
    pick: fn(&FieldKind) -> bool,
) -> Option<String> {
    def.fields()
        .filter(|f| pick(&f.kind))
        .find_map(|f| match answers.get(&f.id) {
            Some(Answer::Text(s)) => Some(s.clone()),
            _ => None,
        })
}

pub async fn submit(
    ctx: TenantCtx,
    Path(public_id): Path<String>,
    headers: HeaderMap,
    body: FormData,
) -> Result<Response, AppError> {
    let mut db = ctx.db().await?;
    let form = store::published(ctx.id, &db, &public_id).await?;
    if !form.def.settings.published_in(ctx.zone) {
        return Err(AppError::NotFound);
    }
    let Posted::Token(token) = posted_token(&ctx, &db, &form, &headers, &body).await? else {
        return Ok(see_other(&format!("/f/{public_id}")));
    };
    let Some(draft) = load_draft(&ctx, &db, form.id, &token).await? else {
        return Ok(see_other(&format!("/f/{public_id}")));
    };
    if draft.submission.is_some() {
        return Ok(see_other(&format!("/f/{public_id}/done")));
    }
    // A correction of a returned application is accepted even if the form has since
    // closed or filled up: the application was already received and counted.
    if draft.resubmit_of.is_none() {
        if let Some(r) = unavailable(&ctx, &form) {
            return Ok(r);
        }
    }
    if super::pow::required(&ctx, form.id, form.def.settings.proof_of_work) {
        if let Err(e) = super::pow::check(&ctx, &db, body.get("pow")).await {
            // A double tap carries the same solution twice: the second is refused
            // here while the first is being stored. Once that is through, the second
            // gets the same 受付 page.
            if super::pow::already_used(&db, body.get("pow")).await?
                && draft_sent(&db, draft.id).await?
            {
                return Ok(see_other(&format!("/f/{public_id}/done")));
            }
            // Otherwise the check was switched on after the page was drawn (a spike),
            // its challenge expired, or the browser sent an old solution again (Back
            // to a page kept in its cache): the confirmation page again, with a fresh
            // challenge and a word on why. Nothing the person entered is lost.
            if !matches!(e, AppError::BadRequest(_)) {
                return Err(e);
            }
            tracing::info!("proof of work refused; confirmation page drawn again");
            return Ok(see_other(&format!("/f/{public_id}/confirm?retry=1")));
        }
    }
    // Every answer is checked again, against the version published now.
    let answers = match sendable(&**db, &form, &draft).await? {
        Ok(a) => a,
        Err(errors) => {
            let page = first_error_page(&form.def, &errors);
            return Ok(render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &draft_page(&ctx, &form, page, &draft, &errors, &token),
            ));
        }
    };
    // 本人確認: without it (or when another tab verified someone else since this
    // page was drawn) the confirmation page says what to do.
    let verified = if needs_identity(&form, &draft) {
        match crate::tenant::identity::of_draft(&ctx, &**db, draft.id).await? {
            Some(v) if same_secret(&v.stamp(), body.get("identity")) => Some(v),
            _ => return Ok(see_other(&format!("/f/{public_id}/confirm"))),
        }
    } else {
        None
    };
    if let Some(orig) = draft.resubmit_of {
        let (email, phone) = indexes(&ctx, &form.def, &answers);
        return match resubmit_correction(&ctx, &mut db, &form, &draft, orig, &answers, email, phone)
            .await?
        {
            Ok(resp) => Ok(resp),
            Err(full) => option_full_page(&ctx, &db, &form, &draft, full, &token).await,
        };
    }
    let stored = store_submission(
        &ctx,
        &mut db,
        &form,
        &answers,
        draft.id,
        Some(draft.id),
        &Actor::Citizen,
        verified.as_ref(),
        None,
    )
    .await?;
    match stored {
        Stored::Accepted { .. } => {
            super::pow::count_submit(ctx.id, form.id);
            ctx.mail_queued();
            Ok(see_other(&format!("/f/{public_id}/done")))
        }
        Stored::Existing { .. } => Ok(see_other(&format!("/f/{public_id}/done"))),
        Stored::Full => Ok(notice(
            &ctx,
            StatusCode::CONFLICT,
            &form.def.title,
            "定員に達しました",
            "申し訳ありません。送信の直前に定員に達したため、受け付けられませんでした。",
        )),
        // Filled just before: the question again, with what was typed.
        Stored::OptionsFull(full) => option_full_page(&ctx, &db, &form, &draft, full, &token).await,
    }
}

/// The applicant's e-mailed copy (受付完了メール), queued in the outbox with the
/// submission: the first e-mail answer as recipient and which mail it is; subject and
/// body are made from the submission when it is sent. Outbox rows of kind `receipt`
/// are sealed to their submission's id (not their own, which the statement that
/// writes them draws), so the submission and its mail are written in one round trip.
pub const RECEIPT_MAIL: &str = "receipt";

fn receipt_mail(
    ctx: &TenantCtx,
    def: &FormDefinition,
    answers: &Answers,
    submission: Uuid,
    template: &str,
) -> Result<Option<Vec<u8>>, AppError> {
    let Some(to) = first_of_kind(def, answers, |k| matches!(k, FieldKind::Email {})) else {
        return Ok(None);
    };
    let payload = serde_json::json!({ "template": template, "to": to }).to_string();
    crate::tenant::cases::seal(
        ctx.cipher(),
        "outbox",
        "payload",
        &submission.to_string(),
        &payload,
    )
    .map(Some)
}

/// Queues a sealed copy (from [`receipt_mail`]) for a submission, in the caller's transaction.
async fn queue_receipt(
    tx: &tokio_postgres::Transaction<'_>,
    submission: Uuid,
    sealed: Option<&[u8]>,
) -> Result<(), AppError> {
    if let Some(m) = sealed {
        tx.execute(
            "INSERT INTO outbox (kind, submission_id, payload) VALUES ($1, $2, $3)",
            &[&RECEIPT_MAIL, &submission, &m],
        )
        .await?;
    }
    Ok(())
}

/// Blind indexes of the first e-mail and telephone answers, for exact search.
fn indexes(
    ctx: &TenantCtx,
    def: &FormDefinition,
    answers: &Answers,
) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    blind_indexes(ctx.cipher(), def, answers)
}

/// [`indexes`] under a given cipher (the data-key rotation computes them again).
pub(crate) fn blind_indexes(
    cipher: &FieldCipher,
    def: &FormDefinition,
    answers: &Answers,
) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let email = first_of_kind(def, answers, |k| matches!(k, FieldKind::Email {})).map(|e| {
        cipher
            .blind_index("submissions", "email", &crate::ja::email_key(&e))
            .to_vec()
    });
    let phone = first_of_kind(def, answers, |k| matches!(k, FieldKind::Tel {}))
        .map(|p| cipher.blind_index("submissions", "phone", &p).to_vec());
    (email, phone)
}

/// What storing a submission came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Accepted {
        id: Uuid,
        receipt: String,
    },
    /// The idempotency key was used before: the submission it made.
    Existing {
        id: Uuid,
        receipt: String,
    },
    /// 定員 reached.
    Full,
    /// 選択肢ごとの定員: these options (question id, option) had no place left.
    OptionsFull(Vec<(String, String)>),
}

/// A submission without 定員 and its draft's pointer to it, in one statement ($1 id,
/// $2 form, $3 version, $4 receipt number, $5 encrypted answers, $6 and $7 the e-mail
/// and phone blind indexes, $8 idempotency key, $9 draft, $10 by, $11 the outbox kind,
/// $12 the sealed copy or NULL). Returns the id, or no row when the key was used.
///
/// It stores nothing if the form has 定員 or 選択肢ごとの定員 by the time it runs
/// (published with one while this request was under way): the caller then counts it. A publish takes
/// its count with submissions locked against writes (`store::publish`), so a
/// statement that began before it is counted by it, and one that begins after sees
/// the 定員.
pub const STORE_SQL: &str = "WITH ins AS (
     INSERT INTO submissions (id, form_id, form_version, receipt_number, answers, email_index, phone_index, idempotency_key)
     SELECT $1, $2, $3, $4, $5, $6, $7, $8
      WHERE NOT EXISTS (SELECT 1 FROM forms WHERE id = $2 AND capacity IS NOT NULL)
        AND NOT EXISTS (SELECT 1 FROM option_places WHERE form_id = $2)
     ON CONFLICT (idempotency_key) DO NOTHING RETURNING id
   ), closed AS (
     UPDATE citizen_drafts d SET submission_id = ins.id, inputs = NULL, updated_at = now(), sent_at = now()
       FROM ins WHERE d.id = $9
   ), received AS (
     INSERT INTO submission_events (submission_id, actor_label, to_status) SELECT id, $10, 'received' FROM ins
   ), mailed AS (
     INSERT INTO outbox (kind, submission_id, payload) SELECT $11, id, $12 FROM ins WHERE $12::bytea IS NOT NULL
   )
   SELECT id FROM ins";

/// Stores checked answers as a new submission in one transaction: encrypted answer by
/// answer, a fresh receipt number, the 定員 counter, the case history's first row
/// (受付, by `by`), the applicant's e-mailed copy in the outbox, and (from the web)
/// the draft's pointer to it, the identity `verified` (本人確認) if any, and for
/// 代理入力 (`proxy`) how it came with its operation-log entry. The same `key` twice
/// stores one submission.
#[allow(clippy::too_many_arguments)]
pub async fn store_submission(
    ctx: &TenantCtx,
    db: &mut deadpool_postgres::ClientWrapper,
    form: &Published,
    answers: &Answers,
    key: Uuid,
    draft: Option<Uuid>,
    by: &Actor,
    verified: Option<&crate::tenant::identity::Verified>,
    proxy: Option<&super::proxy::Entry>,
) -> Result<Stored, AppError> {
    let (email, phone) = indexes(ctx, &form.def, answers);
    let id = Uuid::new_v4();
    let encrypted = encrypt_answers(ctx.cipher(), id, answers)?;
    let mail = receipt_mail(ctx, &form.def, answers, id, "received")?;
    let actor = by;
    let by = by.label();
    let files = !attachments::named(answers).is_empty();
    let mut counted = form.capacity.is_some();
    let mut limited = form.def.has_limits();
    for _ in 0..3 {
        let receipt = ReceiptNumber::generate();
        if !counted && !limited && verified.is_none() && !files && proxy.is_none() {
            // Without 定員 there is nothing to count: the row and the draft's pointer
            // to it are one statement, so one round trip and one commit.
            let stmt = db.prepare_cached(STORE_SQL).await?;
            let inserted = db
                .query_opt(
                    &stmt,
                    &[
                        &id,
                        &form.id,
                        &form.version,
                        &receipt.as_str(),
                        &encrypted,
                        &email,
                        &phone,
                        &key,
                        &draft,
                        &by,
                        &RECEIPT_MAIL,
                        &mail,
                    ],
                )
                .await;
            match inserted {
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => continue, // receipt number taken: draw again
                Err(e) => return Err(e.into()),
                Ok(None) => {
                    if let Some(stored) = stored_before(db, key, draft).await? {
                        return Ok(stored);
                    }
                    // The form was given 定員 or 選択肢ごとの定員 meanwhile: counted like
                    // any other (below, which of the two it was is read again).
                    limited = true;
                }
                Ok(Some(_)) => {
                    return Ok(Stored::Accepted {
                        id,
                        receipt: receipt.as_str().to_owned(),
                    })
                }
            }
        }
        let tx = db.transaction().await?;
        let inserted = tx
            .query_opt(
                "INSERT INTO submissions (id, form_id, form_version, receipt_number, answers, email_index, phone_index, idempotency_key)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                &[&id, &form.id, &form.version, &receipt.as_str(), &encrypted, &email, &phone, &key],
            )
            .await;
        match inserted {
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => continue, // receipt number taken: draw again
            Err(e) => return Err(e.into()),
            Ok(None) => {
                drop(tx);
                return existing_submission(db, key, draft).await;
            }
            Ok(Some(_)) => {}
        }
        // 定員: the row lock makes concurrent submits to a limited form wait their turn,
        // so none passes the limit. Forms without a limit take no lock, so their
        // submissions do not queue behind each other.
        // A form published with 定員 since the page was read: the insert waited for
        // that publish (it locks submissions), so this statement sees it.
        if !counted {
            counted = tx
                .query_one(
                    "SELECT capacity IS NOT NULL FROM forms WHERE id = $1",
                    &[&form.id],
                )
                .await?
                .get(0);
        }
        // The limit as it is now: a version published since the page was read may
        // have changed or removed it; the answers stay those of the version checked.
        if counted {
            let places = tx
                .execute(
                    "UPDATE forms SET accepted_count = accepted_count + 1
                      WHERE id = $1 AND NOT closed AND (capacity IS NULL OR accepted_count < capacity)",
                    &[&form.id],
                )
                .await?;
            if places == 0 {
                return Ok(Stored::Full);
            }
        }
        // 選択肢ごとの定員, as they are now (none taken when the form has none).
        let full = super::places::take(&tx, form.id, id, &super::places::picks(&form.def, answers))
            .await?;
        if !full.is_empty() {
            return Ok(Stored::OptionsFull(full));
        }
        if let Some(d) = draft {
            tx.execute("UPDATE citizen_drafts SET submission_id = $2, inputs = NULL, updated_at = now(), sent_at = now() WHERE id = $1", &[&d, &id]).await?;
            attachments::settle(&tx, id, d, answers).await?;
        } else if files {
            return Err(AppError::Internal(anyhow::anyhow!(
                "answers naming files without the draft they were uploaded to"
            )));
        }
        tx.execute(
            "INSERT INTO submission_events (submission_id, actor_label, actor_id, to_status) VALUES ($1, $2, $3, 'received')",
            &[&id, &by, &actor.staff_id()],
        )
        .await?;
        queue_receipt(&tx, id, mail.as_deref()).await?;
        if let Some(p) = proxy {
            super::proxy::keep(&tx, actor, id, form.id, p).await?;
        }
        if let Some(v) = verified {
            crate::tenant::identity::keep_with_submission(ctx.cipher(), &*tx, id, v).await?;
            // Kept with the submission now: the draft's copy goes.
            tx.execute(
                "DELETE FROM draft_identities WHERE draft_id = $1",
                &[&draft],
            )
            .await?;
        }
        tx.commit().await?;
        return Ok(Stored::Accepted {
            id,
            receipt: receipt.as_str().to_owned(),
        });
    }
    Err(AppError::Internal(anyhow::anyhow!(
        "no free receipt number after three tries"
    )))
}

/// Whether a draft has been sent, waiting (a moment) for a send of it under way.
async fn draft_sent(db: &tokio_postgres::Client, draft: Uuid) -> Result<bool, AppError> {
    for wait in [0, 100, 300] {
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        // FOR SHARE waits for a transaction that is marking it sent.
        let sent = db
            .query_opt(
                "SELECT submission_id IS NOT NULL FROM citizen_drafts WHERE id = $1 FOR SHARE",
                &[&draft],
            )
            .await?
            .is_some_and(|r| r.get::<_, bool>(0));
        if sent {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The submission an idempotency key made before (the draft, if any, now points to it).
async fn existing_submission(
    db: &deadpool_postgres::ClientWrapper,
    key: Uuid,
    draft: Option<Uuid>,
) -> Result<Stored, AppError> {
    stored_before(db, key, draft).await?.ok_or_else(|| {
        AppError::Internal(anyhow::anyhow!(
            "an idempotency key in conflict names no submission"
        ))
    })
}

/// [`existing_submission`], if the key made one.
async fn stored_before(
    db: &deadpool_postgres::ClientWrapper,
    key: Uuid,
    draft: Option<Uuid>,
) -> Result<Option<Stored>, AppError> {
    let Some(r) = db
        .query_opt(
            "SELECT id, receipt_number FROM submissions WHERE idempotency_key = $1",
            &[&key],
        )
        .await?
    else {
        return Ok(None);
    };
    let existing: Uuid = r.get(0);
    if let Some(d) = draft {
        db.execute(
            "UPDATE citizen_drafts SET submission_id = $2, inputs = NULL WHERE id = $1",
            &[&d, &existing],
        )
        .await?;
    }
    Ok(Some(Stored::Existing {
        id: existing,
        receipt: r.get(1),
    }))
}

#[derive(Template)]
#[template(path = "citizen/done.html")]
struct DonePage {
    site: String,
    title: String,
    receipt: String,
    message: String,
    /// The application can be looked up (the lookup asks for its e-mail address).
    lookup: bool,
    contact: Option<store::Contact>,
    /// 申請内容の控え: what was sent, shown (and printed) for [`COPY_MINUTES`] after
    /// sending; `None` after that.
    copy: Option<Vec<(String, String)>>,
    copy_minutes: i32,
    /// When it was sent, or sent again corrected (JST, 和暦 beside 西暦).
    sent_at: String,
}

/// How long the completion page shows what was sent, in this browser only: long
/// enough to print or save it, short enough that the next user of a shared computer
/// does not find it.
pub const COPY_MINUTES: i32 = 30;

pub async fn done(
    ctx: TenantCtx,
    Path(public_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let form = store::published(ctx.id, &db, &public_id).await?;
    if !form.def.settings.published_in(ctx.zone) {
        return Err(AppError::NotFound);
    }
    // The sent application this browser holds (it may also hold an open draft).
    let sent = cookie_drafts(&ctx, &db, form.id, &public_id, &headers)
        .await?
        .into_iter()
        .find_map(|(_, d)| d.and_then(|d| d.submission.map(|s| (d.id, s))));
    let Some((draft, sub)) = sent else {
        return Ok(see_other(&format!("/f/{public_id}")));
    };
    // What was sent is shown only to the browser whose draft sent it, for a while;
    // the time shown is of the last sending (a correction's, if any).
    let row = db
        .query_one(
            "SELECT s.receipt_number, s.form_version, s.email_index IS NOT NULL, last.at,
                    CASE WHEN d.sent_at > now() - make_interval(mins => $3) AND d.sent_at >= last.at
                         THEN s.answers END
               FROM submissions s JOIN citizen_drafts d ON d.id = $2,
                    LATERAL (SELECT coalesce(max(e.at), s.submitted_at) AS at FROM submission_events e
                              WHERE e.submission_id = s.id AND e.to_status = 'received') last
              WHERE s.id = $1",
            &[&sub, &draft, &COPY_MINUTES],
        )
        .await?;
    let def = store::version(&db, form.id, row.get(1)).await?;
    // Every answered field in the form's order, as the confirmation page showed it.
    let copy = match row.get::<_, Option<serde_json::Value>>(4) {
        Some(stored) => {
            let answers = decrypt_answers(ctx.cipher(), sub, &stored)?;
            Some(
                def.fields()
                    .filter_map(|f| answers.get(&f.id).map(|a| (f.label.clone(), a.display())))
                    .collect(),
            )
        }
        None => None,
    };
    Ok(render(
        StatusCode::OK,
        &DonePage {
            site: ctx.name.to_string(),
            title: def.title,
            receipt: row.get(0),
            message: def.settings.completion_message,
            lookup: row.get(2),
            contact: form.contact.clone(),
            copy,
            copy_minutes: COPY_MINUTES,
            sent_at: jst(row.get(3)),
        },
    ))
}

/// The builder's preview of one page of a draft definition: what citizens will see,
/// with nothing sent.
/// A page of the draft, or of published version `version`, as citizens would see it.
pub fn preview(
    ctx: &TenantCtx,
    def: &FormDefinition,
    form_id: i64,
    page: usize,
    version: Option<i32>,
) -> Response {
    let page = page.min(def.pages.len().saturating_sub(1));
    let Some(p) = def.pages.get(page) else {
        return notice(
            ctx,
            StatusCode::OK,
            &def.title,
            "ページがありません",
            "このフォームにはまだページがありません。",
        );
    };
    let fields = page_views(p, &Raw::new(), &[], |_| true);
    render(
        StatusCode::OK,
        &FormPage {
            action: format!("/admin/forms/{form_id}/preview"),
            preview: true,
            version: version.unwrap_or(0),
            ..FormPage::shell(ctx, def, page, page, def.pages.len(), fields)
        },
    )
}

/// The page of the first question whose chosen option filled up just before the
/// send (409), with what was typed, a word on each such question and the places as
/// they are now.
async fn option_full_page(
    ctx: &TenantCtx,
    db: &tokio_postgres::Client,
    form: &Published,
    draft: &Draft,
    full: Vec<(String, String)>,
    token: &str,
) -> Result<Response, AppError> {
    let form = Published {
        places: super::places::now(db, form.id).await?,
        ..form.clone()
    };
    let errors = super::places::errors(full);
    let page = first_error_page(&form.def, &errors);
    Ok(render(
        StatusCode::CONFLICT,
        &draft_page(ctx, &form, page, draft, &errors, token),
    ))
}

/// Replaces the answers of a returned (差戻し) submission with the corrected ones and
/// puts it back to 受付, with a history row and an operation-log entry. Its places of
/// 選択肢ごとの定員 are given back and those of the corrected answers taken; the
/// options that had none left are returned instead, with nothing changed.
#[allow(clippy::too_many_arguments)]
async fn resubmit_correction(
    ctx: &TenantCtx,
    db: &mut tokio_postgres::Client,
    form: &Published,
    draft: &Draft,
    orig: Uuid,
    answers: &Answers,
    email: Option<Vec<u8>>,
    phone: Option<Vec<u8>>,
) -> Result<Result<Response, Vec<(String, String)>>, AppError> {
    let encrypted = encrypt_answers(ctx.cipher(), orig, answers)?;
    let mail = receipt_mail(ctx, &form.def, answers, orig, "resubmitted")?;
    let tx = db.transaction().await?;
    // The application first, then this correction: every send of a correction of it
    // (a double tap, another browser's) queues here in one order, so none deadlocks
    // on the other's draft; a second send of this one then finds it sent and gets the
    // same 受付 page.
    tx.query(
        "SELECT 1 FROM submissions WHERE id = $1 FOR UPDATE",
        &[&orig],
    )
    .await?;
    let sent = tx
        .query_opt(
            "SELECT submission_id FROM citizen_drafts WHERE id = $1 FOR UPDATE",
            &[&draft.id],
        )
        .await?
        .is_some_and(|r| r.get::<_, Option<Uuid>>(0).is_some());
    if sent {
        return Ok(Ok(see_other(&format!("/f/{}/done", form.public_id))));
    }
    let n = tx
        .execute(
            "UPDATE submissions SET answers = $2, form_version = $3, email_index = $4, phone_index = $5, status = 'received',
                    return_reason = NULL, return_deadline = NULL, updated_at = now()
              WHERE id = $1 AND form_id = $6 AND status = 'returned'
                AND (return_deadline IS NULL OR return_deadline >= $7)",
            &[&orig, &encrypted, &form.version, &email, &phone, &form.id, &crate::ja::today()],
        )
        .await?;
    if n == 0 {
        return Ok(Ok(notice(
            ctx,
            StatusCode::CONFLICT,
            &form.def.title,
            "修正を受け付けられません",
            "この申請は現在、修正を受け付けていません（修正の期限を過ぎた場合を含みます）。状況照会で最新の状況をご確認のうえ、担当の窓口にお問い合わせください。",
        )));
    }
    let full = super::places::retake(
        &tx,
        form.id,
        orig,
        &super::places::picks(&form.def, answers),
    )
    .await?;
    if !full.is_empty() {
        return Ok(Err(full));
    }
    tx.execute(
        "INSERT INTO submission_events (submission_id, actor_label, from_status, to_status) VALUES ($1, 'citizen', 'returned', 'received')",
        &[&orig],
    )
    .await?;
    queue_receipt(&tx, orig, mail.as_deref()).await?;
    attachments::settle(&tx, orig, draft.id, answers).await?;
    crate::tenant::audit::append(
        &tx,
        &Actor::Citizen,
        "submission.resubmit",
        &orig.to_string(),
        serde_json::json!({ "version": form.version }),
    )
    .await?;
    // This correction and any other still open for the same application (another
    // browser's, holding older answers) are closed: after a later 差戻し, one of them
    // would otherwise replace what was sent now. Only this one sent it (its browser
    // is shown what was sent).
    tx.execute(
        "UPDATE citizen_drafts SET submission_id = $1, inputs = NULL, updated_at = now(),
                sent_at = CASE WHEN id = $2 THEN now() END
          WHERE resubmit_of = $1 AND submission_id IS NULL",
        &[&orig, &draft.id],
    )
    .await?;
    tx.commit().await?;
    ctx.mail_queued();
    Ok(Ok(see_other(&format!("/f/{}/done", form.public_id))))
}

/// Opens a returned (差戻し) submission for correction: a new draft holding its answers,
/// marked to replace it. Returns where to go and the draft cookie to set.
pub async fn start_resubmission(
    ctx: &TenantCtx,
    id: Uuid,
) -> Result<(String, axum::http::HeaderValue), AppError> {
    let db = ctx.db().await?;
    let r = db
        .query_one("SELECT s.status, s.answers, f.public_id, s.return_deadline FROM submissions s JOIN forms f ON f.id = s.form_id WHERE s.id = $1", &[&id])
        .await?;
    if r.get::<_, &str>(0) != "returned" {
        return Err(AppError::BadRequest(
            "この申請は現在、修正を受け付けていません。".into(),
        ));
    }
    if let Some(deadline) = r
        .get::<_, Option<time::Date>>(3)
        .filter(|d| *d < crate::ja::today())
    {
        return Err(AppError::BadRequest(format!(
            "修正の期限（{}）を過ぎたため、オンラインでは修正できません。担当の窓口にお問い合わせください。",
            crate::ja::date_both(deadline)
        )));
    }
    let answers = decrypt_answers(ctx.cipher(), id, &r.get(1))?;
    let public_id: String = r.get(2);
    let form = store::published(ctx.id, &db, &public_id).await?;
    if !form.def.settings.published_in(ctx.zone) {
        return Err(AppError::NotFound);
    }
    let token = random_token(32);
    let draft = Draft {
        id: Uuid::new_v4(),
        inputs: super::answers::to_raw(&answers),
        submission: None,
        resubmit_of: Some(id),
    };
    if !save_draft(ctx, &db, &form, &token, &draft).await? {
        return Err(AppError::Internal(anyhow::anyhow!(
            "a new correction draft's token was taken"
        )));
    }
    let path = format!("/f/{public_id}");
    let max_age = u64::try_from(DRAFT_HOURS).unwrap_or(24) * 3600;
    Ok((
        path.clone(),
        set_cookie(
            &cookie_name(&public_id),
            &token,
            &path,
            Some(max_age),
            ctx.secure_cookies,
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::DataKey;

    /// A stored answer that does not read as one fails without quoting it: the error
    /// goes to the log, which holds no personal data.
    #[test]
    fn an_unreadable_answer_is_not_quoted_in_the_error() {
        let cipher = FieldCipher::new(Uuid::new_v4(), vec![(1, DataKey::generate())])
            .unwrap_or_else(|e| panic!("{e}"));
        let id = Uuid::new_v4();
        let row = id.to_string();
        let sealed = cipher
            .encrypt(
                &FieldRef {
                    table: "submissions",
                    column: "answer:name",
                    row_id: &row,
                },
                br#""Kasai Hanako, 1-2-3 Chiyoda""#,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let stored = serde_json::json!({
            "name": base64::engine::general_purpose::STANDARD.encode(sealed)
        });
        let err = match decrypt_answers(&cipher, id, &stored) {
            Err(AppError::Internal(e)) => format!("{e:#}"),
            other => panic!("{other:?}"),
        };
        assert!(err.contains("name") && !err.contains("Kasai"), "{err}");
    }
}
