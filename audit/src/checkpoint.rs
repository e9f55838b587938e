//! Checkpoints: the audit key's signature over `(size, head, time)` of the record's hash chain,
//! written with every commit, checked by `verify`, and exported as an anchor kept outside the
//! record. The writer ([`crate::store`]) and the verifier ([`crate::verify`]) both build on this
//! module, and neither on the other's internals.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use keyless_ca::SignatureAlgorithm;
use keyless_ca::keys::{Hash, PublicKey};
use rusqlite::{Connection, OptionalExtension};

use crate::AuditError;
use crate::files::db_path;
use crate::hex::{hex, unhex32};

/// The checkpoint signature's domain separator.
const CHECKPOINT_DOMAIN: &[u8] = b"keyless-audit-checkpoint-v1\n";

/// The audit key's algorithm: checkpoints are ECDSA P-256 with SHA-256.
pub const CHECKPOINT_ALGORITHM: SignatureAlgorithm = SignatureAlgorithm::EcdsaP256Sha256;

/// The bytes a checkpoint signature covers.
pub fn checkpoint_signed_data(size: u64, head: &[u8; 32], time_ms: u64) -> Vec<u8> {
    let mut out = CHECKPOINT_DOMAIN.to_vec();
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(&time_ms.to_be_bytes());
    out
}

fn storage(e: impl std::fmt::Display) -> AuditError {
    AuditError::Storage(e.to_string())
}

/// A signed checkpoint as exported for anchoring: `{size, head, time_ms, signature, key_sha256}`
/// (hex head, base64 signature, hex SHA-256 of the audit key's DER SPKI).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Records covered.
    pub size: u64,
    /// The chain hash of record `size - 1` (32 zero bytes for an empty record), hex.
    pub head: String,
    /// When it was signed, ms since the epoch.
    pub time_ms: u64,
    /// The audit key's signature over [`checkpoint_signed_data`], base64.
    pub signature: String,
    /// Which key signed it: hex SHA-256 of the audit public key (DER SPKI).
    pub key_sha256: String,
}

impl Checkpoint {
    pub(crate) fn new(size: u64, head: &[u8; 32], time_ms: u64, signature: &[u8], key_spki: &[u8]) -> Checkpoint {
        Checkpoint {
            size,
            head: hex(head),
            time_ms,
            signature: base64::engine::general_purpose::STANDARD.encode(signature),
            key_sha256: hex(&keyless_ca::keys::sha256(key_spki)),
        }
    }

    /// Reads a checkpoint file (the anchor, or a witness's copy of it).
    pub fn read(path: &Path) -> Result<Checkpoint, AuditError> {
        let text = std::fs::read(path).map_err(|e| AuditError::Setup(format!("checkpoint {}: {e}", path.display())))?;
        serde_json::from_slice(&text).map_err(|e| {
            AuditError::Setup(format!(
                "checkpoint {}: not a checkpoint ({{size, head, time_ms, signature, key_sha256}}): {e}",
                path.display()
            ))
        })
    }

    /// Checks that the audit key `audit_key_spki` signed this checkpoint; returns its head.
    pub fn verify(&self, audit_key_spki: &[u8]) -> Result<[u8; 32], AuditError> {
        let key_sha256 = hex(&keyless_ca::keys::sha256(audit_key_spki));
        if !self.key_sha256.eq_ignore_ascii_case(&key_sha256) {
            return Err(AuditError::Setup(format!(
                "the checkpoint of size {} was signed by audit key {}, not by the audit key in use ({key_sha256})",
                self.size, self.key_sha256
            )));
        }
        let head = unhex32(&self.head.to_ascii_lowercase()).ok_or_else(|| {
            AuditError::Setup(format!("the checkpoint of size {}: head is not a hex hash", self.size))
        })?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| AuditError::Setup(format!("the checkpoint of size {}: signature is not base64", self.size)))?;
        let key = PublicKey::from_spki_der(audit_key_spki).map_err(|e| AuditError::Setup(format!("audit key: {e}")))?;
        if !key.verify(
            Hash::Sha256,
            &checkpoint_signed_data(self.size, &head, self.time_ms),
            &signature,
        ) {
            return Err(AuditError::Setup(format!(
                "the checkpoint of size {} does not carry a valid audit key signature",
                self.size
            )));
        }
        Ok(head)
    }

    /// Writes it to `path` atomically: a temporary file beside it, flushed, then renamed.
    pub fn write_atomically(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, path)
    }
}

/// The latest signed checkpoint in the record in `dir`, if any.
pub fn latest_checkpoint(dir: &Path, audit_key_spki: &[u8]) -> Result<Option<Checkpoint>, AuditError> {
    let conn =
        Connection::open_with_flags(db_path(dir), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(storage)?;
    let row: Option<(i64, Vec<u8>, i64, Vec<u8>)> = conn
        .query_row(
            "SELECT size, head, time_ms, signature FROM checkpoints ORDER BY size DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(storage)?;
    row.map(|(size, head, time_ms, signature)| Checkpoint::from_stored(size, head, time_ms, &signature, audit_key_spki))
        .transpose()
}

impl Checkpoint {
    /// A checkpoint row as either backend stores it (size, head, time, signature).
    pub(crate) fn from_stored(
        size: i64,
        head: Vec<u8>,
        time_ms: i64,
        signature: &[u8],
        audit_key_spki: &[u8],
    ) -> Result<Checkpoint, AuditError> {
        let head: [u8; 32] = head
            .try_into()
            .map_err(|_| storage("a stored checkpoint head is not 32 bytes"))?;
        Ok(Checkpoint::new(
            size.max(0) as u64,
            &head,
            time_ms.max(0) as u64,
            signature,
            audit_key_spki,
        ))
    }
}
