//! The operating manuals (操作マニュアル): the citizens' guide at `/help` and the
//! staff's and administrators' manual at `/admin/help`, with the training text
//! (`/admin/help/training`) and the integration API's guide (`/admin/help/api`) beside
//! it, served by every municipality.

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

use super::admin::Nav;
use super::api::{PAGE_DEFAULT, PAGE_MAX};
use super::cases::pages::PAGE_SIZE;
use super::cases::Status;
use super::forms::answers::MAX_INPUT;
use super::forms::citizen::DRAFT_HOURS;
use super::forms::definition::{MAX_FIELDS, MAX_PAGES};
use super::forms::resume::{LINKS_PER_ADDRESS, LINK_DAYS, MAX_LINKS};
use super::http::MAX_FORM_BODY;
use super::staff::{self, StaffUser};
use super::TenantCtx;
use crate::web::render;

/// The citizens' guide. Its durations and limits are the code's own.
#[derive(Template)]
#[template(path = "citizen/help.html")]
struct CitizenGuide {
    site: String,
    draft_hours: i32,
    link_days: i32,
    mine_link_minutes: i32,
    mine_session_minutes: i32,
    links_per_draft: i32,
    links_per_address: i64,
    identity_minutes: i32,
    copy_minutes: i32,
    /// The municipality's 代表の問い合わせ先, if it wrote one.
    main_contact: Option<String>,
    /// The departments' 問い合わせ先, those that wrote one.
    contacts: Vec<crate::tenant::forms::store::Contact>,
}

pub async fn citizen_guide(ctx: TenantCtx) -> Result<Response, crate::error::AppError> {
    let db = ctx.db().await?;
    let contacts = db
        .query(
            "SELECT name, contact FROM departments WHERE contact <> '' ORDER BY name",
            &[],
        )
        .await?
        .iter()
        .filter_map(|r| crate::tenant::forms::store::Contact::of(r.get(0), r.get(1)))
        .collect();
    let main_contact = db
        .query_opt("SELECT contact FROM settings", &[])
        .await?
        .map(|r| r.get::<_, String>(0))
        .filter(|c| !c.trim().is_empty());
    drop(db);
    Ok(render(
        StatusCode::OK,
        &CitizenGuide {
            site: ctx.name.to_string(),
            draft_hours: DRAFT_HOURS,
            link_days: LINK_DAYS,
            mine_link_minutes: super::mine::LINK_MINUTES,
            mine_session_minutes: super::mine::SESSION_MINUTES,
            links_per_draft: MAX_LINKS,
            links_per_address: LINKS_PER_ADDRESS,
            identity_minutes: crate::tenant::identity::REQUEST_MINUTES,
            copy_minutes: crate::tenant::forms::citizen::COPY_MINUTES,
            main_contact,
            contacts,
        },
    ))
}

/// The staff's and administrators' manual: readable before signing in (it explains
/// signing in), with the menu once signed in. It stays behind the 管理画面's network
/// rule, as every `/admin` page does.
#[derive(Template)]
#[template(path = "admin/help.html")]
struct StaffManual {
    site: String,
    nav: Option<Nav>,
    /// The operator's help desk, as configured.
    helpdesk: Option<String>,
    /// Attached files are scanned (ClamAV, set by the operator).
    scanned: bool,
    setup_link_hours: i64,
    min_password: usize,
    free_attempts: i32,
    idle_minutes: i64,
    absolute_hours: i64,
    max_input: String,
    max_pages: usize,
    max_fields: usize,
    page_size: i64,
}

/// A count as Japanese text writes it: digits grouped by thousands (10,000).
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

pub async fn staff_manual(ctx: TenantCtx, user: Result<StaffUser, Response>) -> Response {
    render(
        StatusCode::OK,
        &StaffManual {
            site: ctx.name.to_string(),
            nav: user.ok().map(|u| Nav::new(&u, "help")),
            helpdesk: ctx.helpdesk.as_deref().map(str::to_owned),
            scanned: ctx.clamd.is_some(),
            setup_link_hours: staff::pages::SETUP_LINK_HOURS,
            min_password: staff::MIN_PASSWORD,
            free_attempts: staff::FREE_ATTEMPTS,
            idle_minutes: staff::IDLE_SECS / 60,
            absolute_hours: staff::ABSOLUTE_SECS / 3600,
            max_input: grouped(MAX_INPUT),
            max_pages: MAX_PAGES,
            max_fields: MAX_FIELDS,
            page_size: PAGE_SIZE,
        },
    )
}

/// The training text (操作研修テキスト) for the operation training held on a 研修用
/// site: served by every municipality, so that staff who missed a session read it on
/// their own site, and readable before signing in (its first exercise is signing in).
#[derive(Template)]
#[template(path = "admin/training.html")]
struct TrainingText {
    site: String,
    nav: Option<Nav>,
}

pub async fn training_text(ctx: TenantCtx, user: Result<StaffUser, Response>) -> Response {
    render(
        StatusCode::OK,
        &TrainingText {
            site: ctx.name.to_string(),
            nav: user.ok().map(|u| Nav::new(&u, "help")),
        },
    )
}

/// One status of the workflow as the interface guide lists it, with where it may go.
struct StatusRow {
    code: &'static str,
    label: &'static str,
    next: Vec<&'static str>,
}

/// The integration API's interface guide in Japanese (連携APIインターフェース仕様),
/// beside the OpenAPI document it explains; its workflow and limits are the code's.
#[derive(Template)]
#[template(path = "admin/api_guide.html")]
struct ApiGuide {
    site: String,
    nav: Option<Nav>,
    statuses: Vec<StatusRow>,
    max_body: String,
    page_default: i64,
    page_max: i64,
}

pub async fn api_guide(ctx: TenantCtx, user: Result<StaffUser, Response>) -> Response {
    let statuses = Status::ALL
        .into_iter()
        .map(|s| StatusRow {
            code: s.as_str(),
            label: s.label(),
            next: s.staff_next().iter().map(|n| n.as_str()).collect(),
        })
        .collect();
    render(
        StatusCode::OK,
        &ApiGuide {
            site: ctx.name.to_string(),
            nav: user.ok().map(|u| Nav::new(&u, "help")),
            statuses,
            max_body: format!("{}KB", MAX_FORM_BODY / 1024),
            page_default: PAGE_DEFAULT,
            page_max: PAGE_MAX,
        },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(super::grouped(7), "7");
        assert_eq!(super::grouped(200), "200");
        assert_eq!(super::grouped(10_000), "10,000");
        assert_eq!(super::grouped(1_234_567), "1,234,567");
    }
}
