//! Keyless CA's issuance service: one orchestration of a signing request, whatever front door it
//! came through, and no knowledge of any transport.
//!
//! A front door (the Fulcio REST API today, gRPC later) decodes its request into an
//! [`IssueRequest`], calls [`Service::issue`], and encodes the chain or the [`Error`]. The service
//! runs every gate as a capability the next step needs — `VerifiedToken` (OIDC) → `Principal`
//! (identity) → `Permitted` (claim policy passed, rate limits charged) → `ProvenKey` (possession)
//! → a prepared, then issued certificate — and records every outcome in the issuance record.
//!
//! - [`issuance`]: deciding and issuing, with intents recorded before anything leaves the CA;
//! - [`limiter`]: token buckets per token owner and per issuer;
//! - [`redact`]: bounding and redacting client text before it is answered, logged or recorded;
//! - [`instrument`]: metrics around the CA signer and the CT log;
//! - [`error`]: the refusal classes and client messages every front door shares.

#![forbid(unsafe_code)]

pub mod error;
pub mod instrument;
pub mod issuance;
pub mod limiter;
pub mod redact;

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use keyless_audit::store::AuditLog;
use keyless_ca::CertificateAuthority;
use keyless_config::{IssuerConfig, RateLimits};
use keyless_oidc::{IssuerHealth, OidcVerifier};

pub use crate::error::{Error, Kind};
pub use crate::issuance::{IssueRequest, KeyMaterial};
pub use crate::limiter::RateLimiter;

/// The trusted issuers and their verifier: swapped as a whole on reload, so a request sees one
/// consistent set from start to end.
pub struct IssuerSet {
    /// Token verification.
    pub oidc: OidcVerifier,
    /// Issuers as advertised (`/api/v2/configuration`).
    pub list: Vec<IssuerConfig>,
    /// Rate limits for issuers without their own.
    pub rate_limits: RateLimits,
}

/// How readiness reaches the CT log.
pub enum CtProbe {
    /// `ct_log: disabled`.
    Disabled,
    /// In this process: ready while it runs.
    Embedded,
    /// A remote RFC 6962 log: `get-sth` must answer.
    Remote(keyless_ctlog::RemoteLog),
}

/// What the service is built from.
pub struct Parts {
    /// The issuing CA (with its CT log bound, if any).
    pub ca: Arc<CertificateAuthority>,
    /// The chain as PEM (newline-terminated), issuing CA first, root last.
    pub chain_pem: Vec<String>,
    /// Where certificates are logged: a log URL, or `disabled`.
    pub ct_log: String,
    /// How readiness checks the CT log.
    pub ct_probe: CtProbe,
    /// The issuers in force at start.
    pub issuers: IssuerSet,
    /// The issuance record (`None` when `audit.enabled` is false).
    pub audit: Option<AuditLog>,
    /// The rate limiter: in memory, or shared by replicas through the record's database.
    pub limiter: RateLimiter,
    /// Issuances in progress at most (they outlive their requests, so they are bounded on their own).
    pub max_in_progress: usize,
}

/// The issuance service.
pub struct Service {
    ca: Arc<CertificateAuthority>,
    chain_pem: Vec<String>,
    ct_log: String,
    ct_probe: CtProbe,
    issuers: RwLock<Arc<IssuerSet>>,
    limiter: RateLimiter,
    audit: Option<AuditLog>,
    issuing: Arc<tokio::sync::Semaphore>,
}

impl Service {
    /// A service over `parts`.
    pub fn new(parts: Parts) -> Service {
        Service {
            ca: parts.ca,
            chain_pem: parts.chain_pem,
            ct_log: parts.ct_log,
            ct_probe: parts.ct_probe,
            issuers: RwLock::new(Arc::new(parts.issuers)),
            limiter: parts.limiter,
            audit: parts.audit,
            issuing: Arc::new(tokio::sync::Semaphore::new(parts.max_in_progress.max(1))),
        }
    }

    /// The issuer set in force now.
    pub fn current_issuers(&self) -> Arc<IssuerSet> {
        self.issuers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the issuer set in one swap (requests in flight finish with the one they started
    /// with).
    pub fn replace_issuers(&self, set: IssuerSet) {
        *self.issuers.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }

    /// The CA chain as PEM, issuing CA first, root last.
    pub fn chain_pem(&self) -> &[String] {
        &self.chain_pem
    }

    /// Where certificates are logged: the log's URL, or `disabled`.
    pub fn ct_log(&self) -> &str {
        &self.ct_log
    }

    /// The issuance record, when it is kept.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// Checks every dependency now: the signer signs and verifies a probe, the CA chain covers a
    /// new certificate, the CT log answers, the record is writable, issuers are configured; and
    /// reports each issuer's discovery health from its last fetch (never failing on it: one IdP
    /// being down must not take the CA out of rotation for everyone else).
    pub async fn readiness(&self) -> Readiness {
        let ca = self.ca.clone();
        let signer = match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::task::spawn_blocking(move || ca.check_signer()),
        )
        .await
        {
            Ok(Ok(Ok(()))) => self.ca.check_validity(SystemTime::now()),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(e)) => Err(format!("signer check failed: {e}")),
            Err(_) => Err("signer did not answer within 5 s".to_string()),
        };
        let ct_log = match &self.ct_probe {
            CtProbe::Disabled => Ok("disabled"),
            CtProbe::Embedded => Ok("ok"),
            CtProbe::Remote(log) => match tokio::time::timeout(Duration::from_secs(3), log.probe()).await {
                Ok(Ok(_)) => Ok("ok"),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("{} did not answer get-sth within 3 s", self.ct_log)),
            },
        };
        let issuers = self.current_issuers();
        let config = if issuers.list.is_empty() {
            Err("no issuers are configured".to_string())
        } else {
            Ok(())
        };
        let record = match &self.audit {
            None => Ok("disabled"),
            Some(a) if a.available() => Ok("ok"),
            Some(_) => Err("the issuance record cannot be written (see the log)".to_string()),
        };
        Readiness {
            signer,
            ct_log,
            config,
            record,
            issuers: issuers.oidc.health(),
        }
    }
}

/// What [`Service::readiness`] found.
pub struct Readiness {
    /// The signer and the CA chain's validity.
    pub signer: Result<(), String>,
    /// `ok` or `disabled`, or why the log does not answer.
    pub ct_log: Result<&'static str, String>,
    /// Issuers configured.
    pub config: Result<(), String>,
    /// `ok` or `disabled`, or why the record cannot be written.
    pub record: Result<&'static str, String>,
    /// Each exact issuer's discovery health, by URL.
    pub issuers: Vec<(String, IssuerHealth)>,
}

impl Readiness {
    /// Whether the CA can issue.
    pub fn ready(&self) -> bool {
        self.signer.is_ok() && self.ct_log.is_ok() && self.config.is_ok() && self.record.is_ok()
    }
}

/// A certificate was issued (by issuer kind and configured issuer; never the subject), also
/// under Fulcio's name and (lack of) labels, for every front door alike.
fn count_issued(kind: &str, issuer: &str) {
    metrics::counter!("keyless_certificates_issued_total", "issuer_kind" => kind.to_string(), "issuer" => issuer.to_string())
        .increment(1);
    metrics::counter!("fulcio_new_certs").increment(1);
}
