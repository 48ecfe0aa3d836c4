//! The final export handed to a municipality before its data is erased: every form
//! (all published versions, as `madoguchi.form/1` JSON) and every submission, one
//! CSV per form (UTF-8 with BOM, as staff exports) and every attached file (添付ファイル,
//! in `files-<form>/`, named `<受付番号>_<field>.<ext>`), in `DIR/exports/<slug>-<time>/`
//! (directories 0700, files 0600: they hold personal data in clear).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::certificate::{ExportFile, FinalExport};
use super::tenant_admin::tenant_cipher;
use crate::catalog::{quote_ident, TenantRecord};
use crate::platform::Platform;
use crate::tenant::cases::Status;
use crate::tenant::forms::answers::Answer;
use crate::tenant::forms::attachments;
use crate::tenant::forms::citizen::{decrypt_answers, jst};
use crate::tenant::forms::definition::FormDefinition;

const BATCH: i64 = 500;

/// The tenant's final exports still on the platform's disk: the folder an export
/// writes (`DIR/exports/<slug>-<YYYYMMDDTHHMMSSZ>`) and anything named from it, such
/// as an archive or a copy of it made for the hand-over (`…Z.zip`, `…Z-copy`). Another
/// tenant whose slug begins with this one's is not matched: what follows `<slug>-`
/// must begin with the time stamp.
pub fn left_on_disk(state_dir: &Path, slug: &str) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(state_dir.join("exports")) else {
        return Vec::new();
    };
    let prefix = format!("{slug}-");
    let stamped = |rest: &[u8]| {
        rest.len() >= 16
            && rest[..16].iter().enumerate().all(|(i, b)| match i {
                8 => *b == b'T',
                15 => *b == b'Z',
                _ => b.is_ascii_digit(),
            })
    };
    let mut out: Vec<std::path::PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let rest = name.to_str().and_then(|n| n.strip_prefix(&prefix));
            rest.is_some_and(|r| stamped(r.as_bytes()))
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// A file being written and hashed.
struct Out {
    file: std::io::BufWriter<std::fs::File>,
    hash: Sha256,
    size: u64,
    name: String,
}

impl Out {
    fn create(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let path = dir.join(name);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            file: std::io::BufWriter::new(f),
            hash: Sha256::new(),
            size: 0,
            name: name.to_owned(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.file.write_all(bytes)?;
        self.hash.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<ExportFile> {
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        Ok(ExportFile {
            name: self.name,
            sha256: hex::encode(self.hash.finalize()),
            size: self.size,
        })
    }
}

/// One CSV line, written as the staff's downloads are (a cell a spreadsheet would
/// run as a formula is written as text): this is the file the municipality opens.
fn csv_line(fields: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut w = crate::tenant::spreadsheet::writer(false);
    crate::tenant::spreadsheet::write_row(&mut w, fields)?;
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

/// Makes sure nothing is written to the tenant's database after the export's
/// snapshot, and that what requests already under way store is in it.
///
/// A request routed just before the closure may still be waiting for a connection
/// when the export looks: waiting for sessions to go quiet is not enough. So the
/// tenant's role is made read-only for new sessions (the control plane's own
/// connections turn it off for themselves, see [`crate::control::cluster::Cluster::connect_tenant`]),
/// statements under way get up to `wait` to finish, and every session opened before
/// is ended: what a request stores after that point is refused (503, never
/// acknowledged), never stored unexported. Resuming the tenant lifts it
/// ([`reopen_writes`]).
async fn quiesce(
    p: &Platform,
    rec: &TenantRecord,
    wait: std::time::Duration,
) -> anyhow::Result<()> {
    // The servers learn of the closure by NOTIFY, within milliseconds; a second
    // covers a busy one before the connections are looked at.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let admin = p.cluster.admin().await?;
    admin
        .client
        .batch_execute(&format!(
            "ALTER ROLE {} SET default_transaction_read_only = on",
            quote_ident(&rec.role)
        ))
        .await?;
    let until = std::time::Instant::now() + wait;
    loop {
        let busy: i64 = admin
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = $1 AND usename = $2
                    AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')",
                &[&rec.database, &rec.role],
            )
            .await?
            .get(0);
        if busy == 0 {
            break;
        }
        if std::time::Instant::now() >= until {
            anyhow::bail!(
                "tenant {} still has {busy} request(s) in progress after it was closed; try the export again (`madoguchi tenant resume {}` opens it again)",
                rec.slug,
                rec.slug
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Sessions opened before the role became read-only can still write: ended, each
    // waited for (5 s). One that began a transaction since the look above loses it,
    // uncommitted and so never acknowledged.
    admin
        .client
        .execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
            &[&rec.database, &rec.role],
        )
        .await?;
    Ok(())
}

/// Lets the tenant's requests write again after a final export closed its database
/// to them ([`quiesce`]); harmless when none did. Called wherever a tenant is opened
/// again: resuming it, withdrawing its decommissioning.
pub async fn reopen_writes(p: &Platform, rec: &TenantRecord) -> anyhow::Result<()> {
    p.cluster
        .admin()
        .await?
        .client
        .batch_execute(&format!(
            "ALTER ROLE {} RESET default_transaction_read_only",
            quote_ident(&rec.role)
        ))
        .await?;
    Ok(())
}

/// Writes the export and returns what it holds.
pub async fn export(p: &Platform, rec: &TenantRecord) -> anyhow::Result<FinalExport> {
    let cipher = tenant_cipher(p, rec).await?;
    quiesce(p, rec, std::time::Duration::from_secs(10)).await?;
    let mut conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    // One snapshot for every file: forms and submissions as of one moment.
    let db = conn
        .client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let db = &db;
    let stamp = time::OffsetDateTime::now_utc().format(&time::macros::format_description!(
        "[year][month][day]T[hour][minute][second]Z"
    ))?;
    let dir = p
        .settings
        .state_dir
        .join("exports")
        .join(format!("{}-{stamp}", rec.slug));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();

    let forms = db
        .query(
            "SELECT f.id, f.public_id, v.version, v.definition, v.published_at
               FROM forms f JOIN form_versions v ON v.form_id = f.id ORDER BY f.id, v.version",
            &[],
        )
        .await?;
    let mut out = Out::create(&dir, "forms.json")?;
    let all: Vec<serde_json::Value> = forms
        .iter()
        .map(|r| {
            serde_json::json!({
                "public_id": r.get::<_, String>(1),
                "version": r.get::<_, i32>(2),
                "published_at": jst(r.get(4)),
                "definition": r.get::<_, serde_json::Value>(3),
            })
        })
        .collect();
    out.write(serde_json::to_string_pretty(&all)?.as_bytes())?;
    files.push(out.finish()?);

    // One CSV per form: columns are the union of its versions' fields.
    let mut form_ids: Vec<(i64, String)> = forms.iter().map(|r| (r.get(0), r.get(1))).collect();
    form_ids.dedup();
    for (form_id, public_id) in form_ids {
        let mut cols: Vec<(String, String)> = Vec::new();
        for r in forms.iter().filter(|r| r.get::<_, i64>(0) == form_id) {
            let def: FormDefinition = serde_json::from_value(r.get(3))?;
            for f in def.fields().filter(|f| f.kind.takes_answer()) {
                match cols.iter_mut().find(|(id, _)| *id == f.id) {
                    Some(c) => c.1.clone_from(&f.label),
                    None => cols.push((f.id.clone(), f.label.clone())),
                }
            }
        }
        crate::control::progress::step(&format!("final export: submissions of form {public_id}"));
        let mut out = Out::create(&dir, &format!("submissions-{public_id}.csv"))?;
        out.write("\u{feff}".as_bytes())?;
        let mut header: Vec<String> = ["受付番号", "受付日時", "版", "状態"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        header.extend(cols.iter().map(|(_, l)| l.clone()));
        // 代理入力: how each application came, who entered it and the identity
        // document they saw (empty for those sent online).
        header.extend(
            [
                "受付方法",
                "代理入力した職員",
                "代理入力の本人確認書類",
                "受付期間外の代理入力",
            ]
            .map(str::to_owned),
        );
        out.write(&csv_line(&header)?)?;
        let mut after: Option<(time::OffsetDateTime, uuid::Uuid)> = None;
        let mut attached = Vec::new();
        loop {
            let rows = db
                .query(
                    "SELECT s.id, s.receipt_number, s.submitted_at, s.form_version, s.status, s.answers,
                            p.channel, st.email, p.identity_document, p.outside_period
                       FROM submissions s LEFT JOIN proxy_entries p ON p.submission_id = s.id
                       LEFT JOIN staff st ON st.id = p.staff_id
                      WHERE s.form_id = $1 AND ($2::timestamptz IS NULL OR (s.submitted_at, s.id) > ($2, $3))
                      ORDER BY s.submitted_at, s.id LIMIT $4",
                    &[&form_id, &after.map(|a| a.0), &after.map(|a| a.1), &BATCH],
                )
                .await?;
            for r in &rows {
                let id: uuid::Uuid = r.get(0);
                let answers = decrypt_answers(&cipher, id, &r.get(5))
                    .map_err(|e| anyhow::anyhow!("submission {id}: {e}"))?;
                let status: String = r.get(4);
                let mut line = vec![
                    r.get::<_, String>(1),
                    jst(r.get(2)),
                    r.get::<_, i32>(3).to_string(),
                    Status::parse(&status).map_or(status.clone(), |s| s.label().to_owned()),
                ];
                line.extend(
                    cols.iter()
                        .map(|(f, _)| answers.get(f).map(|a| a.display()).unwrap_or_default()),
                );
                line.extend(entered_cells(r));
                out.write(&csv_line(&line)?)?;
                // 添付ファイル: each in files-<form>/, named by receipt number and field
                // (the CSV gives the name the applicant's device gave).
                for (field, a) in &answers {
                    let Answer::File(file) = a else { continue };
                    // A file found infected since it was stored: a note in its place.
                    let (content, extension) =
                        match attachments::content(&cipher, db, id, file.id).await {
                            Err(crate::error::AppError::Conflict(why)) => (
                                zeroize::Zeroizing::new(format!("{why}\r\n").into_bytes()),
                                "infected.txt",
                            ),
                            found => (
                                found.map_err(|e| {
                                    anyhow::anyhow!("submission {id}, file {}: {e}", file.id)
                                })?,
                                file.kind.extension(),
                            ),
                        };
                    let folder = format!("files-{public_id}");
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir.join(&folder))
                        .with_context(|| format!("creating {folder}"))?;
                    let mut f =
                        Out::create(&dir, &format!("{folder}/{}_{field}.{extension}", line[0]))?;
                    f.write(&content)?;
                    attached.push(f.finish()?);
                }
            }
            match rows.last() {
                Some(last) if rows.len() as i64 == BATCH => {
                    after = Some((last.get(2), last.get(0)))
                }
                _ => break,
            }
        }
        files.push(out.finish()?);
        files.extend(attached);
    }
    // Last, the list of every file's hash, which anyone can check the copy handed
    // over with (`sha256sum -c SHA256SUMS`); the signed request records it too.
    let mut sums = Out::create(&dir, CHECKSUMS)?;
    for f in &files {
        sums.write(format!("{}  {}\n", f.sha256, f.name).as_bytes())?;
    }
    files.push(sums.finish()?);
    Ok(FinalExport {
        directory: dir.display().to_string(),
        files,
    })
}

/// The checksum list written last into every final export, in the form
/// `sha256sum -c` reads.
pub const CHECKSUMS: &str = "SHA256SUMS";

/// How a copy of a final export compares with the files its decommissioning request
/// recorded (name, size and SHA-256), which the requesting operator signed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    pub matching: usize,
    /// Recorded, and not in the copy.
    pub missing: Vec<String>,
    /// In the copy with another size or content.
    pub differing: Vec<String>,
}

/// Compares the files under `dir` (a copy of the tenant's final export, wherever it
/// is now: the platform's folder, the medium handed over, the municipality's own
/// copy) with what the tenant's latest decommissioning request recorded. For the
/// operators before they delete the platform's copy and erase, and for an auditor
/// after.
pub async fn compare(p: &Platform, slug: &str, dir: &Path) -> anyhow::Result<Comparison> {
    let rec = p
        .catalog
        .tenant_by_slug(slug)
        .await?
        .with_context(|| format!("テナント {slug} はありません / no tenant {slug}"))?;
    let row = p
        .catalog
        .client()
        .await?
        .query_opt(
            "SELECT request FROM decommissions WHERE tenant_id = $1 ORDER BY requested_at DESC LIMIT 1",
            &[&rec.id],
        )
        .await?
        .with_context(|| {
            format!("{slug} の廃止依頼はありません / tenant {slug} has no decommissioning request")
        })?;
    let request: super::certificate::Request = serde_json::from_str(row.get::<_, &str>(0))?;
    let export = request.final_export.with_context(|| {
        format!(
            "{slug} の廃止依頼は最終エクスポートを作成していません / the request made no final export"
        )
    })?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut out = Comparison::default();
        for f in &export.files {
            match hash_file(&dir.join(&f.name)) {
                Ok((sha, size)) if sha == f.sha256 && size == f.size => out.matching += 1,
                Ok(_) => out.differing.push(f.name.clone()),
                Err(_) => out.missing.push(f.name.clone()),
            }
        }
        out
    })
    .await
    .context("comparing the final export")
}

/// A file's SHA-256 (hex) and size, read in pieces.
fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hash.finalize()), size))
}

/// The final export's 代理入力 cells of a row (columns 6 to 9 of its query).
fn entered_cells(r: &tokio_postgres::Row) -> [String; 4] {
    use crate::tenant::forms::proxy::{Channel, Document};
    let Some(channel) = r.get::<_, Option<&str>>(6).and_then(Channel::parse) else {
        return [
            "オンライン".to_owned(),
            String::new(),
            String::new(),
            String::new(),
        ];
    };
    [
        format!("代理入力（{}）", channel.label()),
        r.get::<_, Option<String>>(7).unwrap_or_default(),
        r.get::<_, Option<&str>>(8)
            .and_then(Document::parse)
            .map_or_else(String::new, |d| d.label().to_owned()),
        if r.get::<_, Option<bool>>(9) == Some(true) {
            "はい".to_owned()
        } else {
            String::new()
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::left_on_disk;

    #[test]
    fn an_export_left_on_disk_is_found_under_any_name_made_from_its_own() {
        let dir = std::env::temp_dir().join(format!("madoguchi-exports-{}", std::process::id()));
        let exports = dir.join("exports");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(exports.join("chiyoda-20261126T030000Z"))
            .unwrap_or_else(|e| panic!("{e}"));
        for name in [
            "chiyoda-20261126T030000Z.zip",
            "chiyoda-20261126T030000Z-copy",
            // Another tenant's (chiyoda-kita), and names that are not exports.
            "chiyoda-kita-20261126T030000Z",
            "chiyoda-notes.txt",
            "chiyoda-2026.zip",
        ] {
            std::fs::write(exports.join(name), b"").unwrap_or_else(|e| panic!("{e}"));
        }
        let found: Vec<String> = left_on_disk(&dir, "chiyoda")
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        assert_eq!(
            found,
            [
                "chiyoda-20261126T030000Z",
                "chiyoda-20261126T030000Z-copy",
                "chiyoda-20261126T030000Z.zip"
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
