//! The PostgreSQL cluster as the control plane sees it: an admin role that can
//! create databases and roles, and connection settings for each tenant's own role.

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config};
use zeroize::Zeroizing;

use crate::catalog::{Catalog, TenantRecord};
use crate::crypto::KeyProvider;
use crate::pg_tls::PgTls;

/// How long a service connection may stay idle inside a transaction.
pub const IDLE_IN_TRANSACTION: &str = "5min";
/// The service's session settings (see [`Cluster::tenant_config`]).
const SERVICE_OPTIONS: &str = "-c jit=off -c idle_in_transaction_session_timeout=5min";

/// Admin access to one cluster.
#[derive(Clone)]
pub struct Cluster {
    admin: Config,
    tls: PgTls,
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
/// The `application_name` of the service's connections to tenant databases (its
/// pools), told apart from the control plane's (`CONTROL_APPLICATION`).
pub const SERVICE_APPLICATION: &str = "madoguchi";
/// The `application_name` of the control plane's connections to tenant databases.
pub const CONTROL_APPLICATION: &str = "madoguchi-control";

pub struct Conn {
    pub client: Client,
    _task: JoinHandle<()>,
}

impl Cluster {
    /// `admin` connects as the admin role; its database is used for maintenance.
    /// Every connection to the cluster uses `tls`.
    pub fn new(admin: Config, tls: PgTls) -> Self {
        Self { admin, tls }
    }

    /// How connections reach the cluster.
    pub fn tls(&self) -> &PgTls {
        &self.tls
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

    /// Settings for a tenant's own role on its own database, for the service. A
    /// transaction left open and idle (a bug, a hung client) ends after
    /// [`IDLE_IN_TRANSACTION`]: it would hold its locks, and the API's paging waits for
    /// every transaction still open. The longest a service transaction waits between
    /// statements is one mail's SMTP exchange (`mail::SEND_TIMEOUT`).
    pub fn tenant_config(&self, rec: &TenantRecord, password: &str) -> Config {
        let mut c = self.admin.clone();
        c.user(&rec.role)
            .password(password.as_bytes())
            .dbname(&rec.database)
            .application_name(SERVICE_APPLICATION)
            .options(SERVICE_OPTIONS);
        c
    }

    /// Connects with `config` (one of this cluster's, from the methods above).
    pub async fn connect(&self, config: &Config) -> anyhow::Result<Conn> {
        let (client, task) = self.tls.connect_spawned(config).await?;
        Ok(Conn {
            client,
            _task: task,
        })
    }

    pub async fn admin(&self) -> anyhow::Result<Conn> {
        self.connect(&self.admin)
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
        // The control plane writes (migrations, forms, tokens) even while a final
        // export keeps the tenant's requests from writing (`final_export::quiesce`).
        let mut config = self.tenant_config(rec, &pw);
        config
            .options("-c jit=off -c default_transaction_read_only=off")
            .application_name(CONTROL_APPLICATION);
        self.connect(&config).await.with_context(|| {
            format!(
                "connecting to database {} as role {}",
                rec.database, rec.role
            )
        })
    }
}

/// How often autovacuum visits each database, for a cluster of `databases`: the
/// launcher starts a worker in one database every `autovacuum_naptime ÷ databases`,
/// and each start (a new process that connects and reads that database's catalogs)
/// costs CPU whether or not anything needs vacuuming. PostgreSQL's default of 60 s
/// suits a few databases; with one per municipality it would start about 30 workers
/// a second at 1,788, and those starts showed as the slowest 1–2 % of every tenant's
/// requests. Steps keep the visits to at most 3 databases a second; the setting
/// changes only when a step is crossed (a change reloads every server process).
pub fn autovacuum_naptime_secs(databases: u64) -> u64 {
    match databases {
        0..=180 => 60,
        181..=360 => 120,
        361..=900 => 300,
        _ => 600,
    }
}

impl Cluster {
    /// [`tune_autovacuum_on`] over a new admin connection.
    pub async fn tune_autovacuum(&self) {
        match self.admin().await {
            Ok(admin) => tune_autovacuum_on(&admin.client).await,
            Err(e) => tracing::warn!(error = format!("{e:#}"), "tuning autovacuum_naptime failed"),
        }
    }
}

/// Sets `autovacuum_naptime` for the number of databases in the cluster now
/// ([`autovacuum_naptime_secs`]), if it differs. `admin` is a connection as the
/// admin role. Never fails the caller (provisioning, erasure, start-up): a failure
/// is logged, and where the role may not change settings the warning names the
/// value to set by hand.
pub async fn tune_autovacuum_on(admin: &Client) {
    if let Err(e) = try_tune_autovacuum(admin).await {
        tracing::warn!(error = format!("{e:#}"), "tuning autovacuum_naptime failed");
    }
}

async fn try_tune_autovacuum(admin: &Client) -> anyhow::Result<u64> {
    let row = admin
        .query_one(
            "SELECT count(*), (SELECT setting::bigint FROM pg_settings WHERE name = 'autovacuum_naptime') FROM pg_database",
            &[],
        )
        .await?;
    let (databases, now): (i64, i64) = (row.get(0), row.get(1));
    let want = autovacuum_naptime_secs(u64::try_from(databases).unwrap_or(0));
    if u64::try_from(now).ok() == Some(want) {
        return Ok(want);
    }
    // (ALTER SYSTEM may not share a statement batch: that is a transaction.)
    let set = match admin
        .batch_execute(&format!("ALTER SYSTEM SET autovacuum_naptime = '{want}s'"))
        .await
    {
        Ok(()) => admin.batch_execute("SELECT pg_reload_conf()").await,
        Err(e) => Err(e),
    };
    match set {
        Ok(()) => {
            tracing::info!(databases, seconds = want, "autovacuum_naptime set");
            Ok(want)
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            tracing::warn!(
                databases,
                "cannot set autovacuum_naptime here; set it to {want}s on the cluster"
            );
            Ok(want)
        }
        Err(e) => Err(e.into()),
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

#[cfg(test)]
mod tests {
    use super::autovacuum_naptime_secs;

    #[test]
    fn autovacuum_visits_at_most_three_databases_a_second_up_to_national_scale() {
        let mut last = 0;
        for n in 1..=1800u64 {
            let secs = autovacuum_naptime_secs(n);
            assert!(secs >= last, "shorter round for more databases at {n}");
            assert!(
                n as f64 / secs as f64 <= 3.0,
                "{n} databases every {secs} s is more than 3 a second"
            );
            last = secs;
        }
        assert_eq!(
            autovacuum_naptime_secs(3),
            60,
            "PostgreSQL's default when small"
        );
        assert_eq!(autovacuum_naptime_secs(1790), 600);
    }
}
