//! `uri` issuers: `sub` is a URI under the configured subject domain (same scheme and host).

use crate::Error;
use crate::identity::Mapping;
use crate::identity::san::{San, parse_uri};
use crate::token::VerifiedToken;

pub(super) fn map(token: &VerifiedToken) -> Result<Mapping, Error> {
    let url = &token.issuer().url;
    let sub = token.string_claim("sub")?;
    if sub.contains('@') && !sub.contains("://") {
        return Err(Error::claim(url, "sub", "looks like an email address, not a URI"));
    }
    // Scheme and host come from the parsed URI (which refuses userinfo and any URI two parsers
    // read differently), never from splitting the text: `http://evil.example\@host/x` is not
    // under `host`.
    let (san, parsed) = parse_uri(url, "sub", sub.to_string())?;
    let domain = token.issuer().subject_domain.as_deref().unwrap_or_default();
    let want = url::Url::parse(domain).ok();
    let host = parsed
        .host_str()
        .ok_or_else(|| Error::claim(url, "sub", format!("{sub:?} is not a URI with a host")))?;
    let under = want
        .as_ref()
        .is_some_and(|w| w.scheme() == parsed.scheme() && w.host_str() == Some(host));
    if !under {
        return Err(Error::claim(
            url,
            "sub",
            format!("{sub:?} is not under the subject domain {domain}"),
        ));
    }
    Ok((sub.to_string(), San::Uri(san), Vec::new()))
}
