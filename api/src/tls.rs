//! Native TLS for the API with rustls. The certificate and key are re-read when either file
//! changes (checked every second), so a renewed certificate is served without a restart; a broken
//! pair on disk is refused and the previous one stays in use.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use keyless_config::TlsConfig;
use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Serves whatever certificate was loaded last.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("poisoned").clone())
    }
}

fn load(config: &TlsConfig) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs = CertificateDer::pem_file_iter(&config.cert)
        .with_context(|| format!("tls.cert: reading {}", config.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls.cert: {} is not a PEM certificate chain", config.cert.display()))?;
    if certs.is_empty() {
        bail!("tls.cert: {} holds no certificate", config.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .with_context(|| format!("tls.key: {} is not a PEM private key", config.key.display()))?;
    let signing_key = any_supported_type(&key).context("tls.key: unsupported key type")?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified
        .keys_match()
        .context("tls: the key does not belong to the certificate")?;
    Ok(Arc::new(certified))
}

fn modified(paths: &[&PathBuf]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// A TLS acceptor serving whatever certificate was loaded last. Handshakes run inside each
/// connection's own task (see [`crate::conn`]), under the connection limits and header deadline,
/// so a slow or broken client never holds up the others.
pub struct Acceptor {
    inner: TlsAcceptor,
}

impl Acceptor {
    /// Loads the pair (start-up fails if it is unusable) and starts watching the files.
    pub fn new(config: &TlsConfig) -> anyhow::Result<Acceptor> {
        let resolver = Arc::new(Reloading {
            current: RwLock::new(load(config)?),
        });
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio::spawn(watch(config.clone(), resolver));
        Ok(Acceptor {
            inner: TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// Runs the server side of the handshake on `io`.
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.inner.accept(io).await
    }
}

/// Re-reads the pair whenever either file changes.
async fn watch(config: TlsConfig, resolver: Arc<Reloading>) {
    let mut seen = modified(&[&config.cert, &config.key]);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = modified(&[&config.cert, &config.key]);
        if now == seen {
            continue;
        }
        seen = now;
        match load(&config) {
            Ok(key) => {
                *resolver.current.write().expect("poisoned") = key;
                tracing::info!(cert = %config.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::error!(
                error = %format!("{e:#}"),
                "TLS certificate reload refused; the previous certificate stays in use"
            ),
        }
    }
}
