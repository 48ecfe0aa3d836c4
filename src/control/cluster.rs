//! The PostgreSQL cluster as the control plane sees it: an admin role that can
//! create databases and roles, and connection settings for each tenant's own role.

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, NoTls};
use zeroize::Zeroizing;

use crate::catalog::{Catalog, TenantRecord};
use crate::crypto::KeyProvider;

/// Admin access to one cluster.
#[derive(Clone)]
pub struct Cluster {
    admin: Config,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("hosts", &self.admin.get_hosts())
            .finish_non_exhaustive()
    }
}

/// A connection and the task that drives it; dropping the client ends the task
/// (the connection says goodbye to the server first).
pub struct Conn {
    pub client: Client,
    _task: JoinHandle<()>,
}

impl Cluster {
    /// `admin` connects as the admin role; its database is used for maintenance.
    pub fn new(admin: Config) -> Self {
        Self { admin }
    }

    /// Admin settings for another database of the cluster.
    pub fn admin_config(&self, dbname: &str) -> Config {
        let mut c = self.admin.clone();
        c.dbname(dbname);
        c
    }

    /// Maintenance settings (the admin's own database).
    pub fn maintenance_config(&self) -> &Config {
        &self.admin
    }

    /// Settings for a tenant's own role on its own database.
    pub fn tenant_config(&self, rec: &TenantRecord, password: &str) -> Config {
        let mut c = self.admin.clone();
        c.user(&rec.role)
            .password(password.as_bytes())
            .dbname(&rec.database)
            .application_name("madoguchi")
            .options("-c jit=off");
        c
    }

    pub async fn connect(config: &Config) -> anyhow::Result<Conn> {
        let (client, conn) = config.connect(NoTls).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            client,
            _task: task,
        })
    }

    pub async fn admin(&self) -> anyhow::Result<Conn> {
        Self::connect(&self.admin)
            .await
            .context("connecting to PostgreSQL as the admin role")
    }

    /// Connects as the tenant's own role to its own database.
    pub async fn connect_tenant(
        &self,
        catalog: &Catalog,
        keys: &dyn KeyProvider,
        rec: &TenantRecord,
    ) -> anyhow::Result<Conn> {
        let pw = tenant_password(catalog, keys, rec).await?;
        Self::connect(&self.tenant_config(rec, &pw))
            .await
            .with_context(|| {
                format!(
                    "connecting to database {} as role {}",
                    rec.database, rec.role
                )
            })
    }
}

/// The tenant role's password, unwrapped from the catalog.
pub async fn tenant_password(
    catalog: &Catalog,
    keys: &dyn KeyProvider,
    rec: &TenantRecord,
) -> anyhow::Result<Zeroizing<String>> {
    let wrapped = catalog.keys(rec.id, "db_password").await?;
    let newest = wrapped
        .last()
        .with_context(|| format!("tenant {} has no database password", rec.slug))?;
    let raw = keys
        .unwrap(&newest.wrapped, &password_aad(&rec.id, newest.version))
        .with_context(|| format!("unwrapping the database password of tenant {}", rec.slug))?;
    Ok(Zeroizing::new(
        String::from_utf8(raw.to_vec()).context("database password is not UTF-8")?,
    ))
}

pub fn password_aad(tenant: &uuid::Uuid, version: u32) -> Vec<u8> {
    crate::crypto::DataKey::wrap_aad(tenant, "db_password", version)
}
