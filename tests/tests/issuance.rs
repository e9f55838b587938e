//! Issuance end to end: the `keyless` binary against a real OIDC issuer on loopback, each
//! certificate checked by parsers independent of the CA.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_tests::inspect::{self, assert_leaf_profile, openssl_verify, sigstore};
use keyless_tests::{Backend, ClientKey, Keyless, TestIssuer, p256_csr};
use serde_json::{Value, json};

struct Setup {
    email: TestIssuer,
    github: TestIssuer,
    keyless: Keyless,
}

/// Every test here runs twice: with the CA key in a file and in a SoftHSM2 token (PKCS#11), both
/// with the embedded CT log.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod file_key {
            $( #[tokio::test] async fn $name() { super::$name(keyless_tests::Backend::File).await } )*
        }
        mod pkcs11_key {
            $( #[tokio::test] async fn $name() { super::$name(keyless_tests::Backend::softhsm()).await } )*
        }
    };
}

on_both_backends!(
    v2_public_key_p256,
    v2_public_key_p384_rsa2048_ed25519,
    v2_es256_token_and_snake_case_and_bearer,
    v2_csr_like_sigstore_python,
    v1_public_key_der_and_csr,
    github_workflow_identity,
    public_endpoints,
);

async fn setup(backend: Backend) -> Setup {
    let email = TestIssuer::start("/email").await;
    let github = TestIssuer::start("/gh").await;
    let yaml = format!(
        "ct_log: {{embedded: {{listen: \"127.0.0.1:0\"}}}}\nissuers:\n  - {{url: \"{}\", type: email}}\n  - {{url: \"{}\", type: github-workflow}}\n",
        email.url, github.url
    );
    let keyless = Keyless::builder(&yaml).backend(backend).start();
    Setup { email, github, keyless }
}

fn v2_body(token: &str, key: &ClientKey, name: &str) -> Value {
    json!({"credentials": {"oidcIdentityToken": token}, "publicKeyRequest": key.public_key_request(name)})
}

/// Checks the common shape of an email certificate and returns the parsed leaf.
fn check_email_chain(chain: &[String], issuer: &str, email: &str, key: &ClientKey) -> x509_cert::Certificate {
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    assert!(chain.iter().all(|p| !p.ends_with('\n')), "signingCert PEMs are trimmed");
    let leaf = inspect::parse(&chain[0]);
    let issuing = inspect::parse(&chain[1]);
    assert_leaf_profile(&leaf, &issuing, 600);
    openssl_verify(chain);
    assert_eq!(inspect::san(&leaf).1, format!("email:{email}"));
    assert_eq!(sigstore(&leaf, 1).as_deref(), Some(issuer));
    assert_eq!(sigstore(&leaf, 8).as_deref(), Some(issuer));
    assert_eq!(sigstore(&leaf, 24), Some(format!("user-{email}")));
    use der::Encode;
    assert_eq!(
        leaf.tbs_certificate().subject_public_key_info().to_der().unwrap(),
        key.spki_der()
    );
    leaf
}

async fn v2_public_key_p256(backend: Backend) {
    let s = setup(backend).await;
    let key = ClientKey::p256();
    let token = s.email.mint(&s.email.email_claims("alice@example.com"));
    let chain = s
        .keyless
        .sign_v2(&v2_body(&token, &key, "alice@example.com"), None)
        .await
        .chain();
    check_email_chain(&chain, &s.email.url, "alice@example.com", &key);
    // Fulcio's extension order: KU, EKU, SKI, AKI, SAN, then 1.1, 1.8, 1.24, then the SCT list.
    let leaf = inspect::parse(&chain[0]);
    assert_eq!(
        inspect::extension_oids(&leaf),
        [
            "2.5.29.15",
            "2.5.29.37",
            "2.5.29.14",
            "2.5.29.35",
            "2.5.29.17",
            "1.3.6.1.4.1.57264.1.1",
            "1.3.6.1.4.1.57264.1.8",
            "1.3.6.1.4.1.57264.1.24",
            "1.3.6.1.4.1.11129.2.4.2"
        ]
    );
}

async fn v2_public_key_p384_rsa2048_ed25519(backend: Backend) {
    let s = setup(backend).await;
    for (i, key) in [ClientKey::p384(), ClientKey::rsa2048(), ClientKey::ed25519()]
        .iter()
        .enumerate()
    {
        let email = format!("key{i}@example.com");
        let token = s.email.mint(&s.email.email_claims(&email));
        let chain = s.keyless.sign_v2(&v2_body(&token, key, &email), None).await.chain();
        check_email_chain(&chain, &s.email.url, &email, key);
    }
}

async fn v2_es256_token_and_snake_case_and_bearer(backend: Backend) {
    let s = setup(backend).await;
    let key = ClientKey::p256();
    let token = keyless_tests::mint_with(&s.email.ec, &s.email.email_claims("bob@example.com"));
    // protojson: snake_case names accepted, unknown fields ignored, token from the Authorization header.
    let body = json!({
        "public_key_request": {
            "public_key": {"algorithm": "ECDSA", "content": key.spki_pem()},
            "proof_of_possession": STANDARD.encode(key.sign(b"bob@example.com")),
        },
        "someFutureField": 1,
    });
    let chain = s.keyless.sign_v2(&body, Some(&token)).await.chain();
    check_email_chain(&chain, &s.email.url, "bob@example.com", &key);
}

async fn v2_csr_like_sigstore_python(backend: Backend) {
    let s = setup(backend).await;
    let csr = p256_csr();
    let token = s.email.mint(&s.email.email_claims("carol@example.com"));
    let body = json!({"certificateSigningRequest": STANDARD.encode(csr.as_bytes())});
    let chain = s.keyless.sign_v2(&body, Some(&token)).await.chain();
    let leaf = inspect::parse(&chain[0]);
    assert_leaf_profile(&leaf, &inspect::parse(&chain[1]), 600);
    openssl_verify(&chain);
    assert_eq!(inspect::san(&leaf).1, "email:carol@example.com");
}

async fn v1_public_key_der_and_csr(backend: Backend) {
    let s = setup(backend).await;
    let key = ClientKey::p256();
    let token = s.email.mint(&s.email.email_claims("dave@example.com"));
    // sigstore-rs request_cert: base64 DER SPKI and signedEmailAddress.
    let body = json!({
        "publicKey": {"content": STANDARD.encode(key.spki_der()), "algorithm": "ecdsa"},
        "signedEmailAddress": STANDARD.encode(key.sign(b"dave@example.com")),
    });
    let r = s
        .keyless
        .post("/api/v1/signingCert", serde_json::to_vec(&body).unwrap(), Some(&token))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.content_type, "application/pem-certificate-chain");
    assert!(!r.body.ends_with('\n'));
    let chain: Vec<String> = r
        .body
        .split_inclusive("-----END CERTIFICATE-----")
        .map(|s| s.trim().to_string())
        .collect();
    assert_eq!(chain.len(), 3);
    openssl_verify(&chain);
    assert_eq!(inspect::san(&inspect::parse(&chain[0])).1, "email:dave@example.com");

    let body = json!({"certificateSigningRequest": STANDARD.encode(p256_csr())});
    let r = s
        .keyless
        .post("/api/v1/signingCert", serde_json::to_vec(&body).unwrap(), Some(&token))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

    // Neither key nor CSR: refused before the token is looked at (no token sent at all).
    let r = s.keyless.post("/api/v1/signingCert", "{}", None).await;
    assert_eq!(r.status, 400);
    assert!(
        r.message()
            .starts_with("The public key supplied in the request could not be parsed"),
        "{}",
        r.body
    );
}

async fn github_workflow_identity(backend: Backend) {
    let s = setup(backend).await;
    let key = ClientKey::p256();
    let claims = s.github.github_claims();
    let sub = claims["sub"].as_str().unwrap().to_string();
    let token = s.github.mint(&claims);
    let chain = s.keyless.sign_v2(&v2_body(&token, &key, &sub), None).await.chain();
    openssl_verify(&chain);
    let leaf = inspect::parse(&chain[0]);
    assert_leaf_profile(&leaf, &inspect::parse(&chain[1]), 600);
    let wf = "https://github.com/octo-org/octo-repo/.github/workflows/release.yml@refs/heads/main";
    assert_eq!(inspect::san(&leaf).1, format!("uri:{wf}"));
    let expect: &[(u32, &str)] = &[
        (1, &s.github.url),
        (2, "push"),
        (3, "2222222222222222222222222222222222222222"),
        (4, "Release"),
        (5, "octo-org/octo-repo"),
        (6, "refs/heads/main"),
        (8, &s.github.url),
        (9, wf),
        (10, "1111111111111111111111111111111111111111"),
        (11, "github-hosted"),
        (12, "https://github.com/octo-org/octo-repo"),
        (13, "2222222222222222222222222222222222222222"),
        (14, "refs/heads/main"),
        (15, "123456"),
        (16, "https://github.com/octo-org"),
        (17, "654321"),
        (18, wf),
        (19, "3333333333333333333333333333333333333333"),
        (20, "push"),
        (21, "https://github.com/octo-org/octo-repo/actions/runs/42/attempts/1"),
        (22, "public"),
        (24, &sub),
    ];
    for (arc, value) in expect {
        assert_eq!(sigstore(&leaf, *arc).as_deref(), Some(*value), "extension 1.{arc}");
    }
    assert_eq!(sigstore(&leaf, 23), None, "no deployment environment in the claims");

    // A missing claim is named; a mistyped one too.
    let mut claims = s.github.github_claims();
    claims.as_object_mut().unwrap().remove("run_attempt");
    let r = s
        .keyless
        .sign_v2(&v2_body(&s.github.mint(&claims), &key, &sub), None)
        .await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("\"run_attempt\" is missing"), "{}", r.body);
    let mut claims = s.github.github_claims();
    claims["repository_id"] = json!(123456);
    let r = s
        .keyless
        .sign_v2(&v2_body(&s.github.mint(&claims), &key, &sub), None)
        .await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("\"repository_id\" must be a string"), "{}", r.body);
}

async fn public_endpoints(backend: Backend) {
    let s = setup(backend).await;
    let tb = s.keyless.get("/api/v2/trustBundle").await;
    assert_eq!(tb.status, 200);
    let certs = tb.json()["chains"][0]["certificates"].as_array().unwrap().clone();
    assert_eq!(certs.len(), 2);
    assert!(
        certs
            .iter()
            .all(|c| c.as_str().unwrap().ends_with("-----END CERTIFICATE-----\n"))
    );

    let root = s.keyless.get("/api/v1/rootCert").await;
    assert_eq!(root.status, 200);
    assert_eq!(root.content_type, "application/pem-certificate-chain");
    assert_eq!(root.body.matches("BEGIN CERTIFICATE").count(), 2);

    let conf = s.keyless.get("/api/v2/configuration").await.json();
    let issuers = conf["issuers"].as_array().unwrap();
    assert_eq!(issuers.len(), 2);
    let email = issuers.iter().find(|i| i["issuerUrl"] == s.email.url.as_str()).unwrap();
    assert_eq!(email["issuerType"], "email");
    assert_eq!(email["challengeClaim"], "email");
    assert_eq!(email["audience"], "sigstore");
    let gh = issuers
        .iter()
        .find(|i| i["issuerUrl"] == s.github.url.as_str())
        .unwrap();
    assert_eq!(gh["challengeClaim"], "sub");

    assert!(s.keyless.healthy().await);
    let nf = s.keyless.get("/nope").await;
    assert_eq!((nf.status, nf.json()["code"].as_i64()), (404, Some(5)));
    let wrong = s.keyless.get("/api/v2/signingCert").await;
    assert_eq!((wrong.status, wrong.message().as_str()), (501, "Method Not Allowed"));
}
