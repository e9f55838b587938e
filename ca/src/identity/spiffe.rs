//! `spiffe` issuers: `sub` is a SPIFFE ID in the configured trust domain.

use keyless_config::SpiffeSettings;

use crate::Error;
use crate::identity::{Mapping, San};
use crate::token::VerifiedToken;

pub(super) fn map(token: &VerifiedToken, settings: &SpiffeSettings) -> Result<Mapping, Error> {
    let url = &token.issuer().url;
    let sub = token.string_claim("sub")?;
    let td = settings.trust_domain();
    let rest = sub
        .strip_prefix("spiffe://")
        .ok_or_else(|| Error::claim(url, "sub", format!("{sub:?} is not a SPIFFE ID (spiffe://...)")))?;
    // A SPIFFE ID may be the trust domain alone (`spiffe://example.org`), as go-spiffe (and so
    // Fulcio) accepts; a path, if any, has non-empty segments other than `.` and `..`.
    let (domain, path) = match rest.split_once('/') {
        Some((domain, path)) => (domain, Some(path)),
        None => (rest, None),
    };
    let path_ok = path.is_none_or(|path| {
        path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
            && path.chars().all(|c| c.is_ascii_alphanumeric() || "-._/".contains(c))
    });
    let domain_ok = !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
    if !path_ok || !domain_ok {
        return Err(Error::claim(
            url,
            "sub",
            format!("{sub:?} is not a valid SPIFFE workload ID"),
        ));
    }
    if domain != td {
        return Err(Error::claim(
            url,
            "sub",
            format!("trust domain {domain:?} is not the configured {td:?}"),
        ));
    }
    Ok((sub.to_string(), San::uri(url, "sub", sub)?, Vec::new()))
}
