//! Host → tenant: an in-memory copy of the catalog's host table, reloaded when the
//! catalog announces a change (LISTEN/NOTIFY) and on a timer as a fallback.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use crate::catalog::{Catalog, TenantState};

/// What routing needs to know about a tenant.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: Uuid,
    pub slug: Arc<str>,
    pub name: Arc<str>,
    pub state: TenantState,
    /// The newest version of its data key: a runtime built with an older one is
    /// stale (a rotation happened meanwhile).
    pub data_key: u32,
}

/// The host table, swapped whole on every reload, and the operators' notices not
/// yet over (read with it).
#[derive(Debug, Default)]
pub struct HostCache {
    map: RwLock<Arc<HashMap<String, Route>>>,
    notices: RwLock<Arc<Vec<crate::control::notices::Notice>>>,
}

impl HostCache {
    /// Exact match on a lookup key (see [`crate::domain::HostName::lookup_key`]).
    pub fn lookup(&self, key: &str) -> Option<Route> {
        self.snapshot().get(key).cloned()
    }

    pub fn snapshot(&self) -> Arc<HashMap<String, Route>> {
        match self.map.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// The texts of the notices to show now.
    pub fn notices_now(&self) -> Vec<String> {
        let all = match self.notices.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        };
        let now = time::OffsetDateTime::now_utc();
        all.iter()
            .filter(|n| n.shown_at(now))
            .map(|n| n.body.clone())
            .collect()
    }

    pub async fn reload(&self, catalog: &Catalog) -> anyhow::Result<()> {
        let c = catalog.client().await?;
        // The notices after the hosts, and never in their way: a catalog that cannot
        // give them (restored from before they existed) keeps the last ones read.
        let notices = c.query(crate::control::notices::CURRENT_SQL, &[]).await;
        let rows = c
            .query(
                "SELECT h.host, t.id, t.slug, t.name, t.state,
                        (SELECT coalesce(max(k.version), 0) FROM tenant_keys k WHERE k.tenant_id = t.id AND k.purpose = 'data')
                   FROM tenant_hosts h JOIN tenants t ON t.id = h.tenant_id",
                &[],
            )
            .await?;
        let mut map = HashMap::with_capacity(rows.len());
        for r in rows {
            let state: String = r.get(4);
            map.insert(
                r.get::<_, String>(0),
                Route {
                    id: r.get(1),
                    slug: Arc::from(r.get::<_, String>(2)),
                    name: Arc::from(r.get::<_, String>(3)),
                    state: state.parse()?,
                    data_key: u32::try_from(r.get::<_, i32>(5))?,
                },
            );
        }
        let map = Arc::new(map);
        match self.map.write() {
            Ok(mut g) => *g = map,
            Err(p) => *p.into_inner() = map,
        }
        match notices {
            Ok(rows) => {
                let notices = Arc::new(
                    rows.iter()
                        .map(crate::control::notices::from_row)
                        .collect::<Vec<_>>(),
                );
                match self.notices.write() {
                    Ok(mut g) => *g = notices,
                    Err(p) => *p.into_inner() = notices,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the operators' notices failed; the last ones read stay")
            }
        }
        Ok(())
    }
}

/// Keeps `cache` current until the task is dropped: listens for catalog changes on
/// its own connection, reloads on each (coalescing bursts) and every `refresh`;
/// reconnects after a lost connection. `on_reload` runs after every reload.
pub async fn keep_fresh(
    cache: Arc<HostCache>,
    catalog: Catalog,
    listen_config: tokio_postgres::Config,
    tls: crate::pg_tls::PgTls,
    refresh: Duration,
    on_reload: impl Fn(&HashMap<String, Route>) + Send + Sync + 'static,
) {
    loop {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let connected = tls.connect(&listen_config).await;
        let (client, mut messages) = match connected {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "catalog listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let pump = tokio::spawn(async move {
            while let Some(Ok(msg)) = messages.next().await {
                if let AsyncMessage::Notification(_) = msg {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            }
        });
        if let Err(e) = client.batch_execute("LISTEN madoguchi_catalog").await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            pump.abort();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match cache.reload(&catalog).await {
                Ok(()) => on_reload(&cache.snapshot()),
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "reloading the host table failed")
                }
            }
            tokio::select! {
                msg = rx.recv() => {
                    if msg.is_none() {
                        tracing::warn!("catalog listener connection lost; reconnecting");
                        break;
                    }
                    while rx.try_recv().is_ok() {}
                }
                () = tokio::time::sleep(refresh) => {}
            }
        }
        pump.abort();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
