//! Black-box test harness for Keyless CA.
//!
//! - [`TestIssuer`]: a real OIDC issuer on loopback (discovery + JWKS over HTTP, RSA and EC keys)
//!   that mints tokens with whatever claims and headers a test wants;
//! - [`Keyless`]: the built `keyless` binary started as a subprocess on a free loopback port with a
//!   generated config, killed on drop; [`Keyless::builder`] says how (backend, directory,
//!   environment);
//! - [`ClientKey`]: client key pairs and proofs of possession;
//! - [`SoftHsm`]: throwaway SoftHSM2 tokens for the PKCS#11 backend;
//! - [`HangingServer`]: a peer that accepts and never answers;
//! - [`postgres::PgCluster`]: a throwaway PostgreSQL cluster for the shared issuance record;
//! - [`inspect`]: certificate checks with parsers independent of the CA (RustCrypto `x509-cert`
//!   and the `openssl` command); [`ct`]: an RFC 6962 checker sharing no code with the log.
//!
//! Everything is re-exported here; the modules are the harness's seams (`issuer`, `keys`,
//! `server`, `hsm`, `peers`).

pub mod clients;
pub mod ct;
pub mod inspect;
pub mod postgres;

mod hsm;
mod issuer;
mod keys;
mod peers;
mod server;

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

pub use crate::hsm::{Backend, HSM_PIN, SOFTHSM_MODULE, SoftHsm};
pub use crate::issuer::{IssuerKey, TestIssuer, TestTls, email_claims, github_claims, mint_with, raw_token};
pub use crate::keys::{ClientKey, p256_csr};
pub use crate::peers::{HangingServer, throwaway_log_key};
pub use crate::server::{Keyless, KeylessBuilder, LogServer, Reply, keyless_bin, run_keyless, run_with_timeout};

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// PEM-encodes DER with 64-column lines.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// Runs `openssl` with `args`, panicking with its stderr on failure.
pub fn openssl(args: &[&str], dir: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/test.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
