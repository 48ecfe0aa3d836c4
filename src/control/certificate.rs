//! Erasure certificates: what they hold, how they are signed, and their offline
//! verification (`madoguchi cert verify`), which needs no catalog and no network.
//!
//! The certificate maps the fields of a NIST SP 800-88 certificate of sanitization
//! (Rev. 2 §4.6, Rev. 1 Appendix G) onto this system. Three Ed25519 signatures:
//! - the operator who requested the decommissioning (sanitised by) signs the
//!   request, which the certificate carries unchanged: `SIG(madoguchi.erasure-request/1 ‖ LF ‖ JCS(request))`;
//! - the operator who carried out and verified the erasure signs the whole certificate,
//! - and so does the platform key: `SIG(madoguchi.erasure-certificate/1 ‖ LF ‖ JCS(certificate))`.
//!
//! JCS is RFC 8785 canonical JSON. The transparency-log entry is
//! `JCS({"certificate": …, "signatures": …})`; the file handed out adds a
//! `transparency` member with the entry's index, an inclusion proof, the signed
//! checkpoint and any consistency proofs from older tree sizes.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::key_transition::{same_key, vouched, Role, Transition, Vouched};
use crate::crypto::note::{parse_checkpoint, NoteSigner, NoteVerifier};
use crate::crypto::tlog::{self, Hash};

pub const FORMAT: &str = "madoguchi.erasure-certificate/1";
pub const REQUEST_FORMAT: &str = "madoguchi.erasure-request/1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenantIdentity {
    pub id: Uuid,
    pub slug: String,
    /// Municipality name.
    pub name: String,
    /// 全国地方公共団体コード.
    pub local_gov_code: String,
    pub database: String,
    pub role: String,
    pub crypto_id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Person {
    pub operator_id: String,
    pub name: String,
    pub title: String,
    /// Ed25519 public key, base64.
    pub public_key: String,
    /// When they signed (RFC 3339).
    pub date: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportFile {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// The export handed to the municipality before its data was erased.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FinalExport {
    pub directory: String,
    pub files: Vec<ExportFile>,
}

/// The decommissioning request, signed by the operator who made it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Request {
    pub format: String,
    pub id: Uuid,
    pub tenant: TenantIdentity,
    pub requested_at: String,
    pub requested_by: Person,
    pub reason: String,
    pub final_export: Option<FinalExport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupMedia {
    pub file: String,
    pub sha256: String,
    pub size: u64,
    pub created_at: String,
    /// `null` when the file was already gone (pruned earlier) and only its record remained.
    pub destroyed_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyMedia {
    /// `data` (the tenant's data key) or `db_password` (its database credentials).
    pub purpose: String,
    pub version: u32,
    /// First 16 hex digits of SHA-256 of the wrapped key: identifies it without revealing it.
    pub key_id: String,
    pub provider: String,
    pub destroyed_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Media {
    /// The PostgreSQL cluster (system identifier and version).
    pub cluster: String,
    pub database: String,
    pub role: String,
    pub backups: Vec<BackupMedia>,
    /// Catalog backups destroyed because they held the tenant's wrapped keys.
    pub catalog_backups: Vec<BackupMedia>,
    pub keys: Vec<KeyMedia>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sanitization {
    /// NIST SP 800-88 method: Clear, Purge or Destroy.
    pub method: String,
    pub techniques: Vec<String>,
    pub tool: Tool,
    pub notes: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Step {
    pub step: String,
    pub started_at: String,
    pub finished_at: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Check {
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verification {
    pub method: String,
    pub results: Vec<Check>,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogInfo {
    pub origin: String,
    /// The log key in C2SP verifier-key form; vouched for by the platform signature.
    pub verifier_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Certificate {
    pub format: String,
    pub id: Uuid,
    pub standard: String,
    pub organization: TenantIdentity,
    pub media: Media,
    pub sanitization: Sanitization,
    pub steps: Vec<Step>,
    pub verification: Verification,
    pub started_at: String,
    pub finished_at: String,
    pub request: Request,
    pub sanitized_by: Person,
    pub verified_by: Person,
    pub transparency_log: LogInfo,
    /// The platform key in C2SP verifier-key form.
    pub platform_key: String,
}

/// Base64 Ed25519 signatures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Signatures {
    /// By the requesting operator, over the request.
    pub sanitizer: String,
    /// By the verifying operator, over the certificate.
    pub verifier: String,
    /// By the platform key, over the certificate.
    pub platform: String,
}

/// The signed certificate: exactly what the transparency log holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Signed {
    pub certificate: Certificate,
    pub signatures: Signatures,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConsistencyProof {
    pub old_size: u64,
    pub proof: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Transparency {
    pub log_index: u64,
    pub tree_size: u64,
    pub inclusion_proof: Vec<String>,
    /// A C2SP signed note holding a `tlog-checkpoint`.
    pub checkpoint: String,
    #[serde(default)]
    pub consistency: Vec<ConsistencyProof>,
}

/// The file handed to the municipality and to auditors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertificateFile {
    pub certificate: Certificate,
    pub signatures: Signatures,
    pub transparency: Transparency,
    /// Signed transitions of the platform and log keys (see
    /// [`super::key_transition`]), oldest first: they link the keys that signed this
    /// file to older and newer ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_transitions: Vec<String>,
}

/// RFC 8785 canonical JSON. Numbers are written as IEEE doubles there, so integers
/// a double cannot hold exactly (some above 2^53) are refused: they would not be
/// signed exactly.
pub fn canonical<T: Serialize>(value: &T) -> anyhow::Result<Vec<u8>> {
    fn exact(v: &serde_json::Value) -> bool {
        match v {
            // An integer is signed exactly when a double holds it exactly.
            serde_json::Value::Number(n) => n
                .as_u64()
                .map(|u| (u as f64) as u128 == u128::from(u))
                .or_else(|| n.as_i64().map(|i| (i as f64) as i128 == i128::from(i)))
                .unwrap_or(true),
            serde_json::Value::Array(a) => a.iter().all(exact),
            serde_json::Value::Object(o) => o.values().all(exact),
            _ => true,
        }
    }
    let v = serde_json::to_value(value)?;
    anyhow::ensure!(
        exact(&v),
        "a number in the document cannot be signed exactly (an integer a double does not hold)"
    );
    Ok(serde_json_canonicalizer::to_vec(&v)?)
}

fn message(format: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(format.len() + 1 + body.len());
    m.extend_from_slice(format.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m
}

/// What the requesting operator signs.
pub fn request_message(request: &Request) -> anyhow::Result<Vec<u8>> {
    Ok(message(REQUEST_FORMAT, &canonical(request)?))
}

/// What the verifying operator and the platform sign.
pub fn certificate_message(cert: &Certificate) -> anyhow::Result<Vec<u8>> {
    Ok(message(FORMAT, &canonical(cert)?))
}

pub fn sign(signer: &NoteSigner, msg: &[u8]) -> String {
    B64.encode(signer.sign_bytes(msg))
}

/// The transparency-log entry of a signed certificate.
pub fn log_entry(signed: &Signed) -> anyhow::Result<Vec<u8>> {
    canonical(signed)
}

pub fn encode_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
}

fn decode_hashes(v: &[String]) -> Option<Vec<Hash>> {
    v.iter()
        .map(|s| B64.decode(s).ok().and_then(|b| b.try_into().ok()))
        .collect()
}

fn ed25519_verifier(name: &str, public_b64: &str) -> Option<NoteVerifier> {
    let raw: [u8; 32] = B64.decode(public_b64).ok()?.try_into().ok()?;
    NoteVerifier::from_public(name, &raw).ok()
}

/// One line of a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub what: String,
}

/// The outcome of `cert verify`.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub findings: Vec<Finding>,
}

impl Verdict {
    fn check(&mut self, ok: bool, what: impl Into<String>) -> bool {
        self.findings.push(Finding {
            ok,
            what: what.into(),
        });
        ok
    }

    pub fn ok(&self) -> bool {
        !self.findings.is_empty() && self.findings.iter().all(|f| f.ok)
    }

    /// Human-readable, one line per check, then the verdict.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            out.push_str(if f.ok { "  ok    " } else { "  FAIL  " });
            out.push_str(&f.what);
            out.push('\n');
        }
        out.push_str(if self.ok() {
            "VERIFIED: the certificate is authentic, complete and in the log.\n検証成功: 証明書は真正で、透明性ログに記録されています。\n"
        } else {
            "NOT VERIFIED: see the failed checks above.\n検証失敗: 上記の FAIL の項目を確認してください。\n"
        });
        out
    }
}

/// What `cert verify` is given besides the certificate.
#[derive(Debug, Default)]
pub struct Trust<'a> {
    /// The platform key in verifier form (from `madoguchi platform-key`).
    pub platform_key: &'a str,
    /// Registered operators' keys (`ID ed25519 BASE64` lines); without them, the
    /// keys in the certificate are used, vouched for by the platform signature.
    pub operators: Option<&'a [(String, [u8; 32])]>,
    /// An older checkpoint the auditor kept.
    pub older_checkpoint: Option<&'a str>,
}

/// Checks a certificate file offline.
pub fn verify(file_text: &str, trust: &Trust<'_>) -> Verdict {
    let mut v = Verdict::default();
    let file: CertificateFile = match serde_json::from_str(file_text) {
        Ok(f) => f,
        Err(e) => {
            v.check(
                false,
                format!("the file is not an erasure certificate: {e}"),
            );
            return v;
        }
    };
    let cert = &file.certificate;
    v.check(
        cert.format == FORMAT && cert.request.format == REQUEST_FORMAT,
        format!("format {}", cert.format),
    );
    v.check(
        cert.request.tenant == cert.organization,
        format!(
            "the request names the same municipality: {} ({})",
            cert.organization.name, cert.organization.local_gov_code
        ),
    );

    // Key transitions carried in the file: each must be signed by both its keys.
    let mut transitions = Vec::new();
    for note in &file.key_transitions {
        match Transition::open(note) {
            Some(t) => transitions.push(t),
            None => {
                v.check(
                    false,
                    "a key transition in the file is not signed by both keys it names",
                );
                return v;
            }
        }
    }

    // The platform signature.
    let platform = match NoteVerifier::parse(trust.platform_key) {
        Ok(p) => p,
        Err(_) => {
            v.check(
                false,
                "the platform key given is not a verifier key (name+hash+base64)",
            );
            return v;
        }
    };
    let Ok(cert_msg) = certificate_message(cert) else {
        v.check(false, "the certificate cannot be canonicalised");
        return v;
    };
    let sig = |s: &str| B64.decode(s).unwrap_or_default();
    let platform_signed =
        |k: &NoteVerifier| k.verify_bytes(&cert_msg, &sig(&file.signatures.platform));
    // A certificate signed by a key the given one replaced counts only as far as the
    // log shows it was there before: (log key, size) when the given key took over.
    let mut logged_before: Option<(String, u64)> = None;
    if platform_signed(&platform) {
        v.check(true, "signed by the platform key");
    } else {
        // Signed by a key the given one was replaced by, or replaced.
        let linked = vouched(trust.platform_key, Role::Platform, &transitions)
            .into_iter()
            .filter(|k| k.hops > 0 && same_key(&k.key, &cert.platform_key))
            .find_map(|k| NoteVerifier::parse(&k.key).ok().map(|p| (p, k)));
        match linked {
            Some((p, k)) => {
                v.check(
                    platform_signed(&p),
                    format!(
                        "signed by the platform key {}, {} the key given by {} signed key transition(s)",
                        cert.platform_key,
                        if k.earlier { "replaced by" } else { "which replaced" },
                        k.hops
                    ),
                );
                if k.earlier {
                    let arrival = transitions
                        .iter()
                        .find(|t| t.role == Role::Platform && same_key(&t.to, trust.platform_key));
                    match arrival.and_then(|t| t.log.clone()) {
                        Some(log) => logged_before = Some(log),
                        None => {
                            v.check(
                                false,
                                "the file lacks the transition by which the key given took over",
                            );
                            return v;
                        }
                    }
                }
            }
            None => {
                v.check(false, "signed by the platform key");
            }
        }
    }

    // The two operators.
    v.check(
        cert.sanitized_by.operator_id != cert.verified_by.operator_id
            && cert.sanitized_by.public_key != cert.verified_by.public_key,
        format!(
            "two different operators, with different keys: requested by {}, erased and verified by {}",
            cert.sanitized_by.operator_id, cert.verified_by.operator_id
        ),
    );
    v.check(
        cert.request.requested_by.operator_id == cert.sanitized_by.operator_id
            && cert.request.requested_by.public_key == cert.sanitized_by.public_key,
        "the requesting operator is the one named as having sanitised",
    );
    for (role, person, msg, signature) in [
        (
            "requesting operator",
            &cert.sanitized_by,
            request_message(&cert.request).ok(),
            &file.signatures.sanitizer,
        ),
        (
            "verifying operator",
            &cert.verified_by,
            Some(cert_msg.clone()),
            &file.signatures.verifier,
        ),
    ] {
        let key = match trust.operators {
            Some(list) => match list.iter().find(|(id, _)| *id == person.operator_id) {
                Some((_, k)) if B64.encode(k) == person.public_key => {
                    Some(person.public_key.clone())
                }
                Some(_) => {
                    v.check(
                        false,
                        format!(
                            "{role} {}: the key in the certificate is not the registered one",
                            person.operator_id
                        ),
                    );
                    None
                }
                None => {
                    v.check(
                        false,
                        format!(
                            "{role} {} is not among the given operators' keys",
                            person.operator_id
                        ),
                    );
                    None
                }
            },
            None => Some(person.public_key.clone()),
        };
        if let Some(key) = key {
            let ok = match (ed25519_verifier(&person.operator_id, &key), &msg) {
                (Some(ver), Some(m)) => ver.verify_bytes(m, &sig(signature)),
                _ => false,
            };
            v.check(
                ok,
                format!(
                    "signed by the {role} {} ({}, {}){}",
                    person.operator_id,
                    person.name,
                    person.title,
                    if trust.operators.is_some() {
                        ""
                    } else {
                        " [key as stated in the certificate]"
                    }
                ),
            );
        }
    }

    // What the erasure found.
    for c in &cert.verification.results {
        v.check(c.passed, format!("erasure check {}: {}", c.check, c.detail));
    }
    v.check(
        cert.verification.passed
            && !cert.verification.results.is_empty()
            && cert.verification.results.iter().all(|c| c.passed),
        "the erasure's own verification passed",
    );

    // The transparency log.
    if NoteVerifier::parse(&cert.transparency_log.verifier_key).is_err() {
        v.check(false, "the log key in the certificate is malformed");
        return v;
    }
    // The checkpoint is signed when the file is exported, by the log key of the day:
    // the one the certificate names or one that replaced it (never one it replaced,
    // which someone may hold since), and for a certificate signed by a replaced
    // platform key, the log key named when the given key took over or a later one.
    // An auditor's older checkpoint may be from before the certificate's log key.
    let parsed = |keys: Vec<Vouched>| -> Vec<(NoteVerifier, Vouched)> {
        keys.into_iter()
            .filter_map(|k| NoteVerifier::parse(&k.key).ok().map(|l| (l, k)))
            .collect()
    };
    let anchor = logged_before
        .as_ref()
        .map_or(cert.transparency_log.verifier_key.as_str(), |(k, _)| {
            k.as_str()
        });
    let current_keys = parsed(
        vouched(anchor, Role::Log, &transitions)
            .into_iter()
            .filter(|k| !k.earlier)
            .collect(),
    );
    let older_keys = parsed(vouched(
        &cert.transparency_log.verifier_key,
        Role::Log,
        &transitions,
    ));
    let open_with = |keys: &[(NoteVerifier, Vouched)], note: &str| {
        keys.iter().find_map(|(l, k)| {
            l.open(note)
                .ok()
                .and_then(|text| parse_checkpoint(text).ok())
                .map(|c| (c, k.clone()))
        })
    };
    let open_checkpoint = |note: &str| open_with(&current_keys, note);
    let open_older = |note: &str| open_checkpoint(note).or_else(|| open_with(&older_keys, note));
    let by = |k: &Vouched| {
        if same_key(&k.key, &cert.transparency_log.verifier_key) {
            String::new()
        } else {
            format!(
                ", by the log key {} that replaced the one the certificate names",
                k.key
            )
        }
    };
    let t = &file.transparency;
    let Some(((origin, size, root), signer)) = open_checkpoint(&t.checkpoint) else {
        v.check(false, "the checkpoint is not signed by the log key");
        return v;
    };
    v.check(
        origin == cert.transparency_log.origin && size == t.tree_size,
        format!(
            "checkpoint signed by the log key ({origin}, size {size}{})",
            by(&signer)
        ),
    );
    let included = match (
        Signed {
            certificate: cert.clone(),
            signatures: file.signatures.clone(),
        },
        decode_hashes(&t.inclusion_proof),
    ) {
        (signed, Some(proof)) => log_entry(&signed)
            .map(|e| tlog::verify_inclusion(&tlog::leaf_hash(&e), t.log_index, size, &proof, &root))
            .unwrap_or(false),
        _ => false,
    };
    v.check(
        included,
        format!("included in the log at index {} of {size}", t.log_index),
    );
    if let Some((_, before)) = &logged_before {
        v.check(
            t.log_index < *before,
            format!(
                "in the log before the key given took over (index {} of the {before} entries then)",
                t.log_index
            ),
        );
    }

    if let Some(older) = trust.older_checkpoint {
        match open_older(older).map(|(c, _)| c) {
            None => {
                v.check(false, "the older checkpoint is not signed by the log key");
            }
            Some((o, m, _)) if o != origin => {
                v.check(
                    false,
                    format!("the older checkpoint is of another log ({o}, size {m})"),
                );
            }
            Some((_, m, old_root)) if m == size => {
                v.check(
                    old_root == root,
                    format!("the older checkpoint (size {m}) has the same root"),
                );
            }
            Some((_, m, _)) if m > size => {
                v.check(
                    false,
                    format!(
                        "the older checkpoint (size {m}) is newer than this file's ({size}); download the certificate again (madoguchi cert export ID, or the console) for a current checkpoint"
                    ),
                );
            }
            Some((_, m, old_root)) => {
                let proof = t
                    .consistency
                    .iter()
                    .find(|c| c.old_size == m)
                    .and_then(|c| decode_hashes(&c.proof));
                match proof {
                    Some(p) => {
                        v.check(
                            tlog::verify_consistency(m, size, &old_root, &root, &p),
                            format!("the log grew only by appending since the older checkpoint (size {m} → {size})"),
                        );
                    }
                    None => {
                        v.check(
                            false,
                            format!(
                                "this file carries no consistency proof from size {m}; export it with `madoguchi cert export ID --since {m}` (or ?since={m} in the console)"
                            ),
                        );
                    }
                }
            }
        }
    }
    v
}

/// Fresh transparency data for a logged certificate: inclusion proof and consistency
/// proofs against the current tree, with a checkpoint signed now.
pub fn transparency(
    leaves: &[Hash],
    index: usize,
    log: &NoteSigner,
    since: &[u64],
) -> anyhow::Result<Transparency> {
    let size = leaves.len();
    anyhow::ensure!(
        index < size,
        "log index {index} outside the log (size {size})"
    );
    let root = tlog::root(leaves);
    let text = crate::crypto::note::checkpoint_text(log.name(), size as u64, &root);
    let checkpoint = log.sign_note(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut consistency = Vec::new();
    for &old in since {
        if old >= 1 && (old as usize) < size {
            consistency.push(ConsistencyProof {
                old_size: old,
                proof: encode_hashes(&tlog::consistency_proof(leaves, old as usize)),
            });
        }
    }
    Ok(Transparency {
        log_index: index as u64,
        tree_size: size as u64,
        inclusion_proof: encode_hashes(&tlog::inclusion_proof(leaves, index)),
        checkpoint,
        consistency,
    })
}
