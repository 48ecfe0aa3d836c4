//! 申請一覧: a citizen who applied with an e-mail address sees every application
//! sent with it, signed in by a link mailed to that address. Nothing else is an
//! account: the address's mailbox is the proof.
//!
//! Asking for the link answers the same whatever the address (nobody learns from it
//! who applied); the mail says which: a link, or that no application was sent with
//! that address. The link works once, for [`LINK_MINUTES`]; its page changes nothing
//! (mail scanners fetch links) and its button, pressed from this site, gives the
//! browser a session of [`SESSION_MINUTES`]; for [`SECOND_PRESS_SECS`] more the
//! link still works in the browser that opened it (told by a claim cookie its page
//! set), for a reload or a press whose answer was lost, then in none. The list
//! shows each application's procedure, receipt number, status and dates, never the
//! answers; 詳しく見る opens the status page (状況照会) for it, with its messages,
//! 取下げ and 差戻し's correction. The opening is logged as a citizen's lookup.
//!
//! The same work is done for either address (a row is written for both, the one for
//! an address without applications ended at once), so the time taken tells little.
//! Links are limited per mailbox ([`LINKS_PER_ADDRESS`] a day), per municipality
//! ([`SIGN_INS_PER_DAY`], apart from 一時保存's links) and per client address (the
//! lookups' rate), and asked for from this site's page only. A mail that could not
//! go out before its link expired is given up. Offered only where mail is
//! delivered.

use askama::Template;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use uuid::Uuid;

use super::cases::{open_text, seal, Status};
use super::forms::citizen::{jst, notice, same_origin};
use super::http::{cookies, see_other, set_cookie, token_hash, FormData};
use super::mail::{link_quota, queue_link, Quota};
use super::TenantCtx;
use crate::crypto::random_token;
use crate::error::AppError;
use crate::tenant::audit::{self, Actor};
use crate::web::render;
use tokio_postgres::GenericClient;

/// How long a mailed link works.
pub const LINK_MINUTES: i32 = 30;
/// How long the browser that opened a link sees the list.
pub const SESSION_MINUTES: i32 = 30;
/// These mails one mailbox is sent in 24 hours.
pub const LINKS_PER_ADDRESS: i64 = 5;
/// These mails one municipality sends in 24 hours, to all addresses: the page is not
/// a way to send mail in bulk through the city's relay. Past it, citizens look an
/// application up by its receipt number (一時保存's links have a ceiling of their own).
pub const SIGN_INS_PER_DAY: i64 = 1_000;
/// Applications listed, newest first.
pub const LIST_LIMIT: i64 = 100;
/// The outbox kind of the mail (sealed to its own row, no submission behind it).
pub const SIGN_IN_MAIL: &str = "sign_in";
/// The session cookie, for `/my` only.
const COOKIE: &str = "md_my";
/// How long after a link was opened it still works in the browser that opened it.
pub const SECOND_PRESS_SECS: f64 = 120.0;
/// The cookie that tells the browser which opened a link (set by the link's page,
/// for the links' path only), and how long the browser keeps it.
const CLAIM_COOKIE: &str = "md_my_claim";
const CLAIM_PATH: &str = "/my/open";
const CLAIM_SECS: u64 = 3600;
/// While a link's key ($1, hashed) works for the browser with the claim $3
/// (hashed): unopened and not expired, or opened less than $2 seconds ago by that
/// browser.
macro_rules! link_works {
    () => {
        "key_hash = $1 AND expires_at > now()
    AND (opened_at IS NULL OR (opened_at > now() - make_interval(secs => $2) AND claim_hash = $3))"
    };
}

/// The session a cookie ($1, hashed) holds: its row, sealed address and end.
const SESSION_SQL: &str = "SELECT id, email, expires_at FROM citizen_sign_ins
  WHERE session_hash = $1 AND opened_at IS NOT NULL AND expires_at > now()";
/// Applications sent with an address ($1, its lookup keys' blind indexes), newest
/// first, $2 at most: receipt number, the procedure's title as sent, status, sent,
/// updated.
const LIST_SQL: &str = "SELECT s.receipt_number, v.title, s.status, s.submitted_at, s.updated_at
   FROM submissions s JOIN form_versions v ON v.form_id = s.form_id AND v.version = s.form_version
  WHERE s.email_index = ANY($1) ORDER BY s.submitted_at DESC, s.id LIMIT $2";

#[derive(Template)]
#[template(path = "citizen/mine.html")]
struct MinePage {
    site: String,
    email: String,
    error: Option<String>,
    /// The address itself was refused (not a limit reached).
    invalid: bool,
    /// The link was asked for (the same answer whatever the address).
    sent: bool,
    /// Signed in: the applications, and until when.
    list: Option<Listed>,
    /// Just signed out.
    out: bool,
    minutes: i32,
    limit: i64,
}

struct Listed {
    email: String,
    until: String,
    items: Vec<Item>,
    /// More than [`LIST_LIMIT`]: the oldest are not shown.
    more: bool,
}

struct Item {
    receipt: String,
    title: String,
    status: &'static str,
    /// A correction is asked for (差戻し).
    returned: bool,
    sent: String,
    updated: String,
}

#[derive(Template)]
#[template(path = "citizen/mine_open.html")]
struct OpenPage {
    site: String,
    action: String,
    until: String,
    minutes: i32,
    /// Opened already in this browser: it may press again until `until`.
    again: bool,
}

fn page(ctx: &TenantCtx) -> MinePage {
    MinePage {
        site: ctx.name.to_string(),
        email: String::new(),
        error: None,
        invalid: false,
        sent: false,
        list: None,
        out: false,
        minutes: LINK_MINUTES,
        limit: LIST_LIMIT,
    }
}

/// The browser's session, if it holds one: its row and the address.
async fn session(
    ctx: &TenantCtx,
    db: &tokio_postgres::Client,
    headers: &HeaderMap,
) -> Result<Option<(Uuid, String, time::OffsetDateTime)>, AppError> {
    for cookie in cookies(headers, COOKIE) {
        let row = db.query_opt(SESSION_SQL, &[&token_hash(&cookie)]).await?;
        if let Some(r) = row {
            let id: Uuid = r.get(0);
            let email = address(ctx, id, r.get(1))?;
            return Ok(Some((id, email, r.get(2))));
        }
    }
    Ok(None)
}

/// The blind indexes applications sent with `email` are found by.
fn indexes(ctx: &TenantCtx, email: &str) -> Vec<Vec<u8>> {
    crate::ja::email_lookup_keys(email)
        .iter()
        .map(|k| ctx.cipher().blind_index("submissions", "email", k).to_vec())
        .collect()
}

async fn listed(
    ctx: &TenantCtx,
    db: &impl GenericClient,
    email: String,
    until: time::OffsetDateTime,
) -> Result<Listed, AppError> {
    let rows = db
        .query(LIST_SQL, &[&indexes(ctx, &email), &(LIST_LIMIT + 1)])
        .await?;
    let more = rows.len() > usize::try_from(LIST_LIMIT).unwrap_or(usize::MAX);
    let items = rows
        .iter()
        .take(usize::try_from(LIST_LIMIT).unwrap_or(usize::MAX))
        .map(|r| {
            let status = Status::parse(r.get::<_, &str>(2)).unwrap_or(Status::Received);
            Item {
                receipt: r.get(0),
                title: r.get::<_, Option<String>>(1).unwrap_or_default(),
                status: status.label(),
                returned: status == Status::Returned,
                sent: jst(r.get(3)),
                updated: jst(r.get(4)),
            }
        })
        .collect();
    Ok(Listed {
        email,
        until: jst(until),
        items,
        more,
    })
}

/// 申請一覧: the list for a signed-in browser, else where to ask for the link.
pub async fn show(ctx: TenantCtx, headers: HeaderMap) -> Result<Response, AppError> {
    if !ctx.mail_on() {
        return Ok(see_other("/status"));
    }
    let db = ctx.db().await?;
    let mut shown = page(&ctx);
    if let Some((_, email, until)) = session(&ctx, &db, &headers).await? {
        shown.list = Some(listed(&ctx, &**db, email, until).await?);
    }
    Ok(render(StatusCode::OK, &shown))
}

/// Mails the link (or, to an address no application was sent with, says so), and
/// answers the same either way.
pub async fn ask(ctx: TenantCtx, headers: HeaderMap, body: FormData) -> Result<Response, AppError> {
    if !ctx.mail_on() {
        return Ok(see_other("/status"));
    }
    // Another site's page must not make the city mail whom it likes (a browser that
    // sends no `Origin` at all is let through: the limits still hold).
    if headers.contains_key(header::ORIGIN) && !same_origin(&ctx, &headers) {
        return Err(AppError::Csrf);
    }
    let typed: String = body.get("email").chars().take(254).collect();
    let mut shown = page(&ctx);
    shown.email = typed.clone();
    let refused = |mut shown: MinePage, why: String, invalid: bool| {
        shown.error = Some(why);
        shown.invalid = invalid;
        Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &shown))
    };
    let address = crate::ja::nfkc(typed.trim());
    if address.is_empty() {
        return refused(shown, "メールアドレスを入力してください".into(), true);
    }
    let Some(to) = super::forms::answers::email_address(&address) else {
        return refused(
            shown,
            "メールアドレスの形式が正しくありません（例: yamada@example.jp）".into(),
            true,
        );
    };
    let mut db = ctx.db().await?;
    let tx = db.transaction().await?;
    let quota = link_quota(
        &*tx,
        ctx.cipher(),
        SIGN_IN_MAIL,
        &to,
        LINKS_PER_ADDRESS,
        SIGN_INS_PER_DAY,
    )
    .await?;
    let recipient = match quota {
        Quota::Open(recipient) => recipient,
        Quota::AddressFull => {
            return refused(
                shown,
                format!("このメールアドレスには、24時間に{LINKS_PER_ADDRESS}通までしかお送りできません。届いたメールのリンクをお使いいただくか、時間をおいてお試しください"),
                false,
            )
        }
        Quota::MunicipalityFull => {
            return refused(
                shown,
                "本日この自治体から送れるメールの数が上限に達しました。お手数ですが、受付番号で照会するか、明日あらためてお試しください".into(),
                false,
            )
        }
    };
    let any: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM submissions WHERE email_index = ANY($1))",
            &[&indexes(&ctx, &to)],
        )
        .await?
        .get(0);
    // A row either way (the same work); the one for an address without applications
    // has ended already, and its key is mailed to nobody.
    let id = Uuid::new_v4();
    let key = random_token(32);
    let sealed = seal(
        ctx.cipher(),
        "citizen_sign_ins",
        "email",
        &id.to_string(),
        &to,
    )?;
    let minutes = if any { LINK_MINUTES } else { 0 };
    let until: time::OffsetDateTime = tx
        .query_one(
            "INSERT INTO citizen_sign_ins (id, key_hash, email, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(mins => $4)) RETURNING expires_at",
            &[&id, &token_hash(&key), &sealed, &minutes],
        )
        .await?
        .get(0);
    let payload = if any {
        serde_json::json!({
            "to": to,
            "url": format!("{}/my/open/{key}", ctx.base_url),
            "until": jst(until),
            "expires": until.unix_timestamp(),
        })
    } else {
        // An answer to a request made now: stale once a link would have been.
        let expires = until.unix_timestamp() + i64::from(LINK_MINUTES) * 60;
        serde_json::json!({
            "to": to, "url": format!("{}/status", ctx.base_url), "none": true, "expires": expires,
        })
    };
    queue_link(
        &*tx,
        ctx.cipher(),
        SIGN_IN_MAIL,
        &payload.to_string(),
        &recipient,
    )
    .await?;
    tx.commit().await?;
    ctx.mail_queued();
    shown.sent = true;
    shown.email = to;
    Ok(render(StatusCode::OK, &shown))
}

fn spent_link(ctx: &TenantCtx) -> Response {
    notice(
        ctx,
        StatusCode::NOT_FOUND,
        "申請一覧",
        "このリンクは使えません",
        "リンクの有効期限が過ぎたか、すでに開かれています。申請一覧のページから、もう一度メールを受け取ってください。",
    )
}

/// The page a mailed link leads to: what opening it does, and a button to do it.
/// Fetching it changes nothing.
pub async fn link_page(
    ctx: TenantCtx,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    // Only a value of the kind this site gives is given again.
    let kept = cookies(&headers, CLAIM_COOKIE)
        .into_iter()
        .next()
        .filter(|c| {
            c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    let held = kept.as_deref().map(token_hash);
    // Until when the button works here: the link's expiry, or once opened the end
    // of the second press.
    let row = db
        .query_opt(
            concat!(
                "SELECT CASE WHEN opened_at IS NULL THEN expires_at
                        ELSE opened_at + make_interval(secs => $2) END, opened_at IS NOT NULL
                   FROM citizen_sign_ins WHERE ",
                link_works!()
            ),
            &[&token_hash(&key), &SECOND_PRESS_SECS, &held],
        )
        .await?;
    let Some(r) = row else {
        return Ok(spent_link(&ctx));
    };
    let mut resp = render(
        StatusCode::OK,
        &OpenPage {
            site: ctx.name.to_string(),
            action: format!("/my/open/{key}"),
            until: jst(r.get(0)),
            minutes: SESSION_MINUTES,
            again: r.get(1),
        },
    );
    // The key is in this page's address: what it loads is told only the origin.
    resp.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin"),
    );
    // The claim this browser has, kept for another hour (or a new one).
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            CLAIM_COOKIE,
            &kept.unwrap_or_else(|| random_token(32)),
            CLAIM_PATH,
            Some(CLAIM_SECS),
            ctx.secure_cookies,
        ),
    );
    Ok(resp)
}

/// This browser's claim on the links it opens (see [`CLAIM_COOKIE`]), hashed.
fn claim(headers: &HeaderMap) -> Option<Vec<u8>> {
    cookies(headers, CLAIM_COOKIE)
        .first()
        .map(|c| token_hash(c))
}

/// Opens the link in this browser: the key spent, a session cookie given, the
/// opening logged; on to the list.
pub async fn open(
    ctx: TenantCtx,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    // Another site must not sign this browser in to somebody's list.
    if !same_origin(&ctx, &headers) {
        return Err(AppError::Csrf);
    }
    let mut db = ctx.db().await?;
    let session = random_token(32);
    let tx = db.transaction().await?;
    // The first press records this browser's claim; a second, within the window,
    // must come with the same, and gives a new session in place of the first's.
    let opened = tx
        .query_opt(
            concat!(
                "UPDATE citizen_sign_ins SET session_hash = $4,
                        claim_hash = CASE WHEN opened_at IS NULL THEN $3 ELSE claim_hash END,
                        expires_at = CASE WHEN opened_at IS NULL
                            THEN now() + make_interval(mins => $5) ELSE expires_at END,
                        opened_at = coalesce(opened_at, now())
                  WHERE ",
                link_works!(),
                " RETURNING id, email, expires_at, opened_at < now()"
            ),
            &[
                &token_hash(&key),
                &SECOND_PRESS_SECS,
                &claim(&headers),
                &token_hash(&session),
                &SESSION_MINUTES,
            ],
        )
        .await?;
    let Some(r) = opened else {
        return Ok(spent_link(&ctx));
    };
    let id: Uuid = r.get(0);
    let email = address(&ctx, id, r.get(1))?;
    // A session this browser held before ends: its cookie is replaced.
    end_sessions(&*tx, &headers).await?;
    // Logged with what the list shows (as a lookup logs the application it shows).
    let shown = listed(&ctx, &*tx, email, r.get(2)).await?;
    audit::append(
        &*tx,
        &Actor::Citizen,
        "status.sign_in",
        &id.to_string(),
        serde_json::json!({
            "applications": shown.items.len(),
            "receipts": shown.items.iter().map(|i| i.receipt.as_str()).collect::<Vec<_>>(),
            "again": r.get::<_, bool>(3),
        }),
    )
    .await?;
    tx.commit().await?;
    let mut resp = see_other("/my");
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            COOKIE,
            &session,
            "/my",
            Some(u64::try_from(SESSION_MINUTES).unwrap_or(0) * 60),
            ctx.secure_cookies,
        ),
    );
    Ok(resp)
}

/// Deletes the sessions the browser's cookies name.
async fn end_sessions(db: &impl GenericClient, headers: &HeaderMap) -> Result<(), AppError> {
    let hashes: Vec<Vec<u8>> = cookies(headers, COOKIE)
        .iter()
        .map(|c| token_hash(c))
        .collect();
    db.execute(
        "DELETE FROM citizen_sign_ins WHERE session_hash = ANY($1)",
        &[&hashes],
    )
    .await?;
    Ok(())
}

/// The address a row keeps, opened.
fn address(ctx: &TenantCtx, id: Uuid, sealed: &[u8]) -> Result<String, AppError> {
    open_text(
        ctx.cipher(),
        "citizen_sign_ins",
        "email",
        &id.to_string(),
        sealed,
    )
}

/// Ends the browser's session (the row is deleted) and forgets its cookie.
pub async fn sign_out(ctx: TenantCtx, headers: HeaderMap) -> Result<Response, AppError> {
    if !same_origin(&ctx, &headers) {
        return Err(AppError::Csrf);
    }
    let db = ctx.db().await?;
    end_sessions(&**db, &headers).await?;
    let mut shown = page(&ctx);
    shown.out = true;
    let mut resp = render(StatusCode::OK, &shown);
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(COOKIE, "", "/my", Some(0), ctx.secure_cookies),
    );
    Ok(resp)
}
