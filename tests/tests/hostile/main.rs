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

mod connections;
mod ctlog;
mod inputs;
mod issuers;
mod record;

pub(crate) fn sign_body(token: &str, key: &ClientKey, name: &str) -> Value {
    json!({"credentials": {"oidcIdentityToken": token}, "publicKeyRequest": key.public_key_request(name)})
}

/// Bytes under `dir`, recursively.
pub(crate) fn du(dir: &Path) -> u64 {
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
pub(crate) async fn connect_from(from: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(addr).await
}

pub(crate) fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Asks for one certificate as the legitimate client and returns how long it took.
pub(crate) async fn legitimate(ks: &Keyless, idp: &TestIssuer, who: &str) -> Duration {
    let key = ClientKey::p256();
    let start = Instant::now();
    let r = ks
        .sign_v2(&sign_body(&idp.mint(&idp.email_claims(who)), &key, who), None)
        .await;
    assert_eq!(r.status, 200, "the legitimate client was refused: {}", r.body);
    start.elapsed()
}

/// Whether the server closed `s` (EOF or reset) within `within`, reading whatever it sends first.
pub(crate) async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
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
