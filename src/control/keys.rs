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
    Ok(())
}

/// The platform key (co-signs certificates): `DIR/platform.key`.
pub async fn platform_signer(p: &crate::platform::Platform) -> anyhow::Result<NoteSigner> {
    first_or_kept(p, "platform.key", "madoguchi-platform").await
}

/// The log key (signs checkpoints): `DIR/tlog.key`; its name is the log's origin.
pub async fn log_signer(p: &crate::platform::Platform) -> anyhow::Result<NoteSigner> {
    first_or_kept(p, "tlog.key", "madoguchi.erasure-log").await
}

/// A platform signing key, made on first use only. Its public form is recorded in
/// the catalog when it is first made or read (it may have been handed out, or put in
/// a pending certificate, since), and from then on a missing file is refused, and so
/// is a file holding another key: a new key would leave every certificate and
/// checkpoint unverifiable against the public key municipalities and auditors keep.
/// (The erasure log's entries count as a record too, for a catalog from before the
/// record.)
async fn first_or_kept(
    p: &crate::platform::Platform,
    file: &str,
    name: &str,
) -> anyhow::Result<NoteSigner> {
    let path = p.settings.state_dir.join(file);
    let recorded = p.catalog.recorded_key(file).await?;
    if !path.exists() {
        let signed = p.catalog.tlog_size().await?;
        if recorded.is_some() || signed > 0 {
            bail!(
                "{path} がありません。この鍵の公開鍵は記録済みで、消去の記録（{signed}件）の署名にも使われています。保管先から鍵を戻してください（新しい鍵を作ると、これまでの証明書とチェックポイントを検証できなくなります） / {path} is missing, but its public key was recorded (and {signed} erasure-log entries were signed with it): restore it from escrow (a new key would leave every certificate and checkpoint unverifiable)",
                path = path.display()
            );
        }
    }
    let signer = load_signer(&path, name, true)?;
    let public = signer.verifier_key();
    match recorded {
        Some(r) if r != public => bail!(
            "{path} は記録されている鍵（{r}）ではありません。保管先の鍵を戻してください / {path} is not the key recorded ({r}): restore the escrowed one",
            path = path.display()
        ),
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
