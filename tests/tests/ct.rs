//! Certificate Transparency end to end: every certificate carries exactly one SCT that an
//! independent checker verifies, is provably in the log, and the log stays consistent across a
//! kill -9 and a SIGTERM under load. With CT disabled, certificates carry no SCT and the server says so.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_tests::ct::{self, Sth, hashes, sth_at_least, verify_consistency, verify_inclusion};
use keyless_tests::inspect::{self, assert_leaf_profile, openssl_verify};
use keyless_tests::{ClientKey, Keyless, TestIssuer};
use serde_json::{Value, json};

const EMBEDDED: &str = "ct_log: {embedded: {listen: \"127.0.0.1:0\", mmd: 300ms}}\n";

async fn setup(ct: &str) -> (TestIssuer, Keyless) {
    let idp = TestIssuer::start("/idp").await;
    let ks = Keyless::builder(&format!("{ct}issuers:\n  - {{url: \"{}\", type: email}}\n", idp.url)).start();
    (idp, ks)
}

fn der(pem: &str) -> Vec<u8> {
    STANDARD
        .decode(pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
        .unwrap()
}

async fn issue(idp: &TestIssuer, ks: &Keyless, email: &str) -> Vec<String> {
    let key = ClientKey::p256();
    let token = idp.mint(&idp.email_claims(email));
    let body = json!({"credentials": {"oidcIdentityToken": token}, "publicKeyRequest": key.public_key_request(email)});
    ks.sign_v2(&body, None).await.chain()
}

fn log_spki(ks: &Keyless) -> Vec<u8> {
    let root = ks.trusted_root();
    let log = &root["ctlogs"][0];
    assert_eq!(log["baseUrl"].as_str(), ks.ct_url.as_deref());
    let spki = STANDARD.decode(log["publicKey"]["rawBytes"].as_str().unwrap()).unwrap();
    assert_eq!(
        log["logId"]["keyId"].as_str().unwrap(),
        STANDARD.encode(ct::sha256(&spki))
    );
    spki
}

/// Asserts that the log proves `new` extends `old` (RFC 6962 consistency proof).
async fn assert_consistent(ks: &Keyless, old: &Sth, new: &Sth) {
    let proof = ks
        .ct_get(&format!(
            "/ct/v1/get-sth-consistency?first={}&second={}",
            old.tree_size, new.tree_size
        ))
        .await;
    assert!(
        verify_consistency(
            old.tree_size,
            new.tree_size,
            &old.root,
            &new.root,
            &hashes(&proof["consistency"])
        ),
        "tree {} is not proven to extend tree {}",
        new.tree_size,
        old.tree_size
    );
}

async fn assert_included(ks: &Keyless, leaf_hash: &[u8; 32], sth: &Sth) {
    let q = format!(
        "/ct/v1/get-proof-by-hash?hash={}&tree_size={}",
        STANDARD
            .encode(leaf_hash)
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D"),
        sth.tree_size
    );
    let proof = ks.ct_get(&q).await;
    let index = proof["leaf_index"].as_u64().unwrap();
    assert!(
        verify_inclusion(
            leaf_hash,
            index,
            sth.tree_size,
            &hashes(&proof["audit_path"]),
            &sth.root
        ),
        "inclusion of entry {index}"
    );
}

#[tokio::test]
async fn embedded_log_sct_inclusion_consistency_and_entries() {
    let (idp, ks) = setup(EMBEDDED).await;
    let spki = log_spki(&ks);
    let health = ks.get("/healthz").await.json();
    assert_eq!(health["ctLog"].as_str(), ks.ct_url.as_deref());

    let mut leaves = Vec::new();
    for i in 0..3 {
        let chain = issue(&idp, &ks, &format!("ct{i}@example.com")).await;
        let leaf = inspect::parse(&chain[0]);
        assert_leaf_profile(&leaf, &inspect::parse(&chain[1]), 600);
        openssl_verify(&chain);
        let (sct, leaf_hash) = ct::verify_embedded_sct(&der(&chain[0]), &der(&chain[1]), &spki);
        assert!(sct.timestamp > 0);
        leaves.push((chain, leaf_hash));
    }
    // The MMD is 300 ms: a tree head covering every entry appears well within a second.
    let sth1 = sth_at_least(&ks, &spki, 3, Duration::from_secs(2)).await;
    for (_, h) in &leaves {
        assert_included(&ks, h, &sth1).await;
    }

    // get-entries round-trips: the leaf hashes match, and extra_data holds the precertificate
    // followed by the chain up to the root.
    let entries = ks
        .ct_get(&format!("/ct/v1/get-entries?start=0&end={}", sth1.tree_size - 1))
        .await;
    let entries = entries["entries"].as_array().unwrap();
    assert_eq!(entries.len() as u64, sth1.tree_size);
    for (chain, h) in &leaves {
        let e = entries
            .iter()
            .find(|e| {
                let mut b = vec![0u8];
                b.extend(STANDARD.decode(e["leaf_input"].as_str().unwrap()).unwrap());
                ct::sha256(&b) == *h
            })
            .expect("entry for the certificate");
        let extra = STANDARD.decode(e["extra_data"].as_str().unwrap()).unwrap();
        let pre_len = u32::from_be_bytes([0, extra[0], extra[1], extra[2]]) as usize;
        let precert = &extra[3..3 + pre_len];
        let pre = inspect::parse(&keyless_tests::pem("CERTIFICATE", precert));
        let (crit, _) =
            inspect::extension(&pre, "1.3.6.1.4.1.11129.2.4.3").expect("poison in the logged precertificate");
        assert!(crit);
        let root = der(&chain[2]);
        assert!(extra.ends_with(&root), "the stored chain ends with the root");
    }

    // Two more certificates, then a consistency proof between the two tree heads.
    for i in 3..5 {
        let chain = issue(&idp, &ks, &format!("ct{i}@example.com")).await;
        ct::verify_embedded_sct(&der(&chain[0]), &der(&chain[1]), &spki);
    }
    let sth2 = sth_at_least(&ks, &spki, 5, Duration::from_secs(2)).await;
    assert_consistent(&ks, &sth1, &sth2).await;

    let roots = ks.ct_get("/ct/v1/get-roots").await;
    assert_eq!(roots["certificates"].as_array().unwrap().len(), 1);
    assert_eq!(
        STANDARD.decode(roots["certificates"][0].as_str().unwrap()).unwrap(),
        der(&leaves[0].0[2]),
        "the log trusts the CA's root"
    );
    let tr = ks.trusted_root();
    let chain: Vec<Vec<u8>> = tr["certificateAuthorities"][0]["certChain"]["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| STANDARD.decode(c["rawBytes"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(chain, vec![der(&leaves[0].0[1]), der(&leaves[0].0[2])]);
}

#[tokio::test]
async fn log_refuses_chains_it_does_not_trust() {
    let (_idp, ks) = setup(EMBEDDED).await;
    let ct = ks.ct_url.clone().unwrap();
    let http = reqwest::Client::new();
    // A self-signed certificate from elsewhere (rcgen) does not chain to the CA's root.
    let key = rcgen::KeyPair::generate().unwrap();
    let other = rcgen::CertificateParams::new(vec!["x.example".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let body = json!({"chain": [STANDARD.encode(other.der())]});
    let r = http
        .post(format!("{ct}/ct/v1/add-chain"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("root this log trusts"));
    let r = http
        .post(format!("{ct}/ct/v1/add-pre-chain"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("precertificate"));
    let r = http
        .post(format!("{ct}/ct/v1/add-chain"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn disabled_issues_without_sct_and_says_so() {
    let (idp, ks) = setup("ct_log: disabled\n").await;
    let chain = issue(&idp, &ks, "nolog@example.com").await;
    let (_, sct_ext) = ct::split_final_cert(&der(&chain[0]));
    assert!(sct_ext.is_none(), "no SCT when CT is disabled");
    assert_eq!(ks.get("/healthz").await.json()["ctLog"], "disabled");
    assert!(ks.log().contains("CERTIFICATE TRANSPARENCY IS DISABLED"));
    assert!(ks.trusted_root()["ctlogs"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_returned_certificate_survives_kill9() {
    survives_restart(Keyless::restart_after_kill9).await;
}

/// SIGTERM under load: the server stops accepting, answers the requests in flight, flushes the
/// log's tree head and exits 0; nothing that was returned is missing and nothing is half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_and_loses_nothing() {
    let ks = survives_restart(|ks| {
        let status = ks.restart_after_sigterm();
        assert!(status.success(), "graceful shutdown exits 0: {status}\n{}", ks.log());
    })
    .await;
    let log = ks.log();
    for line in [
        "shutting down: no new connections",
        "requests in flight finished",
        "CA signer released",
        "issuance record closed",
        "CT log flushed",
        "shut down",
    ] {
        assert!(log.contains(line), "missing {line:?} in:\n{log}");
    }
}

/// Clients issue concurrently while `restart` stops and restarts the server; every certificate a
/// client received is then in the restarted log, consistent with the tree before.
async fn survives_restart(restart: impl FnOnce(&mut Keyless)) -> Keyless {
    let (idp, mut ks) = setup(EMBEDDED).await;
    let spki = log_spki(&ks);
    let before = sth_at_least(&ks, &spki, 0, Duration::from_secs(2)).await;
    // Clients issue concurrently; the server is killed while they are still sending.
    let returned = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<String>>::new()));
    let mut tasks = Vec::new();
    for c in 0..4 {
        let (url, idp_url) = (ks.url.clone(), idp.url.clone());
        let tokens: Vec<(String, ClientKey, String)> = (0..40)
            .map(|i| {
                let email = format!("crash{c}-{i}@example.com");
                (idp.mint(&idp.email_claims(&email)), ClientKey::p256(), email)
            })
            .collect();
        let returned = returned.clone();
        let _ = idp_url;
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for (token, key, email) in tokens {
                let body = json!({"credentials": {"oidcIdentityToken": token}, "publicKeyRequest": key.public_key_request(&email)});
                match http.post(format!("{url}/api/v2/signingCert")).json(&body).send().await {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        let chain = v["signedCertificateEmbeddedSct"]["chain"]["certificates"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|p| p.as_str().unwrap().to_string())
                            .collect();
                        returned.lock().unwrap().push(chain);
                    }
                    _ => break,
                }
            }
        }));
    }
    // Let some certificates through, then kill -9.
    let start = Instant::now();
    while returned.lock().unwrap().len() < 20 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    restart(&mut ks);
    for t in tasks {
        let _ = t.await;
    }
    let returned = returned.lock().unwrap().clone();
    assert!(
        returned.len() >= 20,
        "only {} certificates were issued before the kill",
        returned.len()
    );
    let after = sth_at_least(&ks, &spki, returned.len() as u64, Duration::from_secs(3)).await;
    for chain in &returned {
        let (_, h) = ct::verify_embedded_sct(&der(&chain[0]), &der(&chain[1]), &spki);
        assert_included(&ks, &h, &after).await;
    }
    assert_consistent(&ks, &before, &after).await;
    // The issuance record was durable before each certificate left: all of them are recorded.
    let out = keyless_tests::run_keyless(
        &["audit", "query", "--format", "json", "--config", "keyless.yaml"],
        ks.dir.path(),
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recorded: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let recorded: std::collections::HashSet<Vec<u8>> = recorded
        .iter()
        .map(|r| STANDARD.decode(r["certificate"]["der"].as_str().unwrap()).unwrap())
        .collect();
    for chain in &returned {
        assert!(
            recorded.contains(&der(&chain[0])),
            "a returned certificate is missing from the record"
        );
    }
    // And the restarted CA keeps issuing into the same log.
    let chain = issue(&idp, &ks, "after-restart@example.com").await;
    ct::verify_embedded_sct(&der(&chain[0]), &der(&chain[1]), &spki);
    ks
}

/// certspotter (Debian package), an independent CT monitor, downloads the embedded log, verifies
/// the STH signature, the Merkle tree against it, and the precertificates, and finds no error.
#[tokio::test]
async fn certspotter_verifies_the_embedded_log() {
    let (idp, ks) = setup(EMBEDDED).await;
    let spki = log_spki(&ks);
    for i in 0..4 {
        issue(&idp, &ks, &format!("spot{i}@example.com")).await;
    }
    let sth = sth_at_least(&ks, &spki, 4, Duration::from_secs(2)).await;
    let d = ks.dir.path();
    let list = json!({
        "version": "local", "log_list_timestamp": "2026-01-01T00:00:00Z",
        "operators": [{"name": "keyless-test", "email": ["nobody@example.invalid"], "logs": [{
            "description": "keyless embedded log", "log_id": STANDARD.encode(ct::sha256(&spki)), "key": STANDARD.encode(&spki),
            "url": format!("{}/", ks.ct_url.as_deref().unwrap()), "mmd": 86400,
            "state": {"usable": {"timestamp": "2020-01-01T00:00:00Z"}}}]}]
    });
    std::fs::write(d.join("loglist.json"), list.to_string()).unwrap();
    std::fs::write(d.join("watchlist"), ".\n").unwrap();
    let stderr = std::fs::File::create(d.join("certspotter.log")).unwrap();
    let mut child = std::process::Command::new("certspotter")
        .args([
            "-logs",
            "loglist.json",
            "-watchlist",
            "watchlist",
            "-state_dir",
            "cs-state",
            "-stdout",
            "-verbose",
        ])
        .current_dir(d)
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("certspotter is installed (scripts/test.sh)");
    let start = Instant::now();
    let verified = loop {
        let size = std::fs::read_dir(d.join("cs-state/logs"))
            .ok()
            .and_then(|mut dirs| dirs.next())
            .and_then(|e| std::fs::read_to_string(e.ok()?.path().join("state.json")).ok())
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["verified_position"]["size"].as_u64());
        if size == Some(sth.tree_size) || start.elapsed() > Duration::from_secs(30) {
            break size;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(d.join("certspotter.log")).unwrap();
    assert_eq!(
        verified,
        Some(sth.tree_size),
        "certspotter verified the whole tree:\n{log}"
    );
    assert!(log.contains("downloading entries"), "{log}");
    for bad in ["error verifying", "does not match", "malformed", "invalid"] {
        assert!(!log.contains(bad), "certspotter reported {bad:?}:\n{log}");
    }
}
