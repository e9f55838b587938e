//! What the verifier remembers of each issuer: cached keys, the fetch in flight (single flight),
//! failures and their back-off, and the budget for admitting issuers met through a meta pattern.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use keyless_ca::token::IssuerKeys;
use keyless_config::IssuerConfig;
use tokio::sync::watch;

use crate::fetch::{Redirects, build_client};
use crate::{OidcError, VerifierOptions};

/// One issuer's keys and fetch history. Shared (via `Arc`) by a verifier, the background fetch
/// task and, across a reload, the next verifier.
pub(crate) struct IssuerState {
    pub(crate) config: Arc<IssuerConfig>,
    /// The configured URL (the pattern, for an issuer met through one): the metrics label.
    pub(crate) label: String,
    /// The client for this issuer (one that also trusts its CA bundle, when one is configured).
    pub(crate) http: reqwest::Client,
    pub(crate) inner: Mutex<Inner>,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub(crate) keys: Option<CachedKeys>,
    /// Why the last discovery/JWKS fetch failed (`None` after a success).
    pub(crate) last_error: Option<String>,
    /// Consecutive failed fetches (the back-off exponent).
    pub(crate) failures: u32,
    /// No fetch is started before this (back-off after a failure).
    pub(crate) retry_at: Option<Instant>,
    /// When an unknown `kid` last forced a re-fetch.
    pub(crate) last_forced: Option<Instant>,
    /// The fetch in flight: its sender is dropped when the outcome has been recorded.
    pub(crate) inflight: Option<watch::Receiver<()>>,
    /// Requests waiting for the fetch in flight.
    pub(crate) waiters: usize,
}

#[derive(Clone)]
pub(crate) struct CachedKeys {
    pub(crate) keys: Arc<IssuerKeys>,
    pub(crate) fetched: Instant,
}

impl IssuerState {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave `Inner` half-updated in a harmful way.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn has_keys(&self) -> bool {
        self.lock().keys.is_some()
    }

    pub(crate) fn unavailable(&self, cause: String) -> OidcError {
        OidcError::IssuerUnavailable {
            issuer: self.config.url.clone(),
            cause,
        }
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        metrics::counter!("keyless_oidc_refusals_total", "issuer" => self.label.clone(), "reason" => reason)
            .increment(1);
    }
}

impl Inner {
    /// Time left in the back-off, if any.
    pub(crate) fn backing_off(&self, now: Instant) -> Option<Duration> {
        self.retry_at.filter(|t| *t > now).map(|t| t - now)
    }

    /// The fetch in flight, unless its task was dropped without recording an outcome.
    pub(crate) fn live_fetch(&self) -> Option<watch::Receiver<()>> {
        self.inflight.clone().filter(|rx| rx.has_changed().is_ok())
    }

    /// The last error with the back-off, for health and refusals.
    pub(crate) fn describe_error(&self, now: Instant) -> Option<String> {
        let cause = self.last_error.clone()?;
        Some(match self.backing_off(now) {
            Some(left) => format!("{cause}; retry in {} s", ceil_secs(left)),
            None => cause,
        })
    }
}

pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `min` doubled per failure after the first, capped at `max`.
pub(crate) fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
    min.saturating_mul(factor).min(max)
}

/// Decrements the waiter count when a waiting request finishes or is cancelled.
pub(crate) struct WaitSlot<'a>(pub(crate) &'a IssuerState);

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.waiters = inner.waiters.saturating_sub(1);
    }
}

/// A token bucket limiting how fast new meta-issuer states are created.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    pub(crate) tokens: f64,
    pub(crate) last: Instant,
}

impl Budget {
    pub(crate) fn new(opts: &VerifierOptions) -> Budget {
        Budget {
            tokens: f64::from(opts.new_meta_burst),
            last: Instant::now(),
        }
    }

    pub(crate) fn take(&mut self, opts: &VerifierOptions) -> bool {
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
pub(crate) struct Dynamic {
    pub(crate) map: HashMap<String, Arc<IssuerState>>,
    pub(crate) order: VecDeque<String>,
    pub(crate) budget: Budget,
}

pub(crate) fn new_state(
    config: IssuerConfig,
    label: String,
    shared: &reqwest::Client,
    opts: &VerifierOptions,
) -> Arc<IssuerState> {
    let o = &config.options;
    if o.insecure_plain_http {
        tracing::warn!(
            issuer = %config.url,
            "INSECURE: this issuer's discovery and keys are fetched over plain http (insecure_plain_http): \
             anyone on the network path can substitute its keys and obtain certificates for any identity it vouches for"
        );
    }
    if let Some(ic) = &o.in_cluster {
        tracing::info!(
            issuer = %config.url,
            token_file = %ic.token_file.display(),
            "in-cluster issuer: discovery and keys are fetched with the service-account token, sent to the issuer's origin only"
        );
    }
    let redirects = if o.insecure_plain_http {
        Redirects::SafeWithPlainHttp
    } else {
        Redirects::Safe
    };
    // An in-cluster issuer builds its client per fetch (fetch::fetch_keys); this one is unused.
    let http = match o.ca_cert_pem.as_ref() {
        None if redirects == Redirects::Safe || o.in_cluster.is_some() => shared.clone(),
        pem => match build_client(
            &pem.map(|p| p.as_bytes()).into_iter().collect::<Vec<_>>(),
            opts.fetch_timeout,
            redirects,
        ) {
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

/// Why keys are being fetched (the `reason` metrics label).
#[derive(Clone, Copy)]
pub(crate) enum Reason {
    First,
    Expired,
    UnknownKid,
}

impl Reason {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Reason::First => "first",
            Reason::Expired => "expired",
            Reason::UnknownKid => "unknown_kid",
        }
    }
}

/// Stores a fetch's outcome: new keys reset the back-off; a failure keeps any older keys (stale
/// keys beat no keys when an IdP blips) and backs off.
pub(crate) fn record(state: &IssuerState, fetched: Result<IssuerKeys, String>, reason: Reason, opts: &VerifierOptions) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
