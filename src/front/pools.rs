//! Per-tenant connection pools under one global connection budget.
//!
//! Each tenant gets a small deadpool pool, created on first use, connecting as that
//! tenant's own role. Every open connection, idle or busy, holds one permit of a
//! global semaphore, returned when the connection closes; so the connections all
//! pools hold together never exceed the budget. A tenant that needs a connection
//! while the budget is spent closes an idle connection of another tenant, or waits
//! (bounded by the request's wait limit, after which it gets 503). Idle connections
//! and idle pools are closed after a configurable time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::{Connect, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::future::BoxFuture;
use tokio::sync::{OnceCell, Semaphore};
use tokio_postgres::{Client, Config, NoTls};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::config::PoolSettings;
use crate::control::cluster::tenant_password;
use crate::control::Cluster;
use crate::crypto::{DataKey, FieldCipher, KeyProvider};

/// One tenant's pool and field cipher.
pub struct TenantRuntime {
    pub pool: Pool,
    pub cipher: Arc<FieldCipher>,
    pub slug: Arc<str>,
    /// Turns for requests in progress (see [`PoolSettings::tenant_active`]); the
    /// semaphore queues waiters in arrival order.
    pub active: Arc<Semaphore>,
    /// Requests waiting for a turn now.
    pub waiting: std::sync::atomic::AtomicUsize,
    last_used: Mutex<Instant>,
}

impl TenantRuntime {
    /// Waits (up to `wait`) for one of the tenant's turns; `None` when none came.
    pub async fn turn(&self, wait: Duration) -> Option<tokio::sync::OwnedSemaphorePermit> {
        use std::sync::atomic::Ordering::Relaxed;
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Relaxed);
            }
        }
        self.waiting.fetch_add(1, Relaxed);
        let _waiting = Waiting(&self.waiting);
        tokio::time::timeout(wait, Arc::clone(&self.active).acquire_owned())
            .await
            .ok()?
            .ok()
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }
    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }
}

type Slot = Arc<OnceCell<Arc<TenantRuntime>>>;

struct Inner {
    settings: PoolSettings,
    budget: Arc<Semaphore>,
    runtimes: Mutex<HashMap<Uuid, Slot>>,
    cluster: Cluster,
    catalog: Catalog,
    keys: Arc<dyn KeyProvider>,
}

/// The registry of tenant pools.
#[derive(Clone)]
pub struct TenantPools {
    inner: Arc<Inner>,
}

/// Pool figures for metrics.
#[derive(Debug, Clone)]
pub struct PoolStat {
    pub slug: Arc<str>,
    pub size: usize,
    pub idle: usize,
    /// Requests in progress and waiting for a turn.
    pub running: usize,
    pub waiting: usize,
}

impl TenantPools {
    pub fn new(
        settings: PoolSettings,
        cluster: Cluster,
        catalog: Catalog,
        keys: Arc<dyn KeyProvider>,
    ) -> Self {
        let budget = Arc::new(Semaphore::new(settings.budget));
        Self {
            inner: Arc::new(Inner {
                settings,
                budget,
                runtimes: Mutex::new(HashMap::new()),
                cluster,
                catalog,
                keys,
            }),
        }
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    /// Connections open now, over all tenants.
    pub fn budget_in_use(&self) -> usize {
        self.inner
            .settings
            .budget
            .saturating_sub(self.inner.budget.available_permits())
    }

    /// The tenant's runtime, creating it (one lookup of its keys in the catalog) on first use.
    pub async fn runtime(&self, tenant: Uuid) -> anyhow::Result<Arc<TenantRuntime>> {
        let slot = {
            let mut map = self
                .inner
                .runtimes
                .lock()
                .map_err(|_| anyhow::anyhow!("pool registry poisoned"))?;
            Arc::clone(map.entry(tenant).or_default())
        };
        let rt = slot.get_or_try_init(|| self.build(tenant)).await?;
        rt.touch();
        Ok(Arc::clone(rt))
    }

    async fn build(&self, tenant: Uuid) -> anyhow::Result<Arc<TenantRuntime>> {
        let inner = &self.inner;
        let rec = inner
            .catalog
            .tenant_by_id(tenant)
            .await?
            .context("tenant not in the catalog")?;
        let password = tenant_password(&inner.catalog, inner.keys.as_ref(), &rec).await?;
        let mut keys = Vec::new();
        for k in inner.catalog.keys(tenant, "data").await? {
            keys.push((
                k.version,
                DataKey::unwrap(inner.keys.as_ref(), &k.wrapped, &tenant, k.version)?,
            ));
        }
        let cipher = Arc::new(FieldCipher::new(rec.crypto_id, keys)?);
        let config = inner.cluster.tenant_config(&rec, &password);
        let connect = BudgetedConnect {
            budget: Arc::clone(&inner.budget),
            registry: Arc::downgrade(&self.inner),
            tenant,
        };
        let mgr = Manager::from_connect(
            config,
            connect,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(inner.settings.per_tenant)
            .runtime(Runtime::Tokio1)
            .build()
            .context("building tenant pool")?;
        Ok(Arc::new(TenantRuntime {
            pool,
            cipher,
            slug: Arc::from(rec.slug),
            active: Arc::new(Semaphore::new(inner.settings.tenant_active)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
        }))
    }

    /// Closes the pools of tenants not in `keep` (suspended, removed).
    pub fn retain_tenants(&self, keep: impl Fn(&Uuid) -> bool) {
        if let Ok(mut map) = self.inner.runtimes.lock() {
            map.retain(|id, slot| {
                let k = keep(id);
                if !k {
                    if let Some(rt) = slot.get() {
                        rt.pool.close();
                    }
                }
                k
            });
        }
    }

    /// Closes one tenant's pool (after its database failed in a way that may stick
    /// to open connections, e.g. read-only); the next request opens fresh ones.
    pub fn reset(&self, tenant: &Uuid) {
        self.retain_tenants(|id| id != tenant);
    }

    /// Closes connections idle longer than the idle limit, and pools that have
    /// served nothing for that long.
    pub fn evict_idle(&self) {
        let idle = self.inner.settings.idle;
        if let Ok(mut map) = self.inner.runtimes.lock() {
            map.retain(|_, slot| {
                let Some(rt) = slot.get() else { return true };
                rt.pool.retain(|_, m| m.last_used() < idle);
                if rt.idle_for() >= idle && rt.pool.status().size == 0 {
                    rt.pool.close();
                    return false;
                }
                true
            });
        }
    }

    pub fn stats(&self) -> Vec<PoolStat> {
        let Ok(map) = self.inner.runtimes.lock() else {
            return Vec::new();
        };
        map.values()
            .filter_map(|slot| slot.get())
            .map(|rt| {
                let s = rt.pool.status();
                PoolStat {
                    slug: Arc::clone(&rt.slug),
                    size: s.size,
                    idle: idle_count(&rt.pool),
                    running: self
                        .inner
                        .settings
                        .tenant_active
                        .saturating_sub(rt.active.available_permits()),
                    waiting: rt.waiting.load(std::sync::atomic::Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Closes every pool (at shutdown).
    pub fn close_all(&self) {
        self.retain_tenants(|_| false);
    }
}

impl Inner {
    /// Closes one idle connection, preferring the tenant (other than `asking`) with the
    /// most idle connections, and taking one of `asking`'s own only when no other
    /// tenant has any (its own waiting requests may have left one idle while this
    /// creation was already under way). Returns whether one was closed.
    fn close_one_idle(&self, asking: Uuid) -> bool {
        let Ok(map) = self.runtimes.lock() else {
            return false;
        };
        let victim = map
            .iter()
            .filter_map(|(id, slot)| {
                slot.get()
                    .map(|rt| (*id != asking, idle_count(&rt.pool), rt))
            })
            .filter(|(_, idle, _)| *idle > 0)
            .max_by_key(|(other, idle, _)| (*other, *idle));
        let Some((_, _, rt)) = victim else {
            return false;
        };
        let mut closed = false;
        rt.pool.retain(|_, _| {
            if closed {
                true
            } else {
                closed = true;
                false
            }
        });
        closed
    }
}

/// Connections sitting idle in a pool (`Status::available` counts waiting callers
/// against them, so it can read 0 while connections are idle).
fn idle_count(pool: &Pool) -> usize {
    let mut n = 0;
    pool.retain(|_, _| {
        n += 1;
        true
    });
    n
}

/// How long a closed connection still counts against the budget: the server-side
/// backend needs a moment to exit after the socket closes, and the budget is a
/// promise about what the cluster sees, not only about what this process holds.
const CLOSE_GRACE: Duration = Duration::from_millis(100);

/// A budget permit that is returned [`CLOSE_GRACE`] after its connection closed
/// (whether the connection ended or its task was aborted).
struct LingeringPermit(Option<tokio::sync::OwnedSemaphorePermit>);

impl Drop for LingeringPermit {
    fn drop(&mut self) {
        if let Some(permit) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        tokio::time::sleep(CLOSE_GRACE).await;
                        drop(permit);
                    });
                }
                // Shutting down: nothing is waiting for the permit any more.
                Err(_) => drop(permit),
            }
        }
    }
}

/// Opens tenant connections only against a permit of the global budget; the permit
/// lives as long as the connection does, and a little longer.
struct BudgetedConnect {
    budget: Arc<Semaphore>,
    registry: Weak<Inner>,
    tenant: Uuid,
}

impl Connect for BudgetedConnect {
    fn connect(
        &self,
        pg_config: &Config,
    ) -> BoxFuture<'_, Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>> {
        let pg_config = pg_config.clone();
        Box::pin(async move {
            let permit = loop {
                if let Ok(p) = Arc::clone(&self.budget).try_acquire_owned() {
                    break p;
                }
                if let Some(reg) = self.registry.upgrade() {
                    reg.close_one_idle(self.tenant);
                }
                // A closed connection returns its permit as soon as its task ends; the
                // pool's create timeout bounds this loop.
                let waited = tokio::time::timeout(
                    Duration::from_millis(25),
                    Arc::clone(&self.budget).acquire_owned(),
                )
                .await;
                if let Ok(Ok(p)) = waited {
                    break p;
                }
            };
            let (client, connection) = pg_config.connect(NoTls).await?;
            let permit = LingeringPermit(Some(permit));
            let task = tokio::spawn(async move {
                let _ = connection.await;
                drop(permit);
            });
            Ok((client, task))
        })
    }
}
