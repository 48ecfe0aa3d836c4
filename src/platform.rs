//! Everything a command needs, opened once: the cluster (embedded or external),
//! the master key, the catalog.

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
                let cfg: tokio_postgres::Config = url
                    .parse()
                    .context("MADOGUCHI_DATABASE_URL is not a valid PostgreSQL URL")?;
                (cfg, url.clone(), None)
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
        let cluster = Cluster::new(admin);
        let catalog = match Catalog::open(cluster.maintenance_config(), &settings.catalog_db).await
        {
            Ok(c) => c,
            Err(e) => {
                if let Some(mut pg) = embedded {
                    let _ = pg.stop_if_last();
                }
                return Err(e);
            }
        };
        let keys: Arc<dyn KeyProvider> =
            match master_key(&catalog, &settings.state_dir.join("master.key")).await {
                Ok(k) => Arc::new(k),
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
        })
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
        }
    }

    /// Stops the embedded cluster if this process is the last to use it (and it was
    /// started by Madoguchi).
    pub fn close(&self) -> anyhow::Result<()> {
        self.catalog.close();
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
const CHECK_AAD: &[u8] = b"madoguchi-master-key-check-v1";

/// The master key at `path`, if it is the catalog's: a catalog that already holds
/// keys is never met with a new master key made on the spot (a command run with
/// the wrong `--state-dir` against the real catalog wrapped a tenant's keys under a
/// stray key no `serve` could open), nor with another one.
async fn master_key(catalog: &Catalog, path: &std::path::Path) -> anyhow::Result<FileKeyProvider> {
    let c = catalog.client().await?;
    let check: Option<Vec<u8>> = c
        .query_opt("SELECT wrapped FROM master_key_check", &[])
        .await?
        .map(|r| r.get(0));
    // A catalog from before the check: one of its wrapped keys, if it has any.
    let sample = c
        .query_opt(
            "SELECT tenant_id, purpose, version, wrapped FROM tenant_keys LIMIT 1",
            &[],
        )
        .await?;
    let wrong_key = || {
        anyhow::anyhow!(
            "マスターキー {} はこのカタログの鍵ではありません。--state-dir（MADOGUCHI_STATE_DIR）が正しいか確かめてください / the master key {} is not the one this catalog's keys are wrapped with; check --state-dir",
            path.display(),
            path.display()
        )
    };
    if !path.exists() && (check.is_some() || sample.is_some()) {
        anyhow::bail!(
            "マスターキー {} がありません。このカタログの鍵は別のマスターキーで保護されています。--state-dir（MADOGUCHI_STATE_DIR）が正しいか確かめてください / no master key at {}, but this catalog holds keys wrapped with one; check --state-dir",
            path.display(),
            path.display()
        );
    }
    let keys = FileKeyProvider::load_or_create(path)?;
    if let Some(wrapped) = check {
        keys.unwrap(&wrapped, CHECK_AAD).map_err(|_| wrong_key())?;
        return Ok(keys);
    }
    if let Some(r) = sample {
        let version = u32::try_from(r.get::<_, i32>(2)).unwrap_or(0);
        let aad = DataKey::wrap_aad(&r.get(0), r.get(1), version);
        keys.unwrap(&r.get::<_, Vec<u8>>(3), &aad)
            .map_err(|_| wrong_key())?;
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
