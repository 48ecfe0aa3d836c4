//! Settings: command-line flags, `MADOGUCHI_*` environment variables and an
//! optional `madoguchi.toml` in the state directory, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// How tenant connections are pooled.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections all tenant pools together may hold open (the global budget).
    pub budget: usize,
    /// Connections one tenant's pool may hold.
    pub per_tenant: usize,
    /// Requests one tenant may have in progress at once; more wait their turn in
    /// order (up to `wait`). Kept near the core count, so that a flood aimed at one
    /// municipality cannot occupy every core while others wait for CPU; while other
    /// tenants are being served, one tenant gets one fewer.
    pub tenant_active: usize,
    /// How long a request waits for a connection before it gets 503.
    pub wait: Duration,
    /// Idle connections and pools older than this are closed.
    pub idle: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            budget: 60,
            per_tenant: 8,
            tenant_active: std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            wait: Duration::from_secs(2),
            idle: Duration::from_secs(300),
        }
    }
}

/// Everything a command needs to reach the platform's state.
#[derive(Debug, Clone)]
pub struct Settings {
    pub state_dir: PathBuf,
    /// Admin connection URL of an external cluster; `None` runs the embedded one.
    pub database_url: Option<String>,
    /// PEM certificates of CAs trusted for that cluster besides the system's store
    /// (a managed database's own CA); only with `sslmode=require` in the URL.
    pub database_ca: Option<PathBuf>,
    /// Name of the catalog (control) database in the cluster.
    pub catalog_db: String,
    pub pool: PoolSettings,
    /// How often the host cache is reloaded even without a notification.
    pub cache_refresh: Duration,
    /// Proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub limits: RateLimits,
    /// Mail to applicants; `None` leaves it queued in each tenant's outbox.
    pub mail: Option<MailSettings>,
    /// When, after start, the mail deliverer first visits every tenant's outbox
    /// (then daily): mail left queued by an earlier run goes out then.
    pub mail_sweep_after: Duration,
    /// A client connection with no request in progress for this long is closed.
    pub connection_idle: Duration,
    /// PEM certificates of CAs trusted for identity providers (本人確認) besides the
    /// system's store.
    pub identity_ca: Option<PathBuf>,
    /// Identity providers may be on loopback or private addresses (a provider inside
    /// LGWAN or the city's own network); otherwise only the internet is reached.
    pub identity_allow_private_networks: bool,
    /// The operator's help desk (ヘルプデスク) for municipalities' administrators:
    /// telephone, hours, address, as the staff manual shows it.
    pub helpdesk: Option<std::sync::Arc<str>>,
    /// ClamAV's daemon, to scan attached files with before they are kept.
    pub clamd: Option<crate::scan::Clamd>,
}

/// Where mail leaves: an SMTP relay (or, for the demo and training, a directory)
/// and the sender address.
#[derive(Clone)]
pub struct MailSettings {
    pub way: MailWay,
    /// The sender's address; the display name is the municipality's.
    pub from: String,
}

#[derive(Clone)]
pub enum MailWay {
    Relay {
        /// `smtp://host[:port]` (plain, for a relay on the same host or segment),
        /// `smtp://user:password@host:587?tls=required` (STARTTLS) or
        /// `smtps://user:password@host:465` (TLS from the start).
        url: zeroize::Zeroizing<String>,
        /// PEM certificates of CAs trusted for the relay besides the system's store.
        ca: Option<PathBuf>,
    },
    /// Each message written to this directory as a `.eml` file and never sent: the
    /// demo's and a training site's mail, read there instead of in a mailbox.
    Files(PathBuf),
}

impl MailSettings {
    /// Mail through the relay at `url`.
    pub fn relay(url: &str, from: &str, ca: Option<PathBuf>) -> Self {
        Self {
            way: MailWay::Relay {
                url: zeroize::Zeroizing::new(url.to_owned()),
                ca,
            },
            from: from.to_owned(),
        }
    }
}

impl std::fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let way = match &self.way {
            MailWay::Relay { .. } => "relay".to_owned(),
            MailWay::Files(dir) => format!("files in {}", dir.display()),
        };
        f.debug_struct("MailSettings")
            .field("way", &way)
            .field("from", &self.from)
            .finish()
    }
}

/// Request rates allowed (0 turns a limit off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Citizens' form POSTs (pages and the final submit) per minute, per tenant and
    /// client address, after a burst of [`RateLimits::submit_burst`].
    pub submit_per_minute: u32,
    pub submit_burst: u32,
    /// The same for requests through the LGWAN listener, where a whole city hall
    /// reaches us from one address (an internal survey answered by all its staff at
    /// once): off by default there (0), the municipality's ceiling still applying.
    pub lgwan_submit_per_minute: u32,
    /// Requests per second one tenant may receive in all, after a burst of twice that:
    /// a flood aimed at one municipality is turned away before it costs anything.
    pub tenant_per_second: u32,
    /// Submissions a minute to one form above which proof of work switches itself
    /// on for ten minutes (0: never by itself).
    pub pow_spike_per_minute: u32,
    /// How long a refusal for the tenant ceiling is held before it is sent (see
    /// [`crate::front::limits::TenantCeiling`]); zero sends it at once.
    pub ceiling_delay: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            submit_per_minute: 60,
            submit_burst: 30,
            lgwan_submit_per_minute: 0,
            tenant_per_second: 300,
            pow_spike_per_minute: crate::tenant::forms::pow::SPIKE_PER_MINUTE,
            ceiling_delay: Duration::from_secs(1),
        }
    }
}

impl Settings {
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            database_url: None,
            database_ca: None,
            catalog_db: "madoguchi".to_owned(),
            pool: PoolSettings::default(),
            cache_refresh: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            limits: RateLimits::default(),
            mail: None,
            mail_sweep_after: Duration::from_secs(60),
            connection_idle: crate::front::conn::IDLE,
            identity_ca: None,
            identity_allow_private_networks: false,
            helpdesk: None,
            clamd: None,
        }
    }
}

/// The optional `madoguchi.toml` in the state directory. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub listen: Option<SocketAddr>,
    pub ops_listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub database_ca: Option<PathBuf>,
    pub catalog_db: Option<String>,
    pub pool_budget: Option<usize>,
    pub pool_per_tenant: Option<usize>,
    pub tenant_active: Option<usize>,
    pub pool_wait_ms: Option<u64>,
    pub pool_idle_secs: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_listen: Option<SocketAddr>,
    pub lgwan_listen: Option<SocketAddr>,
    /// Addresses or networks, as `--trusted-proxy` takes them.
    pub trusted_proxies: Option<Vec<String>>,
    pub submit_per_minute: Option<u32>,
    pub submit_burst: Option<u32>,
    pub lgwan_submit_per_minute: Option<u32>,
    pub tenant_per_second: Option<u32>,
    pub pow_spike_per_minute: Option<u32>,
    pub ceiling_delay_ms: Option<u64>,
    pub connection_idle_secs: Option<u64>,
    pub smtp_url: Option<String>,
    pub mail_from: Option<String>,
    pub smtp_ca: Option<PathBuf>,
    pub mail_dir: Option<PathBuf>,
    pub identity_ca: Option<PathBuf>,
    pub identity_allow_private_networks: Option<bool>,
    pub helpdesk: Option<String>,
    pub clamd: Option<String>,
}

impl FileSettings {
    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join("madoguchi.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// A trusted proxy as configured: a network (`10.0.0.0/8`) or one address
/// (`127.0.0.1`, `::1`). `from` names the setting in the message.
pub fn proxy_net(text: &str, from: &str) -> anyhow::Result<ipnet::IpNet> {
    let t = text.trim();
    t.parse::<ipnet::IpNet>()
        .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .with_context(|| format!("{from} {t:?} is not an address or CIDR"))
}

#[cfg(test)]
mod tests {
    use super::{proxy_net, FileSettings};

    #[test]
    fn trusted_proxies_in_the_file_are_written_as_on_the_command_line() {
        let file: FileSettings =
            toml::from_str(r#"trusted_proxies = ["127.0.0.1", "::1", "10.0.0.0/8"]"#)
                .unwrap_or_else(|e| panic!("{e}"));
        let nets: Vec<String> = file
            .trusted_proxies
            .iter()
            .flatten()
            .map(|t| proxy_net(t, "trusted_proxies").map(|n| n.to_string()))
            .collect::<anyhow::Result<_>>()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(nets, ["127.0.0.1/32", "::1/128", "10.0.0.0/8"]);
        let wrong = match proxy_net("proxy.example.jp", "trusted_proxies") {
            Ok(n) => panic!("took {n}"),
            Err(e) => e.to_string(),
        };
        assert!(wrong.contains("proxy.example.jp"), "{wrong}");
    }
}
