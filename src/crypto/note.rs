//! Signed notes (C2SP `signed-note`) with Ed25519, and transparency-log checkpoints
//! (C2SP `tlog-checkpoint`) carried in them.
//!
//! A note is UTF-8 text ending in a newline, a blank line, then one line per
//! signature: `— <key name> <base64(key hash ‖ signature)>`. An Ed25519 key's hash is
//! the first four bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key); its verifier key
//! is written `<name>+<hex key hash>+<base64(0x01 ‖ public key)>`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use super::tlog::Hash;

const ED25519: u8 = 0x01;

/// Why a note or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed note")]
    Malformed,
    #[error("malformed key")]
    BadKey,
    #[error("no valid signature by {0}")]
    NotSigned(String),
}

fn key_hash(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// A named Ed25519 signer.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::BadKey);
        }
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        })
    }

    pub fn from_seed(name: &str, seed: &[u8]) -> Result<Self, NoteError> {
        let seed: [u8; 32] = seed.try_into().map_err(|_| NoteError::BadKey)?;
        if !valid_name(name) {
            return Err(NoteError::BadKey);
        }
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The 32-byte seed (secret); callers keep it in a 0600 file.
    pub fn seed(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.key.to_bytes())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// `<name>+<hex key hash>+<base64(0x01 ‖ public key)>`.
    pub fn verifier_key(&self) -> String {
        let public = self.public_key();
        let mut raw = vec![ED25519];
        raw.extend_from_slice(public.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(key_hash(&self.name, &public)),
            B64.encode(raw)
        )
    }

    /// A raw Ed25519 signature (for documents other than notes).
    pub fn sign_bytes(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// Signs `text` (which must end with a newline) as a note.
    pub fn sign_note(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') || text.contains("\n\n") {
            return Err(NoteError::Malformed);
        }
        let sig = self.key.sign(text.as_bytes());
        let mut blob = key_hash(&self.name, &self.public_key()).to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n\u{2014} {} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }
}

/// Signs `text` as one note carrying a signature line from each signer, in order.
pub fn sign_note_by(text: &str, signers: &[&NoteSigner]) -> Result<String, NoteError> {
    let mut note = String::new();
    for (n, signer) in signers.iter().enumerate() {
        let one = signer.sign_note(text)?;
        if n == 0 {
            note = one;
        } else {
            note.push_str(&one[text.len() + 1..]);
        }
    }
    if note.is_empty() {
        return Err(NoteError::Malformed);
    }
    Ok(note)
}

/// A verifier parsed from its `name+hash+key` form.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    pub name: String,
    hash: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let mut parts = s.trim().splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey);
        };
        let raw = B64.decode(key).map_err(|_| NoteError::BadKey)?;
        let (&alg, key_bytes) = raw.split_first().ok_or(NoteError::BadKey)?;
        let key_bytes: [u8; 32] = key_bytes.try_into().map_err(|_| NoteError::BadKey)?;
        let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| NoteError::BadKey)?;
        let hash_bytes: [u8; 4] = hex::decode(hash)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or(NoteError::BadKey)?;
        if alg != ED25519 || !valid_name(name) || key_hash(name, &key) != hash_bytes {
            return Err(NoteError::BadKey);
        }
        Ok(Self {
            name: name.to_owned(),
            hash: hash_bytes,
            key,
        })
    }

    /// A verifier for a raw Ed25519 public key under `name`.
    pub fn from_public(name: &str, public: &[u8; 32]) -> Result<Self, NoteError> {
        let key = VerifyingKey::from_bytes(public).map_err(|_| NoteError::BadKey)?;
        if !valid_name(name) {
            return Err(NoteError::BadKey);
        }
        Ok(Self {
            name: name.to_owned(),
            hash: key_hash(name, &key),
            key,
        })
    }

    /// The raw public key.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Verifies a raw signature.
    pub fn verify_bytes(&self, msg: &[u8], sig: &[u8]) -> bool {
        Signature::from_slice(sig).is_ok_and(|s| self.key.verify(msg, &s).is_ok())
    }

    /// Returns the note's text if this key signed it.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let split = note.rfind("\n\n").ok_or(NoteError::Malformed)?;
        let (text, sigs) = (&note[..=split], &note[split + 2..]);
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(NoteError::Malformed);
            };
            let Some((name, b64)) = rest.split_once(' ') else {
                return Err(NoteError::Malformed);
            };
            if name != self.name {
                continue;
            }
            let blob = B64.decode(b64).map_err(|_| NoteError::Malformed)?;
            if blob.len() == 68
                && blob[..4] == self.hash
                && self.verify_bytes(text.as_bytes(), &blob[4..])
            {
                return Ok(text);
            }
        }
        Err(NoteError::NotSigned(self.name.clone()))
    }
}

/// The text of a checkpoint: origin, tree size, base64 root hash.
pub fn checkpoint_text(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

/// Origin, size and root of a checkpoint's text.
pub fn parse_checkpoint(text: &str) -> Result<(String, u64, Hash), NoteError> {
    let mut lines = text.lines();
    let origin = lines
        .next()
        .filter(|o| !o.is_empty())
        .ok_or(NoteError::Malformed)?;
    let size: u64 = lines
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(NoteError::Malformed)?;
    let root: Hash = lines
        .next()
        .and_then(|r| B64.decode(r).ok())
        .and_then(|r| r.try_into().ok())
        .ok_or(NoteError::Malformed)?;
    Ok((origin.to_owned(), size, root))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tlog::{leaf_hash, root};

    #[test]
    fn signed_checkpoints_verify_and_refuse_tampering() {
        let log =
            NoteSigner::generate("madoguchi.example/erasure-log").unwrap_or_else(|e| panic!("{e}"));
        let verifier = NoteVerifier::parse(&log.verifier_key()).unwrap_or_else(|e| panic!("{e}"));
        let r = root(&[leaf_hash(b"cert 1"), leaf_hash(b"cert 2")]);
        let note = log
            .sign_note(&checkpoint_text("madoguchi.example/erasure-log", 2, &r))
            .unwrap_or_default();
        let text = verifier.open(&note).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            parse_checkpoint(text),
            Ok(("madoguchi.example/erasure-log".to_owned(), 2, r))
        );
        // Another size, another key, a missing signature: refused.
        assert!(verifier.open(&note.replacen("\n2\n", "\n3\n", 1)).is_err());
        let other =
            NoteSigner::generate("madoguchi.example/erasure-log").unwrap_or_else(|e| panic!("{e}"));
        assert!(NoteVerifier::parse(&other.verifier_key())
            .unwrap_or_else(|e| panic!("{e}"))
            .open(&note)
            .is_err());
        let unsigned = note.split("\n\n").next().unwrap_or_default().to_owned() + "\n\n";
        assert!(verifier.open(&unsigned).is_err());
        // The verifier key's hash must match its name and key.
        let vk = log.verifier_key();
        assert!(NoteVerifier::parse(&vk.replacen(
            "madoguchi.example/erasure-log",
            "evil.example/log",
            1
        ))
        .is_err());
        // A seed round trip gives the same key.
        let again =
            NoteSigner::from_seed(log.name(), &*log.seed()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.verifier_key(), vk);
    }
}
