//! The operation log on the admin screen: search, filter, page, export as CSV.
//! Administrators see every entry; every other member of staff their own (自分の操作ログ).

use askama::Template;
use axum::extract::RawQuery;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use crate::error::AppError;
use crate::tenant::admin::Nav;
use crate::tenant::http::date;
use crate::tenant::spreadsheet;
use crate::tenant::staff::StaffUser;
use crate::tenant::TenantCtx;
use crate::web::render;

const PAGE: i64 = 100;

/// Entries newest first ($1 action prefix pattern, $2 actor pattern, $3 and $4 the
/// time range, $5 before this number, $6 how many).
const ALL_SQL: &str = "SELECT seq, at, actor, action, target, detail FROM audit_log
  WHERE ($1::text IS NULL OR action LIKE $1) AND ($2::text IS NULL OR actor LIKE $2)
    AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::timestamptz IS NULL OR at < $4)
    AND ($5::bigint IS NULL OR seq < $5)
  ORDER BY seq DESC LIMIT $6";

/// One member of staff's entries ($2 their label, the rest as [`ALL_SQL`]), from the
/// index of staff's entries (V12).
pub const OWN_SQL: &str = "SELECT seq, at, actor, action, target, detail FROM audit_log
  WHERE actor = $2 AND actor LIKE 'staff:%' AND ($1::text IS NULL OR action LIKE $1)
    AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::timestamptz IS NULL OR at < $4)
    AND ($5::bigint IS NULL OR seq < $5)
  ORDER BY seq DESC LIMIT $6";

#[derive(Debug, Default)]
struct Filters {
    action: String,
    actor: String,
    from: Option<time::Date>,
    to: Option<time::Date>,
    before: Option<i64>,
    /// Only this actor's entries (a member of staff who is not an administrator:
    /// their own label, whatever `actor` asks).
    own: Option<String>,
}

impl Filters {
    /// The filters asked for, as `user` may use them.
    fn parse(q: Option<&str>, user: &StaffUser) -> Self {
        let mut f = Self {
            own: (!user.is_admin()).then(|| user.actor().label()),
            ..Self::default()
        };
        for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
            match &*k {
                "action" => f.action = v.trim().chars().take(100).collect(),
                "actor" if f.own.is_none() => f.actor = v.trim().chars().take(200).collect(),
                "from" => f.from = date(&v),
                "to" => f.to = date(&v),
                "before" => f.before = v.parse().ok(),
                _ => {}
            }
        }
        f
    }

    fn query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [("action", &self.action), ("actor", &self.actor)] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        if let Some(d) = self.from {
            q.append_pair("from", &d.to_string());
        }
        if let Some(d) = self.to {
            q.append_pair("to", &d.to_string());
        }
        q.finish()
    }
}

pub struct Entry {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

async fn entries(
    db: &tokio_postgres::Client,
    f: &Filters,
    limit: i64,
) -> Result<Vec<Entry>, AppError> {
    let jst = time::macros::offset!(+9);
    let from: Option<OffsetDateTime> = f.from.map(|d| d.midnight().assume_offset(jst));
    let to: Option<OffsetDateTime> =
        f.to.and_then(|d| d.next_day())
            .map(|d| d.midnight().assume_offset(jst));
    let action = if f.action.is_empty() {
        None
    } else {
        Some(format!("{}%", f.action.replace(['%', '_'], "")))
    };
    let (sql, actor) = match &f.own {
        Some(own) => (OWN_SQL, Some(own.clone())),
        None if f.actor.is_empty() => (ALL_SQL, None),
        None => (
            ALL_SQL,
            Some(format!("%{}%", f.actor.replace(['%', '_'], ""))),
        ),
    };
    let rows = db
        .query(sql, &[&action, &actor, &from, &to, &f.before, &limit])
        .await?;
    Ok(rows
        .iter()
        .map(|r| Entry {
            seq: r.get(0),
            at: crate::ja::jst_seconds(r.get(1)),
            actor: r.get(2),
            action: r.get(3),
            target: r.get(4),
            detail: r.get(5),
        })
        .collect())
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    site: String,
    nav: Option<Nav>,
    entries: Vec<Entry>,
    action: String,
    actor: String,
    from: String,
    to: String,
    query: String,
    next: Option<String>,
    retention_days: i32,
    csrf: String,
    /// Not an administrator: their own entries only.
    own: bool,
}

pub async fn list(
    ctx: TenantCtx,
    user: StaffUser,
    RawQuery(q): RawQuery,
) -> Result<Response, AppError> {
    let f = Filters::parse(q.as_deref(), &user);
    let db = ctx.db().await?;
    let retention_days: i32 = db
        .query_one("SELECT audit_retention_days FROM settings", &[])
        .await?
        .get(0);
    let mut rows = entries(&db, &f, PAGE + 1).await?;
    let more = rows.len() as i64 > PAGE;
    rows.truncate(usize::try_from(PAGE).unwrap_or(100));
    let query = f.query();
    let next = match (more, rows.last()) {
        (true, Some(last)) => Some(format!(
            "/admin/audit?{query}{}before={}",
            if query.is_empty() { "" } else { "&" },
            last.seq
        )),
        _ => None,
    };
    Ok(render(
        StatusCode::OK,
        &AuditPage {
            site: ctx.name.to_string(),
            nav: Some(Nav::new(&user, "audit")),
            entries: rows,
            action: f.action.clone(),
            actor: f.actor.clone(),
            from: f.from.map(|d| d.to_string()).unwrap_or_default(),
            to: f.to.map(|d| d.to_string()).unwrap_or_default(),
            query,
            next,
            retention_days,
            csrf: user.csrf.clone(),
            own: f.own.is_some(),
        },
    ))
}

/// Sets how long the log is kept (30 days to 20 years); older entries are pruned daily.
pub async fn set_retention(
    ctx: TenantCtx,
    user: StaffUser,
    body: crate::tenant::http::FormData,
) -> Result<Response, AppError> {
    user.require_admin()?;
    user.check_csrf(&body)?;
    let days: i32 = crate::ja::nfkc(body.get("days").trim())
        .parse()
        .ok()
        .filter(|d| (30..=7305).contains(d))
        .ok_or_else(|| {
            AppError::BadRequest("保存期間は30〜7305日（20年）の日数で入力してください".into())
        })?;
    let mut db = ctx.db().await?;
    let client: &mut tokio_postgres::Client = &mut db;
    let tx = client.transaction().await?;
    tx.execute("UPDATE settings SET audit_retention_days = $1", &[&days])
        .await?;
    super::append(
        &tx,
        &user.actor(),
        "audit.retention",
        "",
        serde_json::json!({ "days": days }),
    )
    .await?;
    tx.commit().await?;
    Ok(crate::tenant::http::see_other("/admin/audit"))
}

/// The operation log as CSV, streamed a batch at a time (a log kept for years does
/// not fit in memory); the download itself is logged when it ends, with the rows
/// handed out and whether the file was whole.
pub async fn csv(
    ctx: TenantCtx,
    user: StaffUser,
    RawQuery(q): RawQuery,
) -> Result<Response, AppError> {
    let mut f = Filters::parse(q.as_deref(), &user);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut n = 0u64;
        let complete = async {
            let mut w = spreadsheet::writer(true);
            let _ =
                spreadsheet::write_row(&mut w, ["番号", "日時", "操作者", "操作", "対象", "詳細"]);
            if tx
                .send(Ok(w.into_inner().unwrap_or_default().into()))
                .await
                .is_err()
            {
                return false;
            }
            let failed = |e: AppError| {
                tracing::error!(error = %e, "operation log export failed");
                Err(std::io::Error::other("export failed"))
            };
            let db = match ctx.db().await {
                Ok(db) => db,
                Err(e) => {
                    let _ = tx.send(failed(e)).await;
                    return false;
                }
            };
            loop {
                let rows = match entries(&db, &f, 5000).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        let _ = tx.send(failed(e)).await;
                        return false;
                    }
                };
                let Some(last) = rows.last() else { return true };
                f.before = Some(last.seq);
                let mut w = spreadsheet::writer(false);
                for e in &rows {
                    let _ = spreadsheet::write_row(
                        &mut w,
                        [
                            e.seq.to_string(),
                            e.at.clone(),
                            e.actor.clone(),
                            e.action.clone(),
                            e.target.clone(),
                            e.detail.clone(),
                        ],
                    );
                }
                n += rows.len() as u64;
                if tx
                    .send(Ok(w.into_inner().unwrap_or_default().into()))
                    .await
                    .is_err()
                {
                    return false;
                }
            }
        }
        .await;
        let logged = async {
            let mut db = ctx.db().await?;
            super::record(
                &mut db,
                &user.actor(),
                "audit.export",
                "",
                serde_json::json!({ "rows": n, "complete": complete, "own": f.own.is_some() }),
            )
            .await
        }
        .await;
        if let Err(e) = logged {
            tracing::error!(error = %e, "recording an operation log export failed");
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"audit-log.csv\""),
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}
