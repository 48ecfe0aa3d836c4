#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests, no database: field encryption, the checking of citizens'
//! answers, the transparency log's Merkle proofs (RFC 9162) and the canonical
//! JSON (RFC 8785) that certificates are signed in. The fuzz targets of fuzz/
//! (`ops/fuzz`) go after the same code with unstructured input.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use madoguchi::control::certificate::canonical;
use madoguchi::crypto::tlog::{self, Hash};
use madoguchi::crypto::{DataKey, FieldCipher, FieldRef};
use madoguchi::ja;
use madoguchi::tenant::forms::answers::{
    check_field, input_names, to_raw, Answer, Answers, Raw, MAX_INPUT,
};
use madoguchi::tenant::forms::definition::{ChoiceDisplay, Field, FieldKind, FileType};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// (a) Field encryption

const TENANT: Uuid = Uuid::from_u128(0x6d61_646f_6775_6368_6900_0000_0000_0001);

fn cipher() -> &'static FieldCipher {
    static C: OnceLock<FieldCipher> = OnceLock::new();
    C.get_or_init(|| {
        let keys = vec![
            (1, DataKey::from_bytes(&[0x11; 32]).unwrap()),
            (2, DataKey::from_bytes(&[0x22; 32]).unwrap()),
        ];
        FieldCipher::new(TENANT, keys).unwrap()
    })
}

/// Names of tables, columns and row ids, odd ones included.
fn place() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,20}",
        "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        "\\PC{0,12}",
        Just(String::new()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Encrypt then decrypt gives the plaintext back; every single flipped bit of
    /// the ciphertext (header, nonce, body or tag) is refused.
    #[test]
    fn cipher_round_trips_and_refuses_every_bit_flip(
        plain in vec(any::<u8>(), 0..64),
        table in place(),
        column in place(),
        row_id in place(),
    ) {
        let c = cipher();
        let at = FieldRef { table: &table, column: &column, row_id: &row_id };
        let ct = c.encrypt(&at, &plain).unwrap();
        prop_assert_eq!(&c.decrypt(&at, &ct).unwrap()[..], &plain[..]);
        for bit in 0..ct.len() * 8 {
            let mut bad = ct.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(c.decrypt(&at, &bad).is_err(), "bit {} flipped accepted", bit);
        }
        prop_assert!(c.decrypt(&at, &ct[..ct.len() - 1]).is_err());
    }

    /// Longer plaintexts, one random bit flipped; and the ciphertext moved to another
    /// table, column, row or tenant does not decrypt.
    #[test]
    fn cipher_is_bound_to_its_place(
        plain in vec(any::<u8>(), 0..4096),
        table in place(),
        column in place(),
        row_id in place(),
        other in place(),
        which in 0..3usize,
        bit in any::<Index>(),
    ) {
        let c = cipher();
        let at = FieldRef { table: &table, column: &column, row_id: &row_id };
        let ct = c.encrypt(&at, &plain).unwrap();
        prop_assert_eq!(&c.decrypt(&at, &ct).unwrap()[..], &plain[..]);

        let i = bit.index(ct.len() * 8);
        let mut bad = ct.clone();
        bad[i / 8] ^= 1 << (i % 8);
        prop_assert!(c.decrypt(&at, &bad).is_err());

        let moved = match which {
            0 => FieldRef { table: &other, ..at },
            1 => FieldRef { column: &other, ..at },
            _ => FieldRef { row_id: &other, ..at },
        };
        let same = [table.as_str(), column.as_str(), row_id.as_str()][which] == other;
        prop_assert_eq!(c.decrypt(&moved, &ct).is_ok(), same);

        let other_tenant = FieldCipher::new(
            Uuid::from_u128(2),
            vec![(2, DataKey::from_bytes(&[0x22; 32]).unwrap())],
        )
        .unwrap();
        prop_assert!(other_tenant.decrypt(&at, &ct).is_err());
    }

    /// Whatever bytes are stored, decrypting them is an error, never a panic.
    #[test]
    fn cipher_refuses_arbitrary_bytes(data in vec(any::<u8>(), 0..200), version in 0u32..4) {
        let mut forged = data.clone();
        if forged.len() >= 5 {
            forged[0] = 1;
            forged[1..5].copy_from_slice(&version.to_be_bytes());
        }
        let at = FieldRef { table: "submissions", column: "answers", row_id: "1" };
        prop_assert!(cipher().decrypt(&at, &data).is_err());
        prop_assert!(cipher().decrypt(&at, &forged).is_err());
    }
}

// ---------------------------------------------------------------------------
// (b) Answers

fn field(id: &str, required: bool, kind: FieldKind) -> Field {
    Field {
        id: id.into(),
        label: format!("項目{id}"),
        help: String::new(),
        required,
        placeholder: String::new(),
        show_if: None,
        kind,
    }
}

/// One field of every kind, with and without limits.
fn fields() -> &'static [Field] {
    static F: OnceLock<Vec<Field>> = OnceLock::new();
    F.get_or_init(|| {
        let text = |min, max, pattern: Option<&str>| FieldKind::Text {
            min_length: min,
            max_length: max,
            pattern: pattern.map(str::to_owned),
            pattern_message: None,
        };
        let number = |min, max, unit: &str, integer| FieldKind::Number {
            min,
            max,
            unit: unit.into(),
            integer,
        };
        let date = |min, max| FieldKind::Date { min, max };
        vec![
            field("t", false, text(None, None, None)),
            field("tl", true, text(Some(2), Some(5), None)),
            field("tp", true, text(None, None, Some("[A-Z]{2}[0-9]+"))),
            field("tk", false, text(None, Some(20), Some("\\p{Katakana}+"))),
            field(
                "ta",
                false,
                FieldKind::Textarea {
                    min_length: None,
                    max_length: None,
                },
            ),
            field(
                "tb",
                true,
                FieldKind::Textarea {
                    min_length: Some(3),
                    max_length: Some(300),
                },
            ),
            field("n", false, number(None, None, "", false)),
            field("ni", true, number(Some(1.0), Some(99.0), "個", true)),
            field("nk", false, number(Some(-5.5), Some(1e6), "kg", false)),
            field("e", true, FieldKind::Email {}),
            field("p", false, FieldKind::Tel {}),
            field("d", false, date(None, None)),
            field(
                "dr",
                true,
                date(
                    Some(time::macros::date!(2000 - 01 - 01)),
                    Some(time::macros::date!(2030 - 12 - 31)),
                ),
            ),
            field(
                "c",
                true,
                FieldKind::Choice {
                    options: vec!["はい".into(), "いいえ".into(), "Ａ".into(), "A".into()],
                    display: ChoiceDisplay::Radio,
                    limits: Default::default(),
                },
            ),
            field(
                "m",
                false,
                FieldKind::MultiChoice {
                    options: vec!["A".into(), "B".into(), "ソファ".into(), "ｿﾌｧ".into()],
                    min_selected: Some(1),
                    max_selected: Some(3),
                    limits: Default::default(),
                },
            ),
            field("a", true, FieldKind::Address {}),
            field("ao", false, FieldKind::Address {}),
            field("nm", true, FieldKind::Name { furigana: true }),
            field("nn", false, FieldKind::Name { furigana: false }),
            field(
                "k",
                false,
                FieldKind::Consent {
                    statement: "同意します".into(),
                },
            ),
            field(
                "kr",
                true,
                FieldKind::Consent {
                    statement: "同意します".into(),
                },
            ),
            field(
                "fl",
                false,
                FieldKind::File {
                    types: FileType::ALL.to_vec(),
                    max_mb: None,
                },
            ),
        ]
    })
}

/// Characters that matter to Japanese input: full- and half-width forms, kana,
/// kanji, variation selectors (IVS), joiners, compatibility characters, combining
/// marks, separators and control characters, and anything else.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range(' ', '~'),
        3 => prop::char::range('0', '9'),
        3 => prop::char::range('\u{FF01}', '\u{FF5E}'),
        2 => prop::char::range('\u{FF61}', '\u{FF9F}'),
        2 => prop::char::range('ぁ', 'ゖ'),
        2 => prop::char::range('ァ', 'ヺ'),
        1 => prop::char::range('一', '龥'),
        1 => prop::char::range('\u{E0100}', '\u{E01EF}'),
        1 => prop::char::range('\u{FE00}', '\u{FE0F}'),
        1 => prop::char::range('\u{0}', '\u{1F}'),
        1 => prop::char::range('\u{300}', '\u{36F}'),
        3 => prop::sample::select(vec![
            '\u{200D}', '\u{3000}', '\u{A0}', '\u{85}', '\u{2028}', '\u{7F}', '\u{FEFF}',
            '－', 'ー', '‐', '−', '〒', '＠', '．', '／', '，', '゛', '\u{3099}', '\u{309A}',
            '㎡', '㎏', '㍻', '①', 'ﷺ', 'K', 'Å', '𠮷', '髙', '葛', '﨑', '\r', '\n', '\t',
        ]),
        1 => any::<char>(),
    ]
}

/// ASCII made full width where the mask says so (what IMEs often produce).
fn widen(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 && ('!'..='~').contains(&c) {
                char::from_u32(c as u32 + 0xFEE0).unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

/// Input that has a chance of being accepted by input `k` of field `f`.
fn plausible(f: &Field, k: usize) -> BoxedStrategy<String> {
    let regex = |r: &str| r.to_owned().boxed_regex();
    match &f.kind {
        FieldKind::Text {
            pattern: Some(_), ..
        } => regex("[A-Z]{2}[0-9]{1,4}|[ァ-ヺ]{1,8}"),
        FieldKind::Text { .. } | FieldKind::Textarea { .. } => {
            regex("[ぁ-ゖ一-龥a-z0-9 ]{1,12}(\\r?\\n[ぁ-ゖ]{0,6}){0,2}")
        }
        // The field's own unit, or another one.
        FieldKind::Number { unit, .. } => regex(&format!(
            "-?[0-9]{{1,2}}(,[0-9]{{3}}){{0,2}}(\\.[0-9]{{1,2}})?( ?({unit}|kg|個))?"
        )),
        FieldKind::Email {} => regex("[a-z0-9._+]{1,10}@[A-Za-z0-9-]{1,8}\\.(jp|co\\.jp|EXAMPLE)"),
        FieldKind::Tel {} => regex("(\\+81 ?)?0[0-9]{1,3}[- ]?[0-9]{2,4}[- ]?[0-9]{4}"),
        FieldKind::Date { .. } => {
            regex("(19|20)[0-9]{2}[-/](0?[1-9]|1[0-2])[-/](0?[1-9]|[12][0-9]|3[01])")
        }
        FieldKind::Choice { options, .. } | FieldKind::MultiChoice { options, .. } => {
            prop::sample::select(options.clone()).boxed()
        }
        FieldKind::Address {} if k == 0 => regex("〒?[0-9]{3}[-ー]?[0-9]{4}"),
        FieldKind::Address {} => regex("[一-龥]{1,6}[0-9]{1,2}-[0-9]{1,2}"),
        FieldKind::Name { .. } if k < 2 => {
            regex("[一-龥]{1,3}\u{E0100}?[一-龥]{0,2}|𠮷髙|葛\u{E0100}")
        }
        FieldKind::Name { .. } => regex("[ぁ-ゖ]{1,8}|[ァ-ヺー]{1,8}( [ァ-ヺ]{1,4})?|[ｦ-ﾟ]{1,8}"),
        FieldKind::Consent { .. } => regex("yes|no|YES|ｙｅｓ"),
        // A file is named by the server only: whatever is sent is not a file.
        FieldKind::File { .. } | FieldKind::Heading {} | FieldKind::Paragraph { .. } => {
            regex(".{0,4}")
        }
    }
}

trait BoxedRegex {
    fn boxed_regex(self) -> BoxedStrategy<String>;
}

impl BoxedRegex for String {
    fn boxed_regex(self) -> BoxedStrategy<String> {
        proptest::string::string_regex(&self).unwrap().boxed()
    }
}

/// Anything a browser or an API client could send for one input.
fn any_input() -> impl Strategy<Value = String> {
    let short = || vec(tricky_char(), 0..24).prop_map(|v| v.into_iter().collect::<String>());
    prop_oneof![
        6 => short(),
        1 => (short(), 1..1200usize).prop_map(|(s, n)| s.repeat(n)),
        1 => (0..3usize).prop_map(|extra| "葛\u{E0100}".repeat(MAX_INPUT + extra - 1)),
        1 => (0..3usize).prop_map(|extra| "１".repeat(MAX_INPUT + extra - 1)),
    ]
}

/// One input of field `f`: plausible, in mixed widths, perhaps with a tricky
/// character or two spliced in; or anything at all.
fn input(f: &Field, k: usize) -> BoxedStrategy<String> {
    prop_oneof![
        5 => (plausible(f, k), any::<u64>()).prop_map(|(s, mask)| widen(&s, mask)),
        3 => (plausible(f, k), vec((tricky_char(), any::<Index>()), 1..3)).prop_map(|(s, ins)| {
            let mut chars: Vec<char> = s.chars().collect();
            for (c, at) in ins {
                let i = at.index(chars.len() + 1);
                chars.insert(i, c);
            }
            chars.into_iter().collect()
        }),
        1 => plausible(f, k),
        3 => any_input(),
    ]
    .boxed()
}

/// A field and inputs for it (several values for multiple choice, sometimes).
fn field_and_raw() -> impl Strategy<Value = (&'static Field, Raw)> {
    any::<Index>().prop_flat_map(|which| {
        let f = which.get(fields());
        let inputs: Vec<_> = input_names(f)
            .into_iter()
            .enumerate()
            .map(|(k, name)| (Just(name), vec(input(f, k), 1..4)))
            .collect();
        (Just(f), inputs).prop_map(|(f, inputs)| (f, inputs.into_iter().collect::<Raw>()))
    })
}

/// Inputs that `check_field` passes through NFKC (src/ja.rs: "for codes, numbers,
/// e-mail addresses and kana"). Names in kanji and free text are kept as typed.
fn nfkc_inputs(f: &Field) -> Vec<String> {
    match f.kind {
        FieldKind::Number { .. }
        | FieldKind::Email {}
        | FieldKind::Tel {}
        | FieldKind::Date { .. } => {
            vec![f.id.clone()]
        }
        FieldKind::Address {} => vec![format!("{}.postal", f.id)],
        FieldKind::Name { furigana: true } => {
            vec![
                format!("{}.family_kana", f.id),
                format!("{}.given_kana", f.id),
            ]
        }
        _ => Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any input is checked without panicking; an accepted answer is displayed,
    /// and the inputs it reopens as (`to_raw`, correction of a submission) check
    /// again to the same answer.
    #[test]
    fn answers_never_panic_and_reopen_unchanged((f, raw) in field_and_raw()) {
        if let Ok(Some(a)) = check_field(f, &raw) {
            let _ = a.display();
            if let Answer::Text(s) = &a {
                prop_assert!(!s.is_empty());
                prop_assert!(ja::char_count(s) <= MAX_INPUT);
            }
            let again = check_field(f, &to_raw(&Answers::from([(f.id.clone(), a.clone())])));
            prop_assert_eq!(again, Ok(Some(a)));
        }
    }

    /// Where the check normalises with NFKC, typing the normalised form instead
    /// (full-width digits, half-width kana, compatibility characters…) changes
    /// nothing: same answer, or the same error on the same input.
    #[test]
    fn nfkc_inputs_are_normalisation_invariant((f, raw) in field_and_raw()) {
        let mut normalised = raw.clone();
        for name in nfkc_inputs(f) {
            if let Some(v) = normalised.get_mut(&name) {
                for s in v.iter_mut() {
                    *s = ja::nfkc(s);
                }
            }
        }
        let (a, b) = (check_field(f, &raw), check_field(f, &normalised));
        match (&a, &b) {
            (Ok(x), Ok(y)) => prop_assert_eq!(x, y),
            (Err(x), Err(y)) => prop_assert_eq!(&x.input, &y.input),
            _ => prop_assert!(false, "{:?} vs {:?} for {:?}", a, b, raw),
        }
    }
}

#[test]
fn answers_examples() {
    let get = |id: &str| fields().iter().find(|f| f.id == id).unwrap();
    let one =
        |id: &str, v: &str| check_field(get(id), &Raw::from([(id.to_owned(), vec![v.to_owned()])]));
    // IVS sequences are one character and kept exactly.
    assert_eq!(
        one("tl", "葛\u{E0100}飾区"),
        Ok(Some(Answer::Text("葛\u{E0100}飾区".into())))
    );
    assert_eq!(one("ni", "１２個"), Ok(Some(Answer::Number("12".into()))));
    // Control characters, a lone BOM, very long input: refused or kept, no panic.
    for v in [
        "\0",
        "\u{FEFF}",
        "\u{7}\u{1B}[31m",
        &"あ".repeat(MAX_INPUT * 3),
    ] {
        for f in fields() {
            let raw: Raw = input_names(f)
                .into_iter()
                .map(|name| (name, vec![v.to_owned()]))
                .collect();
            let _ = check_field(f, &raw);
        }
    }
}

// ---------------------------------------------------------------------------
// (c) RFC 9162 transparency log

fn leaves(n: usize, salt: u64) -> Vec<Hash> {
    (0..n)
        .map(|i| tlog::leaf_hash(format!("certificate {salt} {i}").as_bytes()))
        .collect()
}

proptest! {
    // Every proof of a tree is checked in each case, so few cases: the unit tests of
    // src/crypto/tlog.rs already cover every tree up to 64 leaves.
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Every leaf's inclusion proof verifies; the same proof for another index, or
    /// for a modified leaf, or with a modified hash, does not.
    #[test]
    fn every_inclusion_proof_verifies(n in 1usize..=200, salt in any::<u64>(), shift in any::<Index>()) {
        let l = leaves(n, salt);
        let root = tlog::root(&l);
        let size = n as u64;
        for i in 0..n {
            let proof = tlog::inclusion_proof(&l, i);
            prop_assert!(tlog::verify_inclusion(&l[i], i as u64, size, &proof, &root), "n={} i={}", n, i);
            if n > 1 {
                let j = (i + 1 + shift.index(n - 1)) % n;
                prop_assert!(!tlog::verify_inclusion(&l[i], j as u64, size, &proof, &root), "n={} i={} as j={}", n, i, j);
                let mut bad = proof.clone();
                let k = shift.index(bad.len());
                bad[k][i % 32] ^= 0x80;
                prop_assert!(!tlog::verify_inclusion(&l[i], i as u64, size, &bad, &root));
            }
            let mut leaf = l[i];
            leaf[31 - i % 32] ^= 1;
            prop_assert!(!tlog::verify_inclusion(&leaf, i as u64, size, &proof, &root));
            prop_assert!(!tlog::verify_inclusion(&l[i], size + i as u64, size, &proof, &root));
        }
    }

    /// For every old size, the consistency proof verifies; against another old root,
    /// for another old size or with a modified hash, it does not.
    #[test]
    fn every_consistency_proof_verifies(n in 1usize..=200, salt in any::<u64>(), pick in any::<Index>()) {
        let l = leaves(n, salt);
        let new_root = tlog::root(&l);
        for m in 1..=n {
            let old_root = tlog::root(&l[..m]);
            let proof = tlog::consistency_proof(&l, m);
            prop_assert!(
                tlog::verify_consistency(m as u64, n as u64, &old_root, &new_root, &proof),
                "m={} n={}", m, n
            );
            if m < n {
                let mut forged = old_root;
                forged[m % 32] ^= 0x40;
                prop_assert!(!tlog::verify_consistency(m as u64, n as u64, &forged, &new_root, &proof));
                let mut bad = proof.clone();
                let k = pick.index(bad.len());
                bad[k][m % 32] ^= 1;
                prop_assert!(!tlog::verify_consistency(m as u64, n as u64, &old_root, &new_root, &bad));
                // Claimed for another old size.
                prop_assert!(!tlog::verify_consistency(m as u64 + 1, n as u64, &old_root, &new_root, &proof));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// (d) Canonical JSON (RFC 8785), what certificates are signed in

/// A JSON value whose objects serialise their members in the order held, so the
/// same value can be written with its keys in any order.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl serde::Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Int(i) => s.serialize_i64(*i),
            Node::Float(f) => s.serialize_f64(*f),
            Node::Str(t) => s.serialize_str(t),
            Node::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for x in a {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            Node::Object(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl Node {
    /// The same value with every object's keys permuted (deterministically by `seed`).
    fn shuffled(&self, seed: &mut u64) -> Node {
        match self {
            Node::Array(a) => Node::Array(a.iter().map(|x| x.shuffled(seed)).collect()),
            Node::Object(m) => {
                let mut m: Vec<(String, Node)> = m
                    .iter()
                    .map(|(k, v)| (k.clone(), v.shuffled(seed)))
                    .collect();
                for i in (1..m.len()).rev() {
                    *seed = seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    m.swap(i, (*seed >> 33) as usize % (i + 1));
                }
                Node::Object(m)
            }
            other => other.clone(),
        }
    }

    fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap()
    }
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,8}",
        "\\PC{0,6}",
        vec(tricky_char(), 0..6).prop_map(|v| v.into_iter().collect()),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        Just(Node::Null),
        any::<bool>().prop_map(Node::Bool),
        // Integers JSON numbers hold exactly (JCS writes every number as a double).
        (-(1i64 << 53)..(1i64 << 53)).prop_map(Node::Int),
        // Doubles within ±2^53: JCS writes larger ones as integer literals that a
        // parser reads back as integers a double may not hold (refused by `canonical`).
        any::<f64>()
            .prop_filter("finite, within 2^53", |f| f.is_finite()
                && f.abs() < 9_007_199_254_740_992.0)
            .prop_map(Node::Float),
        "\\PC{0,12}".prop_map(Node::Str),
        vec(tricky_char(), 0..12).prop_map(|v| Node::Str(v.into_iter().collect())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Node::Array),
            // Distinct keys, as in any JSON object serde produces.
            prop::collection::btree_map(json_key(), inner, 0..6)
                .prop_map(|m: BTreeMap<String, Node>| Node::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The same value gives the same bytes however its keys were ordered, from the
    /// value itself or from serde_json's `Value`; canonicalising the canonical
    /// form again changes nothing.
    #[test]
    fn canonical_json_is_deterministic_and_key_order_independent(v in node(), seed in any::<u64>()) {
        let bytes = canonical(&v).unwrap();
        prop_assert_eq!(&canonical(&v).unwrap(), &bytes);
        let mut s = seed;
        let shuffled = v.shuffled(&mut s);
        prop_assert_eq!(&canonical(&shuffled).unwrap(), &bytes);
        prop_assert_eq!(&canonical(&v.to_value()).unwrap(), &bytes);
        let reparsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(&canonical(&reparsed).unwrap(), &bytes);
        prop_assert!(std::str::from_utf8(&bytes).is_ok());
    }
}

// ---------------------------------------------------------------------------
// Problems these properties ran into, kept as regression tests: a lone CR in a
// textarea, an e-mail domain lower-cased after NFKC, a unit not NFKC-normalised, a
// pattern that closes the anchoring group, integers above 2^53 in signed documents.

fn answer(kind: FieldKind, value: &str) -> Result<Option<Answer>, String> {
    let f = field("x", true, kind);
    check_field(&f, &Raw::from([("x".to_owned(), vec![value.to_owned()])])).map_err(|e| e.message)
}

#[test]
fn textarea_answer_checks_again_to_itself() {
    let kind = || FieldKind::Textarea {
        min_length: None,
        max_length: None,
    };
    let Ok(Some(Answer::Text(once))) = answer(kind(), "a\r\r\nb") else {
        panic!("refused");
    };
    assert_eq!(answer(kind(), &once), Ok(Some(Answer::Text(once.clone()))));
}

#[test]
fn email_answer_checks_again_to_itself() {
    let Ok(Some(Answer::Text(once))) = answer(FieldKind::Email {}, "a@J\u{30C}.jp") else {
        panic!("refused");
    };
    assert_eq!(
        answer(FieldKind::Email {}, &once),
        Ok(Some(Answer::Text(once.clone())))
    );
}

#[test]
fn number_with_a_compatibility_unit_is_accepted() {
    let kind = || FieldKind::Number {
        min: None,
        max: None,
        unit: "㎡".into(),
        integer: false,
    };
    assert_eq!(answer(kind(), "50"), Ok(Some(Answer::Number("50".into()))));
    assert_eq!(
        answer(kind(), "50㎡"),
        Ok(Some(Answer::Number("50".into())))
    );
}

#[test]
fn text_pattern_must_match_the_whole_answer() {
    let kind = FieldKind::Text {
        min_length: None,
        max_length: None,
        pattern: Some("[0-9]{3})|(.*".into()),
        pattern_message: None,
    };
    let mut def = madoguchi::tenant::forms::definition::FormDefinition::new("t");
    def.pages[0].fields.push(field("x", true, kind.clone()));
    // Either the definition is refused, or the pattern is applied to the whole answer.
    assert!(!def.check().is_empty() || answer(kind, "anything").is_err());
}

#[test]
fn canonical_json_keeps_every_u64() {
    // RFC 8785 numbers are doubles: refusing such a value would do as well.
    let a = canonical(&serde_json::json!({ "size": 9_007_199_254_740_993_u64 })).ok();
    let b = canonical(&serde_json::json!({ "size": 9_007_199_254_740_992_u64 })).ok();
    assert!(a.is_none() || a != b);
}
