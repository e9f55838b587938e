//! Compliance for Keyless CA: what did the CA issue, to whom, under which rule, and can we prove
//! nothing else was issued?
//!
//! - [`record`] and [`store`]: the append-only, hash-chained issuance record (decisions, and the
//!   `intent` written before a precertificate leaves for CT), checkpointed with the audit key
//!   (never the CA key), written with the CT log's durability discipline; refusals can neither
//!   fill the disk nor slow an issuance; the latest checkpoint can be anchored outside;
//! - [`verify`]: the chain and checkpoint check behind `keyless audit verify` (`--against` an
//!   anchor);
//! - [`index`] and [`sync`]: following any RFC 6962 log in bounded, verified chunks, checking each
//!   tree head's signature, consistency and plausibility, and indexing the certificates this CA
//!   issued;
//! - [`crosscheck`]: record versus log, both ways (announced but abandoned issuances apart);
//! - [`query`] and [`watch`]: finding certificates, and reporting those outside a watchlist;
//! - [`state`]: the outcome of the last `verify` and `cross-check`, for the review page;
//! - [`checkpoint`], [`files`] and [`tbs`]: what the writer, the verifier, the sync and the
//!   cross-check share (signed checkpoints, file locations, the TBS hash that links records to
//!   log entries), so none of them depends on another's internals.
//!
//! Serials are produced and compared through [`keyless_ca::Serial`]; RFC 6962 is read and
//! spoken through `keyless_ctlog::wire` and `keyless_ctlog::client`.

#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod crosscheck;
pub mod files;
mod hex;
pub mod index;
pub mod query;
pub mod record;
pub mod state;
pub mod store;
pub mod sync;
pub mod tbs;
#[cfg(test)]
pub(crate) mod testkit;
pub mod verify;
pub mod watch;

/// Milliseconds since the epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Everything the audit functions fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// Files, keys or arguments are unusable.
    #[error("{0}")]
    Setup(String),
    /// SQLite failed.
    #[error("audit storage: {0}")]
    Storage(String),
    /// The issuance record cannot be written right now (disk full, I/O error): a transient
    /// outage, answered 503; the writer recovers by itself when storage does.
    #[error("issuance record unavailable: {0}")]
    Unavailable(String),
    /// A CT log misbehaved: bad signature, inconsistent tree heads, bad entries.
    #[error("CT log: {0}")]
    Log(String),
    /// The log could not be reached.
    #[error("CT log unreachable: {0}")]
    Unreachable(String),
}

/// A remote log's failure as the audit tools report it: a log that cannot be reached, times out
/// or answers 5xx/429 is unreachable (try again later); any other refusal or a malformed answer
/// is the log misbehaving.
impl From<keyless_ctlog::LogError> for AuditError {
    fn from(e: keyless_ctlog::LogError) -> Self {
        use keyless_ctlog::LogError;
        match e {
            LogError::Unreachable(m) | LogError::Unavailable(m) => AuditError::Unreachable(m),
            LogError::Status { status, message } if status == 429 || status >= 500 => AuditError::Unreachable(message),
            LogError::Setup(m) => AuditError::Setup(m),
            LogError::Storage(m) => AuditError::Storage(m),
            other => AuditError::Log(other.to_string()),
        }
    }
}

/// A certificate as the watchlist, the query table and the review page see it, whether it came
/// from the issuance record or from a CT log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertSummary {
    /// Serial number, as [`keyless_ca::Serial`] shows it.
    pub serial: String,
    /// `email:…`, `uri:…`, `othername:…`.
    pub san: String,
    /// The OIDC issuer from extension 1.8 (or 1.1).
    pub issuer: String,
    /// When it was issued (notBefore), ms since the epoch.
    pub time_ms: u64,
    /// Position in the CT log, when known.
    pub leaf_index: Option<u64>,
}

impl CertSummary {
    /// The summary of an `issued` record (`None` for a rejection).
    pub fn of_record(r: &record::Record) -> Option<CertSummary> {
        let c = r.certificate.as_ref()?;
        Some(CertSummary {
            serial: c.serial.clone(),
            san: c.san.clone(),
            issuer: r
                .extension("1.3.6.1.4.1.57264.1.8")
                .or(r.extension("1.3.6.1.4.1.57264.1.1"))
                .or(r.issuer.as_deref())
                .unwrap_or_default()
                .to_string(),
            time_ms: c.not_before.max(0) as u64 * 1000,
            leaf_index: c.leaf_index,
        })
    }
}

/// `*` matches any run of characters, `?` one character; everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

/// A SAN matches an identity pattern on its value (`alice@…`) or its typed form (`email:alice@…`).
pub fn san_matches(pattern: &str, san: &str) -> bool {
    let value = san.split_once(':').map(|(_, v)| v).unwrap_or(san);
    glob(pattern, value) || glob(pattern, san)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*@example.com", "alice@example.com"));
        assert!(!glob("*@example.com", "alice@example.org"));
        assert!(glob(
            "https://github.com/acme/*",
            "https://github.com/acme/app/.github/workflows/r.yml@refs/heads/main"
        ));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(san_matches("alice@*", "email:alice@example.com"));
        assert!(san_matches("email:*", "email:alice@example.com"));
    }
}
