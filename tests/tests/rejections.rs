//! Bad input gets a 4xx whose message names the problem, and changes nothing: the server keeps
//! serving and issues nothing for it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyless_tests::{ClientKey, IssuerKey, Keyless, Reply, TestIssuer, mint_with, now, openssl, raw_token};
use serde_json::{Value, json};

async fn setup() -> (TestIssuer, Keyless) {
    let issuer = TestIssuer::start("/idp").await;
    let keyless = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        issuer.url
    ))
    .start();
    (issuer, keyless)
}

fn body(token: &str, key: &ClientKey, name: &str) -> Value {
    json!({"credentials": {"oidcIdentityToken": token}, "publicKeyRequest": key.public_key_request(name)})
}

#[track_caller]
fn refused(r: &Reply, status: u16, prefix: &str, detail: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let m = r.message();
    assert!(m.starts_with(prefix), "message {m:?} should start with {prefix:?}");
    assert!(m.contains(detail), "message {m:?} should mention {detail:?}");
    assert_eq!(r.json()["details"], json!([]));
}

const TOKEN: &str = "There was an error processing the identity token";

#[tokio::test]
async fn token_rejections_name_the_problem() {
    let (idp, ks) = setup().await;
    let key = ClientKey::p256();
    let email = "alice@example.com";
    let send = |claims: Value| {
        let token = idp.mint(&claims);
        let b = body(&token, &key, email);
        let ks = &ks;
        async move { ks.sign_v2(&b, None).await }
    };

    let mut c = idp.email_claims(email);
    c["aud"] = json!("not-sigstore");
    refused(&send(c).await, 400, TOKEN, "does not contain \"sigstore\"");

    let mut c = idp.email_claims(email);
    c["exp"] = json!(now() - 5);
    refused(&send(c).await, 400, TOKEN, "expired");

    let mut c = idp.email_claims(email);
    c["nbf"] = json!(now() + 900);
    refused(&send(c).await, 400, TOKEN, "not valid before");

    let mut c = idp.email_claims(email);
    c["iss"] = json!("http://127.0.0.1:9/not-configured");
    refused(&send(c).await, 400, TOKEN, "is not configured");

    let mut c = idp.email_claims(email);
    c["email_verified"] = json!(false);
    refused(&send(c).await, 400, TOKEN, "email_verified");

    let mut c = idp.email_claims(email);
    c.as_object_mut().unwrap().remove("email_verified");
    refused(&send(c).await, 400, TOKEN, "email_verified");

    let mut c = idp.email_claims(email);
    c["email_verified"] = json!("yes");
    refused(&send(c).await, 400, TOKEN, "email_verified");

    // alg none, with and without a signature.
    let none = raw_token(&json!({"alg": "none", "kid": "rsa-1"}), &idp.email_claims(email), b"");
    refused(
        &ks.sign_v2(&body(&none, &key, email), None).await,
        400,
        TOKEN,
        "\"none\" is not accepted",
    );

    // HS256 keyed with the issuer's public RSA key (the classic algorithm-confusion attack).
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let secret = EncodingKey::from_secret(idp.rsa.public_pem.as_ref().unwrap().as_bytes());
    let hs = jsonwebtoken::encode(&header, &idp.email_claims(email), &secret).unwrap();
    refused(
        &ks.sign_v2(&body(&hs, &key, email), None).await,
        400,
        TOKEN,
        "\"HS256\" is not accepted",
    );

    // A known kid, signed by somebody else's key.
    let forged = mint_with(&IssuerKey::rsa("rsa-1"), &idp.email_claims(email));
    refused(
        &ks.sign_v2(&body(&forged, &key, email), None).await,
        400,
        TOKEN,
        "signature does not verify",
    );

    // A kid the issuer never published.
    let stranger = mint_with(&IssuerKey::ec("ec-unknown"), &idp.email_claims(email));
    refused(
        &ks.sign_v2(&body(&stranger, &key, email), None).await,
        400,
        TOKEN,
        "no signing key with kid \"ec-unknown\"",
    );

    assert!(ks.healthy().await);
    // Nothing was issued for any of them.
    assert!(!ks.log().contains("certificate issued"), "{}", ks.log());
}

#[tokio::test]
async fn token_leniencies_that_clients_rely_on() {
    let (idp, ks) = setup().await;
    let key = ClientKey::p256();
    let email = "lenient@example.com";
    // nbf slightly in the future is within the 5-minute leeway; aud may be an array; email_verified
    // may be the string "true"; a token without kid is checked against every key (oidc-provider-mock).
    let mut c = idp.email_claims(email);
    c["nbf"] = json!(now() + 60);
    c["aud"] = json!(["other", "sigstore"]);
    c["email_verified"] = json!("true");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = None;
    let token = jsonwebtoken::encode(&header, &c, &idp.rsa.encoding).unwrap();
    let r = ks.sign_v2(&body(&token, &key, email), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn rotated_keys_are_fetched_and_unknown_kids_are_rate_limited() {
    let (idp, ks) = setup().await;
    let key = ClientKey::p256();
    let email = "rot@example.com";
    let r = ks
        .sign_v2(&body(&idp.mint(&idp.email_claims(email)), &key, email), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(idp.jwks_fetches(), 1, "keys are cached");
    let r = ks
        .sign_v2(&body(&idp.mint(&idp.email_claims(email)), &key, email), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(idp.jwks_fetches(), 1, "keys are cached");

    // The issuer rotates to a new key: the first token with the new kid triggers one re-fetch.
    let new_key = IssuerKey::ec("ec-2");
    idp.publish(&[&new_key]);
    let r = ks
        .sign_v2(&body(&mint_with(&new_key, &idp.email_claims(email)), &key, email), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(idp.jwks_fetches(), 2);

    // A burst of made-up kids costs no further fetches within the refresh interval.
    for i in 0..5 {
        let bogus = mint_with(&IssuerKey::ec(&format!("bogus-{i}")), &idp.email_claims(email));
        refused(
            &ks.sign_v2(&body(&bogus, &key, email), None).await,
            400,
            TOKEN,
            "no signing key with kid",
        );
    }
    assert_eq!(idp.jwks_fetches(), 2, "unknown kids must not hammer the issuer");
}

#[tokio::test]
async fn key_and_possession_rejections() {
    let (idp, ks) = setup().await;
    let email = "keys@example.com";
    let token = idp.mint(&idp.email_claims(email));
    const POP: &str = "The signature supplied in the request could not be verified";

    // Proof over somebody else's name.
    let key = ClientKey::p256();
    let r = ks.sign_v2(&body(&token, &key, "mallory@example.com"), None).await;
    refused(&r, 400, POP, "over \"keys@example.com\"");
    assert!(!r.message().contains("user-keys"), "{}", r.message());

    // A proof over the token's `sub` does not count unless the issuer sets `allow_sub_challenge`
    // (tests/tests/clients.rs covers the opt-in with `@sigstore/cli`).
    let r = ks.sign_v2(&body(&token, &key, "user-keys@example.com"), None).await;
    refused(&r, 400, POP, "over \"keys@example.com\"");

    // Keys made by openssl: P-521 signed over SHA-256 (must be SHA-512), then RSA-1024.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("msg"), email).unwrap();
    openssl(
        &["ecparam", "-name", "secp521r1", "-genkey", "-noout", "-out", "p521.pem"],
        d,
    );
    openssl(&["ec", "-in", "p521.pem", "-pubout", "-out", "p521.pub"], d);
    let p521_pub = std::fs::read_to_string(d.join("p521.pub")).unwrap();
    let pop_request = |pubkey: &str, sig: Vec<u8>| {
        json!({"credentials": {"oidcIdentityToken": token},
               "publicKeyRequest": {"publicKey": {"content": pubkey}, "proofOfPossession": STANDARD.encode(sig)}})
    };
    let sha256 = openssl(&["dgst", "-sha256", "-sign", "p521.pem", "msg"], d);
    refused(
        &ks.sign_v2(&pop_request(&p521_pub, sha256), None).await,
        400,
        POP,
        "ECDSA with SHA-512",
    );
    let sha512 = openssl(&["dgst", "-sha512", "-sign", "p521.pem", "msg"], d);
    let ok = ks.sign_v2(&pop_request(&p521_pub, sha512), None).await;
    assert_eq!(ok.status, 200, "P-521 over SHA-512 is the rule: {}", ok.body);

    openssl(&["genrsa", "-out", "rsa1024.pem", "1024"], d);
    openssl(&["rsa", "-in", "rsa1024.pem", "-pubout", "-out", "rsa1024.pub"], d);
    let rsa_pub = std::fs::read_to_string(d.join("rsa1024.pub")).unwrap();
    let sig = openssl(&["dgst", "-sha256", "-sign", "rsa1024.pem", "msg"], d);
    refused(
        &ks.sign_v2(&pop_request(&rsa_pub, sig), None).await,
        400,
        "The public key supplied in the request is insecure",
        "1024 bits",
    );

    openssl(
        &["ecparam", "-name", "secp256k1", "-genkey", "-noout", "-out", "k1.pem"],
        d,
    );
    openssl(&["ec", "-in", "k1.pem", "-pubout", "-out", "k1.pub"], d);
    let k1 = std::fs::read_to_string(d.join("k1.pub")).unwrap();
    let sig = openssl(&["dgst", "-sha256", "-sign", "k1.pem", "msg"], d);
    refused(
        &ks.sign_v2(&pop_request(&k1, sig), None).await,
        400,
        "The public key supplied in the request is insecure",
        "curve",
    );

    refused(
        &ks.sign_v2(
            &pop_request(
                "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
                vec![1],
            ),
            None,
        )
        .await,
        400,
        "The public key supplied in the request could not be parsed",
        "",
    );

    // CSRs: malformed, and a valid one whose signature was tampered with.
    const CSR: &str = "The certificate signing request could not be parsed";
    let bad = "-----BEGIN CERTIFICATE REQUEST-----\nMIIBAAAA\n-----END CERTIFICATE REQUEST-----\n";
    let r = ks
        .sign_v2(
            &json!({"certificateSigningRequest": STANDARD.encode(bad)}),
            Some(&token),
        )
        .await;
    refused(&r, 400, CSR, "PKCS#10");
    let r = ks
        .sign_v2(
            &json!({"certificateSigningRequest": STANDARD.encode("hello")}),
            Some(&token),
        )
        .await;
    refused(&r, 400, CSR, "PEM");

    let csr = keyless_tests::p256_csr();
    let der_b64: String = csr.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = STANDARD.decode(der_b64).unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        STANDARD.encode(&der)
    );
    let r = ks
        .sign_v2(
            &json!({"certificateSigningRequest": STANDARD.encode(tampered)}),
            Some(&token),
        )
        .await;
    refused(&r, 400, POP, "self-signature");

    // Both key forms at once is ambiguous.
    let mut both = body(&token, &ClientKey::p256(), email);
    both["certificateSigningRequest"] = json!(STANDARD.encode(&csr));
    assert_eq!(ks.sign_v2(&both, None).await.status, 400);

    assert!(ks.healthy().await);
    assert_eq!(
        ks.log().matches("certificate issued").count(),
        1,
        "only the valid P-521 request issued"
    );
}

#[tokio::test]
async fn malformed_requests() {
    let (idp, ks) = setup().await;
    let r = ks.post("/api/v2/signingCert", "{not json", None).await;
    refused(&r, 400, "request body is not valid JSON", "");

    // A 5 MiB body is refused on its declared length, before the CA reads or parses it.
    let head = ks.raw_exchange("POST /api/v2/signingCert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5242880\r\n\r\n{\"credentials\":").await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("larger than 4194304 bytes"), "{head}");
    // Sent in chunks with no declared length, it is cut off at the limit.
    let huge = vec![b' '; 5 << 20];
    let stream = futures_stream(huge);
    match ks.post_stream("/api/v2/signingCert", stream).await {
        Ok(r) => assert_eq!(r.status, 413, "{}", r.body),
        Err(e) => assert!(e.is_request(), "{e}"), // the server may close before the upload ends
    }

    let key = ClientKey::p256();
    let dots = ".".repeat(100_000);
    refused(
        &ks.sign_v2(&body(&dots, &key, "x"), None).await,
        400,
        TOKEN,
        "larger than",
    );
    let dots = ".".repeat(2_000);
    refused(
        &ks.sign_v2(&body(&dots, &key, "x"), None).await,
        400,
        TOKEN,
        "exactly two dots",
    );
    refused(&ks.sign_v2(&json!({}), None).await, 400, TOKEN, "no identity token");
    // A token but no key at all.
    let token = idp.mint(&idp.email_claims("nokey@example.com"));
    refused(
        &ks.sign_v2(&json!({"credentials": {"oidcIdentityToken": token}}), None)
            .await,
        400,
        "The public key supplied in the request could not be parsed",
        "no public key",
    );

    assert!(ks.healthy().await);
    let log = ks.log();
    assert!(!log.contains(&token), "tokens must never be logged");
    assert!(!log.contains("certificate issued"));
}

fn futures_stream(data: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = data.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn unreachable_issuer_is_503_and_does_not_affect_others() {
    let idp = TestIssuer::start("/up").await;
    // Port 9 on loopback: nothing listens, so the connection is refused at once.
    let down = "http://127.0.0.1:9/down";
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{down}\", type: email}}\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .start();
    let key = ClientKey::p256();
    let mut claims = idp.email_claims("x@example.com");
    claims["iss"] = json!(down);
    let r = ks.sign_v2(&body(&idp.mint(&claims), &key, "x@example.com"), None).await;
    refused(&r, 503, TOKEN, "issuer http://127.0.0.1:9/down is unavailable");
    assert!(
        !r.body.contains("refused"),
        "transport details stay in the log: {}",
        r.body
    );
    let ok = ks
        .sign_v2(
            &body(&idp.mint(&idp.email_claims("x@example.com")), &key, "x@example.com"),
            None,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ks.log().contains("OIDC issuer unavailable"));
}
