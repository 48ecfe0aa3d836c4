//! TLS to PostgreSQL: a cluster that refuses every connection without TLS serves a
//! tenant's whole round (provisioning, the citizen's submission through the tenant
//! pool, the route listener, a backup and its drill by `pg_dump` / `pg_restore`,
//! `db psql`) when the URL says `sslmode=verify-full` and `database_ca` names the
//! CA; without the CA, or under a name the certificate does not carry, nothing
//! connects.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use madoguchi::control::backup::{self, DirStore};
use madoguchi::embedded_pg::{ClusterOptions, EmbeddedPg, ADMIN_USER};

use crate::harness::{unique, TestEnv};

/// A cluster of its own listening on 127.0.0.1 with TLS only; stopped when dropped.
struct TlsCluster {
    pg: EmbeddedPg,
    port: u16,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = self.pg.stop();
    }
}

impl TlsCluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let opts = ClusterOptions {
            unsafe_fast: true,
            max_connections: Some(100),
            shared_buffers_mib: None,
        };
        let mut pg = EmbeddedPg::ensure(dir.path(), &opts).unwrap();
        pg.stop().unwrap();
        let data = dir.path().join("pg/data");
        let owner = std::fs::metadata(&data).unwrap();
        let files = madoguchi::front::tls::local_ca(&dir.path().join("tls"), &["localhost".into()])
            .unwrap();
        for (from, to) in [(&files.cert, "server.crt"), (&files.key, "server.key")] {
            let to = data.join(to);
            std::fs::copy(from, &to).unwrap();
            std::os::unix::fs::chown(&to, Some(owner.uid()), Some(owner.gid())).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
        );
        append(&data.join("postgresql.conf"), &conf);
        // Before initdb's own lines, which would let a connection without TLS in.
        let hba = std::fs::read_to_string(data.join("pg_hba.conf")).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("hostnossl all all 0.0.0.0/0 reject\nhostssl all all 127.0.0.1/32 scram-sha-256\n{hba}"),
        )
        .unwrap();
        drop(pg);
        let pg = EmbeddedPg::ensure(dir.path(), &opts).unwrap();
        Self {
            pg,
            port,
            ca: dir.path().join("tls/ca.pem"),
            _dir: dir,
        }
    }

    fn url(&self, host: &str, sslmode: &str) -> String {
        format!(
            "postgresql://{ADMIN_USER}:{}@{host}:{}/postgres?sslmode={sslmode}",
            self.pg.password(),
            self.port
        )
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_to_a_cluster_that_requires_tls_is_verified_tls() {
    let cluster = TlsCluster::start();

    // Refused: without TLS (the cluster's own rule, so what follows really is TLS),
    // without the CA, and under a name the certificate does not carry.
    let refusals = [
        (cluster.url("localhost", "disable"), None, "no encryption"),
        (
            cluster.url("localhost", "verify-full"),
            None,
            "UnknownIssuer",
        ),
        (
            cluster.url("127.0.0.1", "verify-full"),
            Some(cluster.ca.as_path()),
            "not valid for name",
        ),
    ];
    for (url, ca, why) in refusals {
        let err = TestEnv::external(url.clone(), ca)
            .await
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains(why), "{url} {ca:?}: {err}");
    }
    // A CA file with a URL that asks for no TLS is a mistake, not ignored.
    let err = TestEnv::external(cluster.url("localhost", "prefer"), Some(&cluster.ca))
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(err.contains("sslmode=require"), "{err}");

    // With the CA: the whole round, through a URL whose first host answers nothing
    // (each connection, pg_dump's included, goes on to the next, and checks the
    // certificate against the name of the host it reached).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // (And asking for a primary, as a URL naming a primary and its standbys would:
    // pg_dump and pg_restore are asked the same.)
    let url = cluster
        .url("localhost", "verify-full")
        .replace("@localhost:", &format!("@127.0.0.1:{dead},localhost:"))
        + "&target_session_attrs=read-write";
    let env = TestEnv::external(url, Some(&cluster.ca))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(env.platform.cluster.tls().is_tls());
    let t = env.tenant(&unique("pgtls"), "小樽市", "012033").await;
    let server = env.serve().await;
    crate::forms::one_application(&env, &server, &t).await;

    // The tenant's pooled connections and the route listener are TLS.
    let conn = env.platform.cluster.admin().await.unwrap();
    let rows = conn
        .client
        .query(
            "SELECT a.usename::text, a.application_name, s.ssl, s.version \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let seen = |pred: &dyn Fn(&tokio_postgres::Row) -> bool| rows.iter().any(pred);
    assert!(seen(&|r| r.get::<_, String>(0) == t.role), "{rows:?}");
    assert!(
        seen(&|r| r.get::<_, String>(1).starts_with("madoguchi-listen/")),
        "{rows:?}"
    );
    for r in &rows {
        assert!(
            r.get::<_, bool>(2),
            "{:?} without TLS",
            r.get::<_, String>(1)
        );
    }
    // A statement is cancelled over TLS as the front tier cancels one that ran out of
    // time: a cancel request of its own, over a stream to the host it reaches.
    let sleeper = env.platform.cluster.admin().await.unwrap();
    let token = sleeper.client.cancel_token();
    let sleeping = tokio::spawn(async move {
        sleeper
            .client
            .batch_execute("SELECT pg_sleep(60)")
            .await
            .map_err(|e| {
                e.as_db_error()
                    .map(|d| d.message().to_owned())
                    .unwrap_or_else(|| e.to_string())
            })
    });
    // A cancel that comes before the statement has begun is ignored by PostgreSQL:
    // sent once it runs.
    let watch = env.platform.cluster.admin().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let running: i64 = watch
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(60)'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if running > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sleep never began"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", cluster.port))
        .await
        .unwrap();
    env.platform
        .cluster
        .tls()
        .cancel_raw(token, stream, "localhost")
        .await
        .unwrap();
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), sleeping)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.contains("canceling statement"), "{err}");
    server.shutdown().await;

    // pg_dump and pg_restore (libpq) check the certificate too: with another CA in
    // the file they are given, the backup fails (libpq's default would have taken
    // any certificate).
    let store = DirStore::new(env.state.path());
    let other = tempfile::tempdir().unwrap();
    madoguchi::front::tls::local_ca(other.path(), &["localhost".into()]).unwrap();
    let ours = std::fs::read(&cluster.ca).unwrap();
    std::fs::copy(other.path().join("ca.pem"), &cluster.ca).unwrap();
    let err = backup::run(&env.platform, &store, &t)
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    // OpenSSL says "EVP lib": the other CA has the same name, so the signature fails.
    assert!(
        err.contains("pg_dump") && err.contains("SSL error"),
        "{err}"
    );
    std::fs::write(&cluster.ca, ours).unwrap();
    backup::run(&env.platform, &store, &t)
        .await
        .unwrap_or_else(|e| panic!("backup: {e:#}"));
    let drill = backup::drill(&env.platform, &store, &t)
        .await
        .unwrap_or_else(|e| panic!("drill: {e:#}"));
    assert!(drill.ok, "{:?}", drill.tables);

    // `db psql`, from the settings file.
    std::fs::write(
        env.state.path().join("madoguchi.toml"),
        format!(
            "database_url = \"{}\"\ndatabase_ca = \"{}\"\ncatalog_db = \"{}\"\n",
            cluster.url("localhost", "verify-full"),
            cluster.ca.display(),
            env.platform.settings.catalog_db
        ),
    )
    .unwrap();
    let (ok, out, err) = crate::cli::madoguchi(
        env.state.path(),
        &[
            "db",
            "psql",
            "--reason",
            "試験",
            "--",
            "-At",
            "-c",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "t");
    // `db url`: a URL libpq checks the certificate and the name with, by itself.
    let (ok, url, err) =
        crate::cli::madoguchi(env.state.path(), &["db", "url", "--reason", "試験"]);
    assert!(ok, "{err}");
    let url = url.trim();
    assert!(
        url.contains("sslmode=verify-full") && url.contains("sslrootcert="),
        "{url}"
    );
    let out = std::process::Command::new("psql")
        .args([
            url,
            "-At",
            "-c",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ])
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
    drop(env);
}
