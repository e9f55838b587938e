//! Request protection for the gRPC listener, as [`keyless_api::protect::guard`] does for REST but
//! answered as gRPC statuses: a request id; the header-size limit; the whole request message read
//! (under [`MAX_MESSAGE_BYTES`](crate::MAX_MESSAGE_BYTES), `limits.body_timeout` and
//! `limits.min_body_rate`) before the call may take one of `limits.max_concurrent_requests` slots;
//! a call over that limit refused at once with `UNAVAILABLE`; and a deadline, the sooner of
//! `limits.request_timeout` and the client's own `grpc-timeout`. Health calls never take (or wait
//! for) a slot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use keyless_api::error::ApiError;
use keyless_config::Limits;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::status;

/// The request id metadata key: taken from the client when sane, otherwise generated; echoed in
/// the response headers.
pub const X_REQUEST_ID: &str = "x-request-id";

/// Paths under this prefix (health probes) are never shed.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// What a method learns from the guard.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The request id, for the record and the log.
    pub request_id: String,
    /// When the call will have been answered by the timeout: no issuance starts past it.
    pub deadline: Option<Instant>,
}

/// Limits shared by one listener's calls.
#[derive(Debug)]
pub struct Guard {
    limits: Limits,
    in_flight: Arc<Semaphore>,
}

impl Guard {
    /// Guards for `limits`.
    pub fn new(limits: Limits) -> Arc<Guard> {
        Arc::new(Guard {
            in_flight: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            limits,
        })
    }
}

/// The middleware: see the module documentation.
pub async fn guard(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(X_REQUEST_ID)
        .and_then(usable_id)
        .unwrap_or_else(new_id);
    let span = tracing::info_span!("grpc", request_id = %id, method = %method_name(req.uri().path()));
    let known = known_method(req.uri().path());
    if let Some((service, method, kind)) = known {
        metrics::counter!("grpc_server_started_total", "grpc_type" => kind, "grpc_service" => service, "grpc_method" => method)
            .increment(1);
    }
    let started = Instant::now();
    let mut resp = guarded(&guard, id.clone(), req, next).instrument(span).await;
    if let Some((service, method, kind)) = known {
        observe(service, method, kind, started, &resp);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    resp
}

/// The methods served, as `(service, method, grpc_type)`: metrics are labelled with these only,
/// never with a path a client made up.
const METHODS: [(&str, &str, &str); 5] = [
    ("dev.sigstore.fulcio.v2.CA", "CreateSigningCertificate", "unary"),
    ("dev.sigstore.fulcio.v2.CA", "GetTrustBundle", "unary"),
    ("dev.sigstore.fulcio.v2.CA", "GetConfiguration", "unary"),
    ("grpc.health.v1.Health", "Check", "unary"),
    ("grpc.health.v1.Health", "Watch", "server_stream"),
];

fn known_method(path: &str) -> Option<(&'static str, &'static str, &'static str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    METHODS.into_iter().find(|(s, m, _)| *s == service && *m == method)
}

/// Fulcio's gRPC server metrics (go-grpc-prometheus names and labels, so its dashboards work):
/// `grpc_server_started_total`, `grpc_server_handled_total` with the status code's Go name,
/// `grpc_server_handling_seconds`, `grpc_server_msg_received_total` (a request message arrived)
/// and `grpc_server_msg_sent_total` (a unary answer). An error is a trailers-only answer whose
/// headers carry `grpc-status`; a stream's status is counted when its headers go out.
fn observe(service: &'static str, method: &'static str, kind: &'static str, started: Instant, resp: &Response) {
    let code = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32);
    metrics::counter!("grpc_server_handled_total", "grpc_type" => kind, "grpc_service" => service, "grpc_method" => method, "grpc_code" => go_code_name(code))
        .increment(1);
    metrics::histogram!("grpc_server_handling_seconds", "grpc_type" => kind, "grpc_service" => service, "grpc_method" => method)
        .record(started.elapsed());
    if code == tonic::Code::Ok && kind == "unary" {
        metrics::counter!("grpc_server_msg_sent_total", "grpc_type" => kind, "grpc_service" => service, "grpc_method" => method)
            .increment(1);
    }
}

/// A status code as Go's `codes.Code.String()` names it (go-grpc-prometheus's `grpc_code`).
pub fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

async fn guarded(guard: &Guard, request_id: String, req: Request, next: Next) -> Response {
    let limits = &guard.limits;
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.as_bytes().len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return refuse(ApiError::HeadersTooLarge(limits.max_header_bytes));
    }
    let client_timeout = grpc_timeout(req.headers());
    let mut req = match read_message(req, limits).await {
        Ok(req) => req,
        Err(e) => return refuse(e),
    };
    if let Some((service, method, kind)) = known_method(req.uri().path()) {
        metrics::counter!("grpc_server_msg_received_total", "grpc_type" => kind, "grpc_service" => service, "grpc_method" => method)
            .increment(1);
    }
    let probe = req.uri().path().starts_with(HEALTH_PREFIX);
    let _permit = if probe {
        None
    } else {
        match guard.in_flight.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => return refuse(ApiError::Overloaded),
        }
    };
    let ours = limits.request_timeout;
    let limit = client_timeout.map_or(ours, |t| t.min(ours));
    req.extensions_mut().insert(CallContext {
        request_id,
        deadline: Some(Instant::now() + limit),
    });
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        // The client's own deadline: it has given up, and gRPC says so with DEADLINE_EXCEEDED.
        Err(_) if limit < ours => status::response(tonic::Status::deadline_exceeded(
            "the call's deadline (grpc-timeout) passed before it completed",
        )),
        Err(_) => refuse(ApiError::TimedOut(ours)),
    }
}

fn refuse(e: ApiError) -> Response {
    status::response(status::from_api(e))
}

/// Reads the whole request (its one message, for unary and server-streaming calls, with its
/// 5-byte gRPC frame header) under the message limit, within `body_timeout` and at no less than
/// `min_body_rate`, exactly as the REST API reads a body.
async fn read_message(req: Request, limits: &Limits) -> Result<Request, ApiError> {
    let max = crate::MAX_MESSAGE_BYTES;
    keyless_api::protect::read_whole(req, limits, max + 5, max, 0).await
}

/// The client's `grpc-timeout` (`1-8 digits` then `H`, `M`, `S`, `m`, `u` or `n`); `None` when
/// absent or malformed (gRPC servers ignore a malformed one).
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `Service/Method` of a gRPC path, bounded (it goes into every log line of the call).
fn method_name(path: &str) -> &str {
    let name = path.trim_start_matches('/');
    match name.char_indices().nth(96) {
        Some((i, _)) => &name[..i],
        None => name,
    }
}

/// A client-chosen id is kept if it is short printable ASCII (it goes into logs and the record);
/// Fulcio also takes `x-request-id` from the call's metadata.
fn usable_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic())).then(|| s.to_string())
}

fn new_id() -> String {
    let mut bytes = [0u8; 12];
    // The system's randomness failing leaves a fixed id, never a failed call.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(v: &str) -> Option<Duration> {
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", HeaderValue::from_str(v).unwrap());
        grpc_timeout(&h)
    }

    #[test]
    fn grpc_timeout_follows_the_protocol() {
        assert_eq!(timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(timeout("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S", "ЖS"] {
            assert_eq!(timeout(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert_eq!(
            usable_id(&HeaderValue::from_static("abc-123")).as_deref(),
            Some("abc-123")
        );
        assert_eq!(usable_id(&HeaderValue::from_static("has space")), None);
        assert_eq!(usable_id(&HeaderValue::from_str(&"a".repeat(129)).unwrap()), None);
        assert_eq!(new_id().len(), 24);
        assert_ne!(new_id(), new_id());
        assert_eq!(method_name(&format!("/{}", "x".repeat(500))).len(), 96);
    }

    #[test]
    fn metrics_name_only_the_methods_served() {
        assert_eq!(
            known_method("/grpc.health.v1.Health/Watch"),
            Some(("grpc.health.v1.Health", "Watch", "server_stream"))
        );
        for made_up in [
            "/dev.sigstore.fulcio.v2.CA/Nope",
            "/x/y",
            "",
            "/",
            "/dev.sigstore.fulcio.v2.CA",
        ] {
            assert_eq!(known_method(made_up), None, "{made_up:?}");
        }
        assert_eq!(go_code_name(tonic::Code::Cancelled), "Canceled");
        assert_eq!(go_code_name(tonic::Code::InvalidArgument), "InvalidArgument");
    }
}
