//! Request protection and tracing around the API: request ids, the whole body read before a
//! request takes a slot, load shedding, timeouts, header limits, CORS, latency metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keyless_config::Limits;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::error::ApiError;

/// The request id header: taken from the client when sane, otherwise generated; always echoed.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Limits shared by the middleware of one listener.
#[derive(Debug)]
pub struct Guard {
    limits: Limits,
    in_flight: Arc<Semaphore>,
    max_body_bytes: usize,
    /// Paths never shed (health probes).
    exempt: &'static [&'static str],
}

impl Guard {
    /// Guards for `limits`; bodies over `max_body_bytes` are refused while they arrive. Requests
    /// for `exempt` paths never wait for (or take) a concurrency slot.
    pub fn new(limits: Limits, max_body_bytes: usize, exempt: &'static [&'static str]) -> Arc<Guard> {
        Arc::new(Guard {
            in_flight: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            limits,
            max_body_bytes,
            exempt,
        })
    }
}

/// A client-chosen id is kept if it is short printable ASCII (it goes into logs and a header).
fn usable_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic())).then(|| s.to_string())
}

fn new_id() -> String {
    let mut bytes = [0u8; 12];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    hex::encode(bytes)
}

/// When the request will have been answered 503 by the request timeout: the issuance service
/// starts no issuance for a request past it.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

/// The request's id, for handlers (the audit record keeps it).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Outermost layer: every log line of a request carries its id, and the response echoes it.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(usable_id)
        .unwrap_or_else(new_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method());
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    resp
}

/// Header-size limit, the whole body, load shedding and the request timeout, in that order. The
/// body is read before a request may take a concurrency slot, so a client trickling its body
/// holds a connection (which [`crate::conn`] bounds), never the CA's capacity. A request over the
/// concurrency limit is refused at once (503 + `Retry-After`) instead of queueing, so overload
/// costs the server almost nothing and clients get a fast answer.
pub async fn guard(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.as_bytes().len() + 4)
        .sum();
    if header_bytes > guard.limits.max_header_bytes {
        return ApiError::HeadersTooLarge(guard.limits.max_header_bytes).into_response();
    }
    let req = match read_body(req, &guard).await {
        Ok(req) => req,
        Err(e) => {
            let mut resp = e.into_response();
            // The connection's remaining bytes are unknown: do not reuse it.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    };
    // Health checks are never shed: an overloaded CA is alive, and readiness answers for itself.
    let probe = guard.exempt.contains(&req.uri().path());
    let _permit = if probe {
        None
    } else {
        match guard.in_flight.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => return ApiError::Overloaded.into_response(),
        }
    };
    let limit = guard.limits.request_timeout;
    let mut req = req;
    req.extensions_mut().insert(Deadline(Instant::now() + limit));
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::TimedOut(limit).into_response(),
    }
}

/// Reads the whole body under the size limit, within `body_timeout`, and (after the first second)
/// at no less than `min_body_rate` bytes per second on average.
async fn read_body(req: Request, guard: &Guard) -> Result<Request, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > guard.max_body_bytes as u64) {
        return Err(ApiError::TooLarge(guard.max_body_bytes));
    }
    let capacity = declared.unwrap_or(0).min(64 * 1024) as usize;
    read_whole(req, &guard.limits, guard.max_body_bytes, guard.max_body_bytes, capacity).await
}

/// Reads the whole body of `req` into memory: at most `max` bytes (more is `TooLarge(limit)`),
/// within `limits.body_timeout`, and after the first second at no less than
/// `limits.min_body_rate` bytes per second on average, so a client trickling its request holds a
/// connection (which [`crate::conn`] bounds), never one of the CA's slots. Shared by every front
/// door.
pub async fn read_whole(
    req: Request,
    limits: &Limits,
    max: usize,
    limit: usize,
    capacity: usize,
) -> Result<Request, ApiError> {
    use http_body_util::BodyExt as _;
    let (parts, mut body) = req.into_parts();
    let start = tokio::time::Instant::now();
    let hard = start + limits.body_timeout;
    let rate = limits.min_body_rate;
    let mut buf: Vec<u8> = Vec::with_capacity(capacity.min(max));
    loop {
        // By the time `received / rate` seconds past the first one have gone, more must have come.
        let need_by = if rate == 0 {
            hard
        } else {
            start + Duration::from_secs(1) + Duration::from_secs_f64(buf.len() as f64 / rate as f64)
        };
        let frame = match tokio::time::timeout_at(hard.min(need_by), body.frame()).await {
            Err(_) => {
                metrics::counter!("keyless_slow_bodies_total").increment(1);
                return Err(ApiError::SlowBody {
                    timeout: limits.body_timeout,
                    min_rate: rate,
                });
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ApiError::BadRequest(format!("cannot read the request body: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(ApiError::TooLarge(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(buf)))
}

/// Request latency by route (the route pattern, never the raw URL).
pub async fn observe(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    metrics::histogram!("keyless_http_request_duration_seconds", "route" => route).record(start.elapsed());
    resp
}

/// Fulcio's HTTP metrics, for every answered request whatever its route or outcome (Fulcio wraps
/// its whole HTTP handler with the Prometheus client's instrumentation): `http_requests_total` and
/// the `fulcio_api_latency` histogram (seconds), both by `code` (the status, e.g. `201`) and
/// `method` (lower-cased; outside the standard methods `unknown`, as the Prometheus client does,
/// which also keeps a client from inventing label values).
pub async fn fulcio_metrics(req: Request, next: Next) -> Response {
    let method = prometheus_method(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    let code = resp.status().as_str().to_string();
    metrics::counter!("http_requests_total", "code" => code.clone(), "method" => method).increment(1);
    metrics::histogram!("fulcio_api_latency", "code" => code, "method" => method).record(start.elapsed());
    resp
}

/// The Prometheus Go client's method label.
fn prometheus_method(m: &Method) -> &'static str {
    const KNOWN: [&str; 10] = [
        "get", "put", "head", "post", "delete", "connect", "options", "notify", "trace", "patch",
    ];
    let m = m.as_str();
    KNOWN
        .iter()
        .find(|k| m == **k || m.eq_ignore_ascii_case(k) && m.bytes().all(|b| b.is_ascii_uppercase()))
        .copied()
        .unwrap_or("unknown")
}

/// CORS as Fulcio answers it: any origin, GET/POST/HEAD, and no `Authorization` in a preflight,
/// so browser clients put the token in the JSON body.
pub fn cors() -> tower_http::cors::CorsLayer {
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::POST, Method::HEAD])
        .allow_headers([
            header::ORIGIN,
            header::ACCEPT,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-requested-with"),
        ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_labelled_as_the_prometheus_client_does() {
        let m = |s: &str| prometheus_method(&Method::from_bytes(s.as_bytes()).unwrap());
        assert_eq!(
            (m("POST"), m("GET"), m("HEAD"), m("OPTIONS")),
            ("post", "get", "head", "options")
        );
        assert_eq!((m("post"), m("PATCH"), m("NOTIFY")), ("post", "patch", "notify"));
        assert_eq!((m("Post"), m("BREW"), m("PROPFIND")), ("unknown", "unknown", "unknown"));
    }
}
