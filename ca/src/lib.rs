//! The Keyless CA issuance core.
//!
//! This crate decides *whether* and *what* to issue; it never does I/O. It owns:
//! - [`token`]: structural JWT checks and signature/claim verification against keys in hand,
//!   producing a [`VerifiedToken`];
//! - [`identity`]: one module per issuer kind, mapping a verified token to a [`Principal`];
//! - [`policy`]: per-issuer allow/deny rules over claims;
//! - [`possession`]: proof of possession and the key policy, producing a [`ProvenKey`];
//! - [`profile`]: the leaf certificate profile as one table of Sigstore extensions;
//! - [`pipeline`]: the [`CertificateAuthority`] that checks its chain and signer at start-up and
//!   issues verified leaves;
//! - [`ct`]: SCTs, what a CT log signs, the TLS encodings both use, and the [`ct::CtLog`] trait log
//!   adapters implement (the rest of RFC 6962 lives in `keyless-ctlog`'s `wire` module);
//! - [`serial`]: the [`Serial`] type and its one text form, shared with the issuance record;
//! - [`signer`]: the [`Signer`] trait that key backends (file, PKCS#11) implement elsewhere;
//! - [`ceremony`]: root and intermediate certificates for `keyless ca init`.
//!
//! It must never depend on an HTTP, PKCS#11 or network crate.

#![forbid(unsafe_code)]

pub mod ceremony;
mod cert;
pub mod ct;
pub mod der;
mod error;
pub mod identity;
pub mod keys;
pub mod pipeline;
pub mod policy;
pub mod possession;
pub mod profile;
pub mod serial;
pub mod signer;
pub mod token;

pub use crate::error::{Class, Error};
pub use crate::identity::{Principal, San};
pub use crate::pipeline::{CertificateAuthority, Issued, Prepared};
pub use crate::possession::{KeyRequest, ProvenKey};
pub use crate::serial::Serial;
pub use crate::signer::{KeySpec, SignError, SignatureAlgorithm, Signer, SoftwareSigner};
pub use crate::token::{IssuerKeys, UnverifiedToken, VerifiedToken};
