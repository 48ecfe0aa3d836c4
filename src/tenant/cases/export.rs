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
use crate::tenant::forms::answers::Answer;
use crate::tenant::forms::citizen::decrypt_answers;
use crate::tenant::forms::definition::FormDefinition;
use crate::tenant::spreadsheet;
use crate::tenant::staff::StaffUser;
use crate::tenant::TenantCtx;

/// Rows fetched and decrypted per batch.
const BATCH: i64 = 500;

/// The columns: fixed ones, then (field id, label) in form order, merged over versions,
/// then 本人確認's when a version of the form asks for it.
struct Columns {
    fields: Vec<(String, String)>,
    identity: bool,
}

/// How each application came: オンライン, or 代理入力 with its channel.
const CHANNEL_COLUMN: &str = "受付方法";

/// 本人確認's columns: what the provider vouched for, not what was typed.
const IDENTITY_COLUMNS: [&str; 7] = [
    "本人確認日時",
    "本人確認: 発行者",
    "本人確認: 氏名",
    "本人確認: フリガナ",
    "本人確認: 生年月日",
    "本人確認: 性別",
    "本人確認: 住所",
];

impl Columns {
    fn header(&self) -> Vec<String> {
        let mut h: Vec<String> = ["受付番号", "受付日時", "フォーム", "版", "状態", "担当者"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        h.extend(self.fields.iter().map(|(_, l)| l.clone()));
        if self.identity {
            h.extend(IDENTITY_COLUMNS.iter().map(|s| (*s).to_owned()));
        }
        // Last, so the columns before it stay where they were.
        h.push(CHANNEL_COLUMN.to_owned());
        h
    }
}

async fn columns(
    db: &tokio_postgres::Client,
    form: Option<i64>,
    version: Option<i32>,
) -> Result<Columns, AppError> {
    let Some(form) = form else {
        return Ok(Columns {
            fields: Vec::new(),
            identity: false,
        });
    };
    let rows = db
        .query("SELECT definition FROM form_versions WHERE form_id = $1 AND ($2::int IS NULL OR version = $2) ORDER BY version", &[&form, &version])
        .await?;
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut identity = false;
    for r in rows {
        let def: FormDefinition =
            serde_json::from_value(r.get(0)).map_err(|e| AppError::Internal(e.into()))?;
        identity |= def.settings.identity;
        for f in def.fields().filter(|f| f.kind.takes_answer()) {
            match fields.iter_mut().find(|(id, _)| *id == f.id) {
                Some(existing) => existing.1.clone_from(&f.label),
                None => fields.push((f.id.clone(), f.label.clone())),
            }
        }
    }
    Ok(Columns { fields, identity })
}

/// 本人確認's cells of one row (empty when it has none).
fn identity_cells(v: Option<&crate::tenant::identity::Verified>) -> Vec<Cell> {
    let Some(v) = v else {
        return IDENTITY_COLUMNS
            .iter()
            .map(|_| Cell::Text(String::new()))
            .collect();
    };
    let at = v.at.to_offset(time::macros::offset!(+9));
    let text = |s: &Option<String>| Cell::Text(s.clone().unwrap_or_default());
    let who = &v.who;
    vec![
        Cell::Time(time::PrimitiveDateTime::new(at.date(), at.time())),
        Cell::Text(v.issuer.clone()),
        text(&who.name),
        text(&who.name_kana),
        match who.birthdate.as_deref() {
            Some(b) => {
                crate::tenant::http::date(b).map_or_else(|| Cell::Text(b.to_owned()), Cell::Date)
            }
            None => Cell::Text(String::new()),
        },
        Cell::Text(
            who.gender
                .as_deref()
                .map(crate::tenant::identity::gender_label)
                .unwrap_or_default(),
        ),
        text(&who.address),
    ]
}

/// One cell of an exported row. Times and dates are written as such, so that a
/// spreadsheet sorts and filters them, and a receiving system reads them without
/// parsing Japanese text (they are shown with 和暦 on screen).
enum Cell {
    Text(String),
    /// A moment, in Japan time.
    Time(time::PrimitiveDateTime),
    Date(time::Date),
    /// A number as the citizen's answer keeps it (already normalised).
    Number(String),
}

impl Cell {
    /// The CSV text: ISO 8601 for times (Japan time, to the second) and dates.
    fn text(&self) -> String {
        match self {
            Self::Text(s) | Self::Number(s) => s.clone(),
            Self::Time(t) => format!(
                "{} {:02}:{:02}:{:02}",
                t.date(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            Self::Date(d) => d.to_string(),
        }
    }
}

fn answer_cell(answer: &Answer) -> Cell {
    match answer {
        Answer::Date(d) => Cell::Date(*d),
        Answer::Number(n) => Cell::Number(n.clone()),
        other => Cell::Text(other.display()),
    }
}

/// Pages through the selection a batch at a time, decrypting only that batch.
struct Batches<'a> {
    ctx: &'a TenantCtx,
    user: &'a StaffUser,
    filters: Filters,
    cols: &'a Columns,
    done: bool,
    rows: u64,
}

impl<'a> Batches<'a> {
    fn new(ctx: &'a TenantCtx, user: &'a StaffUser, filters: Filters, cols: &'a Columns) -> Self {
        Self {
            ctx,
            user,
            filters,
            cols,
            done: false,
            rows: 0,
        }
    }

    async fn next(&mut self) -> Result<Option<Vec<Vec<Cell>>>, AppError> {
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
        let identities = if self.cols.identity {
            let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
            crate::tenant::identity::of_submissions(self.ctx, &**db, &ids).await?
        } else {
            std::collections::HashMap::new()
        };
        drop(db);
        self.done = (rows.len() as i64) < BATCH;
        let Some(last) = rows.last() else {
            return Ok(None);
        };
        self.filters.after = Some((last.submitted_at, last.id));
        let mut batch = Vec::with_capacity(rows.len());
        for r in &rows {
            let answers = decrypt_answers(self.ctx.cipher(), r.id, &r.answers)?;
            let at = r.submitted_at.to_offset(time::macros::offset!(+9));
            let mut line = vec![
                Cell::Text(r.receipt.clone()),
                Cell::Time(time::PrimitiveDateTime::new(at.date(), at.time())),
                Cell::Text(r.form_title.clone()),
                Cell::Number(r.form_version.to_string()),
                Cell::Text(r.status.label().to_owned()),
                Cell::Text(r.assignee.clone()),
            ];
            line.extend(self.cols.fields.iter().map(|(id, _)| {
                answers
                    .get(id)
                    .map(answer_cell)
                    .unwrap_or(Cell::Text(String::new()))
            }));
            if self.cols.identity {
                line.extend(identity_cells(identities.get(&r.id)));
            }
            line.push(Cell::Text(r.channel.map_or_else(
                || "オンライン".to_owned(),
                |c| format!("代理入力（{c}）"),
            )));
            batch.push(line);
        }
        self.rows += batch.len() as u64;
        Ok(Some(batch))
    }
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

/// A file download: its type, the name it is saved under, and its body.
pub(crate) fn download(content_type: &'static str, name: &str, body: Body) -> Response {
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

/// A download whose body is what a task sends on `rx`, as it comes.
fn streamed(
    content_type: &'static str,
    name: &str,
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> Response {
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    download(content_type, name, Body::from_stream(stream))
}

fn csv_bytes(rows: &[Vec<Cell>], bom: bool) -> Bytes {
    let mut w = spreadsheet::writer(bom);
    for r in rows {
        let _ = spreadsheet::write_row(&mut w, r.iter().map(Cell::text));
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

/// A streamed export's selection from its query (all of it, not a page), refused
/// when its form is not one the member may see, with its columns; and its start in
/// the operation log, before the first byte leaves, so a restart during a long export
/// cannot lose the record of it (its ending is logged too, by [`log_export`]).
async fn begin(
    ctx: &TenantCtx,
    user: &StaffUser,
    query: Option<&str>,
    format: &str,
) -> Result<(Filters, Columns), AppError> {
    let mut filters = Filters::parse(query);
    filters.after = None;
    check_form(ctx, user, &filters).await?;
    let version = filters.form.and(filters.version);
    let cols = columns(&*ctx.db().await?, filters.form, version).await?;
    let mut db = ctx.db().await?;
    audit::record(
        &mut db,
        &user.actor(),
        "submission.export_start",
        &filters
            .form
            .map(|f| format!("form:{f}"))
            .unwrap_or_default(),
        serde_json::json!({ "format": format, "version": version, "filters": filters.logged() }),
    )
    .await?;
    Ok((filters, cols))
}

pub async fn csv_export(
    ctx: TenantCtx,
    user: StaffUser,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let (filters, cols) = begin(&ctx, &user, query.as_deref(), "csv").await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let header = csv_bytes(&[cols.header().into_iter().map(Cell::Text).collect()], true);
    tokio::spawn(async move {
        let mut batches = Batches::new(&ctx, &user, filters.clone(), &cols);
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
    Ok(streamed("text/csv; charset=utf-8", "submissions.csv", rx))
}

/// The number formats of the XLSX export's typed cells.
struct XlsxFormats {
    time: rust_xlsxwriter::Format,
    date: rust_xlsxwriter::Format,
}

impl XlsxFormats {
    fn new() -> Self {
        Self {
            time: rust_xlsxwriter::Format::new().set_num_format("yyyy/mm/dd hh:mm:ss"),
            date: rust_xlsxwriter::Format::new().set_num_format("yyyy/mm/dd"),
        }
    }
}

/// Writes `line` at `row`: text as text (never a formula), times and dates as date
/// cells, numbers as numbers where Excel keeps them exactly (up to 15 significant
/// digits), as text otherwise.
fn write_xlsx_row(
    sheet: &mut rust_xlsxwriter::Worksheet,
    formats: &XlsxFormats,
    row: u32,
    line: &[Cell],
) -> Result<(), rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::ExcelDateTime;
    for (c, cell) in line.iter().enumerate() {
        let col = u16::try_from(c).unwrap_or(u16::MAX);
        let day = |d: time::Date| {
            ExcelDateTime::from_ymd(
                u16::try_from(d.year()).unwrap_or(1900),
                u8::from(d.month()),
                d.day(),
            )
        };
        match cell {
            Cell::Time(t) => {
                let at = day(t.date())?.and_hms(
                    u16::from(t.hour()),
                    t.minute(),
                    f64::from(t.second()),
                )?;
                sheet.write_datetime_with_format(row, col, at, &formats.time)?;
            }
            Cell::Date(d) => match day(*d) {
                Ok(at) => {
                    sheet.write_datetime_with_format(row, col, at, &formats.date)?;
                }
                // A date Excel cannot hold (before 1900): as text.
                Err(_) => {
                    sheet.write_string(row, col, cell.text())?;
                }
            },
            Cell::Number(n) => match exact_number(n) {
                Some(v) => {
                    sheet.write_number(row, col, v)?;
                }
                None => {
                    sheet.write_string(row, col, n)?;
                }
            },
            Cell::Text(s) => {
                sheet.write_string(row, col, s)?;
            }
        }
    }
    Ok(())
}

/// `n` as a spreadsheet number, when it holds it exactly as written: a plain decimal
/// of at most 15 significant digits, without a leading zero Excel would drop.
fn exact_number(n: &str) -> Option<f64> {
    let digits = n.trim_start_matches('-');
    let plain = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.matches('.').count() <= 1
        && !digits.starts_with('.')
        && !digits.ends_with('.')
        && !(digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0."));
    let significant = digits
        .chars()
        .filter(char::is_ascii_digit)
        .skip_while(|c| *c == '0')
        .count();
    (plain && significant <= 15)
        .then(|| n.parse::<f64>().ok())
        .flatten()
        .filter(|v| v.is_finite())
}

pub async fn xlsx_export(
    ctx: TenantCtx,
    user: StaffUser,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let mut filters = Filters::parse(query.as_deref());
    filters.after = None;
    check_form(&ctx, &user, &filters).await?;
    let version = filters.form.and(filters.version);
    let cols = columns(&*ctx.db().await?, filters.form, version).await?;
    // The workbook can only be sent once it is whole, and a large one takes longer
    // than a request may before its answer starts: the answer starts now, and its
    // body follows once the workbook is built (the CSV export streams its rows).
    let (tx, rx) = tokio::sync::oneshot::channel::<Option<tempfile::NamedTempFile>>();
    tokio::spawn(async move {
        // A few workbooks are built at once on the whole server, the others wait:
        // building runs outside the tenant's turns and takes a core while it runs.
        let _permit = ctx.workbooks.acquire().await;
        // Building stops when the person has gone (the answer's body was dropped):
        // nothing was handed out, and it is logged so.
        let built = build_xlsx(&ctx, &user, &filters, &cols, &|| tx.is_closed()).await;
        let (file, n, whole) = match built {
            Ok(Some(done)) => done,
            Ok(None) => {
                if let Err(e) = log_export(&ctx, &user, "xlsx", &filters, 0, false).await {
                    tracing::error!(error = %e, "recording an export failed");
                }
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "export failed");
                return;
            }
        };
        let file = match log_export(&ctx, &user, "xlsx", &filters, n, whole).await {
            Ok(()) => Some(file),
            Err(e) => {
                tracing::error!(error = %e, "recording an export failed");
                None
            }
        };
        let _ = tx.send(file);
    });
    enum Sending {
        Building(tokio::sync::oneshot::Receiver<Option<tempfile::NamedTempFile>>),
        Reading(tokio::fs::File, tempfile::NamedTempFile),
    }
    let stream = futures::stream::unfold(Some(Sending::Building(rx)), |state| async move {
        use tokio::io::AsyncReadExt;
        let failed = || std::io::Error::other("export failed");
        let (mut reader, file) = match state? {
            Sending::Building(rx) => {
                let Ok(Some(file)) = rx.await else {
                    return Some((Err(failed()), None));
                };
                match tokio::fs::File::open(file.path()).await {
                    Ok(reader) => (reader, file),
                    Err(e) => return Some((Err(e), None)),
                }
            }
            Sending::Reading(reader, file) => (reader, file),
        };
        let mut buf = vec![0u8; 64 * 1024];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(k) => {
                buf.truncate(k);
                Some((
                    Ok::<Bytes, std::io::Error>(Bytes::from(buf)),
                    Some(Sending::Reading(reader, file)),
                ))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(download(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "submissions.xlsx",
        Body::from_stream(stream),
    ))
}

/// Workbooks built at once on the whole server (`TenantCtx::workbooks`).
pub const WORKBOOKS_AT_ONCE: usize = 2;

/// The last row index of a worksheet (Excel's limit is 1,048,576 rows).
const XLSX_LAST_ROW: u32 = 1_048_575;

/// Writes the selection to a workbook in a temporary file; returns it, the
/// applications it holds and whether that is all of them (Excel's row limit), or
/// nothing once `gone` says nobody waits for it any more.
async fn build_xlsx(
    ctx: &TenantCtx,
    user: &StaffUser,
    filters: &Filters,
    cols: &Columns,
    gone: &(dyn Fn() -> bool + Send + Sync),
) -> Result<Option<(tempfile::NamedTempFile, u64, bool)>, AppError> {
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet_with_constant_memory();
    sheet
        .set_name("申請一覧")
        .map_err(|e| AppError::Internal(e.into()))?;
    let formats = XlsxFormats::new();
    let header: Vec<Cell> = cols.header().into_iter().map(Cell::Text).collect();
    write_xlsx_row(sheet, &formats, 0, &header).map_err(|e| AppError::Internal(e.into()))?;
    let mut row: u32 = 0;
    let mut batches = Batches::new(ctx, user, filters.clone(), cols);
    let mut whole = true;
    if gone() {
        return Ok(None);
    }
    'rows: while let Some(batch) = batches.next().await? {
        if gone() {
            return Ok(None);
        }
        for line in batch {
            row += 1;
            // A worksheet holds 1,048,576 rows: the last says where the rest is.
            if row == XLSX_LAST_ROW {
                let note = "（Excelの行数の上限に達したため、以降の申請はこのファイルにありません。すべての申請はCSVで出力してください）";
                sheet
                    .write_string(row, 0, note)
                    .map_err(|e| AppError::Internal(e.into()))?;
                whole = false;
                break 'rows;
            }
            write_xlsx_row(sheet, &formats, row, &line)
                .map_err(|e| AppError::Internal(e.into()))?;
        }
    }
    let written = u64::from(row) - u64::from(!whole);
    let file = tempfile::NamedTempFile::new().map_err(|e| AppError::Internal(e.into()))?;
    // Assembling the file is blocking work (it compresses every row written).
    let path = file.path().to_owned();
    tokio::task::spawn_blocking(move || workbook.save(path))
        .await
        .map_err(|e| AppError::Internal(e.into()))?
        .map_err(|e| AppError::Internal(e.into()))?;
    Ok(Some((file, written, whole)))
}

#[cfg(test)]
mod tests {
    use super::exact_number;

    #[test]
    fn zip_names_are_one_path_part_on_every_system() {
        assert_eq!(super::zip_part("4K7M-9XPQ"), "4K7M-9XPQ");
        assert_eq!(
            super::zip_part("図面/配置:案*1?.pdf"),
            "図面_配置_案_1_.pdf"
        );
        assert_eq!(super::zip_part(" ..\\..\\secret "), "_.._secret");
        assert_eq!(super::zip_part("a\u{0}b\nc"), "a_b_c");
        assert_eq!(super::zip_part("葛\u{E0100}飾区"), "葛\u{E0100}飾区");
    }

    #[test]
    fn numbers_go_to_the_spreadsheet_only_when_kept_exactly() {
        assert_eq!(exact_number("41"), Some(41.0));
        assert_eq!(exact_number("-2.5"), Some(-2.5));
        assert_eq!(exact_number("0.75"), Some(0.75));
        assert_eq!(exact_number("123456789012345"), Some(123_456_789_012_345.0));
        // A leading zero Excel would drop, more digits than it keeps, not a plain
        // decimal: text.
        for text in [
            "007",
            "1234567890123456",
            "1e5",
            "1.",
            ".5",
            "1.2.3",
            "",
            "-",
            "１２",
        ] {
            assert_eq!(exact_number(text), None, "{text}");
        }
    }
}

/// A ZIP of a selection's files holds at most this many files…
pub const ZIP_MAX_FILES: u64 = 5_000;
/// …and this many bytes of them (well within ZIP's 4 GiB without ZIP64).
pub const ZIP_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Applications read per batch for a ZIP (each may hold several files).
const ZIP_BATCH: i64 = 50;

/// Bytes the ZIP writer has written and the response has not taken yet.
#[derive(Clone, Default)]
struct Tap(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Tap {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Tap {
    fn take(&self) -> Bytes {
        Bytes::from(
            self.0
                .lock()
                .map(|mut b| std::mem::take(&mut *b))
                .unwrap_or_default(),
        )
    }
}

/// A name Windows, macOS and Linux all accept as one path part.
fn zip_part(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_control() || "/\\:*?\"<>|".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    cleaned.trim().trim_matches('.').to_owned()
}

/// The files attached (添付ファイル) to the inbox's current selection of one form, as
/// one ZIP: a folder per application named by its 受付番号, each file named
/// `<項目名>_<file name>`. Files are stored as they are (PDF, JPEG and PNG are
/// compressed already) and sent one at a time, so the archive never sits in memory.
/// At most [`ZIP_MAX_FILES`] files and [`ZIP_MAX_BYTES`] bytes: past either, the
/// archive ends with a note saying where it stopped. Recorded in the operation log
/// like the other exports, with the number of files.
pub async fn zip_export(
    ctx: TenantCtx,
    user: StaffUser,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    use std::io::Write;
    if Filters::parse(query.as_deref()).form.is_none() {
        return Err(AppError::BadRequest(
            "添付ファイルを出力するフォームを選んでください。".into(),
        ));
    }
    let (filters, cols) = begin(&ctx, &user, query.as_deref(), "zip").await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let tap = Tap::default();
        let mut zip = zip::ZipWriter::new_stream(tap.clone());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let (mut files, mut bytes) = (0u64, 0u64);
        let mut cursor = filters.clone();
        let outcome: Result<bool, AppError> = async {
            'batches: loop {
                let db = ctx.db().await?;
                let rows = fetch(
                    &ctx,
                    &db,
                    &Query {
                        user: &user,
                        filters: &cursor,
                        limit: ZIP_BATCH,
                        all_answers: true,
                    },
                )
                .await?;
                for r in &rows {
                    let answers = decrypt_answers(ctx.cipher(), r.id, &r.answers)?;
                    for (field, label) in &cols.fields {
                        let Some(Answer::File(file)) = answers.get(field) else {
                            continue;
                        };
                        if files >= ZIP_MAX_FILES || bytes + file.size > ZIP_MAX_BYTES {
                            let note = format!(
                                "ファイルが多いため、受付番号 {} の申請の前で出力を止めました（{files}件）。受付日で絞り込んで、続きを出力してください。\r\n",
                                r.receipt
                            );
                            zip.start_file("続きがあります.txt", options)
                                .and_then(|()| zip.write_all(note.as_bytes()).map_err(Into::into))
                                .map_err(|e| AppError::Internal(e.into()))?;
                            break 'batches;
                        }
                        let found =
                            crate::tenant::forms::attachments::content(ctx.cipher(), &**db, r.id, file.id)
                                .await;
                        // A file found infected since it was stored: a note in its place.
                        let (content, name) = match found {
                            Err(AppError::Conflict(why)) => (
                                zeroize::Zeroizing::new(format!("{why}\r\n").into_bytes()),
                                format!(
                                    "{}/{}_取り出せないファイル.txt",
                                    zip_part(&r.receipt),
                                    zip_part(label)
                                ),
                            ),
                            found => (
                                found?,
                                format!(
                                    "{}/{}_{}",
                                    zip_part(&r.receipt),
                                    zip_part(label),
                                    zip_part(&file.name)
                                ),
                            ),
                        };
                        zip.start_file(name, options)
                            .and_then(|()| zip.write_all(&content).map_err(Into::into))
                            .map_err(|e| AppError::Internal(e.into()))?;
                        files += 1;
                        bytes += file.size;
                        if tx.send(Ok(tap.take())).await.is_err() {
                            return Ok(false);
                        }
                    }
                }
                match rows.last() {
                    Some(last) if rows.len() as i64 == ZIP_BATCH => {
                        cursor.after = Some((last.submitted_at, last.id));
                    }
                    _ => break,
                }
            }
            zip.finish().map_err(|e| AppError::Internal(e.into()))?;
            Ok(tx.send(Ok(tap.take())).await.is_ok())
        }
        .await;
        let complete = match outcome {
            Ok(whole) => whole,
            Err(e) => {
                tracing::error!(error = %e, "zip export failed");
                let _ = tx.send(Err(std::io::Error::other("export failed"))).await;
                false
            }
        };
        if let Err(e) = log_export(&ctx, &user, "zip", &filters, files, complete).await {
            tracing::error!(error = %e, "recording an export failed");
        }
    });
    Ok(streamed("application/zip", "attachments.zip", rx))
}
