//! Chain validation for every submission: CA rules for everything above the leaf, poison rules,
//! and size limits, each refused with a message naming the certificate and the rule.

mod common;

use common::*;
use keyless_ca::ct::CtLog;
use rcgen::{ExtendedKeyUsagePurpose, date_time_ymd};

async fn refused(base: &str, endpoint: &str, chain: &[Vec<u8>]) -> String {
    let (status, _, json) = post(&reqwest::Client::new(), base, endpoint, chain).await;
    assert_eq!(status, 400, "{endpoint} must refuse: {json}");
    json["error"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_end_entity_certificate_cannot_act_as_an_issuer() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    let base = serve(log.clone(), unlimited()).await;
    // A leaf issued by the CA "issues" another certificate with its own key.
    let mut p = rcgen::CertificateParams::new(vec!["holder.example".into()]).unwrap();
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    let holder_key = rcgen::KeyPair::generate().unwrap();
    let holder: Ca = rcgen::CertifiedIssuer::signed_by(p, holder_key, &pki.issuing).unwrap();
    for precert in [false, true] {
        let forged = leaf(&holder, "forged.example", precert, 0);
        let chain = vec![forged, holder.der().to_vec(), pki.issuing_der(), pki.root_der()];
        let endpoint = if precert { "add-pre-chain" } else { "add-chain" };
        let msg = refused(&base, endpoint, &chain).await;
        assert!(msg.contains("chain[1] is not a CA certificate"), "{msg}");
    }
    assert_eq!(log.size(), 0);
}

#[tokio::test]
async fn intermediates_need_key_cert_sign_validity_and_path_length() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    let base = serve(log.clone(), unlimited()).await;

    // No keyUsage at all on an intermediate.
    let no_ku = sub_ca(ca_params("No KU", None, false), &pki.root);
    let msg = refused(
        &base,
        "add-chain",
        &[leaf(&no_ku, "x.example", false, 0), no_ku.der().to_vec()],
    )
    .await;
    assert!(msg.contains("chain[1] has no keyUsage"), "{msg}");

    // keyUsage without keyCertSign.
    let mut p = ca_params("Sign Only", None, false);
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let wrong_ku = sub_ca(p, &pki.root);
    let msg = refused(
        &base,
        "add-chain",
        &[leaf(&wrong_ku, "x.example", false, 0), wrong_ku.der().to_vec()],
    )
    .await;
    assert!(msg.contains("chain[1]: keyUsage does not include keyCertSign"), "{msg}");

    // Expired intermediate.
    let mut p = ca_params("Expired", None, true);
    p.not_before = date_time_ymd(2000, 1, 1);
    p.not_after = date_time_ymd(2001, 1, 1);
    let expired = sub_ca(p, &pki.root);
    let msg = refused(
        &base,
        "add-pre-chain",
        &[leaf(&expired, "x.example", true, 0), expired.der().to_vec()],
    )
    .await;
    assert!(msg.contains("chain[1] is not valid now"), "{msg}");

    // pathLenConstraint 0 on chain[2], yet chain[1] is an intermediate CA below it.
    let capped = sub_ca(ca_params("Capped", Some(0), true), &pki.root);
    let below = sub_ca(ca_params("Below", None, true), &capped);
    let chain = vec![
        leaf(&below, "x.example", false, 0),
        below.der().to_vec(),
        capped.der().to_vec(),
    ];
    let msg = refused(&base, "add-chain", &chain).await;
    assert!(msg.contains("chain[2] has pathLenConstraint 0"), "{msg}");

    // The root's own pathLenConstraint (1) counts too: two intermediates below it are too many.
    let mid = sub_ca(ca_params("Mid", None, true), &pki.root);
    let low = sub_ca(ca_params("Low", None, true), &mid);
    let chain = vec![
        leaf(&low, "x.example", false, 0),
        low.der().to_vec(),
        mid.der().to_vec(),
        pki.root_der(),
    ];
    let msg = refused(&base, "add-chain", &chain).await;
    assert!(msg.contains("chain[3] has pathLenConstraint 1"), "{msg}");
    // ... also when the submitter leaves the root out and the log appends it.
    let msg = refused(&base, "add-chain", &chain[..3]).await;
    assert!(
        msg.contains("the trusted root that issued chain[2] has pathLenConstraint 1"),
        "{msg}"
    );

    // A well-formed chain still passes, through one intermediate and with the root left out.
    let (s, _, j) = post(
        &reqwest::Client::new(),
        &base,
        "add-chain",
        &pki.chain("ok.example", false)[..2],
    )
    .await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(log.size(), 1);
}

#[tokio::test]
async fn poison_rules_and_precertificate_signing_certificates() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    let base = serve(log.clone(), unlimited()).await;
    let msg = refused(&base, "add-chain", &pki.chain("p.example", true)).await;
    assert!(msg.contains("add-chain does not accept precertificates"), "{msg}");
    let msg = refused(&base, "add-pre-chain", &pki.chain("c.example", false)).await;
    assert!(msg.contains("add-pre-chain needs a precertificate"), "{msg}");

    let mut p = ca_params("Precert Signer", None, true);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 4, 1, 11129, 2, 4, 4])];
    let signer = sub_ca(p, &pki.issuing);
    let chain = vec![
        leaf(&signer, "p.example", true, 0),
        signer.der().to_vec(),
        pki.issuing_der(),
        pki.root_der(),
    ];
    let msg = refused(&base, "add-pre-chain", &chain).await;
    assert!(msg.contains("precertificate signing certificate"), "{msg}");
    assert_eq!(log.size(), 0);
}

#[tokio::test]
async fn chain_length_and_size_are_limited() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    let base = serve(log.clone(), unlimited()).await;
    let mut long = pki.chain("l.example", false);
    while long.len() <= keyless_ctlog::MAX_CHAIN {
        long.push(pki.root_der());
    }
    let msg = refused(&base, "add-chain", &long).await;
    assert!(
        msg.contains(&format!("1 to {} certificates", keyless_ctlog::MAX_CHAIN)),
        "{msg}"
    );

    // A leaf padded past the chain byte limit (the body still fits the HTTP limit).
    let big = leaf(&pki.issuing, "big.example", false, keyless_ctlog::MAX_CHAIN_BYTES);
    let msg = refused(&base, "add-chain", &[big, pki.issuing_der()]).await;
    assert!(msg.contains("at most 131072 are accepted"), "{msg}");

    // A body past the HTTP limit is refused before it is parsed.
    let huge = vec![0u8; keyless_ctlog::http::MAX_SUBMISSION_BYTES];
    let (status, _, _) = post(&reqwest::Client::new(), &base, "add-chain", &[huge]).await;
    assert_eq!(status, 413);

    // The CA's in-process path obeys the same rules.
    let err = log.add_pre_chain(&pki.chain("c.example", false)).await.unwrap_err();
    assert!(err.0.contains("needs a precertificate"), "{}", err.0);
    assert_eq!(log.size(), 0);
}
