//! OIDC for Keyless CA: finds the configured issuer for a token, fetches its discovery document
//! and JWKS over HTTP (lazily, with timeouts, size limits and no cross-host redirects), caches the
//! keys, and hands them to [`keyless_ca::token::verify`], which alone can vouch for a token.
//!
//! An unreachable issuer never blocks start-up or other issuers: its tokens get a 503 naming it.
//! Because tokens name the issuer to contact, fetching is built so that a hanging or junk issuer
//! cannot be turned against the CA:
//! - one fetch in flight per issuer (single flight), run in its own task so a cancelled request
//!   never abandons it; a bounded number of requests may wait for it, the rest are refused at once;
//! - failures are remembered with exponential back-off: while an issuer without keys backs off, its
//!   tokens are refused at once instead of each waiting out the fetch timeout;
//! - expired keys are used while a background refresh runs (stale-while-revalidate), and kept when
//!   it fails; only an unknown `kid` waits for a fetch, at most every 10 s per issuer;
//! - issuers met through a meta pattern are admitted under a global budget and never displace an
//!   issuer that has keys;
//! - [`OidcVerifier::rebuild`] carries every unchanged issuer's state across a configuration reload.

#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use keyless_ca::token::{self, IssuerKeys, VerifiedToken};
use keyless_config::IssuerConfig;
use serde::Deserialize;
use tokio::sync::watch;

/// Default time allowed for one key fetch, discovery and JWKS together (well under the server's
/// default 30 s request timeout, so the first requester gets an answer before it is timed out).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Discovery documents and key sets larger than this are refused.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Keys are re-fetched (in the background) after this long even if every `kid` is known (issuers
/// rotate keys).
pub const KEYS_TTL: Duration = Duration::from_secs(3600);
/// An unknown `kid` triggers a re-fetch at most this often per issuer, so forged kids cannot
/// turn the CA into a request amplifier against an IdP.
pub const UNKNOWN_KID_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Default cap on distinct issuers matched by wildcard patterns that are cached at once.
pub const MAX_META_ISSUERS: usize = 100;

/// Tunables of an [`OidcVerifier`]. The defaults are the production values; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierOptions {
    /// Time allowed for one key fetch, discovery and JWKS together.
    pub fetch_timeout: Duration,
    /// Back-off after the first failed fetch; it doubles with each further failure.
    pub backoff_min: Duration,
    /// The longest back-off.
    pub backoff_max: Duration,
    /// Requests allowed to wait for one issuer's fetch; more are refused at once (503), so a
    /// hanging issuer cannot hold all of the server's concurrency slots.
    pub max_waiters: usize,
    /// Age after which cached keys are refreshed in the background.
    pub keys_ttl: Duration,
    /// Minimum interval between fetches forced by an unknown `kid`.
    pub unknown_kid_interval: Duration,
    /// Cap on issuers met through meta patterns that are remembered at once.
    pub max_meta_issuers: usize,
    /// New meta-issuer states allowed per minute, across all patterns (token bucket refill).
    pub new_meta_per_minute: u32,
    /// Burst of new meta-issuer states (token bucket size).
    pub new_meta_burst: u32,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        VerifierOptions {
            fetch_timeout: FETCH_TIMEOUT,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_waiters: 256,
            keys_ttl: KEYS_TTL,
            unknown_kid_interval: UNKNOWN_KID_REFRESH_INTERVAL,
            max_meta_issuers: MAX_META_ISSUERS,
            new_meta_per_minute: 20,
            new_meta_burst: 20,
        }
    }
}

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
    /// The token names an issuer not met before under a meta-issuer pattern, and the CA admits no
    /// more such issuers for now (503-class: try again later).
    #[error("issuer pattern {pattern} admits no new issuer now: {cause}")]
    NewIssuerRefused {
        /// The configured pattern (never the token's issuer, which the client chose).
        pattern: String,
        /// Which limit was reached, for the operator's log.
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

/// One issuer's keys and fetch history. Shared (via `Arc`) by a verifier, the background fetch
/// task and, across a reload, the next verifier.
struct IssuerState {
    config: Arc<IssuerConfig>,
    /// The configured URL (the pattern, for an issuer met through one): the metrics label.
    label: String,
    /// The client for this issuer (one that also trusts its CA bundle, when one is configured).
    http: reqwest::Client,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: Option<CachedKeys>,
    /// Why the last discovery/JWKS fetch failed (`None` after a success).
    last_error: Option<String>,
    /// Consecutive failed fetches (the back-off exponent).
    failures: u32,
    /// No fetch is started before this (back-off after a failure).
    retry_at: Option<Instant>,
    /// When an unknown `kid` last forced a re-fetch.
    last_forced: Option<Instant>,
    /// The fetch in flight: its sender is dropped when the outcome has been recorded.
    inflight: Option<watch::Receiver<()>>,
    /// Requests waiting for the fetch in flight.
    waiters: usize,
}

#[derive(Clone)]
struct CachedKeys {
    keys: Arc<IssuerKeys>,
    fetched: Instant,
}

impl IssuerState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave `Inner` half-updated in a harmful way.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn has_keys(&self) -> bool {
        self.lock().keys.is_some()
    }

    fn unavailable(&self, cause: String) -> OidcError {
        OidcError::IssuerUnavailable {
            issuer: self.config.url.clone(),
            cause,
        }
    }

    fn refused(&self, reason: &'static str) {
        metrics::counter!("keyless_oidc_refusals_total", "issuer" => self.label.clone(), "reason" => reason)
            .increment(1);
    }
}

impl Inner {
    /// Time left in the back-off, if any.
    fn backing_off(&self, now: Instant) -> Option<Duration> {
        self.retry_at.filter(|t| *t > now).map(|t| t - now)
    }

    /// The fetch in flight, unless its task was dropped without recording an outcome.
    fn live_fetch(&self) -> Option<watch::Receiver<()>> {
        self.inflight.clone().filter(|rx| rx.has_changed().is_ok())
    }

    /// The last error with the back-off, for health and refusals.
    fn describe_error(&self, now: Instant) -> Option<String> {
        let cause = self.last_error.clone()?;
        Some(match self.backing_off(now) {
            Some(left) => format!("{cause}; retry in {} s", ceil_secs(left)),
            None => cause,
        })
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `min` doubled per failure after the first, capped at `max`.
fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
    min.saturating_mul(factor).min(max)
}

/// Decrements the waiter count when a waiting request finishes or is cancelled.
struct WaitSlot<'a>(&'a IssuerState);

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.waiters = inner.waiters.saturating_sub(1);
    }
}

/// A token bucket limiting how fast new meta-issuer states are created.
#[derive(Debug, Clone)]
struct Budget {
    tokens: f64,
    last: Instant,
}

impl Budget {
    fn new(opts: &VerifierOptions) -> Budget {
        Budget {
            tokens: f64::from(opts.new_meta_burst),
            last: Instant::now(),
        }
    }

    fn take(&mut self, opts: &VerifierOptions) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * f64::from(opts.new_meta_per_minute) / 60.0;
        self.tokens = (self.tokens + refill).min(f64::from(opts.new_meta_burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Issuers met through a meta pattern, with their arrival order for eviction, and the budget for
/// admitting new ones.
struct Dynamic {
    map: HashMap<String, Arc<IssuerState>>,
    order: VecDeque<String>,
    budget: Budget,
}

/// Verifies tokens against the configured issuers.
pub struct OidcVerifier {
    /// Exact issuers, by URL.
    issuers: HashMap<String, Arc<IssuerState>>,
    /// Meta issuers (wildcard patterns), tried in configuration order after the exact ones.
    meta: Vec<IssuerConfig>,
    /// Issuers met through a pattern: their keys are cached like the fixed ones.
    dynamic: Mutex<Dynamic>,
    http: reqwest::Client,
    opts: VerifierOptions,
}

/// Whether a redirect from the `previous` hops to `next` may be followed: at most two redirects,
/// every hop on the same host (GHSA-59jp-pj84-45mr class of SSRF), never from `https` down to
/// `http`, and plain `http` only on loopback.
fn redirect_allowed(previous: &[url::Url], next: &url::Url) -> bool {
    !previous.is_empty()
        && previous.len() < 3
        && previous.iter().all(|p| p.host_str() == next.host_str())
        && match next.scheme() {
            "https" => true,
            "http" => previous.iter().all(|p| p.scheme() == "http") && keyless_config::is_loopback_url(next),
            _ => false,
        }
}

/// The HTTP client for discovery and JWKS: timeouts, safe redirects only, and optionally an
/// extra CA bundle (an IdP behind a private CA).
fn build_client(extra_ca_pem: Option<&[u8]>, timeout: Duration) -> Result<reqwest::Client, String> {
    // No per-request timeout: `fetch_keys` bounds discovery and JWKS together.
    let mut b = reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if redirect_allowed(attempt.previous(), attempt.url()) {
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

fn new_state(
    config: IssuerConfig,
    label: String,
    shared: &reqwest::Client,
    opts: &VerifierOptions,
) -> Arc<IssuerState> {
    let http = match config.options.ca_cert_pem.as_ref() {
        None => shared.clone(),
        Some(pem) => match build_client(Some(pem.as_bytes()), opts.fetch_timeout) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(issuer = %config.url, error = %e, "the issuer's CA bundle is unusable");
                shared.clone()
            }
        },
    };
    Arc::new(IssuerState {
        http,
        config: Arc::new(config),
        label,
        inner: Mutex::new(Inner::default()),
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

/// Why keys are being fetched (the `reason` metrics label).
#[derive(Clone, Copy)]
enum Reason {
    First,
    Expired,
    UnknownKid,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::First => "first",
            Reason::Expired => "expired",
            Reason::UnknownKid => "unknown_kid",
        }
    }
}

impl OidcVerifier {
    /// Builds a verifier with the default options; nothing is fetched until a token arrives.
    pub fn new(issuers: &[IssuerConfig]) -> Result<OidcVerifier, OidcError> {
        OidcVerifier::with_options(issuers, VerifierOptions::default())
    }

    /// Builds a verifier with explicit options; nothing is fetched until a token arrives.
    pub fn with_options(issuers: &[IssuerConfig], opts: VerifierOptions) -> Result<OidcVerifier, OidcError> {
        let http = build_client(None, opts.fetch_timeout).map_err(|cause| OidcError::IssuerUnavailable {
            issuer: String::new(),
            cause,
        })?;
        let meta = issuers.iter().filter(|c| c.wildcard).cloned().collect();
        let exact = issuers
            .iter()
            .filter(|c| !c.wildcard)
            .map(|c| (c.url.clone(), new_state(c.clone(), c.url.clone(), &http, &opts)))
            .collect();
        Ok(OidcVerifier {
            issuers: exact,
            meta,
            dynamic: Mutex::new(Dynamic {
                map: HashMap::new(),
                order: VecDeque::new(),
                budget: Budget::new(&opts),
            }),
            http,
            opts,
        })
    }

    /// A verifier for a reloaded issuer list that keeps what this one knew: every exact issuer
    /// whose configuration is unchanged keeps its state (keys, health, back-off, last forced
    /// refresh), as does every issuer met through a pattern that is unchanged and still the first
    /// to match it; the new-issuer budget carries over. Changed and new issuers start fresh.
    /// Without this a reload would drop every cached key set, and with it the protection of
    /// stale keys during an IdP outage.
    pub fn rebuild(&self, issuers: &[IssuerConfig]) -> Result<OidcVerifier, OidcError> {
        let opts = self.opts.clone();
        let meta: Vec<IssuerConfig> = issuers.iter().filter(|c| c.wildcard).cloned().collect();
        let exact: HashMap<String, Arc<IssuerState>> = issuers
            .iter()
            .filter(|c| !c.wildcard)
            .map(|c| {
                let state = match self.issuers.get(&c.url) {
                    Some(old) if *old.config == *c => old.clone(),
                    _ => new_state(c.clone(), c.url.clone(), &self.http, &opts),
                };
                (c.url.clone(), state)
            })
            .collect();
        let old = self.lock_dynamic();
        let mut map = HashMap::new();
        let mut order = VecDeque::new();
        for iss in &old.order {
            let Some(state) = old.map.get(iss) else { continue };
            let kept = !exact.contains_key(iss)
                && meta
                    .iter()
                    .find(|m| m.matches(iss))
                    .is_some_and(|m| m.url == state.label && *state.config == m.for_issuer(iss));
            if kept && map.len() < opts.max_meta_issuers {
                map.insert(iss.clone(), state.clone());
                order.push_back(iss.clone());
            }
        }
        let budget = old.budget.clone();
        drop(old);
        Ok(OidcVerifier {
            issuers: exact,
            meta,
            dynamic: Mutex::new(Dynamic { map, order, budget }),
            http: self.http.clone(),
            opts,
        })
    }

    fn lock_dynamic(&self) -> MutexGuard<'_, Dynamic> {
        self.dynamic.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The issuer state for a token's `iss`: an exact issuer, or one a pattern matches. Only a
    /// URL that matches is ever fetched, so a token cannot point the CA at arbitrary hosts. A new
    /// issuer under a pattern is admitted only within the budget, and only by evicting an issuer
    /// without keys when the cache is full: junk issuers cannot displace working tenants.
    fn state(&self, iss: &str) -> Result<Option<Arc<IssuerState>>, OidcError> {
        if let Some(s) = self.issuers.get(iss) {
            return Ok(Some(s.clone()));
        }
        let Some(pattern) = self.meta.iter().find(|m| m.matches(iss)) else {
            return Ok(None);
        };
        let mut guard = self.lock_dynamic();
        let d = &mut *guard;
        if let Some(s) = d.map.get(iss) {
            return Ok(Some(s.clone()));
        }
        let refuse = |reason: &'static str, cause: String| {
            metrics::counter!("keyless_oidc_refusals_total", "issuer" => pattern.url.clone(), "reason" => reason)
                .increment(1);
            OidcError::NewIssuerRefused {
                pattern: pattern.url.clone(),
                cause,
            }
        };
        let evict = if d.map.len() >= self.opts.max_meta_issuers {
            // Oldest first among issuers without keys (failing or never fetched).
            let victim = d.order.iter().position(|k| d.map.get(k).is_none_or(|s| !s.has_keys()));
            match victim {
                Some(i) => Some(i),
                None => {
                    return Err(refuse(
                        "meta_full",
                        format!(
                            "all {} remembered issuers matched by patterns have keys",
                            self.opts.max_meta_issuers
                        ),
                    ));
                }
            }
        } else {
            None
        };
        if !d.budget.take(&self.opts) {
            return Err(refuse(
                "meta_budget",
                format!(
                    "more than {} new issuers per minute (burst {}) matched by patterns",
                    self.opts.new_meta_per_minute, self.opts.new_meta_burst
                ),
            ));
        }
        if let Some(i) = evict
            && let Some(k) = d.order.remove(i)
        {
            d.map.remove(&k);
        }
        let state = new_state(pattern.for_issuer(iss), pattern.url.clone(), &self.http, &self.opts);
        d.map.insert(iss.to_string(), state.clone());
        d.order.push_back(iss.to_string());
        Ok(Some(state))
    }

    /// Fetches an exact issuer's discovery document and keys now (for `keyless config check
    /// --online`); returns how many usable keys it publishes. Nothing is cached.
    pub async fn probe(&self, url: &str) -> Result<usize, String> {
        let state = self
            .issuers
            .get(url)
            .ok_or_else(|| format!("{url} is not an exact issuer"))?;
        fetch_keys(url, &state.http, self.opts.fetch_timeout)
            .await
            .map(|k| k.len())
    }

    /// Discovery/JWKS health of each exact issuer, from the last fetch (none is made here),
    /// including the back-off, e.g. `Failing("... ; retry in 8 s")`.
    pub fn health(&self) -> Vec<(String, IssuerHealth)> {
        let now = Instant::now();
        let mut out: Vec<(String, IssuerHealth)> = self
            .issuers
            .iter()
            .map(|(url, state)| {
                let inner = state.lock();
                let health = match (inner.describe_error(now), inner.keys.is_some()) {
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
        let Some(state) = self.state(unverified.issuer())? else {
            return Err(keyless_ca::Error::Token(format!(
                "issuer {:?} is not configured on this CA",
                unverified.issuer()
            ))
            .into());
        };
        let keys = self.keys(&state, false).await?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        match token::verify(unverified, state.config.clone(), &keys, now) {
            Err(keyless_ca::Error::UnknownKeyId { .. }) => {
                // The issuer may have rotated its keys: refresh (rate-limited) and retry once.
                let keys = self.keys(&state, true).await?;
                let unverified = token::parse(raw)?;
                Ok(token::verify(unverified, state.config.clone(), &keys, now)?)
            }
            other => Ok(other?),
        }
    }

    /// Usable keys for `state`. Cached keys are returned at once, even expired (a background
    /// refresh is started) or after failed refreshes. A request waits for a fetch only when there
    /// are no keys yet, or for an unknown `kid` (at most once per `unknown_kid_interval`); while
    /// the issuer backs off after a failure, no fetch is started and a keyless issuer's tokens
    /// are refused at once.
    async fn keys(&self, state: &Arc<IssuerState>, unknown_kid: bool) -> Result<Arc<IssuerKeys>, OidcError> {
        let now = Instant::now();
        let rx = {
            let mut inner = state.lock();
            let backing_off = inner.backing_off(now).is_some();
            let live = inner.live_fetch();
            match (inner.keys.clone(), unknown_kid) {
                (Some(c), false) => {
                    if c.fetched.elapsed() >= self.opts.keys_ttl && live.is_none() && !backing_off {
                        // Stale-while-revalidate: answer now, refresh in the background.
                        drop(self.start_fetch(state, &mut inner, Reason::Expired));
                    }
                    return Ok(c.keys);
                }
                (Some(c), true) => match live {
                    // A refresh is already running (perhaps the keys expired): its keys may hold
                    // the new kid.
                    Some(rx) => rx,
                    None => {
                        let recent = inner
                            .last_forced
                            .is_some_and(|t| now.duration_since(t) < self.opts.unknown_kid_interval);
                        if recent || backing_off {
                            // Fail closed with the keys we have (the kid stays unknown).
                            return Ok(c.keys);
                        }
                        inner.last_forced = Some(now);
                        self.start_fetch(state, &mut inner, Reason::UnknownKid)
                    }
                },
                (None, _) => match live {
                    Some(rx) => rx,
                    None => {
                        if backing_off {
                            state.refused("backoff");
                            let cause = inner.describe_error(now).unwrap_or_else(|| "backing off".into());
                            return Err(state.unavailable(cause));
                        }
                        self.start_fetch(state, &mut inner, Reason::First)
                    }
                },
            }
        };
        self.wait(state, rx).await
    }

    /// Waits for the fetch behind `rx` (it has a timeout of its own) and returns the keys it left,
    /// or the error it recorded. At most `max_waiters` requests wait per issuer.
    async fn wait(&self, state: &IssuerState, mut rx: watch::Receiver<()>) -> Result<Arc<IssuerKeys>, OidcError> {
        {
            let mut inner = state.lock();
            if inner.waiters >= self.opts.max_waiters {
                drop(inner);
                state.refused("waiters");
                return Err(state.unavailable(format!(
                    "{} requests are already waiting for its keys",
                    self.opts.max_waiters
                )));
            }
            inner.waiters += 1;
        }
        let _slot = WaitSlot(state);
        // The sender is dropped (never sent on) once the outcome is recorded; the extra second
        // only guards against a fetch task that outlives its own timeout.
        let _ = tokio::time::timeout(self.opts.fetch_timeout + Duration::from_secs(1), rx.changed()).await;
        let inner = state.lock();
        match &inner.keys {
            Some(c) => Ok(c.keys.clone()),
            None => Err(state.unavailable(
                inner
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "the key fetch did not finish".into()),
            )),
        }
    }

    /// Starts the one fetch for `state` in its own task (so a cancelled request never abandons
    /// it) and returns a receiver that closes when its outcome is recorded.
    fn start_fetch(&self, state: &Arc<IssuerState>, inner: &mut Inner, reason: Reason) -> watch::Receiver<()> {
        let (tx, rx) = watch::channel(());
        inner.inflight = Some(rx.clone());
        let state = state.clone();
        let opts = self.opts.clone();
        tokio::spawn(async move {
            let fetched = fetch_keys(&state.config.url, &state.http, opts.fetch_timeout).await;
            record(&state, fetched, reason, &opts);
            drop(tx);
        });
        rx
    }
}

/// Stores a fetch's outcome: new keys reset the back-off; a failure keeps any older keys (stale
/// keys beat no keys when an IdP blips) and backs off.
fn record(state: &IssuerState, fetched: Result<IssuerKeys, String>, reason: Reason, opts: &VerifierOptions) {
    let outcome = if fetched.is_ok() { "ok" } else { "error" };
    metrics::counter!("keyless_jwks_fetches_total", "issuer" => state.label.clone(), "reason" => reason.label(), "outcome" => outcome)
        .increment(1);
    let mut inner = state.lock();
    inner.inflight = None;
    match fetched {
        Ok(keys) => {
            inner.keys = Some(CachedKeys {
                keys: Arc::new(keys),
                fetched: Instant::now(),
            });
            inner.last_error = None;
            inner.failures = 0;
            inner.retry_at = None;
        }
        Err(cause) => {
            inner.failures = inner.failures.saturating_add(1);
            let delay = backoff(inner.failures, opts.backoff_min, opts.backoff_max);
            inner.retry_at = Some(Instant::now() + delay);
            tracing::warn!(issuer = %state.config.url, %cause, retry_in_ms = delay.as_millis() as u64, "OIDC key fetch failed");
            inner.last_error = Some(cause);
        }
    }
}

/// Discovery then JWKS, within `timeout` for both together.
async fn fetch_keys(issuer: &str, http: &reqwest::Client, timeout: Duration) -> Result<IssuerKeys, String> {
    match tokio::time::timeout(timeout, fetch_keys_unbounded(issuer, http)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "discovery and JWKS did not arrive within {} ms",
            timeout.as_millis()
        )),
    }
}

async fn fetch_keys_unbounded(issuer: &str, http: &reqwest::Client) -> Result<IssuerKeys, String> {
    let discovery_url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let jwks_url = parse_discovery(issuer, &get(http, &discovery_url).await?)?;
    let keys = parse_jwks(&get(http, jwks_url.as_str()).await?)?;
    tracing::info!(issuer, keys = keys.len(), "fetched OIDC signing keys");
    Ok(keys)
}

/// Reads the discovery document fetched for `issuer`: it must name exactly `issuer` and a
/// `jwks_uri` that is `https` (plain `http` only on loopback). Returns where the keys are.
///
/// Public because the document comes from whatever host a token names, so the fuzz tests
/// (`tests/tests/fuzz.rs`) feed it hostile bytes; the key fetch calls exactly this.
pub fn parse_discovery(issuer: &str, body: &[u8]) -> Result<url::Url, String> {
    let doc: Discovery = serde_json::from_slice(body)
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
    Ok(jwks_url)
}

/// Reads a fetched JWKS into the keys that can verify tokens; a set with none is an error.
///
/// Public for the same reason as [`parse_discovery`]: the key fetch calls exactly this.
pub fn parse_jwks(body: &[u8]) -> Result<IssuerKeys, String> {
    let jwks: JwkSet = serde_json::from_slice(body).map_err(|e| format!("JWKS is not a valid key set: {e}"))?;
    let keys = IssuerKeys::from_jwks(&jwks);
    if keys.is_empty() {
        return Err("JWKS holds no usable signing key".into());
    }
    Ok(keys)
}

/// GETs a document under the size limit.
async fn get(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", with_sources(&e)))?;
    if resp.status().is_redirection() {
        // The redirect policy stopped here (another host, or https to http).
        return Err(format!("GET {url}: redirect refused (HTTP {})", resp.status()));
    }
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    if resp.content_length().is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64) {
        return Err(format!("GET {url}: response larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {}", with_sources(&e)))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("GET {url}: response larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its causes ("error sending request: connection refused"), for the operator's log:
/// reqwest's own message alone does not say what went wrong.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn redirect_policy() {
        let https = [u("https://idp.example/a")];
        assert!(redirect_allowed(&https, &u("https://idp.example/b")));
        assert!(redirect_allowed(&https, &u("https://idp.example:8443/b")));
        assert!(!redirect_allowed(&https, &u("http://idp.example/b")), "https to http");
        assert!(!redirect_allowed(&https, &u("https://evil.example/b")), "another host");
        let loop_http = [u("http://127.0.0.1:1/a")];
        assert!(redirect_allowed(&loop_http, &u("http://127.0.0.1:2/b")));
        assert!(redirect_allowed(&loop_http, &u("https://127.0.0.1:2/b")));
        assert!(
            !redirect_allowed(&loop_http, &u("http://localhost:1/b")),
            "another host"
        );
        // Once a hop was https, http is refused even if an earlier hop was http.
        let mixed = [u("http://127.0.0.1/a"), u("https://127.0.0.1/b")];
        assert!(!redirect_allowed(&mixed, &u("http://127.0.0.1/c")));
        assert!(
            !redirect_allowed(&[u("http://idp.example/a")], &u("http://idp.example/b")),
            "plain http off loopback"
        );
        let three = [
            u("https://idp.example/1"),
            u("https://idp.example/2"),
            u("https://idp.example/3"),
        ];
        assert!(!redirect_allowed(&three, &u("https://idp.example/4")), "too many hops");
        assert!(!redirect_allowed(&https, &u("ftp://idp.example/b")));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let seq: Vec<u64> = (1..=8).map(|n| backoff(n, min, max).as_secs()).collect();
        assert_eq!(seq, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX, min, max), max);
    }

    #[test]
    fn budget_refills_at_its_rate() {
        let opts = VerifierOptions {
            new_meta_per_minute: 60,
            new_meta_burst: 2,
            ..VerifierOptions::default()
        };
        let mut b = Budget::new(&opts);
        assert!(b.take(&opts) && b.take(&opts));
        assert!(!b.take(&opts), "burst spent");
        b.last -= Duration::from_millis(1100);
        assert!(b.take(&opts), "one per second at 60/min");
        assert!(!b.take(&opts));
    }
}
