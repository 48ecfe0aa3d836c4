//! Encrypted backups of tenant databases: `pg_dump` (custom format) streamed through
//! a chunked AEAD (the STREAM construction, AES-256-GCM, 64 KiB chunks) with a fresh
//! backup key, itself wrapped by the tenant's data key; so a dump never sits in
//! memory, a backup file reveals nothing without the tenant's key, and any changed,
//! missing or reordered byte is detected when it is read back.
//!
//! File: `MDGBAK01` ‖ header length (u32, big-endian) ‖ header (JSON) ‖ chunks, each
//! a length (u32) and its ciphertext. Every chunk's associated data is the SHA-256 of
//! the header, so the header cannot be swapped either.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aead::stream::{DecryptorBE32, EncryptorBE32};
use aead::{KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::catalog::TenantRecord;
use crate::crypto::{aad, DataKey};
use crate::platform::Platform;

const MAGIC: &[u8; 8] = b"MDGBAK01";
const CHUNK: usize = 64 * 1024;

/// Where backup files live. A directory by default; object storage implements the same.
pub trait BackupStore: Send + Sync {
    fn create(&self, name: &str) -> anyhow::Result<Box<dyn Write + Send>>;
    fn open(&self, name: &str) -> anyhow::Result<Box<dyn Read + Send>>;
    fn delete(&self, name: &str) -> anyhow::Result<()>;
    fn exists(&self, name: &str) -> bool;
    /// Every file under `prefix/` (names relative to the store).
    fn list(&self, prefix: &str) -> anyhow::Result<Vec<String>>;
    /// Makes a written file durable (before the catalog records it): a power cut
    /// after the record must not leave it empty or short.
    fn sync(&self, _name: &str) -> anyhow::Result<()> {
        Ok(())
    }
    /// Size and SHA-256 (hex) of a file.
    fn digest(&self, name: &str) -> anyhow::Result<(u64, String)> {
        let mut r = self.open(name)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut size = 0u64;
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        Ok((size, hex::encode(h.finalize())))
    }
}

/// `DIR/backups/<name>`.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            root: state_dir.join("backups"),
        }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

impl BackupStore for DirStore {
    fn create(&self, name: &str) -> anyhow::Result<Box<dyn Write + Send>> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Box::new(std::io::BufWriter::new(f)))
    }
    fn open(&self, name: &str) -> anyhow::Result<Box<dyn Read + Send>> {
        let path = self.path(name);
        Ok(Box::new(std::io::BufReader::new(
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?,
        )))
    }
    fn delete(&self, name: &str) -> anyhow::Result<()> {
        std::fs::remove_file(self.path(name)).with_context(|| format!("deleting backup {name}"))
    }
    fn exists(&self, name: &str) -> bool {
        self.path(name).exists()
    }
    fn sync(&self, name: &str) -> anyhow::Result<()> {
        let path = self.path(name);
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", path.display()))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {}", dir.display()))?;
        }
        Ok(())
    }
    fn list(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let dir = self.root.join(prefix);
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for e in entries {
            let e = e?;
            if e.file_type()?.is_file() {
                out.push(format!("{prefix}/{}", e.file_name().to_string_lossy()));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The file's header (in clear; holds nothing secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    format: u32,
    backup_id: Uuid,
    tenant_id: Uuid,
    key_version: u32,
    /// The backup key, wrapped by the tenant's data key.
    wrapped_key: String,
    nonce_prefix: String,
}

/// What a backup was; also written beside the file as `<file>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub tenant: String,
    pub created_at: String,
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub schema_version: i32,
    pub key_version: u32,
}

fn backup_key_aad(tenant: &Uuid, backup: &Uuid) -> Vec<u8> {
    aad(&[
        b"madoguchi-backup-key-v1",
        tenant.as_bytes(),
        backup.as_bytes(),
    ])
}

/// The tenant's newest data key.
pub(crate) async fn data_key(p: &Platform, rec: &TenantRecord) -> anyhow::Result<(u32, DataKey)> {
    let k = p
        .catalog
        .keys(rec.id, "data")
        .await?
        .pop()
        .with_context(|| format!("tenant {} has no data key", rec.slug))?;
    Ok((
        k.version,
        DataKey::unwrap(p.keys.as_ref(), &k.wrapped, &rec.id, k.version)?,
    ))
}

fn aead_with(key: &[u8]) -> anyhow::Result<Aes256Gcm> {
    Aes256Gcm::new_from_slice(key).map_err(|_| anyhow::anyhow!("bad key length"))
}

/// A PostgreSQL client program (`pg_dump`, `pg_restore`) connecting as the admin role
/// to `database`; the password goes through the environment, never the command line.
fn pg_tool(p: &Platform, program: &str, database: &str) -> anyhow::Result<Command> {
    let cfg = p.cluster.admin_config(database);
    let mut cmd = Command::new(crate::embedded_pg::find_client_program(program)?);
    cmd.arg("--dbname").arg(database);
    // Every host, as libpq takes them (comma-separated, tried in order), as the
    // service's own connections do.
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(path) => path.to_string_lossy().into_owned(),
        })
        .collect();
    if !hosts.is_empty() {
        cmd.arg("--host").arg(hosts.join(","));
    }
    let ports: Vec<String> = cfg.get_ports().iter().map(u16::to_string).collect();
    if !ports.is_empty() {
        cmd.arg("--port").arg(ports.join(","));
    }
    if let Some(user) = cfg.get_user() {
        cmd.arg("--username").arg(user);
    }
    if let Some(pw) = cfg.get_password() {
        cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).into_owned());
    }
    // The same server as the service's connections: a URL naming a primary and its
    // standbys with target_session_attrs=read-write sends pg_dump to the primary too
    // (where the snapshot it reads was exported), and pg_restore never to a standby.
    if cfg.get_target_session_attrs() == tokio_postgres::config::TargetSessionAttrs::ReadWrite {
        cmd.env("PGTARGETSESSIONATTRS", "read-write");
    }
    cmd.envs(p.cluster.tls().client_env());
    cmd.stdin(Stdio::null());
    Ok(cmd)
}

/// Restores a `pg_dump` archive into `database` (objects owned by `role`, if given).
async fn pg_restore(
    p: &Platform,
    database: &str,
    dump: &Path,
    role: Option<&str>,
) -> anyhow::Result<()> {
    let mut cmd = pg_tool(p, "pg_restore", database)?;
    cmd.args(["--no-owner", "--no-privileges", "--exit-on-error"]);
    if let Some(role) = role {
        cmd.arg(format!("--role={role}"));
    }
    cmd.arg(dump);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    if !out.status.success() {
        bail!(
            "pg_restore into {database} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A transaction holding the snapshot a backup is read from, exported for pg_dump.
struct Snapshot {
    conn: crate::control::cluster::Conn,
    id: String,
    /// The data-key version the dumped values are sealed with.
    data_key_version: Option<i32>,
}

impl Snapshot {
    /// Every table is locked (ACCESS SHARE, as pg_dump does) before the snapshot is
    /// taken and until the sums are: a migration that altered a table after pg_dump
    /// ended would otherwise change what the sums read.
    async fn export(p: &Platform, database: &str) -> anyhow::Result<Self> {
        let conn = p.cluster.connect(&p.cluster.admin_config(database)).await?;
        let tables = public_tables(&conn.client).await?;
        conn.client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        if !tables.is_empty() {
            let list: Vec<String> = tables
                .iter()
                .map(|t| crate::catalog::quote_ident(t))
                .collect();
            conn.client
                .batch_execute(&format!(
                    "LOCK TABLE {} IN ACCESS SHARE MODE",
                    list.join(", ")
                ))
                .await?;
        }
        let id = conn
            .client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await?
            .get(0);
        // Read through to_jsonb: a database not yet migrated to the column has none.
        let data_key_version = conn
            .client
            .query_opt(
                "SELECT (to_jsonb(s) ->> 'data_key_version')::int FROM settings s",
                &[],
            )
            .await?
            .and_then(|r| r.get(0));
        Ok(Self {
            conn,
            id,
            data_key_version,
        })
    }

    /// Every table's row count and checksum in the snapshot; ends the transaction.
    async fn sums(self) -> anyhow::Result<Vec<TableSum>> {
        let sums = table_sums(&self.conn.client).await?;
        self.conn.client.batch_execute("COMMIT").await?;
        Ok(sums)
    }
}

/// A `pg_dump` (custom format) of a tenant's database, streaming on stdout; read from
/// `snapshot` (exported by a transaction still open) when given.
fn pg_dump(
    p: &Platform,
    database: &str,
    snapshot: Option<&str>,
) -> anyhow::Result<std::process::Child> {
    let mut cmd = pg_tool(p, "pg_dump", database)?;
    if let Some(id) = snapshot {
        cmd.arg(format!("--snapshot={id}"));
    }
    cmd.args([
        "--format=custom",
        "--no-owner",
        "--no-privileges",
        "--compress=6",
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().context("starting pg_dump")
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Writes and hashes.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Encrypts `input` to `out` under a fresh backup key; returns (size, sha256).
fn encrypt_stream(
    mut input: impl Read,
    out: impl Write,
    header: &[u8],
    key: &[u8],
    prefix: &[u8; 7],
) -> anyhow::Result<(u64, String)> {
    let mut w = HashingWriter {
        inner: out,
        hash: Sha256::new(),
        size: 0,
    };
    w.write_all(MAGIC)?;
    w.write_all(&u32::try_from(header.len())?.to_be_bytes())?;
    w.write_all(header)?;
    let ad = Sha256::digest(header);
    let mut enc = EncryptorBE32::<Aes256Gcm>::from_aead(aead_with(key)?, prefix.into());
    let mut cur = vec![0u8; CHUNK];
    let mut next = vec![0u8; CHUNK];
    let mut n = fill(&mut input, &mut cur)?;
    // A chunk is final when the input ends inside it, or right after it.
    while n == CHUNK {
        let m = fill(&mut input, &mut next)?;
        if m == 0 {
            break;
        }
        let ct = enc
            .encrypt_next(Payload {
                msg: &cur[..n],
                aad: &ad,
            })
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        w.write_all(&u32::try_from(ct.len())?.to_be_bytes())?;
        w.write_all(&ct)?;
        std::mem::swap(&mut cur, &mut next);
        n = m;
    }
    let ct = enc
        .encrypt_last(Payload {
            msg: &cur[..n],
            aad: &ad,
        })
        .map_err(|_| anyhow::anyhow!("encryption failed"))?;
    w.write_all(&u32::try_from(ct.len())?.to_be_bytes())?;
    w.write_all(&ct)?;
    w.flush()?;
    cur.iter_mut().chain(next.iter_mut()).for_each(|b| *b = 0);
    Ok((w.size, hex::encode(w.hash.finalize())))
}

/// What is backed up: a tenant's database (key wrapped by its data key) or the
/// catalog (key wrapped by the master key).
enum Subject<'a> {
    Tenant(&'a TenantRecord),
    Catalog,
}

/// The name under which catalog backups are listed.
pub const CATALOG: &str = "_catalog";

fn catalog_key_aad(backup: &Uuid) -> Vec<u8> {
    aad(&[b"madoguchi-catalog-backup-key-v1", backup.as_bytes()])
}

/// Backs up one tenant: dump, encrypt, store, manifest, catalog row.
///
/// A tenant backup opens only with the tenant's data key, which only the catalog
/// holds: when no catalog backup yet holds this tenant's newest key (a tenant made or
/// rotated since the last one), a catalog backup is made too, so that the catalog's
/// loss does not take this backup with it.
pub async fn run(
    p: &Platform,
    store: &dyn BackupStore,
    rec: &TenantRecord,
) -> anyhow::Result<Manifest> {
    let manifest = backup(p, store, Subject::Tenant(rec)).await?;
    cover_keys(p, store, rec).await?;
    Ok(manifest)
}

/// Backs up the catalog unless one of its backups was made since the tenant's newest
/// key: the catalog holds the only wrapped copy of a key. Returns the file if made.
pub(crate) async fn cover_keys(
    p: &Platform,
    store: &dyn BackupStore,
    rec: &TenantRecord,
) -> anyhow::Result<Option<String>> {
    let covered: bool = p
        .catalog
        .client()
        .await?
        .query_one(
            "SELECT coalesce((SELECT max(created_at) FROM backups WHERE tenant_id IS NULL)
                             >= (SELECT max(created_at) FROM tenant_keys WHERE tenant_id = $1), false)",
            &[&rec.id],
        )
        .await?
        .get(0);
    if covered {
        return Ok(None);
    }
    crate::control::progress::step("backing up the catalog (it holds this tenant's newest key)");
    Ok(Some(run_catalog(p, store).await?.file))
}

/// Backs up the catalog itself, its backup key wrapped by the master key.
pub async fn run_catalog(p: &Platform, store: &dyn BackupStore) -> anyhow::Result<Manifest> {
    backup(p, store, Subject::Catalog).await
}

async fn backup(
    p: &Platform,
    store: &dyn BackupStore,
    subject: Subject<'_>,
) -> anyhow::Result<Manifest> {
    let id = Uuid::new_v4();
    let mut backup_key = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(backup_key.as_mut());
    let mut prefix = [0u8; 7];
    rand::rngs::OsRng.fill_bytes(&mut prefix);
    let (tenant_id, slug, database, schema_version, key_version, wrapped) = match subject {
        Subject::Tenant(rec) => {
            let (key_version, dk) = data_key(p, rec).await?;
            use aes_gcm::aead::Aead;
            let mut nonce = [0u8; 12];
            rand::rngs::OsRng.fill_bytes(&mut nonce);
            let ct = aead_with(dk.bytes())?
                .encrypt(
                    aes_gcm::Nonce::from_slice(&nonce),
                    Payload {
                        msg: backup_key.as_ref(),
                        aad: &backup_key_aad(&rec.id, &id),
                    },
                )
                .map_err(|_| anyhow::anyhow!("wrapping the backup key failed"))?;
            (
                Some(rec.id),
                rec.slug.clone(),
                rec.database.clone(),
                rec.schema_version,
                key_version,
                [nonce.to_vec(), ct].concat(),
            )
        }
        Subject::Catalog => {
            let wrapped = p.keys.wrap(backup_key.as_ref(), &catalog_key_aad(&id))?;
            let version = i32::try_from(crate::catalog::Catalog::latest_version())?;
            (
                None,
                CATALOG.to_owned(),
                p.settings.catalog_db.clone(),
                version,
                0,
                wrapped,
            )
        }
    };
    let header = serde_json::to_vec(&Header {
        format: 1,
        backup_id: id,
        tenant_id: tenant_id.unwrap_or(Uuid::nil()),
        key_version,
        wrapped_key: B64.encode(&wrapped),
        nonce_prefix: B64.encode(prefix),
    })?;
    let created = time::OffsetDateTime::now_utc();
    let stamp = created.format(&time::macros::format_description!(
        "[year][month][day]T[hour][minute][second]Z"
    ))?;
    let file = format!("{slug}/{stamp}-{}.mdgbak", &id.simple().to_string()[..8]);
    // A tenant's tables are summed in the snapshot pg_dump reads, so that a drill
    // compares the restored copy with what was backed up, not with a database that
    // has taken applications since.
    let snapshot = match tenant_id {
        Some(_) => Some(Snapshot::export(p, &database).await?),
        None => None,
    };
    let out = store.create(&file)?;
    crate::control::progress::step(&format!("pg_dump {database} → encrypting to {file}"));
    let mut child = pg_dump(p, &database, snapshot.as_ref().map(|s| s.id.as_str()))?;
    let stdout = child.stdout.take().context("pg_dump has no output")?;
    // Read beside the dump: a pipe left unread would stop pg_dump once full.
    let stderr = child.stderr.take().map(|mut e| {
        tokio::task::spawn_blocking(move || {
            let mut text = Vec::new();
            let _ = e.read_to_end(&mut text);
            text
        })
    });
    let key = backup_key.clone();
    let encrypted = tokio::task::spawn_blocking(move || {
        encrypt_stream(stdout, out, &header, key.as_ref(), &prefix)
    })
    .await
    .map_err(anyhow::Error::from)
    .and_then(|r| r);
    let (size, sha) = match encrypted {
        Ok(done) => done,
        Err(e) => {
            // Disk full, say: no partial file left to fill it further (nothing lists
            // it, so retention would never remove it), and pg_dump reaped.
            let _ = child.kill();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
            let _ = store.delete(&file);
            return Err(e.context(format!("writing backup {file}")));
        }
    };
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    if !status.success() {
        let _ = store.delete(&file);
        let text = match stderr {
            Some(t) => t.await.unwrap_or_default(),
            None => Vec::new(),
        };
        bail!("pg_dump failed: {}", String::from_utf8_lossy(&text).trim());
    }
    let data_key_version = snapshot.as_ref().and_then(|s| s.data_key_version);
    let sums = match snapshot {
        Some(s) => {
            crate::control::progress::step(
                "summing every table in the snapshot the dump was read from",
            );
            // The backup is good without them: kept, and drilled against the live
            // database as backups made before the sums were.
            match s.sums().await {
                Ok(sums) => Some(serde_json::to_value(sums)?),
                Err(e) => {
                    tracing::warn!(tenant = %slug, error = %format!("{e:#}"), "summing the backed-up tables failed; the backup is kept without its sums");
                    None
                }
            }
        }
        None => None,
    };
    let manifest = Manifest {
        id,
        tenant_id: tenant_id.unwrap_or(Uuid::nil()),
        tenant: slug.clone(),
        created_at: created.format(&time::format_description::well_known::Rfc3339)?,
        file: file.clone(),
        size,
        sha256: sha.clone(),
        schema_version,
        key_version,
    };
    let recorded = async {
        let mut m = store.create(&format!("{file}.json"))?;
        m.write_all(serde_json::to_string_pretty(&manifest)?.as_bytes())?;
        m.flush()?;
        drop(m);
        // On disk before the catalog says it is there.
        store.sync(&file)?;
        store.sync(&format!("{file}.json"))?;
        let c = p.catalog.client().await?;
        let sha_bytes = hex::decode(&sha)?;
        c.execute(
            "INSERT INTO backups (id, tenant_id, tenant_slug, created_at, file, size, sha256, schema_version, key_version, table_sums, data_key_version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[&id, &tenant_id, &slug, &created, &file, &i64::try_from(size)?, &sha_bytes, &schema_version, &i32::try_from(key_version)?, &sums, &data_key_version],
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = recorded {
        // A file the catalog does not record is one nothing lists, restores or prunes.
        let _ = store.delete(&file);
        let _ = store.delete(&format!("{file}.json"));
        return Err(e.context(format!("recording backup {file}")));
    }
    Ok(manifest)
}

/// Backups recorded in the catalog, newest first.
pub async fn list(p: &Platform, slug: Option<&str>) -> anyhow::Result<Vec<Manifest>> {
    let c = p.catalog.client().await?;
    let rows = c
        .query(
            "SELECT id, coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'), tenant_slug, created_at, file, size, sha256, schema_version, key_version
               FROM backups WHERE ($1::text IS NULL OR tenant_slug = $1) AND destroyed_at IS NULL
              ORDER BY created_at DESC",
            &[&slug],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Manifest {
                id: r.get(0),
                tenant_id: r.get(1),
                tenant: r.get(2),
                created_at: r
                    .get::<_, time::OffsetDateTime>(3)
                    .format(&time::format_description::well_known::Rfc3339)?,
                file: r.get(4),
                size: u64::try_from(r.get::<_, i64>(5))?,
                sha256: hex::encode(r.get::<_, Vec<u8>>(6)),
                schema_version: r.get(7),
                key_version: u32::try_from(r.get::<_, i32>(8))?,
            })
        })
        .collect()
}

/// Decrypts a backup file to `out` (a `pg_dump` custom-format archive), checking
/// every chunk. Fails on any changed, missing or reordered byte, or a wrong key.
pub async fn decrypt(
    p: &Platform,
    store: &dyn BackupStore,
    file: &str,
    out: impl Write + Send + 'static,
) -> anyhow::Result<()> {
    let (header, header_bytes, mut r) = read_header(store, file)?;
    let backup_key = if header.tenant_id.is_nil() {
        // A catalog backup: its key is wrapped by the master key.
        // Made before a rotation: under a retired master key.
        let wrapped = B64.decode(&header.wrapped_key)?;
        let aad = catalog_key_aad(&header.backup_id);
        match p.keys.unwrap(&wrapped, &aad) {
            Ok(key) => key,
            Err(_) => crate::platform::retired_master_keys(&p.settings.state_dir)
                .into_iter()
                .find_map(|(_, k)| crate::crypto::KeyProvider::unwrap(&k, &wrapped, &aad).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "the backup key does not unwrap with the master key or any retired one (DIR/master.key.retired-*): a catalog backup made before a rotation needs the retired key put back, otherwise the header is damaged"
                    )
                })?,
        }
    } else {
        tenant_backup_key(p, &header).await?
    };
    let prefix: [u8; 7] = B64
        .decode(&header.nonce_prefix)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("backup header damaged"))?;
    let ad: Vec<u8> = Sha256::digest(&header_bytes).to_vec();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut out = out;
        let mut dec = DecryptorBE32::<Aes256Gcm>::from_aead(
            aead_with(backup_key.as_ref())?,
            (&prefix).into(),
        );
        let mut pending: Option<Vec<u8>> = None;
        loop {
            let mut len = [0u8; 4];
            let got = fill(&mut r, &mut len)?;
            if got == 0 {
                break;
            }
            if got < 4 {
                bail!("backup truncated");
            }
            let n = u32::from_be_bytes(len) as usize;
            if n > CHUNK + 16 {
                bail!("backup damaged (chunk too large)");
            }
            let mut ct = vec![0u8; n];
            r.read_exact(&mut ct).context("backup truncated")?;
            if let Some(prev) = pending.take() {
                let pt = dec
                    .decrypt_next(Payload {
                        msg: &prev,
                        aad: &ad,
                    })
                    .map_err(|_| anyhow::anyhow!("backup damaged or tampered with"))?;
                out.write_all(&pt)?;
            }
            pending = Some(ct);
        }
        let last = pending.context("backup truncated (no data)")?;
        let pt = dec
            .decrypt_last(Payload {
                msg: &last,
                aad: &ad,
            })
            .map_err(|_| anyhow::anyhow!("backup damaged, truncated or tampered with"))?;
        out.write_all(&pt)?;
        out.flush()?;
        Ok(())
    })
    .await?
}

/// One table compared by a drill.
#[derive(Debug, Clone, Serialize)]
pub struct TableCheck {
    pub table: String,
    pub source_rows: i64,
    pub restored_rows: i64,
    pub same: bool,
}

/// The outcome of a restore drill.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub tenant: String,
    pub backup: Uuid,
    pub ok: bool,
    pub seconds: f64,
    pub tables: Vec<TableCheck>,
}

/// A table's name, row count and MD5 over its rows in order.
type TableSum = (String, i64, String);

/// Per table of the public schema: row count and an MD5 over the rows in order.
/// Each row is hashed on its own and the hashes aggregated, so a table of large rows
/// (attachments of up to 10 MB) stays far below PostgreSQL's 1 GB limit on a value.
async fn table_sums(client: &tokio_postgres::Client) -> anyhow::Result<Vec<TableSum>> {
    let mut out = Vec::new();
    for t in public_tables(client).await? {
        let q = format!(
            "SELECT count(*), md5(coalesce(string_agg(h, ',' ORDER BY h), '')) \
               FROM (SELECT md5(x::text) AS h FROM {} x) rows",
            crate::catalog::quote_ident(&t)
        );
        let r = client.query_one(&q, &[]).await?;
        out.push((t, r.get(0), r.get(1)));
    }
    Ok(out)
}

/// The tables of the public schema, by name.
async fn public_tables(client: &tokio_postgres::Client) -> anyhow::Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Restores the tenant's latest backup into a scratch database, compares every table
/// (row count and checksum) with the tenant's database, records the result and the
/// time it took in the catalog, and drops the scratch database.
///
/// The scratch database is named after the tenant ([`drill_prefix`]) and closed to
/// everyone but the admin role, so a copy left by a drill cut short is found and
/// dropped by the next drill and by the tenant's erasure.
pub async fn drill(
    p: &Platform,
    store: &dyn BackupStore,
    rec: &TenantRecord,
) -> anyhow::Result<DrillReport> {
    let started = std::time::Instant::now();
    let latest = list(p, Some(&rec.slug))
        .await?
        .into_iter()
        .next()
        .with_context(|| format!("tenant {} has no backup yet", rec.slug))?;
    let admin = p.cluster.admin().await?;
    // One drill of a tenant at a time, and none during its erasure (the same lock).
    if !crate::control::erase::tenant_lock(&admin.client, rec).await? {
        bail!(
            "テナント {} の消去または別のリストア訓練が実行中です / an erasure or another restore drill of tenant {} is running",
            rec.slug,
            rec.slug
        );
    }
    // A backup that cannot be restored is what the drill is for: recorded as a
    // failed drill (and so alerted on), not only returned as an error.
    let drilled = drill_backup(p, store, rec, &latest, &admin).await;
    let _ = crate::control::erase::tenant_unlock(&admin.client, rec).await;
    match drilled {
        Ok(tables) => {
            let ok = !tables.is_empty() && tables.iter().all(|t| t.same);
            let report = DrillReport {
                tenant: rec.slug.clone(),
                backup: latest.id,
                ok,
                seconds: started.elapsed().as_secs_f64(),
                tables,
            };
            record_drill(
                p,
                rec,
                latest.id,
                ok,
                report.seconds,
                serde_json::to_value(&report.tables)?,
            )
            .await?;
            Ok(report)
        }
        Err(e) => {
            let detail = serde_json::json!({ "error": format!("{e:#}") });
            record_drill(
                p,
                rec,
                latest.id,
                false,
                started.elapsed().as_secs_f64(),
                detail,
            )
            .await?;
            Err(e)
        }
    }
}

async fn record_drill(
    p: &Platform,
    rec: &TenantRecord,
    backup: Uuid,
    ok: bool,
    seconds: f64,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    p.catalog
        .client()
        .await?
        .execute(
            "INSERT INTO drills (tenant_id, tenant_slug, backup_id, ok, seconds, detail) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&rec.id, &rec.slug, &backup, &ok, &seconds, &detail],
        )
        .await?;
    Ok(())
}

/// Checks, decrypts and restores `latest` into a scratch copy, and compares it with
/// the tenant's database table by table.
async fn drill_backup(
    p: &Platform,
    store: &dyn BackupStore,
    rec: &TenantRecord,
    latest: &Manifest,
    admin: &crate::control::cluster::Conn,
) -> anyhow::Result<Vec<TableCheck>> {
    let dump = tempfile::NamedTempFile::new()?;
    crate::control::progress::step(&format!("decrypting and checking {}", latest.file));
    check_against_record(p, store, &latest.file).await?;
    decrypt(p, store, &latest.file, dump.reopen()?).await?;
    // A drill cut short (Ctrl-C, a dropped console request) left its copy behind.
    drop_drill_copies(&admin.client, rec).await?;
    let scratch = format!(
        "{}{}",
        drill_prefix(rec),
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let quoted = crate::catalog::quote_ident(&scratch);
    // Made as a tenant's database is (template0, UTF-8, C collation): nothing of
    // template1 in the way of the restore, and rows compared in the same order.
    admin
        .client
        .batch_execute(&format!(
            "CREATE DATABASE {quoted} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        ))
        .await?;
    admin
        .client
        .batch_execute(&format!("REVOKE ALL ON DATABASE {quoted} FROM PUBLIC"))
        .await?;
    let cfg = p.cluster.admin_config(&scratch);
    let result = async {
        crate::control::progress::step(&format!("pg_restore into scratch database {scratch}"));
        pg_restore(p, &scratch, dump.path(), None).await?;
        let recorded: Option<serde_json::Value> = p
            .catalog
            .client()
            .await?
            .query_one(
                "SELECT table_sums FROM backups WHERE id = $1",
                &[&latest.id],
            )
            .await?
            .get(0);
        // Backups made before their sums were recorded are compared with the live
        // database, which matches only while nothing was written since.
        let a: Vec<TableSum> = match recorded {
            Some(sums) => {
                crate::control::progress::step(
                    "comparing row counts and checksums with those of the backup's snapshot",
                );
                serde_json::from_value(sums)?
            }
            None => {
                crate::control::progress::step(
                    "comparing row counts and checksums with the live database",
                );
                let source = p
                    .cluster
                    .connect(&p.cluster.admin_config(&rec.database))
                    .await?;
                table_sums(&source.client).await?
            }
        };
        let restored = p.cluster.connect(&cfg).await?;
        let b = table_sums(&restored.client).await?;
        let mut tables = Vec::new();
        for (t, rows, sum) in &a {
            let other = b.iter().find(|(bt, _, _)| bt == t);
            tables.push(TableCheck {
                table: t.clone(),
                source_rows: *rows,
                restored_rows: other.map_or(-1, |o| o.1),
                same: other.is_some_and(|o| o.1 == *rows && o.2 == *sum),
            });
        }
        anyhow::Ok(tables)
    }
    .await;
    admin
        .client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            crate::catalog::quote_ident(&scratch)
        ))
        .await?;
    result
}

/// The tenant a backup file belongs to, from its header.
pub fn backup_tenant(store: &dyn BackupStore, file: &str) -> anyhow::Result<Uuid> {
    Ok(read_header(store, file)?.0.tenant_id)
}

/// A tenant backup's key, unwrapped with the tenant's data key of the right version.
async fn tenant_backup_key(p: &Platform, header: &Header) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let rec = p
        .catalog
        .tenant_by_id(header.tenant_id)
        .await?
        .with_context(|| {
            format!(
                "the tenant of this backup ({}) no longer has keys",
                header.tenant_id
            )
        })?;
    let k = p
        .catalog
        .keys(rec.id, "data")
        .await?
        .into_iter()
        .find(|k| k.version == header.key_version)
        .context("the data key this backup was made with no longer exists")?;
    let dk = DataKey::unwrap(p.keys.as_ref(), &k.wrapped, &rec.id, k.version)?;
    let wrapped = B64.decode(&header.wrapped_key)?;
    if wrapped.len() < 12 {
        bail!("backup header damaged");
    }
    use aes_gcm::aead::Aead;
    let key = aead_with(dk.bytes())?
        .decrypt(
            aes_gcm::Nonce::from_slice(&wrapped[..12]),
            Payload {
                msg: &wrapped[12..],
                aad: &backup_key_aad(&rec.id, &header.backup_id),
            },
        )
        .map_err(|_| {
            anyhow::anyhow!("the backup key does not unwrap: wrong tenant key or damaged header")
        })?;
    Ok(Zeroizing::new(key))
}

/// Opens a backup file and reads its header: (header, its bytes, the rest).
/// Refuses a file that is not the one the catalog recorded under the backup id its
/// header carries: another name, another SHA-256 (an older backup of the same
/// tenant copied over a newer one decrypts fine, and would be restored as if it were
/// the newer), or no record at all.
pub async fn check_against_record(
    p: &Platform,
    store: &dyn BackupStore,
    file: &str,
) -> anyhow::Result<()> {
    let (header, _, _) = read_header(store, file)?;
    let c = p.catalog.client().await?;
    let Some(row) = c
        .query_opt(
            "SELECT file, sha256 FROM backups WHERE id = $1",
            &[&header.backup_id],
        )
        .await?
    else {
        bail!(
            "バックアップ {} はカタログに記録がありません / backup {} ({file}) is not recorded in the catalog; not restoring a file this platform did not record",
            header.backup_id,
            header.backup_id
        );
    };
    let recorded: String = row.get(0);
    if recorded != file && std::path::Path::new(file).ends_with(&recorded) {
        bail!(
            "{file}: give the backup by the name `madoguchi backup list` prints, relative to the backup directory: {recorded}"
        );
    }
    if recorded != file {
        bail!(
            "{file} carries backup {}, which the catalog records as {recorded}: the file was swapped; not restoring it",
            header.backup_id
        );
    }
    let (_, sha) = store.digest(file)?;
    if hex::decode(&sha)? != row.get::<_, Vec<u8>>(1) {
        bail!("{file} is not the file recorded in the catalog (SHA-256 differs): damaged or swapped; not restoring it");
    }
    Ok(())
}

/// Whether `file` is a backup of the catalog (not of a tenant).
pub(crate) fn is_catalog_backup(store: &dyn BackupStore, file: &str) -> anyhow::Result<bool> {
    Ok(read_header(store, file)?.0.tenant_id.is_nil())
}

/// Restores a decrypted archive into `database`, objects owned by the admin role.
pub(crate) async fn restore_dump(p: &Platform, database: &str, dump: &Path) -> anyhow::Result<()> {
    pg_restore(p, database, dump, None).await
}

fn read_header(
    store: &dyn BackupStore,
    file: &str,
) -> anyhow::Result<(Header, Vec<u8>, Box<dyn Read + Send>)> {
    let mut r = store.open(file)?;
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).context("not a Madoguchi backup")?;
    if &magic != MAGIC {
        bail!("not a Madoguchi backup (unknown format)");
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let hlen = u32::from_be_bytes(len) as usize;
    if hlen > 64 * 1024 {
        bail!("backup header too large");
    }
    let mut bytes = vec![0u8; hlen];
    r.read_exact(&mut bytes)?;
    let header: Header = serde_json::from_slice(&bytes).context("backup header unreadable")?;
    Ok((header, bytes, r))
}

/// Restores a backup into a new tenant (new slug, hosts, role and database). The new
/// tenant keeps the source's crypto identity and gets its own wrapped copies of the
/// source's data keys, so the restored ciphertexts decrypt; the source is untouched.
pub async fn restore(
    p: &Platform,
    store: &dyn BackupStore,
    file: &str,
    slug: &str,
    hosts: &[String],
) -> anyhow::Result<TenantRecord> {
    restore_as(p, store, file, slug, hosts, false).await
}

/// [`restore`], leaving the new tenant suspended if asked: it answers 503 on its hosts
/// until resumed (a copy to examine, in an incident or a drill by hand).
pub async fn restore_as(
    p: &Platform,
    store: &dyn BackupStore,
    file: &str,
    slug: &str,
    hosts: &[String],
    suspended: bool,
) -> anyhow::Result<TenantRecord> {
    use crate::control::provision::{
        create_database, create_role, register_with, write_settings, TenantSpec,
    };
    check_against_record(p, store, file).await?;
    let source_id = backup_tenant(store, file)?;
    let source = p
        .catalog
        .tenant_by_id(source_id)
        .await?
        .context("the tenant this backup belongs to has no keys any more (erased?)")?;
    let mut keys = Vec::new();
    for k in p.catalog.keys(source.id, "data").await? {
        keys.push((
            k.version,
            DataKey::unwrap(p.keys.as_ref(), &k.wrapped, &source.id, k.version)?,
        ));
    }
    let spec = TenantSpec::parse(slug, &source.name, &source.code, hosts)?;
    match p.catalog.tenant_by_slug(spec.slug.as_str()).await? {
        None => {}
        // An earlier restore into this slug cut short (Ctrl-C, a kill, a stop): its
        // half-made database, role and catalog entry go before this one starts.
        Some(left)
            if left.state == crate::catalog::TenantState::Provisioning
                && left.crypto_id != left.id =>
        {
            crate::control::progress::step(&format!(
                "clearing the restore into {slug} that was cut short"
            ));
            undo_restore(p, &left)
                .await
                .with_context(|| format!("clearing the restore into {slug} that was cut short"))?;
        }
        Some(_) => bail!("テナント「{slug}」は既に存在します / tenant {slug} already exists"),
    }
    // Check the backup whole before making anything.
    let dump = tempfile::NamedTempFile::new()?;
    crate::control::progress::step(&format!("decrypting and checking {file}"));
    decrypt(p, store, file, dump.reopen()?).await?;
    crate::control::progress::step("creating the new tenant's role and database");
    let rec = register_with(p, &spec, Some(source.crypto_id), keys).await?;
    let made = async {
        let pw =
            crate::control::cluster::tenant_password(&p.catalog, p.keys.as_ref(), &rec).await?;
        create_role(p, &rec, &pw)
            .await
            .context("creating the restored tenant's role")?;
        create_database(p, &rec)
            .await
            .context("creating the restored tenant's database")?;
        crate::control::progress::step(&format!("pg_restore into {}", rec.database));
        pg_restore(p, &rec.database, dump.path(), Some(&rec.role))
            .await
            .context("restoring")?;
        crate::control::progress::step("migrating the restored schema");
        crate::control::migrate::migrate_tenant(p, &rec)
            .await
            .context("bringing the restored schema up to date")?;
        write_settings(p, &rec).await?;
        // A backup made before a data-key rotation of its source: the copy holds
        // every version, and is brought under the newest like the source was.
        crate::control::data_key::bring_up_to_date(p, &rec)
            .await
            .context("sealing the restored values with the newest data key")?;
        hold_outbox(p, &rec).await
    }
    .await;
    if let Err(e) = made {
        // Nothing half-restored is left to go live (`tenant create` would have
        // finished it as it was) or to hold copies of the source's keys: the
        // database, role and catalog entry go, and the restore can be run again.
        return Err(match undo_restore(p, &rec).await {
            Ok(()) => e.context(format!(
                "the restore into {slug} failed and was undone (database {} and role {} dropped, catalog entry removed); it can be run again",
                rec.database, rec.role
            )),
            Err(undo) => e.context(format!(
                "the restore into {slug} failed, and undoing it failed too ({undo:#}): database {} and role {} may be left, with the tenant in state provisioning",
                rec.database, rec.role
            )),
        });
    }
    let state = if suspended {
        crate::catalog::TenantState::Suspended
    } else {
        crate::catalog::TenantState::Active
    };
    p.catalog.set_state(rec.id, state).await?;
    p.catalog
        .tenant_by_id(rec.id)
        .await?
        .context("tenant vanished from the catalog")
}

/// The mail a restored copy found waiting is held, not sent: the tenant it came from
/// may have sent it since the backup, and a copy must not write to citizens again.
/// Staff see each as not sent, with why, on its case.
async fn hold_outbox(p: &Platform, rec: &TenantRecord) -> anyhow::Result<()> {
    let conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    conn.client
        .execute(
            "UPDATE outbox SET next_attempt_at = 'infinity', last_error = $1
              WHERE sent_at IS NULL AND next_attempt_at <> 'infinity'",
            &[&HELD_AT_RESTORE],
        )
        .await?;
    Ok(())
}

/// Why a restored copy's waiting mail was not sent (shown to staff on the case).
pub const HELD_AT_RESTORE: &str = "復元したため送信を保留 / held at restore";

/// Drops what a failed restore made: its database, its role and its catalog entry.
async fn undo_restore(p: &Platform, rec: &TenantRecord) -> anyhow::Result<()> {
    let admin = p.cluster.admin().await?;
    admin
        .client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            crate::catalog::quote_ident(&rec.database)
        ))
        .await?;
    admin
        .client
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {}",
            crate::catalog::quote_ident(&rec.role)
        ))
        .await?;
    p.catalog.forget_unfinished(rec.id).await?;
    Ok(())
}

/// How many backups to keep: the newest of each of the last `daily` days, `weekly`
/// ISO weeks and `monthly` months that have one.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            daily: 7,
            weekly: 4,
            monthly: 12,
        }
    }
}

impl Retention {
    /// Which of these backup times to keep (by index), the rest may be deleted.
    pub fn keep(&self, times: &[time::OffsetDateTime]) -> Vec<bool> {
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by(|a, b| times[*b].cmp(&times[*a]));
        let mut keep = vec![false; times.len()];
        let jst = time::macros::offset!(+9);
        let mut pick = |bucket: &dyn Fn(time::OffsetDateTime) -> (i32, u32), limit: usize| {
            let mut seen: Vec<(i32, u32)> = Vec::new();
            for &i in &order {
                let b = bucket(times[i].to_offset(jst));
                if !seen.contains(&b) {
                    if seen.len() == limit {
                        break;
                    }
                    seen.push(b);
                    keep[i] = true;
                }
            }
        };
        pick(&|t| (t.year(), u32::from(t.ordinal())), self.daily);
        pick(
            &|t| {
                let (y, w, _) = t.to_iso_week_date();
                (y, u32::from(w))
            },
            self.weekly,
        );
        pick(
            &|t| (t.year(), u32::from(u8::from(t.month()))),
            self.monthly,
        );
        keep
    }
}

/// Deletes the backups of a tenant that the retention policy does not keep (files,
/// manifests and catalog rows); returns how many.
/// Backups held for an incident or an inquiry.
#[derive(Debug, Clone)]
pub struct Hold {
    pub reason: String,
    pub held_by: String,
    /// RFC 3339, UTC.
    pub held_at: String,
}

/// The hold on `slug`'s backups (a tenant, or [`CATALOG`]), if any.
pub async fn held(p: &Platform, slug: &str) -> anyhow::Result<Option<Hold>> {
    let c = p.catalog.client().await?;
    Ok(c.query_opt(
        "SELECT reason, held_by, to_char(held_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
           FROM backup_holds WHERE tenant_slug = $1",
        &[&slug],
    )
    .await?
    .map(|r| Hold {
        reason: r.get(0),
        held_by: r.get(1),
        held_at: r.get(2),
    }))
}

/// Holds `slug`'s backups (a tenant, or [`CATALOG`]): retention deletes none of them
/// and no erasure of the tenant begins until [`release`]. Recorded in the
/// operation log.
pub async fn hold(p: &Platform, slug: &str, actor: &str, reason: &str) -> anyhow::Result<()> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        bail!("理由を1〜500文字で書いてください / give a reason of 1 to 500 characters (--reason)");
    }
    if slug != CATALOG && p.catalog.tenant_by_slug(slug).await?.is_none() {
        bail!("テナント「{slug}」はありません / no tenant {slug}");
    }
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    // The tenant's row, as a data-key retirement locks it before it looks for a hold:
    // one running now finishes first, or sees this hold.
    tx.execute("SELECT 1 FROM tenants WHERE slug = $1 FOR UPDATE", &[&slug])
        .await?;
    let n = tx
        .execute(
            "INSERT INTO backup_holds (tenant_slug, reason, held_by) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&slug, &reason, &actor],
        )
        .await?;
    if n == 0 {
        bail!("{slug} のバックアップは既に保全中です / the backups of {slug} are held already");
    }
    super::oplog::append(
        &tx,
        actor,
        "backup.hold",
        slug,
        &serde_json::json!({ "reason": reason }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Ends the hold on `slug`'s backups. Recorded in the operation log.
pub async fn release(p: &Platform, slug: &str, actor: &str) -> anyhow::Result<()> {
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    let n = tx
        .execute("DELETE FROM backup_holds WHERE tenant_slug = $1", &[&slug])
        .await?;
    if n == 0 {
        bail!("{slug} のバックアップは保全されていません / the backups of {slug} are not held");
    }
    super::oplog::append(&tx, actor, "backup.release", slug, &serde_json::json!({})).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn prune(
    p: &Platform,
    store: &dyn BackupStore,
    slug: &str,
    retention: &Retention,
) -> anyhow::Result<usize> {
    if let Some(h) = held(p, slug).await? {
        tracing::info!(tenant = %slug, reason = %h.reason, "backups held: none pruned");
        return Ok(0);
    }
    let c = p.catalog.client().await?;
    let rows = c
        .query(
            "SELECT id, created_at, file FROM backups WHERE tenant_slug = $1",
            &[&slug],
        )
        .await?;
    let times: Vec<time::OffsetDateTime> = rows.iter().map(|r| r.get(1)).collect();
    let keep = retention.keep(&times);
    let mut n = 0;
    for (r, k) in rows.iter().zip(keep) {
        if k {
            continue;
        }
        let (id, file): (Uuid, String) = (r.get(0), r.get(2));
        for name in [file.clone(), format!("{file}.json")] {
            if store.exists(&name) {
                store.delete(&name)?;
            }
        }
        c.execute("DELETE FROM backups WHERE id = $1", &[&id])
            .await?;
        n += 1;
    }
    // Files the catalog does not record: left by a backup cut short (Ctrl-C, a kill,
    // a stop during a scheduled one) or whose recording failed. Nothing lists,
    // restores or prunes them, and a cut one may hold a truncated dump. Those over an
    // hour old (their name says when they were begun) are deleted.
    let recorded: std::collections::HashSet<String> = c
        .query("SELECT file FROM backups WHERE tenant_slug = $1", &[&slug])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let hour_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    for name in store.list(slug)? {
        let backup = name.strip_suffix(".json").unwrap_or(&name);
        if recorded.contains(backup) || !backup.ends_with(".mdgbak") {
            continue;
        }
        if begun(backup).is_some_and(|at| at < hour_ago) {
            store.delete(&name)?;
            tracing::info!(file = %name, "deleted a backup file the catalog does not record");
        }
    }
    Ok(n)
}

/// When a backup file was begun, from its name (`<slug>/<YYYYMMDDTHHMMSSZ>-<id>.mdgbak`).
fn begun(file: &str) -> Option<time::OffsetDateTime> {
    let stamp = file.rsplit('/').next()?.split('-').next()?;
    time::PrimitiveDateTime::parse(
        stamp,
        &time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
    )
    .ok()
    .map(time::PrimitiveDateTime::assume_utc)
}

/// Backs up every active tenant and applies the retention policy; for the schedule
/// in `serve` and for `backup run --all`.
pub async fn run_all(
    p: &Platform,
    store: &dyn BackupStore,
    retention: &Retention,
) -> (usize, Vec<(String, String)>) {
    let tenants = match p.catalog.list_tenants().await {
        Ok(t) => t,
        Err(e) => return (0, vec![("*".into(), format!("{e:#}"))]),
    };
    let (mut ok, mut failed) = (0, Vec::new());
    for t in tenants.iter().filter(|t| t.state.backed_up()) {
        match run(p, store, t).await {
            Ok(_) => {
                ok += 1;
                match prune(p, store, &t.slug, retention).await {
                    Ok(_) => {
                        if let Err(e) = crate::control::data_key::retire_unused(p, t).await {
                            failed.push((t.slug.clone(), format!("retiring data keys: {e:#}")));
                        }
                    }
                    Err(e) => failed.push((t.slug.clone(), format!("pruning: {e:#}"))),
                }
            }
            Err(e) => failed.push((t.slug.clone(), format!("{e:#}"))),
        }
    }
    match run_catalog(p, store).await {
        Ok(_) => {
            ok += 1;
            if let Err(e) = prune(p, store, CATALOG, retention).await {
                failed.push((CATALOG.into(), format!("pruning: {e:#}")));
            }
        }
        Err(e) => failed.push((CATALOG.into(), format!("{e:#}"))),
    }
    (ok, failed)
}

/// The restore drills of a scheduled round: every active or suspended tenant with a
/// backup whose last drill (before its first: its provisioning) is at least
/// `every_days` old, the longest waiting first, and at most as many as spreads all
/// tenants over the `rounds` that `every_days` holds, so that a first round after an
/// upgrade does not drill 1,788 tenants at once. Each drill is recorded (a failed one
/// raises MadoguchiRestoreDrillFailed). Returns the slugs drilled and passed, and
/// those that failed with why.
pub async fn drill_due(
    p: &Platform,
    store: &dyn BackupStore,
    every_days: u32,
    rounds: u32,
    skip: &[String],
) -> (Vec<String>, Vec<(String, String)>) {
    let due = async {
        let c = p.catalog.client().await?;
        let all: i64 = c
            .query_one(
                "SELECT count(*) FROM tenants WHERE state IN ('active', 'suspended')",
                &[],
            )
            .await?
            .get(0);
        let rounds = i64::from(rounds.max(1));
        let per_round = ((all + rounds - 1) / rounds).max(1);
        let rows = c
            .query(
                "SELECT t.slug FROM tenants t LEFT JOIN drills d ON d.tenant_id = t.id
                  WHERE t.state IN ('active', 'suspended')
                    AND EXISTS (SELECT 1 FROM backups b WHERE b.tenant_id = t.id AND b.destroyed_at IS NULL)
                    AND t.slug <> ALL($3)
                  GROUP BY t.slug, t.created_at
                 HAVING coalesce(max(d.at), t.created_at) <= now() - make_interval(days => $1)
                  ORDER BY coalesce(max(d.at), t.created_at), t.slug
                  LIMIT $2",
                &[&i32::try_from(every_days)?, &per_round, &skip],
            )
            .await?;
        anyhow::Ok(
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>(),
        )
    }
    .await;
    let due = match due {
        Ok(due) => due,
        Err(e) => return (Vec::new(), vec![("*".into(), format!("{e:#}"))]),
    };
    let (mut passed, mut failed) = (Vec::new(), Vec::new());
    for slug in due {
        let drilled = match p.catalog.tenant_by_slug(&slug).await {
            Ok(Some(rec)) => drill(p, store, &rec).await,
            Ok(None) => continue,
            Err(e) => Err(e),
        };
        match drilled {
            Ok(report) if report.ok => passed.push(slug),
            Ok(report) => {
                let differ: Vec<&str> = report
                    .tables
                    .iter()
                    .filter(|t| !t.same)
                    .map(|t| t.table.as_str())
                    .collect();
                failed.push((slug, format!("tables differ: {}", differ.join(", "))));
            }
            Err(e) => failed.push((slug, format!("{e:#}"))),
        }
    }
    (passed, failed)
}

/// The name every restore-drill copy of the tenant begins with.
pub fn drill_prefix(rec: &TenantRecord) -> String {
    format!("drill_{}_", rec.id.simple())
}

/// Restore-drill copies of the tenant in the cluster: those named after it, and any
/// older copy named `drill_<uuid>` (made before copies were named after their
/// tenant, so possibly its) that this platform's admin role made (owns): a database
/// of that name made by someone else is not this platform's to drop, and the admin
/// role may not be allowed to. The query's one parameter is the tenant's prefix.
pub const DRILL_COPIES_SQL: &str = "SELECT datname FROM pg_database
  WHERE starts_with(datname, $1)
     OR (datname ~ '^drill_[0-9a-f]{32}$' AND datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user))
  ORDER BY datname";

/// The tenant's restore-drill copies still there after [`drop_drill_copies`]: those
/// named after it ($1, its prefix) and the older `drill_<uuid>` ones it dropped ($2).
/// Not every `drill_<uuid>`: one that turns up meanwhile (another erasure's, an
/// operator's) says nothing of this tenant.
pub const DRILL_COPIES_LEFT_SQL: &str = "SELECT datname FROM pg_database
  WHERE starts_with(datname, $1) OR datname = ANY($2)";

/// Drops every restore-drill copy of the tenant still in the cluster; returns their names.
pub async fn drop_drill_copies(
    admin: &tokio_postgres::Client,
    rec: &TenantRecord,
) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = admin
        .query(DRILL_COPIES_SQL, &[&drill_prefix(rec)])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for name in &names {
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                crate::catalog::quote_ident(name)
            ))
            .await
            .with_context(|| format!("dropping drill copy {name}"))?;
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn retention_keeps_daily_weekly_monthly() {
        // One backup a day for 400 days, plus a second one on the newest day.
        let newest = datetime!(2026-11-26 03:00 +09:00);
        let mut times: Vec<time::OffsetDateTime> =
            (0..400).map(|d| newest - time::Duration::days(d)).collect();
        times.push(newest - time::Duration::hours(2));
        let keep = Retention::default().keep(&times);
        let kept: Vec<time::OffsetDateTime> = times
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(t, _)| *t)
            .collect();
        // 7 days (the newest of the doubled day only), up to 4 weeks and 12 months overlapping them.
        assert!(kept.contains(&newest));
        assert!(!kept.contains(&(newest - time::Duration::hours(2))));
        for d in 0..7 {
            assert!(
                kept.contains(&(newest - time::Duration::days(d))),
                "day {d}"
            );
        }
        assert!(
            kept.len() >= 12 && kept.len() <= 7 + 4 + 12,
            "{}",
            kept.len()
        );
        let oldest = kept.iter().min().copied().unwrap_or(newest);
        assert!(
            newest - oldest < time::Duration::days(370),
            "nothing older than about a year"
        );
        assert!(
            newest - oldest > time::Duration::days(300),
            "monthly backups reach back about a year"
        );
    }
}
