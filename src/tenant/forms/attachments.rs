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
/// Uploaded bytes held in memory at once, across every request of the process.
pub const MEMORY_BUDGET: usize = 192 * MIB;
/// How long an upload waits for room within [`MEMORY_BUDGET`].
pub const MEMORY_WAIT: Duration = Duration::from_secs(5);
/// How long a request carrying files may take (a phone on a slow network sending
/// [`MAX_PAGE_FILES_MB`] MB); other requests have `front::REQUEST_TIMEOUT`.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Characters of a file's name kept (its extension included).
pub const MAX_FILE_NAME: usize = 100;

/// Room for uploads in memory, in KiB.
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
    /// Room taken within [`MEMORY_BUDGET`], given back when the request is done.
    _room: Option<OwnedSemaphorePermit>,
}

impl PageBody {
    pub fn file(&self, input: &str) -> Option<&Upload> {
        self.files
            .iter()
            .find(|u| u.input == input && !u.is_empty())
    }
}

fn busy() -> AppError {
    AppError::Unavailable {
        retry_after_secs: 10,
    }
}

fn unreadable(e: &axum::extract::multipart::MultipartError) -> AppError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge
    } else {
        AppError::BadRequest("送信内容を読み取れませんでした。もう一度送信してください。".into())
    }
}

/// Takes room for `bytes` more within [`MEMORY_BUDGET`], waiting up to
/// [`MEMORY_WAIT`].
async fn take_room(room: &mut Option<OwnedSemaphorePermit>, bytes: usize) -> Result<(), AppError> {
    let kib = u32::try_from(bytes.div_ceil(1024)).map_err(|_| AppError::PayloadTooLarge)?;
    let more = tokio::time::timeout(MEMORY_WAIT, Arc::clone(&MEMORY).acquire_many_owned(kib))
        .await
        .map_err(|_| {
            tracing::warn!("uploads in memory at their limit; an upload was asked to try again");
            busy()
        })?
        .map_err(|_| busy())?;
    match room {
        Some(r) => r.merge(more),
        None => *room = Some(more),
    }
    Ok(())
}

impl<S: Send + Sync> FromRequest<S> for PageBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let multipart = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("multipart/form-data"))
            });
        if !multipart {
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
                _room: None,
            });
        }
        // Limited by the route's `DefaultBodyLimit` (MAX_PAGE_BODY).
        let mut parts = Multipart::from_request(req, state)
            .await
            .map_err(|_| AppError::BadRequest("フォームの送信形式が正しくありません。".into()))?;
        let mut raw = Raw::new();
        let mut text_bytes = 0usize;
        let mut files = Vec::new();
        let mut room = None;
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
            let mut upload = Upload {
                input,
                name,
                data: Zeroizing::new(Vec::new()),
                too_large: false,
                size: 0,
            };
            while let Some(chunk) = part.chunk().await.map_err(|e| unreadable(&e))? {
                upload.size += chunk.len() as u64;
                if upload.size > MAX_FILE_BYTES as u64 {
                    upload.too_large = true;
                    upload.data = Zeroizing::new(Vec::new());
                }
                if keep && !upload.too_large {
                    take_room(&mut room, chunk.len()).await?;
                    upload.data.extend_from_slice(&chunk);
                }
            }
            if keep {
                files.push(upload);
            }
        }
        Ok(Self {
            form: FormData(raw),
            files,
            _room: room,
        })
    }
}

/// A file's name as kept: the last part of a path (some browsers send one), no
/// control or direction-changing characters (which could disguise its extension),
/// NFC (macOS sends names decomposed), at most [`MAX_FILE_NAME`] characters with its
/// extension kept; a name left empty becomes 添付ファイル with the kind's extension.
pub fn clean_name(sent: &str, kind: FileType) -> String {
    let base = sent.rsplit(['/', '\\']).next().unwrap_or_default();
    let name: String = base
        .nfc()
        .filter(|c| {
            !c.is_control() && !matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    let name = name.trim();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        return format!("添付ファイル.{}", kind.extension());
    }
    if name.chars().count() <= MAX_FILE_NAME {
        return name.to_owned();
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() && e.chars().count() <= 10 => (s, Some(e)),
        _ => (name, None),
    };
    let room = MAX_FILE_NAME - ext.map_or(0, |e| e.chars().count() + 1);
    let stem: String = stem.chars().take(room).collect();
    match ext {
        Some(e) => format!("{stem}.{e}"),
        None => stem,
    }
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
    db.execute(
        "INSERT INTO attachments (id, form_id, field_id, draft_id, content, size) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&id, &form_id, &field, &draft, &sealed, &size],
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
    let files = named(answers);
    let moved = tx
        .execute(
            "UPDATE attachments SET submission_id = $1, draft_id = NULL
              WHERE id = ANY($2) AND (draft_id = $3 OR submission_id = $1)",
            &[&submission, &files, &draft],
        )
        .await?;
    if usize::try_from(moved).ok() != Some(files.len()) {
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

/// A submission's file `file` and its content, if the submission's answers name it.
pub async fn of_submission<'a>(
    cipher: &FieldCipher,
    db: &tokio_postgres::Client,
    submission: Uuid,
    answers: &'a Answers,
    file: Uuid,
) -> Result<(&'a str, &'a FileRef, Zeroizing<Vec<u8>>), AppError> {
    let (field, named) = answers
        .iter()
        .find_map(|(field, a)| match a {
            Answer::File(f) if f.id == file => Some((field.as_str(), f)),
            _ => None,
        })
        .ok_or(AppError::NotFound)?;
    Ok((field, named, content(cipher, db, submission, file).await?))
}

/// The content of a submission's file.
pub async fn content(
    cipher: &FieldCipher,
    db: &impl tokio_postgres::GenericClient,
    submission: Uuid,
    file: Uuid,
) -> Result<Zeroizing<Vec<u8>>, AppError> {
    let row = db
        .query_opt(
            "SELECT content FROM attachments WHERE id = $1 AND submission_id = $2",
            &[&file, &submission],
        )
        .await?
        .ok_or(AppError::NotFound)?;
    cipher
        .decrypt(&content_ref(&file.to_string()), row.get(0))
        .map_err(|e| AppError::Internal(anyhow::anyhow!("decrypting an attachment: {e}")))
}

/// A file sent to be saved, never shown in the page: its kind's type, its name
/// (RFC 6266, UTF-8), no sniffing, and a sandbox should a browser open it anyway.
pub fn download(file: &FileRef, content: &[u8]) -> Response {
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
        .replace('+', "%20");
    let disposition = format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}");
    let mut resp = (StatusCode::OK, content.to_vec()).into_response();
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
            "写真gpj.exe"
        );
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
