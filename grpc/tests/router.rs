//! The whole gRPC surface as served ([`keyless_grpc::router`]), driven in process with
//! `tower::ServiceExt::oneshot` and gRPC frames built here: the CA's methods, the refusals the
//! guard makes before a method runs, and health.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use keyless_ca::ceremony::{self, CaNames};
use keyless_ca::pipeline::pem_encode;
use keyless_ca::{CertificateAuthority, SignatureAlgorithm, Signer, SoftwareSigner};
use keyless_config::{IssuerConfig, IssuerKind, Limits, RateLimits};
use keyless_grpc::fulcio::{
    Configuration, CreateSigningCertificateRequest, GetConfigurationRequest, GetTrustBundleRequest, TrustBundle,
    oidc_issuer,
};
use keyless_grpc::health_proto::health_check_response::ServingStatus;
use keyless_grpc::health_proto::{HealthCheckRequest, HealthCheckResponse};
use keyless_oidc::OidcVerifier;
use keyless_service::{CtProbe, IssuerSet, Parts, Service};
use prost::Message as _;
use tokio::sync::watch;
use tower::ServiceExt as _;

const ISSUER: &str = "https://issuer.example";

/// A service with a fresh file CA, CT disabled, no record, and one email issuer these tests never
/// contact; and the router over it with `limits`.
struct Setup {
    service: Arc<Service>,
    app: axum::Router,
    stop: watch::Sender<bool>,
}

fn setup(limits: Limits) -> Setup {
    let now = SystemTime::now();
    let year = Duration::from_secs(365 * 86400);
    let names = CaNames::default();
    let root = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP384Sha384).unwrap().0;
    let issuing = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap().0;
    let root_der = ceremony::root_certificate(&root, &names, year, now).unwrap();
    let inter =
        ceremony::intermediate_certificate(&root, &root_der, issuing.public_key_spki(), &names, year, now).unwrap();
    let chain_pem = vec![pem_encode(&inter), pem_encode(&root_der)];
    let ca = CertificateAuthority::new(Arc::new(issuing), &chain_pem.concat(), Duration::from_secs(600), now).unwrap();
    let list = vec![IssuerConfig::new(ISSUER, IssuerKind::Email(Default::default()))];
    let service = Arc::new(Service::new(Parts {
        ca: Arc::new(ca),
        chain_pem,
        ct_log: "disabled".into(),
        ct_probe: CtProbe::Disabled,
        issuers: IssuerSet {
            oidc: OidcVerifier::new(&list).unwrap(),
            list,
            rate_limits: RateLimits::default(),
        },
        audit: None,
        limiter: Default::default(),
        max_in_progress: 4,
    }));
    let (stop, stopping) = watch::channel(false);
    let app = keyless_grpc::router(service.clone(), &limits, stopping);
    Setup { service, app, stop }
}

/// A gRPC message frame: uncompressed, length-prefixed.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn call(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body.into())
        .unwrap()
}

/// What came back: the response's messages, and the status from the trailers (or from the
/// headers of a trailers-only answer).
struct Answer {
    headers: HeaderMap,
    messages: Vec<Bytes>,
    code: i32,
    message: String,
    trailers: HeaderMap,
}

async fn send(app: &axum::Router, req: Request<Body>) -> Answer {
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200, "gRPC answers HTTP 200 whatever the outcome");
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let mut data = collected.to_bytes();
    let mut messages = Vec::new();
    while data.len() >= 5 {
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        messages.push(data.slice(5..5 + len));
        data = data.slice(5 + len..);
    }
    let status_from = if headers.contains_key("grpc-status") {
        &headers
    } else {
        &trailers
    };
    let code = status_from["grpc-status"].to_str().unwrap().parse().unwrap();
    let message = status_from
        .get("grpc-message")
        .map(|v| percent_decode(v.to_str().unwrap()))
        .unwrap_or_default();
    Answer {
        headers,
        messages,
        code,
        message,
        trailers,
    }
}

/// `grpc-message` is percent-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%' && i + 3 <= b.len())
            .then(|| u8::from_str_radix(&s[i + 1..i + 3], 16).ok())
            .flatten();
        match escaped {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn trust_bundle_and_configuration_are_the_services() {
    let s = setup(Limits::default());
    let r = send(
        &s.app,
        call(
            "/dev.sigstore.fulcio.v2.CA/GetTrustBundle",
            frame(&GetTrustBundleRequest {}.encode_to_vec()),
        ),
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.message);
    let bundle = TrustBundle::decode(r.messages[0].clone()).unwrap();
    assert_eq!(bundle.chains.len(), 1);
    assert_eq!(bundle.chains[0].certificates, s.service.chain_pem());
    assert!(
        r.headers.contains_key("x-request-id"),
        "every answer names its request id"
    );

    let r = send(
        &s.app,
        call(
            "/dev.sigstore.fulcio.v2.CA/GetConfiguration",
            frame(&GetConfigurationRequest {}.encode_to_vec()),
        ),
    )
    .await;
    let config = Configuration::decode(r.messages[0].clone()).unwrap();
    assert_eq!(config.issuers.len(), 1);
    let issuer = &config.issuers[0];
    assert_eq!(issuer.issuer, Some(oidc_issuer::Issuer::IssuerUrl(ISSUER.into())));
    assert_eq!(
        (
            issuer.audience.as_str(),
            issuer.challenge_claim.as_str(),
            issuer.issuer_type.as_str()
        ),
        ("sigstore", "email", "email")
    );
}

#[tokio::test]
async fn signing_refusals_carry_fulcios_code_and_message() {
    let s = setup(Limits::default());
    // No token anywhere: refused by the service as Fulcio refuses it.
    let r = send(
        &s.app,
        call(
            "/dev.sigstore.fulcio.v2.CA/CreateSigningCertificate",
            frame(&CreateSigningCertificateRequest::default().encode_to_vec()),
        ),
    )
    .await;
    assert_eq!(r.code, tonic::Code::InvalidArgument as i32);
    assert!(
        r.message
            .starts_with("There was an error processing the identity token"),
        "{}",
        r.message
    );
    assert!(r.messages.is_empty());
    // A message that is not protobuf: refused (and recorded) before the service sees it.
    let r = send(
        &s.app,
        call(
            "/dev.sigstore.fulcio.v2.CA/CreateSigningCertificate",
            frame(&[0xff, 0xff, 0xff]),
        ),
    )
    .await;
    assert_eq!(r.code, tonic::Code::InvalidArgument as i32);
    assert!(
        r.message.contains("not a valid CreateSigningCertificateRequest"),
        "{}",
        r.message
    );
}

#[tokio::test]
async fn the_guard_refuses_before_a_method_runs() {
    let s = setup(Limits {
        body_timeout: Duration::from_millis(300),
        ..Limits::default()
    });
    let r = send(
        &s.app,
        call("/dev.sigstore.fulcio.v1beta.CA/GetRootCertificate", frame(&[])),
    )
    .await;
    assert_eq!(
        (r.code, r.message.as_str()),
        (tonic::Code::Unimplemented as i32, "unknown service or method")
    );
    // Over 4 MiB: RESOURCE_EXHAUSTED, as gRPC servers answer it.
    let big = frame(&vec![0u8; keyless_grpc::MAX_MESSAGE_BYTES + 1]);
    let r = send(&s.app, call("/dev.sigstore.fulcio.v2.CA/CreateSigningCertificate", big)).await;
    assert_eq!(r.code, tonic::Code::ResourceExhausted as i32, "{}", r.message);
    // A message that never finishes arriving holds no slot for longer than the body timeout.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(&[0, 0, 0, 0, 9]))))
        .await
        .unwrap();
    let body = Body::new(http_body_util::StreamBody::new(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    let started = std::time::Instant::now();
    let r = send(
        &s.app,
        call("/dev.sigstore.fulcio.v2.CA/CreateSigningCertificate", body),
    )
    .await;
    assert_eq!(r.code, tonic::Code::InvalidArgument as i32);
    assert!(r.message.contains("did not arrive in time"), "{}", r.message);
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(tx);
}

#[tokio::test]
async fn over_the_concurrency_limit_calls_are_shed_but_health_answers() {
    let s = setup(Limits {
        max_concurrent_requests: 0,
        ..Limits::default()
    });
    let r = send(
        &s.app,
        call(
            "/dev.sigstore.fulcio.v2.CA/GetTrustBundle",
            frame(&GetTrustBundleRequest {}.encode_to_vec()),
        ),
    )
    .await;
    assert_eq!(r.code, tonic::Code::Unavailable as i32);
    assert_eq!(r.message, "the CA is at its concurrency limit; try again shortly");
    let pushback = if r.headers.contains_key("grpc-status") {
        &r.headers
    } else {
        &r.trailers
    };
    assert_eq!(pushback["grpc-retry-pushback-ms"], "1000");
    let r = send(
        &s.app,
        call(
            "/grpc.health.v1.Health/Check",
            frame(&HealthCheckRequest::default().encode_to_vec()),
        ),
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.message);
    assert_eq!(
        HealthCheckResponse::decode(r.messages[0].clone()).unwrap().status(),
        ServingStatus::Serving
    );
}

#[tokio::test]
async fn health_is_serving_until_shutdown_begins() {
    let s = setup(Limits::default());
    let check = |service: &str| {
        call(
            "/grpc.health.v1.Health/Check",
            frame(
                &HealthCheckRequest {
                    service: service.into(),
                }
                .encode_to_vec(),
            ),
        )
    };
    for name in ["", "dev.sigstore.fulcio.v2.CA", "anything"] {
        let r = send(&s.app, check(name)).await;
        let status = HealthCheckResponse::decode(r.messages[0].clone()).unwrap().status();
        assert_eq!(status, ServingStatus::Serving, "{name:?}");
    }
    // A Watch sees SERVING, then NOT_SERVING when shutdown begins, and then its stream ends
    // (so it cannot hold the server's shutdown up).
    let resp = s
        .app
        .clone()
        .oneshot(call(
            "/grpc.health.v1.Health/Watch",
            frame(&HealthCheckRequest::default().encode_to_vec()),
        ))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(
        HealthCheckResponse::decode(first.slice(5..)).unwrap().status(),
        ServingStatus::Serving
    );
    s.stop.send(true).unwrap();
    let second = tokio::time::timeout(Duration::from_secs(2), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(
        HealthCheckResponse::decode(second.slice(5..)).unwrap().status(),
        ServingStatus::NotServing
    );
    let end = tokio::time::timeout(Duration::from_secs(2), body.collect())
        .await
        .expect("the stream ends")
        .unwrap();
    assert_eq!(end.trailers().unwrap()["grpc-status"], "0");
    let r = send(&s.app, check("")).await;
    let status = HealthCheckResponse::decode(r.messages[0].clone()).unwrap().status();
    assert_eq!(status, ServingStatus::NotServing);
}

/// Open `Watch` streams are capped: each outlives its call, so the one past the cap is refused
/// with RESOURCE_EXHAUSTED, and a closed stream frees its place.
#[tokio::test]
async fn open_health_watches_are_capped() {
    let s = setup(Limits::default());
    let mut open = Vec::new();
    for _ in 0..keyless_grpc::health::MAX_WATCHES {
        let mut body = s
            .app
            .clone()
            .oneshot(call(
                "/grpc.health.v1.Health/Watch",
                frame(&HealthCheckRequest::default().encode_to_vec()),
            ))
            .await
            .unwrap()
            .into_body();
        // The first answer arrives once the stream's task runs (and holds its place).
        body.frame().await.unwrap().unwrap();
        open.push(body);
    }
    let watch_call = || {
        call(
            "/grpc.health.v1.Health/Watch",
            frame(&HealthCheckRequest::default().encode_to_vec()),
        )
    };
    let r = send(&s.app, watch_call()).await;
    assert_eq!(r.code, tonic::Code::ResourceExhausted as i32, "{}", r.message);
    assert!(r.message.contains("too many open health watches"), "{}", r.message);
    // Closing one stream gives its place back (once its task sees the close).
    open.pop();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let mut body = s.app.clone().oneshot(watch_call()).await.unwrap().into_body();
        // A refusal is trailers-only: no data frame.
        if let Some(Ok(data)) = body.frame().await.map(|f| f.unwrap().into_data()) {
            assert_eq!(
                HealthCheckResponse::decode(data.slice(5..)).unwrap().status(),
                ServingStatus::Serving
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the closed watch's place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
