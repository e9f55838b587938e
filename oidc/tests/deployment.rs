//! How an operator's deployment reaches its issuers, against real issuers on 127.0.0.1: the
//! cluster's own issuer over HTTPS with the pod's service-account token (sent to that origin
//! only, never across a redirect, re-read when the kubelet rotates it), and the signing
//! algorithms a discovery document advertises.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Idp, Key, email};
use keyless_config::{InCluster, IssuerConfig, IssuerKind};
use keyless_oidc::{OidcError, OidcVerifier, VerifierOptions};

fn opts() -> VerifierOptions {
    VerifierOptions {
        fetch_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(1),
        unknown_kid_interval: Duration::ZERO,
        ..VerifierOptions::default()
    }
}

fn cause(r: Result<keyless_ca::token::VerifiedToken, OidcError>) -> String {
    match r {
        Err(OidcError::IssuerUnavailable { cause, .. }) => cause,
        other => panic!("expected IssuerUnavailable, got {other:?}"),
    }
}

/// A kubernetes issuer reached in-cluster with the token and CA files in `dir`.
fn in_cluster(url: &str, dir: &Path) -> IssuerConfig {
    let mut c = IssuerConfig::new(url, IssuerKind::Kubernetes);
    c.options.in_cluster = Some(InCluster {
        token_file: dir.join("token"),
        ca_files: vec![dir.join("missing-ca.crt"), dir.join("ca.crt")],
    });
    c
}

#[tokio::test]
async fn the_cluster_issuer_gets_the_rotating_token_and_trusts_the_cluster_ca() {
    let (k1, k2) = (Key::new("k1"), Key::new("k2"));
    let (idp, ca_pem) = Idp::start_tls(&k1).await;
    idp.require_bearer("sa-token-1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "sa-token-1\n").unwrap();
    std::fs::write(dir.path().join("ca.crt"), &ca_pem).unwrap();
    let url = idp.issuer("/cluster");
    let v = OidcVerifier::with_options(&[in_cluster(&url, dir.path())], opts()).unwrap();
    v.verify(&k1.token(&url)).await.unwrap();
    let discovery = "/cluster/.well-known/openid-configuration";
    assert_eq!(idp.authorizations(discovery), [Some("Bearer sa-token-1".to_string())]);
    assert_eq!(
        idp.authorizations("/cluster/jwks"),
        [Some("Bearer sa-token-1".to_string())]
    );

    // The kubelet rotates the token; the next fetch (a new kid) reads the new one.
    std::fs::write(dir.path().join("token"), "sa-token-2").unwrap();
    idp.require_bearer("sa-token-2");
    idp.publish(&[&k1, &k2]);
    v.verify(&k2.token(&url)).await.unwrap();
    assert_eq!(
        idp.authorizations(discovery).last().unwrap().as_deref(),
        Some("Bearer sa-token-2")
    );

    // Without the cluster CA the issuer's certificate is not trusted; without the token file
    // nothing is sent. Neither error shows a token.
    std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
    let v = OidcVerifier::with_options(&[in_cluster(&url, dir.path())], opts()).unwrap();
    let e = cause(v.verify(&k1.token(&url)).await);
    assert!(
        e.contains("no cluster CA bundle") && e.contains("missing-ca.crt"),
        "{e}"
    );
    std::fs::write(dir.path().join("ca.crt"), &ca_pem).unwrap();
    std::fs::remove_file(dir.path().join("token")).unwrap();
    let before = idp.hits(discovery);
    let v = OidcVerifier::with_options(&[in_cluster(&url, dir.path())], opts()).unwrap();
    let e = cause(v.verify(&k1.token(&url)).await);
    assert!(e.contains("cannot read the service-account token file"), "{e}");
    assert_eq!(idp.hits(discovery), before, "nothing is fetched without the token");
    std::fs::write(dir.path().join("token"), "\n").unwrap();
    let v = OidcVerifier::with_options(&[in_cluster(&url, dir.path())], opts()).unwrap();
    let e = cause(v.verify(&k1.token(&url)).await);
    assert!(e.contains("holds no token"), "{e}");
    assert!(!e.to_string().contains("sa-token"), "{e}");
}

#[tokio::test]
async fn the_token_never_leaves_the_issuers_origin() {
    let key = Key::new("k1");
    let (idp, ca_pem) = Idp::start_tls(&key).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "sa-secret").unwrap();
    std::fs::write(dir.path().join("ca.crt"), &ca_pem).unwrap();
    let port = idp.base.rsplit(':').next().unwrap().to_string();

    // Keys published on another origin (same server, another host name): fetched without the
    // token, and a refusal says why.
    idp.require_bearer("sa-secret");
    idp.set_jwks_uri(&format!("https://localhost:{port}/elsewhere/jwks"));
    let url = idp.issuer("/c");
    let v = OidcVerifier::with_options(&[in_cluster(&url, dir.path())], opts()).unwrap();
    let e = cause(v.verify(&key.token(&url)).await);
    assert!(e.contains("HTTP 401") && e.contains("issuer's own origin only"), "{e}");
    assert_eq!(idp.authorizations("/elsewhere/jwks"), [None]);
    assert_eq!(
        idp.authorizations("/c/.well-known/openid-configuration"),
        [Some("Bearer sa-secret".to_string())]
    );

    // A redirect, even on the same origin, is not followed by a client carrying the token.
    let idp2_key = Key::new("k2");
    let (idp2, ca2) = Idp::start_tls(&idp2_key).await;
    std::fs::write(dir.path().join("ca.crt"), &ca2).unwrap();
    idp2.redirect("/r/.well-known/openid-configuration", &format!("{}/target", idp2.base));
    let url2 = idp2.issuer("/r");
    let v = OidcVerifier::with_options(&[in_cluster(&url2, dir.path())], opts()).unwrap();
    let e = cause(v.verify(&idp2_key.token(&url2)).await);
    assert!(e.contains("redirect refused"), "{e}");
    assert_eq!(idp2.hits("/target"), 0);
    // An ordinary issuer never sends a token at all.
    let mut plain = email(&idp2.issuer("/plain"));
    plain.options.ca_cert_pem = Some(ca2);
    let v = OidcVerifier::with_options(&[plain], opts()).unwrap();
    v.verify(&idp2_key.token(&idp2.issuer("/plain"))).await.unwrap();
    assert_eq!(idp2.authorizations("/plain/.well-known/openid-configuration"), [None]);
    assert_eq!(idp2.authorizations("/plain/jwks"), [None]);
    assert_eq!(
        idp2.all_authorizations(),
        ["Bearer sa-secret"],
        "only the in-cluster discovery"
    );
}

/// go-oidc's rule, which Fulcio inherits: a token is accepted only in an algorithm the issuer's
/// discovery document advertises, and RS256 alone when it advertises none.
#[tokio::test]
async fn tokens_must_use_an_algorithm_the_issuer_advertises() {
    let key = Key::new("k1"); // ES256
    let idp = Idp::start(&key).await;
    let cases: [(Option<&[&str]>, bool); 4] = [
        (Some(&["RS256", "ES256"]), true),
        (Some(&["RS256"]), false),
        (None, false),
        (Some(&["none", "HS256"]), false),
    ];
    for (i, (advertised, ok)) in cases.into_iter().enumerate() {
        idp.advertise(advertised);
        let url = idp.issuer(&format!("/a{i}"));
        let v = OidcVerifier::with_options(&[email(&url)], opts()).unwrap();
        match v.verify(&key.token(&url)).await {
            Ok(_) => assert!(ok, "{advertised:?} accepted ES256"),
            Err(OidcError::Token(e)) => {
                assert!(!ok, "{advertised:?}: {e}");
                assert!(e.to_string().contains("is not one issuer"), "{e}");
            }
            Err(e) => panic!("{advertised:?}: {e}"),
        }
    }
}
