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
use tokio::net::{TcpListener, TcpStream};
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

/// A listener that hands axum finished TLS connections. Handshakes run in their own tasks, so a
/// slow or broken client never holds up the others; failed handshakes are dropped quietly.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
    addr: std::net::SocketAddr,
}

impl TlsListener {
    /// Loads the pair (start-up fails if it is unusable) and starts watching the files.
    pub fn new(tcp: TcpListener, config: &TlsConfig) -> anyhow::Result<TlsListener> {
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
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let addr = tcp.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let (conn, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(conn)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, addr })
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

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The acceptor task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
