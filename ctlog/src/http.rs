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
//!   straight into the answer. `get-entries` and `get-entry-and-proof` read SQLite on blocking
//!   threads, at most [`MAX_HEAVY_READS`] (4) at once; more are answered 503 with `Retry-After: 1`
//!   rather than queued.
//! - Outside submissions are counted in `keyless_ctlog_submissions_total{source="outside",outcome}`
//!   with outcome `accepted`, `deduplicated`, `rate_limited_address`, `rate_limited_total`,
//!   `queue_full`, `too_large`, `invalid` or `failed` (never an address).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_config::{Bucket, SubmissionLimits};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::merkle::Hash;
use crate::wire::{
    AddChainRequest, AddChainResponse, GetProofByHashResponse, GetRootsResponse, GetSthConsistencyResponse,
    GetSthResponse, encode_hashes,
};
use crate::{EmbeddedLog, LogError, store};

/// Submissions larger than this are refused (a full chain of 128 KiB DER in base64 JSON fits).
pub const MAX_SUBMISSION_BYTES: usize = 256 * 1024;
/// `get-entries` returns at most this many entries per call.
pub const MAX_ENTRIES_PER_GET: u64 = 1000;
/// `get-entries` answers hold at most this many bytes of JSON (but always one entry).
pub const MAX_GET_ENTRIES_BYTES: usize = 2 * 1024 * 1024;
/// `get-entries` / `get-entry-and-proof` requests reading storage at once.
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

/// The bucket key of an address: IPv4 whole, IPv6 by /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddrKey {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl AddrKey {
    fn of(ip: IpAddr) -> AddrKey {
        match ip {
            IpAddr::V4(a) => AddrKey::V4(a.octets()),
            IpAddr::V6(a) => {
                let mut p = [0u8; 8];
                p.copy_from_slice(&a.octets()[..8]);
                AddrKey::V6(p)
            }
        }
    }
}

/// One token bucket's state.
#[derive(Debug, Clone, Copy)]
struct Tokens {
    tokens: f64,
    updated: Instant,
}

impl Tokens {
    fn full(b: Bucket, now: Instant) -> Tokens {
        Tokens {
            tokens: f64::from(b.burst),
            updated: now,
        }
    }

    fn refill(&mut self, b: Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate(b)).min(f64::from(b.burst));
        self.updated = now;
    }

    /// `None` if a token is available, else how long until one is.
    fn wait(&self, b: Bucket) -> Option<Duration> {
        (self.tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - self.tokens) / rate(b)))
    }
}

fn rate(b: Bucket) -> f64 {
    f64::from(b.rate) / b.per.as_secs_f64().max(1e-3)
}

/// Why an outside submission was refused before it was read.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// A token bucket is empty: which one, its description, and when to retry.
    Limited {
        outcome: &'static str,
        message: String,
        retry_after: Duration,
    },
    /// `queue` submissions are already in progress.
    QueueFull,
}

/// Admission of outside submissions: the in-progress bound and the token buckets.
struct Gate {
    limits: SubmissionLimits,
    queue: Arc<Semaphore>,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    per_address: HashMap<AddrKey, Tokens>,
    /// Shared by submitters whose address is unknown.
    unknown: Tokens,
    /// Shared by new addresses while the map is full.
    overflow: Tokens,
    total: Tokens,
}

/// `N per T (bursts of B)` for messages.
fn describe(b: Bucket) -> String {
    format!("{} per {} s (bursts of {})", b.rate, b.per.as_secs_f64(), b.burst)
}

impl Gate {
    fn new(limits: SubmissionLimits, now: Instant) -> Gate {
        let zero = Bucket {
            rate: 1,
            per: Duration::from_secs(1),
            burst: 1,
        };
        let start = |b: Option<Bucket>| Tokens::full(b.unwrap_or(zero), now);
        Gate {
            queue: Arc::new(Semaphore::new(limits.queue.min(Semaphore::MAX_PERMITS))),
            buckets: Mutex::new(Buckets {
                per_address: HashMap::new(),
                unknown: start(limits.per_address),
                overflow: start(limits.per_address),
                total: start(limits.total),
            }),
            limits,
        }
    }

    /// Takes a place in the queue and a token from the source's bucket and from the total one
    /// (both or neither), or says why not.
    fn admit(&self, peer: Option<IpAddr>, now: Instant) -> Result<OwnedSemaphorePermit, Refusal> {
        let permit = self.queue.clone().try_acquire_owned().map_err(|_| Refusal::QueueFull)?;
        let mut guard = self.buckets.lock().expect("poisoned");
        let b = &mut *guard;
        let mut source: Option<&mut Tokens> = None;
        if let Some(limit) = self.limits.per_address {
            let slot = match peer.map(AddrKey::of) {
                None => &mut b.unknown,
                Some(key) => {
                    if !b.per_address.contains_key(&key) && b.per_address.len() >= MAX_TRACKED_ADDRESSES {
                        // Full buckets carry no information: dropping them changes nothing.
                        b.per_address.retain(|_, t| {
                            t.refill(limit, now);
                            t.tokens < f64::from(limit.burst)
                        });
                    }
                    if b.per_address.contains_key(&key) || b.per_address.len() < MAX_TRACKED_ADDRESSES {
                        b.per_address.entry(key).or_insert_with(|| Tokens::full(limit, now))
                    } else {
                        &mut b.overflow
                    }
                }
            };
            slot.refill(limit, now);
            if let Some(wait) = slot.wait(limit) {
                return Err(Refusal::Limited {
                    outcome: "rate_limited_address",
                    message: format!(
                        "too many submissions from this address: the limit is {}",
                        describe(limit)
                    ),
                    retry_after: wait,
                });
            }
            source = Some(slot);
        }
        if let Some(limit) = self.limits.total {
            b.total.refill(limit, now);
            if let Some(wait) = b.total.wait(limit) {
                return Err(Refusal::Limited {
                    outcome: "rate_limited_total",
                    message: format!(
                        "too many submissions to this log: the limit for everyone together is {}",
                        describe(limit)
                    ),
                    retry_after: wait,
                });
            }
            b.total.tokens -= 1.0;
        }
        if let Some(slot) = source {
            slot.tokens -= 1.0;
        }
        Ok(permit)
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
    let proof = api.log.shared().consistency(q.first, q.second)?;
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
    let (index, proof) = api.log.shared().proof_by_hash(&hash, q.tree_size)?;
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
        .map_err(|_| busy("too many entry reads are in progress; retry later"))?;
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
    let proof = api.log.shared().proof_by_index(q.leaf_index, q.tree_size)?;
    let index = q.leaf_index;
    let entry = heavy_read(&api, move |s| s.with_reader(|c| store::entry_json(c, index)))
        .await?
        .ok_or_else(|| bad("no such entry"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address: Option<Bucket>, total: Option<Bucket>, queue: usize) -> SubmissionLimits {
        SubmissionLimits {
            per_address,
            total,
            queue,
        }
    }

    fn b(rate: u32, burst: u32) -> Option<Bucket> {
        Some(Bucket {
            rate,
            per: Duration::from_secs(1),
            burst,
        })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn per_address_buckets_refill_and_are_independent() {
        let t0 = Instant::now();
        let g = Gate::new(limits(b(2, 2), None, 100), t0);
        let _a = g.admit(ip("10.0.0.1"), t0).unwrap();
        let _b = g.admit(ip("10.0.0.1"), t0).unwrap();
        let Err(Refusal::Limited {
            outcome, retry_after, ..
        }) = g.admit(ip("10.0.0.1"), t0)
        else {
            panic!("third in the same instant must be limited");
        };
        assert_eq!(outcome, "rate_limited_address");
        assert!(retry_after > Duration::from_millis(400) && retry_after <= Duration::from_millis(500));
        assert!(g.admit(ip("10.0.0.2"), t0).is_ok(), "another address is unaffected");
        assert!(
            g.admit(ip("10.0.0.1"), t0 + Duration::from_millis(500)).is_ok(),
            "refilled"
        );
        // IPv6 addresses share their /64; IPv4-mapped ones are IPv4.
        let _c = g.admit(ip("2001:db8::1"), t0).unwrap();
        let _d = g.admit(ip("2001:db8::2"), t0).unwrap();
        assert!(g.admit(ip("2001:db8::3"), t0).is_err());
        assert!(g.admit(ip("2001:db8:0:1::1"), t0).is_ok());
    }

    #[test]
    fn a_refusal_by_the_total_does_not_charge_the_address() {
        let t0 = Instant::now();
        let g = Gate::new(limits(b(1, 1), b(1, 1), 100), t0);
        let _a = g.admit(ip("10.0.0.1"), t0).unwrap();
        let Err(Refusal::Limited { outcome, message, .. }) = g.admit(ip("10.0.0.2"), t0) else {
            panic!("the total is spent");
        };
        assert_eq!(outcome, "rate_limited_total");
        assert!(message.contains("everyone together"), "{message}");
        // 10.0.0.2 still has its token once the total refills.
        assert!(g.admit(ip("10.0.0.2"), t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn the_queue_bounds_submissions_in_progress() {
        let t0 = Instant::now();
        let g = Gate::new(limits(None, None, 2), t0);
        let a = g.admit(None, t0).unwrap();
        let _b = g.admit(None, t0).unwrap();
        assert_eq!(g.admit(None, t0).unwrap_err(), Refusal::QueueFull);
        drop(a);
        assert!(g.admit(None, t0).is_ok());
    }

    #[test]
    fn the_address_map_stays_bounded() {
        let t0 = Instant::now();
        let g = Gate::new(limits(b(1, 2), None, usize::MAX >> 4), t0);
        // Every address spends one token, so none of their buckets is full (idle) yet; the last
        // two already share the overflow bucket.
        for i in 0..(MAX_TRACKED_ADDRESSES + 2) as u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            drop(g.admit(Some(a), t0).unwrap());
        }
        assert_eq!(g.buckets.lock().unwrap().per_address.len(), MAX_TRACKED_ADDRESSES);
        // Past the bound, new addresses share the overflow bucket (burst 2, already spent).
        let fresh = IpAddr::from(std::net::Ipv4Addr::new(192, 168, 0, 1));
        assert!(g.admit(Some(fresh), t0).is_err());
        // Once buckets are full again (idle), they are dropped and new addresses get their own.
        let later = t0 + Duration::from_secs(5);
        assert!(g.admit(Some(fresh), later).is_ok());
        assert_eq!(g.buckets.lock().unwrap().per_address.len(), 1);
    }
}
