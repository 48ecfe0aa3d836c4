//! Field encryption for tenant code: AES-256-GCM with a random nonce under the
//! tenant's data key, bound to where the value lives, and blind indexes for
//! exact-match lookups on encrypted columns.
//!
//! Ciphertext format, version 1: `0x01 ‖ key_version (u32, big-endian) ‖ nonce (12) ‖
//! ciphertext+tag`. Associated data: format version, tenant id, table, column, row
//! id and key version, so a ciphertext copied to another row, column or tenant
//! does not decrypt.

use std::collections::HashMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{aad, CryptoError, DataKey};

const FORMAT_V1: u8 = 1;
const HEADER: usize = 1 + 4 + 12;

/// Where an encrypted value lives; all of it is bound into the ciphertext.
#[derive(Debug, Clone, Copy)]
pub struct FieldRef<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub row_id: &'a str,
}

/// A tenant's field cipher. Holds every key version it can read; writes with the
/// newest.
pub struct FieldCipher {
    tenant_id: Uuid,
    current: u32,
    keys: HashMap<u32, Aes256Gcm>,
    blind_key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for FieldCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldCipher")
            .field("tenant_id", &self.tenant_id)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl FieldCipher {
    /// `keys` holds (version, key) pairs; the highest version encrypts.
    pub fn new(tenant_id: Uuid, keys: Vec<(u32, DataKey)>) -> Result<Self, CryptoError> {
        let current = keys
            .iter()
            .map(|(v, _)| *v)
            .max()
            .ok_or(CryptoError::UnknownKeyVersion(0))?;
        let mut blind_key = Zeroizing::new([0u8; 32]);
        let mut map = HashMap::new();
        for (v, k) in &keys {
            if *v == current {
                Hkdf::<Sha256>::new(Some(tenant_id.as_bytes()), k.bytes())
                    .expand(b"madoguchi blind index v1", blind_key.as_mut())
                    .map_err(|_| CryptoError::Encrypt)?;
            }
            map.insert(
                *v,
                Aes256Gcm::new_from_slice(k.bytes()).map_err(|_| CryptoError::Format)?,
            );
        }
        Ok(Self {
            tenant_id,
            current,
            keys: map,
            blind_key,
        })
    }

    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    /// The key version new ciphertexts are sealed with (and blind indexes keyed by).
    pub fn current_version(&self) -> u32 {
        self.current
    }

    /// The key version a ciphertext was sealed with, if it is one of ours.
    pub fn version_of(data: &[u8]) -> Option<u32> {
        if data.len() < HEADER + 16 || data[0] != FORMAT_V1 {
            return None;
        }
        Some(u32::from_be_bytes([data[1], data[2], data[3], data[4]]))
    }

    fn aad(&self, at: &FieldRef<'_>, version: u32) -> Vec<u8> {
        aad(&[
            &[FORMAT_V1],
            self.tenant_id.as_bytes(),
            at.table.as_bytes(),
            at.column.as_bytes(),
            at.row_id.as_bytes(),
            &version.to_be_bytes(),
        ])
    }

    pub fn encrypt(&self, at: &FieldRef<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let aead = self
            .keys
            .get(&self.current)
            .ok_or(CryptoError::UnknownKeyVersion(self.current))?;
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &self.aad(at, self.current),
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = Vec::with_capacity(HEADER + ct.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.current.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn decrypt(
        &self,
        at: &FieldRef<'_>,
        data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if data.len() < HEADER + 16 || data[0] != FORMAT_V1 {
            return Err(CryptoError::Format);
        }
        let version = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
        let aead = self
            .keys
            .get(&version)
            .ok_or(CryptoError::UnknownKeyVersion(version))?;
        aead.decrypt(
            Nonce::from_slice(&data[5..HEADER]),
            Payload {
                msg: &data[HEADER..],
                aad: &self.aad(at, version),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Decrypt)
    }

    /// HMAC-SHA-256 of a normalised value, keyed per tenant (HKDF from the data key),
    /// separated per table and column: equal values give equal indexes, nothing else
    /// can be learnt from them without the key.
    pub fn blind_index(&self, table: &str, column: &str, value: &str) -> [u8; 32] {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(self.blind_key.as_ref()) {
            Ok(m) => m,
            // HMAC accepts keys of any length; this arm cannot be reached.
            Err(_) => return [0u8; 32],
        };
        mac.update(&aad(&[
            table.as_bytes(),
            column.as_bytes(),
            value.as_bytes(),
        ]));
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AES key schedule a cipher holds is wiped when it is dropped (this fails to
    /// build without the `zeroize` feature of `aes` in Cargo.toml).
    #[test]
    fn cipher_state_is_wiped_on_drop() {
        fn wiped<T: zeroize::ZeroizeOnDrop>() {}
        wiped::<aes::Aes256>();
        wiped::<aes::Aes256Enc>();
    }

    fn cipher(tenant: Uuid, key: &DataKey, version: u32) -> FieldCipher {
        let k = DataKey::from_bytes(key.bytes()).unwrap_or_else(|_| DataKey::generate());
        FieldCipher::new(tenant, vec![(version, k)]).unwrap_or_else(|e| panic!("{e}"))
    }

    const AT: FieldRef<'static> = FieldRef {
        table: "submissions",
        column: "answers",
        row_id: "42",
    };

    #[test]
    fn round_trip_and_binding() {
        let key = DataKey::generate();
        let t = Uuid::new_v4();
        let c = cipher(t, &key, 1);
        let ct = c.encrypt(&AT, "山田 太郎".as_bytes()).unwrap_or_default();
        assert!(!ct.windows(3).any(|w| w == &"山".as_bytes()[..3]));
        assert_eq!(
            c.decrypt(&AT, &ct).map(|p| p.to_vec()),
            Ok("山田 太郎".as_bytes().to_vec())
        );
        let other_row = FieldRef { row_id: "43", ..AT };
        let other_col = FieldRef {
            column: "email",
            ..AT
        };
        let other_table = FieldRef {
            table: "drafts",
            ..AT
        };
        for at in [other_row, other_col, other_table] {
            assert_eq!(c.decrypt(&at, &ct).err(), Some(CryptoError::Decrypt));
        }
        // Same key, another tenant id: refused.
        assert_eq!(
            cipher(Uuid::new_v4(), &key, 1).decrypt(&AT, &ct).err(),
            Some(CryptoError::Decrypt)
        );
        // Every single flipped byte is refused.
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            assert!(c.decrypt(&AT, &bad).is_err(), "byte {i}");
        }
        assert_eq!(c.decrypt(&AT, &ct[..10]).err(), Some(CryptoError::Format));
    }

    #[test]
    fn blind_index_is_keyed_and_separated() {
        let t = Uuid::new_v4();
        let a = cipher(t, &DataKey::generate(), 1);
        let b = cipher(t, &DataKey::generate(), 1);
        let x = a.blind_index("submissions", "email", "a@example.jp");
        assert_eq!(x, a.blind_index("submissions", "email", "a@example.jp"));
        assert_ne!(x, a.blind_index("submissions", "phone", "a@example.jp"));
        assert_ne!(x, b.blind_index("submissions", "email", "a@example.jp"));
    }
}
