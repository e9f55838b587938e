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

mod fetch;
mod state;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use keyless_ca::token::{self, IssuerKeys, VerifiedToken};
use keyless_config::IssuerConfig;
use tokio::sync::watch;

use crate::fetch::{Redirects, build_client, fetch_keys};
pub use crate::fetch::{parse_discovery, parse_jwks};
use crate::state::{Budget, Dynamic, Inner, IssuerState, Reason, WaitSlot, new_state, record};

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

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuers", &self.issuers.keys())
            .finish()
    }
}

impl OidcVerifier {
    /// Builds a verifier with the default options; nothing is fetched until a token arrives.
    pub fn new(issuers: &[IssuerConfig]) -> Result<OidcVerifier, OidcError> {
        OidcVerifier::with_options(issuers, VerifierOptions::default())
    }

    /// Builds a verifier with explicit options; nothing is fetched until a token arrives.
    pub fn with_options(issuers: &[IssuerConfig], opts: VerifierOptions) -> Result<OidcVerifier, OidcError> {
        let http =
            build_client(&[], opts.fetch_timeout, Redirects::Safe).map_err(|cause| OidcError::IssuerUnavailable {
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
        fetch_keys(&state.config, &state.http, self.opts.fetch_timeout)
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
            let fetched = fetch_keys(&state.config, &state.http, opts.fetch_timeout).await;
            record(&state, fetched, reason, &opts);
            drop(tx);
        });
        rx
    }
}
