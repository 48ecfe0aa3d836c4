//! Decommissioning a tenant: a request by one registered operator (the tenant is
//! closed, an optional final export is made for the municipality), then erasure by
//! another, which destroys the database, role, backups and keys, verifies that they
//! are gone, and issues a certificate signed by both and by the platform, appended
//! to the transparency log.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use super::backup::{self, BackupStore};
use super::certificate::{
    self as cert, BackupMedia, Certificate, CertificateFile, Check, KeyMedia, LogInfo, Media,
    Person, Request, Sanitization, Signatures, Signed, Step, TenantIdentity, Tool, Verification,
};
use super::keys::{load_signer, log_signer, platform_signer};
use super::oplog;
use crate::catalog::{quote_ident, TenantRecord, TenantState};
use crate::crypto::note::NoteSigner;
use crate::crypto::{aad, DataKey};
use crate::platform::Platform;

const CANARY_PLAINTEXT: &[u8] = b"madoguchi erasure canary";

fn canary_aad(crypto_id: &Uuid, version: u32) -> Vec<u8> {
    aad(&[
        b"madoguchi-canary-v1",
        crypto_id.as_bytes(),
        &version.to_be_bytes(),
    ])
}

/// A value encrypted under a data key when the tenant is made; after erasure no key
/// left in the catalog decrypts it.
pub fn make_canary(key: &DataKey, crypto_id: &Uuid, version: u32) -> anyhow::Result<Vec<u8>> {
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = Aes256Gcm::new_from_slice(key.bytes())
        .map_err(|_| anyhow::anyhow!("bad key"))?
        .encrypt(
            aes_gcm::Nonce::from_slice(&nonce),
            Payload {
                msg: CANARY_PLAINTEXT,
                aad: &canary_aad(crypto_id, version),
            },
        )
        .map_err(|_| anyhow::anyhow!("encrypting the canary failed"))?;
    Ok([nonce.to_vec(), ct].concat())
}

fn canary_opens(key: &DataKey, crypto_id: &Uuid, version: u32, canary: &[u8]) -> bool {
    if canary.len() < 12 + 16 {
        return false;
    }
    Aes256Gcm::new_from_slice(key.bytes()).is_ok_and(|a| {
        a.decrypt(
            aes_gcm::Nonce::from_slice(&canary[..12]),
            Payload {
                msg: &canary[12..],
                aad: &canary_aad(crypto_id, version),
            },
        )
        .is_ok_and(|pt| pt == CANARY_PLAINTEXT)
    })
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A registered operator who may sign (not an auditor): as named in certificates,
/// and their public key.
pub async fn registered_operator(p: &Platform, id: &str) -> anyhow::Result<(Person, [u8; 32])> {
    let op = p
        .catalog
        .operators()
        .await?
        .into_iter()
        .find(|o| o.id == id)
        .with_context(|| {
            format!("オペレーター {id} は登録されていません / operator {id} is not registered")
        })?;
    if let Some(revocation) = &op.revoked {
        return Err(super::operators::refusal(id, revocation));
    }
    let key: [u8; 32] = match (op.role.as_str(), op.public_key.clone().try_into()) {
        ("operator", Ok(k)) => k,
        _ => {
            bail!("{id} is an auditor; only operators with a signing key may decommission or erase")
        }
    };
    Ok((
        Person {
            operator_id: op.id,
            name: op.name,
            title: op.title,
            public_key: B64.encode(key),
            date: String::new(),
        },
        key,
    ))
}

/// Loads an operator's key file and checks it is their registered key.
async fn operator_key(p: &Platform, id: &str, key: &Path) -> anyhow::Result<NoteSigner> {
    let (_, public) = registered_operator(p, id).await?;
    let signer = load_signer(key, id, false)?;
    if signer.public_key().as_bytes() != &public {
        bail!(
            "the key file {} is not the registered key of operator {id}",
            key.display()
        );
    }
    Ok(signer)
}

/// Checks a signature by a registered operator.
async fn check_signature(p: &Platform, id: &str, msg: &[u8], sig: &[u8]) -> anyhow::Result<()> {
    let (_, public) = registered_operator(p, id).await?;
    let ok = crate::crypto::note::NoteVerifier::from_public(id, &public)
        .is_ok_and(|v| v.verify_bytes(msg, sig));
    if !ok {
        bail!("署名が {id} の登録済みの鍵と一致しません / the signature does not verify with {id}'s registered key");
    }
    Ok(())
}

fn identity(rec: &TenantRecord) -> TenantIdentity {
    TenantIdentity {
        id: rec.id,
        slug: rec.slug.clone(),
        name: rec.name.clone(),
        local_gov_code: rec.code.clone(),
        database: rec.database.clone(),
        role: rec.role.clone(),
        crypto_id: rec.crypto_id,
    }
}

/// Makes sure the tenant has a canary (tenants made before canaries get one now,
/// while their key still exists).
async fn ensure_canary(p: &Platform, rec: &TenantRecord) -> anyhow::Result<()> {
    let c = p.catalog.client().await?;
    let has: bool = c
        .query_one(
            "SELECT canary IS NOT NULL FROM tenants WHERE id = $1",
            &[&rec.id],
        )
        .await?
        .get(0);
    if has {
        return Ok(());
    }
    let k = p
        .catalog
        .keys(rec.id, "data")
        .await?
        .pop()
        .context("the tenant has no data key")?;
    let dk = DataKey::unwrap(p.keys.as_ref(), &k.wrapped, &rec.id, k.version)?;
    let canary = make_canary(&dk, &rec.crypto_id, k.version)?;
    c.execute(
        "UPDATE tenants SET canary = $2, canary_key_version = $3 WHERE id = $1",
        &[&rec.id, &canary, &i32::try_from(k.version)?],
    )
    .await?;
    Ok(())
}

/// What `tenant decommission` is told.
#[derive(Debug)]
pub struct DecommissionArgs<'a> {
    pub slug: &'a str,
    pub operator: &'a str,
    pub key: &'a Path,
    pub reason: &'a str,
    pub final_export: bool,
}

/// Step one: the request. The tenant is closed at once (citizens and staff see a
/// closed page); the request is signed with the operator's key file and kept for
/// the second operator.
pub async fn decommission(p: &Platform, args: &DecommissionArgs<'_>) -> anyhow::Result<Request> {
    let signer = operator_key(p, args.operator, args.key).await?;
    let request =
        prepare_decommission(p, args.slug, args.operator, args.reason, args.final_export).await?;
    let signature = signer.sign_bytes(&cert::request_message(&request)?);
    submit_decommission(p, &request, &signature).await?;
    Ok(request)
}

async fn tenant(p: &Platform, slug: &str) -> anyhow::Result<TenantRecord> {
    p.catalog
        .tenant_by_slug(slug)
        .await?
        .with_context(|| format!("テナント {slug} はありません / no tenant {slug}"))
}

/// Builds the request (making the final export first, if asked) for the operator to sign.
pub async fn prepare_decommission(
    p: &Platform,
    slug: &str,
    operator: &str,
    reason: &str,
    final_export: bool,
) -> anyhow::Result<Request> {
    let rec = tenant(p, slug).await?;
    if !matches!(rec.state, TenantState::Active | TenantState::Suspended) {
        bail!(
            "tenant {} is {}; only an active or suspended tenant can be decommissioned",
            rec.slug,
            rec.state
        );
    }
    let (person, _) = registered_operator(p, operator).await?;
    ensure_canary(p, &rec).await?;
    let final_export = if final_export {
        // Closed first, so nothing is applied or changed after the export is made
        // (what the municipality gets is all there was). A request left unsigned
        // leaves the tenant suspended, for `tenant resume`.
        if rec.state == TenantState::Active {
            let open = [TenantState::Active, TenantState::Suspended];
            if !p
                .catalog
                .move_state(rec.id, &open, TenantState::Suspended)
                .await?
            {
                bail!(
                    "tenant {} changed state meanwhile; not decommissioned",
                    rec.slug
                );
            }
            oplog::record(
                &p.catalog,
                operator,
                "tenant.suspend",
                &rec.slug,
                serde_json::json!({ "reason": "final export before decommissioning" }),
            )
            .await?;
        }
        Some(super::final_export::export(p, &rec).await?)
    } else {
        None
    };
    let at = rfc3339(now());
    Ok(Request {
        format: cert::REQUEST_FORMAT.to_owned(),
        id: Uuid::new_v4(),
        tenant: identity(&rec),
        requested_at: at.clone(),
        requested_by: Person { date: at, ..person },
        reason: reason.to_owned(),
        final_export,
    })
}

/// Records a signed request and closes the tenant.
pub async fn submit_decommission(
    p: &Platform,
    request: &Request,
    signature: &[u8],
) -> anyhow::Result<()> {
    let operator = request.requested_by.operator_id.as_str();
    check_signature(p, operator, &cert::request_message(request)?, signature).await?;
    let rec = tenant(p, &request.tenant.slug).await?;
    if identity(&rec) != request.tenant
        || !matches!(rec.state, TenantState::Active | TenantState::Suspended)
    {
        bail!("tenant {} changed since the request was prepared", rec.slug);
    }
    let at = OffsetDateTime::parse(&request.requested_at, &Rfc3339)?;
    let text = String::from_utf8(cert::canonical(request)?)?;
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    tx.execute(
        "INSERT INTO decommissions (id, tenant_id, requested_by, requested_at, request, signature, previous_state)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&request.id, &rec.id, &operator, &at, &text, &signature, &rec.state.as_str()],
    )
    .await
    .map_err(|e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            anyhow::anyhow!("tenant {} already has an open decommissioning request", rec.slug)
        } else {
            e.into()
        }
    })?;
    tx.execute(
        "UPDATE tenants SET state = 'decommissioning', updated_at = now() WHERE id = $1",
        &[&rec.id],
    )
    .await?;
    oplog::append(
        &tx,
        operator,
        "tenant.decommission",
        &rec.slug,
        &serde_json::json!({ "request": request.id, "final_export": request.final_export.is_some() }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Withdraws an open request: the tenant returns to the state it had. Refused once
/// an erasure has begun (its database may already be gone) or while one runs.
pub async fn withdraw(p: &Platform, slug: &str, operator: &str) -> anyhow::Result<()> {
    let rec = p
        .catalog
        .tenant_by_slug(slug)
        .await?
        .with_context(|| format!("no tenant {slug}"))?;
    registered_operator(p, operator).await?;
    let admin = p.cluster.admin().await?;
    if !tenant_lock(&admin.client, &rec).await? {
        bail!("テナント {slug} は消去の実行中です / tenant {slug} is being erased right now; the request can no longer be withdrawn");
    }
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    let row = tx
        .query_opt(
            "UPDATE decommissions SET state = 'withdrawn'
              WHERE tenant_id = $1 AND state = 'requested' AND erasure_started_at IS NULL
             RETURNING previous_state",
            &[&rec.id],
        )
        .await?;
    let Some(row) = row else {
        let started = tx
            .query_opt(
                "SELECT erasure_started_by FROM decommissions WHERE tenant_id = $1 AND state = 'requested'",
                &[&rec.id],
            )
            .await?;
        match started.map(|r| r.get::<_, Option<String>>(0).unwrap_or_default()) {
            Some(by) => bail!(
                "テナント {slug} の消去は {by} が開始済みです / the erasure of tenant {slug} was begun by {by}; it can only be finished (madoguchi tenant erase {slug}), not withdrawn"
            ),
            None => bail!("tenant {slug} has no open decommissioning request"),
        }
    };
    let previous: String = row.get(0);
    // Open to writes (a final export may have closed it) before it is open again.
    super::final_export::reopen_writes(p, &rec).await?;
    tx.execute(
        "UPDATE tenants SET state = $2, updated_at = now() WHERE id = $1",
        &[&rec.id, &previous],
    )
    .await?;
    oplog::append(
        &tx,
        operator,
        "tenant.decommission.withdraw",
        slug,
        &serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Takes the tenant's lock on `admin` (a connection of its own, so the lock goes
/// when it closes, on every way out): one erasure of a tenant at a time, no
/// withdrawal while one runs, and no restore drill during either (a drill's copy
/// made after the erasure dropped them would outlive it). `false` when another
/// holds it.
pub(crate) async fn tenant_lock(
    admin: &tokio_postgres::Client,
    rec: &TenantRecord,
) -> anyhow::Result<bool> {
    Ok(admin
        .query_one(
            "SELECT pg_try_advisory_lock(hashtextextended('madoguchi.erase:' || $1::uuid::text, 0))",
            &[&rec.id],
        )
        .await?
        .get(0))
}

/// Lets go of [`tenant_lock`] at once rather than when the server notices `admin`
/// closed (a drill or an erasure right after would find it still held).
pub(crate) async fn tenant_unlock(
    admin: &tokio_postgres::Client,
    rec: &TenantRecord,
) -> anyhow::Result<()> {
    admin
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended('madoguchi.erase:' || $1::uuid::text, 0))",
            &[&rec.id],
        )
        .await?;
    Ok(())
}

/// What `tenant erase` is told.
#[derive(Debug)]
pub struct EraseArgs<'a> {
    pub slug: &'a str,
    pub verifier: &'a str,
    /// Go on although another tenant (restored from this one's backup) holds copies
    /// of its data keys; the certificate then records that crypto-erase was not achieved.
    pub allow_shared_keys: bool,
}

/// Each step as it finishes, for a progress display.
pub trait Progress: Send + Sync {
    fn step(&self, n: usize, total: usize, step: &Step);
}

/// No display.
#[derive(Debug)]
pub struct Quiet;
impl Progress for Quiet {
    fn step(&self, _: usize, _: usize, _: &Step) {}
}

const STEPS: usize = 7;

struct Steps<'a> {
    done: Vec<Step>,
    progress: &'a dyn Progress,
}

impl Steps<'_> {
    fn record(&mut self, step: &str, started: OffsetDateTime, detail: String) {
        let s = Step {
            step: step.to_owned(),
            started_at: rfc3339(started),
            finished_at: rfc3339(now()),
            detail,
        };
        self.progress.step(self.done.len() + 1, STEPS, &s);
        super::progress::step(&format!("{}/{STEPS} {} done", self.done.len() + 1, s.step));
        self.done.push(s);
    }
}

fn key_id(wrapped: &[u8]) -> String {
    hex::encode(&Sha256::digest(wrapped)[..8])
}

/// Step two from the command line: erasure, then the certificate signed with the
/// verifier's key file. Returns the certificate and its file's path.
pub async fn erase(
    p: &Platform,
    store: &dyn BackupStore,
    args: &EraseArgs<'_>,
    key: &Path,
    progress: &dyn Progress,
) -> anyhow::Result<(CertificateFile, PathBuf)> {
    // The key is checked before anything is destroyed.
    let signer = operator_key(p, args.verifier, key).await?;
    let certificate = execute(p, store, args, progress).await?;
    let signature = signer.sign_bytes(&cert::certificate_message(&certificate)?);
    issue(p, certificate.id, &signature).await
}

/// Erasure and its verification. The certificate is kept, unsigned, until the
/// verifier signs it ([`issue`]); the tenant is already gone by then.
pub async fn execute(
    p: &Platform,
    store: &dyn BackupStore,
    args: &EraseArgs<'_>,
    progress: &dyn Progress,
) -> anyhow::Result<Certificate> {
    let rec = p
        .catalog
        .tenant_by_slug(args.slug)
        .await?
        .with_context(|| {
            format!(
                "テナント {} はありません / no tenant {}",
                args.slug, args.slug
            )
        })?;
    // The keys that sign the certificate, before anything is destroyed: a missing
    // one stops the erasure here, not after the tenant is gone.
    let log = log_signer(p).await?;
    let platform = platform_signer(p).await?;
    let admin = p.cluster.admin().await?;
    if !tenant_lock(&admin.client, &rec).await? {
        bail!(
            "テナント {} の消去処理が別に実行中です / another erasure of tenant {} is running",
            rec.slug,
            rec.slug
        );
    }
    let done = execute_locked(
        p,
        store,
        args,
        progress,
        &rec,
        &admin.client,
        (&log, &platform),
    )
    .await;
    // Let go at once, also after a refusal: a retry right after must not find the
    // lock still held by a connection the server has not yet seen close.
    let _ = tenant_unlock(&admin.client, &rec).await;
    done
}

/// [`execute`] under the tenant's erasure lock.
async fn execute_locked(
    p: &Platform,
    store: &dyn BackupStore,
    args: &EraseArgs<'_>,
    progress: &dyn Progress,
    rec: &TenantRecord,
    admin: &tokio_postgres::Client,
    (log, platform): (&NoteSigner, &NoteSigner),
) -> anyhow::Result<Certificate> {
    let c = p.catalog.client().await?;
    let req_row = c
        .query_opt(
            "SELECT id, requested_by, request, signature, erasure_started_at IS NOT NULL FROM decommissions WHERE tenant_id = $1 AND state = 'requested'",
            &[&rec.id],
        )
        .await?;
    let (Some(req_row), TenantState::Decommissioning) = (req_row, rec.state) else {
        bail!(
            "tenant {} has no open decommissioning request; an operator must first run `madoguchi tenant decommission {}`",
            rec.slug,
            rec.slug
        );
    };
    let request_id: Uuid = req_row.get(0);
    let requested_by: String = req_row.get(1);
    if requested_by == args.verifier {
        bail!(
            "二人目のオペレーターが必要です / the erasure must be carried out by an operator other than {requested_by}, who requested it"
        );
    }
    let request: Request = serde_json::from_str(req_row.get::<_, &str>(2))?;
    let sanitizer_sig: Vec<u8> = req_row.get(3);
    let (verifier, verifier_key) = registered_operator(p, args.verifier).await?;
    if request.requested_by.public_key == B64.encode(verifier_key) {
        bail!(
            "二人目のオペレーターが必要です / {} and {} hold the same key: one person cannot both request and carry out the erasure",
            requested_by,
            args.verifier
        );
    }
    // The stored request must still be what the requester signed.
    let requester_key: [u8; 32] = B64
        .decode(&request.requested_by.public_key)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("stored request damaged"))?;
    let ok = crate::crypto::note::NoteVerifier::from_public(&requested_by, &requester_key)
        .is_ok_and(|v| {
            v.verify_bytes(
                &cert::request_message(&request).unwrap_or_default(),
                &sanitizer_sig,
            )
        });
    let requester = p
        .catalog
        .operators()
        .await?
        .into_iter()
        .find(|o| o.id == requested_by && o.public_key[..] == requester_key[..]);
    if !ok || requester.is_none() || request.tenant != identity(rec) {
        bail!("the stored decommissioning request does not verify against the requester's registered key; not erasing");
    }
    // A request signed by a key revoked since may have been made with a leaked key:
    // no erasure begins on it. One already begun is finished (its database may be gone).
    let begun: bool = req_row.get(4);
    if let (Some(revocation), false) = (requester.and_then(|o| o.revoked), begun) {
        bail!(
            "依頼したオペレーター {requested_by} は {} に失効しました。依頼を取り下げ（madoguchi tenant withdraw-decommission {}）、別のオペレーターがもう一度依頼してください / the request was signed by {requested_by}, revoked at {}: withdraw it and have another operator request again; not erasing",
            revocation.at,
            rec.slug,
            revocation.at
        );
    }
    let sharing: Vec<String> = c
        .query(
            "SELECT slug FROM tenants WHERE id <> $1 AND state <> 'erased' AND (crypto_id = $2 OR id = $2 OR crypto_id = $1)",
            &[&rec.id, &rec.crypto_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !sharing.is_empty() && !args.allow_shared_keys {
        bail!(
            "tenant(s) {} hold copies of this tenant's data keys (restored from the same backups), so erasing keys here would not make its data unreadable. Erase them too, or pass --allow-shared-keys to erase anyway (the certificate will then record that crypto-erase was not achieved)",
            sharing.join(", ")
        );
    }
    let canary_row = c
        .query_one(
            "SELECT canary, canary_key_version FROM tenants WHERE id = $1",
            &[&rec.id],
        )
        .await?;
    let canary: Option<Vec<u8>> = canary_row.get(0);
    let canary_version: Option<i32> = canary_row.get(1);
    let cluster = c.query_one(
        "SELECT current_setting('server_version') || ' system ' || (SELECT system_identifier::text FROM pg_control_system())",
        &[],
    ).await.map(|r| format!("PostgreSQL {}", r.get::<_, String>(0))).unwrap_or_else(|_| "PostgreSQL".into());

    // A final export is personal data in clear on the platform's disk: it must have
    // been handed over and deleted, or the certificate would not be true.
    let exports = super::final_export::left_on_disk(&p.settings.state_dir, &rec.slug);
    if !exports.is_empty() {
        bail!(
            "最終エクスポートがまだこのサーバーにあります。自治体に引き渡してから削除し、もう一度実行してください / the final export is still on this server: hand it to the municipality, delete it, then run the erasure again: {}",
            exports
                .iter()
                .map(|e| e.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // Backups held for an incident are not deleted: neither the tenant's nor the
    // catalog's (the erasure deletes both).
    for slug in [rec.slug.as_str(), backup::CATALOG] {
        if let Some(h) = backup::held(p, slug).await? {
            bail!(
                "{slug} のバックアップは保全中です（{}）。必要なものを写してから保全を解除し（madoguchi backup release {slug}）、もう一度実行してください / the backups of {slug} are held ({}, by {} at {}): copy out what the inquiry needs, release them, then run the erasure again",
                h.reason,
                h.reason,
                h.held_by,
                h.held_at
            );
        }
    }
    // From here on the request cannot be withdrawn.
    let began = c
        .execute(
            "UPDATE decommissions SET erasure_started_at = coalesce(erasure_started_at, now()),
                    erasure_started_by = coalesce(erasure_started_by, $2)
              WHERE id = $1 AND state = 'requested'",
            &[&request_id, &args.verifier],
        )
        .await?;
    if began != 1 {
        bail!(
            "the decommissioning request of tenant {} was withdrawn meanwhile; not erasing",
            rec.slug
        );
    }
    drop(c);

    let started = now();
    let mut steps = Steps {
        done: Vec::new(),
        progress,
    };
    let db = admin;

    // 1. Connections.
    let t = now();
    db.batch_execute(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS false; ALTER ROLE {} NOLOGIN",
        quote_ident(&rec.database),
        quote_ident(&rec.role)
    ))
    .await
    .ok();
    let killed: i64 = db
        .query_one(
            // Client sessions only (autovacuum's workers go with DROP DATABASE, and
            // only a superuser may end them), and a superuser's only by a superuser.
            "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a
              WHERE (a.datname = $1 OR a.usename = $2) AND a.backend_type = 'client backend'
                AND (NOT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.oid = a.usesysid), false)
                     OR (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user))",
            &[&rec.database, &rec.role],
        )
        .await?
        .get(0);
    steps.record(
        "terminate_connections",
        t,
        format!("connections refused from now on; {killed} open connection(s) terminated"),
    );

    // 2. Database.
    let t = now();
    db.batch_execute(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(&rec.database)
    ))
    .await
    .with_context(|| format!("dropping database {}", rec.database))?;
    let drills = backup::drop_drill_copies(db, rec).await?;
    steps.record(
        "drop_database",
        t,
        if drills.is_empty() {
            format!("DROP DATABASE {}", rec.database)
        } else {
            format!(
                "DROP DATABASE {}; restore-drill copies left by interrupted drills: DROP DATABASE {}",
                rec.database,
                drills.join(", ")
            )
        },
    );
    // One database fewer: autovacuum's round may be shortened (not a step of the
    // erasure, so not in the certificate, and a failure here does not stop it).
    crate::control::cluster::tune_autovacuum_on(db).await;

    // 3. Role.
    let t = now();
    db.batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(&rec.role)))
        .await
        .with_context(|| format!("dropping role {}", rec.role))?;
    steps.record("drop_role", t, format!("DROP ROLE {}", rec.role));

    // 4. The tenant's backups: every recorded one, and any file left under its name.
    let t = now();
    let backups = destroy_backups(p, store, &rec.slug, Some(rec.id)).await?;
    steps.record(
        "destroy_backups",
        t,
        format!(
            "{} backup file(s) and their manifests deleted",
            backups.iter().filter(|b| b.destroyed_at.is_some()).count()
        ),
    );

    // 5. Keys: every version of the data key and the database credentials.
    let t = now();
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    let key_rows = tx
        .query(
            "DELETE FROM tenant_keys WHERE tenant_id = $1 RETURNING purpose, version, wrapped, provider",
            &[&rec.id],
        )
        .await?;
    tx.execute("DELETE FROM tenant_hosts WHERE tenant_id = $1", &[&rec.id])
        .await?;
    tx.commit().await?;
    let destroyed = rfc3339(now());
    let mut keys: Vec<KeyMedia> = key_rows
        .iter()
        .map(|r| {
            Ok(KeyMedia {
                purpose: r.get(0),
                version: u32::try_from(r.get::<_, i32>(1))?,
                key_id: key_id(r.get(2)),
                provider: r.get(3),
                destroyed_at: destroyed.clone(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    keys.sort_by(|a, b| (&a.purpose, a.version).cmp(&(&b.purpose, b.version)));
    // Rewrite the table so the deleted rows do not linger in its pages.
    c.batch_execute("VACUUM FULL tenant_keys").await?;
    // A checkpoint lets the write-ahead log holding the deleted rows be recycled. An
    // external cluster's admin role may not be allowed one (it needs pg_checkpoint):
    // the certificate then says so, rather than the erasure stopping here with the
    // keys already gone.
    let checkpoint = match c.batch_execute("CHECKPOINT").await {
        Ok(()) => "checkpoint taken",
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            tracing::warn!("CHECKPOINT refused to the admin role (grant it pg_checkpoint)");
            "no checkpoint (the admin role lacks pg_checkpoint): the write-ahead log holding the deleted rows is recycled after the cluster's next one"
        }
        Err(e) => return Err(e.into()),
    };
    steps.record(
        "destroy_keys",
        t,
        format!(
            "{} wrapped key version(s) deleted from the catalog, table rewritten (VACUUM FULL), {checkpoint}; hosts removed",
            keys.len()
        ),
    );
    let keys_gone_at = now();

    // 6. Catalog backups made before now hold the tenant's wrapped keys.
    let t = now();
    let catalog_backups = destroy_backups(p, store, backup::CATALOG, None).await?;
    steps.record(
        "destroy_catalog_backups",
        t,
        format!(
            "{} catalog backup(s) holding the tenant's wrapped keys deleted",
            catalog_backups
                .iter()
                .filter(|b| b.destroyed_at.is_some())
                .count()
        ),
    );

    // 7. A fresh catalog backup, without the tenant's keys, so recovery stays possible.
    let t = now();
    let fresh = backup::run_catalog(p, store).await?;
    steps.record(
        "new_catalog_backup",
        t,
        format!(
            "catalog backed up again: {} (sha256 {})",
            fresh.file, fresh.sha256
        ),
    );

    // Verification.
    let mut results = Vec::new();
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&rec.database],
        )
        .await?
        .get(0);
    results.push(Check {
        check: "database_absent".into(),
        passed: n == 0,
        detail: format!("pg_database has {n} row(s) named {}", rec.database),
    });
    let n = db
        .query(
            backup::DRILL_COPIES_LEFT_SQL,
            &[&backup::drill_prefix(rec), &drills],
        )
        .await?
        .len();
    results.push(Check {
        check: "drill_copies_absent".into(),
        passed: n == 0,
        detail: format!(
            "pg_database has {n} restore-drill copy(ies) named {}* or among the {} older copies dropped",
            backup::drill_prefix(rec),
            drills.len()
        ),
    });
    let exports = super::final_export::left_on_disk(&p.settings.state_dir, &rec.slug);
    results.push(Check {
        check: "final_export_absent".into(),
        passed: exports.is_empty(),
        detail: format!(
            "{} final export folder(s) of {} on the platform's disk",
            exports.len(),
            rec.slug
        ),
    });
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = $1",
            &[&rec.role],
        )
        .await?
        .get(0);
    results.push(Check {
        check: "role_absent".into(),
        passed: n == 0,
        detail: format!("pg_roles has {n} row(s) named {}", rec.role),
    });
    let left: Vec<String> = store
        .list(&rec.slug)?
        .into_iter()
        .chain(
            backups
                .iter()
                .filter(|b| store.exists(&b.file))
                .map(|b| b.file.clone()),
        )
        .collect();
    results.push(Check {
        check: "backups_absent".into(),
        passed: left.is_empty(),
        detail: if left.is_empty() {
            format!(
                "none of the {} recorded backup file(s) exists; nothing left under {}/",
                backups.len(),
                rec.slug
            )
        } else {
            format!("still present: {}", left.join(", "))
        },
    });
    let old_catalog: i64 = p
        .catalog
        .client()
        .await?
        .query_one(
            "SELECT count(*) FROM backups WHERE tenant_slug = $1 AND destroyed_at IS NULL AND created_at < $2",
            &[&backup::CATALOG, &keys_gone_at],
        )
        .await?
        .get(0);
    let old_catalog_files = catalog_backups
        .iter()
        .filter(|b| store.exists(&b.file))
        .count();
    results.push(Check {
        check: "catalog_backups_clean".into(),
        passed: old_catalog == 0 && old_catalog_files == 0,
        detail: format!(
            "{old_catalog} catalog backup(s) from before the keys were destroyed remain ({old_catalog_files} file(s))"
        ),
    });
    let cat = p.catalog.client().await?;
    let n: i64 = cat
        .query_one(
            "SELECT count(*) FROM tenant_keys WHERE tenant_id = $1",
            &[&rec.id],
        )
        .await?
        .get(0);
    results.push(Check {
        check: "keys_absent".into(),
        passed: n == 0,
        detail: format!("{n} key version(s) of the tenant remain in the catalog"),
    });
    results.push(Check {
        check: "no_other_key_holder".into(),
        passed: sharing.is_empty(),
        detail: if sharing.is_empty() {
            "no other tenant holds a copy of the tenant's data keys".into()
        } else {
            format!(
                "tenant(s) {} hold copies of the data keys: crypto-erase not achieved",
                sharing.join(", ")
            )
        },
    });
    // The canary: try every data key of every tenant sharing the crypto identity.
    let holders = cat
        .query(
            "SELECT k.tenant_id, k.version, k.wrapped FROM tenant_keys k JOIN tenants t ON t.id = k.tenant_id
              WHERE k.purpose = 'data' AND (t.id = $1 OR t.crypto_id = $2)",
            &[&rec.id, &rec.crypto_id],
        )
        .await?;
    let (canary_ok, canary_detail) =
        match (&canary, canary_version) {
            (Some(canary), Some(v)) => {
                let v = u32::try_from(v)?;
                let opened = holders.iter().any(|r| {
                    let version = u32::try_from(r.get::<_, i32>(1)).unwrap_or(0);
                    version == v
                        && DataKey::unwrap(p.keys.as_ref(), r.get(2), &r.get(0), version)
                            .is_ok_and(|k| canary_opens(&k, &rec.crypto_id, v, canary))
                });
                (
                    !opened,
                    format!(
                    "canary encrypted under data key version {v}: tried {} remaining key(s), {}",
                    holders.len(),
                    if opened { "it still decrypts" } else { "none decrypts it" }
                ),
                )
            }
            _ => (false, "the tenant has no canary".into()),
        };
    results.push(Check {
        check: "canary_undecryptable".into(),
        passed: canary_ok,
        detail: canary_detail,
    });
    drop(cat);
    let passed = results.iter().all(|c| c.passed);
    let finished = now();

    // The certificate.
    let mut sanitized_by = request.requested_by.clone();
    sanitized_by.date = request.requested_at.clone();
    let mut verified_by = verifier;
    verified_by.date = rfc3339(finished);
    let mut techniques =
        vec!["logical deletion (DROP DATABASE, DROP ROLE, backup files deleted)".to_owned()];
    if sharing.is_empty() {
        techniques.insert(
            0,
            "cryptographic erase (every version of the AES-256 data key destroyed)".to_owned(),
        );
    }
    let mut certificate = Certificate {
        format: cert::FORMAT.to_owned(),
        id: Uuid::new_v4(),
        standard: "NIST SP 800-88 Rev. 2 §4.6 / Rev. 1 Appendix G (certificate of sanitization)".into(),
        organization: identity(rec),
        media: Media {
            cluster,
            database: rec.database.clone(),
            role: rec.role.clone(),
            backups,
            catalog_backups,
            keys,
        },
        sanitization: Sanitization {
            method: "Purge".into(),
            techniques,
            tool: Tool {
                name: "madoguchi".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            notes: "Personal data was stored encrypted under the tenant's data key (field encryption, encrypted backups); with every version of that key destroyed, copies of its ciphertexts anywhere cannot be decrypted. The master key, which wrapped the data key, is shared by all tenants and is not destroyed.".into(),
        },
        steps: steps.done,
        verification: Verification {
            method: "Queried the cluster catalog for the database and role, checked the backup store for every recorded file and the tenant's directory, counted the tenant's keys in the catalog, checked that no older catalog backup remains, and tried to decrypt the canary ciphertext made at provisioning with every remaining key.".into(),
            results,
            passed,
        },
        started_at: rfc3339(started),
        finished_at: rfc3339(finished),
        request,
        sanitized_by,
        verified_by,
        transparency_log: LogInfo {
            origin: log.name().to_owned(),
            verifier_key: log.verifier_key(),
        },
        platform_key: platform.verifier_key(),
    };
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    // The platform key that will sign it is the one recorded now: a rotation between
    // the start of the erasure and here replaced the one read then. (Taken in the
    // order a rotation takes them; once this holds the table, no rotation begins.)
    tx.execute("LOCK TABLE pending_signatures IN ROW EXCLUSIVE MODE", &[])
        .await?;
    if let Some(current) = tx
        .query_opt(
            "SELECT verifier FROM platform_keys WHERE file = 'platform.key'",
            &[],
        )
        .await?
    {
        certificate.platform_key = current.get(0);
    }
    let body = String::from_utf8(cert::canonical(&certificate)?)?;
    tx.execute(
        "INSERT INTO pending_signatures (id, kind, tenant_id, operator_id, body) VALUES ($1, 'erasure_certificate', $2, $3, $4)",
        &[&certificate.id, &rec.id, &args.verifier, &body],
    )
    .await?;
    tx.execute(
        "UPDATE tenants SET state = 'erased', updated_at = now() WHERE id = $1",
        &[&rec.id],
    )
    .await?;
    let closed = tx
        .execute(
            "UPDATE decommissions SET state = 'erased', certificate_id = $2 WHERE id = $1 AND state = 'requested'",
            &[&request_id, &certificate.id],
        )
        .await?;
    if closed != 1 {
        bail!(
            "the decommissioning request of tenant {} is no longer open; no certificate recorded",
            rec.slug
        );
    }
    oplog::append(
        &tx,
        args.verifier,
        "tenant.erase",
        &rec.slug,
        &serde_json::json!({ "certificate": certificate.id, "verified": passed }),
    )
    .await?;
    tx.commit().await?;
    Ok(certificate)
}

/// An erasure certificate waiting for its verifier's signature.
pub async fn pending_certificate(p: &Platform, id: Uuid) -> anyhow::Result<Certificate> {
    let c = p.catalog.client().await?;
    let row = c
        .query_opt(
            "SELECT body FROM pending_signatures WHERE id = $1 AND kind = 'erasure_certificate'",
            &[&id],
        )
        .await?
        .with_context(|| format!("no certificate {id} awaits a signature"))?;
    Ok(serde_json::from_str(row.get::<_, &str>(0))?)
}

/// Certificates awaiting their verifier's signature: (id, tenant slug, verifier).
pub async fn pending_certificates(p: &Platform) -> anyhow::Result<Vec<(Uuid, String, String)>> {
    let c = p.catalog.client().await?;
    Ok(c.query(
        "SELECT s.id, t.slug, s.operator_id FROM pending_signatures s JOIN tenants t ON t.id = s.tenant_id
          WHERE s.kind = 'erasure_certificate' ORDER BY s.created_at",
        &[],
    )
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect())
}

/// Completes a certificate with the verifier's signature: the platform signs it, it
/// is appended to the transparency log and written to `DIR/certificates/<id>.json`.
pub async fn issue(
    p: &Platform,
    id: Uuid,
    verifier_signature: &[u8],
) -> anyhow::Result<(CertificateFile, PathBuf)> {
    let certificate = pending_certificate(p, id).await?;
    let verifier = certificate.verified_by.operator_id.clone();
    let msg = cert::certificate_message(&certificate)?;
    check_signature(p, &verifier, &msg, verifier_signature).await?;
    let c = p.catalog.client().await?;
    let sanitizer_sig: Vec<u8> = c
        .query_one(
            "SELECT signature FROM decommissions WHERE certificate_id = $1",
            &[&id],
        )
        .await?
        .get(0);
    drop(c);
    let platform = platform_signer(p).await?;
    if !super::key_transition::same_key(&certificate.platform_key, &platform.verifier_key()) {
        bail!(
            "この証明書は更新前の基盤鍵（{}）を名指ししています。署名できません / the certificate names the platform key {}, which has been replaced since it was composed: it cannot be signed",
            certificate.platform_key,
            certificate.platform_key
        );
    }
    let signed = Signed {
        signatures: Signatures {
            sanitizer: B64.encode(&sanitizer_sig),
            verifier: B64.encode(verifier_signature),
            platform: cert::sign(&platform, &msg),
        },
        certificate,
    };
    let entry = cert::log_entry(&signed)?;
    let document = String::from_utf8(entry.clone())?;
    let leaf = crate::crypto::tlog::leaf_hash(&entry);
    let org = &signed.certificate.organization;
    let finished = OffsetDateTime::parse(&signed.certificate.finished_at, &Rfc3339)?;
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    tx.execute("LOCK TABLE tlog_entries IN EXCLUSIVE MODE", &[])
        .await?;
    let seq: i64 = tx
        .query_one("SELECT count(*) FROM tlog_entries", &[])
        .await?
        .get(0);
    tx.execute(
        "INSERT INTO tlog_entries (seq, entry, leaf_hash) VALUES ($1, $2, $3)",
        &[&seq, &entry, &leaf.to_vec()],
    )
    .await?;
    tx.execute(
        "INSERT INTO certificates (id, tenant_slug, tenant_name, local_gov_code, issued_at, tlog_seq, sanitized_by, verified_by, verified, document)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[&id, &org.slug, &org.name, &org.local_gov_code, &finished, &seq,
          &signed.certificate.sanitized_by.operator_id, &verifier, &signed.certificate.verification.passed, &document],
    )
    .await?;
    tx.execute("DELETE FROM pending_signatures WHERE id = $1", &[&id])
        .await?;
    oplog::append(
        &tx,
        &verifier,
        "certificate.issue",
        &org.slug,
        &serde_json::json!({ "certificate": id, "tlog_index": seq }),
    )
    .await?;
    tx.commit().await?;
    let file = export_certificate(p, id, &[]).await?;
    let path = certificates_dir(&p.settings.state_dir).join(format!("{id}.json"));
    write_public(&path, &serde_json::to_string_pretty(&file)?)?;
    Ok((file, path))
}

/// Deletes every backup of `slug` (recorded ones, and any unrecorded file under its
/// name); for the catalog (`tenant` None), every catalog backup.
async fn destroy_backups(
    p: &Platform,
    store: &dyn BackupStore,
    slug: &str,
    tenant: Option<Uuid>,
) -> anyhow::Result<Vec<BackupMedia>> {
    let c = p.catalog.client().await?;
    let rows = c
        .query(
            "SELECT id, file, size, sha256, created_at FROM backups
              WHERE (tenant_slug = $1 OR ($2::uuid IS NOT NULL AND tenant_id = $2)) AND destroyed_at IS NULL
              ORDER BY created_at",
            &[&slug, &tenant],
        )
        .await?;
    let mut out = Vec::new();
    let mut recorded = std::collections::HashSet::new();
    for r in &rows {
        let (id, file): (Uuid, String) = (r.get(0), r.get(1));
        recorded.insert(file.clone());
        let existed = store.exists(&file);
        for name in [file.clone(), format!("{file}.json")] {
            if store.exists(&name) {
                store.delete(&name)?;
            }
        }
        let at = now();
        c.execute(
            "UPDATE backups SET destroyed_at = $2 WHERE id = $1",
            &[&id, &at],
        )
        .await?;
        out.push(BackupMedia {
            file,
            sha256: hex::encode(r.get::<_, Vec<u8>>(3)),
            size: u64::try_from(r.get::<_, i64>(2))?,
            created_at: rfc3339(r.get(4)),
            destroyed_at: existed.then(|| rfc3339(at)),
        });
    }
    if tenant.is_some() {
        for name in store.list(slug)? {
            if recorded.contains(&name) || name.ends_with(".json") {
                if name.ends_with(".json") {
                    store.delete(&name)?;
                }
                continue;
            }
            let (size, sha) = store.digest(&name)?;
            store.delete(&name)?;
            out.push(BackupMedia {
                file: name,
                sha256: sha,
                size,
                created_at: String::new(),
                destroyed_at: Some(rfc3339(now())),
            });
        }
    }
    Ok(out)
}

/// `DIR/certificates`.
pub fn certificates_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("certificates")
}

fn write_public(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text.as_bytes())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A certificate from the catalog with fresh transparency data: an inclusion proof
/// and checkpoint for the current log, and consistency proofs from `since` sizes.
pub async fn export_certificate(
    p: &Platform,
    id: Uuid,
    since: &[u64],
) -> anyhow::Result<CertificateFile> {
    let c = p.catalog.client().await?;
    let row = c
        .query_opt(
            "SELECT document, tlog_seq FROM certificates WHERE id = $1",
            &[&id],
        )
        .await?
        .with_context(|| format!("no certificate {id}"))?;
    let signed: Signed = serde_json::from_str(row.get::<_, &str>(0))?;
    let seq = usize::try_from(row.get::<_, i64>(1))?;
    let leaves = p.catalog.tlog_leaves().await?;
    let log = log_signer(p).await?;
    let mut since = since.to_vec();
    // The tree just before this entry: shows the entry was appended, nothing rewritten.
    if seq > 0 {
        since.push(seq as u64);
    }
    since.sort_unstable();
    since.dedup();
    Ok(CertificateFile {
        transparency: cert::transparency(&leaves, seq, &log, &since)?,
        certificate: signed.certificate,
        signatures: signed.signatures,
        key_transitions: p.catalog.key_transitions().await?,
    })
}

/// One issued certificate, as the console lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Issued {
    pub id: Uuid,
    pub tenant_slug: String,
    pub tenant_name: String,
    pub local_gov_code: String,
    pub issued_at: OffsetDateTime,
    pub tlog_index: i64,
    pub sanitized_by: String,
    pub verified_by: String,
    pub verified: bool,
}

pub async fn issued(p: &Platform) -> anyhow::Result<Vec<Issued>> {
    let c = p.catalog.client().await?;
    Ok(c.query(
        "SELECT id, tenant_slug, tenant_name, local_gov_code, issued_at, tlog_seq, sanitized_by, verified_by, verified
           FROM certificates ORDER BY issued_at DESC",
        &[],
    )
    .await?
    .iter()
    .map(|r| Issued {
        id: r.get(0),
        tenant_slug: r.get(1),
        tenant_name: r.get(2),
        local_gov_code: r.get(3),
        issued_at: r.get(4),
        tlog_index: r.get(5),
        sanitized_by: r.get(6),
        verified_by: r.get(7),
        verified: r.get(8),
    })
    .collect())
}
