//! Certificate Transparency for Keyless CA.
//!
//! - [`EmbeddedLog`]: an RFC 6962 log in the CA's own process. Entries are stored in SQLite (WAL,
//!   `synchronous=FULL`) by one writer thread that commits concurrent submissions together (group
//!   commit): an SCT is signed only after its entry is durable, and durability costs one fsync per
//!   batch rather than per certificate. Signed tree heads are published within the maximum merge
//!   delay. The log signs with its own P-256 key, never the CA's. Chains are validated as CA
//!   paths, identical submissions are deduplicated, and the CA's own submissions go ahead of
//!   outside ones (limits in the `log` module docs, re-exported as constants here).
//! - [`http::router`]: the RFC 6962 `/ct/v1/*` endpoints over any [`EmbeddedLog`], with quotas
//!   for outside submitters and bounded reads (see its module docs).
//! - [`RemoteLog`]: an `add-pre-chain` client for external logs (Trillian CTFE, TesseraCT,
//!   Sunlight), with bounded time, retries and answer size.
//!
//! Both log kinds implement the core's [`keyless_ca::ct::CtLog`].

#![forbid(unsafe_code)]

pub mod http;
mod log;
pub mod merkle;
mod remote;
mod store;
pub mod tls;

pub use crate::log::{
    EmbeddedLog, LogOptions, MAX_BATCH, MAX_CHAIN, MAX_CHAIN_BYTES, MAX_OUTSIDE_BYTES_PER_BATCH, MAX_OUTSIDE_PER_BATCH,
    MAX_OUTSIDE_QUEUED, SignedTreeHead, Submitted, load_or_create_key, log_public_key,
};
pub use crate::remote::{MAX_ERROR_BYTES, MAX_RESPONSE_BYTES, RemoteLog};

/// A log failure. `Client` errors are the submitter's fault (bad chain); the rest are the log's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The submitted chain or query is unacceptable.
    #[error("{0}")]
    Client(String),
    /// Storage failed; nothing was promised.
    #[error("log storage: {0}")]
    Storage(String),
    /// The log could not be opened or is inconsistent.
    #[error("log setup: {0}")]
    Setup(String),
    /// The log did not answer in time or is shutting down.
    #[error("log unavailable: {0}")]
    Unavailable(String),
}
