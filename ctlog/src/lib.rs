//! Certificate Transparency for Keyless CA.
//!
//! - [`EmbeddedLog`]: an RFC 6962 log in the CA's own process. Entries are stored in SQLite (WAL,
//!   `synchronous=FULL`) by one writer thread that commits concurrent submissions together (group
//!   commit): an SCT is signed only after its entry is durable, and durability costs one fsync per
//!   batch rather than per certificate. The Merkle tree's nodes are stored with the entries, in the
//!   same transaction; memory holds only the tree's frontier (O(log n) hashes), proofs are read
//!   from storage, and start-up reads O(log n) nodes. Signed tree heads are published within the
//!   maximum merge delay. The log signs with its own P-256 key, never the CA's. Chains are validated as CA
//!   paths, identical submissions are deduplicated, and the CA's own submissions go ahead of
//!   outside ones (limits in the `log` module docs, re-exported as constants here).
//! - [`http::router`]: the RFC 6962 `/ct/v1/*` endpoints over any [`EmbeddedLog`], with quotas
//!   for outside submitters and bounded reads (see its module docs).
//! - [`RemoteLog`]: the CA's `add-pre-chain` submitter for external logs (Trillian CTFE,
//!   TesseraCT, Sunlight), over [`client::LogClient`], the one HTTP client for RFC 6962 logs
//!   (bounded time, retries and answer size), which the audit sync uses too.
//! - [`wire`]: every RFC 6962 encoding and JSON shape, for all of the above and for the audit sync.
//!
//! Both log kinds implement the core's [`keyless_ca::ct::CtLog`].

#![forbid(unsafe_code)]

pub mod client;
pub mod http;
mod log;
pub mod merkle;
mod remote;
mod store;
pub mod wire;

pub use crate::client::{MAX_ERROR_BYTES, MAX_RESPONSE_BYTES};
pub use crate::log::{
    EmbeddedLog, LogOptions, MAX_BATCH, MAX_CHAIN, MAX_CHAIN_BYTES, MAX_OUTSIDE_BYTES_PER_BATCH, MAX_OUTSIDE_PER_BATCH,
    MAX_OUTSIDE_QUEUED, Submitted, load_or_create_key, log_public_key,
};
pub use crate::remote::RemoteLog;
pub use crate::wire::SignedTreeHead;

/// A log failure. `Client` errors are the submitter's fault (bad chain); `Unreachable`, `Status`
/// and `Malformed` are a remote log's (as [`client::LogClient`] sees it); the rest are this log's.
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
    /// A remote log could not be reached, or did not answer (or finish its answer) in time.
    #[error("{0}")]
    Unreachable(String),
    /// A remote log answered with an HTTP error status.
    #[error("{message}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The request, the status and the start of the answer.
        message: String,
    },
    /// Bytes that should be RFC 6962 are not: a remote log's answer (oversized, not the JSON it
    /// should be, badly encoded fields, a bad tree head signature) or an entry's encoding.
    #[error("{0}")]
    Malformed(String),
}

impl LogError {
    /// Whether trying again later may succeed: a log that could not be reached, or that said it
    /// is busy or timed out (408, 429, 503). Anything else would fail the same way again.
    pub fn is_transient(&self) -> bool {
        match self {
            LogError::Unreachable(_) => true,
            LogError::Status { status, .. } => matches!(status, 408 | 429 | 503),
            _ => false,
        }
    }
}
