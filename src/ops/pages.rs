//! The console's pages and actions.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use uuid::Uuid;

use super::{jst, Operator, OpsState};
use crate::catalog::TenantState;
use crate::control::backup::{self, DirStore};
use crate::control::certificate::{self as cert, Certificate, Request};
use crate::control::erase::{self, EraseArgs};
use crate::control::oplog;
use crate::control::provision::{provision as provision_tenant, TenantSpec};
use crate::error::AppError;
use crate::tenant::http::{see_other, FormData};
use crate::web::render;

/// The header menu.
pub struct Nav {
    pub id: String,
    pub name: String,
    pub role: String,
    pub is_operator: bool,
    pub csrf: String,
}

impl Nav {
    fn of(op: &Operator) -> Option<Nav> {
        Some(Nav {
            id: op.id.clone(),
            name: op.name.clone(),
            role: if op.is_operator() {
                "運用者 / operator".into()
            } else {
                "監査人 / auditor".into()
            },
            is_operator: op.is_operator(),
            csrf: op.csrf.clone(),
        })
    }
}

#[derive(Template)]
#[template(path = "ops/login.html")]
struct LoginPage {
    nav: Option<Nav>,
    id: String,
    error: Option<String>,
}

pub fn login_page(id: &str, error: Option<&str>) -> Response {
    render(
        if error.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        },
        &LoginPage {
            nav: None,
            id: id.to_owned(),
            error: error.map(str::to_owned),
        },
    )
}

pub async fn login_form() -> Response {
    login_page("", None)
}

#[derive(Template)]
#[template(path = "ops/notice.html")]
struct NoticePage {
    nav: Option<Nav>,
    title: String,
    lines: Vec<String>,
    ok: bool,
    back: String,
}

fn notice(op: &Operator, ok: bool, title: &str, lines: Vec<String>, back: &str) -> Response {
    render(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        },
        &NoticePage {
            nav: Nav::of(op),
            title: title.to_owned(),
            lines,
            ok,
            back: back.to_owned(),
        },
    )
}

/// One tenant's row on the overview.
pub struct TenantRow {
    pub slug: String,
    pub name: String,
    pub code: String,
    pub hosts: String,
    pub state: String,
    pub state_label: &'static str,
    pub db_size: String,
    pub schema: i32,
    pub backup_age: String,
    pub backup_stale: bool,
    pub drill: String,
    pub drill_failed: bool,
    pub rps: String,
    pub errors: String,
    pub p99: String,
    pub pool: String,
    pub requested_by: Option<String>,
}

fn state_label(s: TenantState) -> &'static str {
    match s {
        TenantState::Provisioning => "準備中",
        TenantState::Active => "稼働中",
        TenantState::Suspended => "停止中",
        TenantState::Decommissioning => "廃止手続中",
        TenantState::Erased => "消去済み",
    }
}

fn bytes(n: i64) -> String {
    let n = n as f64;
    if n >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", n / 1024.0 / 1024.0 / 1024.0)
    } else if n >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / 1024.0 / 1024.0)
    } else {
        format!("{:.0} KiB", n / 1024.0)
    }
}

fn age(secs: i64) -> String {
    match secs {
        s if s < 3600 => format!("{} 分前", s / 60),
        s if s < 86400 * 2 => format!("{} 時間前", s / 3600),
        s => format!("{} 日前", s / 86400),
    }
}

#[derive(Template)]
#[template(path = "ops/home.html")]
struct HomePage {
    nav: Option<Nav>,
    rows: Vec<TenantRow>,
    budget_in_use: usize,
    budget: usize,
    pending: Vec<(String, String, String)>,
}

pub async fn home(State(s): State<OpsState>, op: Operator) -> Result<Response, AppError> {
    if !op.is_operator() {
        return Ok(see_other("/certificates"));
    }
    let p = &s.platform;
    let tenants = p.catalog.list_tenants().await?;
    let figures = p.catalog.control_figures().await?;
    let backups: HashMap<String, i64> = figures.backups.into_iter().collect();
    let drills: HashMap<String, (bool, f64)> = figures
        .drills
        .into_iter()
        .map(|(slug, ok, secs)| (slug, (ok, secs)))
        .collect();
    let sizes: HashMap<String, i64> = figures.database_sizes.into_iter().collect();
    let pools: HashMap<String, (usize, usize)> = s
        .app
        .pools
        .stats()
        .into_iter()
        .map(|st| (st.slug.to_string(), (st.size - st.idle, st.idle)))
        .collect();
    let c = p.catalog.client().await?;
    let requested: HashMap<String, String> = c
        .query(
            "SELECT t.slug, d.requested_by FROM decommissions d JOIN tenants t ON t.id = d.tenant_id WHERE d.state = 'requested'",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let rows = tenants
        .into_iter()
        .map(|t| {
            let recent = s.app.metrics.recent.summary(&t.slug);
            let backup = backups.get(&t.slug).copied().filter(|&at| at > 0);
            let (pool_busy, pool_idle) = pools.get(&t.slug).copied().unwrap_or_default();
            TenantRow {
                state: t.state.to_string(),
                state_label: state_label(t.state),
                db_size: sizes.get(&t.slug).map(|&b| bytes(b)).unwrap_or_default(),
                schema: t.schema_version,
                backup_age: match backup {
                    Some(at) => age(now - at),
                    None if t.state.backed_up() => "なし".into(),
                    None => String::new(),
                },
                backup_stale: t.state.backed_up() && backup.is_none_or(|at| now - at > 26 * 3600),
                drill: match drills.get(&t.slug) {
                    Some((true, secs)) => format!("一致 ({secs:.1} s)"),
                    Some((false, _)) => "不一致".into(),
                    None => String::new(),
                },
                drill_failed: drills.get(&t.slug).is_some_and(|d| !d.0),
                rps: format!("{:.1}", recent.requests_per_sec),
                errors: format!("{:.1} %", recent.error_rate * 100.0),
                p99: recent
                    .p99
                    .map(|d| format!("≤ {} ms", d.as_millis()))
                    .unwrap_or_else(|| "—".into()),
                pool: format!("{pool_busy} / {pool_idle}"),
                requested_by: requested.get(&t.slug).cloned(),
                hosts: t.hosts.join(", "),
                slug: t.slug,
                name: t.name,
                code: t.code,
            }
        })
        .collect();
    let pending = erase::pending_certificates(p)
        .await?
        .into_iter()
        .map(|(id, slug, verifier)| (id.to_string(), slug, verifier))
        .collect();
    Ok(render(
        StatusCode::OK,
        &HomePage {
            nav: Nav::of(&op),
            rows,
            budget_in_use: s.app.pools.budget_in_use(),
            budget: s.app.pools.settings().budget,
            pending,
        },
    ))
}

pub async fn provision(
    State(s): State<OpsState>,
    op: Operator,
    form: FormData,
) -> Result<Response, AppError> {
    op.require_operator()?;
    op.check_csrf(&form)?;
    let spec = match TenantSpec::parse(
        form.get("slug").trim(),
        form.get("name").trim(),
        form.get("code").trim(),
        &[form.get("host").trim().to_owned()],
    ) {
        Ok(spec) => spec,
        Err(e) => {
            return Ok(notice(
                &op,
                false,
                "入力内容を確認してください",
                vec![e.to_string()],
                "/",
            ))
        }
    };
    match provision_tenant(&s.platform, &spec).await {
        Ok(rec) => {
            oplog::record(
                &s.platform.catalog,
                &op.id,
                "tenant.create",
                &rec.slug,
                serde_json::json!({ "code": rec.code, "hosts": rec.hosts }),
            )
            .await?;
            Ok(notice(
                &op,
                true,
                "テナントを作成しました / Tenant created",
                vec![format!(
                    "{} ({}) — {}",
                    rec.name,
                    rec.slug,
                    rec.hosts.join(", ")
                )],
                "/",
            ))
        }
        Err(e) => Ok(notice(
            &op,
            false,
            "作成できませんでした / Not created",
            vec![format!("{e:#}")],
            "/",
        )),
    }
}

/// suspend, resume, backup, drill, decommission (prepare), erase.
pub async fn tenant_action(
    State(s): State<OpsState>,
    op: Operator,
    Path((slug, action)): Path<(String, String)>,
    form: FormData,
) -> Result<Response, AppError> {
    op.require_operator()?;
    op.check_csrf(&form)?;
    let p = &s.platform;
    let rec = p
        .catalog
        .tenant_by_slug(&slug)
        .await?
        .ok_or(AppError::NotFound)?;
    let store = DirStore::new(&p.settings.state_dir);
    let result: anyhow::Result<(String, Vec<String>)> = match action.as_str() {
        "suspend" | "resume" => {
            let (want, allowed) = if action == "suspend" {
                (TenantState::Suspended, rec.state == TenantState::Active)
            } else {
                (TenantState::Active, rec.state == TenantState::Suspended)
            };
            let from = if want == TenantState::Suspended {
                TenantState::Active
            } else {
                TenantState::Suspended
            };
            // A refusal (e.g. a data-key rotation cut short) is shown, not a 500.
            let moved = if allowed {
                crate::control::tenant_admin::move_state(p, &rec, &[from], want).await
            } else {
                Ok(false)
            };
            match moved {
                Ok(true) => Ok((
                    format!("{slug}: {}", state_label(want)),
                    vec![format!("{} は{}です", rec.name, state_label(want))],
                )),
                Ok(false) => Err(anyhow::anyhow!(
                    "{} は{}のため、この操作はできません",
                    rec.name,
                    state_label(rec.state)
                )),
                Err(e) => Err(e),
            }
        }
        "backup" => backup::run(p, &store, &rec).await.map(|m| {
            (
                "バックアップしました / Backed up".to_owned(),
                vec![
                    format!("{} ({} bytes)", m.file, m.size),
                    format!("SHA-256 {}", m.sha256),
                ],
            )
        }),
        "drill" => backup::drill(p, &store, &rec).await.map(|r| {
            let mut lines = vec![format!(
                "{} ({:.1} s)",
                if r.ok {
                    "一致 / match"
                } else {
                    "不一致 / MISMATCH"
                },
                r.seconds
            )];
            lines.extend(r.tables.iter().map(|t| {
                format!(
                    "{}: {} → {} 行 {}",
                    t.table,
                    t.source_rows,
                    t.restored_rows,
                    if t.same { "一致" } else { "不一致" }
                )
            }));
            ("リストア訓練 / Restore drill".to_owned(), lines)
        }),
        "decommission" => {
            match erase::prepare_decommission(
                p,
                &slug,
                &op.id,
                form.get("reason").trim(),
                form.get("final_export") == "yes",
            )
            .await
            {
                Ok(request) => {
                    let id = Uuid::new_v4();
                    let body =
                        String::from_utf8(cert::canonical(&request).map_err(AppError::Internal)?)
                            .map_err(|e| AppError::Internal(e.into()))?;
                    p.catalog
                        .client()
                        .await?
                        .execute(
                            "INSERT INTO pending_signatures (id, kind, tenant_id, operator_id, body) VALUES ($1, 'decommission_request', $2, $3, $4)",
                            &[&id, &rec.id, &op.id, &body],
                        )
                        .await?;
                    return Ok(see_other(&format!("/sign/{id}")));
                }
                Err(e) => Err(e),
            }
        }
        "erase" => {
            if form.get("confirm").trim() != slug {
                Err(anyhow::anyhow!(
                    "確認のため、テナントのスラッグ「{slug}」を正確に入力してください"
                ))
            } else {
                match erase::execute(
                    p,
                    &store,
                    &EraseArgs {
                        slug: &slug,
                        verifier: &op.id,
                        allow_shared_keys: false,
                    },
                    &erase::Quiet,
                )
                .await
                {
                    Ok(c) => return Ok(see_other(&format!("/sign/{}", c.id))),
                    Err(e) => Err(e),
                }
            }
        }
        _ => return Err(AppError::NotFound),
    };
    match result {
        Ok((title, lines)) => {
            oplog::record(
                &p.catalog,
                &op.id,
                &format!("tenant.{action}"),
                &slug,
                serde_json::json!({}),
            )
            .await?;
            Ok(notice(&op, true, &title, lines, "/"))
        }
        Err(e) => Ok(notice(
            &op,
            false,
            "実行できませんでした / Not done",
            vec![format!("{e:#}")],
            "/",
        )),
    }
}

pub async fn decommission_submit(
    state: State<OpsState>,
    op: Operator,
    Path(slug): Path<String>,
    form: FormData,
) -> Result<Response, AppError> {
    tenant_action(state, op, Path((slug, "decommission".to_owned())), form).await
}

#[derive(Template)]
#[template(path = "ops/decommission.html")]
struct DecommissionPage {
    nav: Option<Nav>,
    slug: String,
    name: String,
    code: String,
    csrf: String,
}

pub async fn decommission_form(
    State(s): State<OpsState>,
    op: Operator,
    Path(slug): Path<String>,
) -> Result<Response, AppError> {
    op.require_operator()?;
    let rec = s
        .platform
        .catalog
        .tenant_by_slug(&slug)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(render(
        StatusCode::OK,
        &DecommissionPage {
            nav: Nav::of(&op),
            slug: rec.slug,
            name: rec.name,
            code: rec.code,
            csrf: op.csrf.clone(),
        },
    ))
}

/// A document waiting for the signed-in operator's signature.
enum Pending {
    Request(Box<Request>),
    Certificate(Box<Certificate>),
}

async fn pending(s: &OpsState, op: &Operator, id: Uuid) -> Result<Pending, AppError> {
    let row = s
        .platform
        .catalog
        .client()
        .await?
        .query_opt(
            "SELECT kind, body, operator_id, created_at > now() - interval '30 minutes' FROM pending_signatures WHERE id = $1",
            &[&id],
        )
        .await?
        .ok_or(AppError::NotFound)?;
    let (kind, body, who, fresh): (String, String, String, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if who != op.id {
        return Err(AppError::Forbidden);
    }
    match kind.as_str() {
        "decommission_request" if fresh => Ok(Pending::Request(
            serde_json::from_str(&body).map_err(|e| AppError::Internal(e.into()))?,
        )),
        "decommission_request" => Err(AppError::BadRequest(
            "この依頼は30分を過ぎたため無効です。もう一度やり直してください。".into(),
        )),
        _ => Ok(Pending::Certificate(
            serde_json::from_str(&body).map_err(|e| AppError::Internal(e.into()))?,
        )),
    }
}

#[derive(Template)]
#[template(path = "ops/sign.html")]
struct SignPage {
    nav: Option<Nav>,
    id: String,
    kind: &'static str,
    heading: String,
    summary: Vec<(String, String)>,
    message_b64: String,
    csrf: String,
    operator: String,
    error: Option<String>,
}

fn sign_page(
    op: &Operator,
    id: Uuid,
    doc: &Pending,
    error: Option<String>,
) -> Result<Response, AppError> {
    let (kind, heading, summary, msg) = match doc {
        Pending::Request(r) => (
            "request",
            format!(
                "廃止依頼への署名 / Sign the decommissioning request: {}",
                r.tenant.name
            ),
            vec![
                (
                    "団体 / Municipality".to_owned(),
                    format!("{} ({})", r.tenant.name, r.tenant.local_gov_code),
                ),
                (
                    "データベース / Database".to_owned(),
                    r.tenant.database.clone(),
                ),
                ("理由 / Reason".to_owned(), r.reason.clone()),
                (
                    "最終エクスポート / Final export".to_owned(),
                    r.final_export.as_ref().map_or("なし / none".into(), |e| {
                        format!("{} ({} files)", e.directory, e.files.len())
                    }),
                ),
            ],
            cert::request_message(r).map_err(AppError::Internal)?,
        ),
        Pending::Certificate(c) => (
            "certificate",
            format!(
                "消去証明書への署名 / Sign the erasure certificate: {}",
                c.organization.name
            ),
            {
                let mut v = vec![
                    (
                        "団体 / Municipality".to_owned(),
                        format!(
                            "{} ({})",
                            c.organization.name, c.organization.local_gov_code
                        ),
                    ),
                    (
                        "依頼者 / Requested by".to_owned(),
                        format!("{} {}", c.sanitized_by.operator_id, c.sanitized_by.name),
                    ),
                    (
                        "期間 / Period".to_owned(),
                        format!("{} – {}", c.started_at, c.finished_at),
                    ),
                ];
                v.extend(
                    c.steps
                        .iter()
                        .map(|st| (st.step.clone(), st.detail.clone())),
                );
                v.extend(c.verification.results.iter().map(|r| {
                    (
                        format!("検証 {}", r.check),
                        format!("{} {}", if r.passed { "✔" } else { "✘ FAIL" }, r.detail),
                    )
                }));
                v
            },
            cert::certificate_message(c).map_err(AppError::Internal)?,
        ),
    };
    Ok(render(
        if error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
        &SignPage {
            nav: Nav::of(op),
            id: id.to_string(),
            kind,
            heading,
            summary,
            message_b64: B64.encode(msg),
            csrf: op.csrf.clone(),
            operator: op.id.clone(),
            error,
        },
    ))
}

pub async fn sign_form(
    State(s): State<OpsState>,
    op: Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    op.require_operator()?;
    let doc = pending(&s, &op, id).await?;
    sign_page(&op, id, &doc, None)
}

pub async fn sign(
    State(s): State<OpsState>,
    op: Operator,
    Path(id): Path<Uuid>,
    form: FormData,
) -> Result<Response, AppError> {
    op.require_operator()?;
    op.check_csrf(&form)?;
    let doc = pending(&s, &op, id).await?;
    let Ok(signature) = B64.decode(form.get("signature").trim()) else {
        return sign_page(
            &op,
            id,
            &doc,
            Some("署名がありません。鍵ファイルを選んで署名してください / No signature".into()),
        );
    };
    let p = &s.platform;
    match &doc {
        Pending::Request(request) => {
            if let Err(e) = erase::submit_decommission(p, request, &signature).await {
                return sign_page(&op, id, &doc, Some(format!("{e:#}")));
            }
            p.catalog
                .client()
                .await?
                .execute("DELETE FROM pending_signatures WHERE id = $1", &[&id])
                .await?;
            Ok(notice(
                &op,
                true,
                "廃止を依頼しました / Decommissioning requested",
                vec![
                    format!("{} は閉鎖されました。", request.tenant.name),
                    "消去は別のオペレーターが行います / Another operator carries out the erasure."
                        .into(),
                ],
                "/",
            ))
        }
        Pending::Certificate(_) => match erase::issue(p, id, &signature).await {
            Ok((file, _)) => Ok(see_other(&format!("/certificates/{}", file.certificate.id))),
            Err(e) => sign_page(&op, id, &doc, Some(format!("{e:#}"))),
        },
    }
}

#[derive(Template)]
#[template(path = "ops/certificates.html")]
struct CertificatesPage {
    nav: Option<Nav>,
    issued: Vec<erase::Issued>,
    pending: Vec<(String, String, String)>,
}

pub async fn certificates(State(s): State<OpsState>, op: Operator) -> Result<Response, AppError> {
    let issued = erase::issued(&s.platform).await?;
    let pending = erase::pending_certificates(&s.platform)
        .await?
        .into_iter()
        .map(|(id, slug, verifier)| (id.to_string(), slug, verifier))
        .collect();
    Ok(render(
        StatusCode::OK,
        &CertificatesPage {
            nav: Nav::of(&op),
            issued,
            pending,
        },
    ))
}

#[derive(Template)]
#[template(path = "ops/certificate.html")]
struct CertificatePage {
    nav: Option<Nav>,
    c: Certificate,
    tlog_index: u64,
    tree_size: u64,
}

impl CertificatePage {
    /// An RFC 3339 time of the certificate in Japan time with both calendars, to the
    /// second (a signed document's times are exact), or as written if it is not one.
    fn at(&self, s: &str) -> String {
        match time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
            Ok(t) => format!("{} JST", crate::ja::jst_seconds(t)),
            Err(_) => s.to_owned(),
        }
    }

    /// Every backup destroyed: the tenant's, then the catalog's that held its keys.
    fn backups(&self) -> Vec<(&'static str, &cert::BackupMedia)> {
        let m = &self.c.media;
        m.backups
            .iter()
            .map(|b| ("テナント / tenant", b))
            .chain(m.catalog_backups.iter().map(|b| ("カタログ / catalog", b)))
            .collect()
    }

    /// What a destroyed key was for, in words.
    fn purpose<'a>(&self, purpose: &'a str) -> &'a str {
        match purpose {
            "data" => "データ鍵 / data key",
            "db_password" => "データベース認証情報 / database credentials",
            other => other,
        }
    }
}

/// `/certificates/ID` shows one; `/certificates/ID.json[?since=N]` downloads it with a
/// current checkpoint (and a consistency proof from tree size N).
pub async fn certificate(
    State(s): State<OpsState>,
    op: Operator,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, AppError> {
    let (id, json) = match id.strip_suffix(".json") {
        Some(id) => (id, true),
        None => (id.as_str(), false),
    };
    let id: Uuid = id.parse().map_err(|_| AppError::NotFound)?;
    let since: Vec<u64> = form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "since")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    let file = erase::export_certificate(&s.platform, id, &since)
        .await
        .map_err(|_| AppError::NotFound)?;
    if json {
        oplog::record(
            &s.platform.catalog,
            &op.id,
            "certificate.download",
            &file.certificate.organization.slug,
            serde_json::json!({ "certificate": id }),
        )
        .await?;
        let body = serde_json::to_string_pretty(&file).map_err(|e| AppError::Internal(e.into()))?;
        let mut r = (StatusCode::OK, body).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"erasure-certificate-{id}.json\""
        )) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        return Ok(r);
    }
    Ok(render(
        StatusCode::OK,
        &CertificatePage {
            nav: Nav::of(&op),
            tlog_index: file.transparency.log_index,
            tree_size: file.transparency.tree_size,
            c: file.certificate,
        },
    ))
}

/// The current checkpoint of the erasure log (a signed note), for auditors to keep.
pub async fn checkpoint(State(s): State<OpsState>, _op: Operator) -> Result<Response, AppError> {
    let p = &s.platform;
    let leaves = p.catalog.tlog_leaves().await?;
    let log = crate::control::keys::log_signer(p).await?;
    let text = crate::crypto::note::checkpoint_text(
        log.name(),
        leaves.len() as u64,
        &crate::crypto::tlog::root(&leaves),
    );
    let note = log
        .sign_note(&text)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("{e}")))?;
    let mut r = (StatusCode::OK, note).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"checkpoint.txt\""),
    );
    Ok(r)
}

pub struct LogRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "ops/log.html")]
struct LogPage {
    nav: Option<Nav>,
    rows: Vec<LogRow>,
    chain: Result<i64, String>,
}

pub async fn log(State(s): State<OpsState>, op: Operator) -> Result<Response, AppError> {
    let rows = oplog::recent(&s.platform.catalog, 300)
        .await?
        .into_iter()
        .map(|e| LogRow {
            seq: e.seq,
            at: jst(e.at),
            actor: e.actor,
            action: e.action,
            target: e.target,
            detail: e.detail,
        })
        .collect();
    let chain = oplog::verify(&s.platform.catalog)
        .await
        .map_err(|e| format!("{e:#}"));
    Ok(render(
        StatusCode::OK,
        &LogPage {
            nav: Nav::of(&op),
            rows,
            chain,
        },
    ))
}
