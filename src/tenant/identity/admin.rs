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
use crate::tenant::http::{see_other, FormData};
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
    axum::extract::Query(q): axum::extract::Query<Shown>,
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

fn entered(form: &FormData, has_secret: bool) -> Result<Entered, String> {
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
        if !has_secret {
            return Err("クライアントシークレットを入力してください".into());
        }
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

/// Saves the provider after reading its discovery document; an empty secret keeps
/// the one saved.
pub async fn save(ctx: TenantCtx, user: StaffUser, form: FormData) -> Result<Response, AppError> {
    user.require_admin()?;
    user.check_csrf(&form)?;
    let has_secret = {
        let db = ctx.db().await?;
        db.query_opt("SELECT 1 FROM identity_provider", &[])
            .await?
            .is_some()
    };
    let e = match entered(&form, has_secret) {
        Ok(e) => e,
        Err(msg) => return page(&ctx, &user, Some(&form), Some(msg), false).await,
    };
    // The provider is asked without holding a database connection.
    let endpoints = match oidc::discover(ctx.idp(), &e.issuer).await {
        Ok(p) => p,
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
    tx.execute(
        "INSERT INTO identity_provider (issuer, authorization_endpoint, token_endpoint, jwks_uri, token_auth, client_id, client_secret, scopes, label, updated_by)
         VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, ''::bytea), $8, $9, $10)
         ON CONFLICT (id) DO UPDATE SET issuer = EXCLUDED.issuer, authorization_endpoint = EXCLUDED.authorization_endpoint,
           token_endpoint = EXCLUDED.token_endpoint, jwks_uri = EXCLUDED.jwks_uri, token_auth = EXCLUDED.token_auth,
           client_id = EXCLUDED.client_id, client_secret = coalesce($7, identity_provider.client_secret),
           scopes = EXCLUDED.scopes, label = EXCLUDED.label, updated_at = now(), updated_by = EXCLUDED.updated_by",
        &[
            &e.issuer,
            &endpoints.authorization,
            &endpoints.token,
            &endpoints.jwks,
            &endpoints.token_auth,
            &e.client_id,
            &sealed,
            &e.scopes,
            &e.label,
            &actor.label(),
        ],
    )
    .await?;
    audit::append(
        &*tx,
        &actor,
        "identity_provider.save",
        &e.issuer,
        serde_json::json!({
            "client_id": e.client_id,
            "scopes": e.scopes,
            "secret_changed": e.secret.is_some(),
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
