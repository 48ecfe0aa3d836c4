//! 添付ファイル: a document or photo a citizen attaches to an application (a
//! certificate, a receipt, a photo of the site).
//!
//! A page with a 添付ファイル field is sent as `multipart/form-data`. Each file is
//! checked (its kind by its first bytes, its size against the field's limit),
//! encrypted with the municipality's key, bound to its own id, and kept in the
//! municipality's database (table `attachments`), first with the draft, then with the
//! submission. The draft and then the answers name it by a [`FileRef`] the server
//! writes: an input of that name sent by a browser or a client is never taken.
//!
//! With a virus scanner set (`--clamd`, [`crate::scan`]), each file is scanned before
//! it is kept; a find, or a scanner that cannot answer, refuses the file.
//!
//! Limits: a file at most its field's limit ([`MAX_FILE_MB`] at most); one page's
//! request at most [`MAX_PAGE_BODY`]; uploads held in memory at once, across the
//! process, at most [`MEMORY_BUDGET`] (more waits up to [`MEMORY_WAIT`], then is asked
//! to try again); an upload's request may take up to [`UPLOAD_TIMEOUT`].

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::answers::{file_types_label, size_label, Answer, Answers, FieldError, FileRef, Raw};
use super::definition::{Field, FieldKind, FileType, Page, MAX_FILE_MB, MAX_PAGE_FILES_MB};
use crate::crypto::{FieldCipher, FieldRef};
use crate::error::AppError;
use crate::tenant::http::{FormData, MAX_FORM_BODY};
use crate::tenant::TenantCtx;

const MIB: usize = 1024 * 1024;
/// The largest file read from a request; a field's own limit may be lower.
pub const MAX_FILE_BYTES: usize = MAX_FILE_MB as usize * MIB;
/// The largest request a page may send: its files (a page's 添付ファイル fields allow
/// [`MAX_PAGE_FILES_MB`] together), its other inputs, and the multipart framing.
pub const MAX_PAGE_BODY: usize = MAX_PAGE_FILES_MB as usize * MIB + MAX_FORM_BODY + 64 * 1024;
/// Files read from one request, at most (a form has at most five file fields); any
/// more are not read.
const MAX_FILE_PARTS: usize = 10;
/// Bodies of pages carrying files held in memory at once, across every request of
/// the process. Handling one holds up to about three times its size for a moment
/// (the body, the files taken from it, a file's ciphertext).
pub const MEMORY_BUDGET: usize = 96 * MIB;
/// How long an upload waits for room within [`MEMORY_BUDGET`].
pub const MEMORY_WAIT: Duration = Duration::from_secs(5);
/// How long a request carrying files may take (a phone on a slow network sending
/// [`MAX_PAGE_FILES_MB`] MB); other requests have `front::REQUEST_TIMEOUT`.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Characters of a file's name kept (its extension included).
pub const MAX_FILE_NAME: usize = 100;

/// Room for page bodies in memory, in KiB.
static MEMORY: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(MEMORY_BUDGET / 1024)));

/// A file as it came in a request.
pub struct Upload {
    /// The input's name (a field's id).
    pub input: String,
    /// The name the browser gave, as sent.
    pub name: String,
    pub data: Zeroizing<Vec<u8>>,
    /// Larger than [`MAX_FILE_BYTES`]: not kept, only its size counted.
    pub too_large: bool,
    pub size: u64,
    /// What the virus scan said, when one is set (scanned as the body is read, before
    /// the request takes a database connection).
    pub scan: Option<Scan>,
}

/// A virus scan's outcome for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    Clean,
    /// Something found: the signature's name.
    Found(String),
    /// The scanner could not say.
    Failed,
}

impl Upload {
    /// The browser's part for a file input left empty.
    fn is_empty(&self) -> bool {
        self.name.is_empty() && self.size == 0
    }
}

/// A citizen's page as it was sent: url-encoded, or multipart with files.
pub struct PageBody {
    pub form: FormData,
    pub files: Vec<Upload>,
}

impl PageBody {
    pub fn file(&self, input: &str) -> Option<&Upload> {
        self.files
            .iter()
            .find(|u| u.input == input && !u.is_empty())
    }
}

fn is_multipart(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("multipart/form-data"))
        })
}

/// Whether a request is a citizen's page carrying files: a multipart POST to
/// `/f/<form>` (what [`read_ahead`] reads, and what [`UPLOAD_TIMEOUT`] is for).
pub fn is_page_upload(req: &Request) -> bool {
    req.method() == axum::http::Method::POST
        && is_multipart(req.headers())
        && req
            .uri()
            .path()
            .strip_prefix("/f/")
            .is_some_and(|form| !form.is_empty() && !form.contains('/'))
}

/// Whether a page says it comes from this site: the form's cookie (a draft begun
/// here) or an `Origin` naming the address it reached (`base_url`). Anything else
/// is refused before its body is read.
fn from_this_site(req: &Request, base_url: &str) -> bool {
    let form = req.uri().path().trim_start_matches("/f/");
    let cookie = super::citizen::cookie_name(form);
    !crate::tenant::http::cookies(req.headers(), &cookie).is_empty()
        || req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|o| o.eq_ignore_ascii_case(base_url))
}

/// Marks a page body read whole by [`read_ahead`].
#[derive(Clone, Copy)]
struct ReadAhead;

/// Reads a citizen's page carrying files (see [`is_page_upload`]) whole, within
/// [`MAX_PAGE_BODY`] and [`MEMORY_BUDGET`], before the request takes one of the
/// municipality's turns: a phone sending a photo slowly must not hold one while it
/// does. Returns the request with its body in memory, and the room it holds, to be
/// kept until the request is answered; or the refusal (413, or 503 when the room
/// does not come within [`MEMORY_WAIT`]). A page that does not say it comes from
/// this site is passed on unread, and refused unread by [`PageBody`].
pub async fn read_ahead(
    req: Request,
    base_url: &str,
) -> Result<(Request, Option<OwnedSemaphorePermit>), Response> {
    use futures::StreamExt;
    if !from_this_site(&req, base_url) {
        return Ok((req, None));
    }
    let (mut parts, body) = req.into_parts();
    let mut stream = body.into_data_stream();
    let mut chunks = Vec::new();
    let mut total = 0usize;
    let mut room: Option<OwnedSemaphorePermit> = None;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return Err(AppError::BadRequest(
                "送信内容を読み取れませんでした。もう一度送信してください。".into(),
            )
            .into_response());
        };
        total += chunk.len();
        if total > MAX_PAGE_BODY {
            return Err(AppError::PayloadTooLarge.into_response());
        }
        // Room for what came so far, in whole KiB: a client sending a byte at a
        // time holds no more than it sent.
        let held = room.as_ref().map_or(0, |r| r.num_permits());
        let need = total.div_ceil(1024).saturating_sub(held);
        if need > 0 {
            let more =
                u32::try_from(need).map_err(|_| AppError::PayloadTooLarge.into_response())?;
            let got =
                tokio::time::timeout(MEMORY_WAIT, Arc::clone(&MEMORY).acquire_many_owned(more))
                    .await;
            let Ok(Ok(got)) = got else {
                tracing::warn!(
                    "page bodies with files in memory at their limit; one was asked to try again"
                );
                return Err(AppError::Unavailable {
                    retry_after_secs: 10,
                }
                .into_response());
            };
            match room.as_mut() {
                Some(r) => r.merge(got),
                None => room = Some(got),
            }
        }
        chunks.push(chunk);
    }
    parts.extensions.insert(ReadAhead);
    let body = axum::body::Body::from_stream(futures::stream::iter(
        chunks.into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    Ok((Request::from_parts(parts, body), room))
}

fn unreadable(e: &axum::extract::multipart::MultipartError) -> AppError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge
    } else {
        AppError::BadRequest("送信内容を読み取れませんでした。もう一度送信してください。".into())
    }
}

impl<S: Send + Sync> FromRequest<S> for PageBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        if !is_multipart(req.headers()) {
            // The route takes MAX_PAGE_BODY for files; a page without them takes what
            // any form does.
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, MAX_FORM_BODY)
                .await
                .map_err(|_| AppError::PayloadTooLarge)?;
            let req = Request::from_parts(parts, axum::body::Body::from(bytes));
            return Ok(Self {
                form: FormData::from_request(req, state).await?,
                files: Vec::new(),
            });
        }
        // Only a body the front tier read ahead (a page from this site, within the
        // memory budget) is read here.
        if req.extensions().get::<ReadAhead>().is_none() {
            return Err(AppError::Csrf);
        }
        let clamd = req
            .extensions()
            .get::<TenantCtx>()
            .and_then(|c| c.clamd.clone().map(|d| (d, Arc::clone(&c.slug))));
        // Limited by the route's `DefaultBodyLimit` (MAX_PAGE_BODY).
        let mut parts = Multipart::from_request(req, state)
            .await
            .map_err(|_| AppError::BadRequest("フォームの送信形式が正しくありません。".into()))?;
        let mut raw = Raw::new();
        let mut text_bytes = 0usize;
        let mut files = Vec::new();
        while let Some(mut part) = parts.next_field().await.map_err(|e| unreadable(&e))? {
            let input = part.name().unwrap_or_default().to_owned();
            let Some(name) = part.file_name().map(str::to_owned) else {
                let value = part.text().await.map_err(|e| unreadable(&e))?;
                text_bytes += input.len() + value.len();
                if text_bytes > MAX_FORM_BODY {
                    return Err(AppError::PayloadTooLarge);
                }
                if input.contains('\0') || value.contains('\0') {
                    return Err(AppError::BadRequest(
                        "入力に使用できない文字（NUL）が含まれています。".into(),
                    ));
                }
                raw.entry(input).or_default().push(value);
                continue;
            };
            let keep = files.len() < MAX_FILE_PARTS;
            let mut size = 0u64;
            let mut pieces = Vec::new();
            while let Some(chunk) = part.chunk().await.map_err(|e| unreadable(&e))? {
                size += chunk.len() as u64;
                if keep && size <= MAX_FILE_BYTES as u64 {
                    pieces.push(chunk);
                }
            }
            if keep {
                let too_large = size > MAX_FILE_BYTES as u64;
                // One allocation of the file's size, wiped when dropped.
                let mut data = Zeroizing::new(Vec::new());
                if !too_large {
                    data.reserve_exact(pieces.iter().map(|p| p.len()).sum());
                    pieces.iter().for_each(|p| data.extend_from_slice(p));
                }
                files.push(Upload {
                    input,
                    name,
                    data,
                    too_large,
                    size,
                    scan: None,
                });
            }
        }
        // Scanned here, before the handler takes a database connection, within one
        // time limit for the page's files together.
        if let Some((clamd, slug)) = clamd {
            let deadline = tokio::time::Instant::now() + crate::scan::SCAN_TIMEOUT;
            for u in files.iter_mut().filter(|u| !u.too_large && u.size > 0) {
                u.scan = Some(scan_one(&clamd, &slug, &u.data, deadline).await);
            }
        }
        Ok(Self {
            form: FormData(raw),
            files,
        })
    }
}

/// A file's name as kept: the last part of a path (some browsers send one), no
/// control or direction-changing characters (which could disguise its extension),
/// NFC (macOS sends names decomposed), ending in an extension of its kind (a JPEG
/// named `写真.bat` becomes `写真.bat.jpg`, so that opening it on a PC never runs
/// it), at most [`MAX_FILE_NAME`] characters; a name left empty becomes
/// 添付ファイル with the kind's extension.
pub fn clean_name(sent: &str, kind: FileType) -> String {
    let base = sent.rsplit(['/', '\\']).next().unwrap_or_default();
    let name: String = base
        .nfc()
        .filter(|c| {
            !c.is_control() && !matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    let name = name.trim().trim_end_matches('.');
    if name.is_empty() || name.chars().all(|c| c == '.') {
        return format!("添付ファイル.{}", kind.extension());
    }
    let own = name.rsplit_once('.').filter(|(stem, ext)| {
        !stem.is_empty()
            && kind
                .extensions()
                .contains(&ext.to_ascii_lowercase().as_str())
    });
    let (stem, ext) = match own {
        Some((stem, ext)) => (stem, ext.to_owned()),
        None => (name, kind.extension().to_owned()),
    };
    let room = MAX_FILE_NAME.saturating_sub(ext.chars().count() + 1);
    let stem: String = stem.chars().take(room).collect();
    format!("{stem}.{ext}")
}

/// Why a file cannot be taken for field `f`, in Japanese; or its kind.
pub fn check_upload(f: &Field, u: &Upload) -> Result<FileType, String> {
    let FieldKind::File { types, max_mb } = &f.kind else {
        return Err(format!("{}にはファイルを添付できません", f.label));
    };
    let mb = max_mb.unwrap_or(MAX_FILE_MB);
    let label = &f.label;
    if u.too_large || u.size > u64::from(mb) * MIB as u64 {
        return Err(format!(
            "{label}のファイルが大きすぎます（{mb}MBまで。選ばれたファイルは{}）",
            size_label(u.size)
        ));
    }
    if u.size == 0 {
        return Err(format!(
            "{label}のファイルが空です（0バイト）。別のファイルを選んでください"
        ));
    }
    match FileType::sniff(&u.data) {
        Some(kind) if types.contains(&kind) => Ok(kind),
        _ => Err(format!(
            "{label}には{}のファイルを添付してください（選ばれたファイルはこの形式ではありません）",
            file_types_label(types)
        )),
    }
}

fn content_ref(id: &str) -> FieldRef<'_> {
    FieldRef {
        table: "attachments",
        column: "content",
        row_id: id,
    }
}

/// What a page's file inputs did to a draft.
#[derive(Default)]
pub struct Applied {
    /// Files stored now (to delete if the draft is not saved).
    pub added: Vec<Uuid>,
    /// Files the draft no longer names (replaced or removed), to delete once it is saved.
    pub dropped: Vec<Uuid>,
    pub errors: Vec<FieldError>,
    /// Files the virus scan found something in: (field, signature), for [`log_found`].
    pub found: Vec<(String, String)>,
}

/// The virus scan's finds in the operation log (`attachment.infected`: the form, the
/// field and the signature; never the file or its name), each in a transaction of its
/// own.
pub async fn log_found(
    db: &mut tokio_postgres::Client,
    form_id: i64,
    found: &[(String, String)],
) -> Result<(), AppError> {
    for (field, signature) in found {
        crate::tenant::audit::record(
            db,
            &crate::tenant::audit::Actor::Citizen,
            "attachment.infected",
            &format!("form:{form_id}"),
            serde_json::json!({ "field": field, "signature": signature }),
        )
        .await?;
    }
    Ok(())
}

/// Applies a page's file inputs to the draft's `inputs`: a file sent for a field is
/// checked and stored, and replaces the one the field had; `<id>.remove` = 1 removes
/// it; a file input left empty keeps it. A file refused leaves the field as it was,
/// with the reason in `errors`.
pub async fn apply(
    ctx: &TenantCtx,
    db: &tokio_postgres::Client,
    form_id: i64,
    page: &Page,
    draft: Uuid,
    inputs: &mut Raw,
    body: &PageBody,
) -> Result<Applied, AppError> {
    let mut out = Applied::default();
    for f in page.fields.iter().filter(|f| f.kind.is_file()) {
        let had = inputs
            .get(&f.id)
            .and_then(|v| v.first())
            .and_then(|v| FileRef::from_input(v));
        if let Some(u) = body.file(&f.id) {
            match check_upload(f, u) {
                Err(message) => out.errors.push(FieldError {
                    field: f.id.clone(),
                    input: f.id.clone(),
                    message,
                }),
                Ok(kind) => {
                    if let Some(message) = scanned(ctx, form_id, f, u, &mut out.found) {
                        out.errors.push(FieldError {
                            field: f.id.clone(),
                            input: f.id.clone(),
                            message,
                        });
                        continue;
                    }
                    let file = store(ctx.cipher(), db, form_id, &f.id, draft, u, kind).await?;
                    out.added.push(file.id);
                    out.dropped.extend(had.map(|h| h.id));
                    inputs.insert(f.id.clone(), vec![file.to_input()]);
                }
            }
        } else if body.form.get(&format!("{}.remove", f.id)) == "1" {
            if let Some(h) = had {
                inputs.remove(&f.id);
                out.dropped.push(h.id);
            }
        }
    }
    Ok(out)
}

/// Scans one file with clamd by `deadline`, counting the outcome.
async fn scan_one(
    clamd: &crate::scan::Clamd,
    slug: &str,
    data: &[u8],
    deadline: tokio::time::Instant,
) -> Scan {
    let result = tokio::time::timeout_at(deadline, crate::scan::scan(clamd, data))
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the page's files were not scanned in time")));
    let (scan, outcome) = match result {
        Ok(crate::scan::Verdict::Clean) => (Scan::Clean, "clean"),
        Ok(crate::scan::Verdict::Found(signature)) => (Scan::Found(signature), "found"),
        Err(e) => {
            tracing::error!(tenant = %slug, error = %e, "the virus scan could not check an attached file");
            (Scan::Failed, "error")
        }
    };
    crate::scan::scans()
        .get_or_create(&crate::front::metrics::OutcomeLabels {
            outcome: outcome.to_owned(),
        })
        .inc();
    scan
}

/// ウイルスチェック, when the operator set a scanner: why the file is refused (something
/// found, noted in `found` for the operation log; or the scanner could not say), or
/// `None` to keep it.
fn scanned(
    ctx: &TenantCtx,
    form_id: i64,
    f: &Field,
    u: &Upload,
    found: &mut Vec<(String, String)>,
) -> Option<String> {
    ctx.clamd.as_ref()?;
    match &u.scan {
        Some(Scan::Clean) => None,
        Some(Scan::Found(signature)) => {
            tracing::warn!(tenant = %ctx.slug, form_id, field = %f.id, %signature, "an attached file was refused by the virus scan");
            found.push((f.id.clone(), signature.clone()));
            Some(format!(
                "{}のファイルからウイルスなどの不正なプログラムが見つかったため、受け付けられません。別のファイルを選んでください",
                f.label
            ))
        }
        // Not scanned although a scanner is set (it was set while this page was read),
        // or the scanner could not say: refused, never kept unscanned.
        Some(Scan::Failed) | None => Some(format!(
            "{}のファイルを、いまは安全か確認できないため受け付けられません。しばらくしてから、もう一度添付してください（ほかの入力内容は保存されています）",
            f.label
        )),
    }
}

async fn store(
    cipher: &FieldCipher,
    db: &tokio_postgres::Client,
    form_id: i64,
    field: &str,
    draft: Uuid,
    u: &Upload,
    kind: FileType,
) -> Result<FileRef, AppError> {
    let id = Uuid::new_v4();
    let sha256 = hex::encode(Sha256::digest(&u.data[..]));
    let sealed = cipher
        .encrypt(&content_ref(&id.to_string()), &u.data)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("encrypting an attachment: {e}")))?;
    let size = i64::try_from(u.data.len()).map_err(|e| AppError::Internal(e.into()))?;
    // Scanned as the page was read when a scanner is set (else not stored at all).
    let scanned = matches!(u.scan, Some(Scan::Clean));
    db.execute(
        "INSERT INTO attachments (id, form_id, field_id, draft_id, content, size, scanned_at)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN now() END)",
        &[&id, &form_id, &field, &draft, &sealed, &size, &scanned],
    )
    .await?;
    Ok(FileRef {
        id,
        name: clean_name(&u.name, kind),
        kind,
        size: u.data.len() as u64,
        sha256,
    })
}

/// Deletes a draft's own files (never a submission's).
pub async fn discard(
    db: &tokio_postgres::Client,
    draft: Uuid,
    files: &[Uuid],
) -> Result<(), AppError> {
    if !files.is_empty() {
        db.execute(
            "DELETE FROM attachments WHERE id = ANY($1) AND draft_id = $2 AND submission_id IS NULL",
            &[&files, &draft],
        )
        .await?;
    }
    Ok(())
}

/// What a citizen is told of a file found infected after it was attached.
pub const FOUND_SINCE: &str =
    "このファイルは、添付後のウイルスチェックで不正なプログラムが見つかったため送信できません。別のファイルを添付し直してください";

/// The answers' files found infected since they were attached (a draft's kept
/// before the day's signatures knew them, or an application's kept by a
/// correction), each as an error on its field: such a file is never sent on.
pub async fn found_since(
    db: &impl tokio_postgres::GenericClient,
    answers: &Answers,
) -> Result<Vec<FieldError>, AppError> {
    let files = named(answers);
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<Uuid> = db
        .query(
            "SELECT id FROM attachments WHERE id = ANY($1) AND infected IS NOT NULL",
            &[&files],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(answers
        .iter()
        .filter_map(|(field, a)| match a {
            Answer::File(f) if found.contains(&f.id) => Some(FieldError {
                field: field.clone(),
                input: field.clone(),
                message: FOUND_SINCE.into(),
            }),
            _ => None,
        })
        .collect())
}

/// The files the answers name.
pub fn named(answers: &Answers) -> Vec<Uuid> {
    answers
        .values()
        .filter_map(|a| match a {
            Answer::File(f) => Some(f.id),
            _ => None,
        })
        .collect()
}

/// In the transaction that stores (or corrects) `submission` from `draft`: the files
/// its answers name become the submission's (from the draft, or for a correction,
/// kept from the submission), and every other file of the draft, or of the
/// submission it corrects, is deleted. Refused when a named file is neither the
/// draft's nor the submission's.
pub async fn settle(
    tx: &tokio_postgres::Transaction<'_>,
    submission: Uuid,
    draft: Uuid,
    answers: &Answers,
) -> Result<(), AppError> {
    let (mut files, mut fields, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
    for (field, a) in answers {
        if let Answer::File(f) = a {
            files.push(f.id);
            fields.push(field.as_str());
            sizes.push(i64::try_from(f.size).unwrap_or(-1));
        }
    }
    // Each file as its answer names it: the same field, the same size.
    let moved = tx
        .execute(
            "UPDATE attachments a SET submission_id = $1, draft_id = NULL
               FROM unnest($2::uuid[], $4::text[], $5::bigint[]) AS n(id, field, size)
              WHERE a.id = n.id AND a.field_id = n.field AND a.size = n.size
                AND (a.draft_id = $3 OR a.submission_id = $1) AND a.infected IS NULL",
            &[&submission, &files, &draft, &fields, &sizes],
        )
        .await?;
    if usize::try_from(moved).ok() != Some(files.len()) {
        // Found infected between the check before sending and now.
        if !found_since(tx, answers).await?.is_empty() {
            return Err(AppError::Conflict(FOUND_SINCE.into()));
        }
        return Err(AppError::Conflict(
            "添付したファイルが見つかりません（保存期間が過ぎた可能性があります）。お手数ですが、ファイルをもう一度添付してから送信してください。".into(),
        ));
    }
    tx.execute(
        "DELETE FROM attachments WHERE (draft_id = $2 OR submission_id = $1) AND NOT (id = ANY($3))",
        &[&submission, &draft, &files],
    )
    .await?;
    Ok(())
}

/// Deletes files no open draft or submission holds: a draft's that expired, was
/// taken over or was sent without them. Files stored in the last hour are left (a
/// page being saved). Returns the rows deleted.
pub async fn purge_orphans(db: &tokio_postgres::Client) -> Result<u64, AppError> {
    Ok(db
        .execute(
            "DELETE FROM attachments a WHERE a.submission_id IS NULL AND a.created_at < now() - interval '1 hour'
               AND NOT EXISTS (SELECT 1 FROM citizen_drafts d WHERE d.id = a.draft_id AND d.submission_id IS NULL AND d.expires_at > now())",
            &[],
        )
        .await?)
}

/// A submission's file `file`, when its answers name it, as a download for `by`
/// (staff who may see the case, or an integration with the right scope: the caller
/// checks), recorded in the operation log with its field and id, never its name.
pub async fn serve(
    cipher: &FieldCipher,
    db: &mut tokio_postgres::Client,
    by: &crate::tenant::audit::Actor,
    submission: Uuid,
    file: Uuid,
) -> Result<Response, AppError> {
    let stored: serde_json::Value = db
        .query_opt(
            "SELECT answers FROM submissions WHERE id = $1",
            &[&submission],
        )
        .await?
        .ok_or(AppError::NotFound)?
        .get(0);
    let answers = super::citizen::decrypt_answers(cipher, submission, &stored)?;
    let (field, named) = answers
        .iter()
        .find_map(|(field, a)| match a {
            Answer::File(f) if f.id == file => Some((field.as_str(), f)),
            _ => None,
        })
        .ok_or(AppError::NotFound)?;
    let bytes = content(cipher, &*db, submission, file).await?;
    crate::tenant::audit::record(
        db,
        by,
        "attachment.download",
        &submission.to_string(),
        serde_json::json!({ "field": field, "file": file }),
    )
    .await?;
    Ok(download(named, bytes))
}

/// A file of the browser's own open draft (or of the application it corrects),
/// for the citizen to check what they attached. Only a draft whose answers name the
/// file opens it; nothing is logged (it is the citizen's own).
pub async fn own_file(
    ctx: TenantCtx,
    axum::extract::Path((public_id, file)): axum::extract::Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Result<Response, AppError> {
    let file = Uuid::parse_str(&file).map_err(|_| AppError::NotFound)?;
    let db = ctx.db().await?;
    let (_, _, draft) = match super::citizen::open_draft(&ctx, &db, &public_id, &headers).await? {
        Ok(found) => found,
        Err(elsewhere) => return Ok(elsewhere),
    };
    let named = draft
        .inputs
        .values()
        .filter_map(|vs| vs.first())
        .filter_map(|v| FileRef::from_input(v))
        .find(|f| f.id == file)
        .ok_or(AppError::NotFound)?;
    let row = db
        .query_opt(
            "SELECT content, infected FROM attachments
              WHERE id = $1 AND ((draft_id = $2 AND submission_id IS NULL) OR submission_id = $3)",
            &[&file, &draft.id, &draft.resubmit_of],
        )
        .await?
        .ok_or(AppError::NotFound)?;
    // Found infected since it was attached: the citizen attaches another.
    if row.get::<_, Option<String>>(1).is_some() {
        return Err(AppError::Conflict(
            "このファイルは、ウイルスチェックで不正なプログラムが見つかったため開けません。別のファイルを添付し直してください".into(),
        ));
    }
    let bytes = open_content(ctx.cipher(), file, row.get(0))?;
    let mut resp = download(&named, bytes);
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, private"),
    );
    Ok(resp)
}

/// The content of a submission's file; `Conflict` (with what to do) for a file found
/// infected since it was stored, which is never handed out.
pub async fn content(
    cipher: &FieldCipher,
    db: &impl tokio_postgres::GenericClient,
    submission: Uuid,
    file: Uuid,
) -> Result<Zeroizing<Vec<u8>>, AppError> {
    let row = db
        .query_opt(
            "SELECT content, infected FROM attachments WHERE id = $1 AND submission_id = $2",
            &[&file, &submission],
        )
        .await?
        .ok_or(AppError::NotFound)?;
    if let Some(signature) = row.get::<_, Option<String>>(1) {
        return Err(AppError::Conflict(withheld(&signature)));
    }
    open_content(cipher, file, row.get(0))
}

/// A submission's files found infected since they were stored, with the signature.
pub async fn infected_files(
    db: &impl tokio_postgres::GenericClient,
    submission: Uuid,
) -> Result<std::collections::HashMap<Uuid, String>, AppError> {
    Ok(db
        .query(
            "SELECT id, infected FROM attachments WHERE submission_id = $1 AND infected IS NOT NULL",
            &[&submission],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Why a file found infected after it was stored is not handed out, and what to do.
pub fn withheld(signature: &str) -> String {
    format!(
        "このファイルは、保存後のウイルスチェックで不正なプログラム（{signature}）が見つかったため、取り出せません。必要な場合は、申請者に別の方法での提出を依頼してください"
    )
}

/// A file's stored content, decrypted.
pub(crate) fn open_content(
    cipher: &FieldCipher,
    file: Uuid,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, AppError> {
    cipher
        .decrypt(&content_ref(&file.to_string()), sealed)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("decrypting an attachment: {e}")))
}

/// A file sent to be saved, never shown in the page: its kind's type, its name
/// (RFC 6266, UTF-8), no sniffing, and a sandbox should a browser open it anyway.
pub fn download(file: &FileRef, mut content: Zeroizing<Vec<u8>>) -> Response {
    let ascii: String = file
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = form_urlencoded::byte_serialize(file.name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
        // RFC 8187: `*` is not an attr-char either.
        .replace('*', "%2A");
    let disposition = format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}");
    // Handed to the response as it is, not copied.
    let mut resp = (StatusCode::OK, std::mem::take(&mut *content)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(file.kind.mime()),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; sandbox"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_paths_controls_and_length_but_keep_their_extension() {
        assert_eq!(
            clean_name("C:\\fakepath\\住民票.pdf", FileType::Pdf),
            "住民票.pdf"
        );
        assert_eq!(clean_name("/home/a/b.png", FileType::Png), "b.png");
        // U+202E would show 「gpj.exe」 as 「exe.jpg」.
        assert_eq!(
            clean_name("写真\u{202E}gpj.exe", FileType::Jpeg),
            "写真gpj.exe.jpg"
        );
        // The name always ends as its kind does, in any case.
        assert_eq!(clean_name("写真.bat", FileType::Jpeg), "写真.bat.jpg");
        assert_eq!(clean_name("IMG_0001.JPEG", FileType::Jpeg), "IMG_0001.JPEG");
        assert_eq!(clean_name("scan.pdf.", FileType::Pdf), "scan.pdf");
        assert_eq!(clean_name(".pdf", FileType::Pdf), ".pdf.pdf");
        assert_eq!(clean_name("図面", FileType::Png), "図面.png");
        let long_exe = format!("{}.exe", "申".repeat(300));
        let kept = clean_name(&long_exe, FileType::Png);
        assert_eq!(kept.chars().count(), MAX_FILE_NAME);
        assert!(kept.ends_with("申.png"), "{kept}");
        assert_eq!(clean_name("a\u{0}b\nc.pdf", FileType::Pdf), "abc.pdf");
        // macOS: が as か + ゛.
        assert_eq!(clean_name("か\u{3099}.pdf", FileType::Pdf), "が.pdf");
        assert_eq!(clean_name("", FileType::Jpeg), "添付ファイル.jpg");
        assert_eq!(clean_name(" .. ", FileType::Png), "添付ファイル.png");
        let long = format!("{}.pdf", "申".repeat(300));
        let kept = clean_name(&long, FileType::Pdf);
        assert_eq!(kept.chars().count(), MAX_FILE_NAME);
        assert!(kept.ends_with("申.pdf"));
        // An IVS is a valid character and is kept.
        assert_eq!(
            clean_name("葛\u{E0100}飾.pdf", FileType::Pdf),
            "葛\u{E0100}飾.pdf"
        );
    }

    fn page(chunks: Vec<Vec<u8>>, origin: Option<&str>) -> Request {
        let body = axum::body::Body::from_stream(futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(c))),
        ));
        let mut b = Request::builder()
            .method("POST")
            .uri("/f/abc123")
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=x");
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        b.body(body).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn a_page_with_files_is_read_ahead_holding_room_for_what_it_sent() {
        const SITE: &str = "https://city.example.jp";
        assert!(is_page_upload(&page(Vec::new(), None)));
        // A byte at a time holds a KiB per 1,024 bytes sent, not per piece.
        let (req, room) = read_ahead(page(vec![vec![b'a']; 2048], Some(SITE)), SITE)
            .await
            .unwrap_or_else(|r| panic!("{}", r.status()));
        assert_eq!(room.as_ref().map(|r| r.num_permits()), Some(2));
        assert!(req.extensions().get::<ReadAhead>().is_some());
        let body = axum::body::to_bytes(req.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        assert_eq!(body.len(), 2048);
        drop(room);
        // Larger than a page may be: refused, its room given back.
        let before = MEMORY.available_permits();
        let refused = read_ahead(page(vec![vec![0; MIB]; 21], Some(SITE)), SITE).await;
        assert_eq!(
            refused.err().map(|r| r.status()),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(MEMORY.available_permits(), before);
        // From elsewhere (another Origin, no cookie): passed on unread, and the
        // extractor then refuses it.
        let (req, room) = read_ahead(
            page(vec![vec![b'a']; 10], Some("https://evil.example")),
            SITE,
        )
        .await
        .unwrap_or_else(|r| panic!("{}", r.status()));
        assert!(room.is_none());
        assert!(req.extensions().get::<ReadAhead>().is_none());
        let refused = PageBody::from_request(req, &()).await;
        assert!(matches!(refused, Err(AppError::Csrf)));
        // No room within MEMORY_WAIT: asked to try again, holding nothing.
        let all = u32::try_from(MEMORY.available_permits()).unwrap_or(u32::MAX);
        let taken = Arc::clone(&MEMORY).try_acquire_many_owned(all).ok();
        let started = std::time::Instant::now();
        let busy = read_ahead(page(vec![vec![b'a']; 10], Some(SITE)), SITE).await;
        assert_eq!(
            busy.err().map(|r| r.status()),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert!(started.elapsed() >= MEMORY_WAIT);
        drop(taken);
        assert_eq!(MEMORY.available_permits(), before);
    }

    #[test]
    fn files_are_known_by_their_first_bytes() {
        assert_eq!(FileType::sniff(b"%PDF-1.7\n"), Some(FileType::Pdf));
        assert_eq!(
            FileType::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(FileType::Jpeg)
        );
        assert_eq!(
            FileType::sniff(b"\x89PNG\r\n\x1a\n\0\0"),
            Some(FileType::Png)
        );
        assert_eq!(FileType::sniff(b"MZ\x90\0"), None);
        assert_eq!(FileType::sniff(b"\0\0\0\x18ftypheic"), None);
        assert_eq!(FileType::sniff(b""), None);
    }

    fn field(types: Vec<FileType>, max_mb: Option<u32>) -> Field {
        Field {
            id: "doc".into(),
            label: "住民票の写し".into(),
            help: String::new(),
            required: true,
            placeholder: String::new(),
            show_if: None,
            kind: FieldKind::File { types, max_mb },
        }
    }

    fn upload(data: &[u8]) -> Upload {
        Upload {
            input: "doc".into(),
            name: "x.pdf".into(),
            data: Zeroizing::new(data.to_vec()),
            too_large: false,
            size: data.len() as u64,
            scan: None,
        }
    }

    #[test]
    fn an_upload_is_refused_with_the_reason_for_its_field() {
        let f = field(vec![FileType::Pdf], Some(1));
        assert_eq!(
            check_upload(&f, &upload(b"%PDF-1.4 ...")),
            Ok(FileType::Pdf)
        );
        let png = check_upload(&f, &upload(b"\x89PNG\r\n\x1a\n"))
            .err()
            .unwrap_or_default();
        assert!(png.contains("住民票の写しにはPDFのファイルを"), "{png}");
        let empty = check_upload(&f, &upload(b"")).err().unwrap_or_default();
        assert!(empty.contains("空です"), "{empty}");
        let mut big = upload(b"%PDF-");
        big.size = 1024 * 1024 + 1;
        let big = check_upload(&f, &big).err().unwrap_or_default();
        assert!(big.contains("1MBまで") && big.contains("1.1 MB"), "{big}");
        let mut huge = upload(b"");
        huge.too_large = true;
        huge.size = 50 * 1024 * 1024;
        assert!(check_upload(&f, &huge)
            .err()
            .unwrap_or_default()
            .contains("大きすぎます"));
    }
}
