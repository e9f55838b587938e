//! Property-based fuzzing, on stable Rust, of every parser that takes bytes from outside: identity
//! tokens, JWKS and discovery documents from IdPs, CSRs and public keys from clients, signing
//! request bodies, CT submissions and CT log answers, configuration and Fulcio issuer files, and
//! ci-provider templates.
//!
//! Each property feeds its real entry point arbitrary bytes and mutated valid seeds (see
//! `fuzz/mutate.rs`) and requires: no panic, an answer within a time bound, and the output
//! invariants the parser promises. `KEYLESS_FUZZ_CASES` sets the inputs per target (small by
//! default, so this runs in the normal suite); `scripts/fuzz.sh` runs a long campaign in release.
//! Failing inputs land in `tests/fuzz-regressions/<target>/` and are replayed first on every run.

#[path = "fuzz/harness.rs"]
mod harness;
#[path = "fuzz/mutate.rs"]
mod mutate;
#[path = "fuzz/seeds.rs"]
mod seeds;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use harness::fuzz;
use keyless_ca::keys::{Hash, PublicKey};
use keyless_ca::{possession, token};
use keyless_config::template::{Template, claim_text};
use keyless_config::{Config, IssuerConfig, IssuerKind, SubmissionLimits};
use mutate::{Format, Seed, inputs};
use serde_json::Value;
use tower::ServiceExt as _;

/// The time bound for one input of up to 64 KiB in a debug build: far above what any parser
/// needs (a few ms), far below what a quadratic blow-up on 64 KiB costs.
const BOUND: Duration = Duration::from_millis(200);

fn now() -> i64 {
    keyless_tests::now() as i64
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

fn tokens(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// Target 1: Identity tokens: `token::parse`, then `token::verify` against a real key set.
#[test]
fn identity_token() {
    let t = seeds::Tokens::new();
    let keys = keyless_oidc::parse_jwks(&serde_json::to_vec(&t.jwks).unwrap()).unwrap();
    let issuer = Arc::new(IssuerConfig::new(seeds::ISSUER, IssuerKind::Email(Default::default())));
    let seeds = t.token_seeds();
    // Every seed is a genuine token (or a foreign one that cannot verify here).
    let signed: HashSet<String> = seeds
        .iter()
        .map(|s| text(&s.bytes).rsplit_once('.').unwrap().0.to_string())
        .collect();
    // The seeds reach verification: a minted token verifies.
    let first = token::parse(&t.minted[0]).unwrap();
    assert!(token::verify(first, issuer.clone(), &keys, now()).is_ok());
    let dict = tokens(&[
        "eyJhbGciOiJub25lIn0",  // {"alg":"none"}
        "eyJhbGciOiJIUzI1NiJ9", // {"alg":"HS256"}
        "\"alg\":\"none\"",
        "\"kid\":",
        "\"iss\":",
        "\"exp\":",
        "\"aud\":",
        ".",
    ]);
    fuzz("identity_token", BOUND, inputs(seeds, dict), |bytes| {
        let raw = text(bytes);
        let _ = token::claims_sha256(&raw);
        let Ok(parsed) = token::parse(&raw) else {
            return Ok(false);
        };
        // The issuer is the payload's `iss` string, nothing else.
        let payload_iss = raw
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|p| serde_json::from_slice::<serde_json::Map<String, Value>>(&p).ok())
            .and_then(|c| c.get("iss").and_then(Value::as_str).map(str::to_string));
        if payload_iss.as_deref() != Some(parsed.issuer()) {
            return Err(format!(
                "issuer {:?} is not the payload's iss {payload_iss:?}",
                parsed.issuer()
            ));
        }
        if let Ok(verified) = token::verify(parsed, issuer.clone(), &keys, now()) {
            // Only what a key signed verifies: the signed part is one of the minted tokens'.
            let (input, _) = raw.rsplit_once('.').unwrap_or_default();
            if !signed.contains(input) {
                return Err("a token whose signed part was altered verified".into());
            }
            if verified.claims().get("iss").and_then(Value::as_str) != Some(seeds::ISSUER) {
                return Err("a verified token's iss is not the issuer's URL".into());
            }
        }
        Ok(true)
    });
}

/// Target 2: JWKS: `keyless_oidc::parse_jwks` (JSON, then `IssuerKeys::from_jwks`).
#[test]
fn jwks() {
    let t = seeds::Tokens::new();
    let issuer = Arc::new(IssuerConfig::new(seeds::ISSUER, IssuerKind::Email(Default::default())));
    let dict = tokens(&[
        "\"kty\":\"RSA\"",
        "\"kty\":\"EC\"",
        "\"crv\":\"P-521\"",
        "\"alg\":\"none\"",
        "\"kid\":null",
        "AQAB",
    ]);
    fuzz("jwks", BOUND, inputs(t.jwks_seeds(), dict), |bytes| {
        let Ok(keys) = keyless_oidc::parse_jwks(bytes) else {
            return Ok(false);
        };
        let listed = serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|v| v.get("keys").and_then(Value::as_array).map(Vec::len))
            .ok_or("an accepted JWKS is not a JSON object with a keys array")?;
        if keys.is_empty() || keys.len() > listed {
            return Err(format!("{} usable keys from a set listing {listed}", keys.len()));
        }
        // Verifying with the parsed keys never panics, and succeeds only with a key listed
        // under the token's kid.
        for (minted, key) in t.minted.iter().zip(&t.keys) {
            let parsed = token::parse(minted).map_err(|e| e.to_string())?;
            let listed = || {
                serde_json::from_slice::<Value>(bytes).ok().is_some_and(|v| {
                    v["keys"].as_array().is_some_and(|ks| {
                        ks.iter()
                            .any(|k| k.get("kid").and_then(Value::as_str) == Some(&key.kid))
                    })
                })
            };
            if token::verify(parsed, issuer.clone(), &keys, now()).is_ok() && !listed() {
                return Err(format!(
                    "a token with kid {} verified with a set that does not list it",
                    key.kid
                ));
            }
        }
        Ok(true)
    });
}

/// Target 3: OIDC discovery documents: `keyless_oidc::parse_discovery`.
#[test]
fn discovery() {
    let dict = tokens(&[
        "\"issuer\":",
        "\"jwks_uri\":",
        "http://",
        "https://",
        "file:///",
        "127.0.0.1",
        "[::1]",
        "localhost",
        "@",
        "#",
        "%2e",
    ]);
    fuzz("discovery", BOUND, inputs(seeds::discovery_seeds(), dict), |bytes| {
        let mut accepted = false;
        for issuer in [seeds::ISSUER, "http://127.0.0.1:8080"] {
            let Ok(url) = keyless_oidc::parse_discovery(issuer, bytes) else {
                continue;
            };
            accepted = true;
            // (A document nested deeper than serde_json's limit in a skipped member is read
            // without recursion, so only a document `Value` can hold is compared.)
            if let Ok(doc) = serde_json::from_slice::<Value>(bytes)
                && doc.get("issuer").and_then(Value::as_str) != Some(issuer)
            {
                return Err(format!("accepted a document that does not name issuer {issuer}"));
            }
            let loopback = keyless_config::is_loopback_url(&url);
            if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
                return Err(format!("accepted jwks_uri {url} (not https, not loopback http)"));
            }
        }
        Ok(accepted)
    });
}

/// Independent DER re-encoding of an SPKI (RustCrypto's strict DER codec).
fn reencoded_spki(der_bytes: &[u8]) -> Result<Vec<u8>, String> {
    use der::{Decode as _, Encode as _};
    let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(der_bytes)
        .map_err(|e| format!("an accepted SPKI is not DER: {e}"))?;
    spki.to_der().map_err(|e| e.to_string())
}

/// The invariants of an accepted key: it is canonical DER, and parsing its DER again gives the
/// same key. Verification with any hash never panics.
fn check_key(key: &PublicKey, message: &[u8]) -> Result<(), String> {
    let spki = key.spki_der();
    if reencoded_spki(spki)? != spki {
        return Err("an accepted SPKI does not re-encode to the same DER".into());
    }
    let again =
        PublicKey::from_spki_der(spki).map_err(|e| format!("an accepted SPKI is refused when parsed again: {e}"))?;
    if again.key_type() != key.key_type() || again.key_bits() != key.key_bits() {
        return Err("parsing an accepted SPKI again gives another key".into());
    }
    for hash in [Hash::Sha256, Hash::Sha384, Hash::Sha512, Hash::None] {
        let _ = key.verify(hash, message, message);
        let _ = key.verify(hash, message, &message[..message.len().min(132)]);
    }
    Ok(())
}

/// Target 4: CSRs: `possession::prove_csr`.
#[test]
fn csr() {
    let dict = tokens(&[
        "-----BEGIN CERTIFICATE REQUEST-----",
        "-----END CERTIFICATE REQUEST-----",
        "-----BEGIN NEW CERTIFICATE REQUEST-----",
        "\n",
        "MII",
    ]);
    let seeds = seeds::csr_seeds();
    for s in &seeds {
        possession::prove_csr(&s.bytes, &Default::default()).unwrap_or_else(|e| panic!("seed CSR refused: {e}"));
    }
    fuzz("csr", BOUND, inputs(seeds, dict), |bytes| {
        let Ok(proven) = possession::prove_csr(bytes, &Default::default()) else {
            return Ok(false);
        };
        check_key(proven.public_key(), bytes)?;
        Ok(true)
    });
}

/// Target 5: Public keys: `PublicKey::from_pem_or_der`, and `verify` on what it accepts.
#[test]
fn public_key() {
    let spkis = seeds::client_spkis();
    let seeds = seeds::spki_seeds(&spkis);
    for s in &seeds {
        PublicKey::from_pem_or_der(&s.bytes).unwrap_or_else(|e| panic!("seed key refused: {e}"));
    }
    let dict = tokens(&[
        "-----BEGIN PUBLIC KEY-----",
        "-----END PUBLIC KEY-----",
        "-----BEGIN RSA PUBLIC KEY-----",
        "\n",
    ]);
    fuzz("public_key", BOUND, inputs(seeds, dict), |bytes| {
        let Ok(key) = PublicKey::from_pem_or_der(bytes) else {
            return Ok(false);
        };
        check_key(&key, bytes)?;
        Ok(true)
    });
}

/// Target 6: Signing request bodies: `keyless_api::decode_v2` / `decode_v1` (what the routes call),
/// then the key parsers on what they decode.
#[test]
fn signing_request() {
    let t = seeds::Tokens::new();
    let bearer = t.minted[1].clone();
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    let dict = tokens(&[
        "\"credentials\":",
        "\"oidcIdentityToken\":",
        "\"publicKeyRequest\":",
        "\"certificateSigningRequest\":",
        "\"proofOfPossession\":",
        "\"signedEmailAddress\":",
        "null",
    ]);
    fuzz(
        "signing_request",
        BOUND,
        inputs(seeds::signing_request_seeds(&t.minted[0]), dict),
        |bytes| {
            let json: Option<Value> = serde_json::from_slice(bytes).ok();
            let mut accepted = false;
            for v2 in [true, false] {
                let body = Ok(Bytes::copy_from_slice(bytes));
                let decoded = if v2 {
                    keyless_api::decode_v2(String::new(), &headers, body)
                } else {
                    keyless_api::decode_v1(String::new(), &headers, body)
                };
                let Ok(req) = decoded else { continue };
                accepted = true;
                // Members the decoder skips are read without recursion, so they may nest deeper
                // than a `Value` can: only a body a `Value` holds is compared.
                let Some(json) = json.as_ref() else { continue };
                // The token: v2 takes a non-empty body token over the header; v1 only the header.
                // (serde also reads a struct from an array, by position: `"credentials": ["TOKEN"]`.)
                let body_token = match json.get("credentials") {
                    Some(Value::Object(c)) => c.get("oidcIdentityToken").or_else(|| c.get("oidc_identity_token")),
                    Some(Value::Array(a)) => a.first(),
                    _ => None,
                }
                .and_then(Value::as_str)
                .filter(|t| v2 && !t.is_empty());
                if req.token != body_token.unwrap_or(&bearer) {
                    return Err(format!("v2={v2}: the decoded token is not the one the request carries"));
                }
                let _ = token::parse(&req.token);
                match req.key {
                    keyless_service::KeyMaterial::Signature { public_key, proof } => {
                        if let Ok(key) = PublicKey::from_pem_or_der(&public_key) {
                            let _ = key.verify(key.key_type().default_hash(), b"alice@example.com", &proof);
                        }
                    }
                    keyless_service::KeyMaterial::Csr { pem } => {
                        let _ = possession::prove_csr(&pem, &Default::default());
                    }
                }
            }
            Ok(accepted)
        },
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn call(router: &axum::Router, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), 4 << 20)
        .await
        .unwrap_or_default();
    (status, body.to_vec())
}

fn unlimited() -> SubmissionLimits {
    SubmissionLimits {
        per_address: None,
        total: None,
        queue: 100_000,
        ca_addresses: Vec::new(),
    }
}

/// The log's signed tree head, checked with the reader the audit sync uses and the log's key.
fn verified_sth(
    rt: &tokio::runtime::Runtime,
    router: &axum::Router,
    log: &keyless_ctlog::EmbeddedLog,
) -> keyless_ctlog::wire::SignedTreeHead {
    let (status, body) = rt.block_on(call(router, "GET", "/ct/v1/get-sth", vec![]));
    assert_eq!(status, 200);
    let key = PublicKey::from_spki_der(log.public_key_spki()).unwrap();
    let sth: keyless_ctlog::wire::GetSthResponse = serde_json::from_slice(&body).unwrap();
    sth.verify(&key, "embedded").expect("the tree head verifies")
}

/// Target 7: CT submissions: `add-chain` and `add-pre-chain` bodies through the log's router.
#[test]
fn ct_submission() {
    let pki = seeds::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log =
        keyless_ctlog::EmbeddedLog::open(dir.path(), &[pki.root.der().to_vec()], seeds::log_options(), None).unwrap();
    let router = keyless_ctlog::http::router(log.clone(), unlimited());
    let seeds: Vec<Seed> = [("x509.example", false), ("pre.example", true)]
        .iter()
        .flat_map(|(name, pre)| {
            let chain = pki.chain(name, *pre);
            [
                Seed::new(Format::Json, seeds::chain_body(&chain)),
                Seed::new(Format::Json, seeds::chain_body(&chain[..2])),
            ]
        })
        .collect();
    for (i, s) in seeds.iter().enumerate().step_by(2) {
        let path = if i < 2 {
            "/ct/v1/add-chain"
        } else {
            "/ct/v1/add-pre-chain"
        };
        let (status, _) = rt.block_on(call(&router, "POST", path, s.bytes.clone()));
        assert_eq!(status, 200, "the full chain of seed {i} is accepted");
    }
    let dict = tokens(&["\"chain\":", "MII", "=="]);
    // Fsync of an accepted entry is in the path, so the bound allows for a slow disk.
    fuzz("ct_submission", Duration::from_secs(1), inputs(seeds, dict), |bytes| {
        let mut accepted = false;
        for path in ["/ct/v1/add-chain", "/ct/v1/add-pre-chain"] {
            let (status, body) = rt.block_on(call(&router, "POST", path, bytes.to_vec()));
            match status {
                200 => {
                    accepted = true;
                    let resp: keyless_ctlog::wire::AddChainResponse =
                        serde_json::from_slice(&body).map_err(|e| format!("{path}: 200 without an SCT: {e}"))?;
                    let sct = resp.to_sct().map_err(|e| format!("{path}: 200 with a bad SCT: {e}"))?;
                    if sct.log_id != log.log_id() {
                        return Err(format!("{path}: an SCT from another log id"));
                    }
                }
                400..=499 | 503 => {}
                other => return Err(format!("{path}: answered {other}: {}", text(&body))),
            }
        }
        Ok(accepted)
    });
    // The log is still consistent: its tree head covers every entry and verifies, and the
    // stored entries reopen against every tree head it published.
    assert!(log.flush(Duration::from_secs(10)), "the tree head caught up");
    let sth = verified_sth(&rt, &router, &log);
    assert_eq!(sth.tree_size, log.size());
    drop(router);
    drop(log);
    let reopened = keyless_ctlog::EmbeddedLog::open(dir.path(), &[pki.root.der().to_vec()], seeds::log_options(), None)
        .expect("the log reopens");
    assert_eq!(reopened.size(), sth.tree_size);
}

/// A log with a few entries, and its answers, for the CT response targets.
struct LogAnswers {
    pki: seeds::Pki,
    log: keyless_ctlog::EmbeddedLog,
    sct_responses: Vec<Vec<u8>>,
    sths: Vec<Vec<u8>>,
    entries: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn log_answers() -> LogAnswers {
    let pki = seeds::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log =
        keyless_ctlog::EmbeddedLog::open(dir.path(), &[pki.root.der().to_vec()], seeds::log_options(), None).unwrap();
    let router = keyless_ctlog::http::router(log.clone(), unlimited());
    let mut sct_responses = Vec::new();
    let mut sths = vec![rt.block_on(call(&router, "GET", "/ct/v1/get-sth", vec![])).1];
    for (i, pre) in [false, true, true].into_iter().enumerate() {
        let path = if pre {
            "/ct/v1/add-pre-chain"
        } else {
            "/ct/v1/add-chain"
        };
        let (status, body) = rt.block_on(call(
            &router,
            "POST",
            path,
            seeds::chain_body(&pki.chain(&format!("e{i}.example"), pre)),
        ));
        assert_eq!(status, 200);
        sct_responses.push(body);
        assert!(log.flush(Duration::from_secs(10)));
        sths.push(rt.block_on(call(&router, "GET", "/ct/v1/get-sth", vec![])).1);
    }
    let (status, entries) = rt.block_on(call(&router, "GET", "/ct/v1/get-entries?start=0&end=2", vec![]));
    assert_eq!(status, 200);
    LogAnswers {
        pki,
        log,
        sct_responses,
        sths,
        entries,
        _dir: dir,
    }
}

/// 8a. `add-chain` answers: `AddChainResponse` → `to_sct`.
#[test]
fn ct_sct_response() {
    let a = log_answers();
    let seeds = a
        .sct_responses
        .iter()
        .map(|b| Seed::new(Format::Json, b.clone()))
        .collect();
    fuzz(
        "ct_sct_response",
        BOUND,
        inputs(seeds, tokens(&["\"sct_version\":", "\"signature\":", "BAMA"])),
        |bytes| {
            let Ok(resp) = serde_json::from_slice::<keyless_ctlog::wire::AddChainResponse>(bytes) else {
                return Ok(false);
            };
            let Ok(sct) = resp.to_sct() else { return Ok(false) };
            // The SCT is exactly what the answer said: every field decodes to what the SCT holds,
            // and encoding the SCT again gives an answer that parses to the same SCT.
            let same = STANDARD.decode(&resp.id).ok().as_deref() == Some(&sct.log_id[..])
                && STANDARD.decode(&resp.extensions).ok() == Some(sct.extensions.clone())
                && STANDARD.decode(&resp.signature).ok() == Some(sct.digitally_signed())
                && resp.timestamp == sct.timestamp;
            if !same {
                return Err("the parsed SCT differs from the answer".into());
            }
            let again = keyless_ctlog::wire::AddChainResponse::from_sct(&sct).to_sct();
            if again.as_ref().ok() != Some(&sct) {
                return Err(format!("the SCT does not survive re-encoding: {again:?}"));
            }
            Ok(true)
        },
    );
}

/// 8b. `get-sth` answers: `GetSthResponse::verify` (what the audit sync reads them with) with the log's key.
#[test]
fn ct_sth() {
    let a = log_answers();
    let key = PublicKey::from_spki_der(a.log.public_key_spki()).unwrap();
    let genuine: Vec<keyless_ctlog::wire::SignedTreeHead> = a
        .sths
        .iter()
        .map(|b| {
            serde_json::from_slice::<keyless_ctlog::wire::GetSthResponse>(b)
                .unwrap()
                .verify(&key, "log")
                .unwrap()
        })
        .collect();
    let seeds = a.sths.iter().map(|b| Seed::new(Format::Json, b.clone())).collect();
    fuzz(
        "ct_sth",
        BOUND,
        inputs(
            seeds,
            tokens(&["\"tree_size\":", "\"timestamp\":", "\"sha256_root_hash\":"]),
        ),
        |bytes| {
            let Ok(j) = serde_json::from_slice::<keyless_ctlog::wire::GetSthResponse>(bytes) else {
                return Ok(false);
            };
            let Ok(sth) = j.verify(&key, "log") else {
                return Ok(false);
            };
            if !genuine
                .iter()
                .any(|g| (g.tree_size, g.timestamp, g.root) == (sth.tree_size, sth.timestamp, sth.root))
            {
                return Err(format!(
                    "a tree head the log never signed verified: size {} at {}",
                    sth.tree_size, sth.timestamp
                ));
            }
            Ok(true)
        },
    );
}

/// 8c. `get-entries` answers: each entry through the audit sync's `read_entry` (leaf input,
/// extra data, the CA's certificates in it).
#[test]
fn ct_entries() {
    let a = log_answers();
    let ca = keyless_audit::sync::IssuingCa::from_chain(&a.pki.ca_chain()).unwrap();
    let log_id = "fuzz-log";
    let parsed: keyless_ctlog::wire::GetEntriesResponse = serde_json::from_slice(&a.entries).unwrap();
    let indexed = parsed
        .entries
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            keyless_audit::sync::read_entry(&ca, log_id, *i as u64, e)
                .unwrap()
                .1
                .is_some()
        })
        .count();
    assert_eq!(indexed, 3, "the seeds reach the certificate indexer");
    let seeds = vec![Seed::new(Format::Json, a.entries.clone())];
    fuzz(
        "ct_entries",
        BOUND,
        inputs(seeds, tokens(&["\"leaf_input\":", "\"extra_data\":", "AAAA"])),
        |bytes| {
            let Ok(answer) = serde_json::from_slice::<keyless_ctlog::wire::GetEntriesResponse>(bytes) else {
                return Ok(false);
            };
            let mut indexed = false;
            for (i, e) in answer.entries.iter().enumerate() {
                let Ok((hash, cert)) = keyless_audit::sync::read_entry(&ca, log_id, i as u64, e) else {
                    continue;
                };
                let leaf = STANDARD
                    .decode(&e.leaf_input)
                    .map_err(|_| "read an entry whose leaf_input is not base64")?;
                if hash != keyless_ctlog::merkle::leaf_hash(&leaf) {
                    return Err(format!("entry {i}: the leaf hash is not RFC 6962's"));
                }
                if let Some(c) = cert {
                    indexed = true;
                    if c.leaf_index != i as u64 || c.log_id != log_id {
                        return Err(format!("entry {i}: indexed under {} of {}", c.leaf_index, c.log_id));
                    }
                }
            }
            // Accepted: some entry was indexed as this CA's certificate.
            Ok(indexed)
        },
    );
}

fn yaml_dict() -> Vec<Vec<u8>> {
    tokens(&[
        "&a [*a, *a, *a, *a, *a, *a, *a, *a, *a]",
        "*a",
        "<<: *a",
        "!!binary",
        "!!str",
        "? ",
        "- ",
        "|\n",
        ">-\n",
        "---\n",
        "...\n",
        "%YAML 1.1\n",
        "\t",
        "\n  ",
        "~",
        "0x10",
        "0o7",
        ".inf",
        "env:",
        "file:",
        "https://",
        "http://127.0.0.1",
        "*.example",
        "{{ .x }}",
    ])
}

/// The invariants of a loaded configuration: what validation promises holds.
fn check_config(c: &Config) -> Result<(), String> {
    if c.certificate.validity < Duration::from_secs(60) || c.certificate.validity > keyless_config::MAX_VALIDITY {
        return Err(format!("validity {:?} outside 1m..24h", c.certificate.validity));
    }
    check_issuers(&c.issuers, true)
}

/// `unique`: a whole configuration never names an issuer twice. (An issuer file alone may list a
/// URL both as an issuer and as a meta issuer, as Fulcio allows; loading it into a configuration
/// refuses that.)
fn check_issuers(issuers: &[IssuerConfig], unique: bool) -> Result<(), String> {
    for (i, a) in issuers.iter().enumerate() {
        if unique && issuers[..i].iter().any(|b| b.url == a.url) {
            return Err(format!("issuer {} loaded twice", a.url));
        }
        if !a.wildcard && !a.matches(&a.url) {
            return Err(format!("issuer {} does not match its own URL", a.url));
        }
        // (A ci-provider issuer without templates cannot be represented: its kind holds them.)
        if a.challenge_claim() != a.kind.default_challenge_claim() {
            return Err(format!(
                "issuer {}: advertises challenge claim {:?}, but proofs are verified over {:?}",
                a.url,
                a.challenge_claim(),
                a.kind.default_challenge_claim()
            ));
        }
    }
    Ok(())
}

/// 9a. Configuration files: `Config::from_yaml` (following `issuers_file` for real).
#[test]
fn config() {
    let base = tempfile::tempdir().unwrap();
    seeds::config_base(base.path());
    let seeds = seeds::config_seeds();
    let loaded = seeds
        .iter()
        .filter(|s| Config::from_yaml(&text(&s.bytes), base.path()).is_ok())
        .count();
    assert!(
        loaded >= seeds.len() / 2,
        "most configuration seeds load ({loaded} of {})",
        seeds.len()
    );
    let base: &Path = base.path();
    fuzz("config", BOUND, inputs(seeds, yaml_dict()), |bytes| {
        let yaml = text(bytes);
        let Ok(c) = Config::from_yaml(&yaml, base) else {
            return Ok(false);
        };
        check_config(&c)?;
        // Loading is a function of the text: the same text loads to the same configuration.
        let again = Config::from_yaml(&yaml, base).map_err(|e| format!("loads once, then fails: {e}"))?;
        if format!("{again:?}") != format!("{c:?}") {
            return Err("the same text loaded twice gives two configurations".into());
        }
        Ok(true)
    });
}

/// 9b. Fulcio issuer files: `keyless_config::parse_issuers_file`.
#[test]
fn fulcio_issuer_file() {
    let seeds = seeds::fulcio_file_seeds();
    // The repository's own issuer files load (Fulcio's file from the shared reference is a seed
    // whether or not it loads).
    for s in &seeds[..3] {
        keyless_config::parse_issuers_file(&text(&s.bytes)).unwrap_or_else(|e| panic!("seed issuer file refused: {e}"));
    }
    fuzz("fulcio_issuer_file", BOUND, inputs(seeds, yaml_dict()), |bytes| {
        let t = text(bytes);
        let Ok(issuers) = keyless_config::parse_issuers_file(&t) else {
            return Ok(false);
        };
        check_issuers(&issuers, false)?;
        let again = keyless_config::parse_issuers_file(&t).map_err(|e| format!("parses once, then fails: {e}"))?;
        if format!("{again:?}") != format!("{issuers:?}") {
            return Err("the same file parsed twice gives two issuer sets".into());
        }
        Ok(true)
    });
}

/// Target 10: ci-provider templates: `Template::parse`, then `render` against real claims.
#[test]
fn template() {
    let claims = keyless_tests::github_claims("https://token.actions.githubusercontent.com");
    let mut data: BTreeMap<String, String> = claims
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), claim_text(v)))
        .collect();
    data.insert("a.b".into(), "x".into());
    data.insert("x.y/z".into(), "refs/heads/main".into());
    data.insert("empty".into(), String::new());
    let longest = data.values().map(String::len).max().unwrap_or(0).max("false".len());
    let dict = tokens(&[
        "{{",
        "}}",
        "{{ ",
        " }}",
        "{{-",
        "-}}",
        "{{ if .ref }}",
        "{{ else }}",
        "{{ end }}",
        "eq ",
        "(",
        ")",
        "index . ",
        "\"",
        ".ref",
        ".a.b",
        "\\\"",
    ]);
    fuzz("template", BOUND, inputs(seeds::template_seeds(), dict), |bytes| {
        let src = text(bytes);
        let Ok(t) = Template::parse(&src) else {
            return Ok(false);
        };
        let first = t.render(&data);
        if t.render(&data) != first {
            return Err("rendering twice gives two results".into());
        }
        // No amplification: the output is the template's own text plus at most one value per
        // action.
        if let Ok(out) = first {
            let actions = src.matches("{{").count().max(1);
            if out.len() > src.len() + actions * longest {
                return Err(format!("a {}-byte template rendered {} bytes", src.len(), out.len()));
            }
        }
        Ok(true)
    });
}
