//! The remote log client refuses oversized answers as soon as they pass the cap, whether the
//! server declares the size or streams without end.

use std::time::{Duration, Instant};

use keyless_ca::ct::CtLog;
use keyless_ctlog::{MAX_RESPONSE_BYTES, RemoteLog};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the fake log answers every request.
#[derive(Clone, Copy)]
enum Answer {
    /// `200` with a chunked body that never ends.
    Endless,
    /// `200` declaring a 10 GB body, then trickling it.
    Declared,
}

/// A real HTTP/1.1 server on loopback; returns its URL and how many body bytes it managed to send.
async fn fake_log(answer: Answer) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                // Read the request head (and the small body) before answering.
                let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
                let head = match answer {
                    Answer::Endless => {
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                            .to_string()
                    }
                    Answer::Declared => {
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
                            .to_string()
                    }
                };
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 16 * 1024];
                loop {
                    let ok = match answer {
                        Answer::Endless => {
                            let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
                            c.extend_from_slice(&chunk);
                            c.extend_from_slice(b"\r\n");
                            s.write_all(&c).await
                        }
                        Answer::Declared => s.write_all(&chunk).await,
                    };
                    if ok.is_err() {
                        return;
                    }
                    counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    (url, sent)
}

#[tokio::test]
async fn an_endless_add_pre_chain_answer_is_refused_at_the_cap() {
    let (url, sent) = fake_log(Answer::Endless).await;
    let log = RemoteLog::new(&url, Duration::from_secs(20), 3).unwrap();
    let t = Instant::now();
    let err = log.add_pre_chain(&[vec![1, 2, 3]]).await.unwrap_err();
    assert!(
        err.0.contains(&format!("larger than {MAX_RESPONSE_BYTES} bytes")),
        "{}",
        err.0
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "refused while streaming, not at the timeout"
    );
    // Not retried (an oversized answer is not transient), and the client stopped reading early:
    // the server got at most its socket buffers' worth past the cap out.
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent < 64 * 1024 * 1024, "{sent} bytes sent");
}

#[tokio::test]
async fn a_declared_oversized_answer_is_refused_before_reading() {
    let (url, _) = fake_log(Answer::Declared).await;
    let log = RemoteLog::new(&url, Duration::from_secs(20), 1).unwrap();
    let t = Instant::now();
    let err = log.add_pre_chain(&[vec![1, 2, 3]]).await.unwrap_err();
    assert!(err.0.contains("declares 10000000000 bytes"), "{}", err.0);
    let err = log.probe().await.unwrap_err();
    assert!(err.contains("declares 10000000000 bytes"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_endless_get_sth_answer_is_refused_at_the_cap() {
    let (url, _) = fake_log(Answer::Endless).await;
    let log = RemoteLog::new(&url, Duration::from_secs(20), 1).unwrap();
    let t = Instant::now();
    let err = log.probe().await.unwrap_err();
    assert!(err.contains("get-sth") && err.contains("larger than"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
}
