//! `uri` issuers: `sub` is a URI under the configured subject domain (same scheme and host).

use keyless_config::UriSettings;

use crate::Error;
use crate::identity::Mapping;
use crate::identity::san::{San, parse_uri};
use crate::token::VerifiedToken;

pub(super) fn map(token: &VerifiedToken, settings: &UriSettings) -> Result<Mapping, Error> {
    let url = &token.issuer().url;
    let sub = token.string_claim("sub")?;
    if sub.contains('@') && !sub.contains("://") {
        return Err(Error::claim(url, "sub", "looks like an email address, not a URI"));
    }
    // Scheme and host come from the parsed URI (which refuses userinfo and any URI two parsers
    // read differently), never from splitting the text: `http://evil.example\@host/x` is not
    // under `host`.
    let (san, parsed) = parse_uri(url, "sub", sub.to_string())?;
    let host = parsed
        .host_str()
        .ok_or_else(|| Error::claim(url, "sub", format!("{sub:?} is not a URI with a host")))?;
    if settings.scheme() != parsed.scheme() || settings.host() != host {
        return Err(Error::claim(
            url,
            "sub",
            format!("{sub:?} is not under the subject domain {}", settings.subject_domain()),
        ));
    }
    Ok((sub.to_string(), San::Uri(san), Vec::new()))
}
