//! Erasure certificates (src/control/certificate.rs): `verify` on arbitrary text,
//! and on a valid, fully signed certificate file whose JSON the fuzzer mutates.
//!
//! First byte: bit 0 gives the registered operators' keys, bit 1 an older
//! checkpoint (size 3) the auditor kept; bits 2-3 the mode:
//! - 0: the rest is the certificate file (any text);
//! - 1: the rest is a list of mutations applied to the valid file's JSON;
//! - 2: the valid file, the rest as the older checkpoint;
//! - 3: the valid file, the rest as the platform key.
//!
//! The oracle in mode 1: if the mutated file still reads as a certificate file and
//! nothing the signatures, the checkpoint or the proofs cover changed, it verifies;
//! if any of it changed, it does not. Never a panic, in any mode.
//!
//! `MADOGUCHI_FUZZ_WRITE_SEEDS=fuzz/seeds/certificate` writes the valid file and
//! the older checkpoint there as seeds (modes 0 and 2).
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use madoguchi::control::certificate::{
    certificate_message, log_entry, request_message, sign, transparency, verify, Certificate,
    CertificateFile, Signatures, Signed, Trust,
};
use madoguchi::crypto::note::{checkpoint_text, NoteSigner};
use madoguchi::crypto::tlog::{leaf_hash, root};
use serde_json::{json, Value};

struct Fixture {
    file: CertificateFile,
    value: Value,
    platform_key: String,
    operators: Vec<(String, [u8; 32])>,
    older: String,
}

fn signer(name: &str, seed: u8) -> NoteSigner {
    NoteSigner::from_seed(name, &[seed; 32]).expect("signer")
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let platform = signer("madoguchi.example/platform", 1);
        let log = signer("madoguchi.example/erasure-log", 2);
        let op_a = signer("op-a", 3);
        let op_b = signer("op-b", 4);
        let key = |s: &NoteSigner| B64.encode(s.public_key().as_bytes());
        let tenant = json!({
            "id": "6d61646f-6775-4368-8900-000000000001", "slug": "chiyoda",
            "name": "千代田区", "local_gov_code": "131016", "database": "t_chiyoda",
            "role": "t_chiyoda", "crypto_id": "6d61646f-6775-4368-8900-000000000002"
        });
        let person = |s: &NoteSigner, name: &str, date: &str| {
            json!({ "operator_id": s.name(), "name": name, "title": "運用担当",
                    "public_key": key(s), "date": date })
        };
        let backup = json!({ "file": "chiyoda-20260101.dump", "sha256": "ab".repeat(32),
            "size": 123_456_u64, "created_at": "2026-01-01T00:00:00Z",
            "destroyed_at": "2026-03-01T10:00:00Z" });
        let cert = json!({
            "format": "madoguchi.erasure-certificate/1",
            "id": "6d61646f-6775-4368-8900-000000000003",
            "standard": "NIST SP 800-88 Rev. 2",
            "organization": tenant,
            "media": {
                "cluster": "PostgreSQL 17 (system 7400000000000000001)",
                "database": "t_chiyoda", "role": "t_chiyoda",
                "backups": [backup, { "file": "old.dump", "sha256": "cd".repeat(32), "size": 0,
                    "created_at": "2025-01-01T00:00:00Z", "destroyed_at": null }],
                "catalog_backups": [],
                "keys": [{ "purpose": "data", "version": 2, "key_id": "0123456789abcdef",
                    "provider": "file", "destroyed_at": "2026-03-01T10:00:01Z" }]
            },
            "sanitization": { "method": "Purge", "techniques": ["DROP DATABASE", "crypto-erase"],
                "tool": { "name": "madoguchi", "version": "0.1.0" }, "notes": "" },
            "steps": [{ "step": "drop", "started_at": "2026-03-01T10:00:00Z",
                "finished_at": "2026-03-01T10:00:02Z", "detail": "ok" }],
            "verification": { "method": "catalog and cluster queries", "passed": true,
                "results": [{ "check": "database gone", "passed": true, "detail": "" },
                            { "check": "keys gone", "passed": true, "detail": "2 keys" }] },
            "started_at": "2026-03-01T10:00:00Z", "finished_at": "2026-03-01T10:05:00Z",
            "request": {
                "format": "madoguchi.erasure-request/1",
                "id": "6d61646f-6775-4368-8900-000000000004",
                "tenant": tenant, "requested_at": "2026-02-01T09:00:00+09:00",
                "requested_by": person(&op_a, "山田 太郎", "2026-02-01T09:00:00+09:00"),
                "reason": "契約終了",
                "final_export": { "directory": "/exports/chiyoda",
                    "files": [{ "name": "a.xlsx", "sha256": "ef".repeat(32), "size": 9 }] }
            },
            "sanitized_by": person(&op_a, "山田 太郎", "2026-02-01T09:00:00+09:00"),
            "verified_by": person(&op_b, "佐藤 花子", "2026-03-01T10:05:00Z"),
            "transparency_log": { "origin": log.name(), "verifier_key": log.verifier_key() },
            "platform_key": platform.verifier_key()
        });
        let certificate: Certificate = serde_json::from_value(cert).expect("fixture certificate");
        let msg = certificate_message(&certificate).expect("canonical");
        let signatures = Signatures {
            sanitizer: sign(
                &op_a,
                &request_message(&certificate.request).expect("canonical"),
            ),
            verifier: sign(&op_b, &msg),
            platform: sign(&platform, &msg),
        };
        let signed = Signed {
            certificate: certificate.clone(),
            signatures: signatures.clone(),
        };
        let mut leaves: Vec<_> = (0..7)
            .map(|i| leaf_hash(format!("other {i}").as_bytes()))
            .collect();
        leaves[5] = leaf_hash(&log_entry(&signed).expect("entry"));
        let file = CertificateFile {
            certificate,
            signatures,
            transparency: transparency(&leaves, 5, &log, &[3, 6]).expect("transparency"),
        };
        let older = log
            .sign_note(&checkpoint_text(log.name(), 3, &root(&leaves[..3])))
            .expect("older checkpoint");
        let f = Fixture {
            value: serde_json::to_value(&file).expect("value"),
            file,
            platform_key: platform.verifier_key(),
            operators: vec![
                ("op-a".into(), op_a.public_key().to_bytes()),
                ("op-b".into(), op_b.public_key().to_bytes()),
            ],
            older,
        };
        let text = serde_json::to_string(&f.value).expect("text");
        let v = verify(&text, &f.trust(true, true));
        assert!(v.ok(), "the fixture does not verify:\n{}", v.report());
        // To refresh the mode-0 seeds: the valid file, and the older checkpoint.
        if let Some(dir) = std::env::var_os("MADOGUCHI_FUZZ_WRITE_SEEDS") {
            let dir = std::path::Path::new(&dir);
            let seed = |flags: u8, body: &str| [&[flags][..], body.as_bytes()].concat();
            std::fs::write(dir.join("valid-file"), seed(0x03, &text)).expect("seed");
            std::fs::write(dir.join("older-checkpoint"), seed(0x09, &f.older)).expect("seed");
        }
        f
    })
}

impl Fixture {
    fn trust(&self, operators: bool, older: bool) -> Trust<'_> {
        Trust {
            platform_key: &self.platform_key,
            operators: operators.then_some(self.operators.as_slice()),
            older_checkpoint: older.then_some(self.older.as_str()),
        }
    }
}

/// Every node of a JSON value, as JSON pointers, parents before children.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        _ => {}
    }
}

/// Applies mutations `[selector u16][op][len][payload; len]…` to the value.
fn mutate(value: &mut Value, mut data: &[u8]) {
    for _ in 0..8 {
        let [s0, s1, op, len, rest @ ..] = data else {
            return;
        };
        let len = usize::from(*len).min(rest.len());
        let (payload, tail) = rest.split_at(len);
        data = tail;
        let mut all = Vec::new();
        pointers(value, String::new(), &mut all);
        if all.is_empty() {
            return;
        }
        let ptr = all[usize::from(u16::from_le_bytes([*s0, *s1])) % all.len()].clone();
        let text = String::from_utf8_lossy(payload).into_owned();
        let number = {
            let mut b = [0u8; 8];
            b[..payload.len().min(8)].copy_from_slice(&payload[..payload.len().min(8)]);
            u64::from_le_bytes(b)
        };
        if op % 10 == 4 {
            // Remove the node from its parent.
            let (parent, last) = ptr.rsplit_once('/').unwrap_or_default();
            match value.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.remove(&last.replace("~1", "/").replace("~0", "~"));
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = last.parse::<usize>() {
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        let other = all[number as usize % all.len()].clone();
        let other_value = value.pointer(&other).cloned();
        let Some(node) = value.pointer_mut(&ptr) else {
            continue;
        };
        match op % 10 {
            0 => *node = Value::String(text),
            1 => *node = json!(number),
            2 => *node = Value::Bool(!node.as_bool().unwrap_or(false)),
            3 => *node = Value::Null,
            5 => {
                // A string edited in place; base64 edited in its bytes, so it stays
                // well-formed and reaches the signature and proof checks.
                if let Some(s) = node.as_str() {
                    let edited = match B64.decode(s) {
                        Ok(mut bytes) if !bytes.is_empty() => {
                            let i = number as usize % (bytes.len() * 8);
                            bytes[i / 8] ^= 1 << (i % 8);
                            B64.encode(bytes)
                        }
                        _ => {
                            let mut chars: Vec<char> = s.chars().collect();
                            let at = number as usize % (chars.len() + 1);
                            chars.splice(at..at, text.chars());
                            chars.into_iter().collect()
                        }
                    };
                    *node = Value::String(edited);
                }
            }
            6 => match node {
                Value::Array(a) if !a.is_empty() => {
                    let i = number as usize % a.len();
                    a.insert(i, a[i].clone());
                }
                Value::Object(m) => {
                    m.insert(text, json!(number));
                }
                _ => {}
            },
            7 => *node = json!(-(number as i64 as f64) / 3.0),
            8 => {
                if let Some(v) = other_value {
                    *node = v;
                }
            }
            _ => {
                if let Some(n) = node.as_u64() {
                    *node = json!(n ^ (1 << (number % 64)));
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let (with_ops, with_older) = (flags & 1 == 1, flags & 2 == 2);
    let valid_text = || serde_json::to_string(&f.value).expect("text");
    match (flags >> 2) & 3 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            let v = verify(&text, &f.trust(with_ops, with_older));
            let _ = v.report();
        }
        2 => {
            let older = String::from_utf8_lossy(rest);
            let mut trust = f.trust(with_ops, false);
            trust.older_checkpoint = Some(&older);
            let v = verify(&valid_text(), &trust);
            if older == f.older {
                assert!(v.ok(), "{}", v.report());
            }
        }
        3 => {
            let key = String::from_utf8_lossy(rest);
            let mut trust = f.trust(with_ops, with_older);
            trust.platform_key = &key;
            let _ = verify(&valid_text(), &trust).report();
        }
        _ => {
            let mut value = f.value.clone();
            mutate(&mut value, rest);
            let text = serde_json::to_string(&value).expect("text");
            let v = verify(&text, &f.trust(with_ops, with_older));
            let Ok(parsed) = serde_json::from_str::<CertificateFile>(&text) else {
                assert!(!v.ok(), "an unreadable file verified:\n{text}");
                return;
            };
            let (t, t0) = (&parsed.transparency, &f.file.transparency);
            let proof_from_3 = |t: &madoguchi::control::certificate::Transparency| {
                t.consistency
                    .iter()
                    .find(|c| c.old_size == 3)
                    .map(|c| c.proof.clone())
            };
            let covered_same = parsed.certificate == f.file.certificate
                && parsed.signatures == f.file.signatures
                && t.log_index == t0.log_index
                && t.tree_size == t0.tree_size
                && t.inclusion_proof == t0.inclusion_proof
                && (!with_older || proof_from_3(t) == proof_from_3(t0));
            if !covered_same {
                assert!(
                    !v.ok(),
                    "a changed certificate verified:\n{text}\n{}",
                    v.report()
                );
            } else if t.checkpoint == t0.checkpoint {
                assert!(
                    v.ok(),
                    "an unchanged certificate failed:\n{text}\n{}",
                    v.report()
                );
            }
        }
    }
});
