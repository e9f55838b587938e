//! Certificate Transparency for Keyless CA.
//!
//! This crate will own the embedded RFC 6962 log (SQLite storage, Merkle tree, SCT and STH signing)
//! and the client that submits precertificates to remote logs. Until it exists, `keyless` accepts
//! only `ct_log: disabled` and refuses to start when the embedded log is asked for, so CT is never
//! silently skipped.
