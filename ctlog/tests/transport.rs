//! How the CA reaches a remote log, against real servers on 127.0.0.1: a log behind a private TLS
//! CA (`ct_log.ca_cert`), the `Host` a static-ct log routes on (`ct_log.origin`), and plain http.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyless_config::RemoteCtLog;
use keyless_ctlog::RemoteLog;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A log answering every request with a tree head of size 7; records each request's `Host`.
struct FakeLog {
    url: String,
    hosts: Arc<Mutex<Vec<String>>>,
}

async fn answer(mut s: impl AsyncRead + AsyncWrite + Unpin, hosts: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let host = text
        .lines()
        .find_map(|l| l.strip_prefix("host: ").or_else(|| l.strip_prefix("Host: ")))
        .unwrap_or_default()
        .to_string();
    hosts.lock().unwrap().push(host);
    let body = r#"{"tree_size":7}"#;
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(reply.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// Plain http, or https with a certificate for 127.0.0.1 from a fresh CA (returned as PEM).
async fn fake_log(tls: bool) -> (FakeLog, Option<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let (acceptor, ca_pem) = if tls {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        (Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))), Some(ca.pem()))
    } else {
        (None, None)
    };
    let h = hosts.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (h, acceptor) = (h.clone(), acceptor.clone());
            tokio::spawn(async move {
                match acceptor {
                    None => answer(tcp, h).await,
                    Some(a) => {
                        if let Ok(s) = a.accept(tcp).await {
                            answer(s, h).await;
                        }
                    }
                }
            });
        }
    });
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://{addr}/log");
    (FakeLog { url, hosts }, ca_pem)
}

fn config(url: &str) -> RemoteCtLog {
    RemoteCtLog {
        url: url.to_string(),
        public_key: "unused.pem".into(),
        timeout: Duration::from_secs(5),
        attempts: 1,
        ca_cert_pem: None,
        origin: None,
    }
}

#[tokio::test]
async fn a_log_behind_a_private_ca_is_trusted_only_with_its_bundle() {
    let (log, ca_pem) = fake_log(true).await;
    let without = RemoteLog::from_config(&config(&log.url)).unwrap();
    let e = without.probe().await.unwrap_err();
    assert!(e.contains("get-sth"), "{e}");
    let mut c = config(&log.url);
    c.ca_cert_pem = ca_pem;
    let with = RemoteLog::from_config(&c).unwrap();
    assert_eq!(with.probe().await.unwrap(), 7);
    let mut c = config(&log.url);
    c.ca_cert_pem = Some("not a bundle".into());
    // No certificate in it: nothing extra is trusted.
    assert!(RemoteLog::from_config(&c).unwrap().probe().await.is_err());
}

#[tokio::test]
async fn the_origin_is_sent_as_the_host_over_http_and_https() {
    for tls in [false, true] {
        let (log, ca_pem) = fake_log(tls).await;
        let port = log
            .url
            .rsplit(':')
            .next()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let mut c = config(&log.url);
        c.ca_cert_pem = ca_pem;
        RemoteLog::from_config(&c).unwrap().probe().await.unwrap();
        c.origin = Some("tesseract".into());
        RemoteLog::from_config(&c).unwrap().probe().await.unwrap();
        assert_eq!(
            *log.hosts.lock().unwrap(),
            [format!("127.0.0.1:{port}"), "tesseract".to_string()],
            "tls: {tls}"
        );
    }
}
