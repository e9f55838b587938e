//! Start-up wiring and serving: configuration → CA (checked) → OIDC → router → listener, with
//! graceful shutdown. `main` stays thin; tests drive [`serve`] with their own listener.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use keyless_ca::CertificateAuthority;
use keyless_ca::ceremony::CaNames;
use keyless_ca::pipeline::{parse_pem_chain, pem_encode};
use keyless_ca::possession::AlgorithmPolicy;
use keyless_config::{CaConfig, Config, CtLogConfig, EmbeddedCtLog};
use keyless_ctlog::{EmbeddedLog, LogOptions, RemoteLog};
use keyless_oidc::OidcVerifier;
use tokio::net::TcpListener;

use keyless_api::AppState;
use keyless_api::dev::DevIssuer;
use keyless_service::instrument::{MeteredLog, MeteredSigner};
use keyless_service::{CtProbe, IssuerSet, Parts, Service};

/// Opens the CA the configuration describes, generating the default file CA on first start.
/// Returns the CA and its chain as PEM (issuing CA first, root last).
pub fn open_ca(config: &Config) -> anyhow::Result<(CertificateAuthority, Vec<String>)> {
    let (signer, chain): (Arc<dyn keyless_ca::Signer>, String) = match &config.ca {
        CaConfig::Generated(generated) => {
            let file = generated.file_config();
            if !file.key.exists() && !file.chain.exists() {
                let report = keyless_hsm::init_file_ca(
                    &file,
                    &CaNames::default(),
                    keyless_ca::KeySpec::EcdsaP256,
                    SystemTime::now(),
                )?;
                tracing::warn!(
                    key = %file.key.display(), chain = %file.chain.display(), root_sha256 = %report.root_sha256,
                    "generated a new unencrypted file CA because `ca:` is not configured; use `keyless ca init` with a password or an HSM in production"
                );
            }
            keyless_hsm::load_file_ca(&file).context("loading the CA key")?
        }
        CaConfig::File(file) => keyless_hsm::load_file_ca(file).context("loading the CA key")?,
        CaConfig::Pkcs11(p) => {
            let signer =
                Arc::new(keyless_hsm::Pkcs11Signer::open(p).context("opening the CA key in the PKCS#11 token")?);
            #[cfg(feature = "insecure-test-hooks")]
            if std::env::var("KEYLESS_INSECURE_TEST_HOOKS").as_deref() == Ok("1") {
                insecure_logout_on_sigusr1(signer.clone());
            }
            let chain = std::fs::read_to_string(&p.chain).with_context(|| format!("reading {}", p.chain.display()))?;
            tracing::info!(module = %p.module.display(), token = %p.token_label, key = %p.key_label, "CA key is in a PKCS#11 token");
            (signer, chain)
        }
    };
    let signer: Arc<dyn keyless_ca::Signer> = Arc::new(MeteredSigner(signer));
    let ca = CertificateAuthority::new(signer, &chain, config.certificate.validity, SystemTime::now())
        .with_context(|| format!("checking the CA key against {}", config.ca.chain_path().display()))?;
    let ca = ca.with_client_algorithms(AlgorithmPolicy::new(&config.client_signing_algorithms));
    let chain_pem = parse_pem_chain(&chain)?.iter().map(|d| pem_encode(d)).collect();
    Ok((ca, chain_pem))
}

/// Test hook (a binary built with the `insecure-test-hooks` feature, run with
/// `KEYLESS_INSECURE_TEST_HOOKS=1`): SIGUSR1 logs the process out of the token, so the
/// fault-injection test can invalidate the signer's sessions from the side. The shipped binary is
/// built without the feature and has no such code.
#[cfg(feature = "insecure-test-hooks")]
fn insecure_logout_on_sigusr1(signer: Arc<keyless_hsm::Pkcs11Signer>) {
    #[cfg(unix)]
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        tracing::warn!("INSECURE test hooks enabled: SIGUSR1 logs the CA out of its PKCS#11 token");
        handle.spawn(async move {
            let Ok(mut usr1) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) else {
                return;
            };
            while usr1.recv().await.is_some() {
                tracing::warn!("test hook: logging out of the PKCS#11 token");
                let s = signer.clone();
                let _ = tokio::task::spawn_blocking(move || s.insecure_logout_for_tests()).await;
            }
        });
    }
}

/// A running embedded CT log: its public URL and its server task.
pub struct CtLogServer {
    /// `http://ADDR/prefix`
    pub url: String,
    /// The log itself (for in-process submission).
    pub log: keyless_ctlog::EmbeddedLog,
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl CtLogServer {
    /// Stops accepting and waits for requests in flight.
    pub async fn shutdown(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

/// Opens the embedded log under `data_dir/ctlog`, trusting `roots`, and serves its RFC 6962 API
/// on its own listener under the configured prefix.
pub async fn start_embedded_log(
    config: &Config,
    settings: &EmbeddedCtLog,
    roots: &[Vec<u8>],
) -> anyhow::Result<CtLogServer> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("ct_log.embedded.listen: cannot listen on {}", settings.listen))?;
    let url = format!("http://{}/{}", listener.local_addr()?, settings.prefix);
    let opts = LogOptions {
        mmd: settings.mmd,
        commit_timeout: Duration::from_secs(10),
        name: url.clone(),
    };
    let dir = config.data_dir.join("ctlog");
    let key = log_key(config, settings)?;
    let log = tokio::task::block_in_place(|| EmbeddedLog::open(&dir, roots, opts, key))
        .with_context(|| format!("opening the embedded CT log in {}", dir.display()))?;
    let guard = keyless_api::protect::Guard::new(config.limits.clone(), keyless_ctlog::http::MAX_SUBMISSION_BYTES, &[]);
    let app = axum::Router::new()
        .nest(
            &format!("/{}", settings.prefix),
            keyless_ctlog::http::router(log.clone(), settings.submissions.clone()),
        )
        .layer(axum::middleware::from_fn_with_state(guard, keyless_api::protect::guard));
    let stop = Arc::new(tokio::sync::Notify::new());
    let s = stop.clone();
    let server = keyless_api::conn::Server {
        name: "ctlog",
        limits: config.limits.clone(),
        tls: None,
    };
    let grace = config.limits.shutdown_grace;
    let task = tokio::spawn(async move {
        if let Err(e) = server
            .serve(listener, app, async move { s.notified().await }, grace)
            .await
        {
            tracing::error!(error = %e, "CT log listener failed");
        }
    });
    println!("keyless: ct log listening on {url}");
    tracing::info!(%url, size = log.sth().tree_size, "embedded CT log serving");
    Ok(CtLogServer { url, log, stop, task })
}

/// The embedded log's key when it lives in the CA's PKCS#11 token (`None`: the file key).
pub fn log_key(config: &Config, settings: &EmbeddedCtLog) -> anyhow::Result<Option<Arc<dyn keyless_ca::Signer>>> {
    let Some(label) = &settings.pkcs11_key_label else {
        return Ok(None);
    };
    match &config.ca {
        CaConfig::Pkcs11(p) => {
            let signer = keyless_hsm::Pkcs11Signer::open_other(p, label)
                .with_context(|| format!("ct_log.embedded.pkcs11_key_label: opening {label:?}"))?;
            Ok(Some(Arc::new(signer)))
        }
        CaConfig::Generated(_) | CaConfig::File(_) => bail!("ct_log.embedded.pkcs11_key_label needs ca.pkcs11"),
    }
}

/// Reads a PEM `PUBLIC KEY` file into DER.
pub fn read_public_key(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let der = text.lines().filter(|l| !l.starts_with("-----")).collect::<String>();
    if !text.contains("-----BEGIN PUBLIC KEY-----") {
        bail!("{}: expected a PEM PUBLIC KEY", path.display());
    }
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(der)
        .with_context(|| format!("{}: malformed PEM", path.display()))
}

/// What [`build`] makes from a configuration: the service, the routes beside the API (the
/// development issuer), and what must be stopped in order at shutdown.
pub struct Built {
    /// The issuance service.
    pub service: Arc<Service>,
    /// Routes merged into the API (the development issuer's discovery and JWKS).
    pub extra: axum::Router,
    /// The embedded CT log's listener, when it runs.
    pub ct_server: Option<CtLogServer>,
    /// Issuers added by this process rather than the configuration file (`--dev`): kept across
    /// reloads.
    pub dev_issuers: Vec<keyless_config::IssuerConfig>,
}

/// Builds the issuance service from `config` for an API listening on `addr`: the CA (checked),
/// the CT log (the embedded one started on its own listener), the issuers and the record.
pub async fn build(config: &Config, addr: std::net::SocketAddr) -> anyhow::Result<Built> {
    let (mut ca, chain_pem) = open_ca(config)?;
    let mut ct_server = None;
    let mut ct_probe = CtProbe::Disabled;
    let ct_description = match &config.ct_log {
        CtLogConfig::Disabled => {
            tracing::warn!(
                "CERTIFICATE TRANSPARENCY IS DISABLED (ct_log: disabled): certificates are issued without being publicly logged"
            );
            "disabled".to_string()
        }
        CtLogConfig::Embedded(settings) => {
            let root = ca.chain_der().last().cloned().into_iter().collect::<Vec<_>>();
            let server = start_embedded_log(config, settings, &root).await?;
            let spki = server.log.public_key_spki().to_vec();
            ca = ca.with_ct_log(Arc::new(MeteredLog(Arc::new(server.log.clone()))), &spki)?;
            keyless_service::instrument::watch_embedded_log(server.log.clone());
            ct_probe = CtProbe::Embedded;
            let url = server.url.clone();
            ct_server = Some(server);
            url
        }
        CtLogConfig::Remote(remote) => {
            let spki = read_public_key(&remote.public_key)?;
            let log = RemoteLog::from_config(remote).map_err(|e| anyhow::anyhow!("ct_log: {e}"))?;
            ct_probe = CtProbe::Remote(log.clone());
            ca = ca
                .with_ct_log(Arc::new(MeteredLog(Arc::new(log))), &spki)
                .context("ct_log.public_key")?;
            tracing::info!(url = %remote.url, "submitting precertificates to a remote CT log");
            remote.url.clone()
        }
    };
    let mut issuers = effective_issuers(config)?;
    let configured = issuers.len();
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
    let dev_issuers: Vec<_> = issuers[configured..].to_vec();
    let oidc = OidcVerifier::new(&issuers)?;
    let chain = keyless_audit::store::CaChain::of(ca.chain_der());
    let audit = open_audit(config, chain)?;
    let limiter = match postgres(config)? {
        Some(db) if audit.is_some() => {
            tracing::info!(database = %db.describe(), "rate limits are kept in the record's database, shared by every replica");
            keyless_service::RateLimiter::shared(keyless_audit::store::SharedBuckets::new(&db)?)
        }
        _ => keyless_service::RateLimiter::default(),
    };
    let service = Arc::new(Service::new(Parts {
        ca: Arc::new(ca),
        chain_pem,
        ct_log: ct_description,
        ct_probe,
        issuers: IssuerSet {
            oidc,
            list: issuers,
            rate_limits: config.rate_limits,
        },
        audit,
        limiter,
        max_in_progress: config.limits.max_concurrent_requests,
    }));
    Ok(Built {
        service,
        extra,
        ct_server,
        dev_issuers,
    })
}

/// Serves the API on `listener` until `shutdown` completes: [`build`], then
/// [`keyless_api::app`] on [`keyless_api::conn::Server`], then [`shut_down`].
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if config.metrics_listen.is_some() {
        // Before anything is measured, so start-up (the signer self-test) counts too.
        crate::metrics::handle();
    }
    let addr = listener.local_addr()?;
    let built = build(&config, addr).await?;
    let reload = config.source.clone().map(|path| {
        tokio::spawn(reload_loop(
            built.service.clone(),
            path,
            config.clone(),
            built.dev_issuers.clone(),
        ))
    });
    let health_token = config
        .health_token
        .as_ref()
        .map(|r| r.resolve().map_err(|e| anyhow::anyhow!("health.token: {e}")))
        .transpose()?;
    let app = keyless_api::app(
        Arc::new(AppState::new(built.service.clone(), health_token)),
        &config.limits,
        built.extra.clone(),
    );
    if let Some(m) = config.metrics_listen {
        let listener = TcpListener::bind(m)
            .await
            .with_context(|| format!("metrics_listen: cannot listen on {m}"))?;
        println!(
            "keyless: metrics listening on http://{}/metrics",
            listener.local_addr()?
        );
        tokio::spawn(crate::metrics::serve(listener));
    }
    // Fulcio's gRPC API on its own listener, stopped with the API.
    let (stop_grpc, grpc_stopping) = tokio::sync::watch::channel(false);
    let grpc = match config.grpc_listen {
        Some(at) => {
            if config.insecure_dev_issuer && !at.ip().is_loopback() {
                bail!("--dev serves an insecure development issuer: grpc_listen must be loopback, not {at}");
            }
            let running = keyless_grpc::start(
                built.service.clone(),
                at,
                &config.limits,
                config.tls.as_ref(),
                grpc_stopping,
            )
            .await?;
            println!("keyless: grpc listening on {}", running.addr);
            Some(running)
        }
        None => None,
    };
    let tls = config.tls.as_ref().map(keyless_api::tls::Acceptor::new).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("keyless: listening on {scheme}://{addr}");
    tracing::info!(%addr, tls = tls.is_some(), "serving");
    let server = keyless_api::conn::Server {
        name: "api",
        limits: config.limits.clone(),
        tls,
    };
    let grace = config.limits.shutdown_grace;
    let finished = server
        .serve(
            listener,
            app,
            async move {
                shutdown.await;
                let _ = stop_grpc.send(true);
                tracing::info!("shutting down: no new connections; finishing requests in flight");
            },
            grace,
        )
        .await?;
    let finished = match grpc {
        Some(grpc) => grpc.finished().await && finished,
        None => finished,
    };
    if finished {
        tracing::info!("requests in flight finished");
    } else {
        tracing::warn!(?grace, "shutdown grace elapsed; dropping the requests still in flight");
    }
    if let Some(task) = reload {
        task.abort();
        let _ = task.await;
    }
    shut_down(built).await;
    Ok(())
}

/// Stops what [`build`] started, in order, once no request is being served: releases the CA
/// (dropping the signer closes its PKCS#11 sessions, and the login with them), lets the record's
/// writer commit what is queued, and flushes the embedded log's tree head before its listener stops.
pub async fn shut_down(built: Built) {
    let Built { service, ct_server, .. } = built;
    let audit_stopped = service.audit().map(keyless_audit::store::AuditLog::stopped);
    let held = Arc::downgrade(&service);
    drop(service);
    // Connection tasks and issuances finishing drop their share a moment after the last response.
    let release_deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while held.strong_count() > 0 && tokio::time::Instant::now() < release_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if held.strong_count() == 0 {
        tracing::info!("CA signer released (an HSM's sessions are closed)");
    } else {
        tracing::warn!("CA signer still in use by requests past the grace period; released at exit");
    }
    // With the service gone, the issuance record's writer commits what is queued and stops.
    if let Some(stopped) = audit_stopped {
        let done = tokio::task::spawn_blocking(move || stopped.wait(Duration::from_secs(5)))
            .await
            .unwrap_or(false);
        if done {
            tracing::info!("issuance record closed: every queued decision is committed");
        } else {
            tracing::warn!("the issuance record's writer did not finish in time");
        }
    }
    if let Some(ct) = ct_server {
        let log = ct.log.clone();
        let flushed = tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(5)))
            .await
            .unwrap_or(false);
        if flushed {
            tracing::info!(
                tree_size = ct.log.sth().tree_size,
                "CT log flushed: the last tree head covers every entry"
            );
        } else {
            tracing::warn!("CT log flush timed out; its entries are durable and go into the next tree head");
        }
        ct.shutdown().await;
    }
    tracing::info!("shut down");
}

/// Opens the issuance record (refusing to start if it fails verification or was started under
/// another CA chain).
fn open_audit(
    config: &Config,
    chain: keyless_audit::store::CaChain,
) -> anyhow::Result<Option<keyless_audit::store::AuditLog>> {
    if !config.audit.enabled {
        tracing::warn!("the issuance record is disabled (audit.enabled: false): decisions are not recorded");
        return Ok(None);
    }
    let export = config.audit.export.as_ref().map(|e| match e {
        keyless_config::AuditExport::Stdout => keyless_audit::store::Export::Stdout,
        keyless_config::AuditExport::File(p) => keyless_audit::store::Export::File(p.clone()),
    });
    let dir = keyless_audit::store::audit_dir(&config.data_dir);
    let postgres = postgres(config)?;
    let place = match &postgres {
        Some(db) => db.describe(),
        None => dir.display().to_string(),
    };
    let options = keyless_audit::store::AuditOptions {
        key: config.audit.key.clone(),
        export,
        checkpoint_export: config.audit.checkpoint_export.clone(),
        refusal_queue: config.audit.refusal_queue,
        postgres,
        ca_chain: Some(chain),
    };
    let log = keyless_audit::store::AuditLog::open(&dir, options)
        .with_context(|| format!("opening the issuance record in {place}"))?;
    tracing::info!(record = %place, "recording every decision in the issuance record");
    Ok(Some(log))
}

/// `audit.postgres` with its URL read from where the configuration points (never logged).
fn postgres(config: &Config) -> anyhow::Result<Option<keyless_audit::store::Postgres>> {
    config
        .audit
        .postgres
        .as_ref()
        .map(|p| {
            let url = p
                .url
                .resolve()
                .map_err(|e| anyhow::anyhow!("audit.postgres.url: {e}"))?;
            let ca_cert_pem = p
                .ca_cert
                .as_ref()
                .map(|path| {
                    std::fs::read_to_string(path)
                        .with_context(|| format!("audit.postgres.ca_cert: reading {}", path.display()))
                })
                .transpose()?;
            Ok(keyless_audit::store::Postgres {
                url: url.expose().to_string(),
                pool_size: p.pool_size,
                ca_cert_pem,
            })
        })
        .transpose()
}

/// Where the audit commands and the review page read the issuance record of a configuration.
pub fn record_source(config: &Config) -> anyhow::Result<keyless_audit::store::RecordSource> {
    Ok(match postgres(config)? {
        Some(db) => keyless_audit::store::RecordSource::Postgres(db),
        None => keyless_audit::store::RecordSource::Sqlite(keyless_audit::store::audit_dir(&config.data_dir)),
    })
}

/// The issuers a configuration trusts: exactly those it names (`issuers`, `issuers_file`,
/// `public_good_issuers: true`). One that names none, and is not `--dev`, is refused: trusting
/// the world's CI systems must be a decision, not a default. Each configuration warning is logged
/// here, so once at start-up and once per reload.
pub fn effective_issuers(config: &Config) -> anyhow::Result<Vec<keyless_config::IssuerConfig>> {
    config.check_trusts_issuers().map_err(|e| anyhow::anyhow!("{e}"))?;
    for warning in &config.warnings {
        tracing::warn!(path = %warning.path, "configuration warning: {}", warning.message);
    }
    if config.public_good_issuers {
        tracing::info!(
            issuers = config.issuers.len(),
            "trusting the public-good Sigstore issuer set bundled with Keyless CA (public_good_issuers: true)"
        );
    }
    Ok(config.issuers.clone())
}

/// SHA-256 (hex) of the configuration file and the issuers file it names: logged with every
/// reload so operators can tell which configuration is in force.
fn config_hash(config: &Config) -> String {
    let mut bytes = Vec::new();
    for p in config.source.iter().chain(config.issuers_file.iter()) {
        bytes.extend(std::fs::read(p).unwrap_or_default());
    }
    hex::encode(keyless_ca::keys::sha256(&bytes))
}

fn modified(config: &Config) -> Vec<Option<SystemTime>> {
    config
        .source
        .iter()
        .chain(config.issuers_file.iter())
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Reloads the issuers on SIGHUP or when the configuration or issuers file changes (polled every
/// second). A new configuration is validated completely; if valid, the issuer set is swapped
/// atomically (requests in flight finish with the set they started with); if not, the old one
/// stays and the error is logged with its path. Settings other than issuers need a restart.
async fn reload_loop(
    service: Arc<Service>,
    path: std::path::PathBuf,
    mut current: Config,
    dev_issuers: Vec<keyless_config::IssuerConfig>,
) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = modified(&current);
    let mut hash = config_hash(&current);
    crate::metrics::config_hash(&hash, "");
    tracing::info!(config_hash = %hash, "configuration in force");
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        let trigger = tokio::select! {
            _ = signalled => "SIGHUP",
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let now = modified(&current);
                if now == seen { continue; }
                seen = now;
                "file change"
            }
        };
        // The same bytes mean the same configuration: nothing to validate or swap.
        if config_hash(&current) == hash {
            tracing::info!(trigger, config_hash = %hash, "configuration unchanged; nothing to reload");
            seen = modified(&current);
            continue;
        }
        let loaded = tokio::task::spawn_blocking({
            let path = path.clone();
            move || Config::load(&path)
        })
        .await;
        let next = match loaded {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::error!(trigger, config = %path.display(), error = %e, "configuration reload refused; the previous configuration stays in force");
                crate::metrics::reload("refused", &hash, &hash);
                continue;
            }
            Err(e) => {
                tracing::error!(trigger, error = %e, "configuration reload failed");
                continue;
            }
        };
        if next.listen != current.listen
            || next.grpc_listen != current.grpc_listen
            || next.ca != current.ca
            || next.ct_log != current.ct_log
            || next.data_dir != current.data_dir
        {
            tracing::warn!(
                "only issuers are reloaded; listen, grpc_listen, data_dir, ca and ct_log changes take effect after a restart"
            );
        }
        let mut list = match effective_issuers(&next) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(trigger, error = %e, "configuration reload refused");
                continue;
            }
        };
        list.extend(dev_issuers.iter().cloned());
        // Unchanged issuers keep their cached keys, health and back-off across the swap, so an
        // IdP outage that overlaps a reload does not turn into refusals.
        match service.current_issuers().oidc.rebuild(&list) {
            Ok(oidc) => {
                service.replace_issuers(IssuerSet {
                    oidc,
                    list,
                    rate_limits: next.rate_limits,
                });
                let new_hash = config_hash(&next);
                tracing::info!(trigger, issuers = next.issuers.len(), config_hash = %new_hash, "configuration reloaded");
                crate::metrics::reload("ok", &new_hash, &hash);
                hash = new_hash;
                seen = modified(&next);
                current = next;
            }
            Err(e) => tracing::error!(trigger, error = %e, "configuration reload refused"),
        }
    }
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
