//! The real Sigstore clients against `keyless serve` with its embedded CT log: sigstore-python
//! (library and CLI), sigstore-js (`@sigstore/sign` + `@sigstore/verify`, and `@sigstore/cli`), with
//! tokens from third-party OIDC issuers (npm `oauth2-mock-server`, PyPI `oidc-provider-mock`).
//! Each client checks what it checks in real use (chain, the one embedded SCT, KU/EKU, identity)
//! against the trust material `keyless trusted-root` prints, and these tests compare the identity
//! the client read back with the token's.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_tests::clients::{
    ClientRun, MockServerIssuer, OidcProviderMock, node, sigstore_js_cli, sigstore_py, sigstore_python_cli,
};
use keyless_tests::{Keyless, email_claims, github_claims, inspect, openssl};
use serde_json::{Value, json};

const GITHUB_SAN: &str = "https://github.com/octo-org/octo-repo/.github/workflows/release.yml@refs/heads/main";

/// A CA with an email issuer and a GitHub-workflow issuer, both oauth2-mock-server instances,
/// and its trust material written to files the clients read.
struct Setup {
    email: MockServerIssuer,
    github: MockServerIssuer,
    ks: Keyless,
    trusted_root: PathBuf,
    client_config: PathBuf,
    /// base64 SHA-256 of the CT log key, as the trusted root names it.
    log_id: String,
}

fn setup() -> Setup {
    let email = MockServerIssuer::start();
    let github = MockServerIssuer::start();
    // `allow_sub_challenge`: `@sigstore/cli` 0.8 signs `sub` for issuers it does not know.
    let ks = Keyless::builder(&format!(
        "ct_log: {{embedded: {{listen: \"127.0.0.1:0\", mmd: 300ms}}}}\nissuers:\n  - {{url: \"{}\", type: email, allow_sub_challenge: true}}\n  - {{url: \"{}\", type: github-workflow}}\n",
        email.url, github.url
    )).start();
    // Nothing listens on port 9: the Rekor step is out of this project's scope.
    let (trusted_root, client_config, log_id) = write_trust(&ks, "http://127.0.0.1:9");
    Setup {
        email,
        github,
        ks,
        trusted_root,
        client_config,
        log_id,
    }
}

/// Writes `trusted-root.json` and `trust-config.json` into the server's directory.
fn write_trust(ks: &Keyless, rekor_url: &str) -> (PathBuf, PathBuf, String) {
    let root = ks.trusted_root();
    let log_id = root["ctlogs"][0]["logId"]["keyId"].as_str().unwrap().to_string();
    let trusted_root = ks.dir.path().join("trusted-root.json");
    std::fs::write(&trusted_root, root.to_string()).unwrap();
    let client_config = ks.dir.path().join("trust-config.json");
    std::fs::write(&client_config, ks.client_trust_config(rekor_url).to_string()).unwrap();
    (trusted_root, client_config, log_id)
}

fn python_sign(client_config: &PathBuf, token: &str, san: &str, issuer: &str) -> ClientRun {
    ClientRun::run(
        sigstore_py()
            .arg("sign")
            .arg("--trust-config")
            .arg(client_config)
            .args(["--expect-san", san, "--expect-issuer", issuer])
            .env("ID_TOKEN", token),
    )
}

fn js_sign(ca_url: &str, trusted_root: &PathBuf, token: &str) -> ClientRun {
    ClientRun::run(
        node("sigstore-js.mjs")
            .args(["sign", "--ca", ca_url, "--trusted-root"])
            .arg(trusted_root)
            .env("ID_TOKEN", token),
    )
}

/// What sigstore-python read back equals the token's identity.
fn assert_python_identity(got: &Value, san: &str, issuer: &str, log_id: &str) {
    assert_eq!(got["subjectAlternativeNames"], json!([san]), "{got}");
    assert_eq!(got["sanCritical"], true, "{got}");
    assert_eq!(got["issuerV1"], issuer, "{got}");
    assert_eq!(got["issuerV2"], issuer, "{got}");
    assert_eq!(got["sctLogId"], log_id, "{got}");
    // Its chain check ends at the first certificate of the trusted root's chain (an anchor).
    assert_eq!(got["chainLength"], 1, "{got}");
}

/// What sigstore-js read back equals the token's identity.
fn assert_js_identity(got: &Value, san: &str, issuer: &str, log_id: &str) {
    assert_eq!(got["subjectAltName"], san, "{got}");
    assert_eq!(got["issuer"], issuer, "{got}");
    assert_eq!(got["issuerV1"], issuer, "{got}");
    assert_eq!(got["scts"], 1, "{got}");
    assert_eq!(got["sctLogIds"], json!([log_id]), "{got}");
    assert_eq!(got["sanCritical"], true, "{got}");
    assert_eq!(got["hasAuthorityKeyId"], true, "{got}");
}

#[tokio::test]
async fn sigstore_python_email_and_github_identities() {
    let s = setup();
    let token = s.email.mint(&email_claims(&s.email.url, "alice@example.com")).await;
    let got = python_sign(&s.client_config, &token, "alice@example.com", &s.email.url).json();
    assert_python_identity(&got, "alice@example.com", &s.email.url, &s.log_id);
    // sigstore-python names non-Google identities by `sub`.
    assert_eq!(got["identityTokenIdentity"], "user-alice@example.com");

    let token = s.github.mint(&github_claims(&s.github.url)).await;
    let got = python_sign(&s.client_config, &token, GITHUB_SAN, &s.github.url).json();
    assert_python_identity(&got, GITHUB_SAN, &s.github.url, &s.log_id);

    // Its Identity policy is a real check: a different expected SAN is refused.
    let token = s.email.mint(&email_claims(&s.email.url, "alice@example.com")).await;
    let err = python_sign(&s.client_config, &token, "mallory@example.com", &s.email.url).failure();
    assert!(err.contains("mallory@example.com"), "{err}");
}

#[tokio::test]
async fn sigstore_js_email_and_github_identities() {
    let s = setup();
    let token = s.email.mint(&email_claims(&s.email.url, "alice@example.com")).await;
    let got = js_sign(&s.ks.url, &s.trusted_root, &token).json();
    assert_js_identity(&got, "alice@example.com", &s.email.url, &s.log_id);

    // A base URL with a trailing slash makes sigstore-js request `//api/v2/signingCert`.
    let token = s.github.mint(&github_claims(&s.github.url)).await;
    let got = js_sign(&format!("{}/", s.ks.url), &s.trusted_root, &token).json();
    assert_js_identity(&got, GITHUB_SAN, &s.github.url, &s.log_id);
}

/// `@sigstore/cli attest` (which bundles sigstore-js 3.1.0 and signs `sub` as its challenge for
/// issuers it does not know) produces a bundle that `@sigstore/verify` accepts.
#[tokio::test]
async fn sigstore_js_cli_attest_writes_a_verifiable_bundle() {
    let s = setup();
    let dir = s.ks.dir.path();
    std::fs::write(dir.join("statement.json"), r#"{"artifact":"keyless"}"#).unwrap();
    for (token, san, issuer) in [
        (
            s.email.mint(&email_claims(&s.email.url, "bob@example.com")).await,
            "bob@example.com",
            &s.email.url,
        ),
        (
            s.github.mint(&github_claims(&s.github.url)).await,
            GITHUB_SAN,
            &s.github.url,
        ),
    ] {
        let bundle = dir.join("bundle.json");
        let _ = std::fs::remove_file(&bundle);
        let run = ClientRun::run(
            std::process::Command::new(sigstore_js_cli())
                .current_dir(dir)
                .args(["attest", "statement.json", "--fulcio-url", &s.ks.url])
                .args(["--no-tlog-upload", "--output-file", "bundle.json"])
                .env("CI", "true")
                .env("SIGSTORE_ID_TOKEN", &token),
        );
        assert!(run.ok, "sigstore attest failed:\n{}\n{}", run.stderr, run.stdout);
        let got = ClientRun::run(
            node("sigstore-js.mjs")
                .args(["verify", "--bundle"])
                .arg(&bundle)
                .arg("--artifact")
                .arg(dir.join("statement.json"))
                .arg("--trusted-root")
                .arg(&s.trusted_root),
        )
        .json();
        assert_eq!(got["mediaType"], "application/vnd.dev.sigstore.bundle.v0.3+json");
        assert_js_identity(&got, san, issuer, &s.log_id);
    }
}

/// `sigstore sign` (sigstore-python's CLI) with `keyless trusted-root --client-config`: it gets
/// the certificate, checks its SCT, signs, and then submits to Rekor, which this project does not
/// run. A stand-in Rekor records the entry and answers 503, so the test sees how far it got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstore_python_cli_signs_up_to_the_rekor_step() {
    let s = setup();
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let rekor = {
        let seen = seen.clone();
        Router::new().route(
            "/api/v1/log/entries",
            post(move |axum::Json(body): axum::Json<Value>| async move {
                seen.lock().unwrap().push(body);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"code": 503, "message": "no Rekor here"})),
                )
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rekor_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, rekor).await.unwrap() });
    let (_, client_config, _) = write_trust(&s.ks, &rekor_url);

    let dir = s.ks.dir.path().to_path_buf();
    std::fs::write(dir.join("artifact.txt"), "signed by the sigstore CLI\n").unwrap();
    let token = s.email.mint(&email_claims(&s.email.url, "carol@example.com")).await;
    let run = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            ClientRun::run(
                std::process::Command::new(sigstore_python_cli())
                    .current_dir(&dir)
                    .arg("--trust-config")
                    .arg(&client_config)
                    .args(["sign", "--identity-token", &token, "--overwrite", "artifact.txt"]),
            )
        }
    })
    .await
    .unwrap();

    // It got the certificate and passed its own sign-time SCT check ...
    let out = run.failure();
    assert!(run.stdout.contains("Using ephemeral certificate"), "{out}");
    let printed = &run.stdout[run
        .stdout
        .find("-----BEGIN CERTIFICATE-----")
        .expect("certificate printed")..];
    let printed = &printed[..printed.find("-----END CERTIFICATE-----").unwrap() + 25];
    let leaf = inspect::parse(printed);
    assert_eq!(inspect::san(&leaf).1, "email:carol@example.com");
    // ... signed the artifact and stopped at Rekor, with nothing else wrong.
    assert!(out.contains("RekorClientError") || out.contains("503"), "{out}");
    let entries = seen.lock().unwrap().clone();
    assert_eq!(entries.len(), 1, "one Rekor submission: {entries:?}");
    let entry = &entries[0];
    assert_eq!(entry["kind"], "hashedrekord");
    let cert_pem = String::from_utf8(
        STANDARD
            .decode(entry["spec"]["signature"]["publicKey"]["content"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        inspect::parse(&cert_pem),
        leaf,
        "Rekor got the certificate the CA issued"
    );
    // The artifact signature verifies with the certified key.
    std::fs::write(dir.join("leaf.pem"), &cert_pem).unwrap();
    openssl(
        &["x509", "-in", "leaf.pem", "-pubkey", "-noout", "-out", "leaf-pub.pem"],
        &dir,
    );
    let sig = STANDARD
        .decode(entry["spec"]["signature"]["content"].as_str().unwrap())
        .unwrap();
    std::fs::write(dir.join("artifact.sig"), sig).unwrap();
    openssl(
        &[
            "dgst",
            "-sha256",
            "-verify",
            "leaf-pub.pem",
            "-signature",
            "artifact.sig",
            "artifact.txt",
        ],
        &dir,
    );
}

/// PyPI `oidc-provider-mock` tokens carry no `kid` and an array `aud`; both clients get
/// certificates for them.
#[tokio::test]
async fn oidc_provider_mock_tokens_without_kid_and_with_array_aud() {
    let idp = OidcProviderMock::start().await;
    let ks = Keyless::builder(&format!(
        "ct_log: {{embedded: {{listen: \"127.0.0.1:0\"}}}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .start();
    let (trusted_root, client_config, log_id) = write_trust(&ks, "http://127.0.0.1:9");

    let token = idp.token("dana", "dana@example.com");
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(
        header.get("kid").is_none(),
        "the provider's tokens have no kid: {header}"
    );

    let got = python_sign(&client_config, &token, "dana@example.com", &idp.url).json();
    assert_python_identity(&got, "dana@example.com", &idp.url, &log_id);
    let got = js_sign(&ks.url, &trusted_root, &token).json();
    assert_js_identity(&got, "dana@example.com", &idp.url, &log_id);
}

/// The clients' own checks bite: a certificate from one Keyless CA does not verify against
/// another's trust material, and a refused request reaches the user with the CA's message.
#[tokio::test]
async fn clients_refuse_foreign_trust_and_show_the_cas_errors() {
    let s = setup();
    let other = Keyless::builder(&format!(
        "ct_log: {{embedded: {{listen: \"127.0.0.1:0\"}}}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        s.email.url
    ))
    .start();
    let (other_root, other_config, _) = write_trust(&other, "http://127.0.0.1:9");
    let token = s.email.mint(&email_claims(&s.email.url, "erin@example.com")).await;

    // sigstore-js: chain check against the other CA.
    let err = js_sign(&s.ks.url, &other_root, &token).failure();
    assert!(err.contains("Failed to verify certificate chain"), "{err}");

    // sigstore-python: its sign-time SCT check fails with the other CA's CT key (the trust
    // config still sends the request to the first CA).
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&other_config).unwrap()).unwrap();
    config["signingConfig"]["caUrls"][0]["url"] = json!(s.ks.url);
    std::fs::write(&other_config, config.to_string()).unwrap();
    let err = python_sign(&other_config, &token, "erin@example.com", &s.email.url).failure();
    assert!(err.contains("SCT"), "{err}");

    // A token for another audience: sigstore-js shows the status and the CA's `message`.
    let mut claims = email_claims(&s.email.url, "erin@example.com");
    claims["aud"] = json!("not-sigstore");
    let wrong_aud = s.email.mint(&claims).await;
    let err = js_sign(&s.ks.url, &s.trusted_root, &wrong_aud).failure();
    assert!(err.contains("(401)") || err.contains("(400)"), "{err}");
    assert!(err.contains("aud"), "the CA's message names the claim: {err}");

    // Nothing was logged for the refused request: the log holds exactly the two certificates
    // issued above (one for each client's attempt that reached issuance).
    // (An STH covers every entry older than the 300 ms merge delay.)
    let mut sth = json!({});
    for _ in 0..50 {
        sth = s.ks.ct_get("/ct/v1/get-sth").await;
        if sth["tree_size"].as_u64() >= Some(2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let sth = s.ks.ct_get("/ct/v1/get-sth").await;
    assert_eq!(sth["tree_size"], 2, "{sth}");
}

fn assert_json(resp: &reqwest::Response) {
    let ct = resp.headers()["content-type"].to_str().unwrap();
    assert!(ct.starts_with("application/json"), "{ct}");
}

/// The response details the clients above depend on, checked directly: 200 JSON for v2 even when
/// the client asks for a PEM chain (sigstore-python does), a chain through the root that the
/// trusted root also lists in full, and JSON error bodies with `message` (sigstore-js shows it).
#[tokio::test]
async fn response_shape_the_clients_depend_on() {
    let s = setup();
    let token = s.email.mint(&email_claims(&s.email.url, "frank@example.com")).await;
    let http = reqwest::Client::new();
    let send = |body: Value| {
        http.post(format!("{}/api/v2/signingCert", s.ks.url))
            .header("Authorization", format!("Bearer {token}"))
            .header("Accept", "application/pem-certificate-chain")
            .json(&body)
            .send()
    };
    let csr = keyless_tests::p256_csr();
    let resp = send(json!({"certificateSigningRequest": STANDARD.encode(csr)}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_json(&resp);
    let body: Value = resp.json().await.unwrap();
    let chain: Vec<&str> = body["signedCertificateEmbeddedSct"]["chain"]["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let root: Value = serde_json::from_str(&std::fs::read_to_string(&s.trusted_root).unwrap()).unwrap();
    let listed: Vec<Vec<u8>> = root["certificateAuthorities"][0]["certChain"]["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| STANDARD.decode(c["rawBytes"].as_str().unwrap()).unwrap())
        .collect();
    let returned: Vec<Vec<u8>> = chain[1..]
        .iter()
        .map(|pem| der::Encode::to_der(&inspect::parse(pem)).unwrap())
        .collect();
    assert_eq!(
        returned, listed,
        "the response's CA chain is the trusted root's, through the root"
    );
    let last = inspect::parse(chain.last().unwrap());
    assert_eq!(
        last.tbs_certificate().issuer(),
        last.tbs_certificate().subject(),
        "the chain ends at the root"
    );

    let resp = send(json!({"certificateSigningRequest": "bm90IGEgQ1NS"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_json(&resp);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("certificate signing request"),
        "{body}"
    );
}
