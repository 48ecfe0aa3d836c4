//! A municipality's home page: its name and the procedures open now.

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

use super::TenantCtx;
use crate::error::AppError;
use crate::web::render;

pub struct FormLink {
    pub title: String,
    pub url: String,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    site: String,
    code: String,
    forms: Vec<FormLink>,
    /// The municipality's 代表の問い合わせ先, if it wrote one.
    contact: Option<String>,
}

pub async fn show(ctx: TenantCtx) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let stmt = db
        .prepare_cached("SELECT name, local_gov_code, contact FROM settings")
        .await?;
    let row = db.query_opt(&stmt, &[]).await?.ok_or(AppError::NotFound)?;
    let page = HomePage {
        site: row.get(0),
        code: row.get(1),
        contact: Some(row.get::<_, String>(2)).filter(|c| !c.trim().is_empty()),
        forms: super::forms::store::open_forms(&db, ctx.zone)
            .await?
            .into_iter()
            .map(|(public_id, title)| FormLink {
                url: format!("/f/{public_id}"),
                title,
            })
            .collect(),
    };
    Ok(render(StatusCode::OK, &page))
}
