//! The compliance side of CT, end to end against running servers: `keyless_audit::sync` follows the
//! embedded log of a real `keyless serve` and indexes exactly what was issued; a log that forks
//! (two logs sharing one key, different histories) is caught and leaves the index at the last good
//! tree head; a certificate signed with the CA key outside the service and logged is found by the
//! cross-check, and so is an issued record whose certificate the log does not hold.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_audit::AuditError;
use keyless_audit::crosscheck::cross_check;
use keyless_audit::index::LogIndex;
use keyless_audit::record::{Decision, Record, certificate_facts};
use keyless_audit::sync::sync;
use keyless_audit::tbs::tbs_sha256_of_certificate;
use keyless_tests::ct::{self, sth_at_least};
use keyless_tests::{ClientKey, Keyless, TestIssuer, inspect, openssl};
use serde_json::json;

const EMBEDDED: &str = "ct_log: {embedded: {listen: \"127.0.0.1:0\", mmd: 200ms}}\n";

fn config(idp: &TestIssuer) -> String {
    format!("{EMBEDDED}issuers:\n  - {{url: \"{}\", type: email}}\n", idp.url)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn der(pem: &str) -> Vec<u8> {
    STANDARD
        .decode(pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
        .unwrap()
}

/// The DER certificates of a PEM file, in order.
fn pem_chain(path: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split("-----END CERTIFICATE-----")
        .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
        .map(der)
        .collect()
}

/// The file CA's chain (issuing CA, root), as generated on first start.
fn ca_chain(ks: &Keyless) -> Vec<Vec<u8>> {
    let chain = pem_chain(&ks.dir.path().join("data/ca/ca-chain.pem"));
    assert_eq!(chain.len(), 2);
    chain
}

/// The embedded log's public key, from the trusted root the server publishes.
fn log_spki(ks: &Keyless) -> Vec<u8> {
    let root = ks.trusted_root();
    STANDARD
        .decode(root["ctlogs"][0]["publicKey"]["rawBytes"].as_str().unwrap())
        .unwrap()
}

fn ct_url(ks: &Keyless) -> &str {
    ks.ct_url.as_deref().expect("the embedded log runs")
}

/// Issues a certificate for `email`; returns the chain as DER, leaf first.
async fn issue(idp: &TestIssuer, ks: &Keyless, email: &str) -> Vec<Vec<u8>> {
    let key = ClientKey::p256();
    let token = idp.mint(&idp.email_claims(email));
    let body = json!({"credentials": {"oidcIdentityToken": token}, "publicKeyRequest": key.public_key_request(email)});
    ks.sign_v2(&body, None).await.chain().iter().map(|p| der(p)).collect()
}

/// Serial as hex without leading zeros, read with `x509-cert` (not the audit crate's parser).
fn serial_of(leaf: &[u8]) -> String {
    let cert = inspect::parse(&keyless_tests::pem("CERTIFICATE", leaf));
    let s = hex(cert.tbs_certificate().serial_number().as_bytes());
    s.trim_start_matches('0').to_string()
}

/// The SCT of an issued chain, verified independently: (timestamp, Merkle leaf hash).
fn sct_of(chain: &[Vec<u8>], spki: &[u8]) -> (u64, [u8; 32]) {
    let (sct, leaf_hash) = ct::verify_embedded_sct(&chain[0], &chain[1], spki);
    (sct.timestamp, leaf_hash)
}

/// The leaf index of a Merkle leaf hash in the tree of `size`.
async fn leaf_index(ks: &Keyless, leaf_hash: &[u8; 32], size: u64) -> u64 {
    let hash = STANDARD
        .encode(leaf_hash)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    ks.ct_get(&format!("/ct/v1/get-proof-by-hash?hash={hash}&tree_size={size}"))
        .await["leaf_index"]
        .as_u64()
        .unwrap()
}

/// An `issued` record for a certificate, as the service would write it (for records the service
/// cannot produce: certificates of another CA or claimed by another log).
fn record(seq: u64, leaf: &[u8], sct: Option<([u8; 32], u64)>) -> Record {
    let sct_ref = sct.as_ref().map(|(id, t)| (id, *t));
    Record {
        seq,
        time_ms: keyless_tests::now() * 1000,
        request_id: format!("test-{seq}"),
        issuer: None,
        subject: None,
        claims_sha256: None,
        key_sha256: None,
        decision: Decision::Issued,
        rule: "email".into(),
        certificate: Some(certificate_facts(leaf, sct_ref, None).unwrap()),
        rejection: None,
        intent: None,
        intent_seq: None,
    }
}

fn log_id(spki: &[u8]) -> [u8; 32] {
    ct::sha256(spki)
}

#[tokio::test]
async fn sync_follows_the_embedded_log_and_indexes_exactly_what_was_issued() {
    let idp = TestIssuer::start("/idp").await;
    let ks = Keyless::builder(&config(&idp)).start();
    let spki = log_spki(&ks);
    let chain = ca_chain(&ks);
    let audit = tempfile::tempdir().unwrap();
    let index = LogIndex::open(audit.path()).unwrap();

    let mut issued = Vec::new();
    for i in 0..3 {
        issued.push(issue(&idp, &ks, &format!("first{i}@example.com")).await);
    }
    let sth = sth_at_least(&ks, &spki, 3, Duration::from_secs(20)).await;
    assert_eq!(sth.tree_size, 3);
    let report = sync(&index, ct_url(&ks), &spki, &chain, false).await.unwrap();
    assert_eq!(report.log_id, hex(&log_id(&spki)));
    assert_eq!(
        (
            report.previous_size,
            report.tree_size,
            report.new_entries,
            report.new_certificates
        ),
        (0, 3, 3, 3)
    );
    assert_eq!(report.root, hex(&sth.root));
    let verified = index.verified_sth(&report.log_id).unwrap().unwrap();
    assert_eq!(
        (verified.tree_size, verified.root.as_str()),
        (3, hex(&sth.root).as_str())
    );
    assert_eq!(verified.url, ct_url(&ks));
    assert!(verified.timestamp >= sth.timestamp);

    let certs = index.certificates().unwrap();
    assert_eq!(certs.len(), 3, "exactly the certificates issued");
    for (i, (chain_i, c)) in issued.iter().zip(&certs).enumerate() {
        let leaf = &chain_i[0];
        let x = inspect::parse(&keyless_tests::pem("CERTIFICATE", leaf));
        let (sct_time, leaf_hash) = sct_of(chain_i, &spki);
        assert_eq!(c.log_id, report.log_id);
        assert_eq!(c.leaf_index, leaf_index(&ks, &leaf_hash, 3).await);
        assert_eq!(c.entry_type, "precert");
        assert_eq!(c.timestamp, sct_time, "the leaf's timestamp is the SCT's");
        assert_eq!(c.serial, serial_of(leaf));
        assert_eq!(c.san, format!("email:first{i}@example.com"));
        assert_eq!(c.san, inspect::san(&x).1);
        assert_eq!(c.issuer, idp.url);
        assert_eq!(Some(c.issuer.clone()), inspect::sigstore(&x, 8));
        assert_eq!(
            c.not_before as u64,
            x.tbs_certificate().validity().not_before.to_unix_duration().as_secs()
        );
        assert_eq!(c.tbs_sha256, tbs_sha256_of_certificate(leaf).unwrap());
        let ext = |oid: &str| c.extensions.iter().find(|e| e.oid == oid).map(|e| e.value.as_str());
        assert_eq!(ext("1.3.6.1.4.1.57264.1.8"), Some(idp.url.as_str()));
        assert_eq!(ext("1.3.6.1.4.1.57264.1.1"), Some(idp.url.as_str()));
        assert_eq!(ext("2.5.29.17"), Some(c.san.as_str()));
        assert_eq!(ext("1.3.6.1.4.1.11129.2.4.3"), None, "the logged TBS has no poison");
        assert_eq!(index.find_serial(&c.serial).unwrap(), std::slice::from_ref(c));
        let summary = c.summary();
        assert_eq!(
            (summary.leaf_index, summary.san.as_str()),
            (Some(c.leaf_index), c.san.as_str())
        );
    }
    assert_eq!(index.logs().unwrap(), std::slice::from_ref(&verified));

    // More issuance: the next sync proves consistency and adds only the new certificates.
    for i in 0..2 {
        issued.push(issue(&idp, &ks, &format!("second{i}@example.com")).await);
    }
    let sth = sth_at_least(&ks, &spki, 5, Duration::from_secs(20)).await;
    let report = sync(&index, ct_url(&ks), &spki, &chain, false).await.unwrap();
    assert_eq!(
        (
            report.previous_size,
            report.tree_size,
            report.new_entries,
            report.new_certificates
        ),
        (3, 5, 2, 2)
    );
    assert_eq!(report.root, hex(&sth.root));
    let certs = index.certificates().unwrap();
    assert_eq!(certs.len(), 5, "exactly the certificates issued");
    for (i, chain_i) in issued[3..].iter().enumerate() {
        let found = index.find_serial(&serial_of(&chain_i[0])).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].san, format!("email:second{i}@example.com"));
        assert_eq!(found[0].leaf_index, 3 + i as u64);
    }
    assert_eq!(certs[..3].iter().map(|c| c.leaf_index).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(index.verified_sth(&report.log_id).unwrap().unwrap().tree_size, 5);

    // The service's own issuance record and the log agree, down to each leaf index.
    let records = keyless_audit::store::read_records(&ks.dir.path().join("data/audit")).unwrap();
    assert_eq!(records.len(), 10, "an intent and an issued record per certificate");
    for r in records
        .iter()
        .filter(|r| r.decision == keyless_audit::record::Decision::Issued)
    {
        let c = r.certificate.as_ref().unwrap();
        assert_eq!(Some(index.find_serial(&c.serial).unwrap()[0].leaf_index), c.leaf_index);
    }
    let cc = cross_check(&records, &index).unwrap();
    assert!(cc.ok(), "{:?}", cc.lines());
    assert_eq!((cc.records_checked, cc.log_certificates_checked), (5, 5));
}

#[tokio::test]
async fn a_log_that_forks_is_caught_and_the_index_stays_at_the_last_good_tree_head() {
    let idp = TestIssuer::start("/idp").await;
    let a = Keyless::builder(&config(&idp)).start();
    // B: its own CA and entries, but the same log key, so its tree heads verify as A's log.
    let dir_b = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir_b.path().join("data/ctlog")).unwrap();
    std::fs::copy(
        a.dir.path().join("data/ctlog/log-key.pem"),
        dir_b.path().join("data/ctlog/log-key.pem"),
    )
    .unwrap();
    let b = Keyless::builder(&config(&idp)).dir(dir_b).start();
    let spki = log_spki(&a);
    assert_eq!(log_spki(&b), spki, "both logs sign with one key");

    for i in 0..2 {
        issue(&idp, &a, &format!("a{i}@example.com")).await;
    }
    for i in 0..3 {
        issue(&idp, &b, &format!("b{i}@example.com")).await;
    }
    sth_at_least(&a, &spki, 2, Duration::from_secs(20)).await;
    sth_at_least(&b, &spki, 3, Duration::from_secs(20)).await;

    let audit = tempfile::tempdir().unwrap();
    let index = LogIndex::open(audit.path()).unwrap();
    let chain = ca_chain(&a);
    let good = sync(&index, ct_url(&a), &spki, &chain, false).await.unwrap();
    assert_eq!((good.tree_size, good.new_certificates), (2, 2));
    let before = index.verified_sth(&good.log_id).unwrap().unwrap();
    let certs_before = index.certificates().unwrap();

    let err = sync(&index, ct_url(&b), &spki, &chain, false).await.unwrap_err();
    assert!(matches!(err, AuditError::Log(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("inconsistent tree heads"), "{msg}");
    assert!(msg.contains("forked"), "{msg}");

    // Nothing of B was stored: the index is still at A's tree head.
    assert_eq!(index.verified_sth(&good.log_id).unwrap().unwrap(), before);
    assert_eq!(index.logs().unwrap(), std::slice::from_ref(&before));
    assert_eq!(index.certificates().unwrap(), certs_before);
    // And A's log still syncs on top of it.
    let again = sync(&index, ct_url(&a), &spki, &chain, false).await.unwrap();
    assert_eq!((again.previous_size, again.new_entries), (2, 0));
}

#[tokio::test]
async fn a_certificate_signed_with_the_ca_key_outside_the_service_is_unrecorded() {
    let idp = TestIssuer::start("/idp").await;
    let ks = Keyless::builder(&config(&idp)).start();
    let spki = log_spki(&ks);
    let chain = ca_chain(&ks);
    let legit = issue(&idp, &ks, "legit@example.com").await;

    // Someone with the CA key file signs a code-signing leaf with openssl and logs it directly.
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(w.join("issuing.pem"), keyless_tests::pem("CERTIFICATE", &chain[0])).unwrap();
    std::fs::write(
        w.join("ext.cnf"),
        "subjectAltName=email:rogue@example.com\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:https://rogue-idp.example\n",
    )
    .unwrap();
    let ca_key = ks.dir.path().join("data/ca/ca-key.pem");
    openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "rogue.key",
            "-subj",
            "/CN=rogue",
            "-out",
            "rogue.csr",
        ],
        w,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "rogue.csr",
            "-CA",
            "issuing.pem",
            "-CAkey",
            ca_key.to_str().unwrap(),
            "-set_serial",
            "0x5eed1234abcd",
            "-days",
            "1",
            "-sha256",
            "-extfile",
            "ext.cnf",
            "-outform",
            "DER",
            "-out",
            "rogue.der",
        ],
        w,
    );
    let rogue = std::fs::read(w.join("rogue.der")).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/ct/v1/add-chain", ct_url(&ks)))
        .json(&json!({"chain": [STANDARD.encode(&rogue), STANDARD.encode(&chain[0]), STANDARD.encode(&chain[1])]}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert!(
        status.is_success(),
        "add-chain: {status}: {}",
        resp.text().await.unwrap()
    );
    let rogue_sct: serde_json::Value = resp.json().await.unwrap();

    sth_at_least(&ks, &spki, 2, Duration::from_secs(20)).await;
    let audit = tempfile::tempdir().unwrap();
    let index = LogIndex::open(audit.path()).unwrap();
    let report = sync(&index, ct_url(&ks), &spki, &chain, false).await.unwrap();
    assert_eq!((report.tree_size, report.new_certificates), (2, 2));

    let records = keyless_audit::store::read_records(&ks.dir.path().join("data/audit")).unwrap();
    let issued: Vec<_> = records.iter().filter_map(|r| r.certificate.as_ref()).collect();
    assert_eq!(issued.len(), 1, "the service recorded only what it issued");
    assert_eq!(issued[0].serial, serial_of(&legit[0]));
    assert_eq!(records.len(), 2, "its intent and its issuance");
    let cc = cross_check(&records, &index).unwrap();
    assert!(!cc.ok());
    assert_eq!((cc.records_checked, cc.log_certificates_checked), (1, 2));
    assert!(cc.missing_from_log.is_empty(), "{:?}", cc.missing_from_log);
    assert_eq!(cc.unrecorded.len(), 1, "{:?}", cc.unrecorded);
    let u = &cc.unrecorded[0];
    assert_eq!(u.entry_type, "x509");
    assert_eq!(u.serial, "5eed1234abcd");
    assert_eq!(u.san, "email:rogue@example.com");
    assert_eq!(u.issuer, "https://rogue-idp.example");
    assert_eq!(u.leaf_index, 1);
    assert_eq!(u.timestamp, rogue_sct["timestamp"].as_u64().unwrap());
    assert_eq!(u.tbs_sha256, tbs_sha256_of_certificate(&rogue).unwrap());
    let lines = cc.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("5eed1234abcd") && lines[0].contains("email:rogue@example.com"),
        "{lines:?}"
    );
    assert!(lines[0].contains("not in the issuance record"), "{lines:?}");

    // The same finding through the command line, loudly, with exit status 1 for cron and CI.
    std::fs::write(ks.dir.path().join("log.pem"), keyless_tests::pem("PUBLIC KEY", &spki)).unwrap();
    let cli = |args: &[&str]| {
        let mut all = vec!["audit"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", "keyless.yaml"]);
        keyless_tests::run_keyless(&all, ks.dir.path(), &[])
    };
    let synced = cli(&["sync", "--log", ct_url(&ks), "--log-key", "log.pem", "--quiet"]);
    assert!(synced.status.success(), "{}", String::from_utf8_lossy(&synced.stderr));
    let checked = cli(&["cross-check"]);
    let out = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(checked.status.code(), Some(1), "{out}");
    assert!(
        out.contains("5eed1234abcd") && out.contains("not in the issuance record"),
        "{out}"
    );

    // Recorded, it is no longer a finding.
    let mut with_rogue = records.clone();
    with_rogue.push(record(1, &rogue, None));
    assert!(cross_check(&with_rogue, &index).unwrap().ok());
}

#[tokio::test]
async fn a_recorded_certificate_the_log_does_not_hold_is_missing() {
    let idp = TestIssuer::start("/idp").await;
    let a = Keyless::builder(&config(&idp)).start();
    let b = Keyless::builder(&config(&idp)).start(); // another CA, another log
    let (spki_a, spki_b) = (log_spki(&a), log_spki(&b));
    assert_ne!(spki_a, spki_b);
    let on_a = issue(&idp, &a, "a@example.com").await;
    let on_b: Vec<_> = [
        issue(&idp, &b, "b0@example.com").await,
        issue(&idp, &b, "b1@example.com").await,
    ]
    .into();
    let sth_a = sth_at_least(&a, &spki_a, 1, Duration::from_secs(20)).await;

    let audit = tempfile::tempdir().unwrap();
    let index = LogIndex::open(audit.path()).unwrap();
    sync(&index, ct_url(&a), &spki_a, &ca_chain(&a), false).await.unwrap();
    let synced = index.verified_sth(&hex(&log_id(&spki_a))).unwrap().unwrap();
    assert!(synced.timestamp >= sth_a.timestamp);

    let id_a = log_id(&spki_a);
    let records = vec![
        record(0, &on_a[0], Some((id_a, sct_of(&on_a, &spki_a).0))),
        // Claims A's log, logged two minutes before A's verified tree head: overdue.
        record(1, &on_b[0][0], Some((id_a, synced.timestamp - 120_000))),
        // Claims A's log at (at most) its real time: too recent for the synced tree head.
        record(
            2,
            &on_b[1][0],
            Some((id_a, synced.timestamp.max(sct_of(&on_b[1], &spki_b).0))),
        ),
    ];
    let cc = cross_check(&records, &index).unwrap();
    assert!(!cc.ok());
    assert_eq!(cc.records_checked, 3);
    assert_eq!(cc.missing_from_log, [(1, serial_of(&on_b[0][0]))]);
    assert_eq!(cc.not_yet_due, 1);
    assert!(cc.unrecorded.is_empty(), "{:?}", cc.unrecorded);
    let lines = cc.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("record 1:"), "{lines:?}");
    assert!(lines[0].contains(&serial_of(&on_b[0][0])), "{lines:?}");

    // The same certificate recorded as logged to B's log, which was never synced, is not judged.
    let elsewhere = vec![records[0].clone(), record(1, &on_b[0][0], Some((log_id(&spki_b), 0)))];
    let cc = cross_check(&elsewhere, &index).unwrap();
    assert!(cc.ok() && cc.missing_from_log.is_empty(), "{:?}", cc.lines());
    assert_eq!(cc.log_not_synced, 1);
}
