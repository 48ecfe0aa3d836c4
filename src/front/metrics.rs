//! Prometheus metrics of the front tier, served on the ops listener.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub tenant: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub tenant: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ])
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<TenantLabels, Histogram, fn() -> Histogram>,
    pub pool_connections: Family<PoolLabels, Gauge>,
    pub tenant_requests: Family<PoolLabels, Gauge>,
    pub budget_in_use: Gauge,
    pub budget_limit: Gauge,
    pub tenants: Family<StateLabels, Gauge>,
    pub catalog_up: Gauge,
    pub backup_last: Family<TenantLabels, Gauge>,
    pub drill_ok: Family<TenantLabels, Gauge>,
    pub drill_last: Family<TenantLabels, Gauge>,
    pub audit_ok: Family<TenantLabels, Gauge>,
    pub audit_checked: Family<TenantLabels, Gauge>,
    pub drill_seconds: Family<TenantLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub tlog_size: Gauge,
    pub definitions_kept: Gauge,
    pub definitions_budget: Gauge,
    pub database_size: Family<TenantLabels, Gauge>,
    pub erasure_certificates: Gauge,
    pub mail: Family<OutcomeLabels, Counter>,
    /// When the HTTPS certificate in use expires (0 without `--tls-cert`).
    pub tls_not_after: Gauge,
    /// The last minute per tenant, for the ops console.
    pub recent: super::recent::Recent,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("madoguchi");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<TenantLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let pool_connections = Family::<PoolLabels, Gauge>::default();
        let tenant_requests = Family::<PoolLabels, Gauge>::default();
        let budget_in_use = Gauge::default();
        let budget_limit = Gauge::default();
        let tenants = Family::<StateLabels, Gauge>::default();
        let catalog_up = Gauge::default();
        let backup_last = Family::<TenantLabels, Gauge>::default();
        let drill_ok = Family::<TenantLabels, Gauge>::default();
        let drill_last = Family::<TenantLabels, Gauge>::default();
        let audit_ok = Family::<TenantLabels, Gauge>::default();
        let audit_checked = Family::<TenantLabels, Gauge>::default();
        let drill_seconds =
            Family::<TenantLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let tlog_size = Gauge::default();
        let definitions_kept = Gauge::default();
        let definitions_budget = Gauge::default();
        let database_size = Family::<TenantLabels, Gauge>::default();
        let erasure_certificates = Gauge::default();
        let mail = Family::<OutcomeLabels, Counter>::default();
        let tls_not_after = Gauge::default();
        registry.register(
            "mail_attempts",
            "Mail to applicants tried, by outcome: sent, retrying (refused for now) or given_up",
            mail.clone(),
        );
        registry.register(
            "attachment_scans",
            "Attached files scanned by clamd, by outcome: clean, found (refused) or error (refused: clamd could not say)",
            crate::scan::scans().clone(),
        );
        // Every outcome from the start, so that the first error after a restart is an
        // increase the alert sees.
        for outcome in ["clean", "found", "error"] {
            drop(crate::scan::scans().get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            }));
        }
        registry.register(
            "db_errors",
            "Requests refused because a database was read-only, full, restarting or unreachable",
            crate::error::db_errors().clone(),
        );
        registry.register(
            "tenant_database_size_bytes",
            "Size of each tenant's database",
            database_size.clone(),
        );
        registry.register(
            "tls_certificate_not_after_timestamp_seconds",
            "When the HTTPS certificate in use expires (0: no HTTPS listener)",
            tls_not_after.clone(),
        );
        registry.register(
            "erasure_certificates",
            "Erasure certificates issued",
            erasure_certificates.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests per tenant and status class",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency per tenant",
            latency.clone(),
        );
        registry.register(
            "tenant_pool_connections",
            "Open connections per tenant pool (idle or in use)",
            pool_connections.clone(),
        );
        registry.register(
            "tenant_requests",
            "Requests per tenant in progress (running) and waiting for a turn (waiting); a tenant runs at most --tenant-active at once",
            tenant_requests.clone(),
        );
        registry.register(
            "db_budget_in_use",
            "Tenant connections open, all pools together",
            budget_in_use.clone(),
        );
        registry.register(
            "db_budget_limit",
            "Global tenant connection budget",
            budget_limit.clone(),
        );
        registry.register("tenants", "Tenants per state", tenants.clone());
        registry.register(
            "catalog_up",
            "1 when the catalog database answers",
            catalog_up.clone(),
        );
        registry.register(
            "backup_last_success_timestamp_seconds",
            "Unix time of each active or suspended tenant's newest backup (before the first: when it was provisioned)",
            backup_last.clone(),
        );
        registry.register(
            "drill_ok",
            "1 when the tenant's latest restore drill matched, 0 when it did not",
            drill_ok.clone(),
        );
        registry.register(
            "drill_last_timestamp_seconds",
            "Unix time of each active or suspended tenant's latest restore drill (before the first: when it was provisioned)",
            drill_last.clone(),
        );
        registry.register(
            "audit_chain_ok",
            "1 when the tenant's operation log still reached the head the platform witnessed and chained on intact at the latest check, 0 when not",
            audit_ok.clone(),
        );
        registry.register(
            "audit_checked_timestamp_seconds",
            "Unix time of the latest check of the tenant's operation log",
            audit_checked.clone(),
        );
        registry.register(
            "drill_duration_seconds",
            "How long the tenant's latest restore drill took",
            drill_seconds.clone(),
        );
        registry.register(
            "tlog_size",
            "Entries in the erasure transparency log",
            tlog_size.clone(),
        );
        let kept = crate::tenant::forms::store::definitions();
        registry.register(
            "form_definitions_kept_bytes",
            "Published form definitions kept in memory, all municipalities together (their JSON length)",
            definitions_kept.clone(),
        );
        registry.register(
            "form_definitions_budget_bytes",
            "The most form definitions kept in memory may weigh",
            definitions_budget.clone(),
        );
        registry.register(
            "form_definitions_read_from_database",
            "Form pages and submissions whose published definition was not kept in memory and was read from the database",
            kept.missed().clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            latency,
            pool_connections,
            tenant_requests,
            budget_in_use,
            budget_limit,
            tenants,
            catalog_up,
            backup_last,
            drill_ok,
            drill_last,
            audit_ok,
            audit_checked,
            drill_seconds,
            tlog_size,
            definitions_kept,
            definitions_budget,
            database_size,
            erasure_certificates,
            mail,
            tls_not_after,
            recent: super::recent::Recent::default(),
        }
    }

    pub fn observe(&self, tenant: &str, status: u16, elapsed: Duration) {
        self.observe_as(
            tenant,
            &format!("{}xx", status / 100),
            status >= 500,
            elapsed,
        );
    }

    /// A suspended or provisioning tenant's maintenance page (503 by design, not a
    /// failure): counted under `status="maintenance"`, so that the error-rate alert
    /// and the console's error counts do not fire for a tenant suspended on purpose.
    pub fn observe_maintenance(&self, tenant: &str, elapsed: Duration) {
        self.observe_as(tenant, "maintenance", false, elapsed);
    }

    fn observe_as(&self, tenant: &str, class: &str, failed: bool, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                tenant: tenant.to_owned(),
                status: class.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&TenantLabels {
                tenant: tenant.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
        self.recent.observe(tenant, failed, elapsed);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(reg) = self.registry.lock() {
            if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
                tracing::error!(error = %e, "encoding metrics failed");
            }
        }
        out
    }
}
