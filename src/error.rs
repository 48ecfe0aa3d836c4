//! The one error type of the web side: an HTML page for people, with a request id
//! for anything unexpected, never a stack trace.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::web::ErrorPage;

/// Errors a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("not found")]
    NotFound,
    /// The request cannot be understood; the message is shown to the person.
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("payload too large")]
    PayloadTooLarge,
    /// Signed in, but not allowed to do this.
    #[error("forbidden")]
    Forbidden,
    /// What the person changed was changed by someone else since they saw it; the
    /// message says what to do.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A state-changing request without a valid CSRF token.
    #[error("csrf token mismatch")]
    Csrf,
    /// The service (or this tenant's share of it) is busy or down for now.
    #[error("temporarily unavailable")]
    Unavailable { retry_after_secs: u32 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Why the database could not do what was asked, for the `db_errors` metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct DbErrorLabels {
    pub reason: String,
}

/// Database failures that are not the request's fault (read-only, disk full,
/// restarting, unreachable), counted for alerts; shared by every metrics registry.
pub fn db_errors() -> &'static prometheus_client::metrics::family::Family<
    DbErrorLabels,
    prometheus_client::metrics::counter::Counter,
> {
    static F: std::sync::OnceLock<
        prometheus_client::metrics::family::Family<
            DbErrorLabels,
            prometheus_client::metrics::counter::Counter,
        >,
    > = std::sync::OnceLock::new();
    F.get_or_init(Default::default)
}

tokio::task_local! {
    /// Set while a request runs when its database failed in a way that may stick to
    /// open connections; the front tier then closes that tenant's pool.
    pub static DB_TROUBLE: std::cell::Cell<bool>;
}

fn db_unavailable(reason: &str) -> AppError {
    let _ = DB_TROUBLE.try_with(|c| c.set(true));
    db_errors()
        .get_or_create(&DbErrorLabels {
            reason: reason.to_owned(),
        })
        .inc();
    tracing::error!(reason, "database unavailable for this request");
    AppError::Unavailable {
        retry_after_secs: 5,
    }
}

/// Errors without SQLSTATE that the caller made, not the connection: tokio-postgres
/// keeps its error kinds private, so they are known by their fixed messages.
fn is_fault_of_the_caller(e: &tokio_postgres::Error) -> bool {
    const CALLER: [&str; 6] = [
        "error serializing parameter",
        "error deserializing column",
        "invalid column",
        "query returned an unexpected number of",
        "expected ",
        "invalid configuration",
    ];
    let text = e.to_string();
    CALLER.iter().any(|p| text.starts_with(p))
}

impl From<tokio_postgres::Error> for AppError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        if e.is_closed() {
            return db_unavailable("connection_lost");
        }
        let Some(c) = e.code() else {
            // No SQLSTATE: either the connection broke (server restarting or
            // unreachable), or this code asked for the wrong thing (a row that is not
            // there, a type that does not convert), which is a fault here and must not
            // close the tenant's pool or count as the database refusing.
            if is_fault_of_the_caller(&e) {
                return AppError::Internal(e.into());
            }
            return db_unavailable("connection_lost");
        };
        if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE
            || *c == SqlState::UNTRANSLATABLE_CHARACTER
            || *c == SqlState::DATETIME_FIELD_OVERFLOW
            || *c == SqlState::NUMERIC_VALUE_OUT_OF_RANGE
        {
            // Text PostgreSQL cannot store (a NUL byte) or values outside its range:
            // the input is at fault, not the service.
            return AppError::BadRequest(
                "入力に使用できない文字、または範囲外の値が含まれています。入力内容を確認してください。".into(),
            );
        }
        if *c == SqlState::READ_ONLY_SQL_TRANSACTION {
            return db_unavailable("read_only");
        }
        if *c == SqlState::DISK_FULL
            || *c == SqlState::INSUFFICIENT_RESOURCES
            || *c == SqlState::OUT_OF_MEMORY
        {
            return db_unavailable("disk_full_or_resources");
        }
        if *c == SqlState::ADMIN_SHUTDOWN
            || *c == SqlState::CRASH_SHUTDOWN
            || *c == SqlState::CANNOT_CONNECT_NOW
            || *c == SqlState::TOO_MANY_CONNECTIONS
            || c.code().starts_with("08")
        {
            return db_unavailable("server_unavailable");
        }
        AppError::Internal(e.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::NotFound => ErrorPage::not_found().into_response(),
            AppError::BadRequest(msg) => ErrorPage::new(StatusCode::BAD_REQUEST, "入力内容を確認してください", "Bad request", &msg).into_response(),
            AppError::PayloadTooLarge => ErrorPage::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "送信内容が大きすぎます",
                "Request too large",
                "送信できる大きさを超えています。入力内容を短くするか、添付ファイルを小さくしてから、もう一度送信してください。",
            )
            .into_response(),
            AppError::Forbidden => ErrorPage::new(
                StatusCode::FORBIDDEN,
                "この操作の権限がありません",
                "Forbidden",
                "この画面または操作は、あなたの権限では利用できません。必要な場合は管理者に依頼してください。",
            )
            .into_response(),
            AppError::Conflict(msg) => ErrorPage::new(
                StatusCode::CONFLICT,
                "他の人が先に変更しました",
                "Changed by someone else",
                &msg,
            )
            .into_response(),
            AppError::Csrf => ErrorPage::new(
                StatusCode::FORBIDDEN,
                "画面の有効期限が切れました",
                "Session expired",
                "安全のため、この送信は受け付けられませんでした。前の画面に戻り、ページを再読み込みしてからもう一度操作してください。",
            )
            .into_response(),
            AppError::Unavailable { retry_after_secs } => {
                let mut resp = ErrorPage::busy().into_response();
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                resp
            }
            AppError::Internal(err) => {
                // The request id is on the span; the cause chain goes to the log only.
                tracing::error!(error = format!("{err:#}"), "internal error");
                ErrorPage::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "システムエラーが発生しました",
                    "System error",
                    "申し訳ありません。時間をおいてもう一度お試しください。解決しない場合は、表示されている受付IDを添えてお問い合わせください。",
                )
                .into_response()
            }
        }
    }
}
