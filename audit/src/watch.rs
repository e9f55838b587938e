//! `keyless audit watch`: every certificate must belong to an identity the watchlist expects from
//! its issuer. Anything else is reported, and the command exits non-zero, for cron and CI.
//!
//! ```yaml
//! issuers:
//!   https://token.actions.githubusercontent.com:
//!     - https://github.com/acme/*
//!   https://accounts.google.com:
//!     - "*@acme.example"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{AuditError, CertSummary, san_matches};

/// Expected identities (globs over the SAN) per issuer URL.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watchlist {
    /// Issuer URL → identity globs.
    pub issuers: BTreeMap<String, Vec<String>>,
}

impl Watchlist {
    /// Parses a YAML (or JSON) watchlist.
    pub fn parse(text: &str) -> Result<Watchlist, AuditError> {
        serde_saphyr::from_str(text).map_err(|e| AuditError::Setup(format!("watchlist: {e}")))
    }
}

/// A certificate outside the watchlist.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The certificate.
    pub certificate: CertSummary,
    /// Why it is unexpected.
    pub why: String,
}

/// Certificates that match no expected identity of their issuer.
pub fn check(list: &Watchlist, certs: &[CertSummary]) -> Vec<Finding> {
    certs
        .iter()
        .filter_map(|c| {
            let why = match list.issuers.get(&c.issuer) {
                None => format!("issuer {} is not on the watchlist", c.issuer),
                Some(globs) if !globs.iter().any(|g| san_matches(g, &c.san)) => {
                    format!("{} is not an expected identity for {}", c.san, c.issuer)
                }
                Some(_) => return None,
            };
            Some(Finding {
                certificate: c.clone(),
                why,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(issuer: &str, san: &str) -> CertSummary {
        CertSummary {
            serial: "1".into(),
            san: san.into(),
            issuer: issuer.into(),
            time_ms: 0,
            leaf_index: None,
        }
    }

    #[test]
    fn unexpected_identities_and_issuers_are_reported() {
        let list = Watchlist::parse(
            "issuers:\n  https://gh:\n    - https://github.com/acme/*\n  https://mail:\n    - \"*@acme.example\"\n",
        )
        .unwrap();
        let certs = [
            cert(
                "https://gh",
                "uri:https://github.com/acme/app/.github/workflows/r.yml@refs/heads/main",
            ),
            cert(
                "https://gh",
                "uri:https://github.com/evil/app/.github/workflows/r.yml@refs/heads/main",
            ),
            cert("https://mail", "email:bob@acme.example"),
            cert("https://other", "email:bob@acme.example"),
        ];
        let found = check(&list, &certs);
        assert_eq!(found.len(), 2);
        assert!(found[0].why.contains("evil"));
        assert!(found[1].why.contains("https://other is not on the watchlist"));
        assert!(Watchlist::parse("issuer: {}").is_err(), "unknown keys are refused");
    }
}
