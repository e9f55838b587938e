//! The log's keys and signatures: the P-256 file key (made on first start), SCTs (signed only
//! after their entry is durable, off the async workers for an HSM key) and signed tree heads
//! (published every MMD/4 when the tree grew). Every signature the key returns is verified
//! before it is published.

use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use keyless_ca::der;
use keyless_ca::{SignatureAlgorithm, Signer, SoftwareSigner};
use rusqlite::Connection;

use super::{Shared, now_ms};
use crate::LogError;
use crate::store;
use crate::wire::{DigitallySigned, SignedTreeHead};

/// The log's signing key: P-256, made on first start and kept beside the database.
/// Loads a P-256 PKCS#8 PEM key, creating it (mode 0600, never overwritten) on first use: the
/// log's key, and the audit record's checkpoint key.
pub fn load_or_create_key(path: &Path) -> Result<SoftwareSigner, LogError> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let setup = |m: String| LogError::Setup(format!("{}: {m}", path.display()));
    if !path.exists() {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
            .map_err(|_| setup("cannot generate the log key".into()))?;
        let b64 = STANDARD.encode(pkcs8.as_ref());
        let body: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            body.join("\n")
        );
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        use std::io::Write;
        let mut f = opts.open(path).map_err(|e| setup(e.to_string()))?;
        f.write_all(pem.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| setup(e.to_string()))?;
    }
    let text = std::fs::read_to_string(path).map_err(|e| setup(e.to_string()))?;
    let der = STANDARD
        .decode(text.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
        .map_err(|_| setup("not a PEM key".into()))?;
    SoftwareSigner::from_pkcs8(SignatureAlgorithm::EcdsaP256Sha256, &der)
        .map_err(|_| setup("not a P-256 PKCS#8 key".into()))
}

/// The SEC1 point of a DER SPKI.
pub(super) fn spki_point(spki: &[u8]) -> Option<Vec<u8>> {
    let (outer, _) = der::read_tlv(spki)?;
    let parts = der::read_all(outer.content)?;
    parts.get(1)?.content.get(1..).map(<[u8]>::to_vec)
}

/// The public key of the log stored in `dir`, creating the key if needed (for `trusted-root`).
pub fn log_public_key(dir: &Path) -> Result<Vec<u8>, LogError> {
    std::fs::create_dir_all(dir).map_err(|e| LogError::Setup(format!("{}: {e}", dir.display())))?;
    Ok(load_or_create_key(&dir.join("log-key.pem"))?.public_key_spki().to_vec())
}

impl Shared {
    /// Signs an SCT input (off the async workers when the key is in an HSM) and checks the
    /// signature before it becomes a promise.
    pub(super) async fn sign(self: &Arc<Self>, data: Vec<u8>, verify: bool) -> Result<Vec<u8>, LogError> {
        let shared = self.clone();
        let work = move || {
            let sig = shared
                .key
                .sign(&data)
                .map_err(|e| LogError::Unavailable(format!("SCT signing failed: {e}")))?;
            if verify {
                shared.verifier.verify_sig(&data, &sig).map_err(|_| {
                    LogError::Unavailable("the log key returned an SCT signature that does not verify".into())
                })?;
            }
            Ok(sig)
        };
        if self.key.blocking() {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(|e| LogError::Unavailable(e.to_string()))?
        } else {
            work()
        }
    }

    /// Signs and stores a new STH when the tree grew and the last one is older than MMD/4, or
    /// when `force` is set and the tree differs from the published head.
    pub(super) fn publish_if_due(&self, conn: &Connection, force: bool) -> Result<(), LogError> {
        let (size, root, last) = {
            let st = self.state.read().expect("poisoned");
            (st.frontier.size(), st.frontier.root(), st.sth.clone())
        };
        let now = now_ms();
        let fresh_enough = now.saturating_sub(last.timestamp) < (self.opts.mmd / 4).as_millis() as u64;
        let unchanged = size == last.tree_size && !last.signature.is_empty();
        if unchanged || (!force && fresh_enough) {
            return Ok(());
        }
        let timestamp = now.max(last.timestamp + 1);
        let mut sth = SignedTreeHead {
            tree_size: size,
            timestamp,
            root,
            signature: Vec::new(),
        };
        let data = sth.signed_data();
        let sig = self
            .key
            .sign(&data)
            .map_err(|e| LogError::Storage(format!("STH signing failed: {e}")))?;
        self.verifier
            .verify_sig(&data, &sig)
            .map_err(|_| LogError::Storage("the log key returned an STH signature that does not verify".into()))?;
        sth.signature = DigitallySigned::ecdsa_sha256(sig).encode();
        store::insert_sth(conn, &sth)?;
        self.state.write().expect("poisoned").sth = sth;
        Ok(())
    }
}
