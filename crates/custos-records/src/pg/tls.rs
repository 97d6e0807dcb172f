//! TLS to PostgreSQL. A connection string or URL with `sslmode=require` is connected over TLS,
//! and the server's certificate is verified — its chain against the trusted roots, its name
//! against the host connected to — so `require` here means what libpq calls `verify-full`: an
//! encrypted connection to a server that cannot be impersonated. The roots are the CA
//! certificates given with [`trust_postgres_ca`] (`--postgres-ca`), else the Mozilla roots the
//! outbound streams trust. Any other `sslmode` (none, `disable`, `prefer`) is a plain
//! connection, for loopback or a private network.

use std::path::Path;
use std::sync::{Arc, RwLock};

use postgres::Client;
use postgres::config::SslMode;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::{Error, Result};

/// The CA certificates given with [`trust_postgres_ca`], if any.
static ROOTS: RwLock<Option<Arc<Vec<CertificateDer<'static>>>>> = RwLock::new(None);

/// Trusts (only) the CA certificates of the PEM file at `path` for TLS connections to
/// PostgreSQL, in place of the Mozilla roots; returns how many it holds.
pub fn trust_postgres_ca(path: &Path) -> Result<usize> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|found| found.collect::<std::result::Result<_, _>>())
        .map_err(|e| Error::BadRequest(format!("{}: not PEM certificates: {e}", path.display())))?;
    if certificates.is_empty() {
        return Err(Error::BadRequest(format!(
            "{}: holds no certificate",
            path.display()
        )));
    }
    let count = certificates.len();
    *ROOTS.write().expect("postgres roots lock") = Some(Arc::new(certificates));
    Ok(count)
}

/// The TLS settings of a connection that requires TLS.
fn client_config() -> std::result::Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    match ROOTS.read().expect("postgres roots lock").clone() {
        Some(given) => {
            for certificate in given.iter() {
                roots
                    .add(certificate.clone())
                    .map_err(|e| format!("a --postgres-ca certificate: {e}"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Connects to the database at `url`: over verified TLS when it says `sslmode=require`, plainly
/// otherwise.
pub(crate) fn connect(url: &str) -> std::result::Result<Client, postgres::Error> {
    let config: postgres::Config = url.parse()?;
    if config.get_ssl_mode() != SslMode::Require {
        return config.connect(postgres::NoTls);
    }
    match client_config() {
        Ok(tls) => config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls)),
        // No TLS settings can be made: without TLS a connection that requires it is refused
        // by the client itself, never made plainly.
        Err(why) => {
            tracing::error!(error = %why, "no TLS to PostgreSQL");
            config.connect(postgres::NoTls)
        }
    }
}
