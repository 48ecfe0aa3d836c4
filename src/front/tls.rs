//! TLS for the public listener: rustls with the ring provider, TLS 1.2 and 1.3 only,
//! forward-secret AEAD suites only (the only kind rustls implements), HTTP/2 and
//! HTTP/1.1 by ALPN, and the certificate reloaded from its files when they change
//! (checked every few seconds and on SIGHUP), without a restart. A bad new file is
//! logged and the previous certificate stays in use. The certificate in use gives its
//! expiry to a gauge, so an alert warns before it runs out.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use prometheus_client::metrics::gauge::Gauge;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where the certificate chain and its key are (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn mtimes(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&files.cert)?, m(&files.key)?))
}

/// Reads and checks a certificate chain and its private key.
pub fn load(files: &TlsFiles) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading certificate {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", files.cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no certificate",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading private key {}", files.key.display()))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .context("unsupported private key")?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match()
        .context("the private key does not belong to the certificate")?;
    Ok(Arc::new(ck))
}

/// When the chain's first (the server's own) certificate stops being valid, in seconds
/// since the Unix epoch; `None` when it cannot be read as X.509.
pub fn not_after(ck: &CertifiedKey) -> Option<i64> {
    use x509_cert::der::Decode;
    let leaf = ck.cert.first()?;
    let cert = x509_cert::Certificate::from_der(leaf.as_ref()).ok()?;
    i64::try_from(
        cert.tbs_certificate
            .validity
            .not_after
            .to_unix_duration()
            .as_secs(),
    )
    .ok()
}

/// Hands rustls the current certificate; [`ReloadingCert::reload_if_changed`] swaps it.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<Loaded>,
    /// The current certificate's expiry (see [`not_after`]); 0 if unreadable.
    expiry: Gauge,
}

/// The certificate in use and the modification times of the files it came from.
type Loaded = (Arc<CertifiedKey>, Option<(SystemTime, SystemTime)>);

impl ReloadingCert {
    /// `expiry` is set to the expiry of every certificate put in use.
    pub fn new(files: TlsFiles, expiry: Gauge) -> anyhow::Result<Arc<Self>> {
        let stamp = mtimes(&files);
        let ck = load(&files)?;
        expiry.set(not_after(&ck).unwrap_or(0));
        Ok(Arc::new(Self {
            files,
            current: RwLock::new((ck, stamp)),
            expiry,
        }))
    }

    /// Reloads when either file changed; returns whether a new certificate is in use.
    pub fn reload_if_changed(&self, force: bool) -> bool {
        let stamp = mtimes(&self.files);
        let unchanged = self.current.read().map(|c| c.1 == stamp).unwrap_or(false);
        if unchanged && !force {
            return false;
        }
        match load(&self.files) {
            Ok(ck) => {
                self.expiry.set(not_after(&ck).unwrap_or(0));
                if let Ok(mut c) = self.current.write() {
                    *c = (ck, stamp);
                }
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate loaded");
                true
            }
            Err(e) => {
                // Remember the stamp so a broken file is reported once, not every tick.
                if let Ok(mut c) = self.current.write() {
                    c.1 = stamp;
                }
                tracing::error!(
                    error = format!("{e:#}"),
                    "TLS certificate not reloaded; the previous one stays in use"
                );
                false
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c.0))
    }
}

/// The server configuration: TLS 1.3 and 1.2, ALPN h2 then http/1.1.
pub fn server_config(cert: Arc<ReloadingCert>) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Our order of suites (ChaCha20 / AES-GCM, TLS 1.3 first), not the client's.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// Checks the files every `every` and on SIGHUP, for as long as the server runs.
pub async fn watch(cert: Arc<ReloadingCert>, every: Duration) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let force = match hup.as_mut() {
            Some(h) => tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = h.recv() => true,
            },
            None => {
                tokio::time::sleep(every).await;
                false
            }
        };
        cert.reload_if_changed(force);
    }
}

/// A local certificate authority and a certificate for `hosts`, for the demo and
/// tests: `DIR/tls/ca.pem` (to trust), `DIR/tls/server.pem` and `server.key` (0600).
/// Existing files are kept if they cover the same hosts.
pub fn local_ca(dir: &Path, hosts: &[String]) -> anyhow::Result<TlsFiles> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir)?;
    let files = TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    let hosts_file = dir.join("hosts.txt");
    let wanted = hosts.join("\n");
    if files.cert.exists()
        && files.key.exists()
        && std::fs::read_to_string(&hosts_file).is_ok_and(|h| h == wanted)
    {
        return Ok(files);
    }
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Madoguchi local CA (demo only)");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    ca_params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    // Browsers accept at most 398 days for a server certificate.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(397);
    params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map_or("localhost", String::as_str),
    );
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(&files.cert, cert.pem())?;
    let _ = std::fs::remove_file(&files.key);
    crate::control::keys::write_secret(&files.key, key.serialize_pem().trim_end())?;
    std::fs::write(&hosts_file, wanted)?;
    Ok(files)
}
