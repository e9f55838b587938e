//! Fulcio's REST API.
//!
//! Request flow for `signingCert` (both versions): size limit → JSON → token (body or
//! `Authorization: Bearer`) → [`keyless_oidc::OidcVerifier::verify`] → identity mapping → policy →
//! rate limits → proof of possession → [`keyless_ca::CertificateAuthority::issue`] → PEM chain.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keyless_ca::{CertificateAuthority, KeyRequest, identity, possession};
use keyless_config::{IssuerConfig, RateLimits};
use keyless_oidc::{IssuerHealth, OidcVerifier};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::protect::{RateLimiter, RequestId};
use crate::wire;
use keyless_audit::record::{Decision, Record, Rejection, hex};

/// Bodies larger than this are refused before parsing (Fulcio's 4 MiB).
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// The trusted issuers and their verifier: swapped as a whole on reload, so a request sees one
/// consistent set from start to end.
pub struct Issuers {
    /// Token verification.
    pub oidc: OidcVerifier,
    /// Issuers as advertised by `/api/v2/configuration`.
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

/// What the handlers share.
pub struct AppState {
    /// The issuing CA.
    pub ca: Arc<CertificateAuthority>,
    /// The current issuers (replaced atomically by a configuration reload).
    pub issuers: std::sync::RwLock<Arc<Issuers>>,
    /// The chain as PEM (newline-terminated), issuing CA first, root last.
    pub chain_pem: Vec<String>,
    /// Where certificates are logged: a log URL, or `disabled`.
    pub ct_log: String,
    /// How `/readyz` checks the CT log.
    pub ct_probe: CtProbe,
    /// Per-identity and per-issuer token buckets.
    pub limiter: RateLimiter,
    /// The last readiness answer, reused for a second so probes cannot hammer the HSM.
    pub readiness: Mutex<Option<(Instant, StatusCode, Value)>>,
    /// The issuance record (`None` when `audit.enabled` is false).
    pub audit: Option<keyless_audit::store::AuditLog>,
}

impl AppState {
    /// The issuer set in force now.
    pub fn current_issuers(&self) -> Arc<Issuers> {
        self.issuers.read().expect("poisoned").clone()
    }
}

/// The API router. Extra routes (the development issuer) are merged by the caller.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/api/v2/signingCert",
            post(signing_cert_v2).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/signingCert",
            post(signing_cert_v1).fallback(method_not_allowed),
        )
        .route("/api/v2/trustBundle", get(trust_bundle).fallback(method_not_allowed))
        .route("/api/v2/configuration", get(configuration).fallback(method_not_allowed))
        .route("/api/v1/rootCert", get(root_cert).fallback(method_not_allowed))
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/readyz", get(readyz).fallback(method_not_allowed))
        .route_layer(axum::middleware::from_fn(crate::protect::observe))
        .fallback(not_found)
        // The limit is enforced on the declared length up front and while reading a body of
        // unknown length, always before any parsing.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
        .with_state(state)
}

/// Collapses a run of leading slashes to one before routing: sigstore-js builds
/// `${baseURL}/api/v2/signingCert`, so a base URL that ends in `/` asks for `//api/...`.
pub async fn collapse_leading_slashes(mut req: axum::extract::Request) -> axum::extract::Request {
    let uri = req.uri();
    if uri.path().starts_with("//") {
        let path = format!("/{}", uri.path().trim_start_matches('/'));
        let path_and_query = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = path_and_query.parse().ok();
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// Answers 413 at once when `Content-Length` is over the limit, without reading the body.
async fn refuse_declared_oversize(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return ApiError::TooLarge(MAX_BODY_BYTES).into_response();
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Liveness: the process serves requests.
async fn healthz(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"status": "SERVING", "ctLog": state.ct_log}))
}

/// Readiness: the signer signs and verifies a probe, the CT log answers, and issuers are
/// configured. Per-issuer discovery health is reported but never fails readiness: one IdP being
/// down must not take the CA out of rotation for everyone else.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if let Some((at, status, body)) = state.readiness.lock().expect("poisoned").clone()
        && at.elapsed() < Duration::from_secs(1)
    {
        return (status, Json(body)).into_response();
    }
    let ca = state.ca.clone();
    let signer = match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || ca.check_signer()),
    )
    .await
    {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(e)) => Err(format!("signer check failed: {e}")),
        Err(_) => Err("signer did not answer within 5 s".to_string()),
    };
    let ct = match &state.ct_probe {
        CtProbe::Disabled => Ok("disabled"),
        CtProbe::Embedded => Ok("ok"),
        CtProbe::Remote(log) => match tokio::time::timeout(Duration::from_secs(3), log.probe()).await {
            Ok(Ok(_)) => Ok("ok"),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("{} did not answer get-sth within 3 s", state.ct_log)),
        },
    };
    let issuers = state.current_issuers();
    let config: Result<(), String> = if issuers.list.is_empty() {
        Err("no issuers are configured".into())
    } else {
        Ok(())
    };
    let per_issuer: serde_json::Map<String, Value> = issuers
        .oidc
        .health()
        .into_iter()
        .map(|(url, h)| {
            let text = match h {
                IssuerHealth::Ok => "ok".to_string(),
                IssuerHealth::NotFetched => "keys not fetched yet".to_string(),
                IssuerHealth::Stale(c) => format!("using cached keys; last fetch failed: {c}"),
                IssuerHealth::Failing(c) => format!("unavailable: {c}"),
            };
            (url, Value::String(text))
        })
        .collect();
    let ready = signer.is_ok() && ct.is_ok() && config.is_ok();
    if !ready {
        tracing::warn!(signer = ?signer.as_ref().err(), ct_log = ?ct.as_ref().err(), config = ?config.as_ref().err(), "not ready");
    }
    let text = |r: Result<&str, &String>| match r {
        Ok(s) => s.to_string(),
        Err(e) => format!("unavailable: {e}"),
    };
    let body = json!({
        "ready": ready,
        "signer": text(signer.as_ref().map(|()| "ok")),
        "ctLog": text(ct.as_ref().copied()),
        "config": text(config.as_ref().map(|()| "ok")),
        "issuers": per_issuer,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    *state.readiness.lock().expect("poisoned") = Some((Instant::now(), status, body.clone()));
    (status, Json(body)).into_response()
}

/// Reads the body under the size limit (a rejection here means it was too large or unreadable).
fn body_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(MAX_BODY_BYTES)
        } else {
            ApiError::BadRequest(format!("cannot read the request body: {e}"))
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON for this endpoint: {e}")))
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(str::to_string)
}

/// What the audit record learns about a request on its way through the pipeline. It holds the
/// raw token and key only to derive digests from them, and only when a record needs them, so the
/// issuance path parses nothing twice; it has no `Debug` so the token cannot reach a log.
#[derive(Default)]
pub(crate) struct Seen {
    raw_token: String,
    public_key: Vec<u8>,
    /// The certificate identity, once the token verified.
    subject: Option<String>,
    /// The proven key's digest, once possession is proven.
    key_sha256: Option<String>,
}

impl Seen {
    /// Keeps the request's token and key for the record.
    fn observe(&mut self, raw_token: &str, key: &KeyRequest<'_>) {
        self.raw_token = raw_token.to_string();
        if let KeyRequest::Signature { public_key, .. } = key {
            self.public_key = public_key.to_vec();
        }
    }

    fn claims_sha256(&self) -> Option<String> {
        keyless_ca::token::claims_sha256(&self.raw_token).map(|d| hex(&d))
    }

    /// What a refusal record says: the claimed issuer and subject (or the verified identity), and
    /// digests of the claims and of the key, parsed here, off the issuance path.
    fn refusal_facts(self) -> (Option<String>, Option<String>, Option<String>, Option<String>) {
        let claims = self.claims_sha256();
        let token = keyless_ca::token::parse(&self.raw_token).ok();
        let issuer = token.as_ref().map(|t| t.issuer().to_string());
        let subject = self
            .subject
            .or_else(|| token.as_ref().and_then(|t| t.subject().map(str::to_string)));
        let key = self.key_sha256.or_else(|| {
            keyless_ca::keys::PublicKey::from_pem_or_der(&self.public_key)
                .ok()
                .map(|k| hex(&keyless_ca::keys::sha256(k.spki_der())))
        });
        (issuer, subject, claims, key)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A refusal goes into the issuance record (without waiting: nothing was promised).
fn record_refusal(state: &AppState, request_id: &str, seen: Seen, err: &ApiError) {
    let Some(audit) = &state.audit else { return };
    // Load shedding and timeouts are not decisions about an identity; they never reach here.
    let (_, _, message) = err.parts();
    let (issuer, subject, claims_sha256, key_sha256) = seen.refusal_facts();
    audit.append(Record {
        seq: 0,
        time_ms: now_ms(),
        request_id: request_id.to_string(),
        issuer,
        subject,
        claims_sha256,
        key_sha256,
        decision: Decision::Rejected,
        rule: err.class().to_string(),
        certificate: None,
        rejection: Some(Rejection {
            class: err.class().to_string(),
            message,
        }),
        intent: None,
        intent_seq: None,
    });
}

/// The shared issuance pipeline for both API versions. An issued certificate is recorded here;
/// refusals are recorded by the handlers, which also see the refusals before this point.
async fn issue(
    state: &AppState,
    request_id: &str,
    raw_token: &str,
    key: KeyRequest<'_>,
    seen: &mut Seen,
) -> Result<Vec<String>, ApiError> {
    seen.observe(raw_token, &key);
    let issuers = state.current_issuers();
    let token = issuers.oidc.verify(raw_token).await?;
    let principal = identity::principal(&token)?;
    seen.subject = Some(principal.san().value().to_string());
    if let Err(e) = keyless_ca::policy::check(&token) {
        tracing::warn!(issuer = principal.issuer_url(), subject = principal.san().value(), cause = %e, "refused by policy");
        return Err(e.into());
    }
    let limits = issuers.rate_limits.with(&token.issuer().options.rate_limits);
    state
        .limiter
        .check(principal.issuer_url(), principal.san().value(), limits, Instant::now())?;
    let proven = possession::prove(&principal, key)?;
    seen.key_sha256 = Some(hex(&keyless_ca::keys::sha256(proven.public_key().spki_der())));
    let (issuer, kind, san) = (
        principal.issuer_url().to_string(),
        principal.kind(),
        principal.san().value().to_string(),
    );
    let rule = format!(
        "{} identity of issuer {issuer}; claim policy and rate limits passed",
        kind.as_str()
    );
    let issued = if state.ca.signer_blocks() {
        // An HSM round trip must not stall the async workers: issue on a blocking thread.
        let ca = state.ca.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || handle.block_on(ca.issue(principal, proven, SystemTime::now())))
            .await
            .map_err(|e| ApiError::Internal(format!("issuance task failed: {e}")))??
    } else {
        state.ca.issue(principal, proven, SystemTime::now()).await?
    };
    if let Some(audit) = &state.audit {
        // The record is durable before the certificate leaves: an issuance the record does not
        // hold is never released (fail closed).
        let facts = keyless_audit::record::certificate_facts(
            &issued.der,
            issued.sct.as_ref().map(|s| (&s.log_id, s.timestamp)),
            issued.leaf_index,
        )
        .map_err(|e| ApiError::Internal(format!("audit record: {e}")))?;
        let record = Record {
            seq: 0,
            time_ms: now_ms(),
            request_id: request_id.to_string(),
            issuer: Some(issuer.clone()),
            subject: Some(san.clone()),
            claims_sha256: seen.claims_sha256(),
            key_sha256: seen.key_sha256.clone(),
            decision: Decision::Issued,
            rule,
            certificate: Some(facts),
            rejection: None,
            intent: None,
            intent_seq: None,
        };
        audit
            .append_durable(record)
            .await
            .map_err(|e| ApiError::Internal(format!("audit record: {e}")))?;
    }
    let (sct_log_id, sct_timestamp) = match &issued.sct {
        Some(sct) => (hex(&sct.log_id), sct.timestamp),
        None => ("none (CT disabled)".to_string(), 0),
    };
    tracing::info!(issuer, kind = kind.as_str(), subject = %san, serial = %issued.serial_hex, sct_log_id, sct_timestamp, leaf_index = ?issued.leaf_index, "certificate issued");
    crate::metrics::issued(kind.as_str(), &issuer);
    let mut chain = vec![issued.pem()];
    chain.extend(state.chain_pem.iter().cloned());
    Ok(chain)
}

/// Runs a signing handler and records its refusal, whatever stage refused.
async fn recorded<T>(
    state: &AppState,
    request_id: Option<axum::Extension<RequestId>>,
    handler: impl AsyncFnOnce(&str, &mut Seen) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let id = request_id.map(|r| r.0.0).unwrap_or_default();
    let mut seen = Seen::default();
    let result = handler(&id, &mut seen).await;
    if let Err(e) = &result {
        record_refusal(state, &id, seen, e);
    }
    result
}

async fn signing_cert_v2(
    State(state): State<Arc<AppState>>,
    request_id: Option<axum::Extension<RequestId>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    recorded(&state, request_id, async |id, seen| {
        signing_cert_v2_checked(&state, id, seen, &headers, body).await
    })
    .await
}

async fn signing_cert_v2_checked(
    state: &AppState,
    request_id: &str,
    seen: &mut Seen,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: wire::CreateSigningCertificateRequest = body_json(body)?;
    let token = req
        .credentials
        .and_then(|c| c.oidc_identity_token)
        .filter(|t| !t.is_empty())
        .or_else(|| bearer(headers))
        .unwrap_or_default();
    let csr = req.certificate_signing_request.filter(|c| !c.0.is_empty());
    let chain = match (req.public_key_request, csr) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "send either publicKeyRequest or certificateSigningRequest, not both".into(),
            ));
        }
        (None, Some(csr)) => issue(state, request_id, &token, KeyRequest::Csr { pem: &csr.0 }, seen).await?,
        (pkr, None) => {
            let pkr = pkr.unwrap_or_default();
            let content = pkr.public_key.and_then(|k| k.content).unwrap_or_default();
            let proof = pkr.proof_of_possession.unwrap_or_default();
            // Check the token first so its errors come first, as in Fulcio.
            issue(
                state,
                request_id,
                &token,
                KeyRequest::Signature {
                    public_key: content.as_bytes(),
                    proof: &proof.0,
                },
                seen,
            )
            .await?
        }
    };
    let certificates: Vec<String> = chain.iter().map(|p| p.trim_end().to_string()).collect();
    Ok(Json(
        json!({ "signedCertificateEmbeddedSct": { "chain": { "certificates": certificates } } }),
    ))
}

async fn signing_cert_v1(
    State(state): State<Arc<AppState>>,
    request_id: Option<axum::Extension<RequestId>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    recorded(&state, request_id, async |id, seen| {
        signing_cert_v1_checked(&state, id, seen, &headers, body).await
    })
    .await
}

async fn signing_cert_v1_checked(
    state: &AppState,
    request_id: &str,
    seen: &mut Seen,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let req: wire::LegacyRequest = body_json(body)?;
    let csr = req.certificate_signing_request.filter(|c| !c.0.is_empty());
    let key = req.public_key.and_then(|k| k.content).filter(|c| !c.0.is_empty());
    if csr.is_none() && key.is_none() {
        // Fulcio answers this before looking at the token.
        return Err(keyless_ca::Error::KeyParse("send publicKey.content or certificateSigningRequest".into()).into());
    }
    let token = bearer(headers).unwrap_or_default();
    let chain = match csr {
        Some(csr) => issue(state, request_id, &token, KeyRequest::Csr { pem: &csr.0 }, seen).await?,
        None => {
            let proof = req.signed_email_address.unwrap_or_default();
            let key = key.unwrap_or_default();
            issue(
                state,
                request_id,
                &token,
                KeyRequest::Signature {
                    public_key: &key.0,
                    proof: &proof.0,
                },
                seen,
            )
            .await?
        }
    };
    let body = chain.iter().map(|p| p.trim_end()).collect::<Vec<_>>().join("\n");
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
        body,
    )
        .into_response())
}

async fn trust_bundle(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "chains": [ { "certificates": state.chain_pem } ] }))
}

async fn root_cert(State(state): State<Arc<AppState>>) -> Response {
    let body = state
        .chain_pem
        .iter()
        .map(|p| format!("{p}\n"))
        .collect::<String>()
        .trim()
        .to_string();
    ([(header::CONTENT_TYPE, "application/pem-certificate-chain")], body).into_response()
}

async fn configuration(State(state): State<Arc<AppState>>) -> Json<Value> {
    let current = state.current_issuers();
    let issuers: Vec<Value> = current
        .list
        .iter()
        .map(|i| {
            let url_key = if i.wildcard { "wildcardIssuerUrl" } else { "issuerUrl" };
            json!({
                url_key: i.url,
                "audience": i.client_id,
                "challengeClaim": i.challenge_claim(),
                "spiffeTrustDomain": i.spiffe_trust_domain.clone().unwrap_or_default(),
                "issuerType": i.kind.as_str(),
                "subjectDomain": i.subject_domain.clone().unwrap_or_default(),
                "skipEmailVerification": i.skip_email_verification,
            })
        })
        .collect();
    Json(json!({ "issuers": issuers }))
}
