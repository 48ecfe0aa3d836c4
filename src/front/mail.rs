//! Delivers the tenants' outboxes through the platform's SMTP relay.
//!
//! A handler that queued mail says so ([`MailQueue::queued`]); the deliverer then
//! visits that tenant's database at once. A tenant whose rows failed is visited
//! again when its earliest row is due. A minute after start (`mail_sweep_after`),
//! and then daily, a sweep visits every active tenant, so mail queued before a
//! restart (or left by a server that stopped) is not left behind; like the daily operation-log pruning it opens
//! each tenant's pool in turn, one tenant at a time. Connections come from the
//! tenants' own pools, inside the connection budget.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use super::metrics::OutcomeLabels;
use super::pools::TenantPools;
use super::AppState;
use crate::catalog::{Catalog, TenantState};
use crate::tenant::mail::{deliver_due, Letterhead, Mailer, Pass};

/// Tenants with mail waiting, told by the handlers that queued it. Without a
/// deliverer (no relay configured) nothing is kept: the mail waits in the outbox.
#[derive(Default)]
pub struct MailQueue {
    waiting: Mutex<HashSet<Uuid>>,
    wake: Notify,
    /// Set once the deliverer runs.
    delivering: AtomicBool,
}

impl MailQueue {
    /// This tenant's outbox has something new.
    pub fn queued(&self, tenant: Uuid) {
        if !self.delivering.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(tenant);
        }
        self.wake.notify_one();
    }

    /// Whether mail is delivered at all (a relay is configured and its deliverer runs).
    pub fn delivering(&self) -> bool {
        self.delivering.load(Ordering::Relaxed)
    }

    fn take(&self) -> Vec<Uuid> {
        self.waiting
            .lock()
            .map(|mut w| w.drain().collect())
            .unwrap_or_default()
    }
}

/// How links in mail start: the scheme and port people reach the service on.
#[derive(Debug, Clone)]
pub struct LinkBase {
    pub https: bool,
    /// A port other than the scheme's default, if any.
    pub port: Option<u16>,
}

impl LinkBase {
    pub fn status_url(&self, host: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        match self.port {
            Some(p) => format!("{scheme}://{host}:{p}/status"),
            None => format!("{scheme}://{host}/status"),
        }
    }
}

/// The deliverer, to spawn; runs until the task is aborted. Handlers' nudges are
/// kept from the call on, before the task first runs, so none in between is lost
/// (mail queued before the call is found by the first sweep).
pub fn run(
    app: AppState,
    mailer: Mailer,
    links: LinkBase,
    first_sweep: Duration,
) -> impl std::future::Future<Output = ()> {
    app.mail.delivering.store(true, Ordering::Relaxed);
    deliver(app, mailer, links, first_sweep)
}

async fn deliver(app: AppState, mailer: Mailer, links: LinkBase, first_sweep: Duration) {
    let (queue, catalog, pools) = (&app.mail, &app.catalog, &app.pools);
    // When each tenant with rows left is due again.
    let mut later: BTreeMap<Uuid, OffsetDateTime> = BTreeMap::new();
    let mut sweep = tokio::time::interval_at(
        tokio::time::Instant::now() + first_sweep,
        Duration::from_secs(24 * 3600),
    );
    loop {
        let now = OffsetDateTime::now_utc();
        let nap = later
            .values()
            .min()
            .map(|t| (*t - now).try_into().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(300))
            .min(Duration::from_secs(300));
        let mut visit: HashSet<Uuid> = HashSet::new();
        tokio::select! {
            () = queue.wake.notified() => {}
            () = tokio::time::sleep(nap) => {}
            _ = sweep.tick() => match catalog.list_tenants().await {
                Ok(all) => visit.extend(all.iter().filter(|t| t.state == TenantState::Active).map(|t| t.id)),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "mail: cannot list tenants"),
            },
        }
        visit.extend(queue.take());
        let now = OffsetDateTime::now_utc();
        visit.extend(later.iter().filter(|(_, t)| **t <= now).map(|(id, _)| *id));
        for tenant in visit {
            later.remove(&tenant);
            match deliver_tenant(catalog, pools, &mailer, &links, tenant).await {
                Ok(pass) => {
                    let count = |outcome: &str, n: usize| {
                        app.metrics
                            .mail
                            .get_or_create(&OutcomeLabels {
                                outcome: outcome.to_owned(),
                            })
                            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
                    };
                    count("sent", pass.sent);
                    count("retrying", pass.retrying);
                    count("given_up", pass.given_up);
                    if let Some(next) = pass.next_due {
                        later.insert(tenant, next);
                    }
                }
                Err(e) => {
                    tracing::warn!(%tenant, error = format!("{e:#}"), "mail delivery failed; trying again in a minute");
                    later.insert(tenant, OffsetDateTime::now_utc() + Duration::from_secs(60));
                }
            }
        }
    }
}

/// One pass over one tenant's outbox.
async fn deliver_tenant(
    catalog: &Catalog,
    pools: &TenantPools,
    mailer: &Mailer,
    links: &LinkBase,
    tenant: Uuid,
) -> anyhow::Result<Pass> {
    let Some(record) = catalog.tenant_by_id(tenant).await? else {
        return Ok(Pass::default());
    };
    let Some(host) = record
        .hosts
        .first()
        .filter(|_| record.state == TenantState::Active)
    else {
        return Ok(Pass::default());
    };
    let head = Letterhead {
        site: record.name.clone(),
        status_url: links.status_url(host),
    };
    let rt = pools.runtime_under(tenant, record.data_key).await?;
    let mut db = pools.background_connection(&rt).await?;
    let pass = deliver_due(&mut db, &rt.cipher, &head, mailer)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if pass.sent + pass.retrying + pass.given_up > 0 {
        tracing::info!(tenant = %record.slug, sent = pass.sent, retrying = pass.retrying, given_up = pass.given_up, "mail delivered");
    }
    Ok(pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_links_follow_how_people_reach_the_service() {
        let tls = LinkBase {
            https: true,
            port: None,
        };
        assert_eq!(
            tls.status_url("city.example.jp"),
            "https://city.example.jp/status"
        );
        let plain = LinkBase {
            https: false,
            port: Some(8080),
        };
        assert_eq!(
            plain.status_url("chiyoda.localhost"),
            "http://chiyoda.localhost:8080/status"
        );
    }

    #[test]
    fn nudges_are_kept_only_while_a_deliverer_runs() {
        let queue = MailQueue::default();
        let tenant = Uuid::new_v4();
        queue.queued(tenant);
        assert!(queue.take().is_empty(), "kept without a deliverer");
        queue.delivering.store(true, Ordering::Relaxed);
        queue.queued(tenant);
        queue.queued(tenant);
        assert_eq!(queue.take(), vec![tenant]);
        assert!(queue.take().is_empty());
    }
}
