//! Where the issuance record and its keys live, and the public-key files verifiers read.

use std::path::{Path, PathBuf};

use base64::Engine as _;

/// Where the record lives under a data directory.
pub fn audit_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("audit")
}

/// The record database file.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("record.sqlite")
}

/// The audit key's public half (PEM), written next to the record for verifiers (wherever the
/// private key is kept).
pub fn public_key_path(dir: &Path) -> PathBuf {
    dir.join("audit-key.pub.pem")
}

/// Where the audit (checkpoint signing) key is kept unless configured elsewhere.
pub fn default_key_path(dir: &Path) -> PathBuf {
    dir.join("audit-key.pem")
}

/// Reads a PEM (or DER) public key file as DER SPKI.
pub(crate) fn read_spki_file(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => base64::engine::general_purpose::STANDARD
            .decode(
                text.lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>()
                    .trim(),
            )
            .ok(),
        _ => Some(bytes),
    }
}

/// A DER SPKI as `PUBLIC KEY` PEM.
pub(crate) fn pem_public_key(spki: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}
