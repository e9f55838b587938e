//! The whole API as served ([`keyless_api::app`]), driven in process with `tower::ServiceExt::oneshot`:
//! routing, the guard's refusals, CORS, and the mapping of service errors to Fulcio's responses.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use keyless_ca::ceremony::{self, CaNames};
use keyless_ca::pipeline::pem_encode;
use keyless_ca::{CertificateAuthority, SignatureAlgorithm, Signer, SoftwareSigner};
use keyless_config::{IssuerConfig, IssuerKind, Limits, RateLimits};
use keyless_oidc::OidcVerifier;
use keyless_service::{CtProbe, IssuerSet, Parts, Service};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const ISSUER: &str = "https://issuer.example";

/// A service with a freshly made file CA, CT disabled, no record, and one email issuer that is
/// never contacted by these tests.
fn app(limits: Limits) -> axum::Router {
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
    let service = Service::new(Parts {
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
    });
    let state = Arc::new(keyless_api::AppState::new(Arc::new(service), None));
    keyless_api::app(state, &limits, axum::Router::new())
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

async fn send(app: &axum::Router, req: Request<Body>) -> Answer {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer { status, headers, body }
}

fn post_json(path: &str, body: &Value) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn routes_and_methods() {
    let app = app(Limits::default());
    let r = send(&app, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (r.status, r.json()),
        (
            StatusCode::NOT_FOUND,
            json!({"code": 5, "message": "Not Found", "details": []})
        )
    );
    // Fulcio's gateway answers a known path with the wrong method 501 (gRPC UNIMPLEMENTED).
    let r = send(&app, Request::get("/api/v2/signingCert").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (StatusCode::NOT_IMPLEMENTED, json!(12))
    );
    let r = send(&app, Request::get("/api/v2/trustBundle").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["chains"][0]["certificates"].as_array().unwrap().len(), 2);
    // sigstore-js with a base URL ending in `/` asks for `//api/...`.
    let r = send(
        &app,
        Request::get("//api/v2/configuration").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["issuers"][0]["issuerUrl"], ISSUER);
    let r = send(&app, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(r.json(), json!({"status": "SERVING", "ctLog": "disabled"}));
    let r = send(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["signer"], "ok");
}

#[tokio::test]
async fn oversized_bodies_and_headers_are_refused_before_parsing() {
    let app = app(Limits {
        max_header_bytes: 2048,
        ..Limits::default()
    });
    let declared = Request::post("/api/v2/signingCert")
        .header(header::CONTENT_LENGTH, (5u64 << 20).to_string())
        .body(Body::from("{"))
        .unwrap();
    let r = send(&app, declared).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["message"], "request body is larger than 4194304 bytes");
    assert_eq!(r.headers[header::CONNECTION], "close");
    let streamed = Request::post("/api/v2/signingCert")
        .body(Body::from(vec![b' '; (4 << 20) + 1]))
        .unwrap();
    assert_eq!(send(&app, streamed).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    let big_headers = Request::get("/healthz")
        .header("x-filler", "a".repeat(4096))
        .body(Body::empty())
        .unwrap();
    let r = send(&app, big_headers).await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(r.json()["message"], "request headers are larger than 2048 bytes");
}

#[tokio::test]
async fn cors_is_answered_as_fulcio_does() {
    let app = app(Limits::default());
    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri("/api/v2/signingCert")
        .header(header::ORIGIN, "https://app.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
        .body(Body::empty())
        .unwrap();
    let r = send(&app, preflight).await;
    assert!(r.status.is_success(), "{}", r.status);
    assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let methods = r.headers[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .unwrap()
        .to_string();
    for m in ["GET", "POST", "HEAD"] {
        assert!(methods.contains(m), "{methods}");
    }
    let allowed = r.headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("content-type") && !allowed.contains("authorization"),
        "{allowed}"
    );
}

#[tokio::test]
async fn refusals_map_to_fulcio_errors() {
    let app = app(Limits::default());
    let cases = [
        (
            json!({"credentials": ["eyJ.x.y"]}),
            "request body is not valid JSON for this endpoint",
        ),
        (
            json!({"credentials": {"oidcIdentityToken": "not-a-token"}, "publicKeyRequest": {"publicKey": {"content": "k"}, "proofOfPossession": "c2ln"}}),
            "There was an error processing the identity token",
        ),
        (
            json!({"publicKeyRequest": {"publicKey": {"content": "k"}}, "certificateSigningRequest": "Y3Ny"}),
            "send either publicKeyRequest or certificateSigningRequest, not both",
        ),
    ];
    for (body, prefix) in cases {
        let r = send(&app, post_json("/api/v2/signingCert", &body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        let v = r.json();
        assert_eq!(v["code"], 3);
        assert!(v["message"].as_str().unwrap().starts_with(prefix), "{v}");
        assert!(r.headers.contains_key("x-request-id"));
    }
    // An issuer the CA does not trust is named, the token's content is not echoed.
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let payload = b64(json!({"iss": "https://evil.example", "sub": "x", "aud": "sigstore"}));
    let token = format!("{}.{payload}.c2ln", b64(json!({"alg": "RS256"})));
    let r = send(
        &app,
        post_json(
            "/api/v2/signingCert",
            &json!({"credentials": {"oidcIdentityToken": token}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("https://evil.example") && message.contains("not configured"),
        "{message}"
    );
    assert!(!message.contains(&payload), "{message}");
    // The legacy endpoint refuses a request without any key before looking at the token.
    let r = send(&app, post_json("/api/v1/signingCert", &json!({}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("The public key supplied in the request could not be parsed"),
    );
}
