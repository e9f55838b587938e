//! The gRPC front door (`grpc_listen`) against an independent client: the official gRPC Python
//! stack (grpcio, with stubs generated at test time from `grpc/proto` by grpcio-tools' protoc, and
//! gRPC's own health stubs), with its keys, proofs and CSRs made by `cryptography`. Certificates
//! are checked with `openssl` and RustCrypto's parser; trust bundle and configuration against the
//! REST API's; refusals against Fulcio's codes and the REST API's messages and the record.

use std::process::Command;
use std::time::Duration;

use keyless_tests::clients::{ClientRun, clients_dir, grpc_proto_dir, grpc_python};
use keyless_tests::inspect::{self, assert_leaf_profile, openssl_verify, sigstore};
use keyless_tests::{Keyless, TestIssuer, TestTls};
use serde_json::{Value, json};

/// An email issuer and a CA with its gRPC listener and a JSON-lines export of its record.
async fn setup(extra: &str) -> (TestIssuer, Keyless) {
    let email = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "grpc_listen: 127.0.0.1:0\nct_log: {{embedded: {{listen: \"127.0.0.1:0\", mmd: 300ms}}}}\naudit: {{export: records.jsonl}}\nissuers:\n  - {{url: \"{}\", type: email}}\n{extra}",
        email.url
    ))
    .start();
    (email, ks)
}

/// Runs the gRPC client against `ks` with `args` (and `ID_TOKEN` when given); its JSON answer.
/// The client runs on a blocking thread, so the test's issuer keeps serving meanwhile.
async fn grpc(ks: &Keyless, root_ca: Option<&std::path::Path>, token: Option<&str>, args: &[&str]) -> Value {
    let addr = ks.grpc_addr.as_deref().expect("keyless printed its gRPC address");
    let mut cmd = Command::new(grpc_python());
    cmd.arg(clients_dir().join("python/grpc_client.py"))
        .args(["--target", addr, "--proto-dir"])
        .arg(grpc_proto_dir());
    if let Some(ca) = root_ca {
        cmd.arg("--root-ca").arg(ca);
    }
    cmd.args(args).env("ID_TOKEN", token.unwrap_or_default());
    let run = tokio::task::spawn_blocking(move || ClientRun::run(&mut cmd))
        .await
        .unwrap();
    assert!(run.ok, "the gRPC client failed:\n{}\n{}", run.stderr, run.stdout);
    let line = run.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

/// The chain's common checks: leaf, issuing CA, root; verifies with openssl; the leaf's key is
/// the one the client made, its SAN and issuer the token's.
fn check_chain(answer: &Value, issuer: &str, email: &str) {
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["oneof"], "signed_certificate_embedded_sct");
    let chain: Vec<String> = serde_json::from_value(answer["chain"].clone()).unwrap();
    assert_eq!(chain.len(), 3, "leaf, issuing CA, root");
    assert!(
        chain.iter().all(|p| !p.ends_with('\n')),
        "PEMs are trimmed, as Fulcio sends them"
    );
    let leaf = inspect::parse(&chain[0]);
    assert_leaf_profile(&leaf, &inspect::parse(&chain[1]), 600);
    openssl_verify(&chain);
    assert_eq!(inspect::san(&leaf).1, format!("email:{email}"));
    assert_eq!(sigstore(&leaf, 1).as_deref(), Some(issuer));
    use der::{DecodePem as _, Encode as _};
    let client_key =
        x509_cert::spki::SubjectPublicKeyInfoOwned::from_pem(answer["public_key_pem"].as_str().unwrap()).unwrap();
    assert_eq!(
        leaf.tbs_certificate().subject_public_key_info().to_der().unwrap(),
        client_key.to_der().unwrap(),
        "the leaf certifies the client's key"
    );
}

#[tokio::test]
async fn issues_for_a_csr_and_a_signed_challenge() {
    let (email, ks) = setup("").await;
    let token = email.mint(&email.email_claims("alice@example.com"));
    // A CSR with the token in `authorization` metadata; a signed challenge with the token in the
    // message; Fulcio's own `oidcidentitytoken` metadata.
    for (mode, token_in) in [
        ("csr", "authorization"),
        ("challenge", "body"),
        ("challenge", "oidcidentitytoken"),
    ] {
        let answer = grpc(
            &ks,
            None,
            Some(&token),
            &[
                "sign",
                "--mode",
                mode,
                "--challenge",
                "alice@example.com",
                "--token-in",
                token_in,
            ],
        )
        .await;
        check_chain(&answer, &email.url, "alice@example.com");
    }
    // The same service as REST: the record holds all three issuances.
    let issued = wait_for_records(&ks, |r| r["decision"] == "issued", 3).await;
    assert!(issued.iter().all(|r| r["subject"] == "alice@example.com"));
}

#[tokio::test]
async fn trust_bundle_and_configuration_equal_rest() {
    let (_email, ks) = setup("").await;
    let bundle = grpc(&ks, None, None, &["trust-bundle"]).await;
    assert_eq!(bundle["json"], ks.get("/api/v2/trustBundle").await.json());
    let config = grpc(&ks, None, None, &["configuration"]).await;
    assert_eq!(config["json"], ks.get("/api/v2/configuration").await.json());
    assert_eq!(config["json"]["issuers"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn refusals_carry_fulcios_code_and_the_rest_message_and_are_recorded() {
    let (email, ks) = setup("").await;
    let mut claims = email.email_claims("mallory@example.com");
    claims["aud"] = json!("someone-else");
    let wrong_aud = email.mint(&claims);
    let answer = grpc(
        &ks,
        None,
        Some(&wrong_aud),
        &[
            "sign",
            "--mode",
            "challenge",
            "--challenge",
            "mallory@example.com",
            "--request-id",
            "grpc-wrong-aud",
        ],
    )
    .await;
    let rest = ks
        .sign_v2(
            &json!({"credentials": {"oidcIdentityToken": wrong_aud}, "publicKeyRequest": keyless_tests::ClientKey::p256().public_key_request("mallory@example.com")}),
            None,
        )
        .await;
    assert_eq!((rest.status, rest.json()["code"].clone()), (400, json!(3)));
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["code"], "INVALID_ARGUMENT", "{answer}");
    assert_eq!(answer["message"], rest.message(), "the same message as REST");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("There was an error processing the identity token"),
        "{answer}"
    );
    // A message that is not a CreateSigningCertificateRequest at all.
    let garbage = grpc(&ks, None, None, &["sign-raw", "ffffff", "--request-id", "grpc-garbage"]).await;
    assert_eq!(garbage["code"], "INVALID_ARGUMENT", "{garbage}");
    // Both are in the record, under the ids the client sent, and the token is not.
    let refused = wait_for_records(&ks, |r| r["decision"] == "rejected", 3).await;
    let by_id = |id: &str| refused.iter().find(|r| r["request_id"] == id).cloned();
    let aud = by_id("grpc-wrong-aud").expect("the wrong-audience refusal is recorded");
    assert_eq!(aud["rejection"]["class"], "token");
    assert_eq!(aud["issuer"], email.url);
    let garbage = by_id("grpc-garbage").expect("the undecodable request is recorded");
    assert_eq!(garbage["rejection"]["class"], "request");
    let export = std::fs::read_to_string(ks.dir.path().join("records.jsonl")).unwrap();
    assert!(
        !export.contains(wrong_aud.split('.').nth(2).unwrap()),
        "no token in the record"
    );
}

#[tokio::test]
async fn health_is_serving() {
    let (_email, ks) = setup("").await;
    for service in ["", "dev.sigstore.fulcio.v2.CA"] {
        let answer = grpc(&ks, None, None, &["health", "--service", service]).await;
        assert_eq!(answer["status"], "SERVING", "{answer}");
    }
}

#[tokio::test]
async fn calls_are_counted_under_fulcios_grpc_metric_names() {
    let (email, ks) = setup("metrics_listen: 127.0.0.1:0\n").await;
    grpc(&ks, None, None, &["trust-bundle"]).await;
    let mut claims = email.email_claims("mallory@example.com");
    claims["aud"] = json!("someone-else");
    let refused = grpc(
        &ks,
        None,
        Some(&email.mint(&claims)),
        &["sign", "--mode", "csr", "--token-in", "authorization"],
    )
    .await;
    assert_eq!(refused["code"], "INVALID_ARGUMENT", "{refused}");
    let metrics = ks.metrics().await;
    let ca = "grpc_type=\"unary\",grpc_service=\"dev.sigstore.fulcio.v2.CA\",grpc_method=\"{m}\"";
    let labels = |m: &str| ca.replace("{m}", m);
    for line in [
        format!("grpc_server_started_total{{{}}} 1", labels("GetTrustBundle")),
        format!("grpc_server_msg_received_total{{{}}} 1", labels("GetTrustBundle")),
        format!("grpc_server_msg_sent_total{{{}}} 1", labels("GetTrustBundle")),
        format!(
            "grpc_server_handled_total{{{},grpc_code=\"OK\"}} 1",
            labels("GetTrustBundle")
        ),
        format!(
            "grpc_server_handled_total{{{},grpc_code=\"InvalidArgument\"}} 1",
            labels("CreateSigningCertificate")
        ),
        format!(
            "grpc_server_handling_seconds_count{{{}}} 1",
            labels("CreateSigningCertificate")
        ),
        "keyless_rejections_total{class=\"token\"} 1".to_string(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in:\n{metrics}");
    }
}

#[tokio::test]
async fn serves_tls_with_the_apis_pair() {
    let pair = TestTls::new("gRPC test CA");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), &pair.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &pair.key_pem).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pair.ca_pem).unwrap();
    let email = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "grpc_listen: 127.0.0.1:0\ntls: {{cert: tls.crt, key: tls.key}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        email.url
    ))
    .dir(dir)
    .start();
    let token = email.mint(&email.email_claims("alice@example.com"));
    let answer = grpc(
        &ks,
        Some(&ca),
        Some(&token),
        &["sign", "--mode", "csr", "--token-in", "authorization"],
    )
    .await;
    check_chain(&answer, &email.url, "alice@example.com");
    assert_eq!(grpc(&ks, Some(&ca), None, &["health"]).await["status"], "SERVING");
}

/// The exported records matching `pred`, once there are at least `n` (10 s at most).
async fn wait_for_records(ks: &Keyless, pred: impl Fn(&Value) -> bool, n: usize) -> Vec<Value> {
    let path = ks.dir.path().join("records.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let found: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|r| pred(r))
            .collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {n} records, found {}:\n{text}",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
