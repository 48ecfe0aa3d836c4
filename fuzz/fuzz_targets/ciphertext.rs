//! Field encryption (src/crypto/field.rs) under a fixed key: arbitrary bytes given
//! to `FieldCipher::decrypt` are refused with an error, never a panic; the same
//! bytes as plaintext encrypt and decrypt back, and the ciphertext is refused
//! after any single bit flip, truncation, or in another row, column or table.
//! The cipher holds key versions 1 and 2 (rotation): version-1 ciphertexts still
//! decrypt, version 2 encrypts.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use madoguchi::crypto::{DataKey, FieldCipher, FieldRef};
use uuid::Uuid;

const TENANT: Uuid = Uuid::from_u128(0x6d61_646f_6775_6368_6900_0000_0000_0001);
const AT: FieldRef<'static> = FieldRef {
    table: "submissions",
    column: "answers",
    row_id: "0b1c2d3e-0000-4000-8000-000000000042",
};

fn key(byte: u8) -> DataKey {
    DataKey::from_bytes(&[byte; 32]).expect("32 bytes")
}

/// (the tenant's cipher with versions 1 and 2, an old cipher with version 1 only)
fn ciphers() -> &'static (FieldCipher, FieldCipher) {
    static C: OnceLock<(FieldCipher, FieldCipher)> = OnceLock::new();
    C.get_or_init(|| {
        let both = FieldCipher::new(TENANT, vec![(1, key(0x11)), (2, key(0x22))]).expect("cipher");
        let old = FieldCipher::new(TENANT, vec![(1, key(0x11))]).expect("cipher");
        (both, old)
    })
}

fn cheap_hash(data: &[u8]) -> usize {
    data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) as usize
}

fuzz_target!(|data: &[u8]| {
    let (cipher, old) = ciphers();

    // Arbitrary bytes are never a valid ciphertext here.
    assert!(
        cipher.decrypt(&AT, data).is_err(),
        "forged ciphertext accepted"
    );
    assert!(
        old.decrypt(&AT, data).is_err(),
        "forged ciphertext accepted"
    );

    // The same bytes as plaintext, written now (version 2) and before (version 1).
    for (writer, version) in [(cipher, 2u32), (old, 1u32)] {
        let ct = writer.encrypt(&AT, data).expect("encrypts");
        assert_eq!(ct.len(), 1 + 4 + 12 + data.len() + 16);
        assert_eq!(ct[1..5], version.to_be_bytes());
        let back = cipher.decrypt(&AT, &ct).expect("own ciphertext decrypts");
        assert_eq!(&back[..], data);

        let bit = cheap_hash(data) % (ct.len() * 8);
        let mut flipped = ct.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(
            cipher.decrypt(&AT, &flipped).is_err(),
            "bit {bit} flipped accepted"
        );
        assert!(cipher.decrypt(&AT, &ct[..ct.len() - 1]).is_err());
        let mut longer = ct.clone();
        longer.push(0);
        assert!(cipher.decrypt(&AT, &longer).is_err());

        // Bound to where it lives. The other place is derived from the data, so
        // odd table, column and row names are covered too.
        let other = String::from_utf8_lossy(data);
        let elsewhere = [
            FieldRef {
                row_id: &other,
                ..AT
            },
            FieldRef {
                column: &other,
                ..AT
            },
            FieldRef {
                table: &other,
                ..AT
            },
        ];
        for at in elsewhere {
            let moved = at.row_id != AT.row_id || at.column != AT.column || at.table != AT.table;
            assert_eq!(cipher.decrypt(&at, &ct).is_ok(), !moved, "context {at:?}");
        }
    }

    // Blind indexes: defined for any value, equal for equal input.
    let text = String::from_utf8_lossy(data);
    assert_eq!(
        cipher.blind_index("submissions", "email", &text),
        cipher.blind_index("submissions", "email", &text)
    );
});
