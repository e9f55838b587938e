//! Issuance as one unit of work, whatever front door a request came through.
//!
//! [`issue`] decides (token → identity → policy → rate limits → possession → a prepared leaf) and
//! then hands the rest to a task of its own: the intent is recorded durably before anything leaves
//! the CA, the precertificate is logged, the certificate is signed and recorded as issued (or the
//! intent as abandoned). That task runs to completion even if the client disconnects or its request
//! times out, so a logged precertificate always has its intent and outcome in the record and
//! `keyless audit cross-check` never mistakes an abandoned issuance for the CA key signing outside
//! the service.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use keyless_audit::record::{Decision, Intent, Record, Rejection, hex};
use keyless_ca::policy::{Permitted, Refused};
use keyless_ca::{KeyRequest, Prepared, identity, possession};
use tracing::Instrument as _;

use crate::{Error, Service, redact};

/// The client's key, owned, so an issuance can outlive the request that asked for it.
pub enum KeyMaterial {
    /// A public key (PEM or DER) and a signature over the identity's challenge.
    Signature {
        /// PEM or DER SubjectPublicKeyInfo (or PKCS#1).
        public_key: Vec<u8>,
        /// The proof of possession.
        proof: Vec<u8>,
    },
    /// A self-signed CSR, PEM.
    Csr {
        /// PEM text.
        pem: Vec<u8>,
    },
}

impl KeyMaterial {
    fn as_request(&self) -> KeyRequest<'_> {
        match self {
            KeyMaterial::Signature { public_key, proof } => KeyRequest::Signature { public_key, proof },
            KeyMaterial::Csr { pem } => KeyRequest::Csr { pem },
        }
    }
}

/// A decoded signing request.
pub struct IssueRequest {
    /// The raw OIDC token.
    pub token: String,
    /// The key to certify.
    pub key: KeyMaterial,
    /// The request id, for the record and the log.
    pub request_id: String,
    /// When the front door will have given up on the request: past it, no issuance is started
    /// (and waiting for an IdP's keys ends).
    pub deadline: Option<std::time::Instant>,
}

impl IssueRequest {
    /// The raw token (only digests of it are ever recorded).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The key material.
    pub fn key(&self) -> &KeyMaterial {
        &self.key
    }
}

/// What the record learns about a request on its way through. No `Debug`, so the token it points
/// at cannot reach a log; digests are computed only when a record needs them.
#[derive(Default)]
struct Facts {
    issuer: Option<String>,
    kind: Option<&'static str>,
    subject: Option<String>,
    key_sha256: Option<String>,
    claims_sha256: Option<String>,
}

impl Service {
    /// Decides `req` and, if it passes, issues: returns the PEM chain (leaf first, through the
    /// root). Every outcome is recorded: refusals best effort, everything from the intent on
    /// durably.
    pub async fn issue(self: &Arc<Self>, req: IssueRequest) -> Result<Vec<String>, Error> {
        issue(self, req).await
    }

    /// Records the refusal of a request a front door could not even decode (`class` and the
    /// message it answered, which is bounded and redacted here).
    pub fn refuse_undecoded(&self, request_id: &str, class: &'static str, message: &str) {
        record_refusal(self, request_id, Facts::default(), class, redact::message(message));
    }
}

async fn issue(state: &Arc<Service>, req: IssueRequest) -> Result<Vec<String>, Error> {
    let mut facts = Facts::default();
    match decide(state, &req, &mut facts).await {
        Ok((prepared, permit)) => {
            let state = state.clone();
            let request_id = req.request_id;
            let claims = keyless_ca::token::claims_sha256(&req.token).map(|d| hex(&d));
            facts.claims_sha256 = claims;
            // From here on the work is the CA's, not the request's: it finishes either way (in the
            // request's span, so its log lines keep the request id).
            let span = tracing::Span::current();
            tokio::spawn(
                async move {
                    let _permit = permit;
                    complete(&state, &request_id, facts, prepared).await
                }
                .instrument(span),
            )
            .await
            .map_err(|e| Error::Internal(format!("issuance task failed: {e}")))?
        }
        Err(e) => {
            refuse(state, &req.request_id, Some(&req), facts, &e);
            Err(e)
        }
    }
}

/// Everything that may refuse before the CA commits to a certificate.
/// Everything that may refuse before the CA commits to a certificate, each gate producing the
/// capability the next one needs.
async fn decide(
    state: &Service,
    req: &IssueRequest,
    facts: &mut Facts,
) -> Result<(Prepared, tokio::sync::OwnedSemaphorePermit), Error> {
    let issuers = state.current_issuers();
    let token = match req.deadline {
        None => issuers.oidc.verify(&req.token).await?,
        Some(deadline) => tokio::time::timeout_at(deadline.into(), issuers.oidc.verify(&req.token))
            .await
            .map_err(|_| Error::DeadlineExceeded)??,
    };
    let principal = identity::principal(&token)?;
    facts.issuer = Some(principal.issuer_url().to_string());
    facts.kind = Some(principal.kind().as_str());
    facts.subject = Some(principal.san().value().to_string());
    let limits = issuers.rate_limits.with(&token.issuer().options.rate_limits);
    let permitted: Permitted = keyless_ca::policy::permit_async(&token, principal, |p| {
        let (issuer, owner) = (p.issuer_url().to_string(), p.rate_key().to_string());
        async move { state.limiter.check(&issuer, &owner, limits, Instant::now()).await }
    })
    .await
    .map_err(|refused| match refused {
        Refused::Policy(e) => {
            tracing::warn!(issuer = facts.issuer.as_deref(), subject = facts.subject.as_deref(), cause = %e, "refused by policy");
            Error::from(e)
        }
        Refused::Limited(e) => e,
    })?;
    let proven = possession::prove(
        permitted.principal(),
        req.key.as_request(),
        state.ca.client_algorithms(),
    )?;
    facts.key_sha256 = Some(hex(&keyless_ca::keys::sha256(proven.public_key().spki_der())));
    if req.deadline.is_some_and(|d| Instant::now() >= d) {
        return Err(Error::DeadlineExceeded);
    }
    let prepared = state.ca.prepare(&permitted, &proven, SystemTime::now())?;
    // Issuances outlive their requests, so their number is bounded on its own.
    let permit = state
        .issuing
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::Overloaded)?;
    Ok((prepared, permit))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn record(request_id: &str, facts: &Facts, decision: Decision, rule: String) -> Record {
    Record {
        seq: 0,
        time_ms: now_ms(),
        request_id: request_id.to_string(),
        issuer: facts.issuer.clone(),
        subject: facts.subject.clone(),
        claims_sha256: facts.claims_sha256.clone(),
        key_sha256: facts.key_sha256.clone(),
        decision,
        rule,
        certificate: None,
        rejection: None,
        intent: None,
        intent_seq: None,
    }
}

fn audit_error(e: keyless_audit::AuditError) -> Error {
    match e {
        keyless_audit::AuditError::Unavailable(cause) => Error::RecordUnavailable(cause),
        other => Error::Internal(format!("issuance record: {other}")),
    }
}

/// Records the intent, logs and signs, records the outcome.
async fn complete(state: &Service, request_id: &str, facts: Facts, prepared: Prepared) -> Result<Vec<String>, Error> {
    let issuer = facts.issuer.clone().unwrap_or_default();
    let kind = facts.kind.unwrap_or("unknown");
    let san = facts.subject.clone().unwrap_or_default();
    let rule = format!("{kind} identity of issuer {issuer}; claim policy and rate limits passed");
    // The intent is durable before a precertificate can reach a CT log. Without CT nothing leaves
    // the CA before the certificate itself, which is recorded before it is released.
    let mut intent_seq = None;
    let mut intent = None;
    if let (Some(audit), Some(_)) = (&state.audit, state.ca.ct_log_id()) {
        let mut r = record(request_id, &facts, Decision::Intent, rule.clone());
        let announced = Intent::of_prepared(&prepared, &state.ct_log);
        // The audit tools read intents back through a parse of the TBS: both readings agree.
        debug_assert_eq!(
            Intent::of_tbs(prepared.tbs_der(), &state.ct_log).ok().as_ref(),
            Some(&announced)
        );
        r.intent = Some(announced);
        intent = r.intent.clone();
        match audit.append_durable(r).await {
            Ok(seq) => intent_seq = Some(seq),
            Err(e) => {
                let e = audit_error(e);
                refuse(state, request_id, None, facts, &e);
                return Err(e);
            }
        }
    }
    let serial = prepared.serial().to_string();
    let issued = if state.ca.signer_blocks() {
        // An HSM round trip must not stall the async workers: issue on a blocking thread.
        let ca = state.ca.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || handle.block_on(ca.complete(prepared)))
            .await
            .map_err(|e| Error::Internal(format!("issuance task failed: {e}")))
            .and_then(|r| r.map_err(Error::from))
    } else {
        state.ca.complete(prepared).await.map_err(Error::from)
    };
    let issued = match issued {
        Ok(i) => i,
        Err(e) => {
            match (&state.audit, intent_seq) {
                (Some(audit), Some(seq)) => {
                    let message = e.message();
                    let mut r = record(request_id, &facts, Decision::Abandoned, e.class().to_string());
                    r.intent_seq = Some(seq);
                    r.intent = intent;
                    r.rejection = Some(Rejection {
                        class: e.class().to_string(),
                        message: format!("certificate {serial} abandoned: {message}"),
                    });
                    if let Err(re) = audit.append_durable(r).await {
                        tracing::error!(error = %re, serial, "the abandoned issuance could not be recorded; its intent stays open");
                    }
                }
                _ => refuse(state, request_id, None, facts, &e),
            }
            return Err(e);
        }
    };
    if let Some(audit) = &state.audit {
        // The record is durable before the certificate leaves: an issuance the record does not
        // hold is never released (fail closed).
        let certificate = keyless_audit::record::certificate_facts(
            &issued.der,
            issued.sct.as_ref().map(|s| (&s.log_id, s.timestamp)),
            issued.leaf_index,
        )
        .map_err(|e| Error::Internal(format!("audit record: {e}")))?;
        let mut r = record(request_id, &facts, Decision::Issued, rule);
        r.certificate = Some(certificate);
        r.intent_seq = intent_seq;
        audit.append_durable(r).await.map_err(audit_error)?;
    }
    let (sct_log_id, sct_timestamp) = match &issued.sct {
        Some(sct) => (hex(&sct.log_id), sct.timestamp),
        None => ("none (CT disabled)".to_string(), 0),
    };
    tracing::info!(issuer, kind, subject = %san, serial = %issued.serial, sct_log_id, sct_timestamp, leaf_index = ?issued.leaf_index, "certificate issued");
    crate::count_issued(kind, &issuer);
    let mut chain = vec![issued.pem()];
    chain.extend(state.chain_pem.iter().cloned());
    Ok(chain)
}

/// Records a refusal, best effort: the record's writer drops it (and counts the drop) rather than
/// let refusals slow or fail issuance. What it keeps of the client's input is bounded and
/// redacted: the claimed issuer and subject, digests of the claims and of the key, and the message
/// the client got.
fn refuse(state: &Service, request_id: &str, req: Option<&IssueRequest>, mut facts: Facts, err: &Error) {
    // Shedding and deadlines are not decisions about an identity.
    if matches!(err, Error::Overloaded | Error::DeadlineExceeded) {
        return;
    }
    if let Some(req) = req {
        facts.claims_sha256 = keyless_ca::token::claims_sha256(&req.token).map(|d| hex(&d));
        if (facts.issuer.is_none() || facts.subject.is_none())
            && let Ok(token) = keyless_ca::token::parse(&req.token)
        {
            facts.issuer.get_or_insert_with(|| redact::field(token.issuer()));
            if let Some(sub) = token.subject() {
                facts.subject.get_or_insert_with(|| redact::field(sub));
            }
        }
        if facts.key_sha256.is_none()
            && let KeyMaterial::Signature { public_key, .. } = &req.key
        {
            facts.key_sha256 = keyless_ca::keys::PublicKey::from_pem_or_der(public_key)
                .ok()
                .map(|k| hex(&keyless_ca::keys::sha256(k.spki_der())));
        }
    }
    record_refusal(state, request_id, facts, err.class(), err.message());
}

fn record_refusal(state: &Service, request_id: &str, facts: Facts, class: &'static str, message: String) {
    let Some(audit) = &state.audit else { return };
    let mut r = record(request_id, &facts, Decision::Rejected, class.to_string());
    r.rejection = Some(Rejection {
        class: class.to_string(),
        message,
    });
    audit.append(r);
}
