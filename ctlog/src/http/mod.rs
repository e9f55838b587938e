//! The RFC 6962 HTTP API (`/ct/v1/*`) of an [`EmbeddedLog`]. Mount it under the log's prefix.
//!
//! Anyone on the network can call it, so every costly path is bounded:
//! - `add-chain` / `add-pre-chain` (outside submitters; the CA's own submissions never come here):
//!   - at most `queue` ([`SubmissionLimits::queue`], default 256) submissions in progress at once
//!     (validation, writer queue and SCT signing); beyond that 503 with `Retry-After: 1`;
//!   - a token bucket per source address ([`SubmissionLimits::per_address`], default 10/s, bursts
//!     of 20; IPv6 addresses are grouped by /64, one host usually holds a whole /64) and one for
//!     everyone ([`SubmissionLimits::total`], default 100/s, bursts of 200); a token is taken only
//!     when both allow it; refusals are 429 with `Retry-After` and a JSON error naming the limit.
//!     Without the peer address (no `ConnectInfo`), everyone shares one "unknown" bucket;
//!   - at most [`MAX_TRACKED_ADDRESSES`] (4096) address buckets are kept: full (idle) buckets are
//!     dropped when the map is full, and if it is still full new addresses share one overflow
//!     bucket, so memory stays bounded whatever the number of addresses;
//!   - the body is read only after those checks, and at most [`MAX_SUBMISSION_BYTES`] (256 KiB)
//!     of it (413 beyond), then the chain limits of the log apply (8 certificates, 128 KiB DER).
//! - `get-entries` answers at most [`MAX_ENTRIES_PER_GET`] (1000) entries and at most
//!   [`MAX_GET_ENTRIES_BYTES`] (2 MiB) of JSON (always at least one entry; RFC 6962 lets a log
//!   return fewer entries than asked). Each distinct chain is loaded once per request and encoded
//!   straight into the answer.
//! - `get-entries`, `get-entry-and-proof`, `get-proof-by-hash` and `get-sth-consistency` read
//!   SQLite (entries, and the stored tree nodes proofs are made of) on blocking threads, at most
//!   [`MAX_HEAVY_READS`] (4) at once; more are answered 503 with `Retry-After: 1` rather than
//!   queued. A proof reads O(log² n) nodes, each from a stored row of 256 hashes.
//! - Outside submissions are counted in `keyless_ctlog_submissions_total{source="outside",outcome}`
//!   with outcome `accepted`, `deduplicated`, `rate_limited_address`, `rate_limited_total`,
//!   `queue_full`, `too_large`, `invalid` or `failed` (never an address).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_config::SubmissionLimits;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;

use self::gate::{Gate, Refusal};
use crate::merkle::Hash;
use crate::wire::{
    AddChainRequest, AddChainResponse, GetProofByHashResponse, GetRootsResponse, GetSthConsistencyResponse,
    GetSthResponse, encode_hashes,
};
use crate::{EmbeddedLog, LogError, store};

mod gate;

/// Submissions larger than this are refused (a full chain of 128 KiB DER in base64 JSON fits).
pub const MAX_SUBMISSION_BYTES: usize = 256 * 1024;
/// `get-entries` returns at most this many entries per call.
pub const MAX_ENTRIES_PER_GET: u64 = 1000;
/// `get-entries` answers hold at most this many bytes of JSON (but always one entry).
pub const MAX_GET_ENTRIES_BYTES: usize = 2 * 1024 * 1024;
/// Reads of storage (entries and proofs) at once.
pub const MAX_HEAVY_READS: usize = 4;
/// Source addresses with their own token bucket at once.
pub const MAX_TRACKED_ADDRESSES: usize = 4096;

/// A refusal: status, JSON `{"error": …}`, and `Retry-After` (seconds) when retrying can help.
struct HttpError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl From<LogError> for HttpError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Client(m) => bad(m),
            LogError::Unavailable(m) => HttpError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: m,
                retry_after: Some(1),
            },
            other => {
                tracing::error!(error = %other, "CT log request failed");
                HttpError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: "internal error".into(),
                    retry_after: None,
                }
            }
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

fn bad(m: impl Into<String>) -> HttpError {
    HttpError {
        status: StatusCode::BAD_REQUEST,
        message: m.into(),
        retry_after: None,
    }
}

fn busy(m: impl Into<String>) -> HttpError {
    HttpError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: m.into(),
        retry_after: Some(1),
    }
}

/// A JSON answer already serialised.
fn json_body(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The state behind the routes.
#[derive(Clone)]
struct Api {
    log: EmbeddedLog,
    gate: Arc<Gate>,
    reads: Arc<Semaphore>,
}

/// The `/ct/v1/*` routes. `limits` applies to outside `add-chain` / `add-pre-chain` callers; the
/// peer address is taken from `ConnectInfo<SocketAddr>` when the server provides it
/// (`into_make_service_with_connect_info`).
pub fn router(log: EmbeddedLog, limits: SubmissionLimits) -> Router {
    let api = Api {
        log,
        gate: Arc::new(Gate::new(limits, Instant::now())),
        reads: Arc::new(Semaphore::new(MAX_HEAVY_READS)),
    };
    Router::new()
        .route("/ct/v1/add-chain", post(add_chain))
        .route("/ct/v1/add-pre-chain", post(add_pre_chain))
        .route("/ct/v1/get-sth", get(get_sth))
        .route("/ct/v1/get-sth-consistency", get(get_sth_consistency))
        .route("/ct/v1/get-proof-by-hash", get(get_proof_by_hash))
        .route("/ct/v1/get-entries", get(get_entries))
        .route("/ct/v1/get-roots", get(get_roots))
        .route("/ct/v1/get-entry-and-proof", get(get_entry_and_proof))
        .with_state(api)
}

// ---- outside submissions ----

/// The peer's address, when the server recorded it.
struct Peer(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_canonical()),
        ))
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("keyless_ctlog_submissions_total", "source" => "outside", "outcome" => outcome).increment(1);
}

async fn add_chain(
    State(api): State<Api>,
    Peer(peer): Peer,
    body: Body,
) -> Result<axum::Json<AddChainResponse>, HttpError> {
    submit(api, peer, body, false).await
}

async fn add_pre_chain(
    State(api): State<Api>,
    Peer(peer): Peer,
    body: Body,
) -> Result<axum::Json<AddChainResponse>, HttpError> {
    submit(api, peer, body, true).await
}

async fn submit(
    api: Api,
    peer: Option<IpAddr>,
    body: Body,
    precert: bool,
) -> Result<axum::Json<AddChainResponse>, HttpError> {
    let _permit = match api.gate.admit(peer, Instant::now()) {
        Ok(p) => p,
        Err(Refusal::QueueFull) => {
            count("queue_full");
            return Err(busy(format!(
                "too many submissions are in progress (at most {}); retry later",
                api.gate.limits.queue
            )));
        }
        Err(Refusal::Limited {
            outcome,
            message,
            retry_after,
        }) => {
            count(outcome);
            return Err(HttpError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message,
                retry_after: Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
            });
        }
    };
    let body = match axum::body::to_bytes(body, MAX_SUBMISSION_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            count("too_large");
            return Err(HttpError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("the body could not be read within {MAX_SUBMISSION_BYTES} bytes"),
                retry_after: None,
            });
        }
    };
    let chain = decode_chain(&body).inspect_err(|_| count("invalid"))?;
    match api.log.submit(&chain, precert).await {
        Ok(done) => {
            count(if done.deduplicated { "deduplicated" } else { "accepted" });
            Ok(axum::Json(AddChainResponse::from_sct(&done.sct)))
        }
        Err(e) => {
            count(if matches!(e, LogError::Client(_)) {
                "invalid"
            } else {
                "failed"
            });
            Err(e.into())
        }
    }
}

fn decode_chain(body: &Bytes) -> Result<Vec<Vec<u8>>, HttpError> {
    let req: AddChainRequest =
        serde_json::from_slice(body).map_err(|e| bad(format!("body is not {{\"chain\": [...]}}: {e}")))?;
    Ok(req.decode()?)
}

// ---- reads ----

async fn get_sth(State(api): State<Api>) -> axum::Json<GetSthResponse> {
    axum::Json(GetSthResponse::from_sth(&api.log.sth()))
}

#[derive(Deserialize)]
struct Consistency {
    first: u64,
    second: u64,
}

async fn get_sth_consistency(
    State(api): State<Api>,
    Query(q): Query<Consistency>,
) -> Result<axum::Json<GetSthConsistencyResponse>, HttpError> {
    let (first, second) = (q.first, q.second);
    let proof = heavy_read(&api, move |s| s.with_reader(|c| s.consistency(c, first, second))).await?;
    Ok(axum::Json(GetSthConsistencyResponse {
        consistency: encode_hashes(&proof),
    }))
}

#[derive(Deserialize)]
struct ProofByHash {
    hash: String,
    tree_size: u64,
}

async fn get_proof_by_hash(
    State(api): State<Api>,
    Query(q): Query<ProofByHash>,
) -> Result<axum::Json<GetProofByHashResponse>, HttpError> {
    // A literal '+' in a query string decodes to a space; undo that for standard base64.
    let hash = STANDARD
        .decode(q.hash.replace(' ', "+"))
        .map_err(|_| bad("hash must be base64"))?;
    let hash: Hash = hash.try_into().map_err(|_| bad("hash must be 32 bytes"))?;
    let size = q.tree_size;
    let (index, proof) = heavy_read(&api, move |s| s.with_reader(|c| s.proof_by_hash(c, &hash, size))).await?;
    Ok(axum::Json(GetProofByHashResponse {
        audit_path: encode_hashes(&proof),
        leaf_index: index,
    }))
}

#[derive(Deserialize)]
struct Entries {
    start: u64,
    end: u64,
}

/// Runs a storage read on a blocking thread if one of the [`MAX_HEAVY_READS`] slots is free.
async fn heavy_read<T: Send + 'static>(
    api: &Api,
    f: impl FnOnce(&crate::log::Shared) -> Result<T, LogError> + Send + 'static,
) -> Result<T, HttpError> {
    let permit = api
        .reads
        .clone()
        .try_acquire_owned()
        .map_err(|_| busy("too many storage reads are in progress; retry later"))?;
    let log = api.log.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f(log.shared())
    })
    .await
    .map_err(|e| HttpError::from(LogError::Storage(e.to_string())))?
    .map_err(HttpError::from)
}

async fn get_entries(State(api): State<Api>, Query(q): Query<Entries>) -> Result<Response, HttpError> {
    let size = api.log.shared().published_size();
    if q.start > q.end || q.start >= size {
        return Err(bad(format!("need start <= end and start < {size}")));
    }
    let (start, end) = (q.start, q.end.min(size - 1).min(q.start + MAX_ENTRIES_PER_GET - 1));
    let (body, _) = heavy_read(&api, move |s| {
        s.with_reader(|c| store::entries_json(c, start, end, MAX_GET_ENTRIES_BYTES))
    })
    .await?;
    Ok(json_body(body))
}

async fn get_roots(State(api): State<Api>) -> axum::Json<GetRootsResponse> {
    axum::Json(GetRootsResponse {
        certificates: api.log.roots().iter().map(|r| STANDARD.encode(r)).collect(),
    })
}

#[derive(Deserialize)]
struct EntryAndProof {
    leaf_index: u64,
    tree_size: u64,
}

async fn get_entry_and_proof(State(api): State<Api>, Query(q): Query<EntryAndProof>) -> Result<Response, HttpError> {
    let (index, size) = (q.leaf_index, q.tree_size);
    let (proof, entry) = heavy_read(&api, move |s| {
        s.with_reader(|c| Ok((s.proof_by_index(c, index, size)?, store::entry_json(c, index)?)))
    })
    .await?;
    let entry = entry.ok_or_else(|| bad("no such entry"))?;
    // `entry` is a JSON object; add the audit path to it without parsing it again.
    let path =
        serde_json::to_string(&encode_hashes(&proof)).map_err(|e| HttpError::from(LogError::Storage(e.to_string())))?;
    let mut body = entry;
    body.pop();
    body.push_str(",\"audit_path\":");
    body.push_str(&path);
    body.push('}');
    Ok(json_body(body))
}
