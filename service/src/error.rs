//! Why an issuance did not happen, as every front door must tell it.
//!
//! The service knows no transport: it says what class of refusal it is (for metrics and the
//! record), the client-facing message (Fulcio's prefix plus exactly what was wrong, bounded and
//! redacted), and whether the cause is the client's. Each front door maps these to its own status
//! codes in one place (`keyless_api::error` for HTTP).

use std::time::Duration;

use keyless_ca::Class;
use keyless_oidc::OidcError;

/// Everything the issuance service can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The issuance core refused the request or failed.
    #[error(transparent)]
    Ca(keyless_ca::Error),
    /// An OIDC issuer could not be reached (or a new meta issuer was not admitted).
    #[error("issuer {issuer} is unavailable: {cause}")]
    IssuerUnavailable {
        /// Issuer URL (public information), or the meta pattern.
        issuer: String,
        /// Cause, for the operator's log only.
        cause: String,
    },
    /// A rate limit refused the request.
    #[error("rate limit exceeded: {detail}")]
    RateLimited {
        /// Which limit, for whom (the client's own identity and issuer only).
        detail: String,
        /// When the bucket has a token again.
        retry_after: Duration,
    },
    /// The bound on issuances in progress is reached.
    #[error("too many issuances in progress")]
    Overloaded,
    /// The front door's deadline passed before an issuance started.
    #[error("the request's deadline passed")]
    DeadlineExceeded,
    /// The issuance record cannot be written (disk full, I/O error): nothing is issued.
    #[error("issuance record unavailable: {0}")]
    RecordUnavailable(String),
    /// A fault that is neither the client's nor a known backend's.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<keyless_ca::Error> for Error {
    fn from(e: keyless_ca::Error) -> Self {
        Error::Ca(e)
    }
}

impl From<OidcError> for Error {
    fn from(e: OidcError) -> Self {
        match e {
            OidcError::Token(e) => Error::Ca(e),
            OidcError::IssuerUnavailable { issuer, cause } => Error::IssuerUnavailable { issuer, cause },
            OidcError::NewIssuerRefused { pattern, cause } => Error::IssuerUnavailable { issuer: pattern, cause },
            other => Error::Internal(other.to_string()),
        }
    }
}

/// How a front door should answer, in transport-neutral terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The client's request is at fault (bad token, key, proof...).
    Invalid,
    /// The issuer's claim policy refuses the identity.
    Denied,
    /// A rate limit refused; retry later.
    Limited,
    /// A dependency (IdP, CT log, signer, record) or capacity is unavailable; retry later.
    Unavailable,
    /// A server fault.
    Internal,
}

impl Error {
    /// How to answer.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Ca(keyless_ca::Error::Policy { .. }) => Kind::Denied,
            Error::Ca(
                keyless_ca::Error::CtLog { .. } | keyless_ca::Error::Signer(_) | keyless_ca::Error::CaValidity(_),
            ) => Kind::Unavailable,
            Error::Ca(e) if e.client_detail().is_some() => Kind::Invalid,
            Error::Ca(_) | Error::Internal(_) => Kind::Internal,
            Error::RateLimited { .. } => Kind::Limited,
            Error::IssuerUnavailable { .. }
            | Error::Overloaded
            | Error::DeadlineExceeded
            | Error::RecordUnavailable(_) => Kind::Unavailable,
        }
    }

    /// The client-facing message: Fulcio's prefix and the detail for client mistakes (bounded and
    /// redacted, see [`crate::redact`]), a fixed text for server faults (their cause stays in the
    /// operator's log).
    pub fn message(&self) -> String {
        let text = match self {
            Error::Ca(keyless_ca::Error::CtLog { log, .. }) => {
                format!("Error entering certificate in CTL: CT log {log} is unavailable; try again later")
            }
            Error::Ca(keyless_ca::Error::Signer(_)) => "signing backend unavailable; try again later".into(),
            Error::Ca(keyless_ca::Error::CaValidity(_)) => {
                "the CA certificate cannot cover a new certificate's validity; the operator must rotate the CA".into()
            }
            Error::Ca(e) => match e.client_detail() {
                Some(detail) => format!("{}: {detail}", e.fulcio_message()),
                None => e.fulcio_message().to_string(),
            },
            Error::IssuerUnavailable { issuer, .. } => format!(
                "There was an error processing the identity token: issuer {issuer} is unavailable; try again later"
            ),
            Error::RateLimited { detail, retry_after } => format!(
                "rate limit exceeded: {detail}; retry after {} s",
                retry_secs(*retry_after)
            ),
            Error::Overloaded => "the CA is at its concurrency limit; try again shortly".into(),
            Error::DeadlineExceeded => "the request did not complete in time; try again".into(),
            Error::RecordUnavailable(_) => {
                "the issuance record is unavailable, so nothing can be issued; try again later".into()
            }
            Error::Internal(_) => "internal error".into(),
        };
        match self.kind() {
            Kind::Invalid | Kind::Denied | Kind::Limited => crate::redact::message(&text),
            Kind::Unavailable | Kind::Internal => text,
        }
    }

    /// Reason class for logs, metrics and the record.
    pub fn class(&self) -> &'static str {
        match self {
            Error::Ca(e) => match e.class() {
                Class::Token => "token",
                Class::Key => "key",
                Class::Policy => "policy",
                Class::Possession => "pop",
                Class::Request => "request",
                Class::Server => "server",
                Class::CtLog => "ct_log",
            },
            Error::IssuerUnavailable { .. } => "issuer_unavailable",
            Error::RateLimited { .. } => "rate_limit",
            Error::Overloaded => "overload",
            Error::DeadlineExceeded => "timeout",
            Error::RecordUnavailable(_) => "record_unavailable",
            Error::Internal(_) => "server",
        }
    }

    /// When a retry may succeed, for errors worth retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => Some(*retry_after),
            _ if self.kind() == Kind::Unavailable => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The cause an operator needs, for server-side faults (never sent to clients).
    pub fn cause(&self) -> Option<String> {
        match self {
            Error::Ca(e) if e.client_detail().is_none() => Some(e.to_string()),
            Error::IssuerUnavailable { cause, .. } | Error::RecordUnavailable(cause) | Error::Internal(cause) => {
                Some(cause.clone())
            }
            _ => None,
        }
    }
}

/// Whole seconds, rounded up, at least 1.
pub fn retry_secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_faults_hide_their_cause() {
        let e = Error::Ca(keyless_ca::Error::Signer("PKCS#11 CKR_DEVICE_ERROR in slot 3".into()));
        assert_eq!(e.kind(), Kind::Unavailable);
        assert_eq!(e.message(), "signing backend unavailable; try again later");
        assert!(e.cause().unwrap().contains("CKR_DEVICE_ERROR"));
        let e = Error::Ca(keyless_ca::Error::Setup("chain file /etc/x".into()));
        assert_eq!(
            (e.kind(), e.message().as_str()),
            (Kind::Internal, "error communicating with CA backend")
        );
        let e = Error::Internal("db path /var/lib/x".into());
        assert!(!e.message().contains("/var/lib"));
    }

    #[test]
    fn client_faults_carry_fulcio_prefix_and_detail() {
        let e = Error::Ca(keyless_ca::Error::InsecureKey("RSA modulus is 1024 bits".into()));
        assert_eq!(e.kind(), Kind::Invalid);
        assert_eq!(
            e.message(),
            "The public key supplied in the request is insecure: RSA modulus is 1024 bits"
        );
        let e = Error::IssuerUnavailable {
            issuer: "https://idp.example".into(),
            cause: "connect refused 10.0.0.1".into(),
        };
        assert_eq!(e.kind(), Kind::Unavailable);
        assert!(e.message().contains("https://idp.example") && !e.message().contains("10.0.0.1"));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    }
}
