//! Cryptography: master-key providers and data-key wrapping (`keys`), field
//! encryption and blind indexes for tenant code (`field`).

pub mod field;
pub mod keys;
pub mod note;
pub mod tlog;

pub use field::{FieldCipher, FieldRef};
pub use keys::{DataKey, FileKeyProvider, KeyProvider};

use base64::Engine;
use rand::RngCore;

/// Errors of this module. Deliberately vague: a failed decryption says no more
/// than that it failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("decryption failed (wrong key, wrong context or tampered data)")]
    Decrypt,
    #[error("unsupported ciphertext format")]
    Format,
    #[error("unknown key version {0}")]
    UnknownKeyVersion(u32),
    #[error("encryption failed")]
    Encrypt,
}

/// `n` random bytes from the OS, as URL-safe base64 without padding: safe in
/// SQL literals, URLs and files.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    let s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&buf);
    zeroize::Zeroize::zeroize(&mut buf);
    s
}

/// Associated data built from length-prefixed parts, so ("ab","c") and ("a","bc")
/// never collide.
pub fn aad(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for p in parts {
        out.extend_from_slice(&u32::try_from(p.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// What an operator's console TOTP secret is bound to when wrapped by the master key.
pub fn operator_totp_aad(id: &str) -> Vec<u8> {
    aad(&[b"madoguchi-ops-totp-v1", id.as_bytes()])
}
