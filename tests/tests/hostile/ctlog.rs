//! The embedded log against outside submitters, and `audit sync` against a hostile log.

use super::*;

/// The embedded log takes only what it should: a resubmitted precertificate gets its original
/// entry back, an end-entity certificate cannot act as an issuer, outside submitters are rationed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_log_deduplicates_validates_and_rations() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "ct_log: {{embedded: {{listen: \"127.0.0.1:0\", mmd: 100ms}}}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .start();
    let who = "logged@example.com";
    let chain = ks
        .sign_v2(
            &sign_body(&idp.mint(&idp.email_claims(who)), &ClientKey::p256(), who),
            None,
        )
        .await
        .chain();
    let der = |p: &str| {
        STANDARD
            .decode(p.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
            .unwrap()
    };
    let ct = ks.ct_url.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ks.ct_get("/ct/v1/get-sth").await["tree_size"] != 1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The precertificate and chain exactly as the log holds them (PrecertChainEntry).
    let entry = &ks.ct_get("/ct/v1/get-entries?start=0&end=0").await["entries"][0];
    let leaf = STANDARD.decode(entry["leaf_input"].as_str().unwrap()).unwrap();
    let timestamp = u64::from_be_bytes(leaf[2..10].try_into().unwrap());
    let extra = STANDARD.decode(entry["extra_data"].as_str().unwrap()).unwrap();
    let u24 = |b: &[u8]| ((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize;
    let n = u24(&extra);
    let mut submission = vec![STANDARD.encode(&extra[3..3 + n])];
    let mut rest = &extra[3 + n + 3..];
    while !rest.is_empty() {
        let m = u24(rest);
        submission.push(STANDARD.encode(&rest[3..3 + m]));
        rest = &rest[3 + m..];
    }
    let outsider = reqwest::Client::builder()
        .local_address(Some("127.0.0.6".parse().unwrap()))
        .build()
        .unwrap();
    let post = |path: &'static str, body: Value| {
        let (outsider, ct) = (outsider.clone(), ct.clone());
        async move {
            let r = outsider.post(format!("{ct}{path}")).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let (status, text) = post("/ct/v1/add-pre-chain", json!({"chain": submission})).await;
    assert_eq!(status, 200, "{text}");
    let sct: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(sct["timestamp"].as_u64(), Some(timestamp), "the original entry's SCT");
    // An end-entity certificate as the "issuer" of another.
    let (status, text) = post(
        "/ct/v1/add-chain",
        json!({"chain": [STANDARD.encode(der(&chain[0])), STANDARD.encode(der(&chain[0])), STANDARD.encode(der(&chain[2]))]}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("chain[1]"), "{text}");
    // One address is rationed (bursts of 20 at 10/s by default).
    let mut limited = 0;
    for _ in 0..40 {
        let (status, _) = post("/ct/v1/add-pre-chain", json!({"chain": submission})).await;
        assert!(status == 200 || status == 429, "{status}");
        limited += usize::from(status == 429);
    }
    assert!(limited >= 10, "only {limited} of 40 rapid submissions were limited");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ks.ct_get("/ct/v1/get-sth").await["tree_size"],
        1,
        "nothing new was logged"
    );
    legitimate(&ks, &idp, "meanwhile@example.com").await;
}

/// `keyless audit sync` against a log that claims 2^40 entries: refused quickly with the numbers,
/// never an unbounded download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_sync_refuses_an_implausible_log() {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .start();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key = std::sync::Arc::new(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap());
    let spki = aws_lc_rs::encoding::AsDer::as_der(key.public_key()).unwrap();
    std::fs::write(
        ks.dir.path().join("hostile.pem"),
        keyless_tests::pem("PUBLIC KEY", spki.as_ref()),
    )
    .unwrap();
    let size: u64 = 1 << 40;
    let sth = {
        let key = key.clone();
        move || {
            let ts = keyless_tests::now() * 1000;
            let root = [7u8; 32];
            let mut signed = vec![0u8, 1];
            signed.extend_from_slice(&ts.to_be_bytes());
            signed.extend_from_slice(&size.to_be_bytes());
            signed.extend_from_slice(&root);
            let sig = key.sign(&aws_lc_rs::rand::SystemRandom::new(), &signed).unwrap();
            let mut ds = vec![4u8, 3];
            ds.extend_from_slice(&(sig.as_ref().len() as u16).to_be_bytes());
            ds.extend_from_slice(sig.as_ref());
            json!({"tree_size": size, "timestamp": ts, "sha256_root_hash": STANDARD.encode(root),
                   "tree_head_signature": STANDARD.encode(ds)})
        }
    };
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = requests.clone();
    let app = axum::Router::new()
        .route("/ct/v1/get-sth", axum::routing::get(move || async move { axum::Json(sth()) }))
        .fallback(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Whatever is asked, one well-formed entry logged an hour ago: 2^40 entries in an hour.
            let mut leaf = vec![0u8, 0];
            leaf.extend_from_slice(&((keyless_tests::now() - 3600) * 1000).to_be_bytes());
            leaf.extend_from_slice(&[0, 0, 0, 0, 3, 1, 2, 3, 0, 0]);
            async move {
                axum::Json(json!({"entries": [{"leaf_input": STANDARD.encode(leaf), "extra_data": STANDARD.encode([0u8, 0, 0])}]}))
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let start = Instant::now();
    let out = tokio::task::spawn_blocking({
        let dir = ks.dir.path().to_path_buf();
        move || {
            keyless_tests::run_keyless(
                &[
                    "audit",
                    "sync",
                    "--config",
                    "keyless.yaml",
                    "--log",
                    &url,
                    "--log-key",
                    "hostile.pem",
                    "--quiet",
                ],
                &dir,
                &[],
            )
        }
    })
    .await
    .unwrap();
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1099511627776"),
        "the refusal names the claimed size: {err}"
    );
    assert!(
        requests.load(std::sync::atomic::Ordering::SeqCst) <= 2,
        "at most a look at entry 0"
    );
}
