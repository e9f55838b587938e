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
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path_ok = path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && path.chars().all(|c| c.is_ascii_alphanumeric() || "-._/".contains(c));
    if path.is_empty() || !path_ok {
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
