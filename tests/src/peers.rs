//! Peers that misbehave on purpose: a server that never answers, and a CT log key nobody holds.

use std::path::Path;
use std::sync::Arc;

use crate::pem;

/// A server on 127.0.0.1 that accepts connections, reads what arrives and never answers: an
/// IdP, CT log or peer that hangs. Its URL is `http://ADDR`; connections close when it is dropped.
pub struct HangingServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// Connections accepted so far.
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HangingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HangingServer {
    /// Starts listening.
    pub async fn start() -> HangingServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(tokio::spawn(async move {
                    use tokio::io::AsyncReadExt as _;
                    let mut buf = [0u8; 4096];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                    // Keep the socket open until the server is dropped.
                    std::future::pending::<()>().await;
                }));
            }
        });
        HangingServer { url, accepted, task }
    }
}

/// Writes the public key of a fresh P-256 key (nobody holds the private half any more) as
/// `PUBLIC KEY` PEM to `path`: a CT log key for configurations whose log never answers.
pub fn throwaway_log_key(path: &Path) {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let alg = &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).unwrap();
    std::fs::write(path, pem("PUBLIC KEY", pair.public_key().as_der().unwrap().as_ref())).unwrap();
}
