//! The one place where errors become HTTP responses.
//!
//! Client mistakes are 4xx with Fulcio's message prefix followed by exactly what was wrong. Server
//! faults are 5xx with a fixed message; their cause is logged once here and never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyless_ca::Class;
use keyless_oidc::OidcError;
use serde_json::json;

/// Everything a handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// The issuance core refused the request or failed.
    Ca(keyless_ca::Error),
    /// An OIDC issuer could not be reached.
    IssuerUnavailable {
        /// Issuer URL (public information).
        issuer: String,
        /// Cause, for the log only.
        cause: String,
    },
    /// The request body or headers are malformed.
    BadRequest(String),
    /// The body is over the size limit (bytes).
    TooLarge(usize),
    /// The body did not arrive within the deadline or at the minimum rate (408).
    SlowBody {
        /// The whole body's deadline.
        timeout: std::time::Duration,
        /// Bytes per second required after the first second.
        min_rate: u64,
    },
    /// No such route.
    NotFound,
    /// Known route, wrong method.
    MethodNotAllowed,
    /// A fault that is neither the client's nor a known backend's.
    Internal(String),
    /// A rate limit refused the request (429).
    RateLimited {
        /// Which limit, for whom (the client's own identity and issuer only).
        detail: String,
        /// When the bucket has a token again.
        retry_after: std::time::Duration,
    },
    /// The server is at its concurrency limit and sheds the request (503).
    Overloaded,
    /// The request took longer than the configured timeout (503).
    TimedOut(std::time::Duration),
    /// The request's header block is over the limit (431).
    HeadersTooLarge(usize),
    /// The issuance record cannot be written (disk full, I/O error): nothing is issued (503).
    RecordUnavailable(String),
}

impl From<keyless_ca::Error> for ApiError {
    fn from(e: keyless_ca::Error) -> Self {
        ApiError::Ca(e)
    }
}

impl From<OidcError> for ApiError {
    fn from(e: OidcError) -> Self {
        match e {
            OidcError::Token(e) => ApiError::Ca(e),
            OidcError::IssuerUnavailable { issuer, cause } => ApiError::IssuerUnavailable { issuer, cause },
            OidcError::NewIssuerRefused { pattern, cause } => ApiError::IssuerUnavailable { issuer: pattern, cause },
            other => ApiError::Internal(other.to_string()),
        }
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
    /// the client sent; it is bounded and stripped of anything shaped like a credential here,
    /// once, for the response, the log and the issuance record alike.
    pub fn parts(&self) -> (StatusCode, u16, String) {
        let (status, code, message) = self.raw_parts();
        if status.is_client_error() {
            (status, code, crate::redact::message(&message))
        } else {
            (status, code, message)
        }
    }

    fn raw_parts(&self) -> (StatusCode, u16, String) {
        match self {
            ApiError::Ca(keyless_ca::Error::CtLog { log, .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                format!("Error entering certificate in CTL: CT log {log} is unavailable; try again later"),
            ),
            ApiError::Ca(e @ keyless_ca::Error::Policy { .. }) => (
                StatusCode::FORBIDDEN,
                PERMISSION_DENIED,
                format!("{}: {}", e.fulcio_message(), e.client_detail().unwrap_or_default()),
            ),
            ApiError::Ca(keyless_ca::Error::Signer(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                "signing backend unavailable; try again later".into(),
            ),
            ApiError::Ca(keyless_ca::Error::CaValidity(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                "the CA certificate cannot cover a new certificate's validity; the operator must rotate the CA".into(),
            ),
            ApiError::Ca(e) => match e.client_detail() {
                Some(detail) => (
                    StatusCode::BAD_REQUEST,
                    INVALID_ARGUMENT,
                    format!("{}: {detail}", e.fulcio_message()),
                ),
                None => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    INTERNAL,
                    e.fulcio_message().to_string(),
                ),
            },
            ApiError::IssuerUnavailable { issuer, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                format!(
                    "There was an error processing the identity token: issuer {issuer} is unavailable; try again later"
                ),
            ),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, INVALID_ARGUMENT, m.clone()),
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
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL, "internal error".into()),
            ApiError::RateLimited { detail, retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                RESOURCE_EXHAUSTED,
                format!(
                    "rate limit exceeded: {detail}; retry after {} s",
                    retry_secs(*retry_after)
                ),
            ),
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
            ApiError::RecordUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                "the issuance record is unavailable, so nothing can be issued; try again later".into(),
            ),
        }
    }

    /// Seconds for `Retry-After`: on every 429 and 503.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after, .. } => Some(retry_secs(*retry_after)),
            _ if self.parts().0 == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        }
    }

    /// Reason class for logs and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            ApiError::Ca(e) => match e.class() {
                Class::Token => "token",
                Class::Key => "key",
                Class::Policy => "policy",
                Class::Possession => "pop",
                Class::Request => "request",
                Class::Server => "server",
                Class::CtLog => "ct_log",
            },
            ApiError::IssuerUnavailable { .. } => "issuer_unavailable",
            ApiError::BadRequest(_)
            | ApiError::TooLarge(_)
            | ApiError::SlowBody { .. }
            | ApiError::NotFound
            | ApiError::MethodNotAllowed
            | ApiError::HeadersTooLarge(_) => "request",
            ApiError::Internal(_) => "server",
            ApiError::RateLimited { .. } => "rate_limit",
            ApiError::Overloaded => "overload",
            ApiError::RecordUnavailable(_) => "record_unavailable",
            ApiError::TimedOut(_) => "timeout",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        crate::metrics::rejected(self.class());
        // Log once, graded by fault. Causes of server faults are logged, never returned. A flood
        // of one kind of refusal is logged in aggregate, so nobody can grow the log at will.
        if !LOG_BUDGET.allow(self.class()) {
            return self.response(status, code, message);
        }
        match &self {
            ApiError::Ca(e) if e.client_detail().is_none() => {
                tracing::error!(cause = %e, "issuance failed")
            }
            ApiError::IssuerUnavailable { issuer, cause } => {
                tracing::error!(%issuer, %cause, "OIDC issuer unavailable")
            }
            ApiError::Internal(cause) => tracing::error!(%cause, "internal error"),
            // Shedding is logged in aggregate (metrics), not once per refused request; a record
            // outage is logged once by the record's writer, when it starts and when it ends.
            ApiError::Overloaded | ApiError::RecordUnavailable(_) => {}
            // Policy refusals are logged where the subject is known (issuance::decide).
            ApiError::NotFound | ApiError::MethodNotAllowed | ApiError::Ca(keyless_ca::Error::Policy { .. }) => {}
            _ => tracing::warn!(class = self.class(), %message, "request refused"),
        }
        self.response(status, code, message)
    }
}

impl ApiError {
    fn response(&self, status: StatusCode, code: u16, message: String) -> Response {
        let mut resp = (status, Json(json!({ "code": code, "message": message, "details": [] }))).into_response();
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        resp
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
        if now.duration_since(*since) >= std::time::Duration::from_secs(1) {
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

/// Whole seconds, rounded up, at least 1.
fn retry_secs(d: std::time::Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_faults_hide_their_cause() {
        let e = ApiError::Ca(keyless_ca::Error::Signer("PKCS#11 CKR_DEVICE_ERROR in slot 3".into()));
        let (status, code, message) = e.parts();
        assert_eq!((status, code), (StatusCode::SERVICE_UNAVAILABLE, 14));
        assert_eq!(message, "signing backend unavailable; try again later");
        let e = ApiError::Ca(keyless_ca::Error::Setup("chain file /etc/x".into()));
        let (status, code, message) = e.parts();
        assert_eq!((status, code), (StatusCode::INTERNAL_SERVER_ERROR, 13));
        assert_eq!(message, "error communicating with CA backend");
        let e = ApiError::Internal("db path /var/lib/x".into());
        assert!(!e.parts().2.contains("/var/lib"));
    }

    #[test]
    fn client_faults_carry_fulcio_prefix_and_detail() {
        let e = ApiError::Ca(keyless_ca::Error::InsecureKey("RSA modulus is 1024 bits".into()));
        let (status, code, message) = e.parts();
        assert_eq!((status, code), (StatusCode::BAD_REQUEST, 3));
        assert_eq!(
            message,
            "The public key supplied in the request is insecure: RSA modulus is 1024 bits"
        );
        let e = ApiError::IssuerUnavailable {
            issuer: "https://idp.example".into(),
            cause: "connect refused 10.0.0.1".into(),
        };
        let (status, _, message) = e.parts();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(message.contains("https://idp.example") && !message.contains("10.0.0.1"));
    }
}
