//! The one RFC 6962 client against a real HTTP server on loopback: which failures are retried,
//! how each kind of failure is reported, and that a `/ct/v1` base URL is accepted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keyless_ctlog::LogError;
use keyless_ctlog::client::{ClientOptions, LogClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server answering every request with `status` and `body`; returns its URL and a request
/// counter (and the request targets it saw).
async fn server(status: u16, body: &'static str) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let targets = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, t) = (count.clone(), targets.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let t = t.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                t.lock()
                    .unwrap()
                    .push(head.split_whitespace().nth(1).unwrap_or("").to_string());
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, count, targets)
}

fn client(url: &str) -> LogClient {
    LogClient::new(url, &ClientOptions::new(Duration::from_secs(5))).unwrap()
}

#[tokio::test]
async fn busy_logs_are_retried_and_refusals_are_not() {
    let (url, count, _) = server(503, r#"{"error":"busy"}"#).await;
    let err = client(&url).add_pre_chain(&[vec![1]], 3).await.unwrap_err();
    assert!(matches!(err, LogError::Status { status: 503, .. }), "{err}");
    assert!(err.is_transient());
    assert!(
        err.to_string().contains("HTTP 503") && err.to_string().contains("busy"),
        "{err}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 3, "every attempt was made");

    let (url, count, _) = server(400, r#"{"error":"bad chain"}"#).await;
    let err = client(&url).add_pre_chain(&[vec![1]], 3).await.unwrap_err();
    assert!(
        matches!(err, LogError::Status { status: 400, .. }) && !err.is_transient(),
        "{err}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1, "a refusal is final");

    // Nothing listens on port 9: unreachable, transient.
    let err = client("http://127.0.0.1:9").get_sth().await.unwrap_err();
    assert!(matches!(err, LogError::Unreachable(_)) && err.is_transient(), "{err}");
}

#[tokio::test]
async fn answers_that_are_not_rfc_6962_are_malformed_and_final() {
    let (url, count, targets) = server(200, r#"{"sct_version":0}"#).await;
    // A base URL given with `/ct/v1` (and a trailing slash) reaches the same endpoints.
    let log = client(&format!("{url}/log/ct/v1/"));
    assert_eq!(log.url(), format!("{url}/log"));
    let err = log.add_pre_chain(&[vec![1]], 3).await.unwrap_err();
    assert!(matches!(err, LogError::Malformed(_)) && !err.is_transient(), "{err}");
    assert!(err.to_string().contains("not the RFC 6962 answer"), "{err}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(targets.lock().unwrap()[0], "/log/ct/v1/add-pre-chain");

    let (url, _, _) = server(200, r#"{"consistency":["AAAA"]}"#).await;
    let err = client(&url).get_sth_consistency(1, 2).await.unwrap_err();
    assert!(
        err.to_string().contains("a proof node is not a base64 32-byte hash"),
        "{err}"
    );
    let (url, _, _) = server(200, r#"{"tree_size":7}"#).await;
    assert_eq!(client(&url).get_tree_size().await.unwrap(), 7);
    assert!(
        matches!(client(&url).get_sth().await, Err(LogError::Malformed(_))),
        "all four fields are needed"
    );
}
