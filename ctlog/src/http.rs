//! The RFC 6962 HTTP API (`/ct/v1/*`) of an [`EmbeddedLog`]. Mount it under the log's prefix.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, body::Bytes};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_ca::ct::Sct;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::merkle::Hash;
use crate::{EmbeddedLog, LogError, store};

/// Submissions larger than this are refused.
pub const MAX_SUBMISSION_BYTES: usize = 1 << 20;
/// `get-entries` returns at most this many entries per call.
pub const MAX_ENTRIES_PER_GET: u64 = 1000;

/// RFC 6962 `add-chain` / `add-pre-chain` response.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddChainResponse {
    /// Always 0 (v1).
    pub sct_version: u8,
    /// Base64 log id.
    pub id: String,
    /// Milliseconds.
    pub timestamp: u64,
    /// Base64 extensions.
    pub extensions: String,
    /// Base64 TLS `DigitallySigned`.
    pub signature: String,
}

impl AddChainResponse {
    /// From an SCT.
    pub fn from_sct(sct: &Sct) -> Self {
        AddChainResponse {
            sct_version: 0,
            id: STANDARD.encode(sct.log_id),
            timestamp: sct.timestamp,
            extensions: STANDARD.encode(&sct.extensions),
            signature: STANDARD.encode(sct.digitally_signed()),
        }
    }

    /// To an SCT, checking field sizes.
    pub fn to_sct(&self) -> Result<Sct, String> {
        if self.sct_version != 0 {
            return Err(format!("unsupported SCT version {}", self.sct_version));
        }
        let id = STANDARD.decode(&self.id).map_err(|_| "id is not base64")?;
        let log_id: [u8; 32] = id.try_into().map_err(|_| "id is not 32 bytes")?;
        let extensions = STANDARD
            .decode(&self.extensions)
            .map_err(|_| "extensions is not base64")?;
        let ds = STANDARD
            .decode(&self.signature)
            .map_err(|_| "signature is not base64")?;
        let (hash_algorithm, signature_algorithm, signature) =
            Sct::parse_digitally_signed(&ds).ok_or("signature is not a TLS DigitallySigned")?;
        Ok(Sct {
            log_id,
            timestamp: self.timestamp,
            extensions,
            hash_algorithm,
            signature_algorithm,
            signature,
        })
    }
}

/// `add-chain` request.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddChainRequest {
    /// Base64 DER certificates, leaf first.
    pub chain: Vec<String>,
}

struct HttpError(StatusCode, String);

impl From<LogError> for HttpError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Client(m) => HttpError(StatusCode::BAD_REQUEST, m),
            LogError::Unavailable(m) => HttpError(StatusCode::SERVICE_UNAVAILABLE, m),
            other => {
                tracing::error!(error = %other, "CT log request failed");
                HttpError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(m: impl Into<String>) -> HttpError {
    HttpError(StatusCode::BAD_REQUEST, m.into())
}

/// The `/ct/v1/*` routes.
pub fn router(log: EmbeddedLog) -> Router {
    Router::new()
        .route("/ct/v1/add-chain", post(add_chain))
        .route("/ct/v1/add-pre-chain", post(add_pre_chain))
        .route("/ct/v1/get-sth", get(get_sth))
        .route("/ct/v1/get-sth-consistency", get(get_sth_consistency))
        .route("/ct/v1/get-proof-by-hash", get(get_proof_by_hash))
        .route("/ct/v1/get-entries", get(get_entries))
        .route("/ct/v1/get-roots", get(get_roots))
        .route("/ct/v1/get-entry-and-proof", get(get_entry_and_proof))
        .layer(DefaultBodyLimit::max(MAX_SUBMISSION_BYTES))
        .with_state(log)
}

fn decode_chain(body: &Bytes) -> Result<Vec<Vec<u8>>, HttpError> {
    let req: AddChainRequest =
        serde_json::from_slice(body).map_err(|e| bad(format!("body is not {{\"chain\": [...]}}: {e}")))?;
    req.chain
        .iter()
        .map(|c| STANDARD.decode(c).map_err(|_| bad("chain entries must be base64 DER")))
        .collect()
}

async fn add_chain(State(log): State<EmbeddedLog>, body: Bytes) -> Result<Json<AddChainResponse>, HttpError> {
    let chain = decode_chain(&body)?;
    Ok(Json(AddChainResponse::from_sct(&log.submit(&chain, false).await?.0)))
}

async fn add_pre_chain(State(log): State<EmbeddedLog>, body: Bytes) -> Result<Json<AddChainResponse>, HttpError> {
    let chain = decode_chain(&body)?;
    Ok(Json(AddChainResponse::from_sct(&log.submit(&chain, true).await?.0)))
}

async fn get_sth(State(log): State<EmbeddedLog>) -> Json<serde_json::Value> {
    let sth = log.sth();
    Json(json!({
        "tree_size": sth.tree_size,
        "timestamp": sth.timestamp,
        "sha256_root_hash": STANDARD.encode(sth.root),
        "tree_head_signature": STANDARD.encode(&sth.signature),
    }))
}

fn b64_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| STANDARD.encode(h)).collect()
}

#[derive(Deserialize)]
struct Consistency {
    first: u64,
    second: u64,
}

async fn get_sth_consistency(
    State(log): State<EmbeddedLog>,
    Query(q): Query<Consistency>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let proof = log.shared().consistency(q.first, q.second)?;
    Ok(Json(json!({ "consistency": b64_hashes(&proof) })))
}

#[derive(Deserialize)]
struct ProofByHash {
    hash: String,
    tree_size: u64,
}

async fn get_proof_by_hash(
    State(log): State<EmbeddedLog>,
    Query(q): Query<ProofByHash>,
) -> Result<Json<serde_json::Value>, HttpError> {
    // A literal '+' in a query string decodes to a space; undo that for standard base64.
    let hash = STANDARD
        .decode(q.hash.replace(' ', "+"))
        .map_err(|_| bad("hash must be base64"))?;
    let hash: Hash = hash.try_into().map_err(|_| bad("hash must be 32 bytes"))?;
    let (index, proof) = log.shared().proof_by_hash(&hash, q.tree_size)?;
    Ok(Json(json!({ "leaf_index": index, "audit_path": b64_hashes(&proof) })))
}

#[derive(Deserialize)]
struct Entries {
    start: u64,
    end: u64,
}

async fn read_entries(log: &EmbeddedLog, start: u64, end: u64) -> Result<Vec<store::Entry>, HttpError> {
    let log = log.clone();
    tokio::task::spawn_blocking(move || {
        let conn = log.shared().reader.lock().expect("poisoned");
        store::entries(&conn, start, end)
    })
    .await
    .map_err(|e| HttpError::from(LogError::Storage(e.to_string())))?
    .map_err(HttpError::from)
}

async fn get_entries(
    State(log): State<EmbeddedLog>,
    Query(q): Query<Entries>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let size = log.shared().published_size();
    if q.start > q.end || q.start >= size {
        return Err(bad(format!("need start <= end and start < {size}")));
    }
    let end = q.end.min(size - 1).min(q.start + MAX_ENTRIES_PER_GET - 1);
    let entries = read_entries(&log, q.start, end).await?;
    let entries: Vec<_> = entries
        .iter()
        .map(|e| json!({ "leaf_input": STANDARD.encode(&e.leaf_input), "extra_data": STANDARD.encode(&e.extra_data) }))
        .collect();
    Ok(Json(json!({ "entries": entries })))
}

async fn get_roots(State(log): State<EmbeddedLog>) -> Json<serde_json::Value> {
    let roots: Vec<String> = log.roots().iter().map(|r| STANDARD.encode(r)).collect();
    Json(json!({ "certificates": roots }))
}

#[derive(Deserialize)]
struct EntryAndProof {
    leaf_index: u64,
    tree_size: u64,
}

async fn get_entry_and_proof(
    State(log): State<EmbeddedLog>,
    Query(q): Query<EntryAndProof>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let proof = log.shared().proof_by_index(q.leaf_index, q.tree_size)?;
    let entry = read_entries(&log, q.leaf_index, q.leaf_index).await?;
    let e = entry.first().ok_or_else(|| bad("no such entry"))?;
    Ok(Json(json!({
        "leaf_input": STANDARD.encode(&e.leaf_input),
        "extra_data": STANDARD.encode(&e.extra_data),
        "audit_path": b64_hashes(&proof),
    })))
}
