//! Running the CA in production: metrics, request ids and logs, readiness, rate limits, overload,
//! timeouts, header limits, CORS and TLS, all against the built binary.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_tests::{
    Backend, ClientKey, HSM_PIN, HangingServer, Keyless, TestIssuer, TestTls, openssl, throwaway_log_key,
};
use serde_json::{Value, json};

fn sign_body(token: &str, key: &ClientKey, name: &str) -> Value {
    json!({"credentials": {"oidcIdentityToken": token}, "publicKeyRequest": key.public_key_request(name)})
}

/// `name{labels} value` lines of a Prometheus exposition, keyed by `name{labels}`.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn sample(all: &HashMap<String, f64>, key: &str) -> f64 {
    *all.get(key)
        .unwrap_or_else(|| panic!("no sample {key}; have:\n{:#?}", all.keys().collect::<Vec<_>>()))
}

#[tokio::test]
async fn metrics_count_exactly_the_mix_of_requests() {
    let email = TestIssuer::start("/email").await;
    let github = TestIssuer::start("/gh").await;
    let ks = Keyless::builder(&format!(
        "metrics_listen: 127.0.0.1:0\nct_log: {{embedded: {{listen: \"127.0.0.1:0\", mmd: 200ms}}}}\n\
         rate_limits: {{per_identity: {{rate: 1/min, burst: 2}}}}\n\
         issuers:\n  - {{url: \"{}\", type: email}}\n  - {{url: \"{}\", type: github-workflow}}\n",
        email.url, github.url
    ))
    .start();
    let ok = |r: &keyless_tests::Reply| assert_eq!(r.status, 200, "{}", r.body);
    // Four certificates: alice twice, bob, one workflow.
    for who in ["alice@example.com", "alice@example.com", "bob@example.com"] {
        let key = ClientKey::p256();
        ok(&ks
            .sign_v2(&sign_body(&email.mint(&email.email_claims(who)), &key, who), None)
            .await);
    }
    let gh_token = github.mint(&github.github_claims());
    let sub = github.github_claims()["sub"].as_str().unwrap().to_string();
    ok(&ks.sign_v2(&sign_body(&gh_token, &ClientKey::p256(), &sub), None).await);
    // One over alice's burst: rate_limit.
    let alice = email.mint(&email.email_claims("alice@example.com"));
    let r = ks
        .sign_v2(&sign_body(&alice, &ClientKey::p256(), "alice@example.com"), None)
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    // Two token refusals (wrong audience, expired), one bad proof, one bad key, one bad body.
    for (claim, value) in [("aud", json!("other")), ("exp", json!(keyless_tests::now() - 3600))] {
        let mut c = email.email_claims("carol@example.com");
        c[claim] = value;
        let body = sign_body(&email.mint(&c), &ClientKey::p256(), "carol@example.com");
        assert_eq!(ks.sign_v2(&body, None).await.status, 400, "{claim}");
    }
    let dave = email.mint(&email.email_claims("dave@example.com"));
    assert_eq!(
        ks.sign_v2(&sign_body(&dave, &ClientKey::p256(), "mallory@example.com"), None)
            .await
            .status,
        400
    );
    let erin = email.mint(&email.email_claims("erin@example.com"));
    let garbage_key = json!({"credentials": {"oidcIdentityToken": erin},
        "publicKeyRequest": {"publicKey": {"content": "not a key"}, "proofOfPossession": "AAAA"}});
    assert_eq!(ks.sign_v2(&garbage_key, None).await.status, 400);
    assert_eq!(ks.post("/api/v2/signingCert", "{not json", None).await.status, 400);

    tokio::time::sleep(Duration::from_millis(1500)).await; // the log gauges refresh every second
    let m = samples(&ks.metrics().await);
    let issued = |kind: &str, url: &str| {
        sample(
            &m,
            &format!("keyless_certificates_issued_total{{issuer_kind=\"{kind}\",issuer=\"{url}\"}}"),
        )
    };
    assert_eq!(issued("email", &email.url), 3.0);
    assert_eq!(issued("github-workflow", &github.url), 1.0);
    for (class, n) in [
        ("rate_limit", 1.0),
        ("token", 2.0),
        ("pop", 1.0),
        ("key", 1.0),
        ("request", 1.0),
    ] {
        assert_eq!(
            sample(&m, &format!("keyless_rejections_total{{class=\"{class}\"}}")),
            n,
            "{class}"
        );
    }
    assert_eq!(
        m.keys().filter(|k| k.starts_with("keyless_rejections_total")).count(),
        5,
        "no other rejection class"
    );
    assert_eq!(
        sample(
            &m,
            "keyless_http_request_duration_seconds_count{route=\"/api/v2/signingCert\"}"
        ),
        10.0
    );
    assert_eq!(sample(&m, "keyless_ct_submission_duration_seconds_count"), 4.0);
    assert!(!m.contains_key("keyless_ct_submission_errors_total"));
    // The start-up self-test, then a precertificate and a final certificate per issuance.
    assert_eq!(sample(&m, "keyless_signer_duration_seconds_count"), 9.0);
    assert_eq!(sample(&m, "keyless_ctlog_tree_size"), 4.0);
    assert!(sample(&m, "keyless_ctlog_sth_age_seconds") < 60.0);
    for url in [&email.url, &github.url] {
        assert_eq!(
            sample(
                &m,
                &format!("keyless_jwks_fetches_total{{issuer=\"{url}\",reason=\"first\",outcome=\"ok\"}}")
            ),
            1.0
        );
    }
    assert!(m.keys().any(|k| k.starts_with("keyless_build_info{version=")));
    assert!(m.keys().any(|k| k.starts_with("keyless_config_info{hash=")));
    // Labels never carry subjects.
    let text = ks.metrics().await;
    assert!(!text.contains("alice") && !text.contains("octo-org"), "{text}");
}

/// Fulcio's series, as `pkg/server/metrics.go` defines them, next to `keyless_*`: dashboards
/// and alerts written for Fulcio keep working (names, labels, types, buckets).
#[tokio::test]
async fn fulcio_metric_names_count_the_same_events() {
    let email = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "metrics_listen: 127.0.0.1:0\nct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        email.url
    ))
    .start();
    let before = ks.metrics().await;
    // Registered from the start, as Fulcio does, with its type and help.
    assert!(before.contains("# TYPE fulcio_new_certs counter\n"), "{before}");
    assert!(before.contains("# HELP fulcio_new_certs The total number of certificates generated\n"));
    assert_eq!(sample(&samples(&before), "fulcio_new_certs"), 0.0);
    let build = before
        .lines()
        .find(|l| l.starts_with("fulcio_build_info{"))
        .unwrap_or_else(|| panic!("{before}"));
    assert!(
        build.starts_with("fulcio_build_info{build_date=\"")
            && build.contains("\",goversion=\"rustc")
            && build.contains("\",revision=\"")
            && build.ends_with(&format!(",version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    let b = samples(&before);
    let count = |m: &HashMap<String, f64>, name: &str, code: &str, method: &str| {
        m.get(&format!("{name}{{code=\"{code}\",method=\"{method}\"}}"))
            .copied()
            .unwrap_or(0.0)
    };

    // v2 (200) and v1 (201) issuance, a configuration read, a 404, a refusal (400), and a method
    // the Prometheus client calls unknown (refused as grpc-gateway does, 501).
    let key = ClientKey::p256();
    let who = "alice@example.com";
    let token = email.mint(&email.email_claims(who));
    assert_eq!(ks.sign_v2(&sign_body(&token, &key, who), None).await.status, 200);
    let v1 = json!({"publicKey": {"content": STANDARD.encode(key.spki_der()), "algorithm": "ecdsa"},
                    "signedEmailAddress": STANDARD.encode(key.sign(who.as_bytes()))});
    let r = ks
        .post("/api/v1/signingCert", serde_json::to_vec(&v1).unwrap(), Some(&token))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(ks.get("/api/v2/configuration").await.status, 200);
    assert_eq!(ks.get("/no/such/path").await.status, 404);
    assert_eq!(ks.post("/api/v2/signingCert", "{not json", None).await.status, 400);
    let brew = reqwest::Client::new()
        .request(
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            format!("{}/api/v2/configuration", ks.url),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(brew.status(), 501);

    let text = ks.metrics().await;
    let a = samples(&text);
    assert_eq!(sample(&a, "fulcio_new_certs"), 2.0);
    assert_eq!(
        sample(&a, "fulcio_new_certs"),
        a.iter()
            .filter(|(k, _)| k.starts_with("keyless_certificates_issued_total"))
            .map(|(_, v)| v)
            .sum::<f64>(),
        "the same events as keyless_certificates_issued_total"
    );
    for (code, method, n) in [
        ("200", "post", 1.0),
        ("201", "post", 1.0),
        ("200", "get", 1.0),
        ("404", "get", 1.0),
        ("400", "post", 1.0),
        ("501", "unknown", 1.0),
    ] {
        let delta = |name: &str| count(&a, name, code, method) - count(&b, name, code, method);
        assert_eq!(delta("http_requests_total"), n, "http_requests_total {code} {method}");
        assert_eq!(
            delta("fulcio_api_latency_count"),
            n,
            "fulcio_api_latency {code} {method}"
        );
    }
    assert!(text.contains("# TYPE http_requests_total counter\n"), "{text}");
    assert!(text.contains("# TYPE fulcio_api_latency histogram\n"), "{text}");
    assert!(text.contains("# HELP fulcio_api_latency API Latency on calls\n"));
    // Fulcio's CI smoke test: a histogram with a code="201",method="post" series of one sample,
    // in the Prometheus client's default buckets.
    let les: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("fulcio_api_latency_bucket{code=\"201\",method=\"post\",le=\""))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        les,
        [
            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"
        ]
    );
    assert_eq!(
        sample(
            &a,
            "fulcio_api_latency_bucket{code=\"201\",method=\"post\",le=\"+Inf\"}"
        ),
        1.0
    );
    // Fulcio's metrics server answers on any path.
    let other = ks.metrics_url.as_deref().unwrap().replace("/metrics", "/");
    let any = reqwest::get(&other).await.unwrap().text().await.unwrap();
    assert!(any.contains("fulcio_new_certs 2"), "{any}");
}

#[tokio::test]
async fn rate_limits_throttle_one_identity_not_its_neighbours() {
    let email = TestIssuer::start("/email").await;
    let github = TestIssuer::start("/gh").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nrate_limits: {{per_identity: {{rate: 60/min, burst: 3}}}}\nissuers:\n  - {{url: \"{}\", type: email}}\n  - url: \"{}\"\n    type: github-workflow\n    rate_limits: {{per_identity: off, per_issuer: {{rate: 1/h, burst: 2}}}}\n",
        email.url, github.url
    )).start();
    let sign = |who: &str| sign_body(&email.mint(&email.email_claims(who)), &ClientKey::p256(), who);
    for _ in 0..3 {
        assert_eq!(ks.sign_v2(&sign("alice@example.com"), None).await.status, 200);
    }
    // The same address, the same issuer: alice is throttled, bob is not.
    let r = ks.sign_v2(&sign("alice@example.com"), None).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(
        r.message().contains("\"alice@example.com\"") && r.message().contains(&email.url),
        "{}",
        r.message()
    );
    assert_eq!(ks.sign_v2(&sign("bob@example.com"), None).await.status, 200);
    let raw = reqwest::Client::new()
        .post(format!("{}/api/v2/signingCert", ks.url))
        .json(&sign("alice@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 429);
    let retry: u64 = raw.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "one token a second: {retry}");
    // After a second alice has a token again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(ks.sign_v2(&sign("alice@example.com"), None).await.status, 200);

    // The GitHub issuer has its own limits: no per-identity limit, two an hour for the issuer.
    let sub = github.github_claims()["sub"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let t = github.mint(&github.github_claims());
        assert_eq!(
            ks.sign_v2(&sign_body(&t, &ClientKey::p256(), &sub), None).await.status,
            200
        );
    }
    let t = github.mint(&github.github_claims());
    let r = ks.sign_v2(&sign_body(&t, &ClientKey::p256(), &sub), None).await;
    assert_eq!(r.status, 429);
    assert!(
        r.message().contains(&format!("issuer {}", github.url)),
        "{}",
        r.message()
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_fast_with_bounded_memory() {
    let idp = TestIssuer::start("/email").await;
    // A CT log that never answers: issuance requests hold their slots until the request timeout.
    let log = HangingServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    throwaway_log_key(&dir.path().join("log.pem"));
    let ks = Keyless::builder(&format!(
        "ct_log: {{url: \"{}/log\", public_key: log.pem, timeout: 20s, attempts: 1}}\n\
             limits: {{max_concurrent_requests: 4, request_timeout: 3s}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        log.url, idp.url
    ))
    .dir(dir)
    .start();
    let stalled_body = sign_body(
        &idp.mint(&idp.email_claims("stalled@example.com")),
        &ClientKey::p256(),
        "stalled@example.com",
    );
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let (url, body) = (ks.url.clone(), stalled_body.clone());
        stalled.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/api/v2/signingCert"))
                .json(&body)
                .send()
                .await
                .unwrap()
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.accepted.load(std::sync::atomic::Ordering::SeqCst) < 4 {
        assert!(Instant::now() < deadline, "the four issuances reach the CT log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib(ks.pid());

    // 100 concurrent clients, 2,000 requests: every one is refused at once, none waits.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let body = sign_body(
        &idp.mint(&idp.email_claims("load@example.com")),
        &ClientKey::p256(),
        "load@example.com",
    );
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (http, url, body) = (http.clone(), ks.url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..20 {
                let start = Instant::now();
                let r = http
                    .post(format!("{url}/api/v2/signingCert"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                seen.push((
                    r.status().as_u16(),
                    r.headers().get("retry-after").is_some(),
                    start.elapsed(),
                ));
            }
            seen
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap());
    }
    assert_eq!(results.len(), 2000);
    for (status, retry_after, took) in &results {
        assert_eq!(*status, 503);
        assert!(*retry_after, "503 carries Retry-After");
        assert!(
            *took < Duration::from_secs(2),
            "shed at once, not queued behind the 3 s timeout: {took:?}"
        );
    }
    let grown = rss_kib(ks.pid()).saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "resident memory grew by {grown} KiB while shedding");
    // Probes are never shed: the CA is alive and says so.
    assert_eq!(ks.get("/healthz").await.status, 200);

    // The stalled requests hit the request timeout and are answered 503.
    let reply = tokio::time::timeout(Duration::from_secs(10), stalled.remove(0))
        .await
        .expect("the stalled request is answered when it times out")
        .unwrap();
    assert_eq!(reply.status(), 503);
    let text = reply.text().await.unwrap();
    assert!(text.contains("did not complete within 3000 ms"), "{text}");
    for s in stalled {
        assert_eq!(s.await.unwrap().status(), 503);
    }
    // Capacity is back: a request is decided again (refused for its token, not shed).
    let r = ks
        .sign_v2(&sign_body("not-a-token", &ClientKey::p256(), "x@example.com"), None)
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let m = ks.log();
    assert!(!m.contains("panicked"), "{m}");
}

#[tokio::test]
async fn request_ids_json_logs_and_no_secrets_in_them() {
    let idp = TestIssuer::start("/email").await;
    let yaml = format!(
        "log: {{format: json}}\nct_log: {{embedded: {{listen: \"127.0.0.1:0\"}}}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    );
    let ks = Keyless::builder(&yaml).backend(Backend::softhsm()).start();
    let http = reqwest::Client::new();
    let mut secrets: Vec<String> = vec![HSM_PIN.to_string()];

    // A client-chosen request id is echoed and tags the issuance line.
    let token = idp.mint(&idp.email_claims("logs@example.com"));
    let key = ClientKey::p256();
    let body = sign_body(&token, &key, "logs@example.com");
    secrets.push(token.clone());
    secrets.push(
        body["publicKeyRequest"]["proofOfPossession"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let r = http
        .post(format!("{}/api/v2/signingCert", ks.url))
        .header("X-Request-Id", "trace-7f3a")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "trace-7f3a");
    let chain: Value = r.json().await.unwrap();
    let leaf = chain["signedCertificateEmbeddedSct"]["chain"]["certificates"][0]
        .as_str()
        .unwrap();
    let serial = keyless_tests::inspect::parse(leaf)
        .tbs_certificate()
        .serial_number()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .trim_start_matches('0') // logged as a number: no leading zeros
        .to_string();

    // A CSR request, a refused token and a v1 request; ids are generated when not sent.
    let csr = keyless_tests::p256_csr();
    secrets.push(csr.lines().nth(1).unwrap().to_string());
    let token2 = idp.mint(&idp.email_claims("csr@example.com"));
    secrets.push(token2.clone());
    let r = http
        .post(format!("{}/api/v2/signingCert", ks.url))
        .bearer_auth(&token2)
        .json(&json!({"certificateSigningRequest": STANDARD.encode(&csr)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 24);
    let mut c = idp.email_claims("bad@example.com");
    c["aud"] = json!("not-us");
    let bad = idp.mint(&c);
    secrets.push(bad.clone());
    // An unusable client id (spaces) is replaced.
    let r = http
        .post(format!("{}/api/v2/signingCert", ks.url))
        .header("X-Request-Id", "has spaces")
        .json(&sign_body(&bad, &ClientKey::p256(), "bad@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_ne!(r.headers()["x-request-id"], "has spaces");
    let v1_key = ClientKey::p256();
    let v1_proof = STANDARD.encode(v1_key.sign(b"logs@example.com"));
    secrets.push(v1_proof.clone());
    let v1 = json!({"publicKey": {"content": STANDARD.encode(v1_key.spki_der())}, "signedEmailAddress": v1_proof});
    assert_eq!(
        ks.post("/api/v1/signingCert", serde_json::to_vec(&v1).unwrap(), Some(&token))
            .await
            .status,
        201
    );

    let log = ks.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    let issued: Vec<&Value> = lines.iter().filter(|l| l["message"] == "certificate issued").collect();
    assert_eq!(issued.len(), 3, "one line per issuance");
    let first = issued
        .iter()
        .find(|l| l["request"]["request_id"] == "trace-7f3a" || l["span"]["request_id"] == "trace-7f3a")
        .unwrap_or_else(|| panic!("the issuance line carries the request id: {issued:?}"));
    assert_eq!(first["subject"], "logs@example.com");
    assert_eq!(first["issuer"], idp.url);
    assert_eq!(first["serial"], serial);
    assert_eq!(first["sct_log_id"].as_str().unwrap().len(), 64);
    assert!(first["sct_timestamp"].as_u64().unwrap() > 0);
    // Secrets never reach the log: tokens (and each token's signature alone), proofs, CSRs, the PIN.
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "the log contains a secret: {s}");
        if let Some(sig) = s.rsplit('.').next().filter(|_| s.matches('.').count() == 2) {
            assert!(!log.contains(sig), "the log contains a token signature");
        }
    }
    assert!(!log.contains("PRIVATE KEY") && !log.contains("Bearer"), "{log}");
}

#[tokio::test]
async fn readiness_reports_each_dependency() {
    let idp = TestIssuer::start("/email").await;
    let dead_issuer = "http://127.0.0.1:9/idp";
    let ks = Keyless::builder(&format!(
        "ct_log: {{embedded: {{listen: \"127.0.0.1:0\"}}}}\nissuers:\n  - {{url: \"{}\", type: email}}\n  - {{url: \"{dead_issuer}\", type: email}}\n",
        idp.url
    )).start();
    let r = ks.get("/readyz").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (v["ready"].clone(), v["signer"].clone(), v["ctLog"].clone()),
        (json!(true), json!("ok"), json!("ok"))
    );
    assert_eq!(v["issuers"][&idp.url], "keys not fetched yet");
    // One issuer works, the other is down: the CA stays ready and says which is which.
    let t = idp.mint(&idp.email_claims("ready@example.com"));
    assert_eq!(
        ks.sign_v2(&sign_body(&t, &ClientKey::p256(), "ready@example.com"), None)
            .await
            .status,
        200
    );
    let mut c = idp.email_claims("ready@example.com");
    c["iss"] = json!(dead_issuer);
    let r = ks
        .sign_v2(&sign_body(&idp.mint(&c), &ClientKey::p256(), "ready@example.com"), None)
        .await;
    assert_eq!(r.status, 503);
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the readiness cache
    let r = ks.get("/readyz").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["issuers"][&idp.url], "ok");
    // Without the health token nobody learns why (hosts, TLS errors): only that it is unavailable.
    assert_eq!(v["issuers"][dead_issuer], "unavailable", "{v}");

    // A remote CT log that does not answer makes the CA unready, with the reason; it stays alive.
    let dir = tempfile::tempdir().unwrap();
    openssl(
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "log.key"],
        dir.path(),
    );
    openssl(&["ec", "-in", "log.key", "-pubout", "-out", "log.pem"], dir.path());
    let yaml = format!(
        "health: {{token: env:KEYLESS_HEALTH_TOKEN}}\n\
             ct_log: {{url: \"http://127.0.0.1:9/log\", public_key: log.pem, timeout: 500ms, attempts: 1}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    );
    let ks = Keyless::builder(&yaml)
        .dir(dir)
        .env("KEYLESS_HEALTH_TOKEN", "probe-secret-7")
        .start();
    let r = ks.get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (v["ready"].clone(), v["ctLog"].clone()),
        (json!(false), json!("unavailable")),
        "{v}"
    );
    assert!(!r.body.contains("127.0.0.1:9"), "{}", r.body);
    assert_eq!(v["signer"], "ok");
    // With the token, the cause.
    let authorized = reqwest::Client::new()
        .get(format!("{}/readyz", ks.url))
        .bearer_auth("probe-secret-7")
        .send()
        .await
        .unwrap();
    assert_eq!(authorized.status(), 503);
    let v: Value = authorized.json().await.unwrap();
    assert!(v["ctLog"].as_str().unwrap().contains("127.0.0.1:9"), "{v}");
    let wrong = reqwest::Client::new()
        .get(format!("{}/readyz", ks.url))
        .bearer_auth("probe-secret-8")
        .send()
        .await
        .unwrap();
    assert!(
        !wrong.text().await.unwrap().contains("127.0.0.1:9"),
        "a wrong token learns nothing"
    );
    assert_eq!(ks.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn cors_header_limit_and_methods() {
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nlimits: {{max_header_bytes: 4096}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .start();
    let http = reqwest::Client::new();
    // A browser preflight for a JSON POST is allowed from any origin ...
    let r = http
        .request(reqwest::Method::OPTIONS, format!("{}/api/v2/signingCert", ks.url))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("content-type"));
    // ... but, as in Fulcio, Authorization is not among the allowed headers: the token goes in
    // the body.
    assert!(!allowed.contains("authorization"), "{allowed}");
    let r = http
        .get(format!("{}/api/v2/configuration", ks.url))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");

    // Headers over the limit: 431 with a JSON message, and the server carries on.
    let r = http
        .get(format!("{}/api/v2/configuration", ks.url))
        .header("X-Padding", "a".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let v: Value = r.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("4096"), "{v}");
    assert_eq!(ks.get("/healthz").await.status, 200);
}

fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn tls_is_served_and_a_rotated_certificate_is_picked_up() {
    let idp = TestIssuer::start("/email").await;
    let dir = tempfile::tempdir().unwrap();
    let first = TestTls::new("Keyless Test TLS CA 1");
    std::fs::write(dir.path().join("tls.crt"), &first.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &first.key_pem).unwrap();
    let ks = Keyless::builder(&format!(
        "tls: {{cert: tls.crt, key: tls.key}}\nct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .dir(dir)
    .start();
    assert!(ks.url.starts_with("https://127.0.0.1:"), "{}", ks.url);
    let old_client = https_client(&first.ca_pem);
    let r = old_client.get(format!("{}/healthz", ks.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Issuance works over TLS too.
    let t = idp.mint(&idp.email_claims("tls@example.com"));
    let r = old_client
        .post(format!("{}/api/v2/signingCert", ks.url))
        .json(&sign_body(&t, &ClientKey::p256(), "tls@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A broken pair on disk is refused; the old certificate stays in use.
    std::fs::write(ks.dir.path().join("tls.crt"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        old_client
            .get(format!("{}/healthz", ks.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(ks.log().contains("TLS certificate reload refused"));

    // Rotate: the key first, then the certificate (a moment with a mismatched pair).
    let second = TestTls::new("Keyless Test TLS CA 2");
    std::fs::write(ks.dir.path().join("tls.key"), &second.key_pem).unwrap();
    std::fs::write(ks.dir.path().join("tls.crt"), &second.cert_pem).unwrap();
    let new_client = https_client(&second.ca_pem);
    let start = Instant::now();
    loop {
        if let Ok(r) = new_client.get(format!("{}/healthz", ks.url)).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the new certificate was not picked up:\n{}",
            ks.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // New connections no longer get the old certificate.
    let fresh_old = https_client(&first.ca_pem);
    assert!(fresh_old.get(format!("{}/healthz", ks.url)).send().await.is_err());
}
