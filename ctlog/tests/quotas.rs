//! Quotas for outside submitters, and the CA's priority over them.

mod common;

use std::time::{Duration, Instant};

use common::*;
use keyless_ca::ct::CtLog;
use keyless_config::{Bucket, SubmissionLimits};
use tokio::io::AsyncWriteExt;

fn bucket(rate: u32, secs: u64, burst: u32) -> Option<Bucket> {
    Some(Bucket {
        rate,
        per: Duration::from_secs(secs),
        burst,
    })
}

#[tokio::test]
async fn per_address_bucket_refuses_with_429_retry_after_and_the_limit() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    let limits = SubmissionLimits {
        per_address: bucket(1, 60, 2),
        total: None,
        queue: 16,
        ca_addresses: Vec::new(),
    };
    let base = serve(log.clone(), limits).await;
    let http = reqwest::Client::new();
    for i in 0..2 {
        let (s, _, j) = post(&http, &base, "add-chain", &pki.chain(&format!("{i}.example"), false)).await;
        assert_eq!(s, 200, "{j}");
    }
    // Refused before the body is even looked at (this one is not a valid chain).
    let (s, headers, j) = post(&http, &base, "add-chain", &[vec![1, 2, 3]]).await;
    assert_eq!(s, 429, "{j}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let msg = j["error"].as_str().unwrap();
    assert!(
        msg.contains("from this address") && msg.contains("1 per 60 s (bursts of 2)"),
        "{msg}"
    );
    // add-pre-chain draws from the same bucket.
    let (s, _, _) = post(&http, &base, "add-pre-chain", &pki.chain("p.example", true)).await;
    assert_eq!(s, 429);
    // The CA's own submissions never count.
    for i in 0..5 {
        log.add_pre_chain(&pki.chain(&format!("ca{i}.example"), true))
            .await
            .unwrap();
    }
    assert_eq!(log.size(), 7);
}

/// A log run on its own (`keyless ctlog serve`) hears the CA's replicas over HTTP: submissions
/// from `ca_addresses` are the CA's own and never limited, while a tight per-address and total
/// limit stays in force for anyone else.
#[tokio::test]
async fn the_ca_replicas_addresses_are_not_outside_submitters() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    let tight = |ca_addresses: Vec<keyless_config::AddressRange>| SubmissionLimits {
        per_address: bucket(1, 60, 1),
        total: bucket(1, 60, 1),
        queue: 1,
        ca_addresses,
    };
    let http = reqwest::Client::new();
    let replicas = serve(
        log.clone(),
        tight(vec![keyless_config::AddressRange::parse("127.0.0.0/8").unwrap()]),
    )
    .await;
    for i in 0..6 {
        let (s, _, j) = post(
            &http,
            &replicas,
            "add-pre-chain",
            &pki.chain(&format!("r{i}.example"), true),
        )
        .await;
        assert_eq!(s, 200, "{j}");
    }
    let others = serve(
        log.clone(),
        tight(vec![keyless_config::AddressRange::parse("10.0.0.0/8").unwrap()]),
    )
    .await;
    assert_eq!(
        post(&http, &others, "add-pre-chain", &pki.chain("o1.example", true))
            .await
            .0,
        200
    );
    assert_eq!(
        post(&http, &others, "add-pre-chain", &pki.chain("o2.example", true))
            .await
            .0,
        429
    );
    assert_eq!(log.size(), 7);
}

#[tokio::test]
async fn without_peer_addresses_everyone_shares_one_bucket_and_the_total_applies() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    // Served without ConnectInfo: every submitter is "unknown".
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = keyless_ctlog::http::router(
        log.clone(),
        SubmissionLimits {
            per_address: bucket(1, 60, 3),
            total: bucket(1, 60, 2),
            queue: 16,
            ca_addresses: Vec::new(),
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();
    for i in 0..2 {
        let (s, _, j) = post(&http, &base, "add-chain", &pki.chain(&format!("{i}.example"), false)).await;
        assert_eq!(s, 200, "{j}");
    }
    let (s, h, j) = post(&http, &base, "add-chain", &pki.chain("x.example", false)).await;
    assert_eq!(s, 429);
    assert!(h.contains_key("retry-after"));
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("for everyone together is 1 per 60 s (bursts of 2)"),
        "{j}"
    );
    // The total refused, so the unknown bucket was not charged: its third token is still there,
    // and the total's refusal keeps coming first.
    let (s, _, j) = post(&http, &base, "add-chain", &pki.chain("y.example", false)).await;
    assert_eq!(s, 429);
    assert!(j["error"].as_str().unwrap().contains("everyone together"), "{j}");
}

#[tokio::test]
async fn submissions_in_progress_beyond_the_queue_are_503() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    let limits = SubmissionLimits {
        per_address: None,
        total: None,
        queue: 1,
        ca_addresses: Vec::new(),
    };
    let base = serve(log.clone(), limits).await;
    // One submitter holds the only place: its body never finishes.
    let addr = base.trim_start_matches("http://");
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(
        format!("POST /ct/v1/add-chain HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"chain\"").as_bytes(),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let (s, h, j) = loop {
        let r = post(&http, &base, "add-chain", &pki.chain("q.example", false)).await;
        if r.0 == 503 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(s, 503, "{j}");
    assert_eq!(h["retry-after"], "1");
    assert!(j["error"].as_str().unwrap().contains("at most 1"), "{j}");
    // Once it gives up, the place is free again.
    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (s, _, _) = post(&http, &base, "add-chain", &pki.chain("q.example", false)).await;
        if s == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the place was not released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ca_is_not_slowed_by_outside_submitters_hammering_a_full_queue() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    let queue = 16;
    let base = serve(
        log.clone(),
        SubmissionLimits {
            per_address: None,
            total: None,
            queue,
            ca_addresses: Vec::new(),
        },
    )
    .await;
    // Distinct certificates (each a new entry), padded so outside transactions are not trivial.
    let submitters = 160;
    let per_submitter = 12;
    let certs: Vec<Vec<Vec<Vec<u8>>>> = (0..submitters)
        .map(|s| {
            (0..per_submitter)
                .map(|i| {
                    vec![
                        leaf(&pki.issuing, &format!("o{s}-{i}.example"), false, 4096),
                        pki.issuing_der(),
                    ]
                })
                .collect()
        })
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let full = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut hammer = Vec::new();
    for mine in certs {
        let (base, stop, full) = (base.clone(), stop.clone(), full.clone());
        hammer.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // A submission turned away before its body is read may see its connection reset
                // while still sending that body: that is a refusal too.
                let sent = http
                    .post(format!("{base}/ct/v1/add-chain"))
                    .json(&body(&mine[i % mine.len()]))
                    .send()
                    .await;
                match sent.map(|r| r.status().as_u16()) {
                    Ok(200) => i += 1,
                    Ok(503) | Err(_) => {
                        full.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(other) => panic!("unexpected {other}"),
                }
            }
        }));
    }
    // Wait until the queue is full (submitters are being turned away).
    let deadline = Instant::now() + Duration::from_secs(5);
    while full.load(std::sync::atomic::Ordering::Relaxed) < 10 {
        assert!(
            Instant::now() < deadline,
            "the outside queue never filled (log size {})",
            log.size()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let t = Instant::now();
        log.add_pre_chain(&pki.chain(&format!("ca{i}.example"), true))
            .await
            .unwrap();
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hammer {
        h.await.unwrap();
    }
    assert!(full.load(std::sync::atomic::Ordering::Relaxed) >= 10);
    assert!(
        worst < Duration::from_millis(500),
        "a CA submission took {worst:?} under outside load"
    );
    assert!(
        log.size() > 10 + 100,
        "the outside submitters were served too ({})",
        log.size()
    );
}
