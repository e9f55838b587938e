//! The built binary under attack. Each test runs one class of hostile traffic from its own loopback
//! address (127.0.0.2 and up) while a legitimate client on 127.0.0.1 keeps asking for certificates,
//! and asserts a bounded answer, bounded time, bounded disk and log growth, nothing issued to the
//! attacker, nothing secret stored, and the legitimate client served during and after.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use keyless_tests::{ClientKey, HangingServer, Keyless, TestIssuer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn sign_body(token: &str, key: &ClientKey, name: &str) -> Value {
    json!({"credentials": {"oidcIdentityToken": token}, "publicKeyRequest": key.public_key_request(name)})
}

/// Bytes under `dir`, recursively.
fn du(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => du(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.0/8 all routes to lo).
async fn connect_from(from: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(addr).await
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Asks for one certificate as the legitimate client and returns how long it took.
async fn legitimate(ks: &Keyless, idp: &TestIssuer, who: &str) -> Duration {
    let key = ClientKey::p256();
    let start = Instant::now();
    let r = ks
        .sign_v2(&sign_body(&idp.mint(&idp.email_claims(who)), &key, who), None)
        .await;
    assert_eq!(r.status, 200, "the legitimate client was refused: {}", r.body);
    start.elapsed()
}

/// Whether the server closed `s` (EOF or reset) within `within`, reading whatever it sends first.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_and_misplaced_tokens_leave_no_trace() {
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "log: {{format: json}}\nct_log: disabled\naudit: {{export: export.jsonl}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    )).start();
    legitimate(&ks, &idp, "first@example.com").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let data = ks.dir.path().join("data");
    let (data_before, log_before) = (du(&data), ks.log().len());

    // Eight bodies just under the 4 MiB limit, each a JSON type error quoting its whole value.
    let junk = format!("{{\"credentials\": \"{}\"}}", "A".repeat((4 << 20) - 64));
    let http = reqwest::Client::new();
    for _ in 0..8 {
        let start = Instant::now();
        let r = http
            .post(format!("{}/api/v2/signingCert", ks.url))
            .header("content-type", "application/json")
            .body(junk.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let text = r.text().await.unwrap();
        assert!(text.len() < 2048, "the answer quotes the junk: {} bytes", text.len());
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    // A real token in the wrong field, and a key and proof where the token belongs.
    let token = idp.mint(&idp.email_claims("victim@example.com"));
    let key = ClientKey::p256();
    let proof = key.public_key_request("victim@example.com")["proofOfPossession"]
        .as_str()
        .unwrap()
        .to_string();
    let misplaced = [
        json!({"credentials": token}),
        json!({"credentials": {"oidcIdentityToken": [token]}}),
        json!({"publicKeyRequest": token}),
        json!({"credentials": {"oidcIdentityToken": key.spki_pem()}, "publicKeyRequest": {"proofOfPossession": 5}}),
        json!({"credentials": {"oidcIdentityToken": proof}}),
    ];
    for body in &misplaced {
        let r = ks.sign_v2(body, None).await;
        assert!(r.status == 400, "{}: {}", r.status, r.body);
        assert!(!r.body.contains(&token), "the token is echoed back");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // the record's writer commits refusals
    let grown = du(&data).saturating_sub(data_before);
    assert!(grown < 512 * 1024, "the data directory grew by {grown} bytes");
    let log = ks.log();
    let log_grown = log.len() - log_before;
    assert!(log_grown < 64 * 1024, "the log grew by {log_grown} bytes");
    let export = std::fs::read_to_string(ks.dir.path().join("export.jsonl")).unwrap();
    let signature = token.rsplit('.').next().unwrap();
    let spki_b64 = key.spki_pem().lines().nth(1).unwrap().to_string();
    for (what, text) in [("log", &log), ("export", &export)] {
        assert!(!text.contains(signature), "the {what} holds the token's signature");
        assert!(!text.contains(&token[..40]), "the {what} holds the token");
        assert!(!text.contains(&proof[..24]), "the {what} holds the proof");
        assert!(!text.contains(&spki_b64), "the {what} holds the key");
        assert!(!text.contains(&"A".repeat(100)), "the {what} holds the junk");
    }
    let rejected = export.lines().filter(|l| l.contains("\"rejected\"")).count();
    assert_eq!(rejected, 8 + misplaced.len(), "every refusal is recorded:\n{export}");
    legitimate(&ks, &idp, "after@example.com").await;
}

/// Three attacker shapes at once from 127.0.0.2: silent connections, half-sent headers, bodies
/// trickled a byte at a time. None of them may take capacity from the legitimate client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_never_starve_a_legitimate_one() {
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nlimits: {{max_concurrent_requests: 8, header_read_timeout: 2s, body_timeout: 3s, min_body_rate: 512}}\n\
         issuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    )).start();
    let addr = addr_of(&ks.url);
    let mut silent = Vec::new();
    let mut heads = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..150 {
        silent.push(connect_from("127.0.0.2", addr).await.unwrap());
        let mut h = connect_from("127.0.0.2", addr).await.unwrap();
        h.write_all(format!("POST /api/v2/signingCert HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ").as_bytes())
            .await
            .unwrap();
        heads.push(h);
        let mut b = connect_from("127.0.0.2", addr).await.unwrap();
        b.write_all(b"POST /api/v2/signingCert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{")
            .await
            .unwrap();
        bodies.push(b);
    }
    // Trickle: one byte per connection every 500 ms, below the minimum rate.
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            for b in bodies.iter_mut() {
                let _ = b.write_all(b" ").await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bodies
    });
    // 450 attacking connections, and only 8 request slots: the legitimate client still gets through.
    for i in 0..10 {
        let took = legitimate(&ks, &idp, &format!("legit{i}@example.com")).await;
        assert!(took < Duration::from_secs(2), "issuance took {took:?} under attack");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past the deadlines every attacking connection has been closed by the server.
    for s in silent.iter_mut().chain(heads.iter_mut()) {
        assert!(
            closed_within(s, Duration::from_secs(4)).await,
            "a stalled connection is still open"
        );
    }
    let mut bodies = trickle.await.unwrap();
    for b in bodies.iter_mut() {
        assert!(
            closed_within(b, Duration::from_secs(4)).await,
            "a trickling body is still open"
        );
    }
    legitimate(&ks, &idp, "after@example.com").await;
}

/// One address may not hold more than its share of connections; others are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_floods_are_capped_per_address() {
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nmetrics_listen: 127.0.0.1:0\nlimits: {{max_connections_per_address: 40}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    )).start();
    let addr = addr_of(&ks.url);
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(connect_from("127.0.0.3", addr).await.unwrap());
    }
    let mut refused = 0;
    for s in held.iter_mut() {
        if closed_within(s, Duration::from_millis(200)).await {
            refused += 1;
        }
    }
    assert_eq!(
        refused, 160,
        "40 connections admitted from one address, the rest closed at once"
    );
    legitimate(&ks, &idp, "neighbour@example.com").await;
    let metrics = ks.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l
                == "keyless_connections_refused_total{listener=\"api\",reason=\"max_connections_per_address\"} 160"),
        "{metrics}"
    );
}

/// HTTP/2 over cleartext: six connections each opening 200 streams whose bodies never arrive.
/// The server caps concurrent streams per connection, and stalled streams hold no request slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_stream_floods_are_capped() {
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nlimits: {{max_concurrent_requests: 8, max_h2_streams: 16, body_timeout: 3s}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    )).start();
    let addr = addr_of(&ks.url);
    let mut clients = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..6 {
        let tcp = connect_from("127.0.0.4", addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut client = client.ready().await.unwrap();
        for _ in 0..200 {
            let req = http::Request::post("/api/v2/signingCert")
                .header("content-length", "1000")
                .body(())
                .unwrap();
            match client.send_request(req, false) {
                Ok(stream) => streams.push(stream),
                Err(_) => break,
            }
        }
        clients.push(client);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for c in &clients {
        // The server's SETTINGS_MAX_CONCURRENT_STREAMS reached every client: the rest of its 200
        // streams wait on the client's side until a slot frees.
        assert_eq!(c.current_max_send_streams(), 16);
    }
    for i in 0..5 {
        let took = legitimate(&ks, &idp, &format!("h2legit{i}@example.com")).await;
        assert!(took < Duration::from_secs(2), "issuance took {took:?} under attack");
    }
    // The stalled streams are answered 408 once their bodies are overdue.
    let (resp, _body) = streams.remove(0);
    let resp = tokio::time::timeout(Duration::from_secs(6), resp)
        .await
        .expect("a stalled stream is answered")
        .unwrap();
    assert_eq!(resp.status(), 408);
}

/// The CT listener has the same protections: stalled heads are closed, the log keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ct_listener_closes_stalled_connections() {
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "limits: {{header_read_timeout: 1s}}\nct_log: {{embedded: {{listen: \"127.0.0.1:0\"}}}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    )).start();
    let ct = addr_of(ks.ct_url.as_deref().unwrap());
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let mut s = connect_from("127.0.0.5", ct).await.unwrap();
        s.write_all(b"GET /keyless/ct/v1/get-sth HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        stalled.push(s);
    }
    legitimate(&ks, &idp, "ct@example.com").await;
    assert!(ks.ct_get("/ct/v1/get-sth").await["tree_size"].as_u64().is_some());
    for s in stalled.iter_mut() {
        assert!(
            closed_within(s, Duration::from_secs(3)).await,
            "a stalled CT connection is still open"
        );
    }
}

/// A token naming an issuer whose IdP hangs: the first waits for one bounded fetch while other
/// issuers are served, the next is refused at once (the failure is remembered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_idp_costs_one_fetch_and_nobody_else_waits() {
    let idp = TestIssuer::start("/email").await;
    let hanging = HangingServer::start().await;
    let stuck = format!("{}/idp", hanging.url);
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n  - {{url: \"{stuck}\", type: email}}\n",
        idp.url
    ))
    .start();
    let mut claims = idp.email_claims("stuck@example.com");
    claims["iss"] = json!(stuck);
    let body = sign_body(&idp.mint(&claims), &ClientKey::p256(), "stuck@example.com");
    let first = {
        let (url, body) = (ks.url.clone(), body.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let r = reqwest::Client::new()
                .post(format!("{url}/api/v2/signingCert"))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // While the fetch hangs, the other issuer's clients are served as usual.
    for i in 0..5 {
        let took = legitimate(&ks, &idp, &format!("ok{i}@example.com")).await;
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    let (status, took) = first.await.unwrap();
    assert_eq!(status, 503);
    assert!(took < Duration::from_secs(15), "one bounded fetch: {took:?}");
    // The failure is remembered: the next token for that issuer is refused at once.
    let start = Instant::now();
    let r = ks.sign_v2(&body, None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.message().contains(&stuck), "{}", r.body);
    assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
    assert_eq!(
        hanging.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one fetch in all"
    );
}

/// A claim built to make a policy glob backtrack is matched in linear time; the CA keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glob_bomb_claim_is_matched_in_linear_time() {
    let gh = TestIssuer::start("/gh").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - url: \"{}\"\n    type: github-workflow\n    policy:\n      allow: [{{name: tags, when: {{ref: \"*a*a*a*a*b\"}}}}]\n",
        gh.url
    )).start();
    let mut claims = gh.github_claims();
    claims["ref"] = json!("a".repeat(1500));
    let body = sign_body(
        &gh.mint(&claims),
        &ClientKey::p256(),
        "repo:octo-org/octo-repo:ref:refs/heads/main",
    );
    let start = Instant::now();
    let r = ks.sign_v2(&body, None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    assert!(ks.healthy().await);
}

/// `uri` identities are parsed as Go's net/url would: a backslash in the authority is refused, not
/// read as a path under the allowed host.
#[tokio::test]
async fn uri_identities_that_go_would_refuse_are_refused() {
    let idp = TestIssuer::start("/uri").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: uri, subject_domain: \"http://127.0.0.1\"}}\n",
        idp.url
    ))
    .start();
    for sub in [
        "http://evil.example\\@127.0.0.1/x",
        "http://evil.example\\127.0.0.1/x",
        "http://user@127.0.0.1/x",
        "http://127.0.0.1/%zz",
        "http://127.0.0.1/a b",
    ] {
        let mut claims = idp.email_claims("x@example.com");
        claims["sub"] = json!(sub);
        let r = ks
            .sign_v2(&sign_body(&idp.mint(&claims), &ClientKey::p256(), sub), None)
            .await;
        assert_eq!(r.status, 400, "{sub}: {}", r.body);
        assert!(r.message().contains("\"sub\""), "{sub}: {}", r.body);
    }
    let mut claims = idp.email_claims("x@example.com");
    claims["sub"] = json!("http://127.0.0.1/team/a");
    let r = ks
        .sign_v2(
            &sign_body(&idp.mint(&claims), &ClientKey::p256(), "http://127.0.0.1/team/a"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A reload while an IdP is down keeps that issuer's cached keys: unchanged issuers keep their
/// state, and an unchanged file is not even swapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_an_idp_outage_keeps_issuing() {
    let idp = TestIssuer::start("/email").await;
    let other = TestIssuer::start("/other").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .start();
    let tokens: Vec<String> = (0..3)
        .map(|i| idp.mint(&idp.email_claims(&format!("r{i}@example.com"))))
        .collect();
    let sign = |i: usize| sign_body(&tokens[i], &ClientKey::p256(), &format!("r{i}@example.com"));
    assert_eq!(ks.sign_v2(&sign(0), None).await.status, 200);
    let fetches = idp.jwks_fetches();
    drop(idp); // the IdP goes down
    let wait_for = |needle: &'static str, n: usize| {
        let ks = &ks;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while ks.log().matches(needle).count() < n {
                assert!(Instant::now() < deadline, "no {needle:?} in:\n{}", ks.log());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    ks.signal("HUP");
    wait_for("configuration unchanged", 1).await;
    assert_eq!(ks.sign_v2(&sign(1), None).await.status, 200, "cached keys still verify");
    // A real change (another issuer added) swaps the set; the unchanged one keeps its keys.
    let path = ks.dir.path().join("keyless.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}  - {{url: \"{}\", type: email}}\n", other.url)).unwrap();
    wait_for("configuration reloaded", 1).await;
    let r = ks.sign_v2(&sign(2), None).await;
    assert_eq!(
        r.status, 200,
        "after the swap the down IdP's cached keys still verify: {}",
        r.body
    );
    assert!(fetches >= 1);
}

/// A client that sends its request and hangs up does not leave a logged precertificate without an
/// issuance record: the issuance runs to completion, and the cross-check finds nothing to report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_raise_no_false_alarm() {
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "ct_log: {{embedded: {{listen: \"127.0.0.1:0\", mmd: 100ms}}}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .start();
    let addr = addr_of(&ks.url);
    for i in 0..20 {
        let who = format!("gone{i}@example.com");
        let body = sign_body(&idp.mint(&idp.email_claims(&who)), &ClientKey::p256(), &who).to_string();
        let mut s = connect_from("127.0.0.8", addr).await.unwrap();
        s.write_all(
            format!(
                "POST /api/v2/signingCert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        // Hang up at once, or after a few milliseconds: mid-issuance either way.
        if i % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        drop(s);
    }
    legitimate(&ks, &idp, "stays@example.com").await;
    // Let every issuance finish and the log publish it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let records = keyless_audit::store::read_records(&ks.dir.path().join("data/audit")).unwrap();
    let count = |d: keyless_audit::record::Decision| records.iter().filter(|r| r.decision == d).count();
    use keyless_audit::record::Decision;
    assert_eq!(
        count(Decision::Intent),
        count(Decision::Issued) + count(Decision::Abandoned),
        "every intent has its outcome"
    );
    assert!(count(Decision::Issued) >= 1);
    let tr = ks.trusted_root();
    let spki = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        tr["ctlogs"][0]["publicKey"]["rawBytes"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(ks.dir.path().join("log.pem"), keyless_tests::pem("PUBLIC KEY", &spki)).unwrap();
    let d = ks.dir.path();
    let log_url = ks.ct_url.clone().unwrap();
    let out = keyless_tests::run_keyless(
        &[
            "audit",
            "sync",
            "--config",
            "keyless.yaml",
            "--log",
            &log_url,
            "--log-key",
            "log.pem",
            "--quiet",
        ],
        d,
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = keyless_tests::run_keyless(&["audit", "cross-check", "--config", "keyless.yaml"], d, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("record and CT logs agree"), "{text}");
}

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

/// A flood of refusals is recorded best effort: beyond the bounded queue refusals are dropped
/// (and counted), and issuance never waits behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_flood_never_slows_issuance() {
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nmetrics_listen: 127.0.0.1:0\naudit: {{refusal_queue: 16}}\nrate_limits: {{per_identity: off}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    )).start();
    let flood = {
        let url = ks.url.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let (http, url) = (http.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    for _ in 0..200 {
                        let r = http
                            .post(format!("{url}/api/v2/signingCert"))
                            .json(&json!({"credentials": {"oidcIdentityToken": "a.b.c"}}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 400);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        worst = worst.max(legitimate(&ks, &idp, &format!("busy{i}@example.com")).await);
    }
    flood.await.unwrap();
    assert!(
        worst < Duration::from_secs(1),
        "issuance took {worst:?} during the flood"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = ks.metrics().await;
    let dropped: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keyless_audit_refusals_dropped_total "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as usize;
    let records = keyless_audit::store::read_records(&ks.dir.path().join("data/audit")).unwrap();
    let issued = records.iter().filter(|r| r.certificate.is_some()).count();
    assert_eq!(issued, 20, "every issuance is recorded");
    let rejected = records.len() - issued;
    // Every refusal is accounted for: recorded, or dropped and counted.
    assert_eq!(rejected + dropped, 16 * 200, "{rejected} recorded, {dropped} dropped");
    assert!(
        ks.log().len() < 512 * 1024,
        "the log stays bounded: {} bytes",
        ks.log().len()
    );
}

/// A small filesystem mounted for the data directory; unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `size` at `at`, or says why it cannot (not root, no mount namespace).
    fn mount(at: &Path, size: &str) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(SmallDisk(at.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The data directory's disk fills up: issuance fails closed with 503 naming the record (nothing
/// is released that the record does not hold), readiness says so, and issuance resumes by itself
/// when space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_closed_and_recovers() {
    let idp = TestIssuer::start("/email").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = match SmallDisk::mount(&data, "8m") {
        Ok(d) => d,
        Err(why) => {
            // Mounting needs root (CI and this project's machines run the suite as root).
            println!("SKIPPED: cannot mount a tmpfs for the data directory: {why}");
            return;
        }
    };
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .dir(dir)
    .start();
    legitimate(&ks, &idp, "before@example.com").await;
    // Fill the disk.
    let filler = data.join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let mut refused = None;
    for i in 0..20 {
        let who = format!("full{i}@example.com");
        let r = ks
            .sign_v2(
                &sign_body(&idp.mint(&idp.email_claims(&who)), &ClientKey::p256(), &who),
                None,
            )
            .await;
        if r.status != 200 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("issuance stops once the record cannot be written");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.message().contains("issuance record is unavailable"), "{}", r.body);
    let ready = ks.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["record"], "unavailable");
    // Space returns: issuance resumes without operator action.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let who = "after@example.com";
        let r = ks
            .sign_v2(
                &sign_body(&idp.mint(&idp.email_claims(who)), &ClientKey::p256(), who),
                None,
            )
            .await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "issuance did not resume: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = ks.log();
    assert!(log.contains("issuance record"), "the outage is logged:\n{log}");
    // The record came through the outage intact.
    let out = keyless_tests::run_keyless(&["audit", "verify", "--config", "keyless.yaml"], ks.dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Detach the small disk first so the temporary directory can be removed after it.
    drop(disk);
    drop(ks);
}

/// A small deterministic generator, so a failing input can be reproduced from its index.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutations of a valid input: truncation, byte flips, splices of hostile fragments, repetition.
fn mutate(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    const FRAGMENTS: &[&[u8]] = &[
        b"\"",
        b"\\",
        b"\\u0000",
        b"{",
        b"[",
        b"]",
        b"}",
        b",",
        b":",
        b"null",
        b"1e999999",
        b"-0",
        b"\"eyJhbGciOiJub25lIn0.e30.\"",
        b"\xff\xfe",
        b"\x00",
        b"%",
        b"..",
        b"=",
        b"-----BEGIN",
        b"18446744073709551616",
        b"true",
    ];
    let mut out = valid.to_vec();
    for _ in 0..=rng.below(4) {
        if out.is_empty() {
            out.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())]);
            continue;
        }
        let at = rng.below(out.len());
        match rng.below(5) {
            0 => out.truncate(at),
            1 => out[at] ^= 1 << rng.below(8),
            2 => {
                let f = FRAGMENTS[rng.below(FRAGMENTS.len())];
                out.splice(at..at, f.iter().copied());
            }
            3 => {
                let end = (at + rng.below(64)).min(out.len());
                let piece = out[at..end].to_vec();
                for _ in 0..rng.below(200) {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            _ => {
                let open = if rng.below(2) == 0 { b'[' } else { b'{' };
                let depth = 1 + rng.below(5000);
                out.splice(at..at, std::iter::repeat_n(open, depth));
            }
        }
    }
    out
}

/// Thousands of malformed signing requests, CT submissions and configurations derived from valid
/// ones: every answer is a bounded 4xx (never a 5xx, never a certificate), quick, and the server
/// neither panics nor stops serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_inputs_get_bounded_answers() {
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "ct_log: {{embedded: {{listen: \"127.0.0.1:0\", submissions: {{per_address: off, total: off}}}}}}\n\
         rate_limits: {{per_identity: off}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .start();
    let key = ClientKey::p256();
    let who = "valid@example.com";
    let valid = sign_body(&idp.mint(&idp.email_claims(who)), &key, who).to_string();
    let csr_body = json!({"credentials": {"oidcIdentityToken": idp.mint(&idp.email_claims(who))},
                          "certificateSigningRequest": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, keyless_tests::p256_csr())})
    .to_string();
    let chain = ks.sign_v2(&serde_json::from_str(&valid).unwrap(), None).await.chain();
    let ct_valid = json!({"chain": chain.iter().map(|p| p.lines().filter(|l| !l.starts_with("-----")).collect::<String>()).collect::<Vec<_>>()}).to_string();
    let http = reqwest::Client::new();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut issued = 0;
    for i in 0..600 {
        let (url, seed) = match i % 3 {
            0 => (format!("{}/api/v2/signingCert", ks.url), &valid),
            1 => (format!("{}/api/v2/signingCert", ks.url), &csr_body),
            _ => (format!("{}/ct/v1/add-chain", ks.ct_url.as_deref().unwrap()), &ct_valid),
        };
        let body = mutate(&mut rng, seed.as_bytes());
        let start = Instant::now();
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "input {i} took {:?}",
            start.elapsed()
        );
        assert!(text.len() < 4096, "input {i}: a {}-byte answer", text.len());
        match status {
            // A mutation that left the request valid (whitespace, a flipped bit in an ignored
            // field) may issue; a CT resubmission of a valid chain is deduplicated.
            200 => issued += 1,
            400..=499 => {}
            other => panic!(
                "input {i} ({url}) got {other}: {text}\n{}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
    assert!(issued < 60, "{issued} of 600 mutated inputs were accepted");
    // Configurations, through `keyless config check`: an error with a path, never a crash.
    let config = format!(
        "listen: 127.0.0.1:0\nct_log: disabled\nlimits: {{max_connections: 100}}\nissuers:\n  - url: \"{}\"\n    type: github-workflow\n    policy:\n      allow: [{{name: tags, when: {{ref: \"refs/tags/*\"}}}}]\n",
        idp.url
    );
    for i in 0..60 {
        let text = mutate(&mut rng, config.as_bytes());
        let path = ks.dir.path().join(format!("mutated-{i}.yaml"));
        std::fs::write(&path, &text).unwrap();
        let out = keyless_tests::run_keyless(&["config", "check", path.to_str().unwrap()], ks.dir.path(), &[]);
        let code = out.status.code();
        assert!(
            matches!(code, Some(0) | Some(1)),
            "config {i} made `config check` exit with {code:?}:\n{}\n{}",
            String::from_utf8_lossy(&text),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    legitimate(&ks, &idp, "still@example.com").await;
    assert!(!ks.log().contains("panicked"), "{}", ks.log());
}
