//! Master-key providers and the tenant data keys they wrap. The master key never
//! enters a database; a KMS or Vault transit provider implements [`KeyProvider`].

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{bail, Context};
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

use super::CryptoError;

const WRAP_FORMAT: u8 = 1;

/// Wraps and unwraps key material under a master key it keeps to itself.
pub trait KeyProvider: Send + Sync {
    /// A name for logs and records (never the key).
    fn id(&self) -> &str;
    fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError>;
    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError>;
}

/// A 256-bit master key in a local file (`DIR/master.key`), created 0600 on first
/// use and refused when group or others can read it.
pub struct FileKeyProvider {
    id: String,
    aead: Aes256Gcm,
}

impl fmt::Debug for FileKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKeyProvider")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl FileKeyProvider {
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            let mut key = Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(key.as_mut());
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating master key {}", path.display()))?;
            f.write_all(key.as_ref())?;
            f.sync_all()?;
        }
        let mode = fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "master key {} is readable by group or others (mode {:o}); refusing to use it. Run: chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
        let mut bytes =
            fs::read(path).with_context(|| format!("reading master key {}", path.display()))?;
        if bytes.len() != 32 {
            bytes.zeroize();
            bail!("master key {} must be exactly 32 bytes", path.display());
        }
        let aead = Aes256Gcm::new_from_slice(&bytes)
            .map_err(|_| anyhow::anyhow!("bad master key length"))?;
        bytes.zeroize();
        Ok(Self {
            id: format!("file:{}", path.display()),
            aead,
        })
    }
}

impl KeyProvider for FileKeyProvider {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = Vec::with_capacity(1 + 12 + ct.len());
        out.push(WRAP_FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (&fmt, rest) = wrapped.split_first().ok_or(CryptoError::Format)?;
        if fmt != WRAP_FORMAT || rest.len() < 12 + 16 {
            return Err(CryptoError::Format);
        }
        let (nonce, ct) = rest.split_at(12);
        self.aead
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Decrypt)
    }
}

/// A tenant's 256-bit data key, zeroised on drop and never printed.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        Self(k)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::Format)?;
        Ok(Self(Zeroizing::new(arr)))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Associated data binding a wrapped key to its tenant, purpose and version.
    pub fn wrap_aad(tenant_id: &uuid::Uuid, purpose: &str, version: u32) -> Vec<u8> {
        super::aad(&[
            b"madoguchi-key-v1",
            tenant_id.as_bytes(),
            purpose.as_bytes(),
            &version.to_be_bytes(),
        ])
    }

    pub fn wrap(
        &self,
        kp: &dyn KeyProvider,
        tenant_id: &uuid::Uuid,
        version: u32,
    ) -> Result<Vec<u8>, CryptoError> {
        kp.wrap(self.bytes(), &Self::wrap_aad(tenant_id, "data", version))
    }

    pub fn unwrap(
        kp: &dyn KeyProvider,
        wrapped: &[u8],
        tenant_id: &uuid::Uuid,
        version: u32,
    ) -> Result<Self, CryptoError> {
        let raw = kp.unwrap(wrapped, &Self::wrap_aad(tenant_id, "data", version))?;
        Self::from_bytes(&raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(dir: &Path, name: &str) -> FileKeyProvider {
        FileKeyProvider::load_or_create(&dir.join(name)).unwrap_or_else(|e| panic!("{e:#}"))
    }

    #[test]
    fn wrap_unwrap_and_refusals() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = provider(dir.path(), "a.key");
        let b = provider(dir.path(), "b.key");
        let tenant = uuid::Uuid::new_v4();
        let key = DataKey::generate();
        let wrapped = key.wrap(&a, &tenant, 1).unwrap_or_default();
        let back = DataKey::unwrap(&a, &wrapped, &tenant, 1).map(|k| *k.bytes());
        assert_eq!(back, Ok(*key.bytes()));
        // The same file loaded again is the same key.
        assert!(DataKey::unwrap(&provider(dir.path(), "a.key"), &wrapped, &tenant, 1).is_ok());
        assert_eq!(
            DataKey::unwrap(&b, &wrapped, &tenant, 1).err(),
            Some(CryptoError::Decrypt),
            "wrong master key"
        );
        assert!(
            DataKey::unwrap(&a, &wrapped, &uuid::Uuid::new_v4(), 1).is_err(),
            "other tenant"
        );
        assert!(
            DataKey::unwrap(&a, &wrapped, &tenant, 2).is_err(),
            "other version"
        );
        let mut bad = wrapped.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x80;
        assert!(DataKey::unwrap(&a, &bad, &tenant, 1).is_err(), "tampered");
        assert_eq!(format!("{key:?}"), "DataKey(<redacted>)");
    }

    #[test]
    fn readable_master_key_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("m.key");
        drop(provider(dir.path(), "m.key"));
        assert_eq!(
            fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o777)
                .ok(),
            Some(0o600)
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = FileKeyProvider::load_or_create(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("readable by group or others"), "{err}");
    }
}
