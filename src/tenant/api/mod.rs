//! The integration API (`/api/v1`) for the municipality's core (基幹) systems:
//! per-tenant bearer tokens with scopes, forms, submissions, status changes. Errors
//! are RFC 9457 problem documents. The OpenAPI 3.1 document is generated from this
//! code (`/api/v1/openapi.json`) and is the published interface specification.

pub mod tokens;

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use super::audit::{self, Actor};
use super::cases::{change_status, Change, Status};
use super::forms::answers::{check_all, Answer, Raw};
use super::forms::attachments;
use super::forms::citizen::{decrypt_answers, store_submission, Stored};
use super::forms::store::{self, Availability};
use super::http::token_hash;
use super::TenantCtx;
use crate::error::AppError;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Per-field errors of a rejected submission.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FieldProblem {
    pub field: String,
    pub input: String,
    pub message: String,
}

impl From<crate::tenant::forms::answers::FieldError> for FieldProblem {
    fn from(e: crate::tenant::forms::answers::FieldError) -> Self {
        Self {
            field: e.field,
            input: e.input,
            message: e.message,
        }
    }
}

impl Problem {
    fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://madoguchi.jp/problems/{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (status, Json(&self)).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // The database is restarting, full or read-only, or the pool is busy.
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        r
    }
}

impl From<AppError> for Problem {
    fn from(e: AppError) -> Self {
        match e {
            AppError::NotFound => Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                "見つかりません",
            ),
            AppError::BadRequest(m) => {
                Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request", m)
            }
            AppError::PayloadTooLarge => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Payload too large",
                "256KB を超えています",
            ),
            AppError::Forbidden | AppError::Csrf => Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                "権限がありません",
            ),
            AppError::Conflict(m) => Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", m),
            AppError::Unavailable { .. } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                "混み合っています。時間をおいて再試行してください",
            ),
            AppError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error in the API");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "システムエラーが発生しました",
                )
            }
        }
    }
}

/// A refused request's problem document: `detail` in Japanese first, then what the
/// parser said.
fn refused(status: StatusCode, kind: &str, title: &str, ja: &str, why: &str) -> Problem {
    Problem::new(status, kind, title, format!("{ja} / {why}"))
}

/// axum's `Path`, its refusal a problem document like every other error.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            .map_err(|r| {
                refused(
                    r.status(),
                    "invalid-path",
                    "Invalid path",
                    "URLの値が正しくありません",
                    &r.body_text(),
                )
            })
    }
}

/// axum's `Query`, its refusal a problem document.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|r| {
                refused(
                    r.status(),
                    "invalid-query",
                    "Invalid query",
                    "クエリの値が正しくありません",
                    &r.body_text(),
                )
            })
    }
}

/// axum's `Json`, its refusal (not JSON, wrong content type, a field missing or of
/// the wrong type) a problem document.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Self(v))
            .map_err(|r| {
                refused(
                    r.status(),
                    "invalid-body",
                    "Invalid request body",
                    "リクエスト本文（JSON）を読み取れません",
                    &r.body_text(),
                )
            })
    }
}

/// The error responses every operation can give besides its own: problem documents.
pub struct CommonErrors;

impl utoipa::IntoResponses for CommonErrors {
    fn responses() -> BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>>
    {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, ResponsesBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        ResponsesBuilder::new()
            .response("400", problem("A path, query or body that does not parse"))
            .response(
                "401",
                problem("No token, or one this municipality did not issue or has revoked"),
            )
            .response(
                "403",
                problem("The token lacks the operation's scope, or may not be used from the caller's network (network-refused)"),
            )
            .response(
                "503",
                problem("The municipality's database is busy or restarting (Retry-After)"),
            )
            .build()
            .into()
    }
}

/// Items a list answers with when the caller names no `limit`, and the most it may ask.
pub const PAGE_DEFAULT: i64 = 100;
pub const PAGE_MAX: i64 = 500;

/// Scopes a token may carry.
pub const SCOPES: [&str; 4] = [
    "forms:read",
    "submissions:read",
    "submissions:write",
    "submissions:submit",
];

/// The token a request came with.
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<String>,
    actor: Actor,
}

impl ApiClient {
    fn require(&self, scope: &str) -> Result<(), Problem> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                "scope",
                "Missing scope",
                format!("このトークンには {scope} の権限がありません"),
            ))
        }
    }
}

/// A live token by its hash, touching its last use when that is a minute old.
pub(crate) const TOKEN_SQL: &str = "WITH t AS (
        SELECT a.id, a.name, a.scopes, a.last_used_at,
               coalesce(CASE a.network
                   WHEN 'any' THEN true
                   WHEN 'listed' THEN $2::inet <<= ANY (a.cidrs::inet[])
                   ELSE $3 = ANY (s.admin_zones)
                        AND (cardinality(s.admin_cidrs) = 0 OR $2::inet <<= ANY (s.admin_cidrs::inet[]))
               END, false) AS allowed
          FROM api_tokens a LEFT JOIN settings s ON s.id
         WHERE a.token_hash = $1 AND a.revoked_at IS NULL),
      touched AS (UPDATE api_tokens a SET last_used_at = now() FROM t
                   WHERE a.id = t.id AND t.allowed
                     AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute'))
 SELECT id, name, scopes, allowed FROM t";

impl<S: Send + Sync> FromRequestParts<S> for ApiClient {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let ctx = TenantCtx::from_request_parts(parts, state)
            .await
            .map_err(Problem::from)?;
        let unauthorized = || {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "有効なAPIトークンが必要です（Authorization: Bearer …）",
            )
        };
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(unauthorized)?;
        let mut db = ctx.db().await.map_err(Problem::from)?;
        // Last use is written at most once a minute (to the minute is what the token
        // list shows): a busy integration would otherwise queue every request behind
        // the lock on its token's row until the previous one commits.
        let stmt = db
            .prepare_cached(TOKEN_SQL)
            .await
            .map_err(|e| Problem::from(AppError::from(e)))?;
        // Where the token may be used from is checked in the same statement: the
        // admin screen's network rule (its address ranges and zones), the token's
        // own ranges, or anywhere.
        let ip = ctx.client_ip.map(|ip| ip.to_canonical());
        let row = db
            .query_opt(&stmt, &[&token_hash(token), &ip, &ctx.zone.as_str()])
            .await
            .map_err(|e| Problem::from(AppError::from(e)))?;
        let Some(r) = row else {
            return Err(unauthorized());
        };
        let (id, name): (i64, String) = (r.get(0), r.get(1));
        let actor = Actor::Api {
            token_id: id,
            name: name.clone(),
        };
        if !r.get::<_, bool>(3) {
            // Logged at most once a minute per address and token, so a flood cannot
            // fill the log.
            if crate::tenant::admin::access::should_log(ctx.id, ip, Some(id)) {
                audit::record(
                    &mut db,
                    &actor,
                    "api.refused",
                    &format!("{} {}", parts.method, parts.uri.path()),
                    serde_json::json!({
                        "ip": ip.map(|i| i.to_string()),
                        "zone": ctx.zone.as_str(),
                    }),
                )
                .await
                .map_err(Problem::from)?;
            }
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "network-refused",
                "Not allowed from this network",
                format!(
                    "このAPIトークンは、このネットワーク（{}、{}）からは使えません。トークンの利用元の設定（管理画面の「APIトークン」「ネットワーク制限」）を確認してください。",
                    ip.map(|i| i.to_string()).unwrap_or_else(|| "不明".into()),
                    ctx.zone.as_str()
                ),
            ));
        }
        // Every use of a token is in the operation log.
        let target = format!("{} {}", parts.method, parts.uri.path());
        audit::record(&mut db, &actor, "api.use", &target, serde_json::json!({}))
            .await
            .map_err(Problem::from)?;
        Ok(Self {
            id,
            name,
            scopes: r.get(2),
            actor,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FormSummary {
    /// The form's public id (as in `/f/{id}`).
    pub id: String,
    pub title: String,
    pub version: i32,
    /// open, not_yet_open, ended, full or closed.
    pub availability: String,
}

fn availability(a: Availability) -> &'static str {
    match a {
        Availability::Open => "open",
        Availability::NotYetOpen => "not_yet_open",
        Availability::Ended => "ended",
        Availability::Full => "full",
        Availability::Closed => "closed",
    }
}

/// Published forms.
#[utoipa::path(get, path = "/api/v1/forms", tag = "forms", security(("bearer" = [])),
    responses((status = 200, body = Vec<FormSummary>), CommonErrors))]
pub async fn list_forms(
    ctx: TenantCtx,
    client: ApiClient,
) -> Result<Json<Vec<FormSummary>>, Problem> {
    client.require("forms:read")?;
    let db = ctx.db().await?;
    let rows = db
        .query(
            "SELECT public_id FROM forms WHERE current_version IS NOT NULL ORDER BY id",
            &[],
        )
        .await
        .map_err(AppError::from)?;
    let mut out = Vec::new();
    for r in rows {
        let f = store::published(ctx.id, &db, r.get::<_, &str>(0)).await?;
        out.push(FormSummary {
            id: f.public_id,
            title: f.def.title.clone(),
            version: f.version,
            availability: availability(f.availability).into(),
        });
    }
    Ok(Json(out))
}

/// A form's published definition (format `madoguchi.form/1`).
#[utoipa::path(get, path = "/api/v1/forms/{form}", tag = "forms", security(("bearer" = [])),
    params(("form" = String, Path, description = "The form's public id")),
    responses((status = 200, body = Object, description = "The definition document"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No published form with this id"), CommonErrors))]
pub async fn get_form(
    ctx: TenantCtx,
    client: ApiClient,
    ApiPath(form): ApiPath<String>,
) -> Result<Json<serde_json::Value>, Problem> {
    client.require("forms:read")?;
    let db = ctx.db().await?;
    let f = store::published(ctx.id, &db, &form).await?;
    Ok(Json(
        serde_json::to_value(&*f.def).map_err(|e| AppError::Internal(e.into()))?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewSubmission {
    /// Makes a retried request safe: the same key stores one submission.
    pub idempotency_key: Uuid,
    /// Input name → value, or a list of values for multiple choice. Names as in the
    /// web form: a field's id, `<id>.postal`/`.address1`/`.address2` for addresses,
    /// `<id>.family`/`.given`/`.family_kana`/`.given_kana` for names.
    #[schema(value_type = Object)]
    pub answers: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubmissionCreated {
    pub id: Uuid,
    pub receipt_number: String,
    /// False when the idempotency key was used before.
    pub created: bool,
}

/// Submits to a form, with the same checks and idempotency as the web form.
#[utoipa::path(post, path = "/api/v1/forms/{form}/submissions", tag = "submissions", security(("bearer" = [])),
    params(("form" = String, Path, description = "The form's public id")), request_body = NewSubmission,
    responses((status = 201, body = SubmissionCreated), (status = 200, body = SubmissionCreated, description = "Already submitted with this key"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No published form with this id"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "Not open, closed or full; an option chosen has no place left under its 選択肢ごとの定員 (type `…/problems/option-full`, `errors` naming each question); or the idempotency key was used for another request (another form, another token or other answers) or for an application deleted since"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "Answers refused, each field's error in `errors`"), CommonErrors))]
pub async fn submit(
    ctx: TenantCtx,
    client: ApiClient,
    ApiPath(form): ApiPath<String>,
    ApiJson(body): ApiJson<NewSubmission>,
) -> Result<Response, Problem> {
    client.require("submissions:submit")?;
    let mut db = ctx.db().await?;
    let f = store::published(ctx.id, &db, &form).await?;
    let raw = raw_answers(body.answers);
    // A retry is answered before anything else is checked: the first attempt may
    // have filled the form, or it may have closed since, and the client must still
    // learn that its application was stored.
    if let Some(earlier) = earlier_use(&ctx, &db, &client, &f, body.idempotency_key, &raw).await? {
        return Ok((StatusCode::OK, Json(earlier)).into_response());
    }
    if f.availability != Availability::Open {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "not-open",
            "Form not open",
            format!(
                "このフォームは受付中ではありません（{}）",
                availability(f.availability)
            ),
        ));
    }
    // Files are attached through the web form only: an answer naming one is refused.
    let sent_files: Vec<FieldProblem> = f
        .def
        .fields()
        .filter(|field| field.kind.is_file() && raw.get(&field.id).is_some_and(|v| !v.is_empty()))
        .map(|field| FieldProblem {
            field: field.id.clone(),
            input: field.id.clone(),
            message: format!("{}: 添付ファイルはAPIでは送信できません", field.label),
        })
        .collect();
    if !sent_files.is_empty() {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-answers",
            "Answers refused",
            "添付ファイルはAPIでは送信できません（Webのフォームから添付してください）",
        );
        p.errors = sent_files;
        return Err(p);
    }
    let answers = match check_all(&f.def, &raw) {
        Ok(a) => a,
        Err(errors) => {
            let mut p = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-answers",
                "Answers refused",
                "入力内容に誤りがあります",
            );
            p.errors = errors.into_iter().map(FieldProblem::from).collect();
            return Err(p);
        }
    };
    // The integration API sends no 本人確認: a system entering an application (one
    // checked at the counter, say) vouches for it itself.
    let stored = store_submission(
        &ctx,
        &mut db,
        &f,
        &answers,
        body.idempotency_key,
        None,
        &client.actor,
        None,
        None,
    )
    .await?;
    match stored {
        Stored::Accepted { id, receipt } => {
            ctx.mail_queued();
            Ok((
                StatusCode::CREATED,
                Json(SubmissionCreated {
                    id,
                    receipt_number: receipt,
                    created: true,
                }),
            )
                .into_response())
        }
        // The same key stored by a request running at the same time: answered as a
        // retry only if it is one.
        Stored::Existing { .. } => {
            match earlier_use(&ctx, &db, &client, &f, body.idempotency_key, &raw).await? {
                Some(earlier) => Ok((StatusCode::OK, Json(earlier)).into_response()),
                None => Err(AppError::Internal(anyhow::anyhow!(
                    "idempotency key stored, then not found"
                ))
                .into()),
            }
        }
        Stored::Full => Err(Problem::new(
            StatusCode::CONFLICT,
            "full",
            "Form full",
            "定員に達しました",
        )),
        Stored::OptionsFull(full) => {
            let mut p = Problem::new(
                StatusCode::CONFLICT,
                "option-full",
                "Option full",
                "選んだ選択肢の定員に達しました",
            );
            p.errors = crate::tenant::forms::places::errors(full)
                .into_iter()
                .map(FieldProblem::from)
                .collect();
            Err(p)
        }
    }
}

/// The request's answers as the web form's inputs: strings, a list for several.
fn raw_answers(answers: BTreeMap<String, serde_json::Value>) -> Raw {
    let mut raw = Raw::new();
    for (k, v) in answers {
        let values = match v {
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect(),
            serde_json::Value::String(s) => vec![s],
            serde_json::Value::Null => Vec::new(),
            other => vec![other.to_string()],
        };
        raw.insert(k, values);
    }
    raw
}

/// A submission by its idempotency key, with who made it (its history's first row),
/// and who made an application stored with the key and deleted since: one row always,
/// the submission's columns null when there is none.
pub(crate) const BY_KEY_SQL: &str = "SELECT s.id, s.receipt_number, s.form_id, s.form_version, s.answers,
        (SELECT e.actor_label FROM submission_events e WHERE e.submission_id = s.id ORDER BY e.id LIMIT 1),
        (SELECT d.made_by FROM submission_deletions d WHERE d.idempotency_key = k.key LIMIT 1)
   FROM (SELECT $1::uuid AS key) k LEFT JOIN submissions s ON s.idempotency_key = k.key";

/// What an idempotency key used before comes to: `None` if it was not; the stored
/// application if this request is a retry of the one that stored it (same form, same
/// token, same answers); else 409. A key is the client's own, so another token
/// (another system of the city, perhaps with fewer rights) that happens to use it
/// learns nothing of the application it names, and a key reused for other answers is
/// refused rather than answered with an application that is not this one.
async fn earlier_use(
    ctx: &TenantCtx,
    db: &deadpool_postgres::ClientWrapper,
    client: &ApiClient,
    form: &store::Published,
    key: Uuid,
    raw: &Raw,
) -> Result<Option<SubmissionCreated>, Problem> {
    let stmt = db
        .prepare_cached(BY_KEY_SQL)
        .await
        .map_err(AppError::from)?;
    let r = db.query_one(&stmt, &[&key]).await.map_err(AppError::from)?;
    let this_token = format!("api:{}:", client.id);
    let Some(id) = r.get::<_, Option<Uuid>>(0) else {
        // Its application, stored by this token, was deleted since (申請の削除,
        // 保存期間): a retry is not made a second application. Another token learns
        // nothing of it (the key is free for it).
        if r.get::<_, Option<String>>(6)
            .is_some_and(|by| by.starts_with(&this_token))
        {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "idempotency-key-deleted",
                "Idempotency key of a deleted application",
                "この冪等キー（idempotency_key）の申請は、受け付けた後に削除されています。新しい申請には新しいキーを使ってください。",
            ));
        }
        return Ok(None);
    };
    let reused = |detail: &str| {
        Problem::new(
            StatusCode::CONFLICT,
            "idempotency-key-reused",
            "Idempotency key used for another request",
            format!("この冪等キー（idempotency_key）は{detail}に使われています。申請ごとに新しいキーを使ってください。"),
        )
    };
    let made_by: Option<String> = r.get(5);
    if !made_by.is_some_and(|by| by.starts_with(&this_token)) {
        return Err(reused("別の連携（APIトークン）または別の経路の申請"));
    }
    if r.get::<_, i64>(2) != form.id {
        return Err(reused("別のフォームへの申請"));
    }
    // Answers are compared when the form is still at the version they were stored
    // against; after a new version they may check differently, and the retry is
    // answered as such.
    if r.get::<_, i32>(3) == form.version {
        let stored = decrypt_answers(ctx.cipher(), id, &r.get::<_, serde_json::Value>(4))?;
        if check_all(&form.def, raw).ok().as_ref() != Some(&stored) {
            return Err(reused("別の内容の申請"));
        }
    }
    Ok(Some(SubmissionCreated {
        id,
        receipt_number: r.get(1),
        created: false,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// received, reviewing, completed, rejected, returned or withdrawn.
    pub status: Option<String>,
    /// Only submissions changed at or after this time (RFC 3339).
    pub updated_since: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1–500, default 100.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubmissionOut {
    pub id: Uuid,
    pub receipt_number: String,
    pub form: String,
    pub form_version: i32,
    pub status: String,
    #[schema(value_type = String, format = DateTime)]
    pub submitted_at: String,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: String,
    /// Field id → { label, value, answer }; only when one submission is fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub answers: Option<BTreeMap<String, serde_json::Value>>,
    /// 本人確認: who the municipality's identity provider vouched for, when the form
    /// asked for it; only when one submission is fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityOut>,
    /// 代理入力: entered by staff for an application received at the counter, by
    /// telephone or by post; absent when it was sent online (or by the API). Only
    /// when one submission is fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entered: Option<EnteredOut>,
}

/// How an application entered by staff (代理入力) came.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnteredOut {
    /// `counter` (窓口), `phone`, `post` (郵送), `fax` or `other`.
    pub channel: String,
    #[schema(value_type = String, format = DateTime)]
    pub entered_at: String,
    /// The kind of identity document staff saw, for a form that asks for 本人確認:
    /// `my_number_card`, `drivers_license`, `passport`, `residence_card`,
    /// `two_documents`, `copy_by_post` or `other`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_document: Option<String>,
    /// Entered outside the form's 受付期間, as received in time.
    pub outside_period: bool,
}

/// An identity the municipality's identity provider vouched for (claims as it sent
/// them; absent ones left out).
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityOut {
    #[schema(value_type = String, format = DateTime)]
    pub verified_at: String,
    /// The provider's issuer URL.
    pub issuer: String,
    /// The provider's identifier for the person (`sub`).
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// フリガナ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_kana: Option<String>,
    /// YYYY-MM-DD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birthdate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubmissionPage {
    pub items: Vec<SubmissionOut>,
    /// Pass as `cursor` for the next page; `null` on the last page (then ask again
    /// later with `updated_since`/`since` set to the last item's time).
    pub next_cursor: Option<String>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn row_out(r: &tokio_postgres::Row) -> SubmissionOut {
    SubmissionOut {
        id: r.get(0),
        receipt_number: r.get(1),
        form: r.get(2),
        form_version: r.get(3),
        status: r.get(4),
        submitted_at: rfc3339(r.get(5)),
        updated_at: rfc3339(r.get(6)),
        answers: None,
        identity: None,
        entered: None,
    }
}

/// Submissions in the order they last changed, a page at a time. A transaction
/// still open elsewhere (which may yet change one) holds back the changes after its
/// start until it ends, so paging (or polling with `updated_since`) never passes a
/// change that is still to come; such a wait is usually milliseconds (at most
/// while one mail is being sent).
#[utoipa::path(get, path = "/api/v1/submissions", tag = "submissions", security(("bearer" = [])), params(ListParams),
    responses((status = 200, body = SubmissionPage), CommonErrors))]
pub async fn list_submissions(
    ctx: TenantCtx,
    client: ApiClient,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<SubmissionPage>, Problem> {
    client.require("submissions:read")?;
    let bad = bad_parameter;
    let status = match p.status.as_deref() {
        Some(s) => Some(
            Status::parse(s)
                .ok_or_else(|| bad("status が正しくありません"))?
                .as_str(),
        ),
        None => None,
    };
    let since = match p.updated_since.as_deref() {
        Some(s) => Some(
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|_| bad("updated_since は RFC 3339 の日時で指定してください"))?,
        ),
        None => None,
    };
    let cursor = p
        .cursor
        .as_deref()
        .map(|c| decode_cursor(c).ok_or_else(|| bad("cursor が正しくありません")))
        .transpose()?;
    let limit = p.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX);
    let (c_at, c_id) = (cursor.map(|c| c.0), cursor.map(|c| c.1));
    let db = ctx.db().await?;
    let rows = db
        .query(
            "SELECT s.id, s.receipt_number, f.public_id, s.form_version, s.status, s.submitted_at, s.updated_at
               FROM submissions s JOIN forms f ON f.id = s.form_id
              WHERE ($1::text IS NULL OR s.status = $1) AND ($2::timestamptz IS NULL OR s.updated_at >= $2)
                AND ($3::timestamptz IS NULL OR (s.updated_at, s.id) > ($3, $4::uuid))
                -- Only changes older than every transaction still open: one that
                -- commits later stamps its rows with its own start, so a row behind a
                -- cursor already handed out could otherwise appear after it. Any
                -- transaction, not only those that wrote already: one that reads
                -- first has no transaction id until it writes. Sessions of other roles
                -- (the operator's pg_dump) show no start to this role and hold no row
                -- back.
                AND s.updated_at < (SELECT coalesce(min(xact_start), 'infinity') FROM pg_stat_activity
                                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                                       AND backend_type = 'client backend' AND xact_start IS NOT NULL)
              ORDER BY s.updated_at, s.id LIMIT $5",
            &[&status, &since, &c_at, &c_id, &(limit + 1)],
        )
        .await
        .map_err(AppError::from)?;
    let mut items: Vec<SubmissionOut> = rows.iter().map(row_out).collect();
    let more = items.len() as i64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(100));
    let next_cursor = if more {
        rows.get(items.len().saturating_sub(1))
            .map(|r| encode_cursor(r.get(6), r.get(0)))
    } else {
        None
    };
    Ok(Json(SubmissionPage { items, next_cursor }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeletionParams {
    /// Only deletions at or after this time (RFC 3339).
    pub since: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1–500, default 100.
    pub limit: Option<i64>,
}

/// A deleted application: nothing of its content is left, only what identifies it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletionOut {
    pub id: Uuid,
    pub receipt_number: String,
    /// The form's public id (empty if the form is gone too).
    pub form: String,
    #[schema(value_type = String, format = DateTime)]
    pub deleted_at: String,
    /// `staff` (deleted by a 管理者 or 所属管理者) or `retention` (its form's 保存期間 ran).
    pub cause: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletionPage {
    pub items: Vec<DeletionOut>,
    /// Pass as `cursor` for the next page; `null` on the last page (then ask again
    /// later with `updated_since`/`since` set to the last item's time).
    pub next_cursor: Option<String>,
}

/// Applications deleted (申請の削除, 保存期間), oldest first, a page at a time, so a
/// connected system deletes its own copies; kept as long as the operation log. As
/// with `/api/v1/submissions`, a deletion still being made holds back the ones
/// after it.
#[utoipa::path(get, path = "/api/v1/deletions", tag = "submissions", security(("bearer" = [])), params(DeletionParams),
    responses((status = 200, body = DeletionPage), CommonErrors))]
pub async fn list_deletions(
    ctx: TenantCtx,
    client: ApiClient,
    ApiQuery(p): ApiQuery<DeletionParams>,
) -> Result<Json<DeletionPage>, Problem> {
    client.require("submissions:read")?;
    let bad = bad_parameter;
    let since = p
        .since
        .as_deref()
        .map(|s| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|_| bad("since は RFC 3339 の日時で指定してください"))
        })
        .transpose()?;
    let cursor = p
        .cursor
        .as_deref()
        .map(|c| decode_cursor(c).ok_or_else(|| bad("cursor が正しくありません")))
        .transpose()?;
    let limit = p.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX);
    let (c_at, c_id) = (cursor.map(|c| c.0), cursor.map(|c| c.1));
    let db = ctx.db().await?;
    let rows = db
        .query(
            "SELECT d.submission_id, d.receipt_number, coalesce(f.public_id, ''), d.deleted_at, d.cause
               FROM submission_deletions d LEFT JOIN forms f ON f.id = d.form_id
              WHERE ($1::timestamptz IS NULL OR d.deleted_at >= $1)
                AND ($2::timestamptz IS NULL OR (d.deleted_at, d.submission_id) > ($2, $3::uuid))
                -- As for submissions: nothing stamped after a transaction still
                -- open began, which may yet commit rows stamped before them.
                AND d.deleted_at < (SELECT coalesce(min(xact_start), 'infinity') FROM pg_stat_activity
                                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                                       AND backend_type = 'client backend' AND xact_start IS NOT NULL)
              ORDER BY d.deleted_at, d.submission_id LIMIT $4",
            &[&since, &c_at, &c_id, &(limit + 1)],
        )
        .await
        .map_err(AppError::from)?;
    let more = rows.len() as i64 > limit;
    let shown = &rows[..rows.len().min(usize::try_from(limit).unwrap_or(100))];
    let items = shown
        .iter()
        .map(|r| DeletionOut {
            id: r.get(0),
            receipt_number: r.get(1),
            form: r.get(2),
            deleted_at: rfc3339(r.get(3)),
            cause: r.get(4),
        })
        .collect();
    let next_cursor = if more {
        shown.last().map(|r| encode_cursor(r.get(3), r.get(0)))
    } else {
        None
    };
    Ok(Json(DeletionPage { items, next_cursor }))
}

/// 400 for a parameter that does not read (its message in Japanese, naming it).
fn bad_parameter(m: &str) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "bad-parameter",
        "Bad parameter",
        m.to_owned(),
    )
}

/// A page's end: `micros_uuid`, base64url.
fn encode_cursor(at: OffsetDateTime, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}_{id}", at.unix_timestamp_nanos() / 1000))
}

fn decode_cursor(c: &str) -> Option<(OffsetDateTime, Uuid)> {
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())?;
    let (t, id) = text.split_once('_')?;
    Some((crate::tenant::cases::cursor_time(t)?, id.parse().ok()?))
}

/// One submission with its answers (labels of the version it was made against).
#[utoipa::path(get, path = "/api/v1/submissions/{id}", tag = "submissions", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = SubmissionOut),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No submission with this id"), CommonErrors))]
pub async fn get_submission(
    ctx: TenantCtx,
    client: ApiClient,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<SubmissionOut>, Problem> {
    client.require("submissions:read")?;
    let mut db = ctx.db().await?;
    let r = db
        .query_opt(
            "SELECT s.id, s.receipt_number, f.public_id, s.form_version, s.status, s.submitted_at, s.updated_at, s.answers, s.form_id
               FROM submissions s JOIN forms f ON f.id = s.form_id WHERE s.id = $1",
            &[&id],
        )
        .await
        .map_err(AppError::from)?
        .ok_or(AppError::NotFound)?;
    let mut out = row_out(&r);
    let def = store::version(&db, r.get(8), out.form_version).await?;
    let answers = decrypt_answers(ctx.cipher(), id, &r.get(7))?;
    let infected = attachments::infected_files(&**db, id).await?;
    let mut map = BTreeMap::new();
    for f in def.fields() {
        if let Some(a) = answers.get(&f.id) {
            let mut item =
                serde_json::json!({ "label": f.label, "value": a.display(), "answer": a });
            if let Answer::File(file) = a {
                // Found infected since it was stored: not handed out, the signature said.
                match infected.get(&file.id) {
                    Some(signature) => item["withheld"] = signature.as_str().into(),
                    None => {
                        item["download"] =
                            format!("/api/v1/submissions/{id}/files/{}", file.id).into()
                    }
                }
            }
            map.insert(f.id.clone(), item);
        }
    }
    out.answers = Some(map);
    out.identity = crate::tenant::identity::of_submission(&ctx, &**db, id)
        .await?
        .map(|v| IdentityOut {
            verified_at: rfc3339(v.at),
            issuer: v.issuer,
            subject: v.who.subject,
            name: v.who.name,
            name_kana: v.who.name_kana,
            birthdate: v.who.birthdate,
            gender: v.who.gender,
            address: v.who.address,
        });
    out.entered = crate::tenant::forms::proxy::of_submission(&**db, id)
        .await?
        .map(|k| EnteredOut {
            channel: k.channel.as_str().to_owned(),
            entered_at: rfc3339(k.at),
            identity_document: k.document.map(|d| d.as_str().to_owned()),
            outside_period: k.outside_period,
        });
    audit::record(
        &mut db,
        &client.actor,
        "submission.view",
        &id.to_string(),
        serde_json::json!({}),
    )
    .await?;
    Ok(Json(out))
}

/// A file's content (a type for the OpenAPI document only).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct FileBytes(#[allow(dead_code)] Vec<u8>);

/// A file attached to a submission (添付ファイル): its content as the applicant sent
/// it, with its kind's media type and its name in `Content-Disposition`. The
/// answer's `sha256` is the content's.
#[utoipa::path(get, path = "/api/v1/submissions/{id}/files/{file}", tag = "submissions", security(("bearer" = [])),
    params(("id" = Uuid, Path), ("file" = Uuid, Path, description = "The file's id, as its answer names it")),
    responses((status = 200, description = "The file, of its kind's media type", content(
            (FileBytes = "application/pdf"), (FileBytes = "image/jpeg"), (FileBytes = "image/png"))),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No such submission, or no such file in it"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "The file was found infected after it was stored (ウイルスチェック) and is not handed out; `detail` names the signature"), CommonErrors))]
pub async fn get_attachment(
    ctx: TenantCtx,
    client: ApiClient,
    ApiPath((id, file)): ApiPath<(Uuid, Uuid)>,
) -> Result<Response, Problem> {
    client.require("submissions:read")?;
    let mut db = ctx.db().await?;
    Ok(attachments::serve(ctx.cipher(), &mut db, &client.actor, id, file).await?)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct StatusChange {
    /// reviewing, completed, rejected, returned or withdrawn.
    pub to: String,
    /// The status the caller saw; the change is refused (409) if it differs now.
    pub from: Option<String>,
    #[serde(default)]
    pub comment: String,
    /// For `returned`: shown to the applicant.
    #[serde(default)]
    pub reason: String,
    /// For `returned`: YYYY-MM-DD.
    pub deadline: Option<String>,
    /// Mail the applicant a notice of the new status, when they gave an address
    /// (`returned` always mails its reason).
    #[serde(default)]
    pub notify: bool,
}

/// Changes a submission's status within the workflow.
#[utoipa::path(post, path = "/api/v1/submissions/{id}/status", tag = "submissions", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = StatusChange,
    responses((status = 200, body = SubmissionOut),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No submission with this id"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "Not allowed by the workflow, or changed meanwhile"), CommonErrors))]
pub async fn set_status(
    ctx: TenantCtx,
    client: ApiClient,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<StatusChange>,
) -> Result<Json<SubmissionOut>, Problem> {
    client.require("submissions:write")?;
    let bad = bad_parameter;
    let to = Status::parse(&body.to).ok_or_else(|| bad("to が正しくありません"))?;
    let expected = match body.from.as_deref() {
        Some(s) => Some(Status::parse(s).ok_or_else(|| bad("from が正しくありません"))?),
        None => None,
    };
    let deadline = match body.deadline.as_deref() {
        Some(d) => Some(
            time::Date::parse(
                d,
                &time::macros::format_description!("[year]-[month]-[day]"),
            )
            .map_err(|_| bad("deadline は YYYY-MM-DD で指定してください"))?,
        ),
        None => None,
    };
    let mut db = ctx.db().await?;
    let change = Change {
        to,
        comment: body.comment,
        reason: body.reason,
        deadline,
        notify: body.notify,
    };
    if let Err(refusal) = change_status(
        &mut db,
        ctx.cipher(),
        &client.actor,
        None,
        id,
        expected,
        &change,
    )
    .await?
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "workflow",
            "Change refused",
            refusal.message(),
        ));
    }
    if change.mails() {
        ctx.mail_queued();
    }
    let r = db
        .query_one(
            "SELECT s.id, s.receipt_number, f.public_id, s.form_version, s.status, s.submitted_at, s.updated_at
               FROM submissions s JOIN forms f ON f.id = s.form_id WHERE s.id = $1",
            &[&id],
        )
        .await
        .map_err(AppError::from)?;
    Ok(Json(row_out(&r)))
}

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("Madoguchi API token")
                    .build(),
            ),
        );
    }
}

/// The interface specification.
#[derive(OpenApi)]
#[openapi(
    info(title = "Madoguchi integration API", version = "1",
        description = "各自治体のホスト名で提供する連携API。トークンは自治体ごとに発行され、他の自治体では使えません。/ Per-municipality API; tokens are valid on their own municipality's host only."),
    paths(list_forms, get_form, submit, list_submissions, get_submission, get_attachment, set_status, list_deletions),
    components(schemas(Problem, FieldProblem, FormSummary, NewSubmission, SubmissionCreated, SubmissionOut, IdentityOut, EnteredOut, SubmissionPage, StatusChange, DeletionOut, DeletionPage)),
    modifiers(&SecurityAddon),
    tags((name = "forms"), (name = "submissions"))
)]
pub struct ApiDoc;

pub async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        ApiDoc::openapi().to_pretty_json().unwrap_or_default(),
    )
        .into_response()
}

pub fn router() -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/forms", get(list_forms))
        .route("/api/v1/forms/{form}", get(get_form))
        .route("/api/v1/forms/{form}/submissions", post(submit))
        .route("/api/v1/submissions", get(list_submissions))
        .route("/api/v1/submissions/{id}", get(get_submission))
        .route("/api/v1/submissions/{id}/status", post(set_status))
        .route("/api/v1/submissions/{id}/files/{file}", get(get_attachment))
        .route("/api/v1/deletions", get(list_deletions))
}

/// An address under `/api/` that names nothing: a problem document like every other
/// answer of the API, not the citizens' HTML page (the municipality's router, which
/// merges this one, has the one fallback for both).
pub fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        "見つかりません",
    )
}
