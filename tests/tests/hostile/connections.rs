//! Slow and greedy connections: silent sockets, half-sent heads, trickled bodies, floods from one
//! address, HTTP/2 stream floods, on the API and the CT listener.

use super::*;

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
