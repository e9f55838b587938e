//! Start-up wiring and serving: configuration → CA (checked) → OIDC → router → listener, with
//! graceful shutdown. `main` stays thin; tests drive [`serve`] with their own listener.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, bail};
use keyless_ca::CertificateAuthority;
use keyless_ca::ceremony::CaNames;
use keyless_ca::pipeline::{parse_pem_chain, pem_encode};
use keyless_config::{CaConfig, Config, CtLogConfig};
use keyless_oidc::OidcVerifier;
use tokio::net::TcpListener;

use crate::dev::DevIssuer;
use crate::routes::{AppState, router};

/// Opens the CA the configuration describes, generating the default file CA on first start.
pub fn open_ca(config: &Config) -> anyhow::Result<(Arc<CertificateAuthority>, Vec<String>)> {
    let file = config.ca.file(&config.data_dir);
    if config.ca == CaConfig::Generated && !file.key.exists() && !file.chain.exists() {
        let report = keyless_hsm::init_file_ca(&file, &CaNames::default(), SystemTime::now())?;
        tracing::warn!(
            key = %file.key.display(), chain = %file.chain.display(), root_sha256 = %report.root_sha256,
            "generated a new unencrypted file CA because `ca:` is not configured; use `keyless ca init` with a password or an HSM in production"
        );
    }
    let (signer, chain) = keyless_hsm::load_file_ca(&file).with_context(|| "loading the CA key".to_string())?;
    let ca = CertificateAuthority::new(signer, &chain, config.certificate.validity, SystemTime::now())
        .with_context(|| format!("checking the CA key against {}", file.chain.display()))?;
    let chain_pem = parse_pem_chain(&chain)?.iter().map(|d| pem_encode(d)).collect();
    Ok((Arc::new(ca), chain_pem))
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match config.ct_log {
        CtLogConfig::Disabled => tracing::warn!(
            "CERTIFICATE TRANSPARENCY IS DISABLED (ct_log: disabled): certificates are issued without being publicly logged"
        ),
        CtLogConfig::Embedded => bail!(
            "ct_log: the embedded CT log is not available in this build yet; set `ct_log: disabled` to run without Certificate Transparency"
        ),
    }
    let (ca, chain_pem) = open_ca(&config)?;
    let addr = listener.local_addr()?;
    let mut issuers = config.issuers.clone();
    let mut extra = axum::Router::new();
    if config.insecure_dev_issuer {
        if !addr.ip().is_loopback() {
            bail!("--dev serves an insecure development issuer and only listens on loopback, not {addr}");
        }
        let dev = DevIssuer::load_or_create(&config.data_dir, &format!("http://{addr}"))?;
        tracing::warn!(
            issuer = dev.url(),
            "INSECURE development issuer enabled (--dev): it vouches for any email; never use it in production"
        );
        issuers.push(dev.issuer_config());
        extra = dev.router();
    }
    if issuers.is_empty() {
        tracing::warn!("no OIDC issuers are configured: every signing request will be refused");
    }
    let oidc = Arc::new(OidcVerifier::new(&issuers)?);
    let state = Arc::new(AppState {
        ca,
        oidc,
        issuers,
        chain_pem,
    });
    let app = router(state).merge(extra);
    println!("keyless: listening on http://{addr}");
    tracing::info!(%addr, "serving");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    tracing::info!("shut down");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
