//! OIDC for Keyless CA: finds the configured issuer for a token, fetches its discovery document
//! and JWKS over HTTP (lazily, with timeouts, size limits and no cross-host redirects), caches the
//! keys, and hands them to [`keyless_ca::token::verify`], which alone can vouch for a token.
//!
//! An unreachable issuer never blocks start-up or other issuers: its tokens get a 503 naming it.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use keyless_ca::token::{self, IssuerKeys, VerifiedToken};
use keyless_config::IssuerConfig;
use serde::Deserialize;

/// Per-request timeout for discovery and JWKS fetches.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Discovery documents and key sets larger than this are refused.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Keys are re-fetched after this long even if every `kid` is known (issuers rotate keys).
pub const KEYS_TTL: Duration = Duration::from_secs(3600);
/// An unknown `kid` triggers a re-fetch at most this often per issuer, so forged kids cannot
/// turn the CA into a request amplifier against an IdP.
pub const UNKNOWN_KID_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Why a token could not be verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// The token itself is at fault (the client's problem).
    #[error(transparent)]
    Token(#[from] keyless_ca::Error),
    /// The issuer's discovery document or keys could not be fetched (the issuer's problem).
    #[error("issuer {issuer} is unavailable: {cause}")]
    IssuerUnavailable {
        /// Issuer URL.
        issuer: String,
        /// What went wrong, for the operator's log.
        cause: String,
    },
}

/// What the CA knows of an issuer's discovery document and keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerHealth {
    /// Keys fetched, last fetch succeeded.
    Ok,
    /// No token from this issuer yet: keys are fetched on first use.
    NotFetched,
    /// The last fetch failed; older keys are still in use.
    Stale(String),
    /// The last fetch failed and there are no keys: its tokens are refused with 503.
    Failing(String),
}

struct IssuerState {
    config: Arc<IssuerConfig>,
    /// The configured URL (the pattern, for an issuer met through one): the metrics label.
    label: String,
    /// Why the last discovery/JWKS fetch failed (`None` after a success).
    last_error: Mutex<Option<String>>,
    /// A client that also trusts the issuer's own CA bundle, when one is configured.
    http: Option<reqwest::Client>,
    keys: Mutex<Option<CachedKeys>>,
    /// When an unknown `kid` last forced a re-fetch.
    last_forced: Mutex<Option<Instant>>,
    /// Serializes fetches so concurrent requests share one.
    fetch: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct CachedKeys {
    keys: Arc<IssuerKeys>,
    fetched: Instant,
}

/// Issuers met through a meta pattern, with their arrival order for eviction.
type DynamicIssuers = (HashMap<String, Arc<IssuerState>>, std::collections::VecDeque<String>);

/// Verifies tokens against the configured issuers.
pub struct OidcVerifier {
    /// Exact issuers, by URL.
    issuers: HashMap<String, Arc<IssuerState>>,
    /// Meta issuers (wildcard patterns), tried in configuration order after the exact ones.
    meta: Vec<IssuerConfig>,
    /// Issuers met through a pattern: their keys are cached like the fixed ones, up to
    /// [`MAX_META_ISSUERS`], oldest evicted first.
    dynamic: Mutex<DynamicIssuers>,
    http: reqwest::Client,
}

/// The HTTP client for discovery and JWKS: timeouts, same-host redirects only, and optionally an
/// extra CA bundle (an IdP behind a private CA).
fn build_client(extra_ca_pem: Option<&[u8]>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            // Same-host redirects only (GHSA-59jp-pj84-45mr class of SSRF).
            let same = attempt
                .previous()
                .first()
                .map(|u| u.host_str() == attempt.url().host_str())
                .unwrap_or(false);
            if same && attempt.previous().len() < 3 {
                attempt.follow()
            } else {
                attempt.stop()
            }
        }))
        .user_agent(concat!("keyless/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = extra_ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("CA bundle: {e}"))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| e.to_string())
}

/// How many distinct issuers matched by wildcard patterns are cached at once.
pub const MAX_META_ISSUERS: usize = 100;

fn new_state(config: IssuerConfig, label: String) -> Arc<IssuerState> {
    let http = config
        .options
        .ca_cert_pem
        .as_ref()
        .and_then(|pem| match build_client(Some(pem.as_bytes())) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(issuer = %config.url, error = %e, "the issuer's CA bundle is unusable");
                None
            }
        });
    Arc::new(IssuerState {
        http,
        config: Arc::new(config),
        label,
        last_error: Mutex::new(None),
        keys: Mutex::new(None),
        last_forced: Mutex::new(None),
        fetch: tokio::sync::Mutex::new(()),
    })
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuers", &self.issuers.keys())
            .finish()
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl OidcVerifier {
    /// Builds a verifier; nothing is fetched until a token arrives.
    pub fn new(issuers: &[IssuerConfig]) -> Result<OidcVerifier, OidcError> {
        let http = build_client(None).map_err(|cause| OidcError::IssuerUnavailable {
            issuer: String::new(),
            cause,
        })?;
        let meta = issuers.iter().filter(|c| c.wildcard).cloned().collect();
        let issuers = issuers
            .iter()
            .filter(|c| !c.wildcard)
            .map(|c| (c.url.clone(), new_state(c.clone(), c.url.clone())))
            .collect();
        Ok(OidcVerifier {
            issuers,
            meta,
            dynamic: Mutex::new(Default::default()),
            http,
        })
    }

    /// The issuer state for a token's `iss`: an exact issuer, or one a pattern matches. Only a
    /// URL that matches is ever fetched, so a token cannot point the CA at arbitrary hosts.
    fn state(&self, iss: &str) -> Option<Arc<IssuerState>> {
        if let Some(s) = self.issuers.get(iss) {
            return Some(s.clone());
        }
        let pattern = self.meta.iter().find(|m| m.matches(iss))?;
        let mut guard = self.dynamic.lock().expect("poisoned");
        let (map, order) = &mut *guard;
        if let Some(s) = map.get(iss) {
            return Some(s.clone());
        }
        if map.len() >= MAX_META_ISSUERS
            && let Some(oldest) = order.pop_front()
        {
            map.remove(&oldest);
        }
        let state = new_state(pattern.for_issuer(iss), pattern.url.clone());
        map.insert(iss.to_string(), state.clone());
        order.push_back(iss.to_string());
        Some(state)
    }

    /// Fetches an exact issuer's discovery document and keys now (for `keyless config check
    /// --online`); returns how many usable keys it publishes.
    pub async fn probe(&self, url: &str) -> Result<usize, String> {
        let state = self
            .issuers
            .get(url)
            .ok_or_else(|| format!("{url} is not an exact issuer"))?;
        self.fetch_keys(url, state.http.as_ref().unwrap_or(&self.http))
            .await
            .map(|k| k.len())
    }

    /// Discovery/JWKS health of each exact issuer, from the last fetch (none is made here).
    pub fn health(&self) -> Vec<(String, IssuerHealth)> {
        let mut out: Vec<(String, IssuerHealth)> = self
            .issuers
            .iter()
            .map(|(url, state)| {
                let has_keys = state.keys.lock().expect("poisoned").is_some();
                let health = match (state.last_error.lock().expect("poisoned").clone(), has_keys) {
                    (Some(cause), true) => IssuerHealth::Stale(cause),
                    (Some(cause), false) => IssuerHealth::Failing(cause),
                    (None, true) => IssuerHealth::Ok,
                    (None, false) => IssuerHealth::NotFetched,
                };
                (url.clone(), health)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Verifies a raw token and returns the core's capability for it.
    pub async fn verify(&self, raw: &str) -> Result<VerifiedToken, OidcError> {
        let unverified = token::parse(raw)?;
        let Some(state) = self.state(unverified.issuer()) else {
            return Err(keyless_ca::Error::Token(format!(
                "issuer {:?} is not configured on this CA",
                unverified.issuer()
            ))
            .into());
        };
        let state = &state;
        let keys = self.keys(state, false).await?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        match token::verify(unverified, state.config.clone(), &keys, now) {
            Err(keyless_ca::Error::UnknownKeyId { .. }) => {
                // The issuer may have rotated its keys: refresh (rate-limited) and retry once.
                let keys = self.keys(state, true).await?;
                let unverified = token::parse(raw)?;
                Ok(token::verify(unverified, state.config.clone(), &keys, now)?)
            }
            other => Ok(other?),
        }
    }

    /// Cached keys, fetched when absent or stale. `unknown_kid` forces a re-fetch (the issuer may
    /// have rotated), at most once per [`UNKNOWN_KID_REFRESH_INTERVAL`].
    async fn keys(&self, state: &IssuerState, unknown_kid: bool) -> Result<Arc<IssuerKeys>, OidcError> {
        let fresh = |c: &CachedKeys| c.fetched.elapsed() < KEYS_TTL;
        let cached = state.keys.lock().expect("poisoned").clone();
        if !unknown_kid && let Some(c) = cached.filter(fresh) {
            return Ok(c.keys);
        }
        let _guard = state.fetch.lock().await;
        let cached = state.keys.lock().expect("poisoned").clone();
        if unknown_kid {
            let mut last = state.last_forced.lock().expect("poisoned");
            if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFRESH_INTERVAL)
                && let Some(c) = &cached
            {
                return Ok(c.keys.clone());
            }
            *last = Some(Instant::now());
        } else if let Some(c) = cached.clone().filter(fresh) {
            return Ok(c.keys);
        }
        let fetched = self
            .fetch_keys(&state.config.url, state.http.as_ref().unwrap_or(&self.http))
            .await;
        let outcome = if fetched.is_ok() { "ok" } else { "error" };
        // Why keys were fetched: never before, cache expired, or a refresh forced by an unknown kid.
        let reason = match (unknown_kid, &cached) {
            (true, _) => "unknown_kid",
            (false, Some(_)) => "expired",
            (false, None) => "first",
        };
        metrics::counter!("keyless_jwks_fetches_total", "issuer" => state.label.clone(), "reason" => reason, "outcome" => outcome)
            .increment(1);
        *state.last_error.lock().expect("poisoned") = fetched.as_ref().err().cloned();
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                *state.keys.lock().expect("poisoned") = Some(CachedKeys {
                    keys: keys.clone(),
                    fetched: Instant::now(),
                });
                Ok(keys)
            }
            Err(cause) => {
                tracing::warn!(issuer = %state.config.url, %cause, "OIDC key fetch failed");
                // Stale keys beat no keys when an IdP blips; unknown kids still fail closed.
                match cached {
                    Some(c) => Ok(c.keys),
                    None => Err(OidcError::IssuerUnavailable {
                        issuer: state.config.url.clone(),
                        cause,
                    }),
                }
            }
        }
    }

    async fn fetch_keys(&self, issuer: &str, http: &reqwest::Client) -> Result<IssuerKeys, String> {
        let discovery_url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let doc: Discovery = serde_json::from_slice(&get(http, &discovery_url).await?)
            .map_err(|e| format!("discovery document is not valid JSON with issuer and jwks_uri: {e}"))?;
        if doc.issuer != issuer {
            return Err(format!(
                "discovery document names issuer {:?}, expected {issuer:?}",
                doc.issuer
            ));
        }
        let jwks_url =
            url::Url::parse(&doc.jwks_uri).map_err(|e| format!("jwks_uri {:?} is not a URL: {e}", doc.jwks_uri))?;
        let secure =
            jwks_url.scheme() == "https" || (jwks_url.scheme() == "http" && keyless_config::is_loopback_url(&jwks_url));
        if !secure {
            return Err(format!(
                "jwks_uri {:?} must be https (plain http only on loopback)",
                doc.jwks_uri
            ));
        }
        let jwks: JwkSet = serde_json::from_slice(&get(http, jwks_url.as_str()).await?)
            .map_err(|e| format!("JWKS is not a valid key set: {e}"))?;
        let keys = IssuerKeys::from_jwks(&jwks);
        if keys.is_empty() {
            return Err("JWKS holds no usable signing key".into());
        }
        tracing::info!(issuer, keys = keys.len(), "fetched OIDC signing keys");
        Ok(keys)
    }
}

/// GETs a document under the size limit.
async fn get(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = http.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    if resp.content_length().is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64) {
        return Err(format!("GET {url}: response larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("GET {url}: response larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
