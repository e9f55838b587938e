//! Key backends for the CA: where the issuing key lives and how it signs.
//!
//! Each backend implements [`keyless_ca::Signer`]: the key file (every format Fulcio's file CA
//! reads, decrypted with a password from a secret reference) and PKCS#11 (SoftHSM2 and hardware HSMs, through the safe `cryptoki`
//! API; the FFI stays inside that crate, so this one still forbids `unsafe`). This crate also runs
//! the key ceremony (`keyless ca init`) for the backends it owns.

#![forbid(unsafe_code)]

mod file;
mod pkcs11;

pub use crate::file::sigstore as sigstore_key;
pub use crate::file::{FileCaReport, init_file_ca, load_file_ca};
pub use crate::pkcs11::{
    CeremonyMode, CeremonyRecord, CertificateRecord, KeyRecord, Pkcs11CeremonyReport, Pkcs11Signer, TokenRecord,
    init_pkcs11_ca,
};

/// A key backend failure. Messages name files and rules, never passwords or key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key could not be decrypted or decoded.
    #[error("{path}: {reason}")]
    Key {
        /// The key file.
        path: String,
        /// Why.
        reason: String,
    },
    /// `ca init` would overwrite existing material.
    #[error("{0} already exists; refusing to overwrite CA material")]
    Exists(String),
    /// A secret reference could not be resolved.
    #[error("{0}")]
    Secret(String),
    /// The CA core refused the key or chain.
    #[error(transparent)]
    Ca(#[from] keyless_ca::Error),
}
