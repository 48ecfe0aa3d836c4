//! TLS as a client (identity providers, PostgreSQL): the certificates trusted are
//! the system's CA store and, where the operator names one, a PEM file of private
//! CAs (a provider inside LGWAN, a managed database's own CA).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The system's CA certificates and those in `extra_ca`; `what` names the file in
/// an error ("the identity CA file").
pub fn roots(extra_ca: Option<&Path>, what: &str) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A certificate the store cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("reading {what} {}: {e}", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!("{} holds no PEM certificate", path.display());
        }
        for cert in certs {
            roots.add(cert)?;
        }
    }
    Ok(roots)
}

/// A client configuration (ring, TLS 1.2 and 1.3) that checks the server's
/// certificate and name against `roots`.
pub fn config(roots: rustls::RootCertStore) -> anyhow::Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}
