//! The one place where errors become HTTP responses.
//!
//! The issuance service says what kind of refusal it is and what to tell the client
//! ([`keyless_service::Error`]); this maps that, and the HTTP surface's own refusals (bodies,
//! headers, routes, load), to a status and Fulcio's JSON error shape. Server faults are 5xx with a
//! fixed message; their cause is logged once here and never sent.

use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyless_service::Kind;
use keyless_service::error::retry_secs;
use serde_json::json;

/// Everything a handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// The issuance service refused the request or failed.
    Service(keyless_service::Error),
    /// The request body or headers are malformed.
    BadRequest(String),
    /// The body is over the size limit (bytes).
    TooLarge(usize),
    /// The body did not arrive within the deadline or at the minimum rate (408).
    SlowBody {
        /// The whole body's deadline.
        timeout: Duration,
        /// Bytes per second required after the first second.
        min_rate: u64,
    },
    /// No such route.
    NotFound,
    /// Known route, wrong method.
    MethodNotAllowed,
    /// The listener is at its concurrency limit and sheds the request (503).
    Overloaded,
    /// The request took longer than the configured timeout (503).
    TimedOut(Duration),
    /// The request's header block is over the limit (431).
    HeadersTooLarge(usize),
}

impl From<keyless_service::Error> for ApiError {
    fn from(e: keyless_service::Error) -> Self {
        ApiError::Service(e)
    }
}

impl From<keyless_ca::Error> for ApiError {
    fn from(e: keyless_ca::Error) -> Self {
        ApiError::Service(e.into())
    }
}

/// gRPC status codes Fulcio's gateway puts in `code`.
const INVALID_ARGUMENT: u16 = 3;
const RESOURCE_EXHAUSTED: u16 = 8;
const NOT_FOUND: u16 = 5;
const PERMISSION_DENIED: u16 = 7;
const UNIMPLEMENTED: u16 = 12;
const INTERNAL: u16 = 13;
const UNAVAILABLE: u16 = 14;

impl ApiError {
    /// Status, gRPC code and the client-facing message. A client mistake's message quotes what
    /// the client sent; it is bounded and stripped of anything shaped like a credential, once,
    /// for the response, the log and the issuance record alike.
    pub fn parts(&self) -> (StatusCode, u16, String) {
        match self {
            ApiError::Service(e) => {
                let (status, code) = match e.kind() {
                    Kind::Invalid => (StatusCode::BAD_REQUEST, INVALID_ARGUMENT),
                    Kind::Denied => (StatusCode::FORBIDDEN, PERMISSION_DENIED),
                    Kind::Limited => (StatusCode::TOO_MANY_REQUESTS, RESOURCE_EXHAUSTED),
                    Kind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
                    Kind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
                };
                (status, code, e.message())
            }
            ApiError::BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                INVALID_ARGUMENT,
                keyless_service::redact::message(m),
            ),
            ApiError::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                INVALID_ARGUMENT,
                format!("request body is larger than {limit} bytes"),
            ),
            ApiError::SlowBody { timeout, min_rate } => (
                StatusCode::REQUEST_TIMEOUT,
                INVALID_ARGUMENT,
                format!(
                    "the request body did not arrive in time (within {} ms, at least {min_rate} bytes/s)",
                    timeout.as_millis()
                ),
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, NOT_FOUND, "Not Found".into()),
            ApiError::MethodNotAllowed => (StatusCode::NOT_IMPLEMENTED, UNIMPLEMENTED, "Method Not Allowed".into()),
            ApiError::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                "the CA is at its concurrency limit; try again shortly".into(),
            ),
            ApiError::TimedOut(limit) => (
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                format!(
                    "the request did not complete within {} ms; try again",
                    limit.as_millis()
                ),
            ),
            ApiError::HeadersTooLarge(limit) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                INVALID_ARGUMENT,
                format!("request headers are larger than {limit} bytes"),
            ),
        }
    }

    /// Seconds for `Retry-After`: on every 429 and 503.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Service(e) => e.retry_after().map(retry_secs),
            _ if self.parts().0 == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        }
    }

    /// Reason class for logs, metrics and the record.
    pub fn class(&self) -> &'static str {
        match self {
            ApiError::Service(e) => e.class(),
            ApiError::BadRequest(_)
            | ApiError::TooLarge(_)
            | ApiError::SlowBody { .. }
            | ApiError::NotFound
            | ApiError::MethodNotAllowed
            | ApiError::HeadersTooLarge(_) => "request",
            ApiError::Overloaded => "overload",
            ApiError::TimedOut(_) => "timeout",
        }
    }

    fn response(&self, status: StatusCode, code: u16, message: String) -> Response {
        let mut resp = (status, Json(json!({ "code": code, "message": message, "details": [] }))).into_response();
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        metrics::counter!("keyless_rejections_total", "class" => self.class()).increment(1);
        // Log once, graded by fault. Causes of server faults are logged, never returned. A flood
        // of one kind of refusal is logged in aggregate, so nobody can grow the log at will.
        if !LOG_BUDGET.allow(self.class()) {
            return self.response(status, code, message);
        }
        match &self {
            // A record outage is logged once by the record's writer, when it starts and when it
            // ends; policy refusals where the subject is known (the service).
            ApiError::Service(keyless_service::Error::RecordUnavailable(_))
            | ApiError::Service(keyless_service::Error::Ca(keyless_ca::Error::Policy { .. })) => {}
            ApiError::Service(keyless_service::Error::IssuerUnavailable { issuer, cause }) => {
                tracing::error!(%issuer, %cause, "OIDC issuer unavailable")
            }
            ApiError::Service(e) if e.cause().is_some() => {
                tracing::error!(
                    class = e.class(),
                    cause = e.cause().unwrap_or_default(),
                    "issuance failed"
                )
            }
            // Shedding is logged in aggregate (metrics), not once per refused request.
            ApiError::Overloaded | ApiError::NotFound | ApiError::MethodNotAllowed => {}
            _ => tracing::warn!(class = self.class(), %message, "request refused"),
        }
        self.response(status, code, message)
    }
}

/// Log lines per refusal class per second; beyond that the class is counted and summarised.
const LOG_LINES_PER_SECOND: u32 = 20;

static LOG_BUDGET: LogBudget = LogBudget(std::sync::Mutex::new(None));

/// Per-class log budget: the first [`LOG_LINES_PER_SECOND`] refusals of a class each second are
/// logged; the rest are counted and reported in one line when the next second begins.
struct LogBudget(std::sync::Mutex<Option<(std::time::Instant, std::collections::HashMap<&'static str, u32>)>>);

impl LogBudget {
    fn allow(&self, class: &'static str) -> bool {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let (since, counts) = guard.get_or_insert_with(|| (now, Default::default()));
        if now.duration_since(*since) >= Duration::from_secs(1) {
            for (class, n) in counts.drain() {
                if n > LOG_LINES_PER_SECOND {
                    tracing::warn!(
                        class,
                        suppressed = n - LOG_LINES_PER_SECOND,
                        "more refusals of this class in the last second than are logged one by one"
                    );
                }
            }
            *since = now;
        }
        let n = counts.entry(class).or_insert(0);
        *n += 1;
        *n <= LOG_LINES_PER_SECOND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_refusals_map_to_fulcio_statuses() {
        let cases: Vec<(ApiError, u16, u16)> = vec![
            (
                keyless_ca::Error::InsecureKey("RSA modulus is 1024 bits".into()).into(),
                400,
                3,
            ),
            (
                keyless_ca::Error::Policy {
                    issuer: "i".into(),
                    detail: "denied by rule \"x\"".into(),
                }
                .into(),
                403,
                7,
            ),
            (keyless_ca::Error::Signer("CKR_DEVICE_ERROR".into()).into(), 503, 14),
            (keyless_ca::Error::Setup("chain".into()).into(), 500, 13),
            (
                keyless_service::Error::RateLimited {
                    detail: "d".into(),
                    retry_after: Duration::from_millis(1500),
                }
                .into(),
                429,
                8,
            ),
            (
                keyless_service::Error::RecordUnavailable("ENOSPC".into()).into(),
                503,
                14,
            ),
        ];
        for (e, status, code) in cases {
            let (s, c, m) = e.parts();
            assert_eq!((s.as_u16(), c), (status, code), "{e:?}");
            assert!(!m.contains("CKR_") && !m.contains("ENOSPC"), "{m}");
            if status == 429 {
                assert_eq!(e.retry_after(), Some(2));
            }
            if status == 503 {
                assert!(e.retry_after().is_some());
            }
        }
    }
}
