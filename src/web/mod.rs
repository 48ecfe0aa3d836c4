//! Shared HTML: the layout every page uses, error pages, static assets, and the
//! request id that error pages show.

use std::sync::Arc;

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

tokio::task_local! {
    /// The id of the request being served, shown on error pages and in every log line.
    pub static REQUEST_ID: Arc<str>;
}

/// The current request's id, if called while serving one.
pub fn current_request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

/// Renders a template to a response; a template error becomes a plain 500.
pub fn render<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
        }
    }
}

/// A page for anything that went wrong, in Japanese first and English second.
#[derive(Template, Debug)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub status: StatusCode,
    pub site: String,
    pub title_ja: String,
    pub title_en: String,
    pub message: String,
    pub request_id: Option<Arc<str>>,
}

impl ErrorPage {
    pub fn new(status: StatusCode, title_ja: &str, title_en: &str, message: &str) -> Self {
        Self {
            status,
            site: "窓口 Madoguchi".to_owned(),
            title_ja: title_ja.to_owned(),
            title_en: title_en.to_owned(),
            message: message.to_owned(),
            request_id: current_request_id(),
        }
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ページが見つかりません",
            "Page not found",
            "お探しのページは見つかりませんでした。アドレスをご確認ください。",
        )
    }

    /// For a host name that belongs to no municipality.
    pub fn unknown_host() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "このアドレスでは提供していません",
            "Unknown site",
            "このアドレスに対応する自治体のサイトはありません。お住まいの自治体のホームページからお入りください。",
        )
    }

    /// For a suspended municipality.
    pub fn maintenance(site: &str) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ただいまご利用いただけません",
            "Temporarily unavailable",
            "このサイトは現在停止中です。しばらくしてから、もう一度アクセスしてください。",
        );
        site.clone_into(&mut p.site);
        p
    }

    /// A municipality that has left the service.
    pub fn closed(site: &str) -> Self {
        let mut p = Self::new(
            StatusCode::GONE,
            "このサービスは終了しました",
            "This service has closed",
            "このサイトでのオンライン申請の受付は終了しました。お手続きについては、各自治体の窓口にお問い合わせください。",
        );
        site.clone_into(&mut p.site);
        p
    }

    pub fn busy() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ただいま混み合っています",
            "Service busy",
            "アクセスが集中しています。少し時間をおいてから、もう一度お試しください。",
        )
    }
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut resp = render(status, &self);
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

/// The one stylesheet: mobile first, large touch targets, visible focus.
pub async fn stylesheet() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        include_str!("static/app.css"),
    )
        .into_response()
}

fn script(body: &'static str) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response()
}

/// Citizen forms: show/hide rules applied as people answer (the server applies them anyway).
pub async fn forms_js() -> Response {
    script(include_str!("static/forms.js"))
}

/// Admin screens: confirmations before destructive actions.
pub async fn admin_js() -> Response {
    script(include_str!("static/admin.js"))
}
