//! Everything a command needs, opened once: the cluster (embedded or external),
//! the master key, the catalog.

use std::sync::{Arc, Mutex};

use anyhow::Context;

use crate::catalog::Catalog;
use crate::config::Settings;
use crate::control::Cluster;
use crate::crypto::{FileKeyProvider, KeyProvider};
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
        let keys: Arc<dyn KeyProvider> = Arc::new(FileKeyProvider::load_or_create(
            &settings.state_dir.join("master.key"),
        )?);
        let (admin, admin_url, embedded) = match &settings.database_url {
            Some(url) => {
                let cfg: tokio_postgres::Config = url
                    .parse()
                    .context("MADOGUCHI_DATABASE_URL is not a valid PostgreSQL URL")?;
                (cfg, url.clone(), None)
            }
            None => {
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
