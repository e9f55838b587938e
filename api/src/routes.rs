//! Fulcio's REST API.
//!
//! The handlers only decode and encode: a `signingCert` request (either version) is decoded into an
//! [`IssueRequest`] (token from the body or `Authorization: Bearer`, the key or CSR) and handed to
//! [`keyless_service::Service::issue`], which decides, issues and records.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keyless_config::Limits;
use keyless_oidc::IssuerHealth;
use keyless_service::{IssueRequest, Readiness, Service};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::protect::{Deadline, RequestId};
use crate::wire::{self, MAX_BODY_BYTES};

/// What the handlers share: the issuance service, and what only the HTTP surface needs.
pub struct AppState {
    /// The issuance service every signing route calls.
    pub service: Arc<Service>,
    /// `health.token`: lets `/readyz` callers see causes.
    pub health_token: Option<keyless_config::Secret>,
    /// The last readiness answer, reused for a second so probes cannot hammer the HSM.
    readiness: Mutex<Option<(Instant, StatusCode, Value)>>,
}

impl AppState {
    /// The HTTP surface's state over `service`.
    pub fn new(service: Arc<Service>, health_token: Option<keyless_config::Secret>) -> AppState {
        AppState {
            service,
            health_token,
            readiness: Mutex::new(None),
        }
    }
}

/// The whole API as served: [`router`] plus `extra` routes (the development issuer), CORS, the
/// guard (header limit, whole body, load shedding, request timeout) and request ids, with leading
/// slashes collapsed before routing. Tests drive it in process with `tower::ServiceExt::oneshot`.
pub fn app(state: Arc<AppState>, limits: &Limits, extra: Router) -> Router {
    let guard = crate::protect::Guard::new(limits.clone(), MAX_BODY_BYTES, &["/healthz", "/readyz"]);
    let app = router(state)
        .merge(extra)
        .layer(crate::protect::cors())
        .layer(axum::middleware::from_fn_with_state(guard, crate::protect::guard))
        .layer(axum::middleware::from_fn(crate::protect::request_id));
    // Outside the router, so the rewritten path is what gets routed; Fulcio's HTTP metrics
    // outermost, so every answer counts, refusals by the guard included.
    Router::new()
        .fallback_service(tower::Layer::layer(
            &axum::middleware::map_request(collapse_leading_slashes),
            app,
        ))
        .layer(axum::middleware::from_fn(crate::protect::fulcio_metrics))
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
    Json(json!({"status": "SERVING", "ctLog": state.service.ct_log()}))
}

/// Readiness: the signer signs and verifies a probe, the CA chain covers a new certificate, the
/// CT log answers, and issuers are configured. Per-issuer discovery health is reported but never
/// fails readiness: one IdP being down must not take the CA out of rotation for everyone else.
///
/// Anyone may ask whether each component is ready; only a caller presenting `health.token` as a
/// bearer token learns why one is not (causes name hosts and TLS errors). The causes are logged.
async fn readyz(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let authorized = match (&state.health_token, wire::bearer(&headers)) {
        (Some(want), Some(got)) => {
            aws_lc_rs::constant_time::verify_slices_are_equal(want.expose().as_bytes(), got.as_bytes()).is_ok()
        }
        _ => false,
    };
    let cached = state.readiness.lock().expect("poisoned").clone();
    let (status, body) = match cached {
        Some((at, status, body)) if at.elapsed() < Duration::from_secs(1) => (status, body),
        _ => {
            let (status, body) = readiness(&state).await;
            *state.readiness.lock().expect("poisoned") = Some((Instant::now(), status, body.clone()));
            (status, body)
        }
    };
    let body = if authorized { body } else { without_causes(body) };
    (status, Json(body)).into_response()
}

/// `unavailable: cause` becomes `unavailable`, `using cached keys; …` becomes `stale`.
fn without_causes(mut body: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::String(s) => {
                if s.starts_with("unavailable") {
                    *s = "unavailable".into();
                } else if s.starts_with("using cached keys") {
                    *s = "stale".into();
                }
            }
            Value::Object(m) => m.values_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut body);
    body
}

async fn readiness(state: &AppState) -> (StatusCode, Value) {
    let r: Readiness = state.service.readiness().await;
    let ready = r.ready();
    if !ready {
        tracing::warn!(signer = ?r.signer.as_ref().err(), ct_log = ?r.ct_log.as_ref().err(), config = ?r.config.as_ref().err(), record = ?r.record.as_ref().err(), "not ready");
    }
    let text = |r: Result<&str, &String>| match r {
        Ok(s) => s.to_string(),
        Err(e) => format!("unavailable: {e}"),
    };
    let per_issuer: serde_json::Map<String, Value> = r
        .issuers
        .iter()
        .map(|(url, h)| {
            let text = match h {
                IssuerHealth::Ok => "ok".to_string(),
                IssuerHealth::NotFetched => "keys not fetched yet".to_string(),
                IssuerHealth::Stale(c) => format!("using cached keys; last fetch failed: {c}"),
                IssuerHealth::Failing(c) => format!("unavailable: {c}"),
            };
            (url.clone(), Value::String(text))
        })
        .collect();
    let body = json!({
        "ready": ready,
        "signer": text(r.signer.as_ref().map(|()| "ok")),
        "ctLog": text(r.ct_log.as_ref().copied()),
        "config": text(r.config.as_ref().map(|()| "ok")),
        "record": text(r.record.as_ref().copied()),
        "issuers": per_issuer,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

/// Decodes with `decode`, runs the issuance service, and records a refusal of a request that
/// could not be decoded (the service records every other outcome itself).
async fn signing<T>(
    state: &Arc<AppState>,
    (request_id, deadline): (Option<axum::Extension<RequestId>>, Option<axum::Extension<Deadline>>),
    decode: impl FnOnce(String) -> Result<IssueRequest, ApiError>,
    encode: impl FnOnce(Vec<String>) -> T,
) -> Result<T, ApiError> {
    let id = request_id.map(|r| r.0.0).unwrap_or_default();
    let decoded = decode(id.clone()).map(|mut req| {
        req.deadline = deadline.map(|d| d.0.0);
        req
    });
    let req = match decoded {
        Ok(req) => req,
        Err(e) => {
            state.service.refuse_undecoded(&id, e.class(), &e.parts().2);
            return Err(e);
        }
    };
    Ok(state.service.issue(req).await.map(encode)?)
}

async fn signing_cert_v2(
    State(state): State<Arc<AppState>>,
    request_id: Option<axum::Extension<RequestId>>,
    deadline: Option<axum::Extension<Deadline>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    signing(
        &state,
        (request_id, deadline),
        |request_id| wire::decode_v2(request_id, &headers, body),
        |chain| {
            let certificates: Vec<String> = chain.iter().map(|p| p.trim_end().to_string()).collect();
            Json(json!({ "signedCertificateEmbeddedSct": { "chain": { "certificates": certificates } } }))
        },
    )
    .await
}

async fn signing_cert_v1(
    State(state): State<Arc<AppState>>,
    request_id: Option<axum::Extension<RequestId>>,
    deadline: Option<axum::Extension<Deadline>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    signing(
        &state,
        (request_id, deadline),
        |request_id| wire::decode_v1(request_id, &headers, body),
        |chain| {
            let body = chain.iter().map(|p| p.trim_end()).collect::<Vec<_>>().join("\n");
            (
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
                body,
            )
                .into_response()
        },
    )
    .await
}

async fn trust_bundle(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "chains": [ { "certificates": state.service.chain_pem() } ] }))
}

async fn root_cert(State(state): State<Arc<AppState>>) -> Response {
    let body = state
        .service
        .chain_pem()
        .iter()
        .map(|p| format!("{p}\n"))
        .collect::<String>()
        .trim()
        .to_string();
    ([(header::CONTENT_TYPE, "application/pem-certificate-chain")], body).into_response()
}

async fn configuration(State(state): State<Arc<AppState>>) -> Json<Value> {
    let current = state.service.current_issuers();
    let issuers: Vec<Value> = current
        .list
        .iter()
        .map(|i| {
            let url_key = if i.wildcard { "wildcardIssuerUrl" } else { "issuerUrl" };
            json!({
                url_key: i.url,
                "audience": i.client_id,
                "challengeClaim": i.challenge_claim(),
                "spiffeTrustDomain": i.kind.spiffe_trust_domain().unwrap_or_default(),
                "issuerType": i.kind.as_str(),
                "subjectDomain": i.kind.subject_domain().unwrap_or_default(),
                "skipEmailVerification": i.kind.skip_email_verification(),
            })
        })
        .collect();
    Json(json!({ "issuers": issuers }))
}
