//! API tokens: created by an administrator (admin screen) or an operator
//! (`madoguchi tenant api-token`), shown once, stored as a SHA-256 hash, scoped,
//! revocable, with their last use and where they may be used from.

use askama::Template;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use tokio_postgres::Client;

use super::SCOPES;
use crate::crypto::random_token;
use crate::error::AppError;
use crate::tenant::admin::Nav;
use crate::tenant::audit::{self, Actor};
use crate::tenant::forms::citizen::jst;
use crate::tenant::http::{see_other, token_hash, FormData};
use crate::tenant::staff::StaffUser;
use crate::tenant::TenantCtx;
use crate::web::render;

/// Where a token may be used from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenNetwork {
    /// The admin screen's network rule (its address ranges and zones), as it is at
    /// each use: the default.
    Admin,
    /// Only these address ranges (1–200), from either zone.
    Listed(Vec<ipnet::IpNet>),
    /// Anywhere (tokens issued before the choice existed, or chosen so).
    Any,
}

/// The most address ranges a token may list (as the admin screen's rule).
pub const MAX_TOKEN_CIDRS: usize = 200;

impl TokenNetwork {
    /// From the admin screen's or the command line's choice: `admin`, `any`, or
    /// address ranges (`192.0.2.0/24`, a single address; lines or commas, full width
    /// accepted).
    pub fn parse(choice: &str, ranges: &str) -> Result<Self, AppError> {
        match choice.trim() {
            "" | "admin" => Ok(Self::Admin),
            "any" => Ok(Self::Any),
            "listed" => {
                let (cidrs, bad) = crate::tenant::admin::access::parse_cidrs(ranges);
                if !bad.is_empty() {
                    return Err(AppError::BadRequest(format!(
                        "アドレス範囲の形式が正しくありません: {}（例: 192.0.2.0/24、2001:db8::/32）",
                        bad.join(", ")
                    )));
                }
                if cidrs.is_empty() || cidrs.len() > MAX_TOKEN_CIDRS {
                    return Err(AppError::BadRequest(format!(
                        "利用を許可するアドレス範囲を1〜{MAX_TOKEN_CIDRS}件入力してください"
                    )));
                }
                Ok(Self::Listed(cidrs))
            }
            _ => Err(AppError::BadRequest(
                "利用元は admin（管理画面と同じ）、any（制限なし）またはアドレス範囲で指定してください"
                    .into(),
            )),
        }
    }

    fn column(&self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Listed(_) => "listed",
            Self::Any => "any",
        }
    }

    fn cidrs(&self) -> Vec<String> {
        match self {
            Self::Listed(c) => c.iter().map(ToString::to_string).collect(),
            _ => Vec::new(),
        }
    }
}

/// How the token list shows where a token may be used from.
fn network_label(network: &str, cidrs: &[String]) -> String {
    match network {
        "admin" => "管理画面と同じネットワーク制限".to_owned(),
        "listed" => format!("次のアドレスのみ: {}", cidrs.join(", ")),
        _ => "制限なし（どこからでも）".to_owned(),
    }
}

/// Creates a token; returns it (the only time it is seen).
pub async fn create(
    db: &mut Client,
    actor: &Actor,
    created_by: Option<i64>,
    name: &str,
    scopes: &[String],
    network: &TokenNetwork,
) -> Result<String, AppError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AppError::BadRequest(
            "トークンの名前を1〜100文字で入力してください".into(),
        ));
    }
    if scopes.is_empty() || scopes.iter().any(|s| !SCOPES.contains(&s.as_str())) {
        return Err(AppError::BadRequest(format!(
            "権限（スコープ）は {} から選んでください",
            SCOPES.join(", ")
        )));
    }
    let token = format!("mdg_{}", random_token(32));
    let tx = db.transaction().await?;
    let id: i64 = tx
        .query_one(
            "INSERT INTO api_tokens (name, token_hash, scopes, created_by, network, cidrs) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[&name, &token_hash(&token), &scopes, &created_by, &network.column(), &network.cidrs()],
        )
        .await?
        .get(0);
    audit::append(
        &tx,
        actor,
        "api_token.create",
        &id.to_string(),
        serde_json::json!({ "name": name, "scopes": scopes, "network": network.column(), "cidrs": network.cidrs() }),
    )
    .await?;
    tx.commit().await?;
    Ok(token)
}

pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub scopes: String,
    pub created: String,
    pub last_used: String,
    pub revoked: bool,
    /// Where it may be used from.
    pub network: String,
}

#[derive(Template)]
#[template(path = "admin/api_tokens.html")]
struct TokensPage {
    site: String,
    nav: Option<Nav>,
    tokens: Vec<TokenRow>,
    scopes: Vec<&'static str>,
    new_token: Option<String>,
    error: Option<String>,
    csrf: String,
    max_cidrs: usize,
}

async fn page(
    ctx: &TenantCtx,
    user: &StaffUser,
    new_token: Option<String>,
    error: Option<String>,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let tokens = db
        .query("SELECT id, name, scopes, created_at, last_used_at, revoked_at IS NOT NULL, network, cidrs FROM api_tokens ORDER BY id DESC", &[])
        .await?
        .iter()
        .map(|r| TokenRow {
            id: r.get(0),
            name: r.get(1),
            scopes: r.get::<_, Vec<String>>(2).join(", "),
            created: jst(r.get(3)),
            last_used: r.get::<_, Option<time::OffsetDateTime>>(4).map(jst).unwrap_or_else(|| "—".into()),
            revoked: r.get(5),
            network: network_label(r.get(6), &r.get::<_, Vec<String>>(7)),
        })
        .collect();
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(render(
        status,
        &TokensPage {
            site: ctx.name.to_string(),
            nav: Some(Nav::new(user, "api")),
            tokens,
            scopes: SCOPES.to_vec(),
            new_token,
            error,
            csrf: user.csrf.clone(),
            max_cidrs: MAX_TOKEN_CIDRS,
        },
    ))
}

pub async fn list(ctx: TenantCtx, user: StaffUser) -> Result<Response, AppError> {
    user.require_admin()?;
    page(&ctx, &user, None, None).await
}

pub async fn add(ctx: TenantCtx, user: StaffUser, body: FormData) -> Result<Response, AppError> {
    user.require_admin()?;
    user.check_csrf(&body)?;
    let mut db = ctx.db().await?;
    let actor = user.actor();
    let made = match TokenNetwork::parse(body.get("network"), body.get("cidrs")) {
        Ok(network) => {
            create(
                &mut db,
                &actor,
                Some(user.id),
                body.get("name"),
                &body.all("scopes"),
                &network,
            )
            .await
        }
        Err(e) => Err(e),
    };
    match made {
        Ok(token) => {
            drop(db);
            page(&ctx, &user, Some(token), None).await
        }
        Err(AppError::BadRequest(m)) => {
            drop(db);
            page(&ctx, &user, None, Some(m)).await
        }
        Err(e) => Err(e),
    }
}

pub async fn revoke(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<i64>,
    body: FormData,
) -> Result<Response, AppError> {
    user.require_admin()?;
    user.check_csrf(&body)?;
    let mut db = ctx.db().await?;
    let client: &mut tokio_postgres::Client = &mut db;
    let tx = client.transaction().await?;
    let n = tx
        .execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
            &[&id],
        )
        .await?;
    if n == 0 {
        return Err(AppError::NotFound);
    }
    audit::append(
        &tx,
        &user.actor(),
        "api_token.revoke",
        &id.to_string(),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(see_other("/admin/api-tokens"))
}
