//! Exports of the inbox's current selection: CSV (UTF-8 with BOM so Excel reads it,
//! RFC 4180 quoting, CRLF) streamed in batches so a large export never sits in
//! memory, and XLSX written in constant-memory mode to a temporary file and streamed
//! from it. One column per field: merged over every version of the form (with a
//! version column), or one version's with `version=N`. Every export is recorded in
//! the operation log with its row count.

use axum::body::{Body, Bytes};
use axum::extract::RawQuery;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::pages::{fetch, Filters, Query};
use crate::error::AppError;
use crate::tenant::audit;
use crate::tenant::forms::citizen::{decrypt_answers, jst};
use crate::tenant::forms::definition::FormDefinition;
use crate::tenant::spreadsheet;
use crate::tenant::staff::StaffUser;
use crate::tenant::TenantCtx;

/// Rows fetched and decrypted per batch.
const BATCH: i64 = 500;

/// The columns: fixed ones, then (field id, label) in form order, merged over versions.
struct Columns {
    fields: Vec<(String, String)>,
}

impl Columns {
    fn header(&self) -> Vec<String> {
        let mut h: Vec<String> = ["受付番号", "受付日時", "フォーム", "版", "状態", "担当者"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        h.extend(self.fields.iter().map(|(_, l)| l.clone()));
        h
    }
}

async fn columns(
    db: &tokio_postgres::Client,
    form: Option<i64>,
    version: Option<i32>,
) -> Result<Columns, AppError> {
    let Some(form) = form else {
        return Ok(Columns { fields: Vec::new() });
    };
    let rows = db
        .query("SELECT definition FROM form_versions WHERE form_id = $1 AND ($2::int IS NULL OR version = $2) ORDER BY version", &[&form, &version])
        .await?;
    let mut fields: Vec<(String, String)> = Vec::new();
    for r in rows {
        let def: FormDefinition =
            serde_json::from_value(r.get(0)).map_err(|e| AppError::Internal(e.into()))?;
        for f in def.fields().filter(|f| f.kind.takes_answer()) {
            match fields.iter_mut().find(|(id, _)| *id == f.id) {
                Some(existing) => existing.1.clone_from(&f.label),
                None => fields.push((f.id.clone(), f.label.clone())),
            }
        }
    }
    Ok(Columns { fields })
}

/// Pages through the selection a batch at a time, decrypting only that batch.
struct Batches<'a> {
    ctx: &'a TenantCtx,
    user: &'a StaffUser,
    filters: Filters,
    version: Option<i32>,
    cols: &'a Columns,
    done: bool,
    rows: u64,
}

impl<'a> Batches<'a> {
    fn new(
        ctx: &'a TenantCtx,
        user: &'a StaffUser,
        filters: Filters,
        version: Option<i32>,
        cols: &'a Columns,
    ) -> Self {
        Self {
            ctx,
            user,
            filters,
            version,
            cols,
            done: false,
            rows: 0,
        }
    }

    async fn next(&mut self) -> Result<Option<Vec<Vec<String>>>, AppError> {
        if self.done {
            return Ok(None);
        }
        let db = self.ctx.db().await?;
        let rows = fetch(
            self.ctx,
            &db,
            &Query {
                user: self.user,
                filters: &self.filters,
                limit: BATCH,
                all_answers: true,
            },
        )
        .await?;
        drop(db);
        self.done = (rows.len() as i64) < BATCH;
        let Some(last) = rows.last() else {
            return Ok(None);
        };
        self.filters.after = Some((last.submitted_at, last.id));
        let mut batch = Vec::with_capacity(rows.len());
        for r in rows
            .iter()
            .filter(|r| self.version.is_none_or(|v| v == r.form_version))
        {
            let answers = decrypt_answers(self.ctx.cipher(), r.id, &r.answers)?;
            let mut line = vec![
                r.receipt.clone(),
                jst(r.submitted_at),
                r.form_title.clone(),
                r.form_version.to_string(),
                r.status.label().to_owned(),
                r.assignee.clone(),
            ];
            line.extend(
                self.cols
                    .fields
                    .iter()
                    .map(|(id, _)| answers.get(id).map(|a| a.display()).unwrap_or_default()),
            );
            batch.push(line);
        }
        self.rows += batch.len() as u64;
        Ok(Some(batch))
    }
}

fn parse_version(query: Option<&str>) -> Option<i32> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "version")
        .and_then(|(_, v)| v.parse().ok())
}

async fn log_export(
    ctx: &TenantCtx,
    user: &StaffUser,
    format: &str,
    filters: &Filters,
    rows: u64,
    complete: bool,
) -> Result<(), AppError> {
    let mut db = ctx.db().await?;
    let actor = user.actor();
    audit::record(
        &mut db,
        &actor,
        "submission.export",
        &filters
            .form
            .map(|f| format!("form:{f}"))
            .unwrap_or_default(),
        serde_json::json!({
            "format": format,
            "rows": rows,
            "complete": complete,
            "filters": filters.logged(),
        }),
    )
    .await
}

fn download(content_type: &'static str, name: &str, body: Body) -> Response {
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

fn csv_bytes(rows: &[Vec<String>], bom: bool) -> Bytes {
    let mut w = spreadsheet::writer(bom);
    for r in rows {
        let _ = spreadsheet::write_row(&mut w, r);
    }
    Bytes::from(w.into_inner().unwrap_or_default())
}

async fn check_form(ctx: &TenantCtx, user: &StaffUser, filters: &Filters) -> Result<(), AppError> {
    if let Some(form) = filters.form {
        let db = ctx.db().await?;
        let dept: i64 = db
            .query_opt("SELECT department_id FROM forms WHERE id = $1", &[&form])
            .await?
            .ok_or(AppError::NotFound)?
            .get(0);
        if !user.can_see(dept) {
            return Err(AppError::NotFound);
        }
    }
    Ok(())
}

pub async fn csv_export(
    ctx: TenantCtx,
    user: StaffUser,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let mut filters = Filters::parse(query.as_deref());
    filters.after = None;
    check_form(&ctx, &user, &filters).await?;
    let version = parse_version(query.as_deref());
    let cols = columns(&*ctx.db().await?, filters.form, version).await?;
    // Logged before the first row leaves (as the XLSX export is), so a restart during
    // a long export cannot lose the record of it; its ending is logged too, below.
    let mut db = ctx.db().await?;
    audit::record(
        &mut db,
        &user.actor(),
        "submission.export_start",
        &filters
            .form
            .map(|f| format!("form:{f}"))
            .unwrap_or_default(),
        serde_json::json!({ "format": "csv", "version": version, "filters": filters.logged() }),
    )
    .await?;
    drop(db);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let header = csv_bytes(&[cols.header()], true);
    tokio::spawn(async move {
        let mut batches = Batches::new(&ctx, &user, filters.clone(), version, &cols);
        // Every ending is logged, with the rows handed out and whether the file was
        // whole: a client that leaves before the end has still taken those rows.
        let complete = async {
            if tx.send(Ok(header)).await.is_err() {
                return false;
            }
            loop {
                match batches.next().await {
                    Ok(Some(batch)) => {
                        if tx.send(Ok(csv_bytes(&batch, false))).await.is_err() {
                            return false;
                        }
                    }
                    Ok(None) => return true,
                    Err(e) => {
                        tracing::error!(error = %e, "export failed");
                        let _ = tx.send(Err(std::io::Error::other("export failed"))).await;
                        return false;
                    }
                }
            }
        }
        .await;
        let n = batches.rows;
        if let Err(e) = log_export(&ctx, &user, "csv", &filters, n, complete).await {
            tracing::error!(error = %e, "recording an export failed");
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    Ok(download(
        "text/csv; charset=utf-8",
        "submissions.csv",
        Body::from_stream(stream),
    ))
}

pub async fn xlsx_export(
    ctx: TenantCtx,
    user: StaffUser,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let mut filters = Filters::parse(query.as_deref());
    filters.after = None;
    check_form(&ctx, &user, &filters).await?;
    let version = parse_version(query.as_deref());
    let cols = columns(&*ctx.db().await?, filters.form, version).await?;
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet_with_constant_memory();
    sheet
        .set_name("申請一覧")
        .map_err(|e| AppError::Internal(e.into()))?;
    let write = |sheet: &mut rust_xlsxwriter::Worksheet,
                 line: &[String],
                 row: u32|
     -> Result<(), AppError> {
        for (c, v) in line.iter().enumerate() {
            sheet
                .write_string(row, u16::try_from(c).unwrap_or(u16::MAX), v)
                .map_err(|e| AppError::Internal(e.into()))?;
        }
        Ok(())
    };
    write(sheet, &cols.header(), 0)?;
    let mut row: u32 = 0;
    let mut batches = Batches::new(&ctx, &user, filters.clone(), version, &cols);
    while let Some(batch) = batches.next().await? {
        for line in batch {
            row += 1;
            write(sheet, &line, row)?;
        }
    }
    let n = batches.rows;
    let file = tempfile::NamedTempFile::new().map_err(|e| AppError::Internal(e.into()))?;
    workbook
        .save(file.path())
        .map_err(|e| AppError::Internal(e.into()))?;
    log_export(&ctx, &user, "xlsx", &filters, n, true).await?;
    let reader = tokio::fs::File::open(file.path())
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
    let stream = futures::stream::unfold((reader, file), |(mut reader, file)| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(k) => {
                buf.truncate(k);
                Some((
                    Ok::<Bytes, std::io::Error>(Bytes::from(buf)),
                    (reader, file),
                ))
            }
            Err(e) => Some((Err(e), (reader, file))),
        }
    });
    Ok(download(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "submissions.xlsx",
        Body::from_stream(stream),
    ))
}
