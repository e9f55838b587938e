//! A remote CT log: `keyless ctlog serve` runs the log on its own, a proxy in front of it misbehaves
//! on demand, and the CA (configured with the log's URL and key) must fail closed with a 503 naming
//! the log, release no certificate, and recover once the log does.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_tests::{ClientKey, Keyless, LogServer, TestIssuer, ct, pem, run_keyless};
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Forward,
    Error500,
    Hang,
    BadSct,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    mode: Arc<Mutex<Mode>>,
}

async fn add_pre_chain(State(p): State<Proxy>, body: Bytes) -> (axum::http::StatusCode, String) {
    let mode = *p.mode.lock().unwrap();
    match mode {
        Mode::Error500 => return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "backend exploded".into()),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return (axum::http::StatusCode::OK, String::new());
        }
        _ => {}
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/ct/v1/add-pre-chain", p.upstream))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let mut v: Value = resp.json().await.unwrap();
    if mode == Mode::BadSct {
        let mut sig = STANDARD.decode(v["signature"].as_str().unwrap()).unwrap();
        let n = sig.len();
        sig[n - 2] ^= 0x01;
        v["signature"] = json!(STANDARD.encode(sig));
    }
    (axum::http::StatusCode::from_u16(status).unwrap(), v.to_string())
}

#[tokio::test]
async fn remote_log_failures_fail_closed_and_recover() {
    let idp = TestIssuer::start("/idp").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("log.yaml"),
        "data_dir: ./logdata\nca:\n  file: {key: pki/key.pem, chain: pki/chain.pem}\nct_log: {embedded: {listen: \"127.0.0.1:0\", prefix: shared-log}}\n",
    )
    .unwrap();
    assert!(
        run_keyless(&["ca", "init", "--config", "log.yaml"], d, &[])
            .status
            .success()
    );

    // The log on its own, as an operator would run a shared log.
    let log = LogServer::start(d, "log.yaml");
    let (log_url, spki) = (log.url.clone(), log.spki.clone());
    assert!(log_url.ends_with("/shared-log"));

    let mode = Arc::new(Mutex::new(Mode::Forward));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/ct/v1/add-pre-chain", post(add_pre_chain))
        .with_state(Proxy {
            upstream: log_url.clone(),
            mode: mode.clone(),
        });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let yaml = format!(
        "ca:\n  file: {{key: pki/key.pem, chain: pki/chain.pem}}\nct_log: {{url: \"{proxy_url}\", public_key: log-pub.pem, timeout: 500ms, attempts: 2}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    );
    let ks = Keyless::builder(&yaml).dir(dir).start();
    assert_eq!(ks.get("/healthz").await.json()["ctLog"], proxy_url.as_str());
    let attempt = |n: usize| {
        let email = format!("remote{n}@example.com");
        let key = ClientKey::p256();
        let body = json!({"credentials": {"oidcIdentityToken": idp.mint(&idp.email_claims(&email))}, "publicKeyRequest": key.public_key_request(&email)});
        let ks = &ks;
        async move { ks.sign_v2(&body, None).await }
    };
    let der = |p: &str| {
        STANDARD
            .decode(p.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
            .unwrap()
    };

    let ok = attempt(0).await.chain();
    ct::verify_embedded_sct(&der(&ok[0]), &der(&ok[1]), &spki);

    for (i, m) in [Mode::Error500, Mode::BadSct, Mode::Hang].into_iter().enumerate() {
        *mode.lock().unwrap() = m;
        let start = Instant::now();
        let r = attempt(i + 1).await;
        assert_eq!(r.status, 503, "{m:?}: {}", r.body);
        assert_eq!(
            r.message(),
            format!("Error entering certificate in CTL: CT log {proxy_url} is unavailable; try again later")
        );
        assert!(
            !r.body.contains("exploded") && !r.body.contains("signature"),
            "causes stay in the log: {}",
            r.body
        );
        if m == Mode::Hang {
            // Two attempts of 500 ms plus backoff: bounded, far below the proxy's 30 s hang.
            assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
        }
    }
    let log = ks.log();
    assert!(log.contains("backend exploded"), "the cause is logged for operators");
    assert!(log.contains("SCT signature does not verify"));
    assert_eq!(
        log.matches("certificate issued").count(),
        1,
        "nothing was released while the log failed"
    );

    *mode.lock().unwrap() = Mode::Forward;
    let ok = attempt(9).await.chain();
    ct::verify_embedded_sct(&der(&ok[0]), &der(&ok[1]), &spki);

    // The precertificate whose SCT came back bad is in the log, but its certificate was never
    // released. The record holds its intent and why it was abandoned, so an auditor following the
    // log sees an abandoned issuance, never "the CA key signed something the service did not issue".
    let sth_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sth: Value = reqwest::get(format!("{log_url}/ct/v1/get-sth"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if sth["tree_size"].as_u64() == Some(3) {
            break;
        }
        assert!(
            Instant::now() < sth_deadline,
            "the log publishes its three entries: {sth}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = ks.dir.path();
    let out = run_keyless(
        &[
            "audit",
            "sync",
            "--config",
            "keyless.yaml",
            "--log",
            &log_url,
            "--log-key",
            "log-pub.pem",
            "--quiet",
        ],
        d,
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_keyless(&["audit", "cross-check", "--config", "keyless.yaml"], d, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "an abandoned issuance is not a finding:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 abandoned issuance(s) in the log"), "{text}");
    assert!(text.contains("abandoned (record"), "{text}");
    assert!(!text.contains("did not issue"), "{text}");
}

#[tokio::test]
async fn unreachable_remote_log_is_503() {
    let idp = TestIssuer::start("/idp").await;
    let dir = tempfile::tempdir().unwrap();
    let key = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        key.as_ref(),
    )
    .unwrap();
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair;
    let spki = pair.public_key().as_der().unwrap();
    std::fs::write(dir.path().join("log.pem"), pem("PUBLIC KEY", spki.as_ref())).unwrap();
    let yaml = format!(
        "metrics_listen: 127.0.0.1:0\nct_log: {{url: \"http://127.0.0.1:9/log\", public_key: log.pem, timeout: 1s, attempts: 2}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    );
    let ks = Keyless::builder(&yaml).dir(dir).start();
    let k = ClientKey::p256();
    let body = json!({"credentials": {"oidcIdentityToken": idp.mint(&idp.email_claims("u@example.com"))}, "publicKeyRequest": k.public_key_request("u@example.com")});
    let r = ks.sign_v2(&body, None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.message().contains("CT log http://127.0.0.1:9/log is unavailable"),
        "{}",
        r.body
    );
    assert!(ks.healthy().await);
    // The failed submission is counted and timed; the refusal is counted as a CT fault.
    let metrics = ks.metrics().await;
    for line in [
        "keyless_ct_submission_errors_total 1",
        "keyless_ct_submission_duration_seconds_count 1",
        "keyless_rejections_total{class=\"ct_log\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in:\n{metrics}");
    } // A loopback log over plain http is not warned about.
    assert!(!ks.log().contains("plain http"), "{}", ks.log());

    // Fulcio's chart reaches its log as an in-cluster plain-http service: accepted (every SCT is
    // still verified with the configured key), with a warning at start-up naming the URL.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("log.pem"), pem("PUBLIC KEY", spki.as_ref())).unwrap();
    let url = "http://ctlog.ctlog-system.svc.invalid/fulcio";
    let yaml = format!(
        "ct_log: {{url: \"{url}\", public_key: log.pem, timeout: 1s, attempts: 1}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    );
    let ks = Keyless::builder(&yaml).dir(dir).start();
    assert!(ks.healthy().await);
    let log = ks.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("plain http") && l.contains(url)),
        "{log}"
    );
}
