//! The platform's own signing keys (the platform key that co-signs erasure
//! certificates and the log key that signs transparency-log checkpoints), kept in
//! the state directory like the master key, and operators' Ed25519 keys.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use zeroize::Zeroizing;

use super::key_transition::{same_key, Role, Transition};
use crate::crypto::note::NoteSigner;

/// Loads a signing key from a 0600 file holding its base64 seed, creating it first if
/// asked to. Refused when group or others can read it.
pub fn load_signer(path: &Path, name: &str, create: bool) -> anyhow::Result<NoteSigner> {
    if !path.exists() {
        if !create {
            bail!("key file {} does not exist", path.display());
        }
        let signer = NoteSigner::generate(name).map_err(|e| anyhow::anyhow!("{e}"))?;
        write_secret(path, &B64.encode(*signer.seed()))?;
    }
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "key file {} is readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    let text = Zeroizing::new(
        fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    let seed = Zeroizing::new(B64.decode(text.trim()).context("key file is not base64")?);
    NoteSigner::from_seed(name, &seed).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

/// The platform key (co-signs certificates): `DIR/platform.key`.
pub async fn platform_signer(p: &crate::platform::Platform) -> anyhow::Result<NoteSigner> {
    first_or_kept(p, Role::Platform).await
}

/// The log key (signs checkpoints): `DIR/tlog.key`; its name is the log's origin.
pub async fn log_signer(p: &crate::platform::Platform) -> anyhow::Result<NoteSigner> {
    first_or_kept(p, Role::Log).await
}

/// The file in the state directory and the key name of each signing key.
pub fn file_and_name(role: Role) -> (&'static str, &'static str) {
    match role {
        Role::Platform => ("platform.key", "madoguchi-platform"),
        Role::Log => ("tlog.key", "madoguchi.erasure-log"),
    }
}

/// Where a rotation writes the new key before the catalog records it.
fn new_file(file: &str) -> String {
    format!("{file}.new")
}

/// Where a rotation keeps the key it replaced: named by the key's hash, so a
/// restore from before the rotation finds it.
fn retired_file(file: &str, verifier: &str) -> String {
    let hash = verifier.split('+').nth(1).unwrap_or("unknown");
    format!("{file}.retired-{hash}")
}

/// A rotation that committed in the catalog but did not put its new key in place
/// (it was cut short, or this process looked in between): the new file is renamed
/// over the old one, which the rotation kept aside first.
fn settle_rotation(
    dir: &Path,
    file: &str,
    name: &str,
    recorded: Option<&str>,
) -> anyhow::Result<()> {
    let new_path = dir.join(new_file(file));
    let Some(recorded) = recorded else {
        return Ok(());
    };
    if !new_path.exists() {
        return Ok(());
    }
    let Ok(next) = load_signer(&new_path, name, false) else {
        return Ok(());
    };
    if !same_key(recorded, &next.verifier_key()) {
        // Not committed (yet, or ever): the rotation in progress, or the next one,
        // deals with it.
        return Ok(());
    }
    match fs::rename(&new_path, dir.join(file)) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("putting {} in place", new_path.display())),
    }
}

/// Makes the directory's entries (a new file, a rename) survive a power cut.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// A platform signing key, made on first use only. Its public form is recorded in
/// the catalog when it is first made or read (it may have been handed out, or put in
/// a pending certificate, since), and from then on a missing file is refused, and so
/// is a file holding another key: a new key would leave every certificate and
/// checkpoint unverifiable against the public key municipalities and auditors keep.
/// (The erasure log's entries count as a record too, for a catalog from before the
/// record.)
async fn first_or_kept(p: &crate::platform::Platform, role: Role) -> anyhow::Result<NoteSigner> {
    let (file, name) = file_and_name(role);
    let dir = &p.settings.state_dir;
    let path = dir.join(file);
    let mut recorded = p.catalog.recorded_key(file).await?;
    settle_rotation(dir, file, name, recorded.as_deref())?;
    if !path.exists() {
        let signed = p.catalog.tlog_size().await?;
        if recorded.is_some() || signed > 0 {
            bail!(
                "{path} がありません。この鍵の公開鍵は記録済みで、消去の記録（{signed}件）の署名にも使われています。保管先から鍵を戻してください（新しい鍵を作ると、これまでの証明書とチェックポイントを検証できなくなります） / {path} is missing, but its public key was recorded (and {signed} erasure-log entries were signed with it): restore it from escrow (a new key would leave every certificate and checkpoint unverifiable)",
                path = path.display()
            );
        }
    }
    let mut signer = load_signer(&path, name, true)?;
    let mut public = signer.verifier_key();
    if recorded.as_deref().is_some_and(|r| r != public) {
        // A rotation may have committed and swapped the files between the two reads.
        recorded = p.catalog.recorded_key(file).await?;
        settle_rotation(dir, file, name, recorded.as_deref())?;
        signer = load_signer(&path, name, false)?;
        public = signer.verifier_key();
    }
    match recorded {
        Some(r) if r != public => {
            let kept = dir.join(retired_file(file, &r));
            bail!(
                "{path} は記録されている鍵（{r}）ではありません。保管先の鍵を戻してください{hint} / {path} is not the key recorded ({r}): restore the escrowed one{hint_en}",
                path = path.display(),
                hint = if kept.exists() {
                    format!("（鍵の更新で退けた鍵が {} にあります）", kept.display())
                } else {
                    String::new()
                },
                hint_en = if kept.exists() {
                    format!(" (a rotation kept that key as {})", kept.display())
                } else {
                    String::new()
                },
            )
        }
        Some(_) => {}
        None => p.catalog.record_key(file, &public).await?,
    }
    Ok(signer)
}

/// An operator's public key line: `ID ed25519 BASE64`.
pub fn public_line(id: &str, public: &[u8; 32]) -> String {
    format!("{id} ed25519 {}", B64.encode(public))
}

/// Parses `ID ed25519 BASE64` lines (several may be concatenated).
pub fn parse_public_lines(text: &str) -> anyhow::Result<Vec<(String, [u8; 32])>> {
    let mut out = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [id, alg, key] = parts[..] else {
            bail!("line {}: expected `ID ed25519 BASE64`", n + 1)
        };
        if alg != "ed25519" {
            bail!("line {}: only ed25519 keys are supported", n + 1);
        }
        let key: [u8; 32] = B64
            .decode(key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .with_context(|| format!("line {}: not a 32-byte base64 key", n + 1))?;
        out.push((id.to_owned(), key));
    }
    Ok(out)
}

/// What a signing-key rotation did.
#[derive(Debug)]
pub struct SignerRotated {
    pub role: Role,
    pub old: String,
    pub new: String,
    /// The transition, signed by both keys.
    pub statement: String,
    /// Where the replaced key is kept.
    pub retired: std::path::PathBuf,
}

/// Replaces the platform key or the log key: a new key file, the catalog's record
/// and a transition statement signed by both keys in one transaction, then the new
/// file put in place (a copy of the old one is kept aside under its hash). Runs
/// beside `serve`, which reads the keys each time it signs. The platform key is
/// refused while a decommissioning request or a certificate waiting for its
/// verifier's signature is open (that certificate names the current key).
///
/// The platform key's transition names the log key and the log's size at that
/// moment, and certificates signed by the replaced key count against the new one
/// only as that log shows them. So the log key is replaced first, in the same
/// command: the key named is a fresh one, not one retired alongside the platform key
/// (someone holding both retired keys could otherwise sign a private log). Returns
/// each rotation made, the log key's first.
pub async fn rotate_signer(
    p: &crate::platform::Platform,
    role: Role,
    actor: &str,
) -> anyhow::Result<Vec<SignerRotated>> {
    let mut done = Vec::new();
    if role == Role::Platform {
        // Refused early, before the log key changes, when the platform key cannot be.
        platform_rotation_possible(p).await?;
        done.push(rotate_one(p, Role::Log, actor).await?);
    }
    done.push(rotate_one(p, role, actor).await?);
    Ok(done)
}

/// Whether nothing open names the current platform key (checked again, under lock,
/// by the rotation itself).
async fn platform_rotation_possible(p: &crate::platform::Platform) -> anyhow::Result<()> {
    let open: i64 = p
        .catalog
        .client()
        .await?
        .query_one(OPEN_ERASURES_SQL, &[])
        .await?
        .get(0);
    if open > 0 {
        bail!(open_erasures_message(open));
    }
    Ok(())
}

const OPEN_ERASURES_SQL: &str =
    "SELECT (SELECT count(*) FROM decommissions WHERE state = 'requested')
      + (SELECT count(*) FROM pending_signatures WHERE kind = 'erasure_certificate')";

fn open_erasures_message(open: i64) -> String {
    format!(
        "消去の依頼または署名待ちの証明書が{open}件あります。その証明書には現在の基盤鍵の名が入るため、完了（または取り下げ）後に更新してください / {open} decommissioning request(s) or certificate(s) awaiting a signature are open; they name the current platform key: finish or withdraw them, then rotate"
    )
}

async fn rotate_one(
    p: &crate::platform::Platform,
    role: Role,
    actor: &str,
) -> anyhow::Result<SignerRotated> {
    let (file, name) = file_and_name(role);
    let dir = &p.settings.state_dir;
    let old = first_or_kept(p, role).await?;
    if role == Role::Platform {
        // Made if it never was: the transition names it.
        log_signer(p).await?;
    }
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    let alone: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock(hashtextextended('madoguchi.signing-keys', 0))",
            &[],
        )
        .await?
        .get(0);
    if !alone {
        bail!("署名鍵の更新が別に実行中です / another signing-key rotation is running");
    }
    let log = if role == Role::Platform {
        // In the order the erasure's steps take them (signing a certificate: the log,
        // then the pending certificate; storing one: the pending certificates, then
        // the request), so none waits for another in a circle.
        tx.execute(
            "LOCK TABLE tlog_entries, pending_signatures, decommissions IN SHARE MODE",
            &[],
        )
        .await?;
        let open: i64 = tx.query_one(OPEN_ERASURES_SQL, &[]).await?.get(0);
        if open > 0 {
            bail!(open_erasures_message(open));
        }
        let row = tx
            .query_one(
                "SELECT (SELECT verifier FROM platform_keys WHERE file = $1), (SELECT count(*) FROM tlog_entries)",
                &[&file_and_name(Role::Log).0],
            )
            .await?;
        let key: Option<String> = row.get(0);
        let size = u64::try_from(row.get::<_, i64>(1))?;
        Some((key.context("the log key is not recorded")?, size))
    } else {
        None
    };
    let recorded: Option<String> = tx
        .query_opt(
            "SELECT verifier FROM platform_keys WHERE file = $1 FOR UPDATE",
            &[&file],
        )
        .await?
        .map(|r| r.get(0));
    if recorded.as_deref() != Some(old.verifier_key().as_str()) {
        bail!("the recorded {file} changed meanwhile; run the command again");
    }
    let new_path = dir.join(new_file(file));
    if new_path.exists() {
        // Never committed: the catalog records the old key (checked just above).
        fs::remove_file(&new_path)
            .with_context(|| format!("removing a stale {}", new_path.display()))?;
    }
    let new = NoteSigner::generate(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    write_secret(&new_path, &B64.encode(*new.seed()))?;
    // A copy, not a link: destroying it later must not touch the live file.
    let retired = dir.join(retired_file(file, &old.verifier_key()));
    let made_retired = !retired.exists();
    let result = async {
        if made_retired {
            write_secret(&retired, &B64.encode(*old.seed()))?;
        } else if load_signer(&retired, name, false)?.verifier_key() != old.verifier_key() {
            bail!("{} holds another key", retired.display());
        }
        sync_dir(dir)?;
        let at = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
            .format(&time::format_description::well_known::Rfc3339)?;
        let transition = Transition {
            role,
            from: old.verifier_key(),
            to: new.verifier_key(),
            at,
            log,
        };
        let statement = transition.sign(&old, &new)?;
        tx.execute(
            "UPDATE platform_keys SET verifier = $2, recorded_at = now() WHERE file = $1",
            &[&file, &transition.to],
        )
        .await?;
        tx.execute(
            "INSERT INTO key_transitions (file, from_verifier, to_verifier, statement, made_by) VALUES ($1, $2, $3, $4, $5)",
            &[&file, &transition.from, &transition.to, &statement, &actor],
        )
        .await?;
        super::oplog::append(
            &tx,
            actor,
            match role {
                Role::Platform => "keys.rotate_platform",
                Role::Log => "keys.rotate_log",
            },
            "",
            &serde_json::json!({ "from": transition.from, "to": transition.to }),
        )
        .await?;
        Ok::<_, anyhow::Error>(statement)
    }
    .await;
    let statement = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_file(&new_path);
            if made_retired {
                let _ = fs::remove_file(&retired);
            }
            return Err(e.context(format!("{file} not rotated")));
        }
    };
    // If the commit's answer is lost, the next use of the key settles it either way.
    tx.commit().await.with_context(|| {
        format!(
            "{file}: the rotation's commit did not answer; the next command or request finishes it if it took effect"
        )
    })?;
    settle_rotation(dir, file, name, Some(&new.verifier_key()))?;
    Ok(SignerRotated {
        role,
        old: old.verifier_key(),
        new: new.verifier_key(),
        statement,
        retired,
    })
}
