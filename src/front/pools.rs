//! Per-tenant connection pools under one global connection budget.
//!
//! Each tenant gets a small deadpool pool, created on first use, connecting as that
//! tenant's own role. Every open connection, idle or busy, holds one permit of a
//! global semaphore, returned when the connection closes; so the connections all
//! pools hold together never exceed the budget. A tenant that needs a connection
//! while the budget is spent closes an idle connection of another tenant, or waits
//! (bounded by the request's wait limit, after which it gets 503). A permit comes
//! back only when the server has closed its end of the connection. Idle connections
//! and idle pools are closed after a configurable time.
//!
//! Each tenant also has turns: requests it may run at once, so connections it uses.
//! They number at most `tenant_active` (about the core count) and, when many tenants
//! are busy, the budget divided by their number ([`TenantPools::rebalance`]), so
//! that with more busy tenants than connections each keeps to one instead of taking
//! connections from the others.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::{Connect, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OnceCell, Semaphore};
use tokio_postgres::{Client, Config};
use uuid::Uuid;
use zeroize::Zeroizing;

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
    /// The way to cancel what one of the pool's connections runs.
    pub cancel: Arc<CancelWay>,
    /// Turns for requests in progress (see [`PoolSettings::tenant_active`]); the
    /// semaphore queues waiters in arrival order. A request uses one connection at
    /// a time, so the turns also bound the connections the tenant needs.
    pub active: Arc<Semaphore>,
    /// How many turns `active` holds in all (changed by [`TenantPools::rebalance`]).
    turns: Mutex<usize>,
    /// Requests waiting for a turn now.
    pub waiting: std::sync::atomic::AtomicUsize,
    last_used: Mutex<Instant>,
}

impl TenantRuntime {
    /// Turns in all now.
    pub fn turns(&self) -> usize {
        self.turns.lock().map_or(0, |t| *t)
    }

    /// Gives the tenant `target` turns: adds them, or takes back those not in use
    /// now (the rest on a later call).
    fn set_turns(&self, target: usize) {
        let Ok(mut turns) = self.turns.lock() else {
            return;
        };
        if target > *turns {
            self.active.add_permits(target - *turns);
            *turns = target;
        } else if target < *turns {
            *turns -= self.active.forget_permits(*turns - target);
        }
    }

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

    /// [`Self::runtime`], built again if it was built with an older data key than
    /// `data_key` (the newest, as the catalog says): after a rotation, nothing is
    /// sealed or looked up with the key it replaced.
    pub async fn runtime_under(
        &self,
        tenant: Uuid,
        data_key: u32,
    ) -> anyhow::Result<Arc<TenantRuntime>> {
        let rt = self.runtime(tenant).await?;
        if rt.cipher.current_version() == data_key {
            return Ok(rt);
        }
        drop(rt);
        self.reset(&tenant);
        let rt = self.runtime(tenant).await?;
        if rt.cipher.current_version() < data_key {
            anyhow::bail!("the tenant's newest data key is not in the catalog yet");
        }
        Ok(rt)
    }

    /// A connection from the tenant's pool for background work (mail, housekeeping),
    /// waited for no longer than a request would: a database host that drops packets
    /// must not hold the single mail task for the kernel's connect timeout.
    pub async fn background_connection(
        &self,
        rt: &TenantRuntime,
    ) -> anyhow::Result<deadpool_postgres::Object> {
        let wait = self.inner.settings.wait;
        let timeouts = deadpool_postgres::Timeouts {
            wait: Some(wait),
            create: Some(wait),
            recycle: Some(wait),
        };
        rt.pool
            .timeout_get(&timeouts)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Shares the budget between the tenants that were served in the last
    /// [`RECENT`]: each gets as many turns (requests at once, so connections in use)
    /// as the budget divided by their number, at least one and at most
    /// `tenant_active` (one fewer when others are served too) and `per_tenant`.
    /// A lone busy tenant gets every turn; when more
    /// tenants are busy than the budget covers generously, each keeps to one
    /// connection and its further requests wait for it, instead of closing another
    /// tenant's connection only to have that tenant reopen it a moment later.
    pub fn rebalance(&self) {
        let runtimes: Vec<Arc<TenantRuntime>> = match self.inner.runtimes.lock() {
            Ok(map) => map.values().filter_map(|s| s.get().cloned()).collect(),
            Err(_) => return,
        };
        let recent = runtimes
            .iter()
            .filter(|rt| rt.idle_for() < RECENT)
            .count()
            .max(1);
        let share = self.inner.share(recent);
        for rt in runtimes {
            rt.set_turns(share);
            // Idle connections beyond the share go back to the budget for others.
            let mut excess = rt.pool.status().size.saturating_sub(share);
            if excess > 0 {
                rt.pool.retain(|_, _| {
                    let keep = excess == 0;
                    excess = excess.saturating_sub(1);
                    keep
                });
            }
        }
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
        // A new tenant starts with its share as if every tenant with a pool were busy
        // (cheap: no walk over them on the request path); the next rebalance, within
        // a second, corrects it.
        let pools = inner.runtimes.lock().map_or(1, |m| m.len().max(1));
        let turns = inner.share(pools);
        let config = inner.cluster.tenant_config(&rec, &password);
        let connect = BudgetedConnect {
            budget: Arc::clone(&inner.budget),
            registry: Arc::downgrade(&self.inner),
            tenant,
            newer_password: Mutex::new(None),
            tls: inner.cluster.tls().clone(),
        };
        let cancel = Arc::new(CancelWay {
            config: config.clone(),
            tls: inner.cluster.tls().clone(),
        });
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
            cancel,
            active: Arc::new(Semaphore::new(turns)),
            turns: Mutex::new(turns),
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
                    running: rt.turns().saturating_sub(rt.active.available_permits()),
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

/// Turns each of `busy` tenants gets: the budget divided between them, at least one,
/// at most the pool size and `tenant_active`, and, when any other tenant is being
/// served, one fewer than `tenant_active`: a flood at one municipality then always
/// leaves a core's worth of turns to the others (on 2 cores, one turn each).
fn share(s: &PoolSettings, busy: usize) -> usize {
    let busy = busy.max(1);
    let most = if busy > 1 {
        s.tenant_active.saturating_sub(1)
    } else {
        s.tenant_active
    };
    (s.budget / busy).clamp(1, s.per_tenant.min(most).max(1))
}

impl Inner {
    /// Turns each of `busy` tenants gets (see [`TenantPools::rebalance`]).
    fn share(&self, busy: usize) -> usize {
        share(&self.settings, busy)
    }

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

/// Tenants served within this time count as busy when the budget is shared out.
const RECENT: Duration = Duration::from_secs(10);

/// How long a closing connection waits for the server to close its end: the
/// backend leaves `pg_stat_activity` before it closes its socket, so the end of the
/// stream means the cluster no longer counts it.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Any stream to the server (Unix socket or TCP).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection's stream holding its budget permit. When the connection is done
/// with the stream (after sending Terminate), the permit goes back only once the
/// server has closed its end, so the budget is a promise about what the cluster
/// sees, not only about what this process holds.
struct BudgetedStream {
    io: Box<dyn Io>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl AsyncRead for BudgetedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for BudgetedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Drop for BudgetedStream {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        // Shutting down: nothing is waiting for the permit any more.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut io: Box<dyn Io> = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
        rt.spawn(async move {
            let mut buf = [0u8; 512];
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                // Terminate (if the client has not sent it already) and end our side;
                // the server then ends the backend and closes its side.
                let _ = io.write_all(&[b'X', 0, 0, 0, 4]).await;
                let _ = io.shutdown().await;
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
            drop(permit);
        });
    }
}

/// Stands in for a stream that could not be opened: every read and write fails
/// with the reason, which the handshake reports as a `tokio_postgres::Error`.
struct Unreachable(std::io::ErrorKind, String);

impl Unreachable {
    fn error(&self) -> std::io::Error {
        std::io::Error::new(self.0, self.1.clone())
    }
}

impl AsyncRead for Unreachable {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(self.error()))
    }
}

impl AsyncWrite for Unreachable {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        _: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(self.error()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(self.error()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// How to reach a tenant's database server to cancel what a connection runs.
pub struct CancelWay {
    config: Config,
    tls: crate::pg_tls::PgTls,
}

impl CancelWay {
    /// Asks the server to cancel the statement the connection of `token` runs now
    /// (a connection no longer reused: the caller closed its pool first).
    /// (Boxed: the compiler cannot prove the future `Send` for `tokio::spawn`
    /// otherwise.)
    pub fn cancel(self: &Arc<Self>, token: tokio_postgres::CancelToken) -> BoxFuture<'static, ()> {
        let way = Arc::clone(self);
        Box::pin(async move {
            let done = match open_stream(&way.config).await {
                Ok((stream, host)) => way
                    .tls
                    .cancel_raw(token, stream, &host)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "cancelling a statement that ran out of time failed");
            }
        })
    }
}

/// Opens the stream to the first of the configured hosts that answers; returns it
/// with that host's name (empty for a unix socket), which TLS checks the certificate
/// against.
async fn open_stream(pg_config: &Config) -> std::io::Result<(Box<dyn Io>, String)> {
    use tokio_postgres::config::Host;
    let ports = pg_config.get_ports().to_vec();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no host configured");
    // Owned hosts and names: a future holding borrowed ones across its awaits is not
    // `Send` for every lifetime, which `tokio::spawn` needs (the cancel path spawns it).
    for (i, host) in pg_config.get_hosts().to_vec().into_iter().enumerate() {
        let port = ports
            .get(i)
            .or_else(|| ports.first())
            .copied()
            .unwrap_or(5432);
        let (opened, name): (std::io::Result<Box<dyn Io>>, String) = match host {
            Host::Unix(dir) => (
                tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))
                    .await
                    .map(|s| Box::new(s) as Box<dyn Io>),
                String::new(),
            ),
            Host::Tcp(name) => (
                tokio::net::TcpStream::connect((name.clone(), port))
                    .await
                    .and_then(|s| {
                        s.set_nodelay(true)?;
                        Ok(Box::new(s) as Box<dyn Io>)
                    }),
                name,
            ),
        };
        match opened {
            Ok(s) => return Ok((s, name)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Opens tenant connections only against a permit of the global budget; the permit
/// lives as long as the connection does, and a little longer.
struct BudgetedConnect {
    budget: Arc<Semaphore>,
    registry: Weak<Inner>,
    tenant: Uuid,
    /// The role's password read again after the one the pool was built with was
    /// refused (`tenant rotate-password`); every later connection uses it.
    newer_password: Mutex<Option<Zeroizing<String>>>,
    tls: crate::pg_tls::PgTls,
}

type Connected = Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>;

impl Connect for BudgetedConnect {
    fn connect(&self, pg_config: &Config) -> BoxFuture<'_, Connected> {
        let mut pg_config = pg_config.clone();
        Box::pin(async move {
            if let Some(pw) = self.newer_password.lock().ok().and_then(|p| p.clone()) {
                pg_config.password(pw.as_bytes());
            }
            match self.open(&pg_config).await {
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD) => {
                    // Rotated since: read it again, once.
                    let Some(pw) = self.read_password().await else {
                        return Err(e);
                    };
                    pg_config.password(pw.as_bytes());
                    if let Ok(mut slot) = self.newer_password.lock() {
                        *slot = Some(pw);
                    }
                    self.open(&pg_config).await
                }
                other => other,
            }
        })
    }
}

impl BudgetedConnect {
    /// The tenant's newest database password from the catalog.
    async fn read_password(&self) -> Option<Zeroizing<String>> {
        let inner = self.registry.upgrade()?;
        let rec = inner.catalog.tenant_by_id(self.tenant).await.ok()??;
        match tenant_password(&inner.catalog, inner.keys.as_ref(), &rec).await {
            Ok(pw) => Some(pw),
            Err(e) => {
                tracing::warn!(tenant = %rec.slug, error = %format!("{e:#}"), "reading the database password again");
                None
            }
        }
    }

    async fn open(&self, pg_config: &Config) -> Connected {
        let permit = loop {
            if let Ok(p) = Arc::clone(&self.budget).try_acquire_owned() {
                break p;
            }
            if let Some(reg) = self.registry.upgrade() {
                reg.close_one_idle(self.tenant);
            }
            // A closed connection returns its permit as soon as its task ends; the
            // create timeout every caller passes to the pool bounds this loop.
            let waited = tokio::time::timeout(
                Duration::from_millis(25),
                Arc::clone(&self.budget).acquire_owned(),
            )
            .await;
            if let Ok(Ok(p)) = waited {
                break p;
            }
        };
        let (stream, host) = match open_stream(pg_config).await {
            Ok((io, host)) => (
                BudgetedStream {
                    io,
                    permit: Some(permit),
                },
                host,
            ),
            // The server never saw this connection: the permit goes back now, and
            // the handshake below fails with the reason.
            Err(e) => (
                BudgetedStream {
                    io: Box::new(Unreachable(e.kind(), e.to_string())),
                    permit: None,
                },
                String::new(),
            ),
        };
        let (client, messages) = self.tls.connect_raw(pg_config, stream, &host).await?;
        Ok((client, tokio::spawn(crate::pg_tls::drive(messages))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(budget: usize, per_tenant: usize, tenant_active: usize) -> PoolSettings {
        PoolSettings {
            budget,
            per_tenant,
            tenant_active,
            ..PoolSettings::default()
        }
    }

    #[test]
    fn a_lone_tenant_has_every_turn_and_others_leave_one() {
        // Alone: all of tenant_active.
        assert_eq!(share(&settings(100, 10, 2), 1), 2);
        assert_eq!(share(&settings(100, 10, 8), 1), 8);
        // With another tenant served: one fewer, never below one.
        assert_eq!(share(&settings(100, 10, 2), 2), 1);
        assert_eq!(share(&settings(100, 10, 8), 2), 7);
        assert_eq!(share(&settings(100, 10, 1), 2), 1);
        // Many tenants: the budget divided, at least one.
        assert_eq!(share(&settings(12, 8, 4), 6), 2);
        assert_eq!(share(&settings(40, 8, 4), 200), 1);
        // Never more than a pool holds.
        assert_eq!(share(&settings(100, 3, 8), 1), 3);
    }
}
