//! Test harness: one private PostgreSQL cluster per test run (stopped when the run
//! ends), a catalog template migrated once and copied per test, and helpers to
//! provision tenants and serve them on free ports.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use madoguchi::catalog::{quote_ident, Catalog, TenantRecord};
use madoguchi::config::Settings;
use madoguchi::control::provision::{provision, TenantSpec};
use madoguchi::embedded_pg::{ClusterOptions, EmbeddedPg};
use madoguchi::front::Server;
use madoguchi::platform::Platform;
use tokio::sync::OnceCell;

struct Shared {
    pg: Mutex<EmbeddedPg>,
    dir: PathBuf,
}

static CLUSTER: OnceLock<Shared> = OnceLock::new();
static TEMPLATE: OnceCell<()> = OnceCell::const_new();
const TEMPLATE_DB: &str = "catalog_template";

extern "C" fn stop_cluster() {
    if let Some(shared) = CLUSTER.get() {
        if let Ok(mut pg) = shared.pg.lock() {
            let _ = pg.stop();
        }
        let _ = std::fs::remove_dir_all(&shared.dir);
    }
}

fn shared() -> &'static Shared {
    CLUSTER.get_or_init(|| {
        let filter = std::env::var("MADOGUCHI_LOG").unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
        let dir = std::env::temp_dir().join(format!("madoguchi-it-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = ClusterOptions {
            unsafe_fast: true,
            max_connections: Some(300),
            shared_buffers_mib: None,
        };
        let pg = EmbeddedPg::ensure(&dir, &opts)
            .unwrap_or_else(|e| panic!("starting the test cluster: {e:#}"));
        // The cluster outlives every test; stop it when the test process exits.
        #[allow(unsafe_code)]
        // SAFETY: registers a plain extern "C" function without arguments.
        unsafe {
            libc::atexit(stop_cluster);
        }
        Shared {
            pg: Mutex::new(pg),
            dir,
        }
    })
}

/// Admin URL of the shared test cluster (maintenance database).
pub fn admin_url() -> String {
    shared()
        .pg
        .lock()
        .map(|pg| pg.admin_url("postgres"))
        .unwrap_or_default()
}

/// A fresh platform: its own catalog database (copied from the template), its own
/// master key, on the shared cluster.
pub struct TestEnv {
    pub platform: Arc<Platform>,
    pub state: tempfile::TempDir,
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    /// A connection to `t`'s own database, as the control plane opens it.
    pub async fn tenant_conn(&self, t: &TenantRecord) -> madoguchi::control::cluster::Conn {
        self.platform
            .cluster
            .connect_tenant(&self.platform.catalog, self.platform.keys.as_ref(), t)
            .await
            .unwrap()
    }

    pub async fn with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let url = admin_url();
        let maintenance: tokio_postgres::Config = url.parse().unwrap_or_else(|e| panic!("{e}"));
        TEMPLATE
            .get_or_init(|| async {
                let c = Catalog::open(
                    &maintenance,
                    &madoguchi::pg_tls::PgTls::plain(),
                    TEMPLATE_DB,
                )
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
                c.close();
            })
            .await;
        let catalog_db = unique("cat_");
        let (client, conn) = maintenance
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let task = tokio::spawn(conn);
        let sql = format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(&catalog_db),
            quote_ident(TEMPLATE_DB)
        );
        let mut tries = 0;
        // The template's last connections may still be closing.
        while let Err(e) = client.batch_execute(&sql).await {
            tries += 1;
            assert!(tries < 50, "copying the catalog template: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(client);
        let _ = task.await;

        let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut settings = Settings::new(state.path().to_path_buf());
        settings.database_url = Some(url);
        settings.catalog_db = catalog_db;
        // Tests send many submissions from one address; the rate limits have tests of their own.
        settings.limits.submit_per_minute = 0;
        settings.limits.tenant_per_second = 0;
        settings.limits.pow_spike_per_minute = 0;
        tweak(&mut settings);
        let platform = Platform::open(settings)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        Self {
            platform: Arc::new(platform),
            state,
        }
    }

    /// A platform on a cluster of its own (`url`, with `database_ca` = `ca`), with a
    /// new catalog and state directory.
    pub async fn external(url: String, ca: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let state = tempfile::tempdir()?;
        let mut settings = Settings::new(state.path().to_path_buf());
        settings.database_url = Some(url);
        settings.database_ca = ca.map(std::path::Path::to_path_buf);
        settings.catalog_db = unique("cat_");
        settings.limits.submit_per_minute = 0;
        let platform = Platform::open(settings).await?;
        Ok(Self {
            platform: Arc::new(platform),
            state,
        })
    }

    /// Provisions a tenant served on `<slug>.test`.
    pub async fn tenant(&self, slug: &str, name: &str, code: &str) -> TenantRecord {
        let spec = TenantSpec::parse(slug, name, code, &[format!("{slug}.test")])
            .unwrap_or_else(|e| panic!("{e}"));
        provision(&self.platform, &spec)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub async fn serve(&self) -> Server {
        let any = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        Server::start(&self.platform, any, any)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }
}

/// An HTTP client that sends every `*.test` request to the given server.
pub fn client_for(server: &Server, hosts: &[&str]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64);
    for h in hosts {
        b = b.resolve(h, server.bound.public);
    }
    b.build().unwrap_or_else(|e| panic!("{e}"))
}

pub fn url(server: &Server, host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", server.bound.public.port())
}

/// Sends a request with an arbitrary Host header straight to the server.
pub async fn get_with_host(server: &Server, host: &str, path: &str) -> (u16, String) {
    let c = reqwest::Client::new();
    let resp = c
        .get(format!("http://{}{path}", server.bound.public))
        .header("host", host)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// An admin connection to any database of the shared cluster.
pub async fn admin_client(db: &str) -> tokio_postgres::Client {
    let mut cfg: tokio_postgres::Config = admin_url().parse().unwrap_or_else(|e| panic!("{e}"));
    cfg.dbname(db);
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(conn);
    client
}

/// The text of `/metrics` on an operators' listener.
pub async fn ops_metrics(ops: impl std::fmt::Display) -> String {
    reqwest::get(format!("http://{ops}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("reading /metrics: {e}"))
}

/// Publishes the sample form (粗大ごみ) in `t`; returns its public path (`/f/…`).
pub async fn publish_sample(env: &TestEnv, t: &TenantRecord) -> String {
    madoguchi::control::tenant_admin::import_form(
        &env.platform,
        t,
        include_str!("../../src/control/samples/bulky-waste.json"),
        "環境課",
        true,
    )
    .await
    .unwrap_or_else(|e| panic!("publishing the sample form: {e:#}"))
}

/// Commits `hold` (a transaction holding a row lock) once two backends of
/// `watcher`'s database wait on a lock running a statement that begins with
/// `statement`, so the two race for certain; whether they did within 10 s.
pub async fn commit_when_two_wait(
    watcher: &tokio_postgres::Client,
    hold: tokio_postgres::Transaction<'_>,
    statement: &str,
) -> bool {
    let mut both = false;
    for _ in 0..200 {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND wait_event_type = 'Lock'
                    AND starts_with(query, $1)",
                &[&statement],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .get(0);
        if waiting == 2 {
            both = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    hold.commit().await.unwrap_or_else(|e| panic!("{e}"));
    both
}

/// A private CA (as a relay or an identity provider inside LGWAN or a city's network
/// may have) written to `dir/ca.pem`, and a TLS acceptor with a certificate for
/// 127.0.0.1 that it signed.
pub fn loopback_tls(dir: &std::path::Path) -> (tokio_rustls::TlsAcceptor, std::path::PathBuf) {
    let files = madoguchi::front::tls::local_ca(dir, &["127.0.0.1".to_owned()]).unwrap();
    let config = madoguchi::front::tls::server_config(
        madoguchi::front::tls::ReloadingCert::new(files, Default::default()).unwrap(),
    )
    .unwrap();
    (tokio_rustls::TlsAcceptor::from(config), dir.join("ca.pem"))
}
