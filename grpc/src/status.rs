//! The one place where refusals become gRPC statuses.
//!
//! Every refusal is first an [`ApiError`], the REST API's error, so both front doors answer the
//! same thing: the gRPC code is the one the REST API puts in its `code` field (Fulcio's codes:
//! `INVALID_ARGUMENT` for the client's mistakes, `PERMISSION_DENIED` for claim policy,
//! `RESOURCE_EXHAUSTED` for rate limits, `UNAVAILABLE` for dependencies and load, `INTERNAL` for
//! server faults), with the same message, and it is counted and logged by the same code. The one
//! gRPC-specific difference: a message over the size limit is `RESOURCE_EXHAUSTED`, as gRPC
//! servers (Fulcio's included) answer it.

use axum::response::IntoResponse as _;
use keyless_api::error::ApiError;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Trailer telling gRPC clients with a retry policy when to retry (gRFC A6 server pushback).
pub const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// The status for `e`, counted in `keyless_rejections_total` and logged as the REST API does.
pub fn from_api(e: ApiError) -> Status {
    let (_, code, message) = e.parts();
    let code = match e {
        ApiError::TooLarge(_) => Code::ResourceExhausted,
        _ => Code::from_i32(i32::from(code)),
    };
    let retry_after = e.retry_after();
    // The REST API's response conversion is where refusals are counted and logged (rate-limited
    // per class, server causes never sent); the HTTP body it builds is dropped.
    drop(e.into_response());
    let mut status = Status::new(code, message);
    if let Some(secs) = retry_after {
        status
            .metadata_mut()
            .insert(RETRY_PUSHBACK, MetadataValue::from(secs.saturating_mul(1000)));
    }
    status
}

/// The status for an issuance service refusal.
pub fn from_service(e: keyless_service::Error) -> Status {
    from_api(ApiError::Service(e))
}

/// `status` as a trailers-only HTTP response (for refusals made before a method runs).
pub fn response(status: Status) -> axum::response::Response {
    status.into_http::<axum::body::Body>()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn service_refusals_get_fulcios_codes_and_the_rest_messages() {
        type Make = fn() -> keyless_service::Error;
        let cases: [(Make, Code); 6] = [
            (
                || keyless_ca::Error::InsecureKey("RSA modulus is 1024 bits".into()).into(),
                Code::InvalidArgument,
            ),
            (
                || {
                    keyless_ca::Error::Policy {
                        issuer: "i".into(),
                        detail: "denied by rule \"x\"".into(),
                    }
                    .into()
                },
                Code::PermissionDenied,
            ),
            (
                || keyless_service::Error::RateLimited {
                    detail: "d".into(),
                    retry_after: Duration::from_millis(1500),
                },
                Code::ResourceExhausted,
            ),
            (
                || keyless_ca::Error::Signer("CKR_DEVICE_ERROR".into()).into(),
                Code::Unavailable,
            ),
            (|| keyless_ca::Error::Setup("chain".into()).into(), Code::Internal),
            (|| keyless_service::Error::Overloaded, Code::Unavailable),
        ];
        for (make, code) in cases {
            let (_, rest_code, rest_message) = ApiError::Service(make()).parts();
            let status = from_service(make());
            assert_eq!(status.code(), code);
            assert_eq!(status.code() as i32, i32::from(rest_code), "the REST API's code field");
            assert_eq!(status.message(), rest_message, "the REST message, unchanged");
            assert!(!status.message().contains("CKR_"), "server causes are never sent");
            let pushback = status
                .metadata()
                .get(RETRY_PUSHBACK)
                .map(|v| v.to_str().unwrap().to_string());
            match code {
                Code::ResourceExhausted => assert_eq!(pushback.as_deref(), Some("2000")),
                Code::Unavailable => assert_eq!(pushback.as_deref(), Some("1000")),
                _ => assert_eq!(pushback, None),
            }
        }
    }

    #[test]
    fn the_code_is_the_rest_apis_code_field() {
        for e in [
            ApiError::BadRequest("x".into()),
            ApiError::Overloaded,
            ApiError::TimedOut(Duration::from_secs(1)),
            ApiError::NotFound,
        ] {
            let rest = e.parts().1;
            assert_eq!(from_api(e).code() as i32, i32::from(rest));
        }
        let too_large = from_api(ApiError::TooLarge(4 << 20));
        assert_eq!(too_large.code(), Code::ResourceExhausted);
        assert_eq!(too_large.message(), "request body is larger than 4194304 bytes");
    }
}
