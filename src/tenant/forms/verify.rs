//! 本人確認 on a form that asks for it: from the confirmation page the citizen goes
//! to the municipality's identity provider (a link: GET, so no form is posted to
//! another site), verifies there (with a My Number card, for one), and comes back to
//! [`callback`], which checks the answer and keeps who the provider vouched for with
//! the draft. The submission takes it over (see `citizen::submit`).
//!
//! The verification is bound to the browser that started it: its `state` is in a
//! cookie as well as in the provider's answer, is kept hashed for
//! [`identity::REQUEST_MINUTES`] minutes and is used once. The PKCE verifier and the
//! nonce stay on the server.

use askama::Template;
use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::citizen::{needs_identity, open_draft};
use crate::error::AppError;
use crate::tenant::audit::{self, Actor};
use crate::tenant::http::{cookies, same_secret, see_other, set_cookie, token_hash, Query};
use crate::tenant::identity::{self, oidc, Verified};
use crate::tenant::TenantCtx;
use crate::web::render;

/// The cookie holding a verification's `state` (on the callback's path only), named
/// after the state's hash: verifications begun for two forms at once each keep theirs.
fn state_cookie_name(state: &str) -> String {
    format!("madoguchi_idv_{}", &hex::encode(token_hash(state))[..16])
}
/// The longest a verification may take once the provider sends the citizen back:
/// both calls to it, under the request's own 30 s.
const CALLBACK_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);
/// The longest `state` or `code` read from the provider's answer.
const PARAM_LIMIT: usize = 2048;

#[derive(Template)]
#[template(path = "citizen/identity.html")]
struct OutcomePage {
    site: String,
    heading: String,
    message: String,
    /// Back to the confirmation page, when there is one to go back to.
    back: Option<String>,
}

fn outcome(
    ctx: &TenantCtx,
    status: StatusCode,
    heading: &str,
    message: &str,
    back: Option<String>,
) -> Response {
    render(
        status,
        &OutcomePage {
            site: ctx.name.to_string(),
            heading: heading.to_owned(),
            message: message.to_owned(),
            back,
        },
    )
}

fn not_ready(ctx: &TenantCtx, back: Option<String>) -> Response {
    outcome(
        ctx,
        StatusCode::SERVICE_UNAVAILABLE,
        "本人確認を利用できません",
        "本人確認サービスの準備ができていないため、この手続きは現在オンラインで送信できません。入力内容は一時的に保存されています。お手数ですが、担当課へお問い合わせください。",
        back,
    )
}

fn state_cookie(ctx: &TenantCtx, state: &str, value: &str, max_age: u64) -> header::HeaderValue {
    set_cookie(
        &state_cookie_name(state),
        value,
        identity::CALLBACK_PATH,
        Some(max_age),
        ctx.secure_cookies,
    )
}

/// Starts a verification for this browser's draft of the form: to the provider.
pub async fn start(
    ctx: TenantCtx,
    Path(public_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let (form, _, draft) = match open_draft(&ctx, &db, &public_id, &headers).await? {
        Ok(found) => found,
        Err(elsewhere) => return Ok(elsewhere),
    };
    let back = format!("/f/{public_id}/confirm");
    if !needs_identity(&form, &draft) {
        return Ok(see_other(&back));
    }
    let Some(provider) = identity::provider(&ctx, &**db).await? else {
        return Ok(not_ready(&ctx, Some(back)));
    };
    let request = oidc::Request::new();
    let to = oidc::authorization_url(&provider, &request, &identity::redirect_uri(&ctx))
        .map_err(|e| AppError::Internal(anyhow::anyhow!("{e}")))?;
    // One verification under way per draft; older ones (another tab) end here.
    db.execute(
        "DELETE FROM identity_requests WHERE draft_id = $1 OR expires_at <= now()",
        &[&draft.id],
    )
    .await?;
    db.execute(
        "INSERT INTO identity_requests (state_hash, draft_id, nonce, verifier, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(mins => $5))",
        &[
            &token_hash(&request.state),
            &draft.id,
            &request.nonce,
            &request.verifier,
            &identity::REQUEST_MINUTES,
        ],
    )
    .await?;
    let mut resp = see_other(&to);
    let age = u64::try_from(identity::REQUEST_MINUTES).unwrap_or(10) * 60;
    resp.headers_mut().append(
        header::SET_COOKIE,
        state_cookie(&ctx, &request.state, &request.state, age),
    );
    Ok(resp)
}

#[derive(Deserialize)]
pub struct Answer {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// A verification under way, taken (once) by its `state`.
struct Taken {
    draft: Uuid,
    nonce: String,
    verifier: String,
    /// Not expired, and its draft not expired.
    fresh: bool,
    /// Its draft was sent meanwhile.
    sent: bool,
    public_id: String,
}

/// The provider's answer: the code exchanged for an ID token, its checks, and the
/// identity kept with the draft; back to the confirmation page.
pub async fn callback(
    ctx: TenantCtx,
    Query(answer): Query<Answer>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let lost = |ctx: &TenantCtx| {
        outcome(
            ctx,
            StatusCode::BAD_REQUEST,
            "本人確認の結果を受け取れませんでした",
            "本人確認の手続きが見つからないか、すでに使われています。申請の確認画面から、もう一度「本人確認へ進む」を押してください。",
            None,
        )
    };
    let Some(state) = answer
        .state
        .filter(|s| !s.is_empty() && s.len() <= PARAM_LIMIT)
    else {
        return Ok(lost(&ctx));
    };
    let db = ctx.db().await?;
    let taken = db
        .query_opt(
            "DELETE FROM identity_requests r USING citizen_drafts d, forms f
              WHERE r.state_hash = $1 AND d.id = r.draft_id AND f.id = d.form_id
             RETURNING r.draft_id, r.nonce, r.verifier,
                       r.expires_at > now() AND d.expires_at > now(),
                       f.public_id, d.submission_id IS NOT NULL",
            &[&token_hash(&state)],
        )
        .await?
        .map(|r| Taken {
            draft: r.get(0),
            nonce: r.get(1),
            verifier: r.get(2),
            fresh: r.get(3),
            public_id: r.get(4),
            sent: r.get(5),
        });
    let Some(taken) = taken else {
        return Ok(lost(&ctx));
    };
    let back = Some(format!("/f/{}/confirm", taken.public_id));
    let mut resp = if !cookies(&headers, &state_cookie_name(&state))
        .iter()
        .any(|c| same_secret(c, &state))
    {
        // Started in another browser (or its cookie was refused): a link someone
        // else began must not attach their verification to this browser, nor this
        // person's to theirs.
        outcome(
            &ctx,
            StatusCode::BAD_REQUEST,
            "本人確認を始めたブラウザと異なります",
            "本人確認は、申請を入力しているブラウザで始めて、同じブラウザで終える必要があります。確認画面から、もう一度「本人確認へ進む」を押してください。",
            back,
        )
    } else if taken.sent {
        outcome(
            &ctx,
            StatusCode::CONFLICT,
            "この申請はすでに送信されています",
            "本人確認の途中で、この申請は送信されました。受付番号は送信完了の画面か受付完了のメールでご確認ください。",
            Some(format!("/f/{}/done", taken.public_id)),
        )
    } else if !taken.fresh {
        outcome(
            &ctx,
            StatusCode::BAD_REQUEST,
            "本人確認の有効期限が切れました",
            &format!(
                "本人確認は{}分以内に終える必要があります。確認画面から、もう一度「本人確認へ進む」を押してください。",
                identity::REQUEST_MINUTES
            ),
            back,
        )
    } else if answer.error.is_some() {
        // Cancelled at the provider, or refused there.
        outcome(
            &ctx,
            StatusCode::OK,
            "本人確認は完了していません",
            "本人確認が中止されました。入力内容は保存されています。確認画面から、もう一度本人確認を行えます。",
            back,
        )
    } else {
        let code = answer
            .code
            .filter(|c| !c.is_empty() && c.len() <= PARAM_LIMIT)
            .unwrap_or_default();
        // The provider is called without holding a database connection.
        drop(db);
        verify(&ctx, &taken, &code, back).await?
    };
    resp.headers_mut()
        .append(header::SET_COOKIE, state_cookie(&ctx, &state, "", 0));
    Ok(resp)
}

async fn verify(
    ctx: &TenantCtx,
    taken: &Taken,
    code: &str,
    back: Option<String>,
) -> Result<Response, AppError> {
    let Some(provider) = identity::provider(ctx, &**ctx.db().await?).await? else {
        return Ok(not_ready(ctx, back));
    };
    let checked = tokio::time::timeout(CALLBACK_LIMIT, async {
        if code.is_empty() {
            return Err(oidc::Problem::BadResponse("code がありません".into()));
        }
        let redirect = identity::redirect_uri(ctx);
        let token = oidc::exchange(ctx.idp(), &provider, code, &taken.verifier, &redirect).await?;
        let keys = oidc::keys(ctx.idp(), &provider).await?;
        oidc::verify(
            &token,
            &keys,
            &provider.issuer,
            &provider.client_id,
            &taken.nonce,
        )
    })
    .await
    .unwrap_or_else(|_| Err(oidc::Problem::Unreachable("時間切れ".into())));
    let mut db = ctx.db().await?;
    let draft = taken.draft.to_string();
    match checked {
        Err(problem) => {
            // The problem names a check or an HTTP status, never a claim.
            tracing::warn!(problem = %problem, "identity verification refused");
            audit::record(
                &mut db,
                &Actor::Citizen,
                "identity.refused",
                &draft,
                serde_json::json!({ "issuer": provider.issuer, "problem": problem.to_string() }),
            )
            .await?;
            Ok(outcome(
                ctx,
                StatusCode::BAD_GATEWAY,
                "本人確認を完了できませんでした",
                &format!("{problem}。入力内容は保存されています。時間をおいて、確認画面からもう一度お試しください。"),
                back,
            ))
        }
        Ok(who) => {
            let v = Verified {
                issuer: provider.issuer.clone(),
                at: time::OffsetDateTime::now_utc(),
                who,
            };
            // The identity and its log entry, together.
            let tx = db.transaction().await?;
            identity::keep_with_draft(ctx, &*tx, taken.draft, &v).await?;
            audit::append(
                &*tx,
                &Actor::Citizen,
                "identity.verified",
                &draft,
                serde_json::json!({ "issuer": provider.issuer }),
            )
            .await?;
            tx.commit().await?;
            Ok(see_other(&format!("/f/{}/confirm", taken.public_id)))
        }
    }
}
