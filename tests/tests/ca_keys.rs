//! A Fulcio operator keeps their CA key: CAs made with `openssl` in every algorithm Fulcio's file
//! CA signs with, in every key file format it reads, run the real binary (`ca.file` with a
//! password, as Fulcio's `--fileca-key-passwd` always is), issue through the embedded CT log,
//! and `openssl verify` the leaf; the leaf's signature algorithm follows the CA key as Fulcio's
//! does. Then the client key policy: Fermat's check and `client_signing_algorithms`.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_tests::{ClientKey, Keyless, Reply, TestIssuer, inspect, openssl};
use serde_json::{Value, json};

const PASSWORD: &str = "fulcio-fileca-password";

/// How the issuing key is stored.
#[derive(Clone, Copy, Debug)]
enum Format {
    Pkcs8Encrypted,
    Pkcs1,
    Pkcs1Legacy3des,
    Sec1,
    Sec1LegacyAes256,
    /// Sealed by Keyless CA's own encoder (checked against a Python-made vector in `keyless-hsm`).
    Sigstore,
}

/// `openssl genpkey` arguments for a key type, and the digest OpenSSL signs certificates with.
struct Alg {
    genpkey: &'static [&'static str],
    digest: Option<&'static str>,
}

const P256: Alg = Alg {
    genpkey: &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    digest: Some("-sha256"),
};
const P384: Alg = Alg {
    genpkey: &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    digest: Some("-sha384"),
};
/// OpenSSL's default digest for every curve is SHA-256: a P-521 root signed that way must load.
const P521: Alg = Alg {
    genpkey: &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
    digest: Some("-sha256"),
};
const RSA2048: Alg = Alg {
    genpkey: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    digest: Some("-sha256"),
};
const RSA3072: Alg = Alg {
    genpkey: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
    digest: Some("-sha256"),
};
const RSA4096: Alg = Alg {
    genpkey: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
    digest: Some("-sha256"),
};
const ED25519: Alg = Alg {
    genpkey: &["-algorithm", "ED25519"],
    digest: None,
};

fn genpkey(d: &Path, alg: &Alg, out: &str) {
    let mut args = vec!["genpkey"];
    args.extend_from_slice(alg.genpkey);
    args.extend(["-out", out]);
    openssl(&args, d);
}

fn with_digest<'a>(mut args: Vec<&'a str>, alg: &'a Alg) -> Vec<&'a str> {
    args.extend(alg.digest);
    args
}

/// A self-signed root (`openssl req -x509` defaults: CA:TRUE, SKI/AKI, no keyUsage) for
/// `root.key`.
fn root_cert(d: &Path, alg: &Alg) {
    let args = vec![
        "req",
        "-x509",
        "-new",
        "-key",
        "root.key",
        "-subj",
        "/O=Fulcio Operator/CN=Operator Root",
        "-days",
        "30",
        "-out",
        "root.pem",
    ];
    openssl(&with_digest(args, alg), d);
}

/// An issuing CA for `issuing.key` signed by the root, with the extensions Fulcio's docs ask for.
fn intermediate_cert(d: &Path, root_alg: &Alg) {
    intermediate_cert_with(d, root_alg, "keyUsage=critical,keyCertSign,cRLSign\n");
}

/// [`intermediate_cert`] with `key_usage` (a config line, or nothing) in place of Fulcio's.
fn intermediate_cert_with(d: &Path, root_alg: &Alg, key_usage: &str) {
    std::fs::write(
        d.join("ext.cnf"),
        format!(
            "[v3]\nbasicConstraints=critical,CA:TRUE,pathlen:0\n{key_usage}\
             extendedKeyUsage=codeSigning\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
        ),
    )
    .unwrap();
    openssl(
        &[
            "req",
            "-new",
            "-key",
            "issuing.key",
            "-subj",
            "/O=Fulcio Operator/CN=Operator Issuing",
            "-out",
            "issuing.csr",
        ],
        d,
    );
    let args = vec![
        "x509",
        "-req",
        "-in",
        "issuing.csr",
        "-CA",
        "root.pem",
        "-CAkey",
        "root.key",
        "-CAcreateserial",
        "-days",
        "20",
        "-extfile",
        "ext.cnf",
        "-extensions",
        "v3",
        "-out",
        "issuing.pem",
    ];
    openssl(&with_digest(args, root_alg), d);
}

/// Writes `ca-key.pem` in `format` from the PKCS#8 `issuing.key`.
fn store_key(d: &Path, format: Format) {
    let pass = format!("pass:{PASSWORD}");
    let args: Vec<&str> = match format {
        Format::Pkcs8Encrypted => vec![
            "pkcs8",
            "-topk8",
            "-in",
            "issuing.key",
            "-out",
            "ca-key.pem",
            "-passout",
            &pass,
        ],
        Format::Pkcs1 => vec!["rsa", "-traditional", "-in", "issuing.key", "-out", "ca-key.pem"],
        Format::Pkcs1Legacy3des => vec![
            "rsa",
            "-traditional",
            "-des3",
            "-in",
            "issuing.key",
            "-out",
            "ca-key.pem",
            "-passout",
            &pass,
        ],
        Format::Sec1 => vec!["ec", "-in", "issuing.key", "-out", "ca-key.pem"],
        Format::Sec1LegacyAes256 => vec![
            "ec",
            "-aes256",
            "-in",
            "issuing.key",
            "-out",
            "ca-key.pem",
            "-passout",
            &pass,
        ],
        Format::Sigstore => {
            let der = openssl(
                &["pkcs8", "-topk8", "-nocrypt", "-in", "issuing.key", "-outform", "DER"],
                d,
            );
            let pem = keyless_hsm::sigstore_key::seal_pem(
                &der,
                PASSWORD.as_bytes(),
                keyless_hsm::sigstore_key::ScryptCost::Legacy,
            )
            .unwrap();
            std::fs::write(d.join("ca-key.pem"), pem).unwrap();
            return;
        }
    };
    openssl(&args, d);
}

/// Starts the binary on the CA in `dir` and issues one certificate; returns the chain.
async fn serve_and_issue(dir: tempfile::TempDir) -> Vec<String> {
    let idp = TestIssuer::start("/idp").await;
    let config = format!(
        "ct_log: {{embedded: {{listen: \"127.0.0.1:0\"}}}}\n\
         ca:\n  file: {{key: ca-key.pem, chain: ca-chain.pem, password: env:FULCIO_CA_PASSWORD}}\n\
         issuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    );
    let ks = Keyless::builder(&config)
        .dir(dir)
        .env("FULCIO_CA_PASSWORD", PASSWORD)
        .start();
    let key = ClientKey::p256();
    let token = idp.mint(&idp.email_claims("op@example.com"));
    let body = json!({"credentials": {"oidcIdentityToken": token}, "publicKeyRequest": key.public_key_request("op@example.com")});
    let chain = ks.sign_v2(&body, None).await.chain();
    assert!(ks.log().contains("CA key loaded from file"), "{}", ks.log());
    chain
}

/// The leaf's signatureAlgorithm OID (read with x509-cert, not the CA's parser).
fn signature_oid(leaf_pem: &str) -> String {
    inspect::parse(leaf_pem).signature_algorithm().oid.to_string()
}

/// Root of `root_alg`, issuing key of `issuing_alg` stored as `format`; the chain is issuing CA
/// then root. Returns the leaf chain after `openssl verify`.
async fn issue_with(root_alg: &Alg, issuing_alg: &Alg, format: Format) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    genpkey(d, root_alg, "root.key");
    root_cert(d, root_alg);
    genpkey(d, issuing_alg, "issuing.key");
    intermediate_cert(d, root_alg);
    store_key(d, format);
    let chain =
        std::fs::read_to_string(d.join("issuing.pem")).unwrap() + &std::fs::read_to_string(d.join("root.pem")).unwrap();
    std::fs::write(d.join("ca-chain.pem"), chain).unwrap();
    let chain = serve_and_issue(dir).await;
    assert_eq!(chain.len(), 3);
    inspect::openssl_verify(&chain);
    chain
}

const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const ECDSA_SHA512: &str = "1.2.840.10045.4.3.4";
const RSA_SHA256: &str = "1.2.840.113549.1.1.11";
const ED25519_OID: &str = "1.3.101.112";

#[tokio::test]
async fn p256_sigstore_encrypted() {
    let chain = issue_with(&P384, &P256, Format::Sigstore).await;
    assert_eq!(signature_oid(&chain[0]), ECDSA_SHA256);
}

#[tokio::test]
async fn p384_sec1_legacy_encrypted() {
    let chain = issue_with(&P384, &P384, Format::Sec1LegacyAes256).await;
    assert_eq!(signature_oid(&chain[0]), ECDSA_SHA384);
}

#[tokio::test]
async fn p521_sec1_under_a_sha256_signed_p521_root() {
    let chain = issue_with(&P521, &P521, Format::Sec1).await;
    assert_eq!(signature_oid(&chain[0]), ECDSA_SHA512);
}

#[tokio::test]
async fn rsa2048_pkcs1_under_an_rsa_root() {
    let chain = issue_with(&RSA2048, &RSA2048, Format::Pkcs1).await;
    assert_eq!(signature_oid(&chain[0]), RSA_SHA256);
}

#[tokio::test]
async fn rsa3072_pkcs1_legacy_3des() {
    let chain = issue_with(&P384, &RSA3072, Format::Pkcs1Legacy3des).await;
    assert_eq!(signature_oid(&chain[0]), RSA_SHA256);
}

#[tokio::test]
async fn ed25519_pkcs8_encrypted_under_an_ed25519_root() {
    let chain = issue_with(&ED25519, &ED25519, Format::Pkcs8Encrypted).await;
    assert_eq!(signature_oid(&chain[0]), ED25519_OID);
}

/// Fulcio's own compose stack: one self-signed RSA-4096 root is the whole chain, its key an
/// encrypted PKCS#8 file.
#[tokio::test]
async fn rsa4096_root_alone_as_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    genpkey(d, &RSA4096, "root.key");
    openssl(
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "root.key",
            "-subj",
            "/O=sigstore.dev/CN=sigstore",
            "-days",
            "30",
            "-sha256",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "ca-chain.pem",
        ],
        d,
    );
    std::fs::copy(d.join("root.key"), d.join("issuing.key")).unwrap();
    store_key(d, Format::Pkcs8Encrypted);
    let chain = serve_and_issue(dir).await;
    assert_eq!(chain.len(), 2);
    inspect::openssl_verify(&chain);
    assert_eq!(signature_oid(&chain[0]), RSA_SHA256);
}

/// A CA whose key fails the key policy does not start, as Fulcio's file CA refuses it.
#[test]
fn a_ca_key_with_close_primes_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("root.key"), include_str!("../fixtures/fermat-close-primes.pem")).unwrap();
    root_cert(d, &RSA2048);
    std::fs::copy(d.join("root.pem"), d.join("ca-chain.pem")).unwrap();
    std::fs::copy(d.join("root.key"), d.join("ca-key.pem")).unwrap();
    std::fs::write(
        d.join("k.yaml"),
        "listen: 127.0.0.1:0\nct_log: disabled\nca:\n  file: {key: ca-key.pem, chain: ca-chain.pem}\n",
    )
    .unwrap();
    let out = keyless_tests::run_keyless(&["serve", "--config", "k.yaml"], d, &[]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("key policy") && e.contains("Fermat"), "{e}");
}

/// Only a root may omit keyUsage: an intermediate without keyCertSign does not start, naming why.
#[test]
fn an_intermediate_without_key_cert_sign_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    genpkey(d, &P384, "root.key");
    root_cert(d, &P384);
    genpkey(d, &P256, "issuing.key");
    intermediate_cert_with(d, &P384, "");
    store_key(d, Format::Sec1);
    let chain =
        std::fs::read_to_string(d.join("issuing.pem")).unwrap() + &std::fs::read_to_string(d.join("root.pem")).unwrap();
    std::fs::write(d.join("ca-chain.pem"), chain).unwrap();
    std::fs::write(
        d.join("k.yaml"),
        "listen: 127.0.0.1:0\nct_log: disabled\nca:\n  file: {key: ca-key.pem, chain: ca-chain.pem}\n",
    )
    .unwrap();
    let out = keyless_tests::run_keyless(&["serve", "--config", "k.yaml"], d, &[]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("keyCertSign"), "{e}");
}

#[track_caller]
fn refused(r: &Reply, prefix: &str, detail: &str) {
    assert_eq!(r.status, 400, "{}", r.body);
    let m = r.message();
    assert!(m.starts_with(prefix), "message {m:?} should start with {prefix:?}");
    assert!(m.contains(detail), "message {m:?} should mention {detail:?}");
}

fn pop_body(token: &str, public_key_pem: &str, proof: &[u8]) -> Value {
    json!({"credentials": {"oidcIdentityToken": token},
           "publicKeyRequest": {"publicKey": {"content": public_key_pem}, "proofOfPossession": STANDARD.encode(proof)}})
}

fn csr_body(token: &str, csr_pem: &[u8]) -> Value {
    json!({"credentials": {"oidcIdentityToken": token}, "certificateSigningRequest": STANDARD.encode(csr_pem)})
}

const INSECURE: &str = "The public key supplied in the request is insecure";
const NOT_PERMITTED: &str = "signing algorithm not permitted";

/// goodkey's Fermat check: an RSA-2048 key whose primes are adjacent primes is refused, with a
/// valid proof of possession and as a CSR alike.
#[tokio::test]
async fn client_key_with_close_primes_is_insecure() {
    let idp = TestIssuer::start("/idp").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("k.pem"), include_str!("../fixtures/fermat-close-primes.pem")).unwrap();
    std::fs::write(d.join("msg"), "f@example.com").unwrap();
    openssl(&["pkey", "-in", "k.pem", "-pubout", "-out", "k.pub"], d);
    let proof = openssl(&["dgst", "-sha256", "-sign", "k.pem", "msg"], d);
    let token = idp.mint(&idp.email_claims("f@example.com"));
    let public = std::fs::read_to_string(d.join("k.pub")).unwrap();
    refused(
        &ks.sign_v2(&pop_body(&token, &public, &proof), None).await,
        INSECURE,
        "Fermat",
    );
    let csr = openssl(&["req", "-new", "-key", "k.pem", "-subj", "/", "-sha256"], d);
    refused(&ks.sign_v2(&csr_body(&token, &csr), None).await, INSECURE, "Fermat");
    // A sound RSA-2048 key from the same openssl is issued.
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "ok.pem",
        ],
        d,
    );
    openssl(&["pkey", "-in", "ok.pem", "-pubout", "-out", "ok.pub"], d);
    let proof = openssl(&["dgst", "-sha256", "-sign", "ok.pem", "msg"], d);
    let public = std::fs::read_to_string(d.join("ok.pub")).unwrap();
    let ok = ks.sign_v2(&pop_body(&token, &public, &proof), None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

/// `client_signing_algorithms` (Fulcio's `--client-signing-algorithms`) applies to proofs and
/// CSRs; refusals carry Fulcio's message with Go's key type and hash name first.
#[tokio::test]
async fn client_signing_algorithms_are_enforced() {
    let idp = TestIssuer::start("/idp").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nclient_signing_algorithms: [ecdsa-sha2-256-nistp256, ecdsa-sha2-256-nistp384]\n\
         issuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .start();
    let email = "alg@example.com";
    let token = idp.mint(&idp.email_claims(email));
    let pop = |key: &ClientKey| json!({"credentials": {"oidcIdentityToken": token}, "publicKeyRequest": key.public_key_request(email)});

    assert_eq!(ks.sign_v2(&pop(&ClientKey::p256()), None).await.status, 200);
    refused(
        &ks.sign_v2(&pop(&ClientKey::p384()), None).await,
        "signing algorithm not permitted: *ecdsa.PublicKey, SHA-384",
        "ecdsa-sha2-384-nistp384",
    );
    refused(
        &ks.sign_v2(&pop(&ClientKey::ed25519()), None).await,
        "signing algorithm not permitted: ed25519.PublicKey",
        "allowed: ecdsa-sha2-256-nistp256, ecdsa-sha2-256-nistp384",
    );
    refused(
        &ks.sign_v2(&pop(&ClientKey::rsa2048()), None).await,
        "signing algorithm not permitted: *rsa.PublicKey, SHA-256",
        "rsa-sign-pkcs1-2048-sha256",
    );

    // CSRs: the hash is the CSR's. P-384 over SHA-256 is on this list; over SHA-384 it is not.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            "p384.pem",
        ],
        d,
    );
    let csr256 = openssl(&["req", "-new", "-key", "p384.pem", "-subj", "/", "-sha256"], d);
    let ok = ks.sign_v2(&csr_body(&token, &csr256), None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let csr384 = openssl(&["req", "-new", "-key", "p384.pem", "-subj", "/", "-sha384"], d);
    refused(
        &ks.sign_v2(&csr_body(&token, &csr384), None).await,
        NOT_PERMITTED,
        "*ecdsa.PublicKey, SHA-384",
    );
}

/// Fulcio's default list: a P-384 CSR signed over SHA-256 is refused, over SHA-384 issued.
#[tokio::test]
async fn the_default_list_is_fulcios() {
    let idp = TestIssuer::start("/idp").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .start();
    let token = idp.mint(&idp.email_claims("d@example.com"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            "p384.pem",
        ],
        d,
    );
    let csr256 = openssl(&["req", "-new", "-key", "p384.pem", "-subj", "/", "-sha256"], d);
    refused(
        &ks.sign_v2(&csr_body(&token, &csr256), None).await,
        NOT_PERMITTED,
        "ecdsa-sha2-256-nistp384",
    );
    let csr384 = openssl(&["req", "-new", "-key", "p384.pem", "-subj", "/", "-sha384"], d);
    let ok = ks.sign_v2(&csr_body(&token, &csr384), None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}
