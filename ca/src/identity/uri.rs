//! `uri` issuers: `sub` is a URI under the configured subject domain (same scheme and host).

use crate::Error;
use crate::identity::{Mapping, San};
use crate::token::VerifiedToken;

pub(super) fn map(token: &VerifiedToken) -> Result<Mapping, Error> {
    let url = &token.issuer().url;
    let sub = token.string_claim("sub")?;
    if sub.contains('@') && !sub.contains("://") {
        return Err(Error::claim(url, "sub", "looks like an email address, not a URI"));
    }
    let domain = token.issuer().subject_domain.as_deref().unwrap_or_default();
    let (scheme, host) =
        split(sub).ok_or_else(|| Error::claim(url, "sub", format!("{sub:?} is not a URI with a host")))?;
    let (want_scheme, want_host) = split(domain).unwrap_or_default();
    if scheme != want_scheme || host != want_host {
        return Err(Error::claim(
            url,
            "sub",
            format!("{sub:?} is not under the subject domain {domain}"),
        ));
    }
    Ok((sub.to_string(), San::Uri(sub.to_string()), Vec::new()))
}

/// `(scheme, host)` of `scheme://host[:port]/...`.
fn split(u: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = u.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = host.split(':').next()?;
    (!scheme.is_empty() && !host.is_empty()).then_some((scheme, host))
}
