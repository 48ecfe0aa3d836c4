//! The administrator's 本人確認 screen: the municipality's OpenID Connect provider
//! (issuer, client id and secret, scopes, the name citizens see), checked against
//! the provider's discovery document when saved; and the redirect URI to register
//! with the provider.

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

use super::oidc;
use crate::error::AppError;
use crate::tenant::admin::Nav;
use crate::tenant::audit;
use crate::tenant::forms::citizen::jst;
use crate::tenant::http::{see_other, FormData, Query};
use crate::tenant::staff::StaffUser;
use crate::tenant::TenantCtx;
use crate::web::render;

/// The longest client id, label and scope list taken.
pub const TEXT_LIMIT: usize = 200;
/// The longest client secret taken.
pub const SECRET_LIMIT: usize = 1024;
/// Scopes asked for unless the administrator sets others.
pub const DEFAULT_SCOPES: &str = "openid profile address";

pub struct Current {
    pub issuer: String,
    pub client_id: String,
    pub scopes: String,
    pub label: String,
    pub token_auth: String,
    pub updated: String,
    pub updated_by: String,
}

#[derive(Template)]
#[template(path = "admin/identity.html")]
struct IdentityPage {
    site: String,
    nav: Option<Nav>,
    csrf: String,
    current: Option<Current>,
    redirect_uri: String,
    /// What was entered, shown again with an error.
    issuer: String,
    client_id: String,
    scopes: String,
    label: String,
    error: Option<String>,
    saved: bool,
}

async fn page(
    ctx: &TenantCtx,
    user: &StaffUser,
    entered: Option<&FormData>,
    error: Option<String>,
    saved: bool,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let current = db
        .query_opt(
            "SELECT issuer, client_id, scopes, label, token_auth, updated_at, updated_by FROM identity_provider",
            &[],
        )
        .await?
        .map(|r| Current {
            issuer: r.get(0),
            client_id: r.get(1),
            scopes: r.get(2),
            label: r.get(3),
            token_auth: r.get(4),
            updated: jst(r.get(5)),
            updated_by: r.get(6),
        });
    let field = |name: &str, now: Option<&str>, default: &str| match entered {
        Some(f) => f.get(name).to_owned(),
        None => now.unwrap_or(default).to_owned(),
    };
    let c = current.as_ref();
    Ok(render(
        if error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
        &IdentityPage {
            site: ctx.name.to_string(),
            nav: Some(Nav::new(user, "identity")),
            csrf: user.csrf.clone(),
            redirect_uri: super::redirect_uri(ctx),
            issuer: field("issuer", c.map(|c| c.issuer.as_str()), ""),
            client_id: field("client_id", c.map(|c| c.client_id.as_str()), ""),
            scopes: field("scopes", c.map(|c| c.scopes.as_str()), DEFAULT_SCOPES),
            label: field("label", c.map(|c| c.label.as_str()), "マイナンバーカード"),
            current,
            error,
            saved,
        },
    ))
}

#[derive(serde::Deserialize)]
pub struct Shown {
    saved: Option<u8>,
}

pub async fn show(
    ctx: TenantCtx,
    user: StaffUser,
    Query(q): Query<Shown>,
) -> Result<Response, AppError> {
    user.require_admin()?;
    page(&ctx, &user, None, None, q.saved.is_some()).await
}

fn one_line(form: &FormData, name: &str, what: &str, limit: usize) -> Result<String, String> {
    let v = form.get(name).trim();
    if v.is_empty() || v.chars().count() > limit || v.chars().any(char::is_control) {
        return Err(format!("{what}を1〜{limit}文字で入力してください"));
    }
    Ok(v.to_owned())
}

/// What the form says, checked, before the provider is asked.
struct Entered {
    issuer: String,
    client_id: String,
    secret: Option<zeroize::Zeroizing<String>>,
    scopes: String,
    label: String,
}

fn entered(form: &FormData) -> Result<Entered, String> {
    let issuer = oidc::issuer_url(form.get("issuer")).map_err(|e| e.to_string())?;
    let client_id = one_line(form, "client_id", "クライアントID", TEXT_LIMIT)?;
    let label = one_line(form, "label", "表示名", TEXT_LIMIT)?;
    let scopes = one_line(form, "scopes", "スコープ", TEXT_LIMIT)?;
    if !scopes.split_whitespace().any(|s| s == "openid") {
        return Err("スコープには openid を含めてください".into());
    }
    let scopes = scopes.split_whitespace().collect::<Vec<_>>().join(" ");
    let secret = form.get("client_secret");
    let secret = if secret.is_empty() {
        None
    } else if secret.len() > SECRET_LIMIT || secret.chars().any(char::is_control) {
        return Err(format!(
            "クライアントシークレットは{SECRET_LIMIT}バイト以内で入力してください"
        ));
    } else {
        Some(zeroize::Zeroizing::new(secret.to_owned()))
    };
    Ok(Entered {
        issuer,
        client_id,
        secret,
        scopes,
        label,
    })
}

/// The secret must be given again unless it goes to the same provider for the same
/// client: otherwise an administrator (or a stolen session) could point the issuer
/// at a server of their own and have the saved secret sent there.
const SECRET_AGAIN: &str =
    "発行者（issuer）かクライアントIDを変えるときは、クライアントシークレットも入力してください";

/// Saves the provider after reading its discovery document; an empty secret keeps
/// the one saved for the same issuer and client. Identities verified by another
/// issuer stop counting (drafts must verify again).
pub async fn save(ctx: TenantCtx, user: StaffUser, form: FormData) -> Result<Response, AppError> {
    user.require_admin()?;
    user.check_csrf(&form)?;
    let e = match entered(&form) {
        Ok(e) => e,
        Err(msg) => return page(&ctx, &user, Some(&form), Some(msg), false).await,
    };
    let same = |r: &tokio_postgres::Row, issuer: &str| {
        r.get::<_, String>(0).trim_end_matches('/') == issuer.trim_end_matches('/')
            && r.get::<_, String>(1) == e.client_id
    };
    if e.secret.is_none() {
        let db = ctx.db().await?;
        let saved = db
            .query_opt("SELECT issuer, client_id FROM identity_provider", &[])
            .await?;
        if !saved.is_some_and(|r| same(&r, &e.issuer)) {
            drop(db);
            return page(&ctx, &user, Some(&form), Some(SECRET_AGAIN.into()), false).await;
        }
    }
    // The provider is asked without holding a database connection.
    let found = match oidc::discover(ctx.idp(), &e.issuer).await {
        Ok(d) => d,
        Err(problem) => {
            return page(&ctx, &user, Some(&form), Some(problem.to_string()), false).await
        }
    };
    let sealed = e
        .secret
        .as_ref()
        .map(|s| super::seal_secret(ctx.cipher(), s))
        .transpose()?;
    let mut db = ctx.db().await?;
    let actor = user.actor();
    let tx = db.transaction().await?;
    // Checked again under the row's lock: a change or removal meanwhile.
    let saved = tx
        .query_opt(
            "SELECT issuer, client_id FROM identity_provider FOR UPDATE",
            &[],
        )
        .await?;
    let Some(secret) = sealed else {
        if !saved.is_some_and(|r| same(&r, &e.issuer)) {
            drop(tx);
            drop(db);
            return page(&ctx, &user, Some(&form), Some(SECRET_AGAIN.into()), false).await;
        }
        tx.execute(
            "UPDATE identity_provider SET issuer = $1, authorization_endpoint = $2, token_endpoint = $3, jwks_uri = $4,
                    token_auth = $5, scopes = $6, label = $7, updated_at = now(), updated_by = $8",
            &[
                &found.issuer,
                &found.endpoints.authorization,
                &found.endpoints.token,
                &found.endpoints.jwks,
                &found.endpoints.token_auth,
                &e.scopes,
                &e.label,
                &actor.label(),
            ],
        )
        .await?;
        return finish(tx, &actor, &e, &found.issuer, false).await;
    };
    tx.execute(
        "INSERT INTO identity_provider (issuer, authorization_endpoint, token_endpoint, jwks_uri, token_auth, client_id, client_secret, scopes, label, updated_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (id) DO UPDATE SET issuer = EXCLUDED.issuer, authorization_endpoint = EXCLUDED.authorization_endpoint,
           token_endpoint = EXCLUDED.token_endpoint, jwks_uri = EXCLUDED.jwks_uri, token_auth = EXCLUDED.token_auth,
           client_id = EXCLUDED.client_id, client_secret = EXCLUDED.client_secret,
           scopes = EXCLUDED.scopes, label = EXCLUDED.label, updated_at = now(), updated_by = EXCLUDED.updated_by",
        &[
            &found.issuer,
            &found.endpoints.authorization,
            &found.endpoints.token,
            &found.endpoints.jwks,
            &found.endpoints.token_auth,
            &e.client_id,
            &secret,
            &e.scopes,
            &e.label,
            &actor.label(),
        ],
    )
    .await?;
    finish(tx, &actor, &e, &found.issuer, true).await
}

/// Ends a save: identities another issuer vouched for no longer count, and the
/// change is logged (never the secret).
async fn finish(
    tx: deadpool_postgres::Transaction<'_>,
    actor: &crate::tenant::audit::Actor,
    e: &Entered,
    issuer: &str,
    secret_changed: bool,
) -> Result<Response, AppError> {
    tx.execute(
        "DELETE FROM draft_identities WHERE issuer <> $1",
        &[&issuer],
    )
    .await?;
    audit::append(
        &*tx,
        actor,
        "identity_provider.save",
        issuer,
        serde_json::json!({
            "client_id": e.client_id,
            "scopes": e.scopes,
            "secret_changed": secret_changed,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(see_other("/admin/identity?saved=1"))
}

/// Removes the provider: forms asking for 本人確認 can then not be sent.
pub async fn remove(ctx: TenantCtx, user: StaffUser, form: FormData) -> Result<Response, AppError> {
    user.require_admin()?;
    user.check_csrf(&form)?;
    let mut db = ctx.db().await?;
    let tx = db.transaction().await?;
    let issuer: Option<String> = tx
        .query_opt("DELETE FROM identity_provider RETURNING issuer", &[])
        .await?
        .map(|r| r.get(0));
    // Drafts verified through it can no longer be sent as verified.
    tx.execute("DELETE FROM draft_identities", &[]).await?;
    if let Some(issuer) = issuer {
        audit::append(
            &*tx,
            &user.actor(),
            "identity_provider.remove",
            &issuer,
            serde_json::json!({}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(see_other("/admin/identity"))
}
