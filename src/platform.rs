//! Everything a command needs, opened once: the cluster (embedded or external),
//! the master key, the catalog.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use crate::catalog::Catalog;
use crate::config::Settings;
use crate::control::Cluster;
use crate::crypto::{DataKey, FileKeyProvider, KeyProvider};
use crate::embedded_pg::{ClusterOptions, EmbeddedPg};

pub struct Platform {
    pub settings: Settings,
    pub cluster: Cluster,
    pub catalog: Catalog,
    pub keys: Arc<dyn KeyProvider>,
    /// Admin URL of the cluster in use, for `madoguchi db url`.
    admin_url: String,
    embedded: Mutex<Option<EmbeddedPg>>,
    /// This process's share of the catalog (see [`Presence`]); none in a handle.
    presence: Mutex<Option<Presence>>,
}

/// Advisory lock that every process on a catalog holds shared for as long as it runs
/// ("mdgprsnc"). A master-key rotation holds it alone, so no process keeps wrapping
/// keys under the master key it replaces, and a process starting meanwhile waits,
/// then loads the new key.
const PRESENCE_LOCK: i64 = i64::from_be_bytes(*b"mdgprsnc");

/// A connection of its own to the catalog holding [`PRESENCE_LOCK`].
struct Presence {
    client: tokio_postgres::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Presence {
    async fn take(
        admin: &tokio_postgres::Config,
        tls: &crate::pg_tls::PgTls,
        catalog_db: &str,
    ) -> anyhow::Result<Self> {
        let mut cfg = admin.clone();
        cfg.dbname(catalog_db)
            .application_name(format!("madoguchi-presence/{}", std::process::id()));
        let (client, mut messages) = tls
            .connect(&cfg)
            .await
            .context("connecting to the catalog")?;
        let task = tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(m) = messages.next().await {
                if let Err(e) = m {
                    tracing::warn!(error = %e, "the catalog connection holding this process's presence ended");
                    break;
                }
            }
        });
        client
            .execute("SELECT pg_advisory_lock_shared($1)", &[&PRESENCE_LOCK])
            .await?;
        Ok(Self { client, task })
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("state_dir", &self.settings.state_dir)
            .finish_non_exhaustive()
    }
}

impl Platform {
    /// Starts (or joins) the cluster, loads the master key and opens the catalog.
    pub async fn open(settings: Settings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.state_dir).with_context(|| {
            format!("creating state directory {}", settings.state_dir.display())
        })?;
        let (admin, admin_url, embedded) = match &settings.database_url {
            Some(url) => {
                // verify-ca / verify-full read as require (which checks as much here),
                // for the admin URL that `db psql` is given too.
                let url = crate::pg_tls::normalise_url(url);
                let cfg: tokio_postgres::Config = url
                    .parse()
                    .context("MADOGUCHI_DATABASE_URL is not a valid PostgreSQL URL")?;
                (cfg, url, None)
            }
            None => {
                // A master key without a private cluster: this directory belongs to a
                // deployment on an external database, and the command was run without
                // its settings. A new empty cluster here would show no tenants, take
                // new ones out of the real catalog's sight, and leave files the
                // service cannot read.
                let key = settings.state_dir.join("master.key");
                let cluster = settings
                    .state_dir
                    .join("pg")
                    .join("data")
                    .join("PG_VERSION");
                // A directory this user may not read is said so, not taken for a
                // missing cluster.
                let present = |p: &std::path::Path| {
                    p.try_exists().with_context(|| {
                        format!(
                            "{} cannot be read by this user: run the command as the service's user",
                            p.display()
                        )
                    })
                };
                if present(&key)? && !present(&cluster)? {
                    anyhow::bail!(
                        "{} holds a master key but no private PostgreSQL cluster: its database is elsewhere. \
                         Set database_url in {} (or MADOGUCHI_DATABASE_URL) as the service has it, \
                         and run the command as the service's user. No cluster was created.",
                        settings.state_dir.display(),
                        settings.state_dir.join("madoguchi.toml").display()
                    );
                }
                let dir = settings.state_dir.clone();
                let opts = ClusterOptions::for_budget(settings.pool.budget);
                let pg =
                    tokio::task::spawn_blocking(move || EmbeddedPg::ensure(&dir, &opts)).await??;
                (
                    pg.admin_config("postgres"),
                    pg.admin_url(&settings.catalog_db),
                    Some(pg),
                )
            }
        };
        let tls = match crate::pg_tls::PgTls::for_config(&admin, settings.database_ca.as_deref()) {
            Ok(tls) => tls,
            Err(e) => {
                if let Some(mut pg) = embedded {
                    let _ = pg.stop_if_last();
                }
                return Err(e);
            }
        };
        let cluster = Cluster::new(admin, tls);
        let catalog = match Catalog::open(
            cluster.maintenance_config(),
            cluster.tls(),
            &settings.catalog_db,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                if let Some(mut pg) = embedded {
                    let _ = pg.stop_if_last();
                }
                return Err(e);
            }
        };
        let opened = match Presence::take(
            cluster.maintenance_config(),
            cluster.tls(),
            &settings.catalog_db,
        )
        .await
        {
            Ok(presence) => master_key(&catalog, &settings.state_dir)
                .await
                .map(|k| (presence, k)),
            Err(e) => Err(e),
        };
        let (presence, keys): (Presence, Arc<dyn KeyProvider>) = match opened {
            Ok((presence, k)) => (presence, Arc::new(k)),
            Err(e) => {
                catalog.close();
                if let Some(mut pg) = embedded {
                    let _ = pg.stop_if_last();
                }
                return Err(e);
            }
        };
        Ok(Self {
            settings,
            cluster,
            catalog,
            keys,
            admin_url,
            embedded: Mutex::new(embedded),
            presence: Mutex::new(Some(presence)),
        })
    }

    /// Lets go of the catalog: its pool and this process's presence (before the
    /// catalog database is replaced). The platform is not to be used afterwards.
    pub fn leave_catalog(&self) {
        self.catalog.close();
        if let Ok(mut presence) = self.presence.lock() {
            presence.take();
        }
    }

    /// Makes this process the only one on the catalog for as long as it runs (a
    /// master-key rotation). Refused while any other Madoguchi process (`serve`, a
    /// command) has it open; a process starting afterwards waits for this one to end.
    pub async fn alone(&self) -> anyhow::Result<()> {
        let guard = self
            .presence
            .lock()
            .map_err(|_| anyhow::anyhow!("presence lock poisoned"))?
            .take();
        let Some(presence) = guard else {
            anyhow::bail!("this handle does not hold the catalog's presence");
        };
        presence
            .client
            .execute("SELECT pg_advisory_unlock_shared($1)", &[&PRESENCE_LOCK])
            .await?;
        let mut alone: bool = presence
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&PRESENCE_LOCK])
            .await?
            .get(0);
        // A process whose presence connection was cut (a restarted cluster) still
        // shows its other catalog connections.
        if alone {
            let pid = std::process::id();
            let others: i64 = presence
                .client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND application_name LIKE 'madoguchi-%'
                        AND application_name NOT IN ($1, $2)",
                    &[
                        &format!("madoguchi-control/{pid}"),
                        &format!("madoguchi-presence/{pid}"),
                    ],
                )
                .await?
                .get(0);
            if others > 0 {
                presence
                    .client
                    .execute("SELECT pg_advisory_unlock($1)", &[&PRESENCE_LOCK])
                    .await?;
                alone = false;
            }
        }
        if !alone {
            presence
                .client
                .execute("SELECT pg_advisory_lock_shared($1)", &[&PRESENCE_LOCK])
                .await?;
        }
        if let Ok(mut slot) = self.presence.lock() {
            *slot = Some(presence);
        }
        if !alone {
            anyhow::bail!(
                "別のMadoguchiのプロセス（serve、またはコマンド）がこのカタログを使っています。サービスを止めてから（systemctl stop madoguchi）もう一度実行してください / another Madoguchi process (serve, or a command) is using this catalog: stop the service (systemctl stop madoguchi) and run this again"
            );
        }
        Ok(())
    }

    /// Admin URL of the catalog database, usable with `psql`.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Another handle on the same platform for long-lived tasks (the ops console,
    /// schedules); it shares the catalog pool and never stops the cluster.
    pub fn handle(&self) -> Platform {
        Platform {
            settings: self.settings.clone(),
            cluster: self.cluster.clone(),
            catalog: self.catalog.clone(),
            keys: Arc::clone(&self.keys),
            admin_url: self.admin_url.clone(),
            embedded: Mutex::new(None),
            presence: Mutex::new(None),
        }
    }

    /// Stops the embedded cluster if this process is the last to use it (and it was
    /// started by Madoguchi).
    pub fn close(&self) -> anyhow::Result<()> {
        self.leave_catalog();
        let mut guard = self
            .embedded
            .lock()
            .map_err(|_| anyhow::anyhow!("embedded cluster lock poisoned"))?;
        if let Some(pg) = guard.as_mut() {
            pg.stop_if_last()?;
        }
        Ok(())
    }
}

/// What the master key's check value is wrapped with.
pub(crate) const CHECK_AAD: &[u8] = b"madoguchi-master-key-check-v1";

/// The master key's file in the state directory.
pub const MASTER_KEY: &str = "master.key";
/// Where a rotation writes the new master key before the catalog is re-wrapped.
pub const NEW_MASTER_KEY: &str = "master.key.new";
/// Retired master keys are named `master.key.retired-<UTC time>`.
const RETIRED_PREFIX: &str = "master.key.retired-";

/// Finishes a rotation cut short between the catalog's commit and the files' swap
/// (the catalog opens with `master.key.new`), or drops a `master.key.new` that no
/// commit took (the catalog opens with `master.key`). Runs under the presence lock,
/// so no rotation is under way.
fn settle_rotation(check: Option<&[u8]>, dir: &std::path::Path) -> anyhow::Result<()> {
    let new = dir.join(NEW_MASTER_KEY);
    let (Some(check), true) = (check, new.exists()) else {
        return Ok(());
    };
    let opens = |path: &std::path::Path| {
        FileKeyProvider::load_or_create(path).is_ok_and(|k| k.unwrap(check, CHECK_AAD).is_ok())
    };
    let current = dir.join(MASTER_KEY);
    if current.exists() && opens(&current) {
        tracing::warn!(
            "removing {}: a master-key rotation that did not commit",
            new.display()
        );
        std::fs::remove_file(&new)?;
    } else if opens(&new) {
        swap_master_files(dir)?;
        tracing::warn!(
            "finished a master-key rotation cut short: {} is the master key now",
            current.display()
        );
    }
    Ok(())
}

/// The master key at `path`, if it is the catalog's: a catalog that already holds
/// keys is never met with a new master key made on the spot (a command run with
/// the wrong `--state-dir` against the real catalog wrapped a tenant's keys under a
/// stray key no `serve` could open), nor with another one.
/// What a catalog holds wrapped by the master key, to tell whether a key is its own:
/// the key check, and (for a catalog from before the check) one wrapped tenant key.
pub(crate) struct WrappedInCatalog {
    check: Option<Vec<u8>>,
    sample: Option<(uuid::Uuid, String, u32, Vec<u8>)>,
}

impl WrappedInCatalog {
    pub(crate) async fn read(db: &tokio_postgres::Client) -> anyhow::Result<Self> {
        let check = match db
            .query_opt("SELECT wrapped FROM master_key_check", &[])
            .await
        {
            Ok(row) => row.map(|r| r.get(0)),
            // A catalog (a backup of one) from before the check.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => None,
            Err(e) => return Err(e.into()),
        };
        let sample = db
            .query_opt(
                "SELECT tenant_id, purpose, version, wrapped FROM tenant_keys LIMIT 1",
                &[],
            )
            .await?
            .map(|r| {
                let version = u32::try_from(r.get::<_, i32>(2)).unwrap_or(0);
                (r.get(0), r.get(1), version, r.get(3))
            });
        Ok(Self { check, sample })
    }

    /// Whether it holds the key check (every catalog this version opened does).
    pub(crate) fn holds_check(&self) -> bool {
        self.check.is_some()
    }

    /// Whether it holds anything wrapped by a master key yet.
    fn holds_any(&self) -> bool {
        self.check.is_some() || self.sample.is_some()
    }

    /// Whether `keys` opens what it holds (true when it holds nothing yet).
    pub(crate) fn opens_with(&self, keys: &dyn KeyProvider) -> bool {
        match (&self.check, &self.sample) {
            (Some(wrapped), _) => keys.unwrap(wrapped, CHECK_AAD).is_ok(),
            (None, Some((tenant, purpose, version, wrapped))) => keys
                .unwrap(wrapped, &DataKey::wrap_aad(tenant, purpose, *version))
                .is_ok(),
            (None, None) => true,
        }
    }
}

async fn master_key(catalog: &Catalog, dir: &std::path::Path) -> anyhow::Result<FileKeyProvider> {
    let path = &dir.join(MASTER_KEY);
    let c = catalog.client().await?;
    let held = WrappedInCatalog::read(&c).await?;
    settle_rotation(held.check.as_deref(), dir)?;
    let wrong_key = || {
        anyhow::anyhow!(
            "マスターキー {} はこのカタログの鍵ではありません。--state-dir（MADOGUCHI_STATE_DIR）が正しいか確かめてください / the master key {} is not the one this catalog's keys are wrapped with; check --state-dir",
            path.display(),
            path.display()
        )
    };
    if !path.exists() && held.holds_any() {
        anyhow::bail!(
            "マスターキー {} がありません。このカタログの鍵は別のマスターキーで保護されています。--state-dir（MADOGUCHI_STATE_DIR）が正しいか確かめてください / no master key at {}, but this catalog holds keys wrapped with one; check --state-dir",
            path.display(),
            path.display()
        );
    }
    let keys = FileKeyProvider::load_or_create(path)?;
    if !held.opens_with(&keys) {
        return Err(wrong_key());
    }
    if held.check.is_some() {
        return Ok(keys);
    }
    let mut value = zeroize::Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, value.as_mut());
    let wrapped = keys.wrap(value.as_ref(), CHECK_AAD)?;
    c.execute(
        "INSERT INTO master_key_check (id, wrapped, provider) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
        &[&wrapped, &keys.id()],
    )
    .await?;
    // Another process may have written its own at the same moment: it must be ours too.
    let stored: Vec<u8> = c
        .query_one("SELECT wrapped FROM master_key_check", &[])
        .await?
        .get(0);
    keys.unwrap(&stored, CHECK_AAD).map_err(|_| wrong_key())?;
    Ok(keys)
}

/// `master.key` becomes `master.key.retired-<time>` and `master.key.new` becomes
/// `master.key`; returns the retired file's path.
pub(crate) fn swap_master_files(dir: &Path) -> anyhow::Result<PathBuf> {
    let now = time::OffsetDateTime::now_utc();
    let stamp = now
        .format(&time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| now.unix_timestamp().to_string());
    let mut retired = dir.join(format!("{RETIRED_PREFIX}{stamp}"));
    let mut n = 1;
    while retired.exists() {
        n += 1;
        retired = dir.join(format!("{RETIRED_PREFIX}{stamp}-{n}"));
    }
    let current = dir.join(MASTER_KEY);
    if current.exists() {
        std::fs::rename(&current, &retired)?;
    }
    std::fs::rename(dir.join(NEW_MASTER_KEY), &current)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(retired)
}

/// The retired master keys in `dir`, newest first (a catalog backup made before a
/// rotation opens with one of them).
pub fn retired_master_keys(dir: &Path) -> Vec<(PathBuf, FileKeyProvider)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(RETIRED_PREFIX))
                })
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths.reverse();
    paths
        .into_iter()
        .filter_map(|path| match FileKeyProvider::load_or_create(&path) {
            Ok(k) => Some((path, k)),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "a retired master key is not usable");
                None
            }
        })
        .collect()
}
