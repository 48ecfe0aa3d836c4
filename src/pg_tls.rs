//! How this process reaches PostgreSQL: in the clear (the embedded cluster's unix
//! socket, or an external cluster whose URL asks for no TLS), or over TLS with the
//! server's certificate and host name checked, when the database URL says
//! `sslmode=require` (or `verify-ca` / `verify-full`, which mean the same here).
//!
//! Every connection of the service goes through [`PgTls`]: the catalog's pool, the
//! tenants' pools, the control plane's admin connections, the route listener, and
//! the PostgreSQL client programs (`pg_dump`, `pg_restore`, `psql`) through
//! [`PgTls::client_env`].

use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The messages of a connection (notices, notifications) until it ends; polling
/// them drives the connection.
pub type Messages = Pin<Box<dyn Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Send>>;

/// TLS to PostgreSQL, or none.
#[derive(Clone)]
pub struct PgTls {
    verified: Option<Verified>,
}

#[derive(Clone)]
struct Verified {
    make: MakeRustlsConnect,
    /// What libpq's programs trust: the operator's CA file, else the system's store.
    root_cert: String,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls")
            .field("tls", &self.verified.is_some())
            .finish()
    }
}

/// Where Debian, Ubuntu and Alpine keep the system's CA certificates in one file,
/// then Fedora and RHEL; libpq before 16 knows no `sslrootcert=system`.
const SYSTEM_BUNDLES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

impl PgTls {
    /// No TLS (the embedded cluster, tests of other things).
    pub fn plain() -> Self {
        Self { verified: None }
    }

    /// TLS when `config` requires it, trusting the system's CA store and `extra_ca`.
    /// A CA file without `sslmode=require` is refused rather than ignored.
    pub fn for_config(config: &Config, extra_ca: Option<&Path>) -> anyhow::Result<Self> {
        if config.get_ssl_mode() != SslMode::Require {
            if let Some(ca) = extra_ca {
                anyhow::bail!(
                    "database_ca ({}) is set, but the database URL does not ask for TLS: add sslmode=require to it",
                    ca.display()
                );
            }
            return Ok(Self::plain());
        }
        let roots = crate::tls_client::roots(extra_ca, "the database CA file")?;
        let make = MakeRustlsConnect::new(crate::tls_client::config(roots)?);
        let root_cert = match extra_ca {
            Some(ca) => std::path::absolute(ca)?.to_string_lossy().into_owned(),
            None => SYSTEM_BUNDLES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .map_or_else(|| "system".to_owned(), |p| p.to_string_lossy().into_owned()),
        };
        Ok(Self {
            verified: Some(Verified { make, root_cert }),
        })
    }

    /// Whether connections are made over TLS.
    pub fn is_tls(&self) -> bool {
        self.verified.is_some()
    }

    /// Connects as `config` says.
    pub async fn connect(
        &self,
        config: &Config,
    ) -> Result<(Client, Messages), tokio_postgres::Error> {
        match &self.verified {
            None => {
                let (client, conn) = config.connect(NoTls).await?;
                Ok((client, messages(conn)))
            }
            Some(v) => {
                let (client, conn) = config.connect(v.make.clone()).await?;
                Ok((client, messages(conn)))
            }
        }
    }

    /// Connects and drives the connection on a task of its own, which ends with it.
    pub async fn connect_spawned(
        &self,
        config: &Config,
    ) -> Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        let (client, messages) = self.connect(config).await?;
        Ok((client, tokio::spawn(drive(messages))))
    }

    /// Connects over a stream already open to `host` (the tenant pools open it against
    /// the connection budget first); with TLS, the certificate must name `host`.
    pub async fn connect_raw<S>(
        &self,
        config: &Config,
        stream: S,
        host: &str,
    ) -> Result<(Client, Messages), tokio_postgres::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match &self.verified {
            None => {
                let (client, conn) = config.connect_raw(stream, NoTls).await?;
                Ok((client, messages(conn)))
            }
            Some(v) => {
                let mut make = v.make.clone();
                let tls = match MakeTlsConnect::<S>::make_tls_connect(&mut make, host) {
                    Ok(tls) => tls,
                    Err(never) => match never {},
                };
                let (client, conn) = config.connect_raw(stream, tls).await?;
                Ok((client, messages(conn)))
            }
        }
    }

    /// Sends `token`'s cancel request over a stream already open to `host`. (A boxed
    /// future of owned parts: spawned, it must be `Send` for every lifetime.)
    pub fn cancel_raw<S>(
        &self,
        token: tokio_postgres::CancelToken,
        stream: S,
        host: &str,
    ) -> futures::future::BoxFuture<'static, Result<(), tokio_postgres::Error>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match &self.verified {
            None => Box::pin(async move { token.cancel_query_raw(stream, NoTls).await }),
            Some(v) => {
                let mut make = v.make.clone();
                let tls = match MakeTlsConnect::<S>::make_tls_connect(&mut make, host) {
                    Ok(tls) => tls,
                    Err(never) => match never {},
                };
                Box::pin(async move { token.cancel_query_raw(stream, tls).await })
            }
        }
    }

    /// A deadpool manager for `config`.
    pub fn manager(&self, config: Config) -> deadpool_postgres::Manager {
        match &self.verified {
            None => deadpool_postgres::Manager::new(config, NoTls),
            Some(v) => deadpool_postgres::Manager::new(config, v.make.clone()),
        }
    }

    /// The environment a libpq program (`pg_dump`, `pg_restore`, `psql`) needs to
    /// connect as this process does: with TLS, the certificate and host name checked.
    pub fn client_env(&self) -> Vec<(&'static str, String)> {
        match &self.verified {
            None => Vec::new(),
            Some(v) => vec![
                ("PGSSLMODE", "verify-full".to_owned()),
                ("PGSSLROOTCERT", v.root_cert.clone()),
            ],
        }
    }
}

fn messages<S, T>(mut conn: tokio_postgres::Connection<S, T>) -> Messages
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(futures::stream::poll_fn(move |cx| conn.poll_message(cx)))
}

/// Drives a connection until it ends.
pub async fn drive(mut messages: Messages) {
    use futures::StreamExt;
    while let Some(m) = messages.next().await {
        if m.is_err() {
            break;
        }
    }
}

/// `url` with libpq's `sslmode=verify-ca` or `verify-full` read as `require`, which
/// here always checks the certificate and the host name (tokio-postgres knows only
/// `disable`, `prefer` and `require`).
pub fn normalise_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let query: Vec<&str> = query
        .split('&')
        .map(|pair| match pair {
            "sslmode=verify-ca" | "sslmode=verify-full" => "sslmode=require",
            other => other,
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_are_read_as_require() {
        for mode in ["verify-ca", "verify-full", "require"] {
            let url = normalise_url(&format!(
                "postgresql://a:b@db.example/postgres?application_name=x&sslmode={mode}"
            ));
            let cfg: Config = url.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(cfg.get_ssl_mode(), SslMode::Require, "{mode}");
            assert_eq!(cfg.get_application_name(), Some("x"));
        }
        assert_eq!(normalise_url("postgresql://a@h/db"), "postgresql://a@h/db");
    }

    #[test]
    fn a_ca_file_without_tls_is_refused() {
        let cfg: Config = "postgresql://a:b@db.example/postgres"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let err = PgTls::for_config(&cfg, Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("sslmode=require"), "{err}");
        assert!(!PgTls::for_config(&cfg, None)
            .map(|t| t.is_tls())
            .unwrap_or(true));
    }
}
